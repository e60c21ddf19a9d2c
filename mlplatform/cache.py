"""Step caching: a stage whose inputs did not change reuses its earlier output and says so.

Each cacheable stage computes a **key** from what determines its output (data version, the
config sections it reads, definition files, code hashes, library versions, upstream stages' keys):
:func:`stage_key` is the sha256 of a canonical JSON of those parts together with the pipeline
name, the stage and :data:`CACHE_FORMAT`. When the stage succeeds, its XCom is recorded in the
pipeline's **index**::

    <storage>/<pipeline>/cache/<stage>/<key>.json
        {"format", "pipeline", "stage", "key", "run_id", "created", "result", "state"}

written aside and renamed (atomic), and only after success: a failed, refused or stopped stage
records nothing. ``state`` is an optional fingerprint of shared state the output lives in (the
offline feature store, the serving labels); a later lookup reuses the entry only when that state
is unchanged. The pipeline name is in both the path and the key, so nothing is ever reused across
pipelines, even two whose sections and data are identical.

:func:`lookup` reads an entry; :func:`missing_outputs` says why the outputs an entry points at
can no longer be used (a ``file://`` URI or a path under storage that is gone); the operator
adds its own checks (an MLflow run, a model version, the served version) and logs the reason of
every miss. Runs of one pipeline never interleave (the run lease), so the index needs no lock.

Turning it off: ``cache: false`` in a pipeline config (no lookups, nothing recorded), or
``mlplatform run NAME --no-cache`` (DAG param ``cache``: every stage runs afresh and records its
fresh output for later runs). What each stage's key holds is :mod:`mlplatform.cache_keys`; the
hook into the operators is :mod:`operators.caching`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from mlplatform.lineage import code_hash  # noqa: F401 - part of this module's API
from mlplatform.settings import Settings
from mlplatform.storage import to_path

log = logging.getLogger(__name__)

#: bump when the meaning of keys or entries changes: every older entry becomes a miss
CACHE_FORMAT = 1
#: the XCom keys a stage's result gains from the cache (never stored in an entry)
CACHE_KEY, CACHED_FROM = "cache_key", "cached_from"


@dataclass(frozen=True)
class Entry:
    """One recorded stage output: ``result`` is the stage's XCom as that run returned it."""

    pipeline: str
    stage: str
    key: str
    run_id: str
    created: str
    result: dict[str, Any]
    state: dict[str, Any] | None = None
    format: int = CACHE_FORMAT


def canonical(value: Any) -> str:
    """Canonical JSON (sorted keys, no spaces; non-JSON values as ``str``)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def stage_key(pipeline: str, stage: str, parts: dict[str, Any]) -> str:
    """The cache key of ``stage`` of ``pipeline`` for ``parts`` (what determines its output):
    sha256 (hex) of the canonical JSON of the parts, the pipeline, the stage and the format."""
    body = {"format": CACHE_FORMAT, "pipeline": pipeline, "stage": stage, "parts": parts}
    return hashlib.sha256(canonical(body).encode()).hexdigest()


def cache_dir(settings: Settings, pipeline: str, stage: str) -> Path:
    """``<storage>/<pipeline>/cache/<stage>``: the stage's index."""
    return to_path(settings.storage) / pipeline / "cache" / stage


def entry_path(settings: Settings, pipeline: str, stage: str, key: str) -> Path:
    return cache_dir(settings, pipeline, stage) / f"{key}.json"


def lookup(settings: Settings, pipeline: str, stage: str, key: str) -> Entry | None:
    """The entry recorded for ``key``, or None (absent, unreadable or of another format:
    a miss, logged)."""
    path = entry_path(settings, pipeline, stage, key)
    try:
        entry = Entry(**json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as exc:
        log.warning("ignoring unreadable cache entry %s: %s", path, exc)
        return None
    if entry.format != CACHE_FORMAT or (entry.pipeline, entry.stage, entry.key) != (
        pipeline,
        stage,
        key,
    ):
        log.warning("ignoring cache entry %s: it was written for another format or key", path)
        return None
    return entry


def record(
    settings: Settings,
    pipeline: str,
    stage: str,
    key: str,
    run_id: str,
    result: dict[str, Any],
    state: dict[str, Any] | None = None,
) -> Path:
    """Record a successful stage output under ``key`` (written aside, then renamed)."""
    clean = {k: v for k, v in result.items() if k not in (CACHE_KEY, CACHED_FROM)}
    entry = Entry(
        pipeline=pipeline,
        stage=stage,
        key=key,
        run_id=run_id,
        created=datetime.now(UTC).isoformat(),
        result=json.loads(canonical(clean)),
        state=state,
    )
    path = entry_path(settings, pipeline, stage, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(asdict(entry), indent=2, sort_keys=True))
    os.replace(tmp, path)
    return path


def forget(settings: Settings, pipeline: str, stage: str, key: str) -> None:
    """Remove an entry whose outputs are gone (the next success records a fresh one)."""
    entry_path(settings, pipeline, stage, key).unlink(missing_ok=True)


def _paths(value: Any, storage: Path) -> list[tuple[str, Path]]:
    """``file://`` URIs and absolute paths under ``storage`` in a (nested) XCom value."""
    found: list[tuple[str, Path]] = []
    if isinstance(value, dict):
        for item in value.values():
            found += _paths(item, storage)
    elif isinstance(value, list | tuple):
        for item in value:
            found += _paths(item, storage)
    elif isinstance(value, str):
        if value.startswith("file://"):
            found.append((value, to_path(value)))
        elif value.startswith("/") and Path(value).is_relative_to(storage):
            found.append((value, Path(value)))
    return found


def missing_outputs(settings: Settings, result: dict[str, Any]) -> str | None:
    """Why ``result``'s files cannot be reused (the first one that is gone), or None."""
    try:
        storage = to_path(settings.storage)
    except ValueError:  # s3:// storage: local paths cannot be checked here
        return None
    for shown, path in _paths(result, storage):
        if not path.exists():
            return f"its output {shown} no longer exists"
    return None


def file_digest(path: Path) -> str | None:
    """sha256 (hex) of a file's bytes, or None when it does not exist."""
    try:
        with open(path, "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except FileNotFoundError:
        return None


def library_versions(*distributions: str) -> dict[str, str | None]:
    """Installed versions of ``distributions`` (None for one that is not installed)."""
    out: dict[str, str | None] = {}
    for name in distributions:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def directory_state(directory: Path, pattern: str = "*") -> list[list[Any]]:
    """``[name, size, mtime_ns]`` of the files of ``directory`` matching ``pattern`` (sorted);
    cheap, and changed by any rewrite, addition or removal."""
    if not directory.is_dir():
        return []
    rows = []
    for path in sorted(directory.glob(pattern)):
        if path.is_file() and not path.name.startswith("."):
            stat = path.stat()
            rows.append([path.name, stat.st_size, stat.st_mtime_ns])
    return rows
