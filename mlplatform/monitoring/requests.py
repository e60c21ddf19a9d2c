"""Rows of the server's request log (``<request_log_dir>/<model>/<UTC date>.jsonl``, see
:mod:`serving.server`) as a table the drift check and the label join read.

:func:`request_rows` returns one row per predicted instance made in a window, with the columns
``request_time`` (UTC), ``request_id``, ``model_version``, ``prediction`` (the classifier's score
or the regressor's value; NaN when the output has neither), the entity column (from the record's
``entities``; missing when the request carried none) and each feature the request sent. Rows of
every format are read: ``instances`` and ``examples`` (one object per row) and ``inputs``
(columns). A line that is not JSON (a torn write) is skipped and counted.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from mlplatform.monitoring.state import Window

log = logging.getLogger(__name__)

REQUEST_TIME, REQUEST_ID, PREDICTION, MODEL_VERSION = (
    "request_time",
    "request_id",
    "prediction",
    "model_version",
)


def log_files(log_dir: Path, model: str, window: Window) -> list[Path]:
    """The model's daily log files that may hold records of ``window``, oldest first."""

    # a day file rotated by the server's size cap is <date>.<n>.jsonl (n = 1 newest): same day,
    # older lines, so it sorts before <date>.jsonl
    def key(f: Path) -> tuple[str, int]:
        day, _, n = f.stem.partition(".")
        return day, -int(n) if n.isdigit() else 0

    files = sorted((Path(log_dir) / model).glob("*.jsonl"), key=key)
    if window.start is None:
        return [f for f in files if key(f)[0] <= window.end.date().isoformat()]
    first = (window.start - timedelta(days=1)).date().isoformat()
    return [f for f in files if first <= key(f)[0] <= window.end.date().isoformat()]


def _rows(inputs: Any, fmt: str) -> list[dict[str, Any]]:
    if fmt == "inputs" and isinstance(inputs, dict):
        columns = {k: v if isinstance(v, list) else [v] for k, v in inputs.items()}
        n = max((len(v) for v in columns.values()), default=0)
        return [{k: v[i] if i < len(v) else None for k, v in columns.items()} for i in range(n)]
    if isinstance(inputs, list):
        return [r if isinstance(r, dict) else {} for r in inputs]
    return []


def _score(value: Any) -> float:
    """One row's output as a number: a score/prediction, the score of class "1" of a classify
    result, the single element of a one-element list; NaN otherwise."""
    if isinstance(value, dict):
        for key in ("score", "prediction"):
            if key in value:
                return _score(value[key])
        return math.nan
    if isinstance(value, list):
        if value and all(isinstance(p, list) and len(p) == 2 for p in value):  # classify
            scores = {str(label): s for label, s in value}
            return _score(scores.get("1", math.nan))
        return _score(value[0]) if len(value) == 1 else math.nan
    if isinstance(value, bool) or not isinstance(value, int | float):
        return math.nan
    return float(value)


def _outputs(outputs: Any, n: int) -> list[float]:
    if isinstance(outputs, dict):  # columnar outputs: name -> column
        key = next((k for k in ("score", "prediction") if k in outputs), None)
        column = outputs.get(key) if key else None
        values = column if isinstance(column, list) else []
    else:
        values = outputs if isinstance(outputs, list) else []
    scores = [_score(v) for v in values]
    return (scores + [math.nan] * n)[:n]


def _records(files: list[Path]) -> Iterator[dict[str, Any]]:
    torn = 0
    for path in files:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                try:
                    record = json.loads(line)
                except ValueError:
                    torn += 1
                    continue
                if isinstance(record, dict):
                    yield record
    if torn:
        log.warning("skipped %d request-log lines that are not JSON", torn)


def request_rows(
    log_dir: Path, model: str, window: Window, features: list[str], entity: str
) -> pd.DataFrame:
    """The instances predicted by ``model`` in ``window`` (see the module doc)."""
    out: list[dict[str, Any]] = []
    for record in _records(log_files(log_dir, model, window)):
        try:
            when = datetime.fromisoformat(str(record["time"]))
        except (KeyError, ValueError):
            continue
        if when > window.end or (window.start is not None and when <= window.start):
            continue
        rows = _rows(record.get("inputs"), str(record.get("format", "")))
        scores = _outputs(record.get("outputs"), len(rows))
        entities = record.get("entities")
        keys = entities if isinstance(entities, list) and len(entities) == len(rows) else None
        for i, row in enumerate(rows):
            item = {f: row.get(f) for f in features}
            item |= {
                REQUEST_TIME: when,
                REQUEST_ID: record.get("request_id"),
                MODEL_VERSION: record.get("version"),
                PREDICTION: scores[i],
                entity: keys[i] if keys is not None else None,
            }
            out.append(item)
    columns = [*features, REQUEST_TIME, REQUEST_ID, MODEL_VERSION, PREDICTION, entity]
    frame = pd.DataFrame(out, columns=columns)
    frame[REQUEST_TIME] = pd.to_datetime(frame[REQUEST_TIME], utc=True)
    return frame
