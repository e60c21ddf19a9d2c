"""Monitor operators: the drift check, and the task that publishes the drift asset.

* :class:`DriftCheckOperator` (task ``drift_check``) runs :func:`mlplatform.monitoring.check.
  run_check`; its XCom is the check's result (drift share, drifted features, live metric,
  ``triggered``, ``reason``, report URI). Too few rows, or no champion yet: skipped with the
  reason. Its extra link "Drift report" opens the Evidently HTML report through the platform
  plugin.
* :class:`PublishDriftOperator` (task ``publish_drift``, ``outlets=[drift_asset(name)]``) emits
  the drift asset event, with ``extra`` ``{reason, drift_share, report, live_metric,
  champion_version}``, only when the check crossed a threshold, and sends the ``drift`` alert;
  otherwise it is skipped with the check's reason, and a skipped task emits no asset event.

Monitor runs keep their files under ``<storage>/<pipeline>/monitor__<run>/`` and take no
pipeline lease: they only read what training runs write.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlplatform.storage import MONITOR_RUN_PREFIX
from operators.base import PlatformOperator
from operators.links import DriftReportLink

if TYPE_CHECKING:
    from mlplatform.config import PipelineConfig
    from mlplatform.settings import Settings


class DriftCheckOperator(PlatformOperator):
    """One monitor check of ``pipeline`` (see the module doc)."""

    stage = "drift"
    run_prefix = MONITOR_RUN_PREFIX
    operator_extra_links = (DriftReportLink(),)
    ui_color = "#fdf3e1"

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("task_id", "drift_check")
        super().__init__(**kwargs)

    def run_stage(
        self, cfg: PipelineConfig, out_dir: Path, settings: Settings, context: Any
    ) -> Mapping[str, Any]:
        from mlplatform.airflow_runner import ui_url
        from mlplatform.monitoring.check import run_check
        from mlplatform.storage import to_path

        result = run_check(cfg, out_dir, settings, context["run_id"])
        if result.get("report"):
            link = DriftReportLink.url(settings, to_path(result["report"]))
            context["ti"].xcom_push(key=DriftReportLink.xcom_key, value=link)
            self.log.info("drift report: %s%s", ui_url(), link)
        return result


class PublishDriftOperator(PlatformOperator):
    """Emit the drift asset when ``check`` (drift_check's XCom) crossed a threshold."""

    stage = "publish_drift"
    run_prefix = MONITOR_RUN_PREFIX
    template_fields = ("check",)
    ui_color = "#fdf3e1"

    def __init__(self, *, check: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.check = check

    def run_stage(
        self, cfg: PipelineConfig, out_dir: Path, settings: Settings, context: Any
    ) -> Mapping[str, Any]:
        from mlplatform import alerts
        from mlplatform.assets import drift_asset
        from mlplatform.stages import StageSkipped

        check = self.check or {}
        if not check.get("triggered"):
            raise StageSkipped(f"drift asset not published: {check.get('reason', 'no check')}")
        extra = {
            "reason": check["reason"],
            "drift_share": check.get("drift_share"),
            "report": check.get("report"),
            "live_metric": check.get("live_metric"),
            "champion_version": check.get("champion_version"),
        }
        context["outlet_events"][drift_asset(cfg.name)].extra = extra
        alerts.send(
            cfg,
            "drift",
            check["reason"],
            model=f"{check.get('model_name')} v{check.get('champion_version')}",
            drift_share=check.get("drift_share"),
            drifted_features=", ".join(check.get("drifted_features") or []),
            live_metric=check.get("live_metric"),
            report=check.get("report"),
        )
        return {"published": True, **extra}
