"""Run control: the first and last task of every training run (see :mod:`mlplatform.runs`).

``start_run`` takes the pipeline's lease (waiting, with a log line, while another live run holds
it; taking over and reaping a dead one) and freezes the run's validated config; ``end_run`` is
its teardown: it gives the lease back whatever happened in between (failure, refusal, skip).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from operators.base import PlatformOperator

#: Airflow's run types (``DagRunType``): the first part of every run id Airflow generates
AIRFLOW_RUN_TYPES = frozenset(
    (
        "backfill",
        "scheduled",
        "manual",
        "operator_triggered",
        "asset_triggered",
        "asset_materialization",
    )
)

if TYPE_CHECKING:
    from mlplatform.config import PipelineConfig
    from mlplatform.settings import Settings


def split_run_id(platform_run_id: str) -> tuple[str, str]:
    """``(run_scope, Airflow run id)`` of a platform run id (see
    :meth:`PlatformOperator.platform_run_id`): ``ingest__scheduled__...`` -> ``("ingest",
    "scheduled__...")``; a train DAG's id has no scope."""
    head, sep, rest = platform_run_id.partition("__")
    if sep and rest and head not in AIRFLOW_RUN_TYPES:
        return head, rest
    return "", platform_run_id


class StartRunOperator(PlatformOperator):
    """Take the pipeline lease for this run and freeze its config snapshot.

    XCom: ``config_hash``, ``waited_s``, ``reaped_run`` (the dead run whose lease was taken over).
    """

    stage = "start_run"
    ui_color = "#f0f0f0"

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("retries", 0)
        super().__init__(**kwargs)

    def run_stage(
        self, cfg: PipelineConfig, out_dir: Path, settings: Settings, context: Any
    ) -> Mapping[str, Any]:
        import time

        from mlplatform import runs
        from mlplatform.config import find_pipeline
        from mlplatform.stages import StageError
        from mlplatform.storage import run_key

        run_id, dag_id = self.platform_run_id(context), context["dag"].dag_id
        ti = context["ti"]

        def run_state(other: str) -> str | None:
            scope, airflow_run_id = split_run_id(other)
            if scope != self.run_scope:
                return None  # another DAG's run (two DAGs may share a run id): ask nobody
            return ti.get_dagrun_state(dag_id=dag_id, run_id=airflow_run_id)

        def on_wait(holder: runs.Lease) -> None:
            self.log.info(
                "waiting for %s to finish (runs of one pipeline never interleave)",
                holder.describe(),
            )

        started = time.monotonic()
        try:
            reaped = runs.acquire(
                settings,
                cfg.name,
                run_id,
                wait_s=settings.run_lock_wait_s,
                stale_after_s=settings.run_stale_s,
                run_state=run_state,
                on_wait=on_wait,
            )
        except runs.LeaseTimeout as exc:
            raise StageError(f"start_run: {exc}") from None
        waited = time.monotonic() - started
        result: dict[str, Any] = {"waited_s": round(waited, 1), "reaped_run": None}
        if reaped is not None:
            ended = runs.end_mlflow_runs(settings, cfg.name, reaped.run_id)
            self.log.warning(
                "%s died without finishing; its MLflow run(s) %s are marked FAILED",
                reaped.describe(),
                ", ".join(ended) or "(none open)",
            )
            result["reaped_run"] = reaped.run_id
        snapshot = runs.freeze_config(
            cfg, settings, run_key(run_id), find_pipeline(cfg.name, settings.pipelines_dir)
        )
        result["config_hash"] = cfg.config_hash()
        result["config_snapshot"] = str(snapshot)
        return result


class EndRunOperator(PlatformOperator):
    """Teardown of the run: give the pipeline lease back. XCom: ``lease`` (released / not held)."""

    stage = "end_run"
    ui_color = "#f0f0f0"

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("retries", 2)
        super().__init__(**kwargs)

    def run_stage(
        self, cfg: PipelineConfig, out_dir: Path, settings: Settings, context: Any
    ) -> Mapping[str, Any]:
        from mlplatform import runs

        released = runs.release(settings, cfg.name, self.platform_run_id(context))
        return {"lease": "released" if released else "not held"}
