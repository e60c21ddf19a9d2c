"""The note a training run carries in the Airflow UI (Airflow 3 run notes, Markdown).

The first line is the run's retrain decision (:meth:`mlplatform.decisions.Decision.summary`),
unchanged: a run that decided not to retrain says only that. A run that went further adds what
an operator of the platform asks first, read from the stage summaries the run wrote
(``<storage>/<pipeline>/<run>/<stage>/summary.json``, :mod:`mlplatform.run_history`):

* the outcome (promoted, not promoted, validation failed, failed at a stage);
* the data version and its rows (ingest; the training set's rows when it was built);
* the metric the gate judges, challenger against champion;
* the gate's decision (promote, or refused with the reason);
* the served version afterwards (the promoted one, else what the model base serves now).

Plain functions without Airflow: ``plugins/decision_notes.py`` sets the note when a run ends.
"""

from __future__ import annotations

from typing import Any

from mlplatform.run_history import outcome_of, read_run
from mlplatform.settings import Settings
from mlplatform.storage import run_key

#: Airflow keeps a run's note in a 1000-character column
MAX_NOTE = 1000


def _served_now(settings: Settings, pipeline: str, run_id: str) -> int | None:
    from mlplatform.runs import load_run_config
    from serving import layout

    try:
        cfg = load_run_config(settings, pipeline, run_key(run_id))
        return layout.served_version(settings.models_dir, cfg.serving.model_name)
    except Exception:  # noqa: BLE001 - a note never fails for a missing layout or config
        return None


def _gate_lines(stages: dict[str, dict[str, Any]]) -> list[str]:
    gate, train = stages.get("gate") or {}, stages.get("train") or {}
    if gate.get("metric"):
        champion = (
            f"champion v{gate['champion_version']} {gate['champion']}"
            if gate.get("champion") is not None
            else "no champion"
        )
        return [
            f"- {gate['metric']}: challenger v{gate['challenger_version']} "
            f"{gate['challenger']} vs {champion}",
            f"- gate: {gate.get('decision', 'promote')}",
        ]
    lines = []
    metrics = {k: v for k, v in (train.get("metrics") or {}).items() if isinstance(v, float)}
    if metrics:
        lines.append("- " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    if "skipped" in gate:
        lines.append(f"- gate: refused: {gate['skipped']}")
    return lines


def run_note(settings: Settings, pipeline: str, run_id: str, decision: str | None) -> str | None:
    """The note of training run ``run_id`` of ``pipeline`` (see the module doc), or None when
    there is nothing to say; ``decision``: the run's decision summary line."""
    stages = read_run(settings, pipeline, run_key(run_id))
    ingest = stages.get("ingest") or {}
    if not ingest.get("data_version"):  # no retrain (or no data): the decision is the note
        return decision
    outcome, detail = outcome_of(stages, holds_lease=False)
    lines = [decision] if decision else []
    lines.append(f"- outcome: {outcome}" + (f" ({detail})" if outcome != "promoted" else ""))
    rows = (stages.get("training_set") or {}).get("rows", ingest.get("rows"))
    lines.append(f"- data version `{ingest['data_version']}` ({rows} rows)")
    lines += _gate_lines(stages)
    promoted = (stages.get("promote") or {}).get("served_version")
    if promoted is not None:
        lines.append(f"- served version: {promoted}")
    else:
        served = _served_now(settings, pipeline, run_id)
        lines.append(f"- served version: {served if served is not None else 'none'} (unchanged)")
    note = "\n".join(lines)
    return note if len(note) <= MAX_NOTE else note[: MAX_NOTE - 1] + "…"
