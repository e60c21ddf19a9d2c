"""Batch sources: where ingest reads a batch from, in chunks, and how it becomes one Parquet file.

A source URI (``source.uri`` of a pipeline, or ``--data`` / the DAG param ``data_uri`` of a run) is
one of:

* a local file, ``file://`` URI, directory (its ``*.csv`` / ``*.parquet`` files) or glob
  (``data/2026-*.csv``, ``**`` allowed): all matching files, sorted by name, are one batch;
* ``s3://bucket/key`` (one object), ``s3://bucket/prefix/`` (every object under the prefix, except
  names starting with ``_`` or ``.`` such as ``_SUCCESS``) or ``s3://bucket/prefix/*.csv`` (a glob
  on the key). Objects are downloaded through fsspec (s3fs) to a staging directory and read like
  local files (:mod:`.remote`); the endpoint is ``MLP_S3_ENDPOINT_URL`` (MinIO, moto, ...) or
  botocore's own configuration (``AWS_ENDPOINT_URL_S3``, profiles), credentials come from
  botocore's usual chain;
* a SQL query: ``sql+<SQLAlchemy URL>`` with the query URL-encoded in its ``query`` parameter, e.g.
  ``sql+sqlite:///data/app.db?query=SELECT%20*%20FROM%20activity`` or
  ``sql+postgresql+psycopg://reader@db:5432/app?query=...``; a URL with a SQLAlchemy dialect
  scheme (``postgresql+psycopg://...``) works without the ``sql+`` prefix. The query may instead
  come from ``source.query`` in the pipeline (the URI's ``query`` wins, so a run can override it).
  Keep passwords out of URIs: libpq reads ``PGPASSWORD`` / ``~/.pgpass``; any password in a URL
  is shown as ``***`` in messages and outputs. The query runs in a transaction that is rolled
  back, with a server-side cursor where the driver has one.

A file's format is its suffix (``.csv``, ``.parquet`` / ``.pq``), else ``source.format``. Every
reader yields pandas frames of at most ``chunk_rows`` rows (``MLP_INGEST_CHUNK_ROWS``): CSV through
pandas' chunked parser (the same parsing rules as a whole-file read), Parquet by record batches,
SQL through ``read_sql_query(chunksize=...)``. :func:`write_parquet` writes those chunks to one
Parquet file holding one chunk in memory at a time, so a batch larger than memory streams.

Modules: :mod:`.types` (errors, chunks, formats), :mod:`.remote` (S3), :mod:`.sql`,
:mod:`.readers` (chunks of files and queries), :mod:`.parquet_writer` (:func:`write_parquet`).

Every problem is a :class:`SourceError` (a :class:`~mlplatform.stages.StageError`) whose message is
one line ``ingest: <where>: <what>``.
"""

from __future__ import annotations

import glob
import hashlib
import os
from pathlib import Path
from urllib.parse import unquote, urlparse

from mlplatform.config import PipelineConfig
from mlplatform.settings import Settings
from mlplatform.sources.parquet_writer import WriteStats, merge_types, write_parquet
from mlplatform.sources.readers import read_chunks
from mlplatform.sources.remote import listing, remote_problem, resolve_s3
from mlplatform.sources.sql import resolve_sql
from mlplatform.sources.types import (
    GLOB_CHARS,
    PARQUET_SUFFIXES,
    SQL_DIALECTS,
    Chunk,
    NoBatch,
    ResolvedSource,
    SourceError,
    SourceUnavailable,
    file_format,
    is_sql,
)

__all__ = [
    "PARQUET_SUFFIXES",
    "SQL_DIALECTS",
    "Chunk",
    "NoBatch",
    "ResolvedSource",
    "SourceError",
    "SourceUnavailable",
    "WriteStats",
    "file_format",
    "fingerprint",
    "is_sql",
    "merge_types",
    "read_chunks",
    "remote_problem",
    "resolve",
    "write_parquet",
]


def resolve(uri: str, cfg: PipelineConfig, settings: Settings, staging: Path) -> ResolvedSource:
    """Turn a source URI into files or a query (see the module doc); S3 objects are downloaded
    into ``staging``. Raises :class:`SourceError` when nothing matches. The result carries
    ``source.rename``, which :func:`read_chunks` applies to every chunk."""
    source = _resolve(uri, cfg, settings, staging)
    source.rename = dict(cfg.source.rename)
    return source


def _resolve(uri: str, cfg: PipelineConfig, settings: Settings, staging: Path) -> ResolvedSource:
    uri = uri.strip()
    if not uri:
        raise SourceError(
            f"ingest: no data URI: set source.uri in the {cfg.name} pipeline or pass --data"
        )
    if uri.startswith("s3://"):
        return resolve_s3(uri, cfg, settings, staging)
    if is_sql(uri):
        return resolve_sql(uri, cfg)
    scheme = urlparse(uri).scheme
    if scheme not in ("", "file") and len(scheme) != 1:
        raise SourceError(
            f"ingest: {uri}: unsupported source scheme {scheme!r} "
            "(use a path, a glob, file://, s3:// or sql+<SQLAlchemy URL>)"
        )
    return _resolve_local(uri, cfg)


def _resolve_local(uri: str, cfg: PipelineConfig) -> ResolvedSource:
    text = unquote(urlparse(uri).path) if uri.startswith("file://") else uri
    text = os.path.expanduser(text)
    if GLOB_CHARS.search(text):
        matches = sorted(p for p in glob.glob(text, recursive=True) if os.path.isfile(p))
        if not matches:
            raise NoBatch(f"ingest: {uri}: no file matches")
        paths = [Path(m).resolve() for m in matches]
    else:
        path = Path(text).resolve()
        if path.is_dir():
            paths = sorted(
                p
                for p in path.iterdir()
                if p.is_file() and p.name.lower().endswith((".csv", *PARQUET_SUFFIXES))
            )
            if not paths:
                raise NoBatch(f"ingest: {path}: directory holds no .csv or .parquet file")
        elif not path.exists():
            raise NoBatch(f"ingest: {path}: no such file")
        else:
            paths = [path]
    fmt = cfg.source.format
    single = len(paths) == 1 and not GLOB_CHARS.search(text) and not Path(text).is_dir()
    return ResolvedSource(
        display=str(paths[0]) if single else os.path.abspath(text),
        files=[(str(p), p, file_format(p, fmt)) for p in paths],
    )


def fingerprint(uri: str, cfg: PipelineConfig, settings: Settings) -> list[list[object]] | None:
    """What identifies the batch ``uri`` names without reading it into the platform (the ingest
    stage's cache key, :mod:`mlplatform.cache`): ``[name, size, sha256]`` per local file (its
    bytes hashed: a copy of the same file is the same batch), ``[s3://bucket/key, size, ETag]``
    per S3 object (listed, not downloaded); None for a SQL source, whose rows can change behind
    the same query. Raises :class:`SourceError` where :func:`resolve` would."""
    uri = uri.strip()
    if not uri or is_sql(uri):
        return None
    if uri.startswith("s3://"):
        return listing(uri, settings)
    rows: list[list[object]] = []
    for _where, path, _fmt in resolve(uri, cfg, settings, Path("/nonexistent")).files:
        with open(path, "rb") as fh:
            digest = hashlib.file_digest(fh, "sha256").hexdigest()
        rows.append([str(path), path.stat().st_size, digest])
    return rows
