"""The Airflow Assets of a pipeline: how continuous training's DAGs trigger one another.

* ``mlp_<name>_data`` (``mlplatform://<name>/data``): a newly validated data version reached the
  offline store. Emitted by the ingest DAG; its event ``extra`` holds ``data_version``, ``rows``
  and ``run_id``.
* ``mlp_<name>_drift`` (``mlplatform://<name>/drift``): the monitor crossed a threshold (feature
  drift above ``monitoring.drift_share``, or the live metric dropped more than
  ``monitoring.max_metric_drop``). Its event ``extra`` holds ``reason`` (one line), ``drift_share``
  and ``report`` (where the HTML report lies).

The train DAG is scheduled on these (and/or ``retrain.schedule``) as the ``retrain`` section says.
Airflow is imported inside the functions, so this module stays importable without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow.sdk import Asset

GROUP = "mlplatform"


def data_asset_name(pipeline: str) -> str:
    return f"mlp_{pipeline}_data"


def drift_asset_name(pipeline: str) -> str:
    return f"mlp_{pipeline}_drift"


def data_asset(pipeline: str) -> Asset:
    """The asset updated each time a new data version of ``pipeline`` is validated."""
    from airflow.sdk import Asset

    return Asset(name=data_asset_name(pipeline), uri=f"mlplatform://{pipeline}/data", group=GROUP)


def drift_asset(pipeline: str) -> Asset:
    """The asset updated each time ``pipeline``'s monitor finds drift (or a metric drop)."""
    from airflow.sdk import Asset

    return Asset(name=drift_asset_name(pipeline), uri=f"mlplatform://{pipeline}/drift", group=GROUP)
