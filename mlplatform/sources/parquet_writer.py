"""Writing a batch's chunks to one Parquet file, one chunk in memory at a time: column types
unified across chunks (:func:`merge_types`), exact duplicate rows dropped."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mlplatform.config import one_line
from mlplatform.sources.types import Chunk, SourceError


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
