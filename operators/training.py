"""Training operators: the trainer under ``horovodrun``, locally (and on Kubernetes, see below).

``LocalHorovodTrainOperator`` is the embedded backend: it runs the very command that the trainer
image runs in production (``horovodrun -np N ... python -m training.train --spec ...``) as a
subprocess on the Airflow worker and streams its output into the task log.
"""

from __future__ import annotations

from typing import Any

from operators.base import PlatformOperator
from operators.links import MlflowRunLink


class LocalHorovodTrainOperator(PlatformOperator):
    """Train on the training set (``training_set``: its XCom); ``lineage`` is a list of upstream
    XComs (ingest, validate, features) whose lineage keys become MLflow tags.

    XCom: ``mlflow_run_id``, ``model_uri`` (``runs:/<id>/model``), ``metrics`` (hold-out),
    ``world_size``, ``samples_per_sec``.
    """

    stage = "train"
    keep_on_retry = ("checkpoints",)  # a retry resumes from the last epoch's checkpoint
    template_fields = ("training_set", "lineage")
    operator_extra_links = (MlflowRunLink(),)
    ui_color = "#f3eafb"

    def __init__(self, *, training_set: Any, lineage: list[Any] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.training_set = training_set
        self.lineage = lineage or []

    def run_stage(self, cfg, out_dir, settings, context):
        import json

        from mlplatform.lineage import git_commit, lineage_tags
        from mlplatform.stages.train import run_local, write_spec

        upstream: dict[str, Any] = {}
        for values in self.lineage:
            upstream.update(values or {})
        tags = lineage_tags(
            {
                **upstream,
                **self.training_set,
                "git_commit": git_commit(settings.repo_root),
                "pipeline_config_hash": cfg.config_hash(),
                "airflow_run_id": context["run_id"],
            }
        )
        spec = write_spec(cfg, self.training_set, out_dir, settings, run_name=f"{cfg.name}-{context['run_id']}", tags=tags)
        result = run_local(cfg, spec, settings, emit=self.log.info)
        metrics = json.loads((out_dir / "metrics.json").read_text())
        context["ti"].xcom_push(key=MlflowRunLink.xcom_key, value=MlflowRunLink.url(settings, cfg.name, result["mlflow_run_id"]))
        return {
            "mlflow_run_id": result["mlflow_run_id"],
            "model_uri": f"models:/{result['mlflow_model_id']}" if result.get("mlflow_model_id") else result["model_uri"],
            "metrics": result["metrics"],
            "world_size": metrics.get("world_size"),
            "samples_per_sec": metrics.get("samples_per_sec"),
            "tags": tags,
        }
