"""Packaging: the wheel carries everything the core imports and the files settings look for, and
an installed (non-editable) platform finds its pipelines and suites outside any checkout.

The slow test builds the wheel with ``uv build`` (hatchling from uv's cache, offline), installs it
with ``--no-deps`` into a scratch venv that sees the project's dependencies through a ``.pth``
line (a plain path line: the project venv's own ``.pth`` files, the editable install among them,
are not processed), and runs ``mlplatform check`` from a directory outside the repository.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from mlplatform import settings as settings_module
from mlplatform.settings import REPO_ROOT, Settings
from tests.conftest import REPO

#: top-level names of the checkout that Python code could import (first-party candidates)
FIRST_PARTY = {p.name for p in REPO.iterdir() if p.is_dir() and (p / "__init__.py").exists()}


def test_checkout_settings_use_the_checkout(monkeypatch):
    for key in ("MLP_REPO_ROOT", "MLP_PIPELINES_PATH", "MLP_EXPECTATIONS_PATH"):
        monkeypatch.delenv(key, raising=False)
    s = Settings()
    assert not settings_module.BUNDLED.exists(), "a checkout has no bundled copy"
    assert s.platform_files == REPO_ROOT
    assert s.pipelines_dir == REPO / "pipelines"
    assert s.dags_dir == REPO / "dags" and s.plugins_dir == REPO / "plugins"
    assert s.airflow_env()["AIRFLOW__CORE__DAGS_FOLDER"] == str(REPO / "dags")


def test_installed_settings_use_the_bundled_copy_unless_overridden(monkeypatch, tmp_path):
    for key in ("MLP_REPO_ROOT", "MLP_PIPELINES_PATH", "MLP_EXPECTATIONS_PATH"):
        monkeypatch.delenv(key, raising=False)
    bundled = tmp_path / "bundled"
    bundled.mkdir()
    monkeypatch.setattr(settings_module, "BUNDLED", bundled)
    s = Settings()
    assert s.pipelines_dir == bundled / "pipelines"
    assert s.expectations_dir == bundled / "great_expectations" / "expectations"
    assert s.dags_dir == bundled / "dags" and s.plugins_dir == bundled / "plugins"
    own = tmp_path / "mine"
    monkeypatch.setenv("MLP_PIPELINES_PATH", str(own / "pipelines"))
    monkeypatch.setenv("MLP_EXPECTATIONS_PATH", str(own / "suites"))
    assert Settings().pipelines_dir == own / "pipelines"
    assert Settings().expectations_dir == own / "suites"
    monkeypatch.setenv("MLP_REPO_ROOT", str(own))  # an explicit checkout wins over the bundle
    assert Settings().dags_dir == own / "dags"


def _top_level_imports(source: str) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _build_wheel(out: Path) -> Path:
    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not installed")
    cmd = [uv, "build", "--wheel", "-o", str(out), str(REPO)]
    built = subprocess.run([*cmd, "--offline"], capture_output=True, text=True, timeout=300)
    if built.returncode != 0:  # hatchling not in uv's cache yet: fetch it once
        built = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = out.glob("mlplatform-*.whl")
    return wheel


def _clean_env(**extra: str) -> dict[str, str]:
    drop = ("PYTHONPATH", "VIRTUAL_ENV", "AIRFLOW_HOME")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLP_", "AIRFLOW__"))}
    return {**{k: v for k, v in env.items() if k not in drop}, **extra}


@pytest.mark.slow
def test_wheel_installs_and_checks_a_pipeline_outside_the_repo(tmp_path):
    wheel = _build_wheel(tmp_path / "dist")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        sources = {n: archive.read(n).decode() for n in names if n.endswith(".py")}
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"mlplatform", "operators", "serving", "training", "feature_repo"}
    for needed in (
        "feature_repo/definitions.py",
        "mlplatform/bundled/pipelines/demo.yaml",
        "mlplatform/bundled/great_expectations/expectations/demo_raw.json",
        "mlplatform/bundled/dags/mlplatform_pipelines.py",
        "mlplatform/bundled/dags/examples/custom_step.py",
        "mlplatform/bundled/plugins/mlplatform_plugin.py",
    ):
        assert needed in names, f"the wheel lacks {needed}"
    # every first-party module any shipped file imports is in the wheel
    for name, source in sources.items():
        missing = (_top_level_imports(source) & FIRST_PARTY) - tops
        assert not missing, f"{name} imports {sorted(missing)}, which the wheel does not ship"

    venv = tmp_path / "venv"
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = Path(
        subprocess.run(
            [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
    )  # fmt: skip
    (site / "_project_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run(
        [shutil.which("uv"), "pip", "install", "--offline", "--no-deps",
         "--python", str(venv / "bin" / "python"), str(wheel)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr[-2000:]

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = _clean_env(MLP_HOME=str(tmp_path / "home"))
    probe = subprocess.run(
        [str(venv / "bin" / "python"), "-c",
         "import mlplatform, feature_repo.definitions; from mlplatform.settings import get_settings; "
         "print(mlplatform.__file__); print(get_settings().pipelines_dir)"],
        capture_output=True, text=True, cwd=outside, env=env, timeout=120,
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr[-2000:]
    module_file, pipelines = probe.stdout.split()
    assert Path(module_file).is_relative_to(site), "the editable checkout was imported"
    assert Path(pipelines) == site / "mlplatform" / "bundled" / "pipelines"

    check = subprocess.run(
        [str(venv / "bin" / "mlplatform"), "check", "demo"],
        capture_output=True, text=True, cwd=outside, env=env, timeout=300,
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr[-2000:]
    assert "demo: config ok" in check.stdout and "mlp_demo_train" in check.stdout

    # an installed platform's own pipelines: MLP_PIPELINES_PATH (the suite stays the bundled one)
    mine = outside / "pipelines"
    mine.mkdir()
    demo = (REPO / "pipelines" / "demo.yaml").read_text()
    (mine / "churn.yaml").write_text(demo.replace("name: demo", "name: churn", 1))
    own = subprocess.run(
        [str(venv / "bin" / "mlplatform"), "check", "churn"],
        capture_output=True, text=True, cwd=outside, timeout=300,
        env={**env, "MLP_PIPELINES_PATH": str(mine)},
    )  # fmt: skip
    assert own.returncode == 0, own.stdout + own.stderr[-2000:]
    assert "churn: config ok" in own.stdout
