"""The monitor DAG of a pipeline: ``mlp_<name>_monitor``, on ``monitoring.schedule``.

::

    drift_check -> publish_drift (outlets: the drift asset mlp_<name>_drift)

``drift_check`` (:class:`operators.monitor.DriftCheckOperator`) compares the request log since
the last check and the newest validated batch with the champion's training set (Evidently), and
the live metric on delayed labels with the champion's hold-out metric; ``publish_drift`` emits
the drift asset, and the ``drift`` alert, only when a threshold was crossed (else it is skipped
with the reason). No monitor DAG when ``monitoring.schedule`` is null. The monitor takes no
run lease (it only reads); ``max_active_runs=1`` keeps its own checks in order. Airflow is
imported inside the function, so this module stays importable without it.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from mlplatform.config import PipelineConfig

if TYPE_CHECKING:
    from airflow.sdk import DAG

MONITOR_DAG_DOC = """Monitor DAG of a pipeline config::

    drift_check -> publish_drift (emits the drift asset when a threshold is crossed)

Open the **Drift report** extra link of `drift_check` for the Evidently report. Too few rows
since the last check (`monitoring.min_rows`) or no champion yet: `drift_check` is skipped with
the reason.
"""


def monitor_dag_id(pipeline: str) -> str:
    return f"mlp_{pipeline}_monitor"


def build_monitor_dag(cfg: PipelineConfig) -> DAG | None:
    """The monitor DAG of one pipeline, or None when ``monitoring.schedule`` is null."""
    if cfg.monitoring.schedule is None:
        return None

    from mlplatform.assets import drift_asset
    from mlplatform.dag_factory import dag_default_args, pipeline_dag
    from operators.monitor import DriftCheckOperator, PublishDriftOperator

    with pipeline_dag(
        cfg,
        "monitor",
        description=f"drift and live-metric checks of {cfg.serving.model_name}",
        schedule=cfg.monitoring.schedule,
        max_active_runs=1,
        default_args=dag_default_args(cfg, retries=1, retry_delay=timedelta(seconds=30)),
        doc_md=MONITOR_DAG_DOC,
    ) as dag:
        check = DriftCheckOperator()
        PublishDriftOperator(check=check.output, outlets=[drift_asset(cfg.name)], retries=0)
    return dag
