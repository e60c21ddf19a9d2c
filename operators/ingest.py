"""IngestOperator: read a raw batch, version it with DVC, hand on a Parquet URI."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from operators.base import PlatformOperator

if TYPE_CHECKING:
    from mlplatform.config import PipelineConfig
    from mlplatform.settings import Settings


def describe_interval(context: Any) -> str:
    """The run's data interval, for messages: ``2026-01-02T00:00:00+00:00/2026-01-03T00:00:00+00:00``."""
    start, end = context.get("data_interval_start"), context.get("data_interval_end")
    if start is None or end is None:
        return "this run (no data interval)"
    return f"{start.isoformat()}/{end.isoformat()}"


class IngestOperator(PlatformOperator):
    """Ingest ``source_uri`` (templated; default the DAG param ``data_uri``): a path, glob,
    directory, ``s3://`` object or prefix, or ``sql+<SQLAlchemy URL>`` (:mod:`mlplatform.sources`).

    * ``landing=True`` (the ingest DAG): ``source_uri`` is the pipeline's landing source rendered
      for the run's data interval; an interval with no batch there skips the task with the reason
      ("no batch under <uri> for <interval>"), and the rest of the run with it.
    * ``landing=False`` (the train DAG): an empty ``source_uri`` (a run started by the schedule, by
      an asset, or by hand without a batch) ingests nothing new and hands on the newest validated
      batch (``reused: true``, :func:`mlplatform.stages.ingest.reuse_newest_validated`): the
      ingest DAG is the one place that reads landing batches.

    XCom: ``data_uri``, ``data_version`` (DVC md5), ``data_commit``, ``rows``, ``chunks``,
    ``files``, ``source_uri`` (passwords hidden), ``new`` (no earlier run validated this data
    version), and ``reused``/``ingested_at`` for a reused batch.

    Cached (:mod:`mlplatform.cache_keys`) for file and S3 sources by the files' names, sizes and
    hashes (S3: ETags); a SQL source, a reused batch and an empty landing interval always run. A
    cached output's ``new`` is judged again (validated since?).
    """

    stage = "ingest"
    template_fields = ("source_uri",)

    def __init__(
        self, *, source_uri: str = "{{ params.data_uri }}", landing: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.source_uri = source_uri
        self.landing = landing

    def run_stage(
        self, cfg: PipelineConfig, out_dir: Path, settings: Settings, context: Any
    ) -> Mapping[str, Any]:
        from mlplatform.history import is_validated
        from mlplatform.sources import NoBatch
        from mlplatform.stages import NothingToDo
        from mlplatform.stages.ingest import ingest, reuse_newest_validated

        uri = self._uri()
        if not uri and not self.landing:
            result = reuse_newest_validated(cfg, out_dir, settings)
            return {**result, "new": False}
        try:
            result = ingest(cfg, uri, out_dir, settings)
        except NoBatch as exc:
            if not self.landing:
                raise
            raise NothingToDo(
                f"no batch under {uri} for {describe_interval(context)} ({exc})"
            ) from None
        return {**result, "new": not is_validated(cfg, settings, str(result["data_version"]))}

    def _uri(self) -> str:
        return (self.source_uri or "").strip()

    def cache_parts(self, cfg, settings, context):
        from mlplatform.cache_keys import ingest_parts
        from mlplatform.sources import NoBatch

        if not self._uri():
            return None  # the newest validated batch, restored: not cached
        try:
            return ingest_parts(cfg, self._uri(), settings)
        except NoBatch:
            return None  # nothing there: the stage says so

    def cache_check(self, cfg, settings, result):
        from mlplatform.cache_keys import ingest_check

        return ingest_check(result, settings)

    def on_cache_hit(self, cfg, settings, result, context):
        from mlplatform.history import is_validated

        result["new"] = not is_validated(cfg, settings, str(result["data_version"]))
