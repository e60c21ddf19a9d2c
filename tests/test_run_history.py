"""``mlplatform status NAME`` says what became of a pipeline's runs (issue 13, item 4).

The outcomes come from the stage summaries every run writes; these tests lay out run directories
as the operators write them (``write_summary``) and read them back through the command line.
"""

from __future__ import annotations

import os
import time

import pytest

from mlplatform import runs
from mlplatform.cli.main import main
from mlplatform.run_history import recent_runs
from mlplatform.settings import get_settings
from mlplatform.storage import to_path, write_summary

GATE = {"metric": "auc", "challenger": 0.81, "champion": 0.84}


def lay_out(storage, run: str, stages: dict[str, dict], age_s: float) -> None:
    """A run directory with one summary per stage, its start ``age_s`` seconds ago."""
    for stage, outputs in {"start_run": {"config_hash": "h"}, **stages}.items():
        directory = storage / "demo" / run / stage
        directory.mkdir(parents=True, exist_ok=True)
        write_summary(directory, stage, 0.1, outputs)
    marker = storage / "demo" / run / "start_run" / "summary.json"
    stamp = time.time() - age_s
    os.utime(marker, (stamp, stamp))


@pytest.fixture
def storage(mlp_home, pipelines_dir):
    return to_path(get_settings().storage)


def test_each_outcome_in_words_newest_first(storage):
    lay_out(
        storage,
        "manual__a",
        {
            "validate": {
                "failed": "validation failed: 2 of 9 expectations in suite 'demo_raw': expect_column_values_to_be_between(tenure_months): 40 value(s) outside [0, 120]"
            },
            "end_run": {"lease": "released"},
        },
        500,
    )
    lay_out(
        storage,
        "manual__b",
        {
            "gate": {
                "skipped": "gate refused demo v2: auc=0.6100 is past the floor 0.7 on 200 hold-out rows",
                **GATE,
            },
            "end_run": {},
        },
        400,
    )
    lay_out(
        storage, "manual__c", {"gate": GATE, "promote": {"served_version": 3}, "end_run": {}}, 300
    )
    lay_out(
        storage,
        "scheduled__d",
        {
            "decide": {
                "skipped": "skip: nothing new: champion v3 was trained on the newest validated data"
            },
            "end_run": {},
        },
        200,
    )
    lay_out(
        storage,
        "manual__e",
        {
            "ingest": {"data_version": "x"},
            "train": {"failed": "train: trainer exited with code 1: ValueError: bad"},
        },
        100,
    )
    lay_out(
        storage,
        "ingest__scheduled__f",
        {"ingest": {}, "publish": {"data_version": "abc"}, "end_run": {}},
        50,
    )
    found = [(r.run, r.kind, r.outcome, r.detail) for r in recent_runs(get_settings(), "demo", 10)]
    assert found == [
        ("ingest__scheduled__f", "ingest", "published", "data version abc"),
        (
            "manual__e",
            "train",
            "failed at train",
            "train: trainer exited with code 1: ValueError: bad",
        ),
        (
            "scheduled__d",
            "train",
            "no retrain",
            "skip: nothing new: champion v3 was trained on the newest validated data",
        ),
        (
            "manual__c",
            "train",
            "promoted",
            "served version 3; gate auc challenger=0.81 champion=0.84",
        ),
        (
            "manual__b",
            "train",
            "not promoted",
            "gate refused demo v2: auc=0.6100 is past the floor 0.7 on 200 hold-out rows",
        ),
        (
            "manual__a",
            "train",
            "validation failed",
            "2 of 9 expectations in suite 'demo_raw': expect_column_values_to_be_between(tenure_months): 40 value(s) outside [0, 120]",
        ),
    ]


def test_a_run_in_progress_and_a_dead_one(storage):
    settings = get_settings()
    lay_out(storage, "manual__dead", {"ingest": {}, "validate": {}}, 100)
    lay_out(storage, "manual__live", {"ingest": {}, "train": {}}, 10)
    runs.acquire(settings, "demo", "manual__live", wait_s=1, stale_after_s=600)
    try:
        found = {r.run: (r.outcome, r.detail) for r in recent_runs(settings, "demo")}
    finally:
        runs.release(settings, "demo", "manual__live")
    assert found == {
        "manual__live": ("running", "at train"),
        "manual__dead": (
            "did not finish",
            "last stage validate; its driver died or it was stopped",
        ),
    }


def test_status_of_a_pipeline_without_a_model_says_what_happened(storage, capsys):
    lay_out(
        storage,
        "manual__a",
        {
            "validate": {
                "failed": "validation failed: 1 of 9 expectations in suite 'demo_raw': expect_column_values_to_not_be_null(churned): 3 null(s)"
            },
            "end_run": {},
        },
        60,
    )
    assert main(["status", "demo"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "demo: no model registered yet"
    assert out[1].startswith("  last runs of demo (newest first; stage summaries under ")
    assert out[2].endswith(
        "train  manual__a  validation failed: 1 of 9 expectations in suite 'demo_raw': "
        "expect_column_values_to_not_be_null(churned): 3 null(s)"
    )


def test_status_of_an_unknown_name_is_a_usage_error(storage, capsys):
    assert main(["status", "nothing_here"]) == 2
    assert "no pipeline of that name" in capsys.readouterr().err
