"""PublishDataOperator: the ingest DAG's data asset event, for a newly validated data version."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlplatform.contracts import IngestOutput
from operators.base import PlatformOperator

if TYPE_CHECKING:
    from mlplatform.config import PipelineConfig
    from mlplatform.settings import Settings


class PublishDataOperator(PlatformOperator):
    """Emit the pipeline's data asset (:func:`mlplatform.assets.data_asset`) with ``extra``
    ``{data_version, rows, run_id}`` when ingest's ``data`` (its XCom) is a data version no earlier
    run validated (``new``); a batch validated before is not new: the task is skipped with the
    reason and no event is emitted (Airflow emits an outlet's event only on success).

    Runs after ``validate`` and ``features``: only a validated batch stored in the offline store
    is announced. XCom: ``data_version``, ``rows``, ``asset``.
    """

    stage = "publish"
    data: IngestOutput  # its XCom, rendered when the task runs
    template_fields = ("data",)
    ui_color = "#eef7ea"

    def __init__(self, *, data: Any, **kwargs: Any) -> None:
        from mlplatform.assets import data_asset

        super().__init__(**kwargs)
        self.data = data
        self.outlets = [data_asset(self.pipeline)]

    def run_stage(
        self, cfg: PipelineConfig, out_dir: Path, settings: Settings, context: Any
    ) -> Mapping[str, Any]:
        from mlplatform.assets import data_asset, data_asset_name
        from mlplatform.stages import NothingToDo

        version, rows = self.data["data_version"], self.data["rows"]
        if not self.data.get("new"):
            raise NothingToDo(
                f"data version {version} was validated by an earlier run: not new, no "
                f"{data_asset_name(cfg.name)} event"
            )
        extra = {"data_version": version, "rows": rows, "run_id": context["run_id"]}
        context["outlet_events"][data_asset(cfg.name)].extra = extra
        return {**extra, "asset": data_asset_name(cfg.name)}
