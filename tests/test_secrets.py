"""No secret in clear (issue 16, item 6): secrets reach the deployment only from the environment
(compose's env file), Kubernetes Secrets or AWS Secrets Manager, never from a file of the
repository, an image's build arguments or ENV, or a rendered manifest.

Two kinds of checks:

* structural: every secret-looking setting of docker-compose.yml is a ``${VAR:?}`` reference, and
  in the rendered file (``docker-compose config`` with *sentinel* secrets) every secret-looking
  value is one of the sentinels, so it provably came from the environment; the Dockerfiles declare
  no secret ARG/ENV; the trainer pod and MPIJob that mlplatform.k8s renders carry credentials
  only by ``secretKeyRef``/``secretRef``;
* a scanner: checkov's secrets framework (detect-secrets' detectors: high-entropy strings, basic
  auth in URIs, AWS keys, private keys ...) over those files and the rendered manifests finds
  nothing, and does find the secrets that scripts/compose_env.sh generates once they are rendered
  in (the positive control).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.conftest import REPO
from tests.deploy_render import COMPOSE_SECRETS, render_compose, run_compose_config
from tests.test_terraform import CHECKOV

#: names of settings that hold a secret value
SECRET_NAME = re.compile(
    r"PASSWORD|PASSWD|SECRET|TOKEN|FERNET|PRIVATE|ACCESS_KEY|API_KEY|AUTH", re.I
)
#: names that match SECRET_NAME but hold a *reference* (the name of a Secret, a file path, a flag)
REFERENCES = {
    "MLP_K8S_S3_SECRET",
    "MLP_K8S_MLFLOW_SECRET",
    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE",
    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS",
    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS",
    "auth_manager",  # airflow.cfg [core] keys of the Helm values: a class path, user:role pairs
    "simple_auth_manager_users",
}
DOCKERFILES = sorted((REPO / "docker").glob("*.Dockerfile"))


def _strings(node: Any, key: str = "") -> Iterator[tuple[str, str]]:
    """(key, string) for every string in a YAML/JSON tree (list items inherit their list's key)."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _strings(v, str(k))
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item, key)
    elif isinstance(node, str):
        yield key, node


def _credentials_in(text: str) -> list[str]:
    """Credential values embedded in one string: URI passwords, ``password=`` options,
    ``--requirepass`` arguments."""
    found = []
    for word in shlex.split(text, posix=True) if "://" in text or "--" in text else [text]:
        for token in re.split(r"[\s,\"']+", word):
            if "://" in token and "@" in token:
                password = urlsplit(token).password
                if password:
                    found.append(password)
    found += re.findall(r"password=([^,;\s\"']+)", text)
    found += re.findall(r"--requirepass[ =]+\"?([^\s\"]+)", text)
    return found


def _compose_command_secrets(service: dict) -> list[str]:
    command = service.get("command") or []
    words = command if isinstance(command, list) else shlex.split(command)
    return [words[i + 1] for i, w in enumerate(words[:-1]) if w == "--requirepass"]


# --------------------------------------------------------------------------- docker-compose


def test_compose_file_writes_no_secret():
    """In the file itself every secret-named setting is a ``${VAR:?}`` reference."""
    source = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    checked = 0
    for key, value in _strings(source):
        if SECRET_NAME.search(key) and key not in REFERENCES:
            checked += 1
            assert re.fullmatch(r"\$\{\w+(:\?[^}]*)?\}", value), f"{key}: {value!r} is written in"
        for credential in _credentials_in(value):
            assert re.fullmatch(r"\$\$?\{?\w+(:\?[^}]*)?\}?", credential), (key, credential)
    assert checked >= len(COMPOSE_SECRETS)


def test_rendered_compose_secrets_all_come_from_the_environment(tmp_path):
    rendered = render_compose(tmp_path)
    sentinels = set(COMPOSE_SECRETS.values())
    checked = 0
    for name, service in rendered["services"].items():
        for key, value in _strings(service):
            if SECRET_NAME.search(key) and key not in REFERENCES:
                checked += 1
                assert value in sentinels, f"{name}: {key} = {value!r} is not from the env file"
            for credential in _credentials_in(value):
                # $$VAR: read by the container's shell from its environment at run time
                if not credential.startswith("$$"):
                    checked += 1
                    assert credential in sentinels, f"{name}: {key} embeds {credential!r}"
        for credential in _compose_command_secrets(service):
            assert credential in sentinels, f"{name}: --requirepass {credential!r}"
    assert checked >= len(COMPOSE_SECRETS)


def test_rendering_without_the_env_file_fails_rather_than_defaulting(tmp_path):
    out = run_compose_config(tmp_path, {})
    assert out.returncode != 0
    assert "scripts/compose_env.sh" in out.stderr  # the message says how to make them


# --------------------------------------------------------------------------- images


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_declares_no_secret_arg_or_env(dockerfile):
    text = re.sub(r"\\\n", " ", dockerfile.read_text())  # join continuation lines
    declared = []
    for line in text.splitlines():
        match = re.match(r"^\s*(ARG|ENV)\s+(.*)$", line)
        if match:
            declared += re.findall(r"([A-Za-z_][A-Za-z0-9_]*)(?:=(\S*))?", match.group(2))
    assert declared, "no ARG/ENV parsed"
    for name, value in declared:
        assert not SECRET_NAME.search(name), f"{dockerfile.name}: {name} looks like a secret"
        assert not _credentials_in(value), f"{dockerfile.name}: {name} carries credentials"


# --------------------------------------------------------------------------- Kubernetes


def _rendered_trainer_manifests(monkeypatch) -> list[dict[str, Any]]:
    """The trainer pod and MPIJob as mlplatform.k8s renders them in production (S3 keys and the
    MLflow URI from Secrets)."""
    from mlplatform import k8s
    from mlplatform.config import TrainingConfig, load_pipeline
    from mlplatform.settings import get_settings

    monkeypatch.setenv("MLP_MLFLOW_TRACKING_URI", "http://mlflow:5000")
    monkeypatch.setenv("MLP_K8S_MLFLOW_SECRET", "mlplatform-mlflow")
    monkeypatch.setenv("MLP_K8S_S3_SECRET", "mlplatform-s3")
    cfg = load_pipeline(REPO / "pipelines" / "demo.yaml")
    single = cfg.model_copy(update={"training": TrainingConfig(image="reg/t:1", gpus_per_worker=1)})
    multi = cfg.model_copy(
        update={"training": TrainingConfig(image="reg/t:1", workers=2, gpus_per_worker=1)}
    )
    training_set = {"train_uri": "s3://b/train.parquet", "holdout_uri": "s3://b/holdout.parquet"}
    settings = get_settings()
    out = []
    for one in (single, multi):
        spec = k8s.trainer_spec(
            one, training_set, output_dir="s3://b/out", artifact_location="s3://b/a",
            tracking_uri=k8s.pod_tracking_uri(settings, k8s.KubernetesSettings()),
            run_name="r", tags={},
        )  # fmt: skip
        if one.training.workers > 1:
            out.append(k8s.mpijob_manifest(one, spec, settings=settings, name="mlp-demo-t"))
        else:
            out.append(k8s.trainer_pod_spec(one, spec, settings=settings))
    return out


def test_rendered_trainer_manifests_take_credentials_from_secrets(monkeypatch, mlp_home):
    manifests = _rendered_trainer_manifests(monkeypatch)
    by_ref = 0
    for manifest in manifests:
        text = json.dumps(manifest)
        assert "MLFLOW_TRACKING_URI" in text
        for key, value in _strings(manifest):
            assert not _credentials_in(value), f"{key} carries a credential"
        containers = [
            c
            for node in _walk(manifest)
            if isinstance(node, dict) and "containers" in node
            for c in node["containers"]
        ]
        for container in containers:
            for env in container.get("env", []):
                if SECRET_NAME.search(env["name"]) and env["name"] not in REFERENCES:
                    assert "value" not in env, f"{env['name']} is a literal"
                    assert "secretKeyRef" in env["valueFrom"]
                    by_ref += 1
            assert {"secretRef": {"name": "mlplatform-s3"}} in container.get("envFrom", [])
    assert by_ref > 0


def _walk(node: Any) -> Iterator[Any]:
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def test_kubernetes_files_hold_no_secret():
    checked = 0
    for path in (REPO / "deploy" / "k8s").glob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            pairs = list(_strings(doc))
            # env lists ({name, value}) of the Helm values: judge the value by the name
            pairs += [(e["name"], e.get("value", "")) for e in doc.get("env", [])]
            for key, value in pairs:
                checked += 1
                assert not _credentials_in(value), f"{path.name}: {key}"
                if SECRET_NAME.search(key) and not key.endswith("SecretName"):
                    assert key in REFERENCES or value == "", f"{path.name}: {key} = {value!r}"
    assert checked > 50


# --------------------------------------------------------------------------- scanner


def _checkov_secrets(directory: Path) -> list[dict[str, Any]]:
    if not CHECKOV.exists():
        pytest.skip(f"checkov is not installed at {CHECKOV}: run scripts/install_iac.sh (make env)")
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE"}
    out = subprocess.run(
        [str(CHECKOV), "-d", str(directory), "--framework", "secrets",
         "--enable-secret-scan-all-files", "-o", "json"],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert out.returncode in (0, 1), out.stderr[-2000:]
    report = json.loads(out.stdout)
    reports = report if isinstance(report, list) else [report]
    # an empty scan prints only a summary with no "results"
    return [c for r in reports for c in r.get("results", {}).get("failed_checks", [])]


def test_secret_scanner_finds_none_in_deployment_files_and_catches_rendered_ones(
    tmp_path, monkeypatch, mlp_home
):
    clean = tmp_path / "clean"
    for sub in ("docker", "deploy", "terraform"):
        for path in (REPO / sub).rglob("*"):
            if path.is_file() and ".terraform" not in path.parts:
                target = clean / path.relative_to(REPO)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(path.read_bytes())
    (clean / "docker-compose.yml").write_bytes((REPO / "docker-compose.yml").read_bytes())
    for i, manifest in enumerate(_rendered_trainer_manifests(monkeypatch)):
        (clean / f"trainer-{i}.json").write_text(json.dumps(manifest, indent=1))
    # positive control: the stack rendered with the secrets compose_env.sh generates
    hot = tmp_path / "hot"
    hot.mkdir()
    subprocess.run(
        ["bash", str(REPO / "scripts" / "compose_env.sh"), str(tmp_path / "real.env")],
        check=True, capture_output=True,
    )  # fmt: skip
    real = dict(
        line.split("=", 1)
        for line in (tmp_path / "real.env").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert set(real) == set(COMPOSE_SECRETS)
    rendered = run_compose_config(tmp_path, real)
    assert rendered.returncode == 0, rendered.stderr
    (hot / "rendered-compose.yml").write_text(rendered.stdout)

    found = _checkov_secrets(tmp_path)
    in_clean = [f"{c['file_path']}:{c['file_line_range']} {c['check_name']}" for c in found]
    in_clean = [f for f in in_clean if f.startswith("/clean/")]
    assert not in_clean, "\n".join(in_clean)
    assert any(c["file_path"].startswith("/hot/") for c in found), "scanner missed real secrets"
