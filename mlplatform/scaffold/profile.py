"""Profile a table: what each column holds, from a sample read the way ingest reads a batch.

Contract: :func:`profile_table` reads at most ``sample_rows`` rows of ``uri`` (any source
:mod:`mlplatform.sources` reads: CSV/Parquet file, glob, directory, ``s3://``, ``sql+...``) and
returns a :class:`TableProfile`: per column its kind (``integer``, ``float``, ``boolean``,
``datetime``, ``text``), nulls, distinct values, numeric range, the sorted values of a
low-cardinality column and, for text, the share of values that parse as timestamps. A table
that cannot be read raises :class:`~mlplatform.sources.SourceError` (one line).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pandas as pd

from mlplatform.config import PipelineConfig, SourceConfig
from mlplatform.settings import Settings

#: rows read to profile a table (the first ones; the profile says whether that was all of it)
SAMPLE_ROWS = 100_000
#: a column with at most this many distinct values has them listed (value sets, categories)
MAX_LISTED_VALUES = 50
#: text values tried as timestamps per column
TIMESTAMP_PROBE = 1_000

ColumnKind = Literal["integer", "float", "boolean", "datetime", "text"]


@dataclass
class ColumnProfile:
    """One column of the sample. ``values``: its distinct non-null values, sorted, when there
    are at most ``MAX_LISTED_VALUES``; ``timestamp_share``: share of non-null values that parse
    as timestamps (1.0 for a datetime column, 0.0 for numbers)."""

    name: str
    kind: ColumnKind
    rows: int
    nulls: int
    distinct: int
    minimum: float | None = None
    maximum: float | None = None
    mean: float | None = None
    std: float | None = None
    values: list[object] | None = None
    timestamp_share: float = 0.0

    @property
    def null_share(self) -> float:
        return self.nulls / self.rows if self.rows else 0.0

    @property
    def numeric(self) -> bool:
        return self.kind in ("integer", "float")


@dataclass
class TableProfile:
    """The sample of a table: ``rows`` read, ``complete`` when that was the whole table."""

    source: str
    rows: int
    complete: bool
    columns: list[ColumnProfile] = field(default_factory=list)

    def column(self, name: str) -> ColumnProfile:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(name)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]


def _reader_config(fmt: str, query: str | None) -> PipelineConfig:
    """A stand-in pipeline config for :func:`mlplatform.sources.resolve`, which reads only
    ``name``, ``source.format``, ``source.query`` and ``source.rename``; built without
    validation because there is no pipeline yet (its columns are what init is looking for)."""
    source = SourceConfig.model_construct(format=fmt, query=query, rename={})
    return PipelineConfig.model_construct(name="init", source=source)


def read_sample(
    uri: str,
    settings: Settings,
    fmt: str = "csv",
    query: str | None = None,
    sample_rows: int = SAMPLE_ROWS,
) -> tuple[pd.DataFrame, str, bool]:
    """``(frame, display, complete)``: the first ``sample_rows`` rows of ``uri``, the source as
    it should be shown, and whether that was every row."""
    from mlplatform import sources

    cfg = _reader_config(fmt, query)
    frames: list[pd.DataFrame] = []
    rows, complete = 0, True
    with tempfile.TemporaryDirectory(prefix="mlp-init-") as staging:
        source = sources.resolve(uri, cfg, settings, Path(staging))
        chunk_rows = min(sample_rows, settings.ingest_chunk_rows)
        for chunk in sources.read_chunks(source, chunk_rows):
            frames.append(chunk.frame)
            rows += len(chunk.frame)
            if rows >= sample_rows:
                complete = False  # an exact multiple may have been the end: say "sample"
                break
    frame = pd.concat(frames, ignore_index=True).head(sample_rows)
    return frame, source.display, complete


def _kind(column: pd.Series) -> ColumnKind:
    if pd.api.types.is_bool_dtype(column):
        return "boolean"
    if pd.api.types.is_integer_dtype(column):
        return "integer"
    if pd.api.types.is_float_dtype(column):
        present = column.dropna()
        return "integer" if len(present) and (present == present.round()).all() else "float"
    if pd.api.types.is_datetime64_any_dtype(column):
        return "datetime"
    return "text"


def _timestamp_share(column: pd.Series) -> float:
    from mlplatform.stages.ingest import parse_timestamps

    present = column.dropna().astype(str).head(TIMESTAMP_PROBE)
    if present.empty or present.str.fullmatch(r"[-+]?\d+(\.\d*)?").all():
        return 0.0  # plain numbers are not event times here, even where pandas would parse them
    return float(parse_timestamps(present).notna().mean())


def profile_column(name: str, column: pd.Series) -> ColumnProfile:
    """Describe one column (see :class:`ColumnProfile`)."""
    kind = _kind(column)
    present = column.dropna()
    distinct = int(present.nunique())
    prof = ColumnProfile(name, kind, len(column), int(column.isna().sum()), distinct)
    if kind in ("integer", "float") and len(present):
        values = present.astype(float)
        prof.minimum, prof.maximum = float(values.min()), float(values.max())
        prof.mean, prof.std = float(values.mean()), float(values.std(ddof=0))
    if kind == "datetime":
        prof.timestamp_share = 1.0
    elif kind == "text":
        prof.timestamp_share = _timestamp_share(column)
    if distinct <= MAX_LISTED_VALUES and kind != "datetime":
        listed = sorted(present.unique().tolist(), key=lambda v: (str(type(v)), v))
        prof.values = [int(v) if kind == "integer" else v for v in listed]
    return prof


def profile_frame(frame: pd.DataFrame, source: str = "", complete: bool = True) -> TableProfile:
    """The :class:`TableProfile` of an in-memory sample."""
    columns = [profile_column(str(name), frame[name]) for name in frame.columns]
    return TableProfile(source, len(frame), complete, columns)


def profile_table(
    uri: str,
    settings: Settings,
    fmt: str = "csv",
    query: str | None = None,
    sample_rows: int = SAMPLE_ROWS,
) -> TableProfile:
    """Read a sample of ``uri`` (see the module doc) and profile it."""
    frame, display, complete = read_sample(uri, settings, fmt, query, sample_rows)
    return profile_frame(frame, display, complete)
