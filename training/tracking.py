"""Rank 0's MLflow run for one training job, continued across retries (no TensorFlow at import).

With ``mlflow`` in the spec the run is created when training starts and its id is kept in
``<checkpoint_dir>/mlflow_run.json``; a resumed trainer continues that run (``loss`` is logged
per epoch after the epoch's checkpoint is written, and any epoch the checkpoint has but the run
lacks is back-filled), so the run holds one continuous series. The tracking URI is never written
to disk with credentials: ``mlflow_run.json`` records it with its userinfo replaced by ``***``.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from training.spec import Job, output_name, redact_uri

if TYPE_CHECKING:
    from training.checkpoints import ResumeState
    from training.data import Table
    from training.model import ServingModule

MLFLOW_RUN_FILE = "mlflow_run.json"


class _DropLogRecords(logging.Filter):
    """Drop log records whose message contains ``text``."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


class MlflowTracker:
    """Rank 0's MLflow run for one training job, continued across retries.

    ``open`` creates the run (and a missing experiment) when training starts and records its id
    in ``<checkpoint_dir>/mlflow_run.json``; when that file names a run that still exists on the
    same tracking URI, the run is continued instead (``mlflow.start_run(run_id=...)``). Params
    the run lacks are logged; one whose value changed on a retry (say ``world_size``) is kept and
    the new value set as tag ``resumed.<param>``. ``log_epoch`` logs ``loss`` at step ``epoch``
    (after that epoch's checkpoint is written); ``open`` back-fills the epochs of the restored
    history that the run lacks, so ``loss`` is one series with each epoch once. ``finish`` logs
    the hold-out metrics and the model and ends the run; ``fail`` ends it FAILED (a killed
    process leaves it RUNNING, and the retry continues it).
    """

    def __init__(self, job: Job, device: str, world_size: int, train_rows: int) -> None:
        import mlflow

        assert job.mlflow is not None and job.mlflow.tracking_uri, "a job with MLflow settings"
        self.mlflow = mlflow
        self.spec = job.spec
        self.cfg = job.mlflow
        self.tracking_uri: str = job.mlflow.tracking_uri
        self.device = device
        self.world_size = world_size
        self.train_rows = train_rows
        self.run_file = job.paths.checkpoint_dir / MLFLOW_RUN_FILE
        self.run_id: str | None = None
        self.experiment_id: str | None = None

    def _params(self) -> dict[str, Any]:
        params = self.spec.model
        return {
            "model_kind": params.kind,
            "hidden_units": json.dumps(params.hidden_units),
            "epochs": params.epochs,
            "batch_size": params.batch_size,
            "global_batch_size": params.batch_size * self.world_size,
            "learning_rate": params.learning_rate,
            "seed": params.seed,
            "world_size": self.world_size,
            "label": self.spec.label,
            "numeric_features": ",".join(self.spec.numeric_features),
            "categorical_features": ",".join(self.spec.categorical_features),
            "train_rows": self.train_rows,
        }

    def _previous_run_id(self, client: Any) -> str | None:
        """The run named by ``mlflow_run.json`` if it is usable here, else ``None`` (printed)."""
        if not self.run_file.exists():
            return None
        try:
            stored = json.loads(self.run_file.read_text())
            run_id = str(stored["run_id"])
        except (OSError, ValueError, KeyError, TypeError):
            print(f"warning: ignoring unreadable {self.run_file}; starting a new MLflow run")
            return None
        if redact_uri(str(stored.get("tracking_uri"))) != redact_uri(self.tracking_uri):
            print(
                f"warning: {self.run_file} names run {run_id} on another tracking URI; "
                "starting a new MLflow run",
                flush=True,
            )
            return None
        try:
            run = client.get_run(run_id)
        except Exception:
            run = None
        if run is None or run.info.lifecycle_stage != "active":
            print(f"warning: MLflow run {run_id} is gone; starting a new MLflow run", flush=True)
            return None
        return run_id

    def open(self, state: ResumeState) -> str:
        """Start or continue the run; returns its id."""
        mlflow = self.mlflow
        mlflow.set_tracking_uri(self.tracking_uri)
        client = mlflow.MlflowClient(self.tracking_uri)
        tags = {str(k): str(v) for k, v in self.cfg.tags.items()}
        tags.update(
            {
                "device": self.device,
                "pipeline": self.spec.pipeline,
                "trainer": "training.train (horovod)",
            }
        )
        run_id = self._previous_run_id(client)
        params = {k: str(v) for k, v in self._params().items()}
        if run_id is not None:
            experiment_id = mlflow.start_run(run_id=run_id).info.experiment_id
            logged = client.get_run(run_id).data.params
            tags.update(
                {f"resumed.{k}": v for k, v in params.items() if k in logged and logged[k] != v}
            )
            tags["resumed_from_epoch"] = str(state.epoch)
            params = {k: v for k, v in params.items() if k not in logged}
            print(f"continuing MLflow run {run_id}", flush=True)
        else:
            experiment = mlflow.get_experiment_by_name(self.cfg.experiment)
            if experiment is None:
                experiment_id = mlflow.create_experiment(
                    self.cfg.experiment, artifact_location=self.cfg.artifact_location
                )
            else:
                experiment_id = experiment.experiment_id
            run = mlflow.start_run(experiment_id=experiment_id, run_name=self.cfg.run_name)
            run_id = run.info.run_id
            record = {
                "run_id": run_id,
                "experiment_id": experiment_id,
                "tracking_uri": redact_uri(self.tracking_uri),
            }
            self.run_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.run_file.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(record, indent=2))
            tmp.replace(self.run_file)
        self.run_id, self.experiment_id = run_id, experiment_id
        mlflow.set_tags(tags)
        if params:
            mlflow.log_params(params)
        have = {m.step for m in client.get_metric_history(run_id, "loss")}
        for point in state.history:
            if point["epoch"] not in have:
                self.log_epoch(point)
        return run_id

    def log_epoch(self, point: dict[str, Any]) -> None:
        """Log one finished epoch's ``loss`` at step ``epoch``."""
        self.mlflow.log_metric("loss", point["loss"], step=int(point["epoch"]))

    def finish(
        self, module: ServingModule, metrics: dict[str, Any], holdout: Table
    ) -> tuple[str, str, str | None]:
        """Hold-out metrics, ``metrics.json`` and the model (TF flavor); ends the run.

        Returns ``(run_id, "runs:/<run_id>/model", logged_model_id)``.
        """
        import mlflow.tensorflow
        from mlflow.models import ModelSignature
        from mlflow.types.schema import Schema, TensorSpec

        mlflow, spec = self.mlflow, self.spec
        assert self.run_id is not None, "open() first"
        # The serving signature as MLflow tensor specs: rank-1 raw-feature columns in, one out.
        inputs = [TensorSpec(np.dtype(np.float32), (-1,), name) for name in spec.numeric_features]
        inputs += [TensorSpec(np.dtype(object), (-1,), name) for name in spec.categorical_features]
        signature = ModelSignature(
            inputs=Schema(inputs),
            outputs=Schema([TensorSpec(np.dtype(np.float32), (-1,), output_name(spec.model.kind))]),
        )
        example = {name: col[:5] for name, col in holdout.features.items()}
        scalars = {
            **{f"holdout_{k}": v for k, v in metrics["holdout"].items()},
            "samples_per_sec": metrics["samples_per_sec"],
            "train_seconds": metrics["seconds"],
        }
        mlflow.log_metrics({k: v for k, v in scalars.items() if v is not None})
        mlflow.log_dict(metrics, "metrics.json")
        # MLflow checks the input example by serving it through the flavor's pyfunc, whose
        # tf2-module wrapper takes a single ndarray only, never named columns: that check fails
        # by design here (the platform serves the SavedModel itself), so drop its warning.
        model_logger = logging.getLogger("mlflow.models.model")
        quiet = _DropLogRecords("Failed to validate serving input example")
        model_logger.addFilter(quiet)
        try:
            # A tf.Module (not a keras.Model) takes the flavor's "tf2-module" path:
            # tf.saved_model.save(module, <model>/tf2model, **saved_model_kwargs), i.e. the very
            # SavedModel exported above, serving_default signature included.
            info = mlflow.tensorflow.log_model(
                module,
                name="model",
                signature=signature,
                input_example=example,
                saved_model_kwargs={"signatures": module.signature_functions()},
                pip_requirements=mlflow.tensorflow.get_default_pip_requirements(),
            )
        finally:
            model_logger.removeFilter(quiet)
        mlflow.end_run("FINISHED")
        return self.run_id, f"runs:/{self.run_id}/model", getattr(info, "model_id", None)

    def fail(self) -> None:
        """End the active run as FAILED (an error in this process)."""
        if self.mlflow.active_run() is not None:
            self.mlflow.end_run("FAILED")
