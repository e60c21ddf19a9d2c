"""DAG factory: one training DAG ``mlp_<name>_train`` per ``pipelines/*.yaml``.

Onboarding a model needs no Airflow code: drop a validated pipeline YAML into ``pipelines/`` and
this file builds its DAG on the next parse::

    ingest -> validate -> features -> training_set -> train -> register -> gate -> promote

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
    IngestOperator,
    LocalHorovodTrainOperator,
    PromoteOperator,
    RegisterOperator,
    TrainingSetOperator,
    ValidateOperator,
)

log = logging.getLogger(__name__)


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
        params={"data_uri": Param(cfg.source.uri or "", type="string", description="raw batch to ingest")},
        default_args={"pipeline": cfg.name, "retries": 1, "retry_delay": timedelta(seconds=30)},
        doc_md=__doc__,
    ) as dag:
        ingest = IngestOperator()
        validate = ValidateOperator(data=ingest.output)
        features = FeaturesOperator(data=ingest.output)
        training_set = TrainingSetOperator(data=ingest.output)
        train = LocalHorovodTrainOperator(
            training_set=training_set.output,
            lineage=[ingest.output, validate.output, features.output],
        )
        registered = RegisterOperator(trained=train.output)
        gate = GateOperator(registered=registered.output, training_set=training_set.output)
        promote = PromoteOperator(registered=registered.output)
        validate >> features >> training_set
        gate >> promote
    return dag


def build_all(pipelines_dir: Path) -> dict[str, DAG]:
    dags: dict[str, DAG] = {}
    for path in sorted(pipelines_dir.glob("*.yaml")):
        try:
            cfg = load_pipeline(path)
        except ConfigError as exc:  # one bad YAML must not hide every other pipeline's DAG
            log.error("skipping pipeline %s: %s", path.name, exc)
            continue
        dag = build_train_dag(cfg)
        dags[dag.dag_id] = dag
    return dags


globals().update(build_all(get_settings().pipelines_dir))
