"""The trainer (``python -m training.train``) end to end on small synthetic churn data.

- under ``horovodrun -np 2 --gloo``: both ranks end with identical weights, the SavedModel's
  ``serving_default`` takes raw features by name and the model learns (hold-out AUC > 0.7);
- plain (world size 1) with MLflow: the run holds params, per-epoch loss, hold-out metrics and the
  TF-flavor model whose artifact holds the SavedModel;
- a spec naming a column the parquet lacks fails with exit code 2 and one line naming it.

These start TensorFlow in subprocesses (≈ 15 s each, ≈ 40 s under horovodrun): ``slow``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
HOROVODRUN = Path(sys.executable).parent / "horovodrun"

NUMERIC = ["tenure_months", "monthly_charges", "support_calls", "usage_minutes"]
CATEGORICAL = ["contract_type", "region"]
EPOCHS = 5

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


def write_spec(tmp: Path, out: str, mlflow: dict | None = None, **overrides: object) -> Path:
    train, holdout = make_data(tmp / "data")
    spec = {
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
    path = tmp / f"{out}.spec.json"
    path.write_text(json.dumps(spec, indent=2))
    return path


def run_trainer(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PATH": f"{Path(PYTHON).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    return subprocess.run(
        cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False
    )


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


def test_horovod_two_ranks_agree_and_learn(tmp_path: Path) -> None:
    if not HOROVODRUN.exists():
        pytest.skip(f"{HOROVODRUN} not found: run scripts/install_horovod.sh")
    spec_path = write_spec(tmp_path, "out")
    spec = json.loads(spec_path.read_text())
    out = Path(spec["output_dir"])

    proc = run_trainer(
        [str(HOROVODRUN), "-np", "2", "--gloo", "-H", "localhost:2",
         PYTHON, "-m", "training.train", "--spec", str(spec_path), "--dump-weights"]
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"epoch {EPOCHS}/{EPOCHS}" in proc.stdout

    w0, w1 = np.load(out / "weights_rank0.npz"), np.load(out / "weights_rank1.npz")
    assert sorted(w0.files) == sorted(w1.files) and len(w0.files) > 0
    for key in w0.files:
        np.testing.assert_allclose(w0[key], w1[key], rtol=0, atol=1e-7, err_msg=key)

    scores = check_serving_signature(out / "saved_model", spec["holdout_uri"], "score")
    assert ((scores >= 0) & (scores <= 1)).all()

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    assert metrics["train_rows"] == 1600
    assert [h["epoch"] for h in metrics["history"]] == list(range(1, EPOCHS + 1))
    assert metrics["samples_per_sec"] > 0 and metrics["seconds"] > 0
    assert metrics["holdout"]["auc"] > 0.7, metrics["holdout"]

    result = json.loads((out / "result.json").read_text())
    assert result["mlflow_run_id"] is None and result["model_uri"] is None
    assert result["saved_model_dir"] == str(out / "saved_model")
    assert result["metrics"] == metrics["holdout"]


def test_mlflow_run_holds_params_metrics_and_saved_model(tmp_path: Path) -> None:
    import mlflow

    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec_path = write_spec(
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
    spec = json.loads(spec_path.read_text())
    out = Path(spec["output_dir"])

    proc = run_trainer([PYTHON, "-m", "training.train", "--spec", str(spec_path)])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Failed to validate serving input example" not in proc.stderr

    result = json.loads((out / "result.json").read_text())
    run_id = result["mlflow_run_id"]
    assert run_id and result["model_uri"] == f"runs:/{run_id}/model"

    client = mlflow.MlflowClient(tracking_uri)
    run = client.get_run(run_id)
    assert run.info.run_name == "demo-run1"
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


def test_missing_column_is_one_line_error(tmp_path: Path) -> None:
    spec_path = write_spec(tmp_path, "out", numeric_features=[*NUMERIC, "no_such_column"])
    proc = run_trainer([PYTHON, "-m", "training.train", "--spec", str(spec_path)])
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("training.train: error")]
    assert len(errors) == 1, proc.stderr[-2000:]
    assert "'no_such_column'" in errors[0] and "train.parquet" in errors[0]
