"""Batch scoring operator: the champion over a table or the latest offline features."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlplatform.storage import SCORE_RUN_PREFIX
from operators.base import PlatformOperator

if TYPE_CHECKING:
    from mlplatform.config import PipelineConfig
    from mlplatform.settings import Settings


class ScoreOperator(PlatformOperator):
    """Score ``input_uri`` (templated; empty: ``scoring.input_uri``, else every entity's latest
    offline features) with the champion, in chunks of ``scoring.chunk_rows`` rows.

    XCom: ``predictions_uri``, ``rows``, ``chunks``, ``model_version``, ``data_version``,
    ``request_log_lines`` ... (:func:`mlplatform.stages.score.score`). The stage directory is
    not emptied first (``<storage>/<pipeline>/score__<run>/score/``): a failed try leaves an earlier try's ``predictions.parquet`` as it was.
    """

    stage = "score"
    # a score run never shares a train run's directory, lease or frozen config, even where
    # both DAGs run at the same logical date (same run id): <storage>/<pipeline>/score__<run>/
    run_prefix = SCORE_RUN_PREFIX
    fresh_stage_dir = False
    imports_tensorflow = True
    template_fields = ("input_uri",)
    ui_color = "#eef7e8"

    def __init__(self, *, input_uri: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.input_uri = input_uri

    def run_stage(
        self, cfg: PipelineConfig, out_dir: Path, settings: Settings, context: Any
    ) -> Mapping[str, Any]:
        from mlplatform.stages.score import score

        given = (self.input_uri or "").strip()
        uri = given if given not in ("", "None") else cfg.scoring.input_uri
        return score(cfg, out_dir, settings, input_uri=uri, run_id=context["run_id"])
