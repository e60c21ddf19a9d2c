"""Reading a resolved source in chunks: CSV through pandas' chunked parser, Parquet by record
batches, SQL through :mod:`mlplatform.sources.sql`; one line per problem (not UTF-8, truncated,
empty, unparsable, columns that differ between files)."""

from __future__ import annotations

import codecs
import csv
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mlplatform.config import one_line
from mlplatform.sources.sql import sql_chunks
from mlplatform.sources.types import Chunk, ResolvedSource, SourceError
from mlplatform.stages import StageError


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
    chunks = sql_chunks(source, chunk_rows) if source.sql_url is not None else None
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
