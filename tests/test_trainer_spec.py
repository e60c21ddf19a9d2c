"""The trainer's contract without TensorFlow: spec and data errors in-process, the one
``horovodrun`` command, the error a failed trainer hands back to the train stage, and the number
of processes fitted to the data.

Spec and data errors must fail before TensorFlow is imported (each test here runs in well under
a second); ``test_error_paths_never_import_tensorflow`` checks that in a fresh interpreter.
The real training (``horovodrun -np 2``, resume, MLflow) is in ``test_trainer_horovod.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mlplatform.config import TrainingConfig, load_pipeline
from mlplatform.stages import StageError
from tests.conftest import REPO
from tests.test_trainer_horovod import CATEGORICAL, NUMERIC, make_spec
from training import spec as contract
from training.spec import SpecError, TrainSpec, parse_spec


def errors_of(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return [
        line
        for line in capsys.readouterr().err.splitlines()
        if line.startswith(contract.ERROR_PREFIX)
    ]


# -- the spec ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"label": None}, "spec: label: Field required"),
        ({"label": 3}, "spec: label: Input should be a valid string (got 3)"),
        ({"model": {"epochs": 0}}, "spec: model.epochs: Input should be greater than 0 (got 0)"),
        ({"model": {"hidden_units": []}}, "spec: model.hidden_units: List should have at least 1"),
        ({"model": {"kind": "tree"}}, "spec: model.kind: Input should be 'tabular_classifier'"),
        ({"model": {"batch_size": True}}, "spec: model.batch_size: Input should be a valid int"),
        ({"numeric_features": [], "categorical_features": []}, "spec: no features"),
        ({"categorical_features": ["region", "region"]}, "spec: a feature is listed twice"),
        ({"label": "region"}, "spec: the label 'region' is also listed as a feature"),
        ({"train_url": "x"}, "spec: train_url: Extra inputs are not permitted"),
        ({"mlflow": {"tags": {}}}, "spec: mlflow.experiment: Field required"),
    ],
)
def test_bad_spec_is_one_line_naming_the_field(tmp_path: Path, change: dict, expected: str) -> None:
    raw = make_spec(tmp_path, "out")
    for key, value in change.items():
        if key == "model" and isinstance(value, dict):
            raw["model"] = {**raw["model"], **value}
        elif value is None:
            raw.pop(key)
        else:
            raw[key] = value
    with pytest.raises(SpecError) as err:
        parse_spec(raw)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(expected), message


def test_spec_round_trips_and_keeps_optional_keys_out(tmp_path: Path) -> None:
    spec = parse_spec(make_spec(tmp_path, "out"))
    assert spec.features == [*NUMERIC, *CATEGORICAL]
    assert TrainSpec.model_validate_json(spec.to_json()) == spec
    compact = json.loads(spec.compact_json())
    assert "checkpoint_dir" not in compact and "mlflow" not in compact
    assert spec.paths().checkpoint_dir == Path(spec.output_dir) / "checkpoints"
    assert spec.paths().holdout == Path(spec.holdout_uri.removeprefix("file://"))


@pytest.mark.parametrize("key", ["train_uri", "holdout_uri", "output_dir", "checkpoint_dir"])
def test_unsupported_uri_scheme_is_one_line_naming_the_key(
    tmp_path: Path, key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from training.train import main

    raw = make_spec(tmp_path, "out", **{key: "gs://bucket/some/key"})
    assert main(["--spec-json", json.dumps(raw)]) == 2
    errors = errors_of(capsys)
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"training.train: error: spec: {key}: unsupported URI scheme")
    assert "'gs://'" in errors[0]


def test_spec_sources_are_exclusive_and_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from training.train import main

    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(make_spec(tmp_path, "out")))
    with pytest.raises(SystemExit) as exc:
        main(["--spec", str(spec_path), "--spec-json", spec_path.read_text()])
    assert exc.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code == 2
    assert "one of the arguments --spec --spec-json is required" in capsys.readouterr().err

    assert main(["--spec-json", "{not json"]) == 2
    assert capsys.readouterr().err.startswith(
        "training.train: error: --spec-json is not valid JSON"
    )
    assert main(["--spec", str(tmp_path / "nope.json")]) == 2
    assert errors_of(capsys) == [
        f"training.train: error: spec file not found: {tmp_path}/nope.json"
    ]


# -- data errors: one line, recorded for the stage, before TensorFlow ---------------------------


def _column_change(tmp_path: Path, column: str, values: object) -> dict:
    import pandas as pd

    raw = make_spec(tmp_path, "out")
    df = pd.read_parquet(raw["train_uri"])
    df[column] = values
    df.to_parquet(raw["train_uri"], index=False)
    return raw


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (
            lambda t: make_spec(t, "out", numeric_features=[*NUMERIC, "no_such_column"]),
            "column 'no_such_column' not found in train data",
        ),
        (lambda t: _column_change(t, "churned", 2), "must be 0/1 for a tabular_classifier"),
        (lambda t: _column_change(t, "churned", None), "has 1600 missing values"),
        (lambda t: _column_change(t, "region", None), "feature 'region' has no value in any row"),
        (lambda t: _column_change(t, "support_calls", "many"), "is not numeric"),
        (lambda t: make_spec(t, "out", train_uri=str(t / "none.parquet")), "train data not found"),
    ],
)
def test_bad_data_is_one_line_and_recorded(
    tmp_path: Path, make, expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from training.train import main

    raw = make(tmp_path)
    assert main(["--spec-json", json.dumps(raw)]) == 2
    errors = errors_of(capsys)
    assert len(errors) == 1 and expected in errors[0], errors
    # the same line, recorded for the train stage
    assert contract.read_error(Path(raw["output_dir"])) == errors[0].removeprefix(
        contract.ERROR_PREFIX
    )


def test_error_paths_never_import_tensorflow(tmp_path: Path) -> None:
    """A fresh interpreter: the spec and data error paths end before any TensorFlow import."""
    bad = make_spec(tmp_path, "out", numeric_features=[*NUMERIC, "no_such_column"])
    probe = (
        "import json, sys\n"
        "from training.train import main\n"
        f"assert main(['--spec-json', {json.dumps(json.dumps(bad))}]) == 2\n"
        "assert main(['--spec-json', '{}']) == 2\n"
        "heavy = sorted(m for m in ('tensorflow', 'keras', 'horovod') if m in sys.modules)\n"
        "print('HEAVY', heavy)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "HEAVY []" in proc.stdout, proc.stdout


# -- errors handed back ------------------------------------------------------------------------


def test_read_error_prefers_the_first_rank_to_fail_then_the_log(tmp_path: Path) -> None:
    assert contract.read_error(tmp_path) is None
    log = [
        "[1,0]<stderr>:Traceback (most recent call last):",
        "[1,0]<stderr>:training.train: error: ValueError: the real cause",
        "RuntimeError: Horovod detected that one or more processes exited with non-zero status",
    ]
    assert contract.read_error(tmp_path, log) == "ValueError: the real cause"
    contract.write_error(tmp_path, 1, "RuntimeError: Gloo\n connection closed by peer")
    (tmp_path / "error-rank0.json").write_text(
        contract.TrainError(rank=0, error="the first failure", time=1.0).model_dump_json()
    )
    assert contract.read_error(tmp_path, log) == "the first failure"
    contract.clear_errors(tmp_path)
    assert contract.read_error(tmp_path, log[:1]) is None


def _stage_spec(tmp_path: Path, cfg, **overrides: object) -> Path:
    """A spec for the demo pipeline's features, written as the stage writes it."""
    from mlplatform.stages.train import build_spec

    raw = make_spec(tmp_path, "out", **overrides)
    spec = build_spec(
        cfg,
        raw,
        output_dir=raw["output_dir"],
        checkpoint_dir=None,
        mlflow=None,
    )
    path = tmp_path / "spec.json"
    Path(raw["output_dir"]).mkdir(parents=True, exist_ok=True)
    path.write_text(spec.to_json())
    return path


@pytest.mark.parametrize("processes", [1, 2])
def test_a_failed_trainer_fails_the_stage_with_its_own_error(
    tmp_path: Path, mlp_home: Path, processes: int
) -> None:
    """The stage's one-line error holds the trainer's error line, not only its exit code: plain
    (one process) and under ``horovodrun`` (whose own last line is about 'non-zero status')."""
    from mlplatform.settings import get_settings
    from mlplatform.stages.train import run_local

    if processes > 1:
        pytest.importorskip("horovod.runner", reason="horovod is not installed")
    demo = load_pipeline(REPO / "pipelines" / "demo.yaml")
    cfg = demo.model_copy(
        update={
            "features": demo.features.model_copy(update={"numeric": [*NUMERIC, "gone"]}),
            "training": TrainingConfig(processes_per_worker=processes),
        }
    )
    spec_path = _stage_spec(tmp_path, cfg)
    lines: list[str] = []
    with pytest.raises(StageError) as err:
        run_local(cfg, spec_path, get_settings(), emit=lines.append)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("train: the trainer failed (exit code ")
    assert message.endswith(
        "column 'gone' not found in train data " + str(tmp_path / "data" / "train.parquet")
    )
    assert ("training.launch" in lines[0]) == (processes > 1)


# -- the one horovodrun command ----------------------------------------------------------------


def test_horovodrun_command_for_local_pod_and_launcher() -> None:
    args = ["--spec", "/s.json"]
    assert contract.horovodrun_command(2, args, gloo=True) == [
        "horovodrun", "-np", "2", "--gloo", "-H", "localhost:2",
        "python", "-m", "training.train", "--spec", "/s.json",
    ]  # fmt: skip
    assert contract.horovodrun_command(4, args)[:5] == [
        "horovodrun",
        "-np",
        "4",
        "-H",
        "localhost:4",
    ]
    assert contract.horovodrun_command(24, args, hostfile="/etc/mpi/hostfile")[:5] == [
        "horovodrun", "-np", "24", "--hostfile", "/etc/mpi/hostfile",
    ]  # fmt: skip
    assert contract.trainer_command(args, python="/py") == ["/py", "-m", "training.train", *args]
    with pytest.raises(ValueError):
        contract.spec_args()


def test_local_command_runs_one_process_without_a_launcher(tmp_path: Path) -> None:
    from mlplatform.stages.train import local_command

    spec = str(tmp_path / "s.json")
    assert local_command(1, tmp_path / "s.json") == [
        sys.executable, "-m", "training.train", "--spec", spec,
    ]  # fmt: skip
    assert local_command(2, tmp_path / "s.json") == [
        sys.executable, "-m", "training.launch", "-np", "2", "--gloo", "-H", "localhost:2",
        sys.executable, "-m", "training.train", "--spec", spec,
    ]  # fmt: skip


def test_the_launcher_refuses_launches_that_need_horovods_own_check(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from training.launch import main

    assert main(["-np", "2", "-H", "localhost:2", "python", "-c", "pass"]) == 2
    assert "only for --gloo launches" in capsys.readouterr().err


# -- processes fitted to the data --------------------------------------------------------------


@pytest.mark.parametrize(
    ("training", "rows", "cores", "expected"),
    [
        ({}, 3_200, 2, 1),  # the demo: one process, one TensorFlow start-up
        ({}, 3_200, 64, 1),  # few rows: one process however many cores
        ({}, 1_000_000, 2, 1),  # many rows, two cores: TF already uses both
        ({}, 1_000_000, 8, 4),  # many rows, eight cores: two cores a process
        ({}, 250_000, 64, 2),  # 100,000 rows a process
        ({}, None, None, 1),  # unknown: one
        ({"processes_per_worker": 2}, 3_200, 2, 2),  # the config says otherwise
        ({"gpus_per_worker": 4}, 10, 1, 4),  # one per GPU
    ],
)
def test_processes_fit_the_data_unless_the_config_says_otherwise(
    training: dict, rows: int | None, cores: int | None, expected: int
) -> None:
    assert TrainingConfig(**training).processes(rows, cores) == expected
    assert TrainingConfig(workers=3, **training).world_size(rows, cores) == 3 * expected


def test_s3_uris_get_working_copies_shared_by_the_ranks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An s3:// URI is a local working copy under MLP_TRAINER_WORKDIR (the same path for every
    rank and try) that :mod:`training.remote_io` fills or publishes; local paths stay as given."""
    monkeypatch.setenv(contract.WORKDIR_ENV, str(tmp_path / "work"))
    raw = make_spec(
        tmp_path, "out", train_uri="s3://b/sets/train.parquet", output_dir="s3://b/run/train"
    )
    paths = parse_spec(raw).paths()
    assert paths.remote == {
        "train": "s3://b/sets/train.parquet",
        "output_dir": "s3://b/run/train",
        "checkpoint_dir": "s3://b/run/train/checkpoints",
    }
    assert paths.train.name == "train.parquet" and paths.train.is_relative_to(tmp_path / "work")
    assert paths.checkpoint_dir == paths.output_dir / "checkpoints"
    assert paths.holdout == Path(raw["holdout_uri"].removeprefix("file://"))
    assert parse_spec(raw).paths() == paths
