"""Batch scoring: the champion over a table, or over every entity's latest offline features.

``score(cfg, out_dir, settings, input_uri=None, run_id="", chunk_rows=None)``:

* loads the SavedModel of alias ``champion`` of ``serving.model_name`` (no champion: a one-line
  :class:`StageError` ``score: no champion for <model>: train one first ...``);
* reads the input ``chunk_rows`` (``scoring.chunk_rows``) rows at a time: a table URI (path, glob,
  directory, ``s3://``, ``sql+...``: :mod:`mlplatform.sources`, which streams chunks), or with no
  URI every entity's latest row (by event time, then ingestion time) of the pipeline's offline
  feature store (the Feast file source the features stage writes, one file per data version);
* scores each chunk with the model's ``serving_default`` signature and appends it to
  ``<out_dir>/predictions.parquet`` with a ``pyarrow`` ``ParquetWriter`` (one row group per
  chunk): only one chunk is in memory at a time (the offline path also holds the key columns of
  the stored history to find each entity's latest row).

Timings in the result: ``setup_seconds`` (libraries, champion download and load),
``scoring_seconds`` (read, score, write every chunk), ``model_seconds`` (the model calls alone)
and ``rows_per_s`` (rows / ``scoring_seconds``).

Output columns: the entity column, the event-time column when the input has it (UTC), one column
per model output (``score`` for the platform's classifiers, ``prediction`` for regressors),
``model_version`` (the champion's registry version), ``data_version`` (the champion's
``data_version`` lineage tag: the data it was trained on), ``input_version`` (the data version of
the rows scored: the stored batch's DVC md5 on the offline path, the md5 of the input file, which
is its DVC data version had it been ingested alone, null for SQL) and ``scored_at`` (UTC, one
time per run).

Request log: the scored rows are appended to the serving request log
(``<home>/serving/requests/<model>/<UTC date>.jsonl``, :mod:`serving.request_log`) in the
server's line format, so the drift monitor sees batch traffic too: at most
``LOG_ROWS_PER_LINE`` rows per line, ``protocol`` and ``method`` ``"batch"``, ``format``
``"instances"``, ``inputs`` the raw feature rows (null for a missing value, as a client sends
it), ``outputs`` the predictions (one value per row for a single output, else one object per
row), ``entities`` the entity keys, ``latency_ms`` the model call's share for those rows, plus
``run_id`` and ``data_version``.

All or nothing: predictions and log lines are written aside (dot-files in ``out_dir``) and put in
place only once every chunk is scored, so bad input (unreadable, a feature or the entity
missing, types that change between chunks) fails with one line, leaves no partial file and
leaves an earlier ``predictions.parquet`` of the same directory as it was.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mlplatform.config import INGESTED_AT_COLUMN, PipelineConfig, one_line
from mlplatform.scoring import feature_columns
from mlplatform.settings import Settings
from mlplatform.stages import StageError

log = logging.getLogger(__name__)

PREDICTIONS = "predictions.parquet"
#: rows of one request-log line written by batch scoring (a client's request size)
LOG_ROWS_PER_LINE = 1000
#: the column that carries each row's input version through the chunk generators
_INPUT_VERSION = "__mlp_input_version"
OFFLINE_INPUT = "offline features (every entity's latest row)"


@dataclass(frozen=True)
class Champion:
    """The model that scores: its registry name and version, lineage and SavedModel directory."""

    name: str
    version: int
    data_version: str | None
    path: Path


def load_champion(cfg: PipelineConfig, settings: Settings, dst: Path) -> Champion:
    """Download the champion of ``serving.model_name`` into ``dst``; StageError if there is none."""
    from mlplatform.stages.registry import (
        CHAMPION,
        alias_version,
        client,
        download_saved_model,
    )

    name = cfg.serving.model_name
    version = alias_version(settings, name, CHAMPION)
    if version is None:
        raise StageError(
            f"score: no champion for {name}: train one first (`mlplatform run {cfg.name}`)"
        )
    tags = client(settings).get_model_version(name, str(version)).tags or {}
    try:
        path = download_saved_model(settings, name, version, dst)
    except FileNotFoundError as exc:
        raise StageError(f"score: champion {name} v{version} holds no SavedModel: {exc}") from None
    return Champion(name, version, tags.get("data_version"), path)


class Model:
    """The champion's ``serving_default`` signature, called on raw feature frames."""

    def __init__(self, cfg: PipelineConfig, saved_model: Path) -> None:
        import tensorflow as tf

        self.cfg = cfg
        self._tf = tf
        self._fn = tf.saved_model.load(str(saved_model)).signatures["serving_default"]

    def __call__(self, frame: pd.DataFrame) -> dict[str, np.ndarray]:
        """Output name -> one value per row (rank-1), or one list per row for wider outputs."""
        tf = self._tf
        out = self._fn(**{k: tf.constant(v) for k, v in feature_columns(self.cfg, frame).items()})
        result = {}
        for key in sorted(out):
            value = out[key].numpy()
            value = value.reshape(len(frame), -1) if value.ndim != 1 else value
            if value.ndim == 2 and value.shape[1] == 1:
                value = value[:, 0]
            if value.dtype == object:  # tf.string outputs come back as bytes
                value = np.vectorize(lambda b: b.decode("utf-8", "replace"), otypes=[object])(value)
            result[key] = value
        return result


# ----------------------------------------------------------------------------- inputs


def _md5(path: Path) -> str:
    digest = hashlib.md5()  # noqa: S324 - DVC's content hash, not a security measure
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def table_chunks(
    cfg: PipelineConfig, settings: Settings, uri: str, chunk_rows: int, staging: Path
) -> Iterator[pd.DataFrame]:
    """The rows of table ``uri`` (:mod:`mlplatform.sources`), at most ``chunk_rows`` at a time,
    each frame with its input version in column ``_INPUT_VERSION``."""
    from mlplatform.sources import read_chunks, resolve

    source = resolve(uri, cfg, settings, staging)
    versions = {where: _md5(path) for where, path, _ in source.files}
    for chunk in read_chunks(source, chunk_rows):
        yield chunk.frame.assign(**{_INPUT_VERSION: versions.get(chunk.where)})


def latest_offline_chunks(
    cfg: PipelineConfig, settings: Settings, chunk_rows: int
) -> Iterator[pd.DataFrame]:
    """Every entity's latest stored row (greatest event time, then ingestion time) of the offline
    store, at most ``chunk_rows`` rows at a time, each with its batch's data version in column
    ``_INPUT_VERSION``. Only the key columns of the whole history are held in memory."""
    from mlplatform.stages.features import offline_dir, stored_batches

    entity, ts = cfg.source.entity, cfg.source.timestamp
    files = stored_batches(offline_dir(cfg, settings))
    if not files:
        raise StageError(
            f"score: the offline store of {cfg.name!r} is empty and no input was given: "
            f"ingest a batch first (`mlplatform run {cfg.name}`) or pass --data URI"
        )
    keys = []
    for i, path in enumerate(files):
        part = pd.read_parquet(path, columns=[entity, ts, INGESTED_AT_COLUMN])
        keys.append(part.assign(_file=i, _row=np.arange(len(part))))
    index = pd.concat(keys, ignore_index=True).sort_values(
        [ts, INGESTED_AT_COLUMN, "_file", "_row"], kind="mergesort"
    )
    latest = index.drop_duplicates(entity, keep="last")
    winners = {int(i): np.sort(rows.to_numpy()) for i, rows in latest.groupby("_file")["_row"]}
    del keys, index, latest
    pending: list[pd.DataFrame] = []
    held = 0
    for i, path in enumerate(files):
        rows = winners.get(i)
        if rows is None:
            continue
        offset = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_rows):
            span = np.arange(offset, offset + batch.num_rows)
            offset += batch.num_rows
            mask = np.isin(span, rows, assume_unique=True)
            if not mask.any():
                continue
            frame = batch.filter(pa.array(mask)).to_pandas()
            pending.append(frame.assign(**{_INPUT_VERSION: path.stem}))
            held += len(frame)
            while held >= chunk_rows:
                whole = pd.concat(pending, ignore_index=True)
                yield whole.iloc[:chunk_rows].reset_index(drop=True)
                rest = whole.iloc[chunk_rows:].reset_index(drop=True)
                pending, held = ([rest] if len(rest) else []), len(rest)
    if held:
        yield pd.concat(pending, ignore_index=True)


# ----------------------------------------------------------------------------- output


def _json_columns(frame: pd.DataFrame, columns: list[str]) -> list[list[Any]]:
    """Each column as a list of JSON-ready values, a missing value as None (what a client sends
    as null); column-wise, which is ~5x faster than ``DataFrame.to_dict("records")``."""
    out = []
    for c in columns:
        column = frame[c]
        if pd.api.types.is_integer_dtype(column) and not column.hasnans:
            listed = column.tolist()  # exact, also past 2**53
        elif pd.api.types.is_float_dtype(column):
            values = column.to_numpy(dtype=np.float64, na_value=np.nan)
            listed = values.tolist()
            if np.isnan(values).any():
                listed = [None if v != v else v for v in listed]
        else:
            listed = column.astype(object).where(column.notna(), None).tolist()
        out.append(listed)
    return out


def _json_outputs(outputs: dict[str, np.ndarray]) -> list[Any]:
    """The predictions as the server logs them: values for one output, else one dict per row."""
    lists = {k: v.tolist() for k, v in outputs.items()}
    if len(lists) == 1:
        return next(iter(lists.values()))
    keys = list(lists)
    return [dict(zip(keys, row, strict=True)) for row in zip(*lists.values(), strict=True)]


def _log_records(
    cfg: PipelineConfig,
    frame: pd.DataFrame,
    outputs: dict[str, np.ndarray],
    common: dict[str, Any],
    model_ms: float,
) -> Iterator[dict[str, Any]]:
    """The request-log records of one scored chunk (``LOG_ROWS_PER_LINE`` rows each)."""
    n = len(frame)
    names = cfg.features.all
    entity, *columns = _json_columns(frame, [cfg.source.entity, *names])
    for start in range(0, n, LOG_ROWS_PER_LINE):
        stop = min(n, start + LOG_ROWS_PER_LINE)
        rows = zip(*(c[start:stop] for c in columns), strict=True)
        yield {
            **common,
            "format": "instances",
            "inputs": [dict(zip(names, row, strict=True)) for row in rows],
            "outputs": _json_outputs({k: v[start:stop] for k, v in outputs.items()}),
            "entities": _json_keys(entity[start:stop]),
            "latency_ms": round(model_ms * (stop - start) / n, 3),
        }


def _json_keys(keys: list[Any]) -> list[Any]:
    """Entity keys as sent: whole-number floats (integer ids read with a gap) as integers."""
    return [int(k) if isinstance(k, float) and k.is_integer() else k for k in keys]


def _prediction_table(
    cfg: PipelineConfig,
    frame: pd.DataFrame,
    outputs: dict[str, np.ndarray],
    champion: Champion,
    scored_at: pd.Timestamp,
) -> pa.Table:
    entity, ts = cfg.source.entity, cfg.source.timestamp
    out = pd.DataFrame({entity: frame[entity].to_numpy()})
    if ts in frame.columns:
        try:
            out[ts] = pd.to_datetime(frame[ts], utc=True).array
        except (TypeError, ValueError) as exc:
            raise StageError(
                f"score: event time column {ts!r} holds values that are not times: "
                f"{one_line(exc, 160)}"
            ) from None
    for key, value in outputs.items():
        out[key] = list(value) if value.ndim > 1 else value
    out["model_version"] = np.int64(champion.version)
    out["data_version"] = champion.data_version
    out["input_version"] = frame[_INPUT_VERSION].to_numpy()
    out["scored_at"] = scored_at
    schema = pa.Schema.from_pandas(out, preserve_index=False)
    fixed = {"data_version": pa.string(), "input_version": pa.string()}
    for name, typ in fixed.items():
        schema = schema.set(schema.get_field_index(name), pa.field(name, typ))
    return pa.Table.from_pandas(out, schema=schema, preserve_index=False).replace_schema_metadata(
        None
    )


def shown_uri(uri: str) -> str:
    """``uri`` as messages and results show it: a password in it replaced by ``***``."""
    return re.sub(r"(://[^/:@\s]+):[^@/\s]+@", r"\1:***@", uri)


def _check_columns(cfg: PipelineConfig, frame: pd.DataFrame, where: str) -> None:
    missing = [c for c in [cfg.source.entity, *cfg.features.all] if c not in frame.columns]
    if missing:
        raise StageError(
            f"score: {where} lacks column(s) {', '.join(missing)} (the model takes "
            f"{', '.join(cfg.features.all)}, keyed by {cfg.source.entity})"
        )


# ----------------------------------------------------------------------------- the stage


def score(
    cfg: PipelineConfig,
    out_dir: Path,
    settings: Settings,
    input_uri: str | None = None,
    run_id: str = "",
    chunk_rows: int | None = None,
) -> dict[str, Any]:
    """Run batch scoring (see the module doc); returns the stage's small result (XCom)."""
    from mlplatform.sources import SourceError
    from serving.request_log import RequestLogger, encode

    chunk_rows = chunk_rows or cfg.scoring.chunk_rows
    uri = (input_uri or "").strip() or None
    where = shown_uri(uri) if uri else OFFLINE_INPUT
    out_dir.mkdir(parents=True, exist_ok=True)
    final, tmp = out_dir / PREDICTIONS, out_dir / f".{PREDICTIONS}.tmp"
    spool = out_dir / ".requests.jsonl.tmp"
    staging = out_dir / ".staging"
    scored_at = pd.Timestamp(datetime.now(UTC))
    started = time.perf_counter()
    rows = chunks = max_chunk = 0
    model_s = 0.0
    writer: pq.ParquetWriter | None = None
    try:
        with tempfile.TemporaryDirectory(prefix="mlp-score-") as scratch:
            champion = load_champion(cfg, settings, Path(scratch))
            model = Model(cfg, champion.path)
            loaded = time.perf_counter()
            common = {
                "time": scored_at.isoformat(),
                "model": champion.name,
                "version": champion.version,
                "protocol": "batch",
                "method": "batch",
                "run_id": run_id,
                "data_version": champion.data_version,
            }
            frames = (
                table_chunks(cfg, settings, uri, chunk_rows, staging)
                if uri
                else latest_offline_chunks(cfg, settings, chunk_rows)
            )
            with open(spool, "w", encoding="utf-8") as spool_fh:
                for frame in frames:
                    _check_columns(cfg, frame, where)
                    if frame.empty:
                        continue
                    t0 = time.perf_counter()
                    try:
                        outputs = model(frame)
                    except Exception as exc:  # noqa: BLE001 - bad values or a broken model
                        raise StageError(
                            f"score: {where}: rows {rows}-{rows + len(frame) - 1} cannot be "
                            f"scored: {one_line(exc, 200)}"
                        ) from None
                    model_ms = (time.perf_counter() - t0) * 1000.0
                    model_s += model_ms / 1000.0
                    table = _prediction_table(cfg, frame, outputs, champion, scored_at)
                    if writer is None:
                        writer = pq.ParquetWriter(tmp, table.schema)
                    elif not table.schema.equals(writer.schema):
                        table = _cast(table, writer.schema, where, rows)
                    writer.write_table(table)
                    for record in _log_records(cfg, frame, outputs, common, model_ms):
                        spool_fh.write(encode(record))
                    rows += len(frame)
                    chunks += 1
                    max_chunk = max(max_chunk, len(frame))
        if writer is None:
            raise StageError(f"score: {where}: no rows to score")
        writer.close()
        writer = None
        os.replace(tmp, final)
    except SourceError as exc:
        _discard(writer, tmp, spool)
        raise StageError(f"score: {str(exc).removeprefix('ingest: ')}") from None
    except BaseException:
        _discard(writer, tmp, spool)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    ended = time.perf_counter()
    scoring_s = ended - loaded
    result: dict[str, Any] = {
        "predictions_uri": final.resolve().as_uri(),
        "input": where,
        "rows": rows,
        "chunks": chunks,
        "chunk_rows": chunk_rows,
        "max_chunk_rows": max_chunk,
        "model_name": champion.name,
        "model_version": champion.version,
        "data_version": champion.data_version,
        "scored_at": scored_at.isoformat(),
        "setup_seconds": round(loaded - started, 3),
        "scoring_seconds": round(scoring_s, 3),
        "model_seconds": round(model_s, 3),
        "rows_per_s": round(rows / scoring_s, 1) if scoring_s > 0 else math.inf,
        "request_log": str(settings.request_log_dir / champion.name),
        "request_log_lines": 0,
    }
    try:
        result["request_log_lines"] = RequestLogger(settings.request_log_dir).append_lines(
            champion.name, common["time"], spool
        )
    except OSError as exc:  # the predictions stand; the monitor misses this batch, say so
        log.warning("scored rows not appended to the request log: %s", exc)
        result["request_log_error"] = one_line(exc, 200)
    finally:
        spool.unlink(missing_ok=True)
    log.info(
        "scored %d rows in %d chunk(s) with %s v%s", rows, chunks, champion.name, champion.version
    )
    return result


def _cast(table: pa.Table, schema: pa.Schema, where: str, row: int) -> pa.Table:
    """A later chunk in the first chunk's column types (CSV chunks are typed one by one)."""
    try:
        return table.select(schema.names).cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, KeyError) as exc:
        raise StageError(
            f"score: {where}: rows from {row} on have other column types than the first rows: "
            f"{one_line(exc, 200)}"
        ) from None


def _discard(writer: pq.ParquetWriter | None, *paths: Path) -> None:
    """Forget a failed attempt's files (never the predictions file already in place)."""
    if writer is not None:
        try:
            writer.close()
        except Exception:  # noqa: BLE001 - the file is removed next anyway
            pass
    for path in paths:
        path.unlink(missing_ok=True)
