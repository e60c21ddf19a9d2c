"""Rank 0 after training: the SavedModel, hold-out metrics, ``metrics.json``, MLflow, the result.

Outputs (in ``output_dir``): ``saved_model`` (signature ``serving_default``: raw features by
name, rank-1 ``[None]`` float32 / string tensors, NaN / ``""`` for a missing value ->
``{"score"|"prediction": float32 [None]}``), ``metrics.json`` (``holdout``, ``history``
[``epoch``, ``loss``, ``seconds``, ``samples_per_sec`` per epoch], ``world_size``,
``train_rows``, ``samples_per_sec``, ``steady_samples_per_sec``, ``seconds``,
``resumed_from_epoch``) and ``result.json`` (a :class:`~training.spec.TrainResult`), also handed
to a Kubernetes launcher (:func:`hand_back_result`).

Throughput: ``seconds`` is the training loop's time in this process (steps plus the per-epoch
loss allreduce; not TF start-up, data loading, checkpoint writes or MLflow calls);
``samples_per_sec`` = global rows per epoch * epochs trained here / ``seconds``;
``steady_samples_per_sec`` leaves out the first epoch trained here (it traces the step function).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keras
import numpy as np

from training.model import ServingModule, export_saved_model
from training.remote_io import uri_of
from training.spec import CLASSIFIER, RESULT_FILE, RESULT_MARKER, Job, TrainResult

if TYPE_CHECKING:
    from training.checkpoints import ResumeState
    from training.data import Table
    from training.loop import Trainer
    from training.tracking import MlflowTracker

#: set in a single trainer pod: where the KubernetesPodOperator's XCom sidecar reads the result
XCOM_PATH_ENV = "MLPLATFORM_XCOM_PATH"


def evaluate(kind: str, y: np.ndarray, pred: np.ndarray) -> dict[str, float | None]:
    """Hold-out metrics: auc / accuracy / log_loss (classifier) or rmse / mae (regressor)."""
    from sklearn import metrics

    if not np.isfinite(pred).all():  # a diverged model: report it, the gate refuses it
        names = ("auc", "accuracy", "log_loss") if kind == CLASSIFIER else ("rmse", "mae")
        return dict.fromkeys(names, float("nan"))
    if kind == CLASSIFIER:
        auc = float(metrics.roc_auc_score(y, pred)) if len(np.unique(y)) == 2 else None
        return {
            "auc": auc,
            "accuracy": float(metrics.accuracy_score(y, (pred >= 0.5).astype(np.float32))),
            "log_loss": float(
                metrics.log_loss(y, np.clip(pred, 1e-7, 1 - 1e-7), labels=[0.0, 1.0])
            ),
        }
    y64, p64 = y.astype(np.float64), pred.astype(np.float64)
    return {
        "rmse": float(metrics.root_mean_squared_error(y64, p64)),
        "mae": float(metrics.mean_absolute_error(y64, p64)),
    }


def dump_weights(model: keras.Model, path: Path) -> None:
    """Every model variable into ``path`` (``.npz``), for comparing ranks in tests."""
    np.savez(
        path,
        **{
            f"{i:03d}_{v.path.replace('/', '__')}": np.asarray(v)
            for i, v in enumerate(model.variables)
        },
    )


def finish(
    job: Job,
    trainer: Trainer,
    holdout: Table,
    history: list[dict[str, Any]],
    epoch_seconds: list[float],
    state: ResumeState,
    device: str,
    tracker: MlflowTracker | None,
) -> TrainResult:
    """Rank 0 after training: SavedModel, hold-out metrics, ``metrics.json``, MLflow, result."""
    spec, output_dir = job.spec, job.paths.output_dir
    module = ServingModule(
        trainer.model, spec.model.kind, spec.numeric_features, spec.categorical_features
    )
    saved_model_dir = output_dir / "saved_model"
    if saved_model_dir.exists():
        shutil.rmtree(saved_model_dir)
    export_saved_model(module, saved_model_dir)
    holdout_metrics = evaluate(spec.model.kind, holdout.label, module.predict(holdout.features))
    seconds = sum(epoch_seconds)
    rows = trainer.global_rows
    steady = epoch_seconds[1:]
    metrics: dict[str, Any] = {
        "holdout": holdout_metrics,
        "history": history,
        "world_size": trainer.size,
        "train_rows": trainer.train_rows,
        "holdout_rows": len(holdout),
        "samples_per_sec": rows * len(epoch_seconds) / seconds if seconds > 0 else None,
        "steady_samples_per_sec": (
            rows * len(steady) / sum(steady)
            if steady
            else (rows / seconds if seconds > 0 else None)
        ),
        "seconds": seconds,
        "epochs_trained": len(epoch_seconds),
        "resumed_from_epoch": state.epoch,
        "global_batch_size": spec.model.batch_size * trainer.size,
        "device": device,
    }
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print(
        "holdout " + " ".join(f"{k}={v:.4f}" for k, v in holdout_metrics.items() if v is not None),
        flush=True,
    )

    run_id = model_uri = model_id = None
    if tracker is not None:
        run_id, model_uri, model_id = tracker.finish(module, metrics, holdout)
        print(f"mlflow run {run_id}: {model_uri}", flush=True)
    result = TrainResult(
        mlflow_run_id=run_id,
        mlflow_experiment_id=tracker.experiment_id if tracker is not None else None,
        model_uri=model_uri,
        mlflow_model_id=model_id,
        saved_model_dir=uri_of(job.paths, saved_model_dir),
        metrics=holdout_metrics,
        world_size=trainer.size,
        samples_per_sec=metrics["samples_per_sec"],
    )
    (output_dir / RESULT_FILE).write_text(result.model_dump_json(indent=2))
    hand_back_result(result)
    return result


def hand_back_result(result: TrainResult) -> None:
    """Give the result to a Kubernetes launcher (see ``mlplatform/k8s/``).

    In the single-pod case ``MLPLATFORM_XCOM_PATH`` names the file that the KubernetesPodOperator's
    XCom sidecar reads (``/airflow/xcom/return.json``); for MPIJobs the operator parses the last
    ``MLPLATFORM_RESULT <json>`` line of the launcher's log. Locally both are harmless.
    """
    text = result.model_dump_json()
    xcom_path = os.environ.get(XCOM_PATH_ENV)
    if xcom_path:
        Path(xcom_path).parent.mkdir(parents=True, exist_ok=True)
        Path(xcom_path).write_text(text)
    print(f"{RESULT_MARKER} {text}", flush=True)
