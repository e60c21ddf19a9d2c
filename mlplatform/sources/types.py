"""The vocabulary of batch sources: errors, a resolved source, a chunk of rows, formats.

Every problem is a :class:`SourceError` (a :class:`~mlplatform.stages.StageError`) whose message
is one line ``ingest: <where>: <what>``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from mlplatform.stages import StageError, StageUnavailable

#: file suffixes read as Parquet; everything else is read as ``source.format``
PARQUET_SUFFIXES = (".parquet", ".pq")
#: SQLAlchemy dialects recognised without the ``sql+`` prefix
SQL_DIALECTS = ("sqlite", "postgresql", "postgres", "mysql", "mariadb", "mssql", "oracle")
GLOB_CHARS = re.compile(r"[*?\[]")


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
