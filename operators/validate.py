"""ValidateOperator: the blocking Great Expectations gate on raw data, with a Data Docs link."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlplatform.contracts import IngestOutput
from operators.base import PlatformOperator
from operators.links import DataDocsLink

if TYPE_CHECKING:
    from mlplatform.config import PipelineConfig
    from mlplatform.settings import Settings


class ValidateOperator(PlatformOperator):
    """Validate the batch at ``data`` (XCom of ingest: ``data_uri``, ``data_version``).

    XCom: ``validation``, ``data_docs`` (file URI of the Data Docs index), ``evaluated``.
    A failing batch is quarantined and the task fails without retry, naming the failed
    expectations and columns in one line.
    """

    stage = "validate"
    data: IngestOutput  # its XCom, rendered when the task runs
    template_fields = ("data",)
    operator_extra_links = (DataDocsLink(),)
    ui_color = "#fdf2e3"

    def __init__(self, *, data: Any, **kwargs: Any) -> None:
        kwargs.setdefault("retries", 0)
        super().__init__(**kwargs)
        self.data = data

    def run_stage(
        self, cfg: PipelineConfig, out_dir: Path, settings: Settings, context: Any
    ) -> Mapping[str, Any]:
        from mlplatform.airflow_runner import ui_url
        from mlplatform.stages.validate import validate

        link = DataDocsLink.url(settings, out_dir / "data_docs" / "index.html")
        try:
            return validate(
                cfg, self.data["data_uri"], self.data["data_version"], out_dir, settings
            )
        finally:  # the Data Docs exist for failed batches too: link them either way
            context["ti"].xcom_push(key=DataDocsLink.xcom_key, value=link)
            self.log.info("GX Data Docs: %s%s", ui_url(), link)

    def cache_parts(self, cfg, settings, context):
        from mlplatform.cache_keys import validate_parts

        return validate_parts(cfg, self.data, settings)

    def on_cache_hit(self, cfg, settings, result, context):
        from mlplatform.stages.validate import mark_validated
        from mlplatform.storage import to_path

        mark_validated(cfg, settings, self.data["data_version"], self.data["data_uri"])
        link = DataDocsLink.url(settings, to_path(result["data_docs"]))
        context["ti"].xcom_push(key=DataDocsLink.xcom_key, value=link)
