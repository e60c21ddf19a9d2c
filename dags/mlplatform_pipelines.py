"""DAG factory: per ``pipelines/*.yaml``, a training DAG ``mlp_<name>_train`` and a manual
rollback DAG ``mlp_<name>_rollback``.

Onboarding a model needs no Airflow code: drop a validated pipeline YAML into ``pipelines/`` and
this file builds its DAGs on the next parse::

    ingest -> validate -> features -> training_set -> train -> register -> gate
      -> infra_validate -> promote

Trigger it from the UI or ``mlplatform run NAME --data URI`` (param ``data_uri``). Parsing stays
fast: only the Airflow SDK, pydantic and the operators' thin modules are imported here.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from pathlib import Path

from airflow.sdk import DAG, Param

from mlplatform.config import ConfigError, PipelineConfig, load_pipeline
from mlplatform.settings import get_settings
from operators import (
    FeaturesOperator,
    GateOperator,
    InfraValidateOperator,
    IngestOperator,
    LocalHorovodTrainOperator,
    PromoteOperator,
    RegisterOperator,
    RollbackOperator,
    TrainingSetOperator,
    ValidateOperator,
)

log = logging.getLogger(__name__)


def train_operator_class() -> type:
    """The train operator of ``MLP_TRAINING_BACKEND`` (``local`` | ``kubernetes``)."""
    if get_settings().training_backend == "kubernetes":
        # ≈3.6 s of kubernetes-client imports: only Kubernetes deployments pay them at parse time
        from operators.kubernetes_training import HorovodKubernetesTrainOperator

        return HorovodKubernetesTrainOperator
    return LocalHorovodTrainOperator


def build_train_dag(cfg: PipelineConfig) -> DAG:
    """The training DAG of one pipeline; every task is a platform operator."""
    with DAG(
        dag_id=f"mlp_{cfg.name}_train",
        description=cfg.description or f"train {cfg.name}",
        schedule=cfg.retrain.schedule if cfg.source.uri else None,
        start_date=datetime(2026, 1, 1),
        catchup=False,
        max_active_runs=1,
        tags=["mlplatform", "train", cfg.name],
        params={
            "data_uri": Param(
                cfg.source.uri or "", type="string", description="raw batch to ingest"
            )
        },
        default_args={"pipeline": cfg.name, "retries": 1, "retry_delay": timedelta(seconds=30)},
        doc_md=__doc__,
    ) as dag:
        ingest = IngestOperator()
        validate = ValidateOperator(data=ingest.output)
        features = FeaturesOperator(data=ingest.output)
        training_set = TrainingSetOperator(data=ingest.output)
        train = train_operator_class()(
            training_set=training_set.output,
            lineage=[ingest.output, validate.output, features.output],
        )
        registered = RegisterOperator(trained=train.output)
        gate = GateOperator(registered=registered.output, training_set=training_set.output)
        infra = InfraValidateOperator(
            registered=registered.output, training_set=training_set.output
        )
        PromoteOperator(validated=infra.output)
        validate >> features >> training_set
        gate >> infra
    return dag


def build_rollback_dag(cfg: PipelineConfig) -> DAG:
    """Manual DAG: serve the previous version again (param ``to_version`` to pick one)."""
    with DAG(
        dag_id=f"mlp_{cfg.name}_rollback",
        description=f"roll {cfg.serving.model_name} back to the previous served version",
        schedule=None,
        start_date=datetime(2026, 1, 1),
        catchup=False,
        tags=["mlplatform", "rollback", cfg.name],
        params={
            "to_version": Param("", type="string", description="version to serve; empty = previous")
        },
        default_args={"pipeline": cfg.name, "retries": 0},
    ) as dag:
        RollbackOperator(to_version="{{ params.to_version }}")
    return dag


def build_all(pipelines_dir: Path) -> dict[str, DAG]:
    dags: dict[str, DAG] = {}
    for path in sorted(pipelines_dir.glob("*.yaml")):
        try:
            cfg = load_pipeline(path)
        except ConfigError as exc:  # one bad YAML must not hide every other pipeline's DAG
            log.error("skipping pipeline %s: %s", path.name, exc)
            continue
        for dag in (build_train_dag(cfg), build_rollback_dag(cfg)):
            dags[dag.dag_id] = dag
    return dags


globals().update(build_all(get_settings().pipelines_dir))
