"""DecideOperator: whether this run of the train DAG retrains, and why (:mod:`mlplatform.decisions`).

Right after ``start_run`` (under the pipeline lease), ``decide`` gathers its run's facts: how the
run started (Airflow's run type), the asset events that triggered it (data: ``data_version``,
``rows``; drift: ``reason``, ``drift_share``), the champion's lineage tags, the newest validated
data version, the training config hash and the trainer code hash. It records the decision in the
decisions log, logs its one summary line, sends the ``retrain_decision`` alert, and

* retrain: returns the decision (XCom: ``decision``, ``triggers``, ``reason``, ``summary``);
* skip (nothing new, or inside the cooldown): the task is skipped with the summary line as the
  reason, so is every stage after it; ``end_run`` (the teardown) still gives the lease back.

The summary line also becomes the Airflow run's note: a task cannot write its run's note in
Airflow 3 (the task SDK's execution API has no such call and tasks have no DB access), so the
platform's listener (``plugins/decision_notes.py``) sets it when the run ends.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from operators.base import PlatformOperator

if TYPE_CHECKING:
    from mlplatform.config import PipelineConfig
    from mlplatform.settings import Settings


def triggering_events(context: Any, pipeline: str) -> tuple[list[dict], list[dict]]:
    """``(data events, drift events)``: the ``extra`` of the pipeline's asset events that
    triggered this run (with ``timestamp`` and ``source_run_id`` added)."""
    from mlplatform.assets import data_asset_name, drift_asset_name

    accessor = context.get("triggering_asset_events") or {}
    data: list[dict] = []
    drift: list[dict] = []
    for asset in accessor:
        name = str(getattr(asset, "name", ""))
        target = {data_asset_name(pipeline): data, drift_asset_name(pipeline): drift}.get(name)
        if target is None:
            continue
        for event in accessor[asset]:
            extra = dict(event.extra or {})
            extra.setdefault("timestamp", event.timestamp.isoformat())
            extra.setdefault("source_run_id", event.source_run_id)
            target.append(extra)
    return data, drift


class DecideOperator(PlatformOperator):
    """Decide retrain or skip for this run (see the module doc)."""

    stage = "decide"
    ui_color = "#fff6d5"

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("retries", 1)
        super().__init__(**kwargs)

    def run_stage(
        self, cfg: PipelineConfig, out_dir: Path, settings: Settings, context: Any
    ) -> Mapping[str, Any]:
        from mlplatform import alerts, decisions
        from mlplatform.history import newest_validated
        from mlplatform.lineage import trainer_code_hash, training_config_hash
        from mlplatform.stages import NothingToDo

        data_events, drift_events = triggering_events(context, cfg.name)
        newest = newest_validated(cfg, settings)
        facts = decisions.Facts(
            run_type=str(
                getattr(context["dag_run"].run_type, "value", context["dag_run"].run_type)
            ),
            champion=decisions.champion_of(settings, cfg.serving.model_name),
            newest_data_version=newest.data_version if newest else None,
            training_config_hash=training_config_hash(cfg),
            trainer_code_hash=trainer_code_hash(settings.repo_root),
            data_events=data_events,
            drift_events=drift_events,
        )
        decision, new = decisions.decide_and_record(
            settings, cfg, facts, run_id=self.platform_run_id(context)
        )
        line = decision.summary()
        self.log.info("decision: %s", line)
        if new:
            from mlplatform import audit

            audit.record(
                settings,
                cfg.name,
                "retrain_decision",
                actor=audit.actor_from_context(context),
                reason=line,
                model=cfg.serving.model_name,
                run_id=decision.run_id,
                decision=decision.decision,
                triggers=decision.triggers,
            )
            alerts.send(
                cfg,
                "retrain_decision",
                line,
                decision=decision.decision,
                triggers=", ".join(decision.triggers) or "none",
                run_id=decision.run_id,
                champion_version=facts.champion.version if facts.champion else None,
                newest_data_version=facts.newest_data_version,
            )
        if not decision.retrain:
            raise NothingToDo(line)
        return {
            "decision": decision.decision,
            "triggers": decision.triggers,
            "reason": decision.reason,
            "summary": line,
        }
