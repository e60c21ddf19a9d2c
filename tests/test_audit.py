"""The audit trail (issue 14, item 3): one append-only log per pipeline, who/what, when, why."""

from __future__ import annotations

import json
from collections import namedtuple
from types import SimpleNamespace

import pytest

from mlplatform import audit
from mlplatform.settings import get_settings


def test_entries_append_in_order_and_a_torn_line_is_skipped(mlp_home):
    settings = get_settings()
    first = audit.record(settings, "demo", "promote", actor="user ada", reason="passed  the\ngate", model="demo", version=3, run_id="r1", previous_version=2)  # fmt: skip
    path = audit.log_path(settings, "demo")
    assert path == mlp_home / "runs" / "demo" / "audit.jsonl"
    with open(path, "a") as fh:
        fh.write('{"time": "2026-')  # a writer killed mid-line
    audit.record(settings, "demo", "rollback", actor="command line (root)", reason="bad", version=2)
    got = audit.read(settings, "demo")
    assert [(e.action, e.actor, e.version) for e in got] == [
        ("promote", "user ada", 3),
        ("rollback", "command line (root)", 2),
    ]
    assert got[0] == first and first.reason == "passed the gate"
    assert first.details == {"previous_version": 2}
    assert json.loads(path.read_text().splitlines()[0])["run_id"] == "r1"
    assert audit.read(settings, "other") == []


def test_an_entry_without_actor_or_with_an_unknown_action_is_refused(mlp_home):
    settings = get_settings()
    with pytest.raises(ValueError, match="unknown audit action 'delete'"):
        audit.record(settings, "demo", "delete", actor="user ada", reason="x")
    with pytest.raises(ValueError, match="needs an actor"):
        audit.record(settings, "demo", "promote", actor=" ", reason="x")
    assert not audit.log_path(settings, "demo").exists()


def _context(run_type: str, user: str | None = None, events: dict | None = None) -> dict:
    dag_run = SimpleNamespace(run_type=SimpleNamespace(value=run_type), triggering_user_name=user)
    return {"dag_run": dag_run, "triggering_asset_events": events or {}}


def test_the_actor_of_a_run(monkeypatch):
    monkeypatch.setattr(audit.getpass, "getuser", lambda: "ops")
    drift = namedtuple("Asset", "name")("mlp_demo_drift")
    assert audit.actor_from_context(_context("manual", "ada")) == "user ada"
    assert audit.actor_from_context(_context("scheduled")) == "schedule"
    assert (
        audit.actor_from_context(_context("asset_triggered", events={drift: []}))
        == "asset event mlp_demo_drift"
    )
    assert audit.actor_from_context(_context("manual", "dag_test")) == "command line (ops)"


def test_a_model_maps_to_its_pipeline(mlp_home):
    settings = get_settings()
    assert audit.pipeline_of_model(settings, "demo") == "demo"
    assert audit.pipeline_of_model(settings, "by_hand") == "by_hand"
