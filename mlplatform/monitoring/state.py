"""The monitor's memory of a pipeline: ``<home>/monitor/<pipeline>/state.json``.

It holds the window of the last completed check (``run``, ``window_start``, ``window_end``, ISO
8601 UTC) and that check's result (``result``: when, drift share, drifted features, report,
live metric). The next check reads the request log and the labels received after
``window_end``; a retry of the same monitor run (same ``run``) reads the same window again, so a
re-run task is idempotent. A check skipped for too few rows writes nothing: the rows it saw are
read again, with newer ones, next time. Writes are atomic (a temporary file, then a rename).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from mlplatform.settings import Settings


@dataclass(frozen=True)
class Window:
    """The interval of one check: request and label times in ``(start, end]`` (``start`` None:
    everything before ``end``)."""

    start: datetime | None
    end: datetime


def state_path(settings: Settings, pipeline: str) -> Path:
    return settings.home_dir / "monitor" / pipeline / "state.json"


def read_state(settings: Settings, pipeline: str) -> dict[str, Any]:
    """The pipeline's state, ``{}`` before its first check (or when the file is unreadable)."""
    try:
        return json.loads(state_path(settings, pipeline).read_text())
    except (FileNotFoundError, ValueError):
        return {}


def window_for(state: dict[str, Any], run: str, now: datetime) -> Window:
    """The window of monitor run ``run``: after the previous check's end; a re-run of the same
    run starts where it started the first time."""
    if state.get("run") == run:
        start = state.get("window_start")
    else:
        start = state.get("window_end")
    return Window(datetime.fromisoformat(start) if start else None, now)


def write_state(
    settings: Settings, pipeline: str, run: str, window: Window, result: dict[str, Any]
) -> Path:
    """Record a completed check (atomically)."""
    path = state_path(settings, pipeline)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {
        "run": run,
        "window_start": window.start.isoformat() if window.start else None,
        "window_end": window.end.isoformat(),
        "result": result,
    }
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(body, indent=2, default=str))
    os.replace(tmp, path)
    return path


def status_lines(settings: Settings, model_name: str) -> list[str]:
    """One line per pipeline monitoring ``model_name``: its last drift result (for
    ``mlplatform status``); none before a first check."""
    lines = []
    for path in sorted((settings.home_dir / "monitor").glob("*/state.json")):
        result = read_state(settings, path.parent.name).get("result") or {}
        if result.get("model_name") != model_name:
            continue
        drifted = ", ".join(result.get("drifted_features") or []) or "none"
        share = result.get("drift_share")
        share_text = "n/a" if share is None else f"{share:.2f}"
        live = ""
        if result.get("live_metric") is not None:
            live = f", live {result.get('metric')} {result['live_metric']:.4f}"
        verdict = f" -> {result['reason']}" if result.get("triggered") else ""
        lines.append(
            f"  last drift check ({path.parent.name}): {result.get('checked_at')}: share "
            f"{share_text}, drifted: {drifted}{live}; report {result.get('report') or 'none'}"
            f"{verdict}"
        )
    return lines
