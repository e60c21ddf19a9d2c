"""A training run's note: the decision, then data version, rows, metric, gate decision and
served version, from the stage summaries the run wrote."""

from __future__ import annotations

from mlplatform.run_notes import run_note
from mlplatform.settings import get_settings
from mlplatform.storage import run_key, stage_dir, write_summary

RUN = "manual__2026-11-28T10:00:00+00:00"
INGEST = {"data_version": "76c1c7e0125660de86fc0bdb2e8b6771", "rows": 1500}
GATE = {
    "metric": "auc",
    "challenger_version": 2,
    "challenger": 0.8311,
    "champion_version": 1,
    "champion": 0.829,
    "holdout_rows": 300,
    "slices": {},
    "decision": "promote",
}


def _write(stages: dict) -> None:
    settings = get_settings()
    for stage, outputs in stages.items():
        out = stage_dir(settings.storage, "demo", run_key(RUN), stage)
        write_summary(out, stage, 1.0, outputs)


def test_promoted_run_note(mlp_home):
    _write(
        {
            "ingest": INGEST,
            "training_set": {"rows": 1450},
            "gate": GATE,
            "promote": {"served_version": 2},
            "end_run": {},
        }
    )
    note = run_note(get_settings(), "demo", RUN, "retrain: new data 76c1c7e0")
    assert note.splitlines() == [
        "retrain: new data 76c1c7e0",
        "- outcome: promoted",
        "- data version `76c1c7e0125660de86fc0bdb2e8b6771` (1450 rows)",
        "- auc: challenger v2 0.8311 vs champion v1 0.829",
        "- gate: promote",
        "- served version: 2",
    ]


def test_refused_run_note_keeps_the_served_version(mlp_home):
    from serving import layout

    stand_in = mlp_home / "m"
    stand_in.mkdir()
    (stand_in / "saved_model.pb").write_bytes(b"stand-in")
    layout.publish_version(get_settings().models_dir, "demo", 1, stand_in)
    layout.set_label(get_settings().models_dir, "demo", "stable", 1)
    refused = "gate refused demo v2: auc=0.6000 is past the floor 0.7 on 300 hold-out rows"
    _write(
        {
            "ingest": INGEST,
            "train": {"metrics": {"auc": 0.6, "epochs": 3}},
            "gate": {"skipped": refused},
            "end_run": {},
        }
    )
    note = run_note(get_settings(), "demo", RUN, None)
    assert note.splitlines() == [
        f"- outcome: not promoted ({refused})",
        "- data version `76c1c7e0125660de86fc0bdb2e8b6771` (1500 rows)",
        "- auc 0.6000",
        f"- gate: refused: {refused}",
        "- served version: 1 (unchanged)",
    ]


def test_a_run_that_did_not_retrain_is_its_decision(mlp_home):
    _write({"decide": {"skipped": "skip: cooldown"}, "end_run": {}})
    assert run_note(get_settings(), "demo", RUN, "skip: cooldown") == "skip: cooldown"
    assert run_note(get_settings(), "demo", "manual__never", None) is None
