"""Batch sources: where ingest reads a batch from, in chunks, and how it becomes one Parquet file.

A source URI (``source.uri`` of a pipeline, or ``--data`` / the DAG param ``data_uri`` of a run) is
one of:

* a local file, ``file://`` URI, directory (its ``*.csv`` / ``*.parquet`` files) or glob
  (``data/2026-*.csv``, ``**`` allowed): all matching files, sorted by name, are one batch;
* ``s3://bucket/key`` (one object), ``s3://bucket/prefix/`` (every object under the prefix, except
  names starting with ``_`` or ``.`` such as ``_SUCCESS``) or ``s3://bucket/prefix/*.csv`` (a glob
  on the key). Objects are downloaded with boto3 to a staging directory and read like local files;
  the endpoint is ``MLP_S3_ENDPOINT_URL`` (MinIO, moto, ...) or boto3's own configuration
  (``AWS_ENDPOINT_URL_S3``, profiles), credentials come from boto3's usual chain;
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

Every problem is a :class:`SourceError` (a :class:`~mlplatform.stages.StageError`) whose message is
one line ``ingest: <where>: <what>``.
"""

from __future__ import annotations

import codecs
import csv
import fnmatch
import glob
import hashlib
import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mlplatform.config import PipelineConfig, one_line
from mlplatform.settings import Settings
from mlplatform.stages import StageError, StageUnavailable

log = logging.getLogger(__name__)

#: file suffixes read as Parquet; everything else is read as ``source.format``
PARQUET_SUFFIXES = (".parquet", ".pq")
#: SQLAlchemy dialects recognised without the ``sql+`` prefix
SQL_DIALECTS = ("sqlite", "postgresql", "postgres", "mysql", "mariadb", "mssql", "oracle")
_GLOB_CHARS = re.compile(r"[*?\[]")


class SourceError(StageError):
    """A batch cannot be read; ``str()`` is one line ``ingest: <where>: <what>``."""


class SourceUnavailable(SourceError, StageUnavailable):
    """The source did not answer (an S3 endpoint that cannot be reached, a connection that timed
    out): the task is retried, since a second try may pass."""


class NoBatch(SourceError):
    """The URI names nothing to read (no file, no object, no match): an empty landing interval
    when the ingest DAG reads its landing source, an error where a user named the batch."""


@dataclass
class Chunk:
    """Rows of a batch as read: ``where`` names the file/object/query they came from."""

    where: str
    frame: pd.DataFrame
    first_of_file: bool


@dataclass
class ResolvedSource:
    """A source URI made concrete: local files to read (S3 objects already downloaded) or a query.

    ``display`` is the URI as the user gave it, with any password replaced by ``***``.
    """

    display: str
    files: list[tuple[str, Path, str]] = field(default_factory=list)  # (where, path, format)
    sql_url: object | None = None  # a sqlalchemy.engine.URL
    sql_query: str | None = None
    rename: dict[str, str] = field(default_factory=dict)  # source column -> platform name

    @property
    def single_file(self) -> tuple[Path, str] | None:
        """``(path, format)`` when the batch is exactly one file: DVC versions its bytes as read."""
        if len(self.files) == 1:
            _, path, fmt = self.files[0]
            return path, fmt
        return None


# --------------------------------------------------------------------------- resolving URIs


def is_sql(uri: str) -> bool:
    """True when ``uri`` names a SQL source (``sql+...`` or a SQLAlchemy dialect scheme)."""
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else ""
    return scheme.startswith("sql+") or scheme.split("+", 1)[0] in SQL_DIALECTS


def file_format(path: str | Path, default: str) -> str:
    """``parquet`` for ``.parquet``/``.pq`` names, ``csv`` for ``.csv``, else ``default``."""
    name = str(path).lower()
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    return "csv" if name.endswith(".csv") else default


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
        return _resolve_s3(uri, cfg, settings, staging)
    if is_sql(uri):
        return _resolve_sql(uri, cfg)
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
    if _GLOB_CHARS.search(text):
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
    single = len(paths) == 1 and not _GLOB_CHARS.search(text) and not Path(text).is_dir()
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
        return _s3_listing(uri, settings)
    rows: list[list[object]] = []
    for _where, path, _fmt in resolve(uri, cfg, settings, Path("/nonexistent")).files:
        with open(path, "rb") as fh:
            digest = hashlib.file_digest(fh, "sha256").hexdigest()
        rows.append([str(path), path.stat().st_size, digest])
    return rows


def _s3_listing(uri: str, settings: Settings) -> list[list[object]]:
    """``[s3://bucket/key, size, ETag]`` of the objects an S3 source URI names."""
    parsed = urlparse(uri)
    bucket, key = parsed.netloc, parsed.path.lstrip("/")
    if not bucket:
        raise SourceError(f"ingest: {uri}: no bucket in the URI (s3://bucket/key)")
    client = s3_client(settings)
    try:
        if key and not key.endswith("/") and not _GLOB_CHARS.search(key):
            _head_object(client, bucket, key)
            head = client.head_object(Bucket=bucket, Key=key)
            return [[f"s3://{bucket}/{key}", head["ContentLength"], head.get("ETag")]]
        rows = [
            [f"s3://{bucket}/{obj['Key']}", obj["Size"], obj.get("ETag")]
            for obj in _list_objects(client, bucket, key)
        ]
    except SourceError:
        raise
    except Exception as exc:  # botocore's many error types: the user needs one line
        raise _s3_problem(exc, uri, settings.s3_endpoint_url) from None
    if not rows:
        raise SourceError(f"ingest: {uri}: no object matches")
    return rows


# --------------------------------------------------------------------------- S3


def s3_client(settings: Settings):
    """A boto3 S3 client for ``MLP_S3_ENDPOINT_URL`` (or boto3's own endpoint configuration)."""
    import boto3

    return boto3.client("s3", endpoint_url=settings.s3_endpoint_url or None)


def _s3_problem(exc: Exception, where: str, endpoint: str | None) -> SourceError:
    """One line for a boto3/botocore failure."""
    from botocore.exceptions import ClientError, NoCredentialsError
    from botocore.exceptions import ConnectionError as BotoConnectionError

    if isinstance(exc, BotoConnectionError):  # endpoint unreachable, connect/read timeouts
        where_to = endpoint or getattr(exc, "kwargs", {}).get("endpoint_url", "")
        return SourceUnavailable(
            f"ingest: {where}: cannot reach the S3 endpoint {where_to}: {one_line(exc, 160)}"
        )
    if isinstance(exc, NoCredentialsError):
        what = "no AWS credentials (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile)"
    elif isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        what = {
            "404": "no such object",
            "NoSuchKey": "no such object",
            "NoSuchBucket": "no such bucket",
            "403": "access denied",
            "AccessDenied": "access denied",
        }.get(code, one_line(exc, 200))
    else:
        what = one_line(exc, 200)
    return SourceError(f"ingest: {where}: {what}")


def _resolve_s3(uri: str, cfg: PipelineConfig, settings: Settings, staging: Path) -> ResolvedSource:
    parsed = urlparse(uri)
    bucket, key = parsed.netloc, parsed.path.lstrip("/")
    if not bucket:
        raise SourceError(f"ingest: {uri}: no bucket in the URI (s3://bucket/key)")
    client = s3_client(settings)
    try:
        if key and not key.endswith("/") and not _GLOB_CHARS.search(key):
            _head_object(client, bucket, key)
            keys = [key]
        else:
            keys = _list_keys(client, bucket, key)
            if not keys:
                raise NoBatch(f"ingest: {uri}: no object matches")
        staging.mkdir(parents=True, exist_ok=True)
        files = []
        for i, name in enumerate(keys):
            local = staging / f"{i:05d}-{Path(name).name}"
            client.download_file(bucket, name, str(local))
            files.append((f"s3://{bucket}/{name}", local, file_format(name, cfg.source.format)))
    except SourceError:
        raise
    except Exception as exc:  # botocore's many error types: the user needs one line
        raise _s3_problem(exc, uri, settings.s3_endpoint_url) from None
    log.info("downloaded %d S3 object(s) for %s", len(files), uri)
    return ResolvedSource(display=uri, files=files)


def _head_object(client, bucket: str, key: str) -> None:
    """Check that the object exists; a HEAD answers 404 for a missing bucket too, so a missing
    object's bucket is checked to say which one is missing."""
    from botocore.exceptions import ClientError

    try:
        client.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if str(exc.response.get("Error", {}).get("Code")) != "404":
            raise
    else:
        return
    try:
        client.head_bucket(Bucket=bucket)
    except ClientError as exc:
        if str(exc.response.get("Error", {}).get("Code")) in ("404", "NoSuchBucket"):
            raise SourceError(f"ingest: s3://{bucket}/{key}: no such bucket") from None
        raise
    raise NoBatch(f"ingest: s3://{bucket}/{key}: no such object")


def _list_keys(client, bucket: str, key: str) -> list[str]:
    """Keys under a prefix (``key`` ends with ``/`` or is empty) or matching a glob on the key."""
    return [obj["Key"] for obj in _list_objects(client, bucket, key)]


def _list_objects(client, bucket: str, key: str) -> list[dict]:
    """The listed objects (``Key``, ``Size``, ``ETag``, ...) of :func:`_list_keys`, by key."""
    match = _GLOB_CHARS.search(key)
    prefix = key[: match.start()] if match else key
    objects = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            name = obj["Key"]
            base = name.rsplit("/", 1)[-1]
            if name.endswith("/") or not base or base.startswith(("_", ".")):
                continue
            if match and not fnmatch.fnmatchcase(name, key):
                continue
            objects.append(obj)
    return sorted(objects, key=lambda obj: obj["Key"])


# --------------------------------------------------------------------------- SQL


def _resolve_sql(uri: str, cfg: PipelineConfig) -> ResolvedSource:
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


def _sql_chunks(source: ResolvedSource, chunk_rows: int) -> Iterator[Chunk]:
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


# --------------------------------------------------------------------------- files


def _first_non_utf8(path: Path) -> tuple[int, int, int] | None:
    """``(byte value, 1-based line, offset)`` of the first byte that is not UTF-8, or None."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            try:
                decoder.decode(block)
            except UnicodeDecodeError as exc:
                pending = len(exc.object) - len(block)  # bytes the decoder held back from before
                bad = offset - pending + exc.start
                with open(path, "rb") as again:
                    head = again.read(bad + 1)
                return head[bad], head.count(b"\n", 0, bad) + 1, bad
            offset += len(block)
    return None


def _check_complete_csv(where: str, path: Path) -> None:
    """Refuse a CSV whose last line was cut off: no line end and fewer fields than the header.

    pandas fills a short last row with nulls; a file cut mid-row would pass as a row of gaps.
    A last line holding a quote is left alone (it may close a quoted multi-line field).
    """
    size = path.stat().st_size
    with open(path, "rb") as fh:
        header = fh.readline(1 << 16)
        fh.seek(max(0, size - (1 << 16)))
        tail = fh.read()
    if not tail or tail.endswith((b"\n", b"\r")) or b"\n" not in tail:
        return
    last = tail.rsplit(b"\n", 1)[1]
    if b'"' in last:
        return
    try:
        wanted = len(next(csv.reader([header.decode("utf-8").rstrip("\r\n")])))
        got = len(next(csv.reader([last.decode("utf-8")])))
    except (UnicodeDecodeError, StopIteration, csv.Error):
        return
    if got < wanted:
        raise SourceError(
            f"ingest: {where}: truncated: the last line has {got} of {wanted} fields and no line end"
        )


def _csv_chunks(where: str, path: Path, chunk_rows: int) -> Iterator[Chunk]:
    _check_complete_csv(where, path)
    first = True
    for frame in pd.read_csv(path, chunksize=chunk_rows):
        yield Chunk(where, frame, first)
        first = False


def _parquet_chunks(where: str, path: Path, chunk_rows: int) -> Iterator[Chunk]:
    pf = pq.ParquetFile(path)
    first = True
    for batch in pf.iter_batches(batch_size=chunk_rows):
        yield Chunk(where, pa.Table.from_batches([batch]).to_pandas(), first)
        first = False
    if first:  # no rows: still hand on the columns
        yield Chunk(where, pf.schema_arrow.empty_table().to_pandas(), True)


def _file_problem(exc: Exception, where: str, path: Path, fmt: str) -> SourceError:
    if isinstance(exc, FileNotFoundError):
        return SourceError(f"ingest: {where}: no such file")
    if isinstance(exc, UnicodeDecodeError):
        bad = _first_non_utf8(path)
        if bad:
            byte, line, offset = bad
            return SourceError(
                f"ingest: {where}: not UTF-8 text: byte 0x{byte:02x} on line {line} "
                f"(offset {offset}); save the file as UTF-8"
            )
        return SourceError(f"ingest: {where}: not UTF-8 text: {one_line(exc, 120)}")
    if isinstance(exc, pd.errors.EmptyDataError):
        return SourceError(f"ingest: {where}: the file is empty (not even a header)")
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    return SourceError(f"ingest: {where}: cannot parse as {fmt}: {one_line(first, 240)}")


def _file_chunks(source: ResolvedSource, chunk_rows: int) -> Iterator[Chunk]:
    for where, path, fmt in source.files:
        try:
            if path.stat().st_size == 0:
                raise SourceError(f"ingest: {where}: the file is empty (0 bytes)")
            reader = _parquet_chunks if fmt == "parquet" else _csv_chunks
            yield from reader(where, path, chunk_rows)
        except StageError:
            raise
        except Exception as exc:  # pandas/pyarrow raise many parser types; one line for the user
            raise _file_problem(exc, where, path, fmt) from None


def read_chunks(source: ResolvedSource, chunk_rows: int) -> Iterator[Chunk]:
    """The batch's rows, at most ``chunk_rows`` at a time, file by file (or from the query).

    Every file (or the query) yields at least one chunk, an empty one when it has only a header,
    so the caller sees each file's columns. Columns of later files are put in the first file's
    order; a file with other columns raises :class:`SourceError` naming the difference.
    Columns named in ``source.rename`` are renamed first (the platform names are the ones
    compared and handed on).
    """
    chunks = _sql_chunks(source, chunk_rows) if source.sql_url is not None else None
    chunks = chunks if chunks is not None else _file_chunks(source, chunk_rows)
    columns: list[str] | None = None
    for chunk in chunks:
        if source.rename:
            chunk.frame = chunk.frame.rename(columns=source.rename)
        names = [str(c) for c in chunk.frame.columns]
        if columns is None:
            columns = names
        elif names != columns:
            missing = [c for c in columns if c not in names]
            extra = [c for c in names if c not in columns]
            if missing or extra or len(names) != len(columns):
                raise SourceError(
                    f"ingest: {chunk.where}: columns differ from the batch's first file: "
                    f"missing {missing or 'none'}, extra {extra or 'none'}"
                )
            chunk.frame = chunk.frame[columns]
        yield chunk


# --------------------------------------------------------------------------- writing


@dataclass
class WriteStats:
    """What :func:`write_parquet` wrote: rows kept, exact duplicate rows dropped, chunks read."""

    rows: int
    duplicates: int
    chunks: int
    columns: list[str]


def merge_types(types: Iterable[pa.DataType]) -> pa.DataType:
    """The one Arrow type that every chunk of a column is cast to.

    Chunks are parsed separately, so one column can arrive as int64 in one chunk and float64
    (a gap) or text in another. Rules, which reproduce a whole-batch read: all-null chunks do not
    count; integers and floats give float64 (integers alone int64); timestamps give the finest
    unit (all are UTC by then); any other mix gives text.
    """
    seen = {t for t in types if not pa.types.is_null(t)}
    if not seen:
        return pa.null()
    if len(seen) == 1:
        return seen.pop()
    if all(pa.types.is_integer(t) or pa.types.is_floating(t) for t in seen):
        return pa.float64() if any(pa.types.is_floating(t) for t in seen) else pa.int64()
    if all(pa.types.is_timestamp(t) for t in seen) and len({t.tz for t in seen}) == 1:
        unit = next(u for u in ("ns", "us", "ms", "s") if any(t.unit == u for t in seen))
        return pa.timestamp(unit, tz=next(iter(seen)).tz)
    return pa.string()


def _to_arrow(frame: pd.DataFrame, where: str) -> pa.Table:
    try:
        return pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata(None)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise SourceError(f"ingest: {where}: {one_line(exc, 200)}") from None


def _row_hashes(table: pa.Table) -> np.ndarray:
    """A 64-bit hash per row; equal rows hash equal whatever chunk they came from (nullable
    pandas dtypes, so an integer column hashes the same with or without gaps)."""
    mapper = {
        **{t: pd.Int64Dtype() for t in (pa.int8(), pa.int16(), pa.int32(), pa.int64())},
        pa.bool_(): pd.BooleanDtype(),
    }.get
    frame = table.to_pandas(types_mapper=mapper)
    return pd.util.hash_pandas_object(frame, index=False).to_numpy()


class _Deduplicator:
    """Drops rows equal to an earlier row of the batch (8 bytes kept per distinct row)."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.seen = np.empty(0, dtype=np.uint64)
        self.dropped = 0

    def restart(self) -> None:
        """Forget the rows seen (the count of rows dropped stays)."""
        self.seen = np.empty(0, dtype=np.uint64)

    def keep(self, table: pa.Table) -> pa.Table:
        if not self.enabled or table.num_rows == 0:
            return table
        hashes = _row_hashes(table)
        dup = pd.Series(hashes).duplicated().to_numpy()
        if len(self.seen):
            pos = np.minimum(np.searchsorted(self.seen, hashes), len(self.seen) - 1)
            dup |= self.seen[pos] == hashes
        self.dropped += int(dup.sum())
        # two sorted runs: a stable sort (timsort) merges them in linear time
        fresh = np.sort(hashes[~dup])
        self.seen = np.sort(np.concatenate([self.seen, fresh]), kind="stable")
        return table.filter(pa.array(~dup)) if dup.any() else table


def write_parquet(
    chunks: Iterable[Chunk],
    out: Path,
    workdir: Path,
    prepare: Callable[[Chunk], pd.DataFrame] | None = None,
    drop_duplicates: bool = True,
) -> WriteStats:
    """Write ``chunks`` (after ``prepare``) to the single Parquet file ``out``, one chunk in
    memory at a time; with ``drop_duplicates`` a row equal to an earlier row is written once.

    While every chunk has the first chunk's column types, chunks are appended to ``out`` as they
    come. A chunk with other types (a gap turns integers into floats, text appears in a number
    column) turns what was written into a part file in ``workdir``; that chunk and the rest are
    spilled to part files too, the column types are merged (:func:`merge_types`), and each part
    is cast, de-duplicated again and appended to a fresh ``out``.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    dedup = _Deduplicator(enabled=drop_duplicates)
    writer: pq.ParquetWriter | None = None
    parts: list[Path] = []
    count = rows = 0
    try:
        for chunk in chunks:
            frame = prepare(chunk) if prepare else chunk.frame
            table = _to_arrow(frame, chunk.where)
            count += 1
            if not parts and (writer is None or table.schema.equals(writer.schema)):
                writer = writer or pq.ParquetWriter(out, table.schema)
                table = dedup.keep(table)
                rows += table.num_rows
                writer.write_table(table)
                continue
            if not parts:  # the types changed: what was written becomes the first part
                writer.close()
                parts.append(out.replace(workdir / "part-000000.parquet"))
            parts.append(_spill(table, workdir, len(parts)))
    finally:
        if writer is not None:
            writer.close()
    if writer is None:
        raise SourceError("ingest: the source yielded no data")
    if not parts:
        return WriteStats(rows, dedup.dropped, count, writer.schema.names)
    return _merge_parts(parts, out, dedup, count)


def _merge_parts(parts: list[Path], out: Path, dedup: _Deduplicator, count: int) -> WriteStats:
    """Cast every part to the merged column types and append it to ``out`` (see above)."""
    schemas = [pq.read_schema(p) for p in parts]
    target = pa.schema(
        [
            pa.field(name, merge_types(s.field(i).type for s in schemas))
            for i, name in enumerate(schemas[0].names)
        ]
    )
    dedup.restart()  # hashes depend on the types: rows are compared again under the new ones
    rows = 0
    with pq.ParquetWriter(out, target) as writer:
        for part in parts:
            table = dedup.keep(_cast(pq.read_table(part), target, part))
            rows += table.num_rows
            writer.write_table(table)
            part.unlink()
    return WriteStats(rows, dedup.dropped, count, target.names)


def _spill(table: pa.Table, workdir: Path, index: int) -> Path:
    path = workdir / f"part-{index:06d}.parquet"
    pq.write_table(table, path)
    return path


def _cast(table: pa.Table, target: pa.Schema, part: Path) -> pa.Table:
    try:
        return table.cast(target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise SourceError(
            f"ingest: chunk {part.name}: cannot unify column types: {one_line(exc, 200)}"
        ) from None
