"""The stored batches' schema against the pipeline's feature definitions.

The offline store of a pipeline (:mod:`mlplatform.stages.features`) holds one Parquet file per
validated batch with the columns of :func:`offline_columns`. When the definitions change,
:func:`check_stored_definitions` says which stored columns to drop (a feature no longer declared;
:func:`drop_columns` removes them) or stops with one line naming the columns that stored batches
cannot supply (a feature added or renamed, a changed type) and the way out (:func:`reset_hint`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from mlplatform.config import INGESTED_AT_COLUMN, PipelineConfig
from mlplatform.stages import StageError

INGESTED_AT = INGESTED_AT_COLUMN


def offline_columns(cfg: PipelineConfig) -> list[str]:
    """The columns of a stored batch, in order."""
    return [
        cfg.source.entity,
        cfg.source.timestamp,
        INGESTED_AT,
        cfg.features.label,
        *cfg.features.numeric,
        *cfg.features.categorical,
    ]


def _is_text(typ: Any) -> bool:
    import pyarrow as pa

    return pa.types.is_string(typ) or pa.types.is_large_string(typ) or pa.types.is_null(typ)


def _schema_problems(cfg: PipelineConfig, files: list[Path]) -> tuple[dict, dict, set[str]]:
    """``(missing, mistyped, extra)`` over the stored files: column -> files lacking it,
    column -> (stored type, files), and stored columns the config no longer declares."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    wanted = offline_columns(cfg)
    type_ok = {c: pa.types.is_floating for c in cfg.features.numeric}
    type_ok |= {c: _is_text for c in cfg.features.categorical}
    missing: dict[str, list[Path]] = {}
    mistyped: dict[str, tuple[str, list[Path]]] = {}
    extra: set[str] = set()
    for path in files:
        schema = pq.read_schema(path)
        for c in wanted:
            if c not in schema.names:
                missing.setdefault(c, []).append(path)
            elif c in type_ok and not type_ok[c](schema.field(c).type):
                mistyped.setdefault(c, (str(schema.field(c).type), []))[1].append(path)
        extra |= set(schema.names) - set(wanted)
    return missing, mistyped, extra


def reset_hint(cfg: PipelineConfig) -> str:
    """The way out of a history that cannot continue: ``mlplatform reset NAME --features``."""
    return (
        f"run `mlplatform reset {cfg.name} --features` to start its feature history afresh "
        "from the next batch (or restore the previous definitions)"
    )


def check_stored_definitions(cfg: PipelineConfig, files: list[Path]) -> set[str]:
    """Stored columns to drop (features no longer declared); raises :class:`StageError` (one
    line) when stored batches cannot supply what the config declares."""
    missing, mistyped, extra = _schema_problems(cfg, files)
    where = f"features: the offline store of {cfg.name!r} ({files[0].parent})"
    if INGESTED_AT in missing:
        raise StageError(
            f"{where} holds {len(missing[INGESTED_AT])} batch(es) written without ingestion times "
            f"by an older mlplatform; {reset_hint(cfg)}"
        )
    if missing or mistyped:
        parts = [f"{c!r} is missing from {len(p)} stored batch(es)" for c, p in missing.items()]
        parts += [
            f"{c!r} is stored as {typ} in {len(p)} batch(es)" for c, (typ, p) in mistyped.items()
        ]
        if extra:
            parts.append(f"stored but no longer declared: {', '.join(sorted(extra))}")
        raise StageError(
            f"{where} does not fit the changed feature definitions: {'; '.join(parts)}; "
            f"{reset_hint(cfg)}"
        )
    return extra


def drop_columns(files: list[Path], columns: set[str]) -> None:
    """Remove ``columns`` from the stored batch files (rewritten aside, then renamed)."""
    import pyarrow.parquet as pq

    for path in files:
        table = pq.read_table(path)
        gone = [c for c in columns if c in table.column_names]
        if gone:
            tmp = path.with_name(f".{path.name}.tmp")
            pq.write_table(table.drop_columns(gone), tmp)
            os.replace(tmp, path)
