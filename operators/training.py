"""Training operators: the trainer, locally (and on Kubernetes, see below).

``LocalHorovodTrainOperator`` is the embedded backend: it runs the trainer of the trainer image
(``python -m training.train --spec ...``, under Horovod's launcher for more than one process, see
:func:`mlplatform.stages.train.local_command`) as a subprocess on the Airflow worker and streams
its output into the task log; a failed trainer fails the task with the trainer's own error line.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowException

from mlplatform.contracts import TrainingSetOutput
from operators.base import PlatformOperator
from operators.caching import CacheableStage
from operators.links import MlflowRunLink

if TYPE_CHECKING:
    from mlplatform.config import PipelineConfig
    from mlplatform.settings import Settings


def train_xcom(raw: dict[str, Any] | None, tags: dict[str, str]) -> dict[str, Any]:
    """The train task's XCom from the trainer's result (``result.json`` / ``return.json``, a
    :class:`training.spec.TrainResult`)."""
    from pydantic import ValidationError

    from training.spec import TrainResult

    if not raw:
        raise AirflowException(
            "train: the trainer returned no result (rank 0 must write /airflow/xcom/return.json "
            "and print a final 'MLPLATFORM_RESULT {json}' line)"
        )
    try:
        result = TrainResult.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        message = f"train: the trainer's result is malformed: {where}: {first['msg']}"
        raise AirflowException(message) from None
    model_id = result.mlflow_model_id
    return {
        "mlflow_run_id": result.mlflow_run_id,
        "model_uri": f"models:/{model_id}" if model_id else result.model_uri,
        "metrics": result.metrics,
        "world_size": result.world_size,
        "samples_per_sec": result.samples_per_sec,
        "tags": tags,
    }


class TrainCaching(CacheableStage):
    """The train stage's cache hooks, shared by both backends: the key is the training set's
    key, the model/training/features sections and the trainer's code (:mod:`mlplatform.cache_keys`);
    a recorded training is reused while its MLflow run and logged model exist."""

    training_set: TrainingSetOutput  # its XCom, rendered when the task runs

    def cache_parts(self, cfg, settings, context):
        from mlplatform.cache_keys import train_parts

        return train_parts(cfg, self.training_set, settings)

    def cache_check(self, cfg, settings, result):
        from mlplatform.cache_keys import train_check

        return train_check(result, settings)

    def on_cache_hit(self, cfg, settings, result, context):
        context["ti"].xcom_push(
            key=MlflowRunLink.xcom_key,
            value=MlflowRunLink.url(settings, cfg.name, str(result["mlflow_run_id"])),
        )


class LocalHorovodTrainOperator(TrainCaching, PlatformOperator):
    """Train on the training set (``training_set``: its XCom); ``lineage`` is a list of upstream
    XComs (ingest, validate, features) whose lineage keys become MLflow tags.

    XCom: ``mlflow_run_id``, ``model_uri`` (``models:/<logged model id>``), ``metrics`` (hold-out),
    ``world_size``, ``samples_per_sec``.
    """

    stage = "train"
    template_fields = ("training_set", "lineage")
    operator_extra_links = (MlflowRunLink(),)
    ui_color = "#f3eafb"

    def __init__(
        self, *, training_set: Any, lineage: list[Any] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.training_set = training_set
        self.lineage = lineage or []

    _trainer = None  # the horovodrun process while it runs

    def _remember(self, proc) -> None:
        self._trainer = proc

    def on_kill(self) -> None:
        """Airflow kills the task (SIGTERM): take the trainer and its ranks down with it."""
        from mlplatform.stages.train import stop_trainer

        if self._trainer is not None:
            stop_trainer(self._trainer)

    def run_stage(
        self, cfg: PipelineConfig, out_dir: Path, settings: Settings, context: Any
    ) -> Mapping[str, Any]:
        from mlplatform.lineage import training_config_hash, training_run_tags
        from mlplatform.stages import StageError, StageUnavailable
        from mlplatform.stages.train import run_local, write_spec

        tags = training_run_tags(
            self.lineage,
            self.training_set,
            settings.repo_root,
            cfg.config_hash(),
            context["run_id"],
            training_config_hash(cfg),
        )
        spec = write_spec(
            cfg,
            self.training_set,
            out_dir,
            settings,
            run_name=f"{cfg.name}-{context['run_id']}",
            tags=tags,
        )
        try:
            result = run_local(cfg, spec, settings, emit=self.log.info, on_start=self._remember)
        except StageError as exc:
            code = self._trainer.returncode if self._trainer is not None else None
            if code is not None and code < 0:  # killed by a signal (OOM killer, node drain)
                raise StageUnavailable(
                    f"{exc} (killed by signal {-code}: a retry resumes from its last checkpoint)"
                ) from exc
            raise  # the trainer failed on its inputs: the same inputs fail again
        # trained and logged: the checkpoints (kept for a retry or a rerun after a crash) are done
        shutil.rmtree(json.loads(spec.read_text())["checkpoint_dir"], ignore_errors=True)
        context["ti"].xcom_push(
            key=MlflowRunLink.xcom_key,
            value=MlflowRunLink.url(settings, cfg.name, str(result["mlflow_run_id"])),
        )
        return train_xcom(result, tags)
