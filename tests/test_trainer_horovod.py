"""The trainer (``python -m training.train``) end to end on small synthetic churn data.

- under ``horovodrun -np 2 --gloo``: both ranks end with identical weights, the SavedModel's
  ``serving_default`` takes raw features by name and the model learns (hold-out AUC > 0.7);
- killed with SIGKILL after epoch 2's checkpoint and started again with the same spec, it resumes
  at epoch 3 (`resuming from checkpoint at epoch 2/6`), trains each epoch once, continues the same
  MLflow run, and ends exactly where an uninterrupted run ends (same losses, same signature);
- plain (world size 1) with MLflow, the spec given inline with ``--spec-json``: the run holds
  params, per-epoch loss, hold-out metrics and the TF-flavor model whose artifact holds the
  SavedModel;
- a checkpoint of another model fails with exit code 2 and one line naming what differs.

These start TensorFlow in subprocesses (≈ 15 s each, ≈ 25 s under horovodrun): ``slow``. Spec and
data errors need no TensorFlow and are tested in-process in ``test_trainer_spec.py``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
HOROVODRUN = Path(sys.executable).parent / "horovodrun"

NUMERIC = ["tenure_months", "monthly_charges", "support_calls", "usage_minutes"]
CATEGORICAL = ["contract_type", "region"]
EPOCHS = 6
KILL_AFTER_EPOCH = 2

pytestmark = pytest.mark.slow


def make_data(directory: Path, n: int = 2000, seed: int = 7) -> tuple[Path, Path]:
    """Churn-like rows whose label is a logistic draw from a linear mix of the features."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "tenure_months": rng.integers(1, 72, n),
            "monthly_charges": rng.normal(70.0, 20.0, n),
            "support_calls": rng.poisson(2.0, n),
            "usage_minutes": rng.gamma(2.0, 200.0, n),
            "contract_type": rng.choice(["monthly", "annual", "two_year"], n),
            "region": rng.choice(["north", "south", "east"], n),
        }
    )
    logit = (
        -0.06 * (df["tenure_months"] - 36)
        + 0.04 * (df["monthly_charges"] - 70)
        + 0.6 * (df["support_calls"] - 2)
        + df["contract_type"].map({"monthly": 1.2, "annual": -0.4, "two_year": -1.6})
    )
    df["churned"] = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype("int64")
    directory.mkdir(parents=True, exist_ok=True)
    cut = int(n * 0.8)
    train, holdout = directory / "train.parquet", directory / "holdout.parquet"
    df.iloc[:cut].to_parquet(train, index=False)
    df.iloc[cut:].to_parquet(holdout, index=False)
    return train, holdout


def make_spec(tmp: Path, out: str, mlflow: dict | None = None, **overrides: object) -> dict:
    """A trainer spec on fresh data under ``tmp``, writing to ``tmp/out``."""
    train, holdout = make_data(tmp / "data")
    return {
        "pipeline": "demo",
        "label": "churned",
        "numeric_features": NUMERIC,
        "categorical_features": CATEGORICAL,
        "model": {
            "kind": "tabular_classifier",
            "hidden_units": [64, 32],
            "epochs": EPOCHS,
            "batch_size": 256,
            "learning_rate": 0.001,
            "seed": 42,
        },
        "train_uri": str(train),
        "holdout_uri": holdout.as_uri(),  # file:// URIs are accepted too
        "output_dir": str(tmp / out),
        "mlflow": mlflow,
        **overrides,
    }


def write_spec(tmp: Path, out: str, mlflow: dict | None = None, **overrides: object) -> Path:
    """``make_spec`` written to ``tmp/<out>.spec.json``; returns its path."""
    path = tmp / f"{out}.spec.json"
    path.write_text(json.dumps(make_spec(tmp, out, mlflow, **overrides), indent=2))
    return path


def trainer_env(**extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PATH": f"{Path(PYTHON).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        **extra,
    }


def run_trainer(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, cwd=REPO, env=trainer_env(), capture_output=True, text=True, timeout=600, check=False
    )


def horovod_cmd(np_: int, *args: str) -> list[str]:
    if not HOROVODRUN.exists():
        pytest.skip(f"{HOROVODRUN} not found: run scripts/install_horovod.sh")
    return [str(HOROVODRUN), "-np", str(np_), "--gloo", "-H", f"localhost:{np_}",
            PYTHON, "-m", "training.train", *args]  # fmt: skip


def raw_holdout(holdout_uri: str, n: int = 50) -> dict[str, np.ndarray]:
    df = pd.read_parquet(holdout_uri.removeprefix("file://")).head(n)
    cols = {f: df[f].to_numpy(np.float32) for f in NUMERIC}
    cols.update({f: df[f].astype(str).to_numpy(object) for f in CATEGORICAL})
    return cols


def check_serving_signature(saved_model_dir: Path, holdout_uri: str, output: str) -> np.ndarray:
    """The ``serving_default`` takes rank-1 raw features by name and returns ``output`` [n]."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(saved_model_dir))
    fn = loaded.signatures["serving_default"]
    _, kwargs = fn.structured_input_signature
    assert set(kwargs) == set(NUMERIC + CATEGORICAL)
    for name, spec in kwargs.items():
        assert spec.shape.as_list() == [None], name
        assert spec.dtype == (tf.float32 if name in NUMERIC else tf.string), name
    assert set(fn.structured_outputs) == {output}
    cols = raw_holdout(holdout_uri)
    result = fn(**{k: tf.constant(v) for k, v in cols.items()})
    values = result[output].numpy()
    assert values.dtype == np.float32
    assert values.shape == (len(cols["region"]),)
    return values


def signature_of(saved_model_dir: Path) -> tuple[dict[str, tuple], dict[str, tuple]]:
    """``serving_default``'s inputs and outputs as ``{name: (shape, dtype)}``."""
    import tensorflow as tf

    fn = tf.saved_model.load(str(saved_model_dir)).signatures["serving_default"]
    _, kwargs = fn.structured_input_signature
    return (
        {k: (tuple(s.shape.as_list()), s.dtype.name) for k, s in kwargs.items()},
        {k: (tuple(s.shape.as_list()), s.dtype.name) for k, s in fn.structured_outputs.items()},
    )


def assert_same_weights(out: Path) -> None:
    w0, w1 = np.load(out / "weights_rank0.npz"), np.load(out / "weights_rank1.npz")
    assert sorted(w0.files) == sorted(w1.files) and len(w0.files) > 0
    for key in w0.files:
        np.testing.assert_allclose(w0[key], w1[key], rtol=0, atol=1e-7, err_msg=key)


@pytest.fixture(scope="module")
def fresh_np2(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path, str]:
    """One uninterrupted run at np=2 with ``--dump-weights``: ``(spec, output_dir, stdout)``."""
    tmp = tmp_path_factory.mktemp("fresh")
    spec_path = write_spec(tmp, "out")
    proc = run_trainer(horovod_cmd(2, "--spec", str(spec_path), "--dump-weights"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    spec = json.loads(spec_path.read_text())
    return spec, Path(spec["output_dir"]), proc.stdout


def test_horovod_two_ranks_agree_and_learn(fresh_np2: tuple[dict, Path, str]) -> None:
    spec, out, stdout = fresh_np2
    assert f"epoch {EPOCHS}/{EPOCHS}" in stdout
    assert "resuming" not in stdout
    assert_same_weights(out)

    scores = check_serving_signature(out / "saved_model", spec["holdout_uri"], "score")
    assert ((scores >= 0) & (scores <= 1)).all()

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    assert metrics["train_rows"] == 1600
    assert [h["epoch"] for h in metrics["history"]] == list(range(1, EPOCHS + 1))
    assert metrics["samples_per_sec"] > 0 and metrics["seconds"] > 0
    assert metrics["steady_samples_per_sec"] > 0
    assert metrics["epochs_trained"] == EPOCHS and metrics["resumed_from_epoch"] == 0
    assert metrics["holdout"]["auc"] > 0.7, metrics["holdout"]

    result = json.loads((out / "result.json").read_text())
    assert result["mlflow_run_id"] is None and result["model_uri"] is None
    assert result["saved_model_dir"] == str(out / "saved_model")
    assert result["metrics"] == metrics["holdout"]

    # Every epoch wrote a checkpoint; the newest two are kept, "latest" is the last epoch.
    ckpt_dir = out / "checkpoints"
    assert sorted(p.name for p in ckpt_dir.glob("ckpt-*.index")) == [
        f"ckpt-{EPOCHS - 1}.index",
        f"ckpt-{EPOCHS}.index",
    ]
    assert f'model_checkpoint_path: "ckpt-{EPOCHS}"' in (ckpt_dir / "checkpoint").read_text()


def _hard_kill(proc: subprocess.Popen[str]) -> None:
    """SIGKILL the launcher's process group and every process below it (horovodrun starts its
    workers in sessions of their own), then wait until all are gone."""
    import psutil

    try:
        procs = [psutil.Process(proc.pid)]
        procs += procs[0].children(recursive=True)
    except psutil.NoSuchProcess:
        procs = []
    os.killpg(proc.pid, signal.SIGKILL)
    for p in procs:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    proc.wait(timeout=30)
    _, alive = psutil.wait_procs(procs, timeout=30)
    assert not alive, f"still running after SIGKILL: {alive}"


def test_sigkill_then_retry_resumes_the_same_run(
    tmp_path: Path, fresh_np2: tuple[dict, Path, str]
) -> None:
    import mlflow

    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec_path = write_spec(
        tmp_path,
        "out",
        mlflow={"tracking_uri": tracking_uri, "experiment": "demo", "run_name": "resume"},
        checkpoint_dir=str(tmp_path / "ckpts"),
    )
    spec = json.loads(spec_path.read_text())
    out, ckpt_dir = Path(spec["output_dir"]), tmp_path / "ckpts"
    cmd = horovod_cmd(2, "--spec", str(spec_path), "--dump-weights")

    # 1. Start, and SIGKILL everything once epoch 2's checkpoint is "latest" (the trainer
    #    pauses 5 s after each checkpoint through the test hook, so the kill lands before epoch 3;
    #    it may land before epoch 2's loss reached MLflow: the retry back-fills it).
    log = (tmp_path / "first.log").open("w+")
    first = subprocess.Popen(
        cmd,
        cwd=REPO,
        env=trainer_env(MLP_TRAINER_EPOCH_PAUSE_S="5"),
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    state_file = ckpt_dir / "checkpoint"
    deadline = time.monotonic() + 300
    try:
        while f'"ckpt-{KILL_AFTER_EPOCH}"' not in (
            state_file.read_text() if state_file.exists() else ""
        ):
            assert first.poll() is None, "trainer ended before it was killed"
            assert time.monotonic() < deadline, "no checkpoint for epoch 2 within 300 s"
            time.sleep(0.05)
    finally:
        _hard_kill(first)
    log.seek(0)
    first_out = log.read()
    assert f"epoch {KILL_AFTER_EPOCH - 1}/{EPOCHS} loss=" in first_out
    assert f"epoch {KILL_AFTER_EPOCH + 1}/{EPOCHS} loss=" not in first_out
    assert not (ckpt_dir / f"ckpt-{KILL_AFTER_EPOCH + 1}.index").exists()
    assert not (out / "saved_model").exists() and not (out / "metrics.json").exists()
    first_run = json.loads((ckpt_dir / "mlflow_run.json").read_text())["run_id"]

    # 2. The retry: same command, same spec.
    proc = run_trainer(cmd)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"resuming from checkpoint at epoch {KILL_AFTER_EPOCH}/{EPOCHS}" in proc.stdout
    assert f"continuing MLflow run {first_run}" in proc.stdout
    trained = [e for e in range(1, EPOCHS + 1) if f"epoch {e}/{EPOCHS} loss=" in proc.stdout]
    assert trained == list(range(KILL_AFTER_EPOCH + 1, EPOCHS + 1)), proc.stdout[-3000:]
    assert_same_weights(out)  # rank 0 restored, every rank trained on from the same state

    metrics = json.loads((out / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == list(range(1, EPOCHS + 1))
    assert metrics["resumed_from_epoch"] == KILL_AFTER_EPOCH
    assert metrics["epochs_trained"] == EPOCHS - KILL_AFTER_EPOCH
    # Same batches, same LR schedule step, same optimizer state: the uninterrupted run's losses.
    fresh_spec, fresh_out, _ = fresh_np2
    fresh = json.loads((fresh_out / "metrics.json").read_text())
    np.testing.assert_allclose(
        [h["loss"] for h in metrics["history"]],
        [h["loss"] for h in fresh["history"]],
        rtol=1e-4,
    )

    # The SavedModel serves, with the signature of an uninterrupted run's.
    scores = check_serving_signature(out / "saved_model", spec["holdout_uri"], "score")
    assert ((scores >= 0) & (scores <= 1)).all()
    assert signature_of(out / "saved_model") == signature_of(fresh_out / "saved_model")
    fresh_scores = check_serving_signature(
        fresh_out / "saved_model", fresh_spec["holdout_uri"], "score"
    )
    np.testing.assert_allclose(scores, fresh_scores, atol=1e-3)

    # One MLflow run, each epoch's loss logged once.
    result = json.loads((out / "result.json").read_text())
    assert result["mlflow_run_id"] == first_run
    client = mlflow.MlflowClient(tracking_uri)
    assert len(client.search_runs([client.get_experiment_by_name("demo").experiment_id])) == 1
    run = client.get_run(first_run)
    assert run.info.status == "FINISHED"
    assert run.data.tags["resumed_from_epoch"] == str(KILL_AFTER_EPOCH)
    steps = sorted(m.step for m in client.get_metric_history(first_run, "loss"))
    assert steps == list(range(1, EPOCHS + 1))
    assert "holdout_auc" in run.data.metrics


def test_mlflow_run_holds_params_metrics_and_saved_model(tmp_path: Path) -> None:
    import mlflow

    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = make_spec(
        tmp_path,
        "out",
        mlflow={
            "tracking_uri": tracking_uri,
            "experiment": "demo",
            "run_name": "demo-run1",
            "tags": {"data_version": "abc"},
            "artifact_location": str(tmp_path / "mlartifacts"),
        },
    )
    out = Path(spec["output_dir"])

    proc = run_trainer([PYTHON, "-m", "training.train", "--spec-json", json.dumps(spec)])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Failed to validate serving input example" not in proc.stderr

    result = json.loads((out / "result.json").read_text())
    run_id = result["mlflow_run_id"]
    assert run_id and result["model_uri"] == f"runs:/{run_id}/model"
    # the Kubernetes hand-back: the last MLPLATFORM_RESULT line parses to the same result
    from mlplatform.k8s import parse_result_line

    handed = [r for r in map(parse_result_line, proc.stdout.splitlines()) if r]
    assert handed and handed[-1] == result and result["world_size"] == 1
    assert json.loads((out / "checkpoints" / "mlflow_run.json").read_text())["run_id"] == run_id

    client = mlflow.MlflowClient(tracking_uri)
    run = client.get_run(run_id)
    assert run.info.run_name == "demo-run1"
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "demo"
    params = run.data.params
    assert params["world_size"] == "1"
    assert params["model_kind"] == "tabular_classifier"
    assert params["epochs"] == str(EPOCHS) and params["batch_size"] == "256"
    assert params["numeric_features"] == ",".join(NUMERIC)
    assert params["categorical_features"] == ",".join(CATEGORICAL)
    assert run.data.tags["data_version"] == "abc"
    assert run.data.tags["device"] == "CPU"
    loss = client.get_metric_history(run_id, "loss")
    assert sorted(m.step for m in loss) == list(range(1, EPOCHS + 1))
    for key in ("auc", "accuracy", "log_loss"):
        assert run.data.metrics[f"holdout_{key}"] == pytest.approx(result["metrics"][key])
    assert run.data.metrics["holdout_auc"] > 0.7

    mlflow.set_tracking_uri(tracking_uri)
    local = Path(
        mlflow.artifacts.download_artifacts(result["model_uri"], dst_path=str(tmp_path / "dl"))
    )
    mlmodel = (local / "MLmodel").read_text()
    assert "tensorflow:" in mlmodel and "saved_model_dir: tf2model" in mlmodel
    assert (local / "tf2model" / "saved_model.pb").is_file()
    assert (local / "input_example.json").is_file()
    check_serving_signature(local / "tf2model", spec["holdout_uri"], "score")

    # The same checkpoint dir with another architecture: one line, exit 2, nothing discarded.
    other = {**spec, "mlflow": None, "model": {**spec["model"], "hidden_units": [8]}}
    proc = run_trainer([PYTHON, "-m", "training.train", "--spec-json", json.dumps(other)])
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("training.train: error")]
    assert len(errors) == 1, proc.stderr[-2000:]
    assert "different model" in errors[0] and "hidden_units: [64, 32] -> [8]" in errors[0]
    assert (out / "checkpoints" / f"ckpt-{EPOCHS}.index").exists()
