"""Where stages read and write: ``<storage>/<pipeline>/<run_key>/<stage>/``.

Every stage gets a fresh directory per run (re-running a task for the same run replaces it, so
tasks are idempotent) and passes on ``file://`` URIs; XCom carries only URIs, ids and metrics.
The embedded profile keeps storage on the local disk.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

#: run directories of the DAGs that are not a pipeline's training run: a monitor or score run
#: never shares a train run's directory, lease or frozen config, even at the same run id
MONITOR_RUN_PREFIX = "monitor__"
SCORE_RUN_PREFIX = "score__"


def run_key(run_id: str) -> str:
    """Filesystem-safe form of an Airflow run id (``manual__2026-01-01T00:00:00+00:00``)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", run_id).strip("_")


def to_path(uri: str | Path) -> Path:
    """Local path of a ``file://`` URI or plain path; other schemes are refused in one line."""
    text = str(uri)
    parsed = urlparse(text)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme in ("", None) or len(parsed.scheme) == 1:  # plain path (or a Windows drive)
        return Path(text).expanduser().resolve()
    raise ValueError(
        f"unsupported storage URI scheme {parsed.scheme!r} in {text!r} (embedded profile reads file:// only)"
    )


def to_uri(path: str | Path) -> str:
    return Path(path).resolve().as_uri()


def stage_dir(storage: str, pipeline: str, run: str, stage: str, fresh: bool = True) -> Path:
    """The stage's output directory, emptied first when ``fresh`` (idempotent re-runs).

    What must outlive a try lives elsewhere: the trainer's checkpoints are keyed by their inputs
    under ``<storage>/<pipeline>/checkpoints/`` (:func:`mlplatform.stages.train.checkpoint_dir`).
    """
    path = to_path(storage) / pipeline / run / stage
    if fresh and path.exists():
        for entry in path.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_summary(directory: Path, stage: str, seconds: float, outputs: dict[str, Any]) -> None:
    """``summary.json`` beside a stage's outputs: what the CLI prints after a run."""
    (directory / "summary.json").write_text(
        json.dumps(
            {"stage": stage, "seconds": round(seconds, 2), "outputs": outputs},
            indent=2,
            default=str,
        )
    )


def read_summaries(storage: str, pipeline: str, run: str) -> list[dict[str, Any]]:
    root = to_path(storage) / pipeline / run
    out = []
    for path in sorted(root.glob("*/summary.json"), key=lambda p: p.stat().st_mtime):
        out.append(json.loads(path.read_text()))
    return out
