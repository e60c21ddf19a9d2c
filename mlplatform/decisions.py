"""Retrain decisions: whether a run of the train DAG retrains, and why (no Airflow here).

The ``decide`` task (:mod:`operators.decide`) gathers the :class:`Facts` of its run and calls
:func:`decide`; the decision is one JSON line in the pipeline's decisions log
(``<home>/runs/<pipeline>/decisions.jsonl``, :func:`record`), which ``mlplatform status`` prints.

Triggers (a decision names every one that holds, each with its figure):

* ``manual``: a run started by hand (UI, ``mlplatform run``) always retrains; it is exempt from
  the cooldown and does not start one (a person asked for that model; the cooldown limits what
  events and schedules start), but it is recorded like every decision.
* ``new_data``: a data asset event (the ingest DAG validated a data version) whose version is not
  the champion's, or, at any check, the newest validated data version is not the champion's.
* ``drift``: a drift asset event from the monitor (its ``reason`` and ``drift_share``), when
  ``retrain.on_drift``; a drift event that arrived inside the cooldown is *deferred*: the next
  decision after the cooldown still names it (``deferred``), so it is not lost.
* ``config``: the training config hash (:func:`mlplatform.lineage.training_config_hash`) differs
  from the champion's ``training_config_hash`` tag.
* ``trainer_code``: the trainer code hash differs from the champion's ``trainer_code_hash``.
* ``no_champion``: the model has no champion yet.

A run that is not manual skips when nothing was validated yet (nothing to train on).

Cooldown (no retrain storms): a run that is not manual does not retrain within
``monitoring.cooldown_hours`` of the pipeline's latest *automatic* retrain decision, whatever the number of events; it is skipped with the reason and its triggers are
deferred. Decisions are made under the pipeline lease (runs never interleave), and a retried
``decide`` of the same run returns the decision already recorded (its own retrain must not put
it in cooldown).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from mlplatform import jsonl_log
from mlplatform.config import PipelineConfig, one_line
from mlplatform.settings import Settings

RETRAIN, SKIP = "retrain", "skip"
MANUAL = "manual"
LOG_NAME = "decisions.jsonl"
#: ``mlplatform status`` prints this many of the latest decisions
STATUS_DECISIONS = 5


@dataclass(frozen=True)
class Champion:
    """The champion model version and its lineage tags that decisions compare with."""

    version: int
    data_version: str | None = None
    training_config_hash: str | None = None
    trainer_code_hash: str | None = None


@dataclass
class Facts:
    """What one run knows when it decides.

    ``run_type``: Airflow's (``manual``, ``scheduled``, ``asset_triggered`` ...);
    ``data_events``/``drift_events``: the ``extra`` of the asset events that triggered the run;
    ``newest_data_version``: the newest validated data version (the offline store's newest batch).
    """

    run_type: str
    champion: Champion | None
    newest_data_version: str | None
    training_config_hash: str
    trainer_code_hash: str
    data_events: list[dict[str, Any]] = field(default_factory=list)
    drift_events: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Decision:
    """One decision: a line of the decisions log."""

    time: str
    pipeline: str
    run_id: str
    decision: str  # retrain | skip
    triggers: list[str]
    reason: str
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def retrain(self) -> bool:
        return self.decision == RETRAIN

    def summary(self) -> str:
        """The one line the task logs, the run's note and ``mlplatform status`` show."""
        return f"{self.decision}: {self.reason}"


def _short(version: str | None) -> str:
    return (version or "?")[:12]


def _standing_triggers(facts: Facts) -> list[tuple[str, str]]:
    """Triggers that hold whatever started the run: champion vs the newest data, config, code."""
    champ = facts.champion
    if champ is None:
        return [("no_champion", "no champion yet")]
    found = []
    if facts.newest_data_version and facts.newest_data_version != champ.data_version:
        found.append(
            (
                "new_data",
                f"newest validated data {_short(facts.newest_data_version)} is not champion "
                f"v{champ.version}'s {_short(champ.data_version)}",
            )
        )
    if champ.training_config_hash and champ.training_config_hash != facts.training_config_hash:
        found.append(
            (
                "config",
                f"training config hash {facts.training_config_hash} is not champion "
                f"v{champ.version}'s {champ.training_config_hash}",
            )
        )
    if champ.trainer_code_hash and champ.trainer_code_hash != facts.trainer_code_hash:
        found.append(
            (
                "trainer_code",
                f"trainer code hash {facts.trainer_code_hash} is not champion "
                f"v{champ.version}'s {champ.trainer_code_hash}",
            )
        )
    return found


def _event_triggers(cfg: PipelineConfig, facts: Facts) -> list[tuple[str, str]]:
    """Triggers from the asset events that started the run."""
    found = []
    champion_data = facts.champion.data_version if facts.champion else None
    if cfg.retrain.on_new_data:
        fresh = [
            e
            for e in facts.data_events
            if e.get("data_version") and e["data_version"] != champion_data
        ]
        if fresh:
            versions = ", ".join(_short(e["data_version"]) for e in fresh[:3])
            rows = sum(int(e.get("rows") or 0) for e in fresh)
            found.append(("new_data", f"{len(fresh)} new data version(s) {versions} ({rows} rows)"))
    if cfg.retrain.on_drift:
        for event in facts.drift_events[:3]:
            share = event.get("drift_share")
            what = one_line(event.get("reason") or "drift", 120)
            figure = (
                f" (drift share {share})" if share is not None and str(share) not in what else ""
            )
            text = what if what.startswith("drift") else f"drift: {what}"
            found.append(("drift", f"{text}{figure}"))
    return found


def _merge(triggers: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """One entry per trigger name (the event's wording first), order kept."""
    seen: dict[str, tuple[str, str]] = {}
    for name, text in triggers:
        seen.setdefault(name, (name, text))
    return list(seen.values())


def last_retrain(history: Sequence[Decision]) -> Decision | None:
    """The latest *automatic* retrain: the cooldown limits what events and schedules start; a
    run started by hand neither waits for it nor starts it."""
    return next((d for d in reversed(history) if d.retrain and MANUAL not in d.triggers), None)


def deferred_drift(history: Sequence[Decision]) -> list[str]:
    """Drift reasons of decisions skipped for the cooldown since the latest retrain."""
    reasons: list[str] = []
    for d in reversed(history):
        if d.retrain:
            break
        if "cooldown" in d.figures:
            reasons += [r for r in d.figures.get("drift", []) if r not in reasons]
    return reasons


def _figures(cfg: PipelineConfig, facts: Facts) -> dict[str, Any]:
    champ = facts.champion
    figures: dict[str, Any] = {
        "run_type": facts.run_type,
        "champion_version": champ.version if champ else None,
        "champion_data_version": champ.data_version if champ else None,
        "newest_data_version": facts.newest_data_version,
        "training_config_hash": facts.training_config_hash,
        "champion_training_config_hash": champ.training_config_hash if champ else None,
        "trainer_code_hash": facts.trainer_code_hash,
        "champion_trainer_code_hash": champ.trainer_code_hash if champ else None,
    }
    if facts.data_events:
        figures["event_data_versions"] = [e.get("data_version") for e in facts.data_events]
    if facts.drift_events:
        figures["drift_share"] = [e.get("drift_share") for e in facts.drift_events]
    return figures


def decide(
    cfg: PipelineConfig,
    facts: Facts,
    history: Sequence[Decision],
    *,
    run_id: str,
    now: datetime | None = None,
) -> Decision:
    """The decision of one run (see the module doc); ``history``: the pipeline's earlier
    decisions, oldest first. Pure: nothing is written."""
    now = now or datetime.now(UTC)
    figures = _figures(cfg, facts)
    triggers = _merge(_event_triggers(cfg, facts) + _standing_triggers(facts))
    deferred = deferred_drift(history) if cfg.retrain.on_drift else []
    if deferred and not any(name == "drift" for name, _ in triggers):
        triggers.append(("drift", f"deferred drift: {deferred[0]}"))
    drift = [text for name, text in triggers if name == "drift"]
    if drift:
        figures["drift"] = drift

    def made(decision: str, names: list[str], reason: str) -> Decision:
        return Decision(now.isoformat(), cfg.name, run_id, decision, names, reason, figures)

    if facts.run_type == MANUAL:
        names = [MANUAL] + [n for n, _ in triggers]
        also = "; ".join(text for _, text in triggers)
        return made(
            RETRAIN, names, "started by hand (exempt from cooldown)" + (f"; {also}" if also else "")
        )
    if facts.newest_data_version is None:
        return made(
            SKIP,
            [n for n, _ in triggers],
            "no validated data yet: nothing to train on (the ingest DAG or "
            f"`mlplatform run {cfg.name} --data URI` brings the first batch)",
        )
    if not triggers:
        champ = facts.champion
        assert champ is not None  # no champion is a trigger
        return made(
            SKIP,
            [],
            f"nothing new: champion v{champ.version} was trained on the newest validated data "
            f"{_short(champ.data_version)}; training config and trainer code unchanged",
        )
    names = [n for n, _ in triggers]
    why = "; ".join(text for _, text in triggers)
    hours = cfg.monitoring.cooldown_hours
    last = last_retrain(history)
    if last is not None and hours > 0:
        since = now - datetime.fromisoformat(last.time)
        if since < timedelta(hours=hours):
            until = datetime.fromisoformat(last.time) + timedelta(hours=hours)
            figures["cooldown"] = {
                "hours": hours,
                "last_retrain": last.time,
                "last_retrain_run": last.run_id,
                "until": until.isoformat(),
            }
            return made(
                SKIP,
                names,
                f"cooldown: last retrain {since.total_seconds() / 3600:.1f} h ago (run "
                f"{last.run_id}; monitoring.cooldown_hours={hours}), next after "
                f"{until.strftime('%Y-%m-%d %H:%M UTC')}; deferred: {why}",
            )
    return made(RETRAIN, names, why)


def champion_of(settings: Settings, model_name: str) -> Champion | None:
    """The champion version of ``model_name`` in MLflow with its lineage tags, or None."""
    from mlplatform.stages.registry import CHAMPION, alias_version, client

    version = alias_version(settings, model_name, CHAMPION)
    if version is None:
        return None
    tags = client(settings).get_model_version(model_name, str(version)).tags or {}
    return Champion(
        version=version,
        data_version=tags.get("data_version"),
        training_config_hash=tags.get("training_config_hash"),
        trainer_code_hash=tags.get("trainer_code_hash"),
    )


# ------------------------------------------------------------------------------ the log


def log_path(settings: Settings, pipeline: str) -> Path:
    return settings.home_dir / "runs" / pipeline / LOG_NAME


def read(settings: Settings, pipeline: str) -> list[Decision]:
    """The pipeline's decisions, oldest first (unreadable lines skipped)."""
    return jsonl_log.read(log_path(settings, pipeline), Decision)


def find(settings: Settings, pipeline: str, run_id: str) -> Decision | None:
    """The decision recorded for ``run_id``, if any."""
    return next((d for d in reversed(read(settings, pipeline)) if d.run_id == run_id), None)


def record(settings: Settings, decision: Decision) -> None:
    """Append ``decision`` to its pipeline's decisions log (one line, flushed and synced)."""
    jsonl_log.append(log_path(settings, decision.pipeline), decision)


def decide_and_record(
    settings: Settings,
    cfg: PipelineConfig,
    facts: Facts,
    *,
    run_id: str,
    now: datetime | None = None,
) -> tuple[Decision, bool]:
    """:func:`decide` against the log and :func:`record` it; ``(decision, new)``. A run that
    already decided (a retried task) gets its recorded decision back (``new`` False)."""
    history = read(settings, cfg.name)
    earlier = next((d for d in reversed(history) if d.run_id == run_id), None)
    if earlier is not None:
        return earlier, False
    decision = decide(cfg, facts, history, run_id=run_id, now=now)
    record(settings, decision)
    return decision, True


def status_lines(settings: Settings, pipeline: str, limit: int = STATUS_DECISIONS) -> list[str]:
    """``mlplatform status`` lines: the latest decisions, newest first."""
    latest = read(settings, pipeline)[-limit:]
    if not latest:
        return []
    lines = [f"  retrain decisions of {pipeline} (newest first; {log_path(settings, pipeline)}):"]
    for d in reversed(latest):
        when = d.time[:16].replace("T", " ")
        lines.append(f"    {when}  {d.run_id}  {d.summary()}")
    return lines


def model_status_lines(settings: Settings, model: str, limit: int = STATUS_DECISIONS) -> list[str]:
    """:func:`status_lines` of every pipeline that serves ``model`` (``serving.model_name``; a
    pipeline of that name when no valid config names it)."""
    from mlplatform.config import load_pipelines, pipeline_files

    files = load_pipelines(pipeline_files(settings.pipelines_dir))
    names = [f.config.name for f in files if f.config and f.config.serving.model_name == model]
    return [line for name in names or [model] for line in status_lines(settings, name, limit)]
