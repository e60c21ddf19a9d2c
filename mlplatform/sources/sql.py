"""SQL sources: ``sql+<SQLAlchemy URL>?query=...`` resolved and read in chunks (see the package
doc); the query runs in a transaction that is rolled back, streamed where the driver can."""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd

from mlplatform.config import PipelineConfig, one_line
from mlplatform.sources.types import Chunk, ResolvedSource, SourceError


def resolve_sql(uri: str, cfg: PipelineConfig) -> ResolvedSource:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    raw = uri[4:] if uri.lower().startswith("sql+") else uri
    try:
        url = make_url(raw)
    except ArgumentError as exc:
        raise SourceError(f"ingest: {uri}: not a SQLAlchemy URL: {one_line(exc, 120)}") from None
    query = url.query.get("query")
    if isinstance(query, tuple):
        query = query[-1]
    url = url.difference_update_query(["query"])
    query = query or cfg.source.query
    shown = url.render_as_string(hide_password=True)
    if not query:
        raise SourceError(
            f"ingest: sql source {shown}: no query: add ?query=<URL-encoded SQL> to the URI "
            "or set source.query in the pipeline"
        )
    return ResolvedSource(
        display=f"sql+{shown} query {one_line(query, 120)!r}", sql_url=url, sql_query=query
    )


def sql_chunks(source: ResolvedSource, chunk_rows: int) -> Iterator[Chunk]:
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import SQLAlchemyError

    where = source.display
    try:
        engine = create_engine(source.sql_url)
    except Exception as exc:  # unknown dialect, missing driver
        raise SourceError(f"ingest: {where}: {one_line(exc, 200)}") from None
    try:
        with engine.connect() as conn:
            conn = conn.execution_options(stream_results=True, max_row_buffer=chunk_rows)
            first = True
            for frame in pd.read_sql_query(text(source.sql_query), conn, chunksize=chunk_rows):
                yield Chunk(where, frame, first)
                first = False
            conn.rollback()  # a source is read, never written
    except SQLAlchemyError as exc:
        cause = getattr(exc, "orig", None) or exc
        raise SourceError(f"ingest: {where}: query failed: {one_line(cause, 240)}") from None
    finally:
        engine.dispose()
