"""Materialization the platform owns: ``feast apply`` only when the definitions changed, and an
online store that provably holds what the offline store holds, recorded in a ledger.

Two files beside the Feast registry, in ``<home>/feast/<pipeline>/``:

* ``applied_definitions.json`` — the sha256 of the applied definitions (the entity, feature
  view and feature service specs, without Feast's timestamps, plus the Feast version) and the
  online store they were applied to (``sqlite:<path>`` or ``redis:<host:port>``).
  :func:`apply_definitions` runs ``store.apply`` only when there is no record, the hash or the
  online store differs, the registry file is gone, or the SQLite online store file is gone;
  otherwise it skips apply and says so.
* ``materialized.json`` — the ledger: for each stored batch of the offline store (one per data
  version, see :mod:`mlplatform.stages.features`), the event-time interval ``[start, end]`` it
  covers, its ingestion time, its row count and when it was materialized, under which
  definitions and online store. Feast's own incremental watermark is not used.

What a run materializes (:func:`materialize_pending`): every stored batch the ledger does not
record as materialized — the run's own batch, a batch whose earlier run failed mid-way, a batch
re-landed after another one superseded part of it — as one Feast ``materialize`` call over
``[earliest pending start, latest stored event time]``. The window ends at the history's end, not
at the batch's, because both online stores write unconditionally here (SQLite always; Redis with
``skip_dedup``, so that a corrected row with the same event time replaces the old one): an
older interval materialized alone would roll back entities that have newer rows. For the usual
run — a batch newer than everything stored — the window is exactly the batch's interval. A run
whose batch is recorded already (a re-run of the same data version) materializes nothing and
says ``already materialized``. A run that applies the definitions re-materializes the whole
stored history (the online store may have been created, switched or lost).

A materialization that fails records nothing and raises :class:`StageError` (one line): its
intervals stay pending, so the next run materializes them with its own; no gap is left.
Runs of one pipeline never interleave (the run lease), so the ledger needs no lock; it is
written aside and renamed. An unreadable ledger counts as empty (everything is re-materialized).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from mlplatform.config import INGESTED_AT_COLUMN, PipelineConfig
from mlplatform.settings import Settings
from mlplatform.stages import StageError

log = logging.getLogger(__name__)

APPLIED_FILE = "applied_definitions.json"
LEDGER_FILE = "materialized.json"
#: intervals listed in the XCom and named in messages; the rest are counted
MAX_LISTED = 20
NAMED_IN_LINE = 3


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``; None when absent or unreadable (logged)."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable %s: %s", path, exc)
        return None
    return data if isinstance(data, dict) else None


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Write aside, then rename: readers see the old or the new file, never a torn one."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)


# ------------------------------------------------------------------------------ apply


def online_store_id(root: Path, settings: Settings) -> str:
    """Which online store the pipeline writes: ``sqlite:<path>`` or ``redis:<host:port>`` (the
    connection string's options, passwords included, are left out)."""
    if settings.feast_online_store == "redis":
        return f"redis:{settings.feast_redis_connection.split(',')[0]}"
    return f"sqlite:{root / 'online.db'}"


def _without_meta(value: Any) -> Any:
    """A spec's JSON form without Feast's ``meta`` (creation/update timestamps)."""
    if isinstance(value, dict):
        return {k: _without_meta(v) for k, v in value.items() if k != "meta"}
    if isinstance(value, list):
        return [_without_meta(v) for v in value]
    return value


def definitions_hash(objects: list[Any]) -> str:
    """sha256 over the Feast objects' specs (timestamps left out) and the Feast version: equal
    for equal definitions built at any time."""
    import feast
    from google.protobuf import json_format

    specs = [_without_meta(json_format.MessageToDict(o.to_proto().spec)) for o in objects]
    blob = json.dumps({"feast": feast.__version__, "specs": specs}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def apply_reason(root: Path, digest: str, store_id: str) -> str | None:
    """Why the definitions must be applied, or None when the applied ones are current."""
    record = _read_json(root / APPLIED_FILE)
    if record is None:
        return "first apply"
    if record.get("sha256") != digest:
        return "definitions changed"
    if record.get("online_store") != store_id:
        return f"online store changed ({record.get('online_store')} -> {store_id})"
    if not (root / "registry.db").exists():
        return "the registry file is missing"
    if store_id.startswith("sqlite:") and not (root / "online.db").exists():
        return "the SQLite online store file is missing"
    return None


def apply_definitions(store: Any, objects: list[Any], root: Path, settings: Settings) -> dict:
    """``store.apply(objects)`` when :func:`apply_reason` gives a reason, then record the hash.

    Returns ``applied`` (bool), ``apply`` (what happened, one line) and ``definitions_sha256``.
    Raises :class:`StageError` when apply fails (nothing is recorded then).
    """
    digest, store_id = definitions_hash(objects), online_store_id(root, settings)
    reason = apply_reason(root, digest, store_id)
    if reason is None:
        return {
            "applied": False,
            "apply": f"skipped: definitions unchanged (sha256 {digest[:12]})",
            "definitions_sha256": digest,
        }
    try:
        store.apply(objects)
    except Exception as exc:  # noqa: BLE001 - Feast raises many types; the user needs one line
        raise StageError(
            f"features: feast apply failed ({reason}): {_first_line(exc)}; nothing was recorded, "
            "the next run applies again"
        ) from exc
    record = {"sha256": digest, "online_store": store_id, "applied_at": _now()}
    _write_json(root / APPLIED_FILE, record)
    log.info("applied the feature definitions (%s), sha256 %s", reason, digest[:12])
    return {"applied": True, "apply": f"applied: {reason}", "definitions_sha256": digest}


# ------------------------------------------------------------------------------ ledger


@dataclass(frozen=True)
class Interval:
    """One stored batch as the ledger sees it: its event-time interval ``[start, end]``."""

    data_version: str
    ingested_at: str
    start: str
    end: str
    rows: int
    materialized_at: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        """Identity of a landing: a re-landed batch has a new ingestion time."""
        return self.data_version, self.ingested_at

    def describe(self) -> str:
        return f"{self.data_version} [{self.start} .. {self.end}]"


def stored_intervals(cfg: PipelineConfig, files: list[Path]) -> list[Interval]:
    """The interval of each stored batch file (``<data_version>.parquet``), by file name."""
    out = []
    for path in files:
        frame = pd.read_parquet(path, columns=[cfg.source.timestamp, INGESTED_AT_COLUMN])
        if frame.empty:
            continue
        ts = pd.to_datetime(frame[cfg.source.timestamp], utc=True)
        ingested = pd.Timestamp(frame[INGESTED_AT_COLUMN].max())
        out.append(
            Interval(
                data_version=path.stem,
                ingested_at=ingested.isoformat(),
                start=ts.min().isoformat(),
                end=ts.max().isoformat(),
                rows=len(frame),
            )
        )
    return out


def read_ledger(root: Path) -> dict[str, Any]:
    """The ledger (an empty one when absent or unreadable)."""
    ledger = _read_json(root / LEDGER_FILE) or {}
    ledger.setdefault("intervals", [])
    return ledger


def recorded(ledger: dict[str, Any], digest: str, store_id: str) -> dict[tuple[str, str], Interval]:
    """The ledger's intervals by :attr:`Interval.key`, if written under these definitions and
    this online store (else none: everything is pending)."""
    if ledger.get("definitions_sha256") != digest or ledger.get("online_store") != store_id:
        return {}
    done = {}
    for entry in ledger["intervals"]:
        try:
            interval = Interval(**entry)
        except TypeError:
            continue
        done[interval.key] = interval
    return done


def _named(intervals: list[Interval], describe: bool = True) -> str:
    """The first :data:`NAMED_IN_LINE` intervals (or data versions), then how many more."""
    shown = [i.describe() if describe else i.data_version for i in intervals[:NAMED_IN_LINE]]
    more = len(intervals) - NAMED_IN_LINE
    return "; ".join(shown) + (f"; and {more} more" if more > 0 else "")


def _window(pending: list[Interval], stored: list[Interval]) -> tuple[datetime, datetime]:
    """``[earliest pending start, latest stored end + 1 s]`` (see the module docstring)."""
    start = min(pd.Timestamp(i.start) for i in pending)
    end = max(pd.Timestamp(i.end) for i in stored) + timedelta(seconds=1)
    return start.to_pydatetime(), end.to_pydatetime()


def _rows_in(cfg: PipelineConfig, files: list[Path], start: datetime, end: datetime) -> int:
    total = 0
    for path in files:
        ts = pd.to_datetime(pd.read_parquet(path, columns=[cfg.source.timestamp]).iloc[:, 0])
        total += int(((ts >= start) & (ts <= end)).sum())
    return total


def materialize_pending(
    store: Any,
    cfg: PipelineConfig,
    files: list[Path],
    root: Path,
    applied: dict[str, Any],
    settings: Settings,
    data_version: str,
) -> dict[str, Any]:
    """Materialize every stored batch the ledger does not record (see the module docstring)
    and record them; ``data_version`` is the run's own batch.

    Returns ``materialization`` (one line: what was materialized, or ``already materialized``),
    ``materialized`` (the intervals materialized now: data version, start, end, rows; the first
    :data:`MAX_LISTED`), ``materialized_batches`` (how many),
    ``materialized_from`` / ``materialized_to`` (the window, None when nothing was due) and
    ``materialized_rows`` (offline rows in the window). Raises :class:`StageError` when Feast
    fails; the ledger is then unchanged.
    """
    digest, store_id = applied["definitions_sha256"], online_store_id(root, settings)
    stored = stored_intervals(cfg, files)
    done = {} if applied["applied"] else recorded(read_ledger(root), digest, store_id)
    pending = [i for i in stored if i.key not in done]
    if not pending:
        own = next((i for i in stored if i.data_version == data_version), None)
        what = f"{own.describe()} at {done[own.key].materialized_at}" if own else data_version
        return {
            "materialization": f"already materialized: {what}",
            "materialized": [],
            "materialized_batches": 0,
            "materialized_from": None,
            "materialized_to": None,
            "materialized_rows": 0,
        }
    start, end = _window(pending, stored)
    try:
        store.materialize(start_date=start, end_date=end, feature_views=[cfg.features.view])
    except Exception as exc:  # noqa: BLE001 - Feast and the stores raise many types
        raise StageError(
            f"features: materializing {cfg.features.view} from {start.isoformat()} to "
            f"{end.isoformat()} into {store_id} failed: {_first_line(exc)}; batch(es) "
            f"{_named(pending, describe=False)} stay pending and the next run materializes them"
        ) from exc
    now = _now()
    intervals = [done.get(i.key) or replace(i, materialized_at=now) for i in stored]
    ledger = {"feature_view": cfg.features.view, "definitions_sha256": digest}
    ledger |= {"online_store": store_id, "intervals": [asdict(i) for i in intervals]}
    _write_json(root / LEDGER_FILE, ledger)
    rows = _rows_in(cfg, files, start, end)
    log.info("materialized %s from %s to %s (%d rows)", cfg.features.view, start, end, rows)
    return {
        "materialization": (
            f"materialized {len(pending)} interval(s) ({_named(pending)}): {rows} rows from "
            f"{start.isoformat()} to {end.isoformat()}"
        ),
        "materialized": [
            {k: v for k, v in asdict(i).items() if k not in ("ingested_at", "materialized_at")}
            for i in pending[:MAX_LISTED]
        ],
        "materialized_batches": len(pending),
        "materialized_from": start.isoformat(),
        "materialized_to": end.isoformat(),
        "materialized_rows": rows,
    }
