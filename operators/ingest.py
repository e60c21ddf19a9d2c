"""IngestOperator: read a raw batch, version it with DVC, hand on a Parquet URI."""

from __future__ import annotations

from typing import Any

from operators.base import PlatformOperator


class IngestOperator(PlatformOperator):
    """Ingest ``source_uri`` (templated; default the DAG param ``data_uri``): a path, glob,
    directory, ``s3://`` object or prefix, or ``sql+<SQLAlchemy URL>`` (:mod:`mlplatform.sources`).

    XCom: ``data_uri``, ``data_version`` (DVC md5), ``data_commit``, ``rows``, ``chunks``,
    ``files``, ``source_uri`` (passwords hidden).

    Cached (:mod:`mlplatform.cache_keys`) for file and S3 sources by the files' names, sizes and
    hashes (S3: ETags); a SQL source always runs.
    """

    stage = "ingest"
    template_fields = ("source_uri",)

    def __init__(self, *, source_uri: str = "{{ params.data_uri }}", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.source_uri = source_uri

    def run_stage(self, cfg, out_dir, settings, context):
        from mlplatform.stages.ingest import ingest

        return ingest(cfg, self._uri(cfg), out_dir, settings)

    def _uri(self, cfg) -> str:
        return self.source_uri or cfg.source.uri or ""

    def cache_parts(self, cfg, settings, context):
        from mlplatform.cache_keys import ingest_parts

        return ingest_parts(cfg, self._uri(cfg), settings)

    def cache_check(self, cfg, settings, result):
        from mlplatform.cache_keys import ingest_check

        return ingest_check(result, settings)
