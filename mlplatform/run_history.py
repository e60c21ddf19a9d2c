"""What happened to a pipeline's runs: the outcome of each, for ``mlplatform status``.

The source is what every run already writes: each stage's ``summary.json`` under
``<storage>/<pipeline>/<run>/<stage>/`` (its outputs, or ``failed`` / ``skipped`` with the
one-line reason, written by :class:`operators.base.PlatformOperator` for every outcome), plus the
pipeline's lease (:mod:`mlplatform.runs`) for the run still in progress. It needs no Airflow and
no database, and it covers a run whose driver died (its summaries stop, and it holds no lease),
which a record written at the end of a run could not.

Runs are those with a ``start_run`` summary: training runs (``mlp_<name>_train``) and ingest runs
(``ingest__...``, the ``mlp_<name>_ingest`` DAG). Their outcome, in words:

========================  ===================================================================
``promoted``              promote succeeded: the served version
``not promoted``          the gate refused the challenger, with the gate's reason
``validation failed``     the batch failed its suite, with the failed expectations
``failed at <stage>``     any other stage failed, with its one-line cause
``no retrain``            decide skipped the run, with the reason
``skipped at <stage>``    another stage skipped the rest of the run (an empty landing interval)
``published``             an ingest run published a new data version
``succeeded``             the run ended without any of the above (e.g. an ingest of known data)
``running``               the run holds the pipeline's lease: the stage it is at
``did not finish``        no ``end_run`` and no lease: its driver died or it was stopped
========================  ===================================================================
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlplatform.config import one_line
from mlplatform.settings import Settings
from mlplatform.storage import run_key, to_path

#: the stages of a run in the order they run (train DAG, then the ingest DAG's own)
STAGE_ORDER = (
    "start_run",
    "decide",
    "ingest",
    "validate",
    "features",
    "publish",
    "training_set",
    "train",
    "register",
    "gate",
    "infra_validate",
    "promote",
    "end_run",
)
INGEST_PREFIX = "ingest__"
#: runs shown by ``mlplatform status NAME``
STATUS_RUNS = 5


@dataclass(frozen=True)
class RunOutcome:
    """One run: its directory name, kind (``train`` / ``ingest``), start time, outcome word
    (see the module doc) and the reason or figures behind it."""

    run: str
    kind: str
    started: datetime
    outcome: str
    detail: str

    def line(self) -> str:
        when = self.started.strftime("%Y-%m-%d %H:%M")
        detail = f": {self.detail}" if self.detail else ""
        return f"    {when}  {self.kind:<6} {self.run}  {self.outcome}{detail}"


def _summaries(run_dir: Path) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for path in run_dir.glob("*/summary.json"):
        try:
            summary = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # being written right now
        out[str(summary.get("stage", path.parent.name))] = summary.get("outputs") or {}
    return out


def read_run(settings: Settings, pipeline: str, run: str) -> dict[str, dict[str, Any]]:
    """Stage -> outputs of one run (its directory ``run``: :func:`~mlplatform.storage.run_key`)."""
    return _summaries(to_path(settings.storage) / pipeline / run)


def _ordered(summaries: dict[str, dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    rank = {stage: i for i, stage in enumerate(STAGE_ORDER)}
    return sorted(summaries.items(), key=lambda item: rank.get(item[0], len(rank)))


def outcome_of(summaries: dict[str, dict[str, Any]], holds_lease: bool) -> tuple[str, str]:
    """``(outcome, detail)`` of one run from its stage summaries (see the module doc)."""
    ordered = _ordered(summaries)
    for stage, out in ordered:
        if "failed" in out:
            reason = one_line(out["failed"], 400)
            if stage == "validate":
                return "validation failed", reason.removeprefix("validation failed: ")
            return f"failed at {stage}", reason
    for stage, out in ordered:
        if "skipped" in out:
            reason = one_line(out["skipped"], 400)
            if stage == "gate":
                return "not promoted", reason
            if stage == "decide":
                return "no retrain", reason
            return f"skipped at {stage}", reason
    promote = summaries.get("promote")
    if promote and promote.get("served_version") is not None:
        gate = summaries.get("gate") or {}
        figures = (
            f"; gate {gate.get('metric')} challenger={gate.get('challenger')} "
            f"champion={gate.get('champion')}"
            if gate.get("metric")
            else ""
        )
        return "promoted", f"served version {promote['served_version']}{figures}"
    if "end_run" not in summaries:
        last = ordered[-1][0] if ordered else "start_run"
        if holds_lease:
            return "running", f"at {last}"
        return "did not finish", f"last stage {last}; its driver died or it was stopped"
    publish = summaries.get("publish")
    if publish and publish.get("data_version"):
        return "published", f"data version {publish['data_version']}"
    return "succeeded", ""


def recent_runs(settings: Settings, pipeline: str, limit: int = STATUS_RUNS) -> list[RunOutcome]:
    """The newest ``limit`` runs of ``pipeline`` (training and ingest), newest first."""
    from mlplatform import runs

    root = to_path(settings.storage) / pipeline
    lease = runs.current(settings, pipeline)
    leased = run_key(lease.run_id) if lease is not None else None
    started: list[tuple[float, Path]] = []
    for marker in root.glob("*/start_run/summary.json"):
        try:
            started.append((marker.stat().st_mtime, marker.parent.parent))
        except OSError:
            continue
    out = []
    for mtime, run_dir in sorted(started, reverse=True)[:limit]:
        outcome, detail = outcome_of(_summaries(run_dir), run_dir.name == leased)
        kind = "ingest" if run_dir.name.startswith(INGEST_PREFIX) else "train"
        out.append(
            RunOutcome(run_dir.name, kind, datetime.fromtimestamp(mtime, UTC), outcome, detail)
        )
    return out


def status_lines(settings: Settings, pipeline: str, limit: int = STATUS_RUNS) -> list[str]:
    """``mlplatform status`` lines: the pipeline's last runs and their outcome."""
    found = recent_runs(settings, pipeline, limit)
    where = to_path(settings.storage) / pipeline
    if not found:
        return [f"  runs of {pipeline}: none yet ({where})"]
    head = f"  last runs of {pipeline} (newest first; stage summaries under {where}):"
    return [head, *(r.line() for r in found)]
