"""A pipeline file cannot hurt the others (issue 9, item 5).

Each test reproduces a way one pipeline YAML used to hurt the process or the other pipelines:
an alias bomb that parsed for minutes, a cron that passed ``mlplatform check`` and hid its DAG,
a second file with the same ``name:`` that silently replaced the first pipeline's DAGs, errors
that never reached the Airflow UI. The DagBag tests use Airflow's real ``DagBag``.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlplatform.config import (
    ECHO_CHARS,
    MAX_CONFIG_BYTES,
    ConfigError,
    load_pipeline,
    load_pipelines,
    parse_pipeline,
)
from tests.cli_inprocess import CliResult, run_cli
from tests.conftest import REPO

DEMO = (REPO / "pipelines" / "demo.yaml").read_text()

#: the classic "billion laughs": 1.5 KB that expands to 10^9 strings
BILLION_LAUGHS = "\n".join(
    [
        "name: lol",
        'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
        *(
            f"{c}: &{c} [" + ",".join([f"*{p}"] * 10) + "]"
            for p, c in zip("abcdefgh", "bcdefghi", strict=True)
        ),
        "features: *i",
    ]
)

PARSE_PROBE = r"""
import sys, time
from mlplatform.config import ConfigError, load_pipeline
started = time.monotonic()
try:
    load_pipeline(sys.argv[1])
except ConfigError as exc:
    print(f"{time.monotonic() - started:.3f}")
    print(exc)
"""


def _limit_memory() -> None:  # pragma: no cover - runs in the child
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))


def parse_in_child(path: Path, timeout: float = 20) -> tuple[float, str]:
    """Parse ``path`` in a child process capped at 1 GiB and ``timeout`` seconds (the old
    parser took minutes and gigabytes on a bomb); returns (seconds, error text)."""
    out = subprocess.run(
        [sys.executable, "-c", PARSE_PROBE, str(path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=timeout,
        preexec_fn=_limit_memory,
    )
    assert out.returncode == 0, out.stderr[-1500:]
    seconds, _, error = out.stdout.partition("\n")
    return float(seconds), error.strip()


def cli_check(
    target: str | Path, pipelines_dir: Path, command: str = "check", *args: str
) -> CliResult:
    env = {**os.environ, "MLP_PIPELINES_PATH": str(pipelines_dir)}
    return run_cli(command, str(target), *args, env=env, cwd=REPO)


def check_error(res: CliResult) -> str:
    """The config error ``mlplatform check`` printed (exit 2, one ``mlplatform: error:``)."""
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr[-1500:])
    text = res.stderr.strip()
    assert text.startswith("mlplatform: error: ")
    return text.removeprefix("mlplatform: error: ")


def demo_with(old: str, new: str) -> str:
    assert old in DEMO
    return DEMO.replace(old, new)


# -- YAML limits ---------------------------------------------------------------------------------


def test_billion_laughs_is_refused_fast_in_one_line(tmp_path):
    assert len(BILLION_LAUGHS) < 1600
    bomb = tmp_path / "lol.yaml"
    bomb.write_text(BILLION_LAUGHS)
    seconds, error = parse_in_child(bomb)
    # the expansion would take minutes and gigabytes; refusing takes milliseconds. The bound is
    # wide so that a loaded machine never fails it
    assert seconds < 30
    assert "\n" not in error and len(error) < 200 and "lol" not in error.removeprefix(str(bomb))
    assert error.startswith(f"{bomb}:")
    assert "aliases" in error


def test_oversized_file_is_refused_before_parsing(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text(DEMO + "# " + "x" * MAX_CONFIG_BYTES + "\n")
    started = time.monotonic()
    with pytest.raises(ConfigError) as err:
        load_pipeline(big)
    assert time.monotonic() - started < 1.0
    assert str(err.value) == f"{big}: over the 256 KiB limit of a pipeline config"
    with pytest.raises(ConfigError, match=r"^x.yaml: \d+ bytes, over the 256 KiB limit"):
        parse_pipeline(DEMO + "#" + "y" * MAX_CONFIG_BYTES, "x.yaml")


def test_deep_nesting_and_huge_numbers_are_config_errors_not_crashes():
    deep = "name: " + "[" * 5000 + "]" * 5000 + "\n"
    with pytest.raises(ConfigError, match=r"^d.yaml:1: YAML nested deeper than 20 levels"):
        parse_pipeline(deep, "d.yaml")
    with pytest.raises(ConfigError, match=r"^n.yaml: not valid YAML: .*digits"):
        parse_pipeline(demo_with("epochs: 4", "epochs: " + "9" * 5000), "n.yaml")
    with pytest.raises(ConfigError, match=r"^r.yaml:2: recursive YAML alias \*loop"):
        parse_pipeline("name: demo\nextra: &loop [1, *loop]\n", "r.yaml")


def test_echoed_input_is_bounded():
    long_name = "X" * 5000
    with pytest.raises(ConfigError) as err:
        parse_pipeline(demo_with("name: demo", f"name: {long_name}"), "e.yaml")
    message = str(err.value)
    assert message.startswith("e.yaml:1: name: String should have at most 64 characters (got ")
    got = message[message.index("(got ") + 5 : -1]
    assert len(got) <= ECHO_CHARS and got.startswith("'XXX")
    many = demo_with("hidden_units: [32, 16]", "hidden_units: [" + ", ".join(["a"] * 500) + "]")
    with pytest.raises(ConfigError) as err:
        parse_pipeline(many, "m.yaml")
    lines = str(err.value).splitlines()
    assert len(lines) == 11 and lines[-1] == "m.yaml: ... and 490 more errors"


def test_bounded_aliases_still_work():
    text = demo_with(
        "categorical: [contract_type, region]", "categorical: &cats [contract_type, region]"
    )
    text = demo_with("  max_regression: 0.02", "  max_regression: 0.02\n  slices: *cats").replace(
        DEMO.split("gate:")[0], text.split("gate:")[0]
    )
    text = text.replace(
        "training:\n  workers: 1\n  processes_per_worker: auto",
        "training:\n  <<: {workers: 1, processes_per_worker: 2}",
    )
    cfg = parse_pipeline(text)
    assert cfg.gate.slices == ["contract_type", "region"]
    assert (cfg.training.workers, cfg.training.processes_per_worker) == (1, 2)


# -- schedules -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "old", "bad", "line"),
    [
        ("retrain", 'schedule: "@weekly"', 'schedule: "61 * * * *"', 42),
        ("retrain", 'schedule: "@weekly"', 'schedule: "@fortnightly"', 42),
        ("monitoring", 'schedule: "@daily"', 'schedule: "0 0 31 2 *"', 37),
        ("monitoring", 'schedule: "@daily"', "schedule: every day", 37),
    ],
)
def test_bad_schedule_names_file_line_and_field(section, old, bad, line):
    with pytest.raises(ConfigError) as err:
        parse_pipeline(demo_with(old, bad), "s.yaml")
    assert str(err.value).startswith(f"s.yaml:{line}: {section}.schedule: ")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "schedule",
    ['"@once"', '"@hourly"', '"@daily"', '"@weekly"', '"@monthly"', '"@yearly"', '"@continuous"',
     "null", '"*/15 * * * *"', '"0 3 * * MON-FRI"'],
)  # fmt: skip
def test_good_schedules_pass(schedule):
    cfg = parse_pipeline(demo_with('schedule: "@weekly"', f"schedule: {schedule}"))
    assert cfg.retrain.schedule == (None if schedule == "null" else schedule.strip('"'))
    cfg = parse_pipeline(demo_with('schedule: "@daily"', f"schedule: {schedule}"))
    assert cfg.monitoring.schedule == (None if schedule == "null" else schedule.strip('"'))


def test_cli_check_refuses_a_bad_cron(pipelines_dir, mlp_home):
    (pipelines_dir / "demo.yaml").write_text(
        demo_with('schedule: "@weekly"', 'schedule: "0 25 * * *"')
    )
    error = check_error(cli_check("demo", pipelines_dir))
    assert error.startswith(f"{pipelines_dir / 'demo.yaml'}:42: retrain.schedule: not a valid cron")


# -- duplicate names -----------------------------------------------------------------------------


def test_duplicate_names_fail_both_files(pipelines_dir, mlp_home):
    first, second = pipelines_dir / "demo.yaml", pipelines_dir / "demo_copy.yaml"
    second.write_text(DEMO)
    files = load_pipelines([first, second])
    assert [f.config for f in files] == [None, None]
    assert files[0].error == (
        f"{first}:1: name: pipeline 'demo' is also declared in {second}:1; "
        "pipeline names must be unique (DAG ids derive from them)"
    )
    assert files[1].error.startswith(
        f"{second}:1: name: pipeline 'demo' is also declared in {first}:1"
    )
    assert check_error(cli_check("demo", pipelines_dir)) == files[0].error
    run = cli_check("demo", pipelines_dir, "run", "--data", str(pipelines_dir / "demo.yaml"))
    assert check_error(run) == files[0].error  # refused before Airflow starts
    outside = mlp_home / "draft.yaml"  # a draft that would clash once dropped in
    outside.write_text(DEMO)
    assert check_error(cli_check(outside, pipelines_dir)).startswith(
        f"{outside}:1: name: pipeline 'demo' is also declared in {first}:1, {second}:1;"
    )


# -- what the Airflow UI shows -------------------------------------------------------------------


def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags"))


@pytest.fixture
def bad_files(pipelines_dir):
    """One pipeline directory with the good demo and every kind of bad file."""
    files = {
        "bad_cron": demo_with("name: demo", "name: cron").replace('"@weekly"', '"0 0 * * 8"'),
        "bomb": BILLION_LAUGHS,
        "broken_yaml": "name: [unclosed\n",
        "long_name": demo_with("name: demo", "name: " + "n" * 300),
        "twin_a": demo_with("name: demo", "name: twin"),
        "twin_b": demo_with("name: demo", "name: twin"),
    }
    for stem, text in files.items():
        (pipelines_dir / f"{stem}.yaml").write_text(text)
    return pipelines_dir


def test_every_bad_file_is_a_visible_placeholder_and_good_dags_stay(bad_files, mlp_home):
    from airflow.sdk.exceptions import AirflowFailException

    started = time.monotonic()
    bag = dagbag()
    assert time.monotonic() - started < 30
    assert bag.import_errors == {}
    assert {"mlp_demo_train", "mlp_demo_rollback"} <= set(bag.dag_ids)
    assert not {d for d in bag.dag_ids if "twin" in d and not d.endswith("_invalid")}
    for stem in ("bad_cron", "bomb", "broken_yaml", "long_name", "twin_a", "twin_b"):
        dag = bag.dags[f"mlp_{stem}_invalid"]
        expected = next(f for f in load_pipelines([bad_files / f"{stem}.yaml"]))
        if stem.startswith("twin"):
            expected = next(
                f
                for f in load_pipelines([bad_files / "twin_a.yaml", bad_files / "twin_b.yaml"])
                if f.path.stem == stem
            )
        assert dag.description == expected.error, stem
        assert "invalid" in dag.tags and type(dag.timetable).__name__ == "NullTimetable"
        assert dag.task_ids == ["config_error"]
        with pytest.raises(AirflowFailException) as failed:
            dag.get_task("config_error").execute({})
        assert str(failed.value) == expected.error
        assert dag.get_task("config_error").retries == 0


def test_placeholder_line_is_the_line_of_mlplatform_check(bad_files, mlp_home):
    bag = dagbag()
    for stem in ("bad_cron", "twin_b"):
        line = check_error(cli_check(bad_files / f"{stem}.yaml", bad_files))
        assert bag.dags[f"mlp_{stem}_invalid"].description == line


def test_dag_build_failure_becomes_a_placeholder_and_check_catches_it(
    pipelines_dir, mlp_home, monkeypatch
):
    # the config validates, but its DAGs cannot be built (a bad MLP_K8S_* setting)
    monkeypatch.setenv("MLP_TRAINING_BACKEND", "kubernetes")
    monkeypatch.setenv("MLP_K8S_SHM_SIZE", "lots")
    bag = dagbag()
    assert bag.import_errors == {}
    dag = bag.dags["mlp_demo_invalid"]
    assert dag.description.startswith(
        f"{pipelines_dir / 'demo.yaml'}: cannot build its DAGs: ValidationError: "
    )
    assert "not a Kubernetes quantity" in dag.description and "\n" not in dag.description
    assert check_error(cli_check("demo", pipelines_dir)) == dag.description


def test_a_name_other_than_the_file_name_is_refused(pipelines_dir, mlp_home):
    """Tasks find a pipeline's config as ``<name>.yaml``: a mismatch would build DAGs whose
    tasks all fail at run time, so it is refused up front, like any bad file."""
    (pipelines_dir / "churn.yaml").write_text(demo_with("name: demo", "name: churn_model"))
    (item,) = load_pipelines([pipelines_dir / "churn.yaml"])
    assert item.config is None and item.error == (
        f"{pipelines_dir / 'churn.yaml'}:1: name: 'churn_model' must match the file name; "
        "rename the file to churn_model.yaml or set name: churn"
    )
    assert check_error(cli_check("churn", pipelines_dir)) == item.error
    assert dagbag().dags["mlp_churn_invalid"].description == item.error
