"""Continuous-training triggers: retrain decisions, cooldown, schedules, the ingest DAG.

Fast: the decision logic (each trigger, cooldown, manual exemption, skip reasons, the log) and the
DAGs' structure (schedules from the ``retrain`` section, the ingest DAG and its outlet).
Slow (real Airflow runs of the ingest and train DAGs, Great Expectations, Feast, DVC, MLflow, no
training): ``test_landing_ingest_and_scheduled_decisions``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from mlplatform import decisions
from mlplatform.config import parse_pipeline
from mlplatform.decisions import Champion, Decision, Facts
from tests.conftest import REPO

# the demo pipeline without its landing source, retraining on new data and on drift: each test
# adds what it needs
DEMO = re.sub(
    r"\n  uri: .*\n  schedule: .*\n", "\n", (REPO / "pipelines" / "demo.yaml").read_text(), count=1
).replace("on_new_data: false", "on_new_data: true")
LANDING = "  uri: {root}/{{{{ data_interval_start | ds }}}}/*.csv\n  format: csv"
NOW = datetime(2026, 3, 10, 12, tzinfo=UTC)
CONFIG_HASH, CODE_HASH = "c" * 16, "d" * 16


def config(text: str = DEMO, **replace: str):
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    return parse_pipeline(text)


def facts(run_type: str = "scheduled", champion: Champion | None = None, **kw) -> Facts:
    champion = champion or Champion(1, "v-old", CONFIG_HASH, CODE_HASH)
    base = {
        "newest_data_version": champion.data_version,
        "training_config_hash": CONFIG_HASH,
        "trainer_code_hash": CODE_HASH,
    }
    return Facts(run_type=run_type, champion=champion, **{**base, **kw})


def retrain_at(when: datetime, run_id: str = "earlier") -> Decision:
    return Decision(when.isoformat(), "demo", run_id, "retrain", ["new_data"], "earlier", {})


# ------------------------------------------------------------------------------ decisions


def test_scheduled_check_with_nothing_new_skips_with_the_reason():
    d = decisions.decide(config(), facts(), [], run_id="r1", now=NOW)
    assert (d.decision, d.triggers) == ("skip", [])
    assert d.summary() == (
        "skip: nothing new: champion v1 was trained on the newest validated data v-old; "
        "training config and trainer code unchanged"
    )
    assert d.figures["champion_version"] == 1 and d.figures["newest_data_version"] == "v-old"


@pytest.mark.parametrize(
    ("changes", "trigger", "wording"),
    [
        (
            {"newest_data_version": "v-new"},
            "new_data",
            "newest validated data v-new is not champion v1's v-old",
        ),  # fmt: skip
        (
            {"training_config_hash": "e" * 16},
            "config",
            f"training config hash {'e' * 16} is not champion v1's {CONFIG_HASH}",
        ),  # fmt: skip
        (
            {"trainer_code_hash": "f" * 16},
            "trainer_code",
            f"trainer code hash {'f' * 16} is not champion v1's {CODE_HASH}",
        ),  # fmt: skip
    ],
)
def test_each_standing_trigger_retrains_and_names_its_figure(changes, trigger, wording):
    d = decisions.decide(config(), facts(**changes), [], run_id="r", now=NOW)
    assert d.decision == "retrain" and d.triggers == [trigger]
    assert d.reason == wording


def test_no_champion_retrains_and_no_validated_data_skips():
    no_champion = Facts("scheduled", None, "v1", CONFIG_HASH, CODE_HASH)
    d = decisions.decide(config(), no_champion, [], run_id="r", now=NOW)
    assert (d.decision, d.triggers, d.reason) == ("retrain", ["no_champion"], "no champion yet")
    nothing = Facts("scheduled", None, None, CONFIG_HASH, CODE_HASH)
    d = decisions.decide(config(), nothing, [], run_id="r", now=NOW)
    assert d.decision == "skip" and d.reason.startswith("no validated data yet")


def test_a_champion_without_hash_tags_is_not_a_config_or_code_trigger():
    old = Champion(1, "v-old", None, None)
    d = decisions.decide(config(), facts(champion=old), [], run_id="r", now=NOW)
    assert d.decision == "skip"


def test_data_events_trigger_only_for_versions_the_champion_lacks():
    cfg = config()
    same = facts("asset_triggered", data_events=[{"data_version": "v-old", "rows": 10}])
    assert decisions.decide(cfg, same, [], run_id="r", now=NOW).decision == "skip"
    fresh = facts(
        "asset_triggered",
        newest_data_version="v-new",
        data_events=[{"data_version": "v-new", "rows": 800}],
    )
    d = decisions.decide(cfg, fresh, [], run_id="r", now=NOW)
    assert d.decision == "retrain" and d.triggers == ["new_data"]
    assert d.reason == "1 new data version(s) v-new (800 rows)"  # the event's wording wins
    assert d.figures["event_data_versions"] == ["v-new"]


def test_drift_event_names_reason_and_share_and_on_drift_false_ignores_it():
    event = {"reason": "5 of 6 features drifted", "drift_share": 0.83}
    d = decisions.decide(config(), facts("asset_triggered", drift_events=[event]), [], run_id="r", now=NOW)  # fmt: skip
    assert d.decision == "retrain" and d.triggers == ["drift"]
    assert d.reason == "drift: 5 of 6 features drifted (drift share 0.83)"
    assert d.figures["drift_share"] == [0.83]
    off = config(**{"on_drift: true": "on_drift: false"})
    assert decisions.decide(off, facts("asset_triggered", drift_events=[event]), [], run_id="r", now=NOW).decision == "skip"  # fmt: skip


def test_cooldown_allows_one_retrain_whatever_the_number_of_events():
    cfg = config()  # monitoring.cooldown_hours: 24
    history: list[Decision] = []
    event = {"reason": "drift", "drift_share": 0.5}
    outcomes = []
    for i in range(10):  # ten drift events within 9 hours
        f = facts("asset_triggered", drift_events=[event], newest_data_version=f"v{i}")
        d = decisions.decide(cfg, f, history, run_id=f"r{i}", now=NOW + timedelta(hours=i))
        history.append(d)
        outcomes.append(d.decision)
    assert outcomes == ["retrain"] + ["skip"] * 9
    assert history[1].reason.startswith("cooldown: last retrain 1.0 h ago (run r0; monitoring.cooldown_hours=24)")  # fmt: skip
    assert "deferred: drift (drift share 0.5)" in history[1].reason
    assert history[1].figures["cooldown"]["until"] == (NOW + timedelta(hours=24)).isoformat()
    # after the cooldown a plain scheduled check still names the deferred drift
    later = decisions.decide(cfg, facts(), history, run_id="r-late", now=NOW + timedelta(hours=25))
    assert later.decision == "retrain" and later.triggers == ["drift"]
    assert later.reason == "deferred drift: drift (drift share 0.5)"


def test_cooldown_zero_never_blocks():
    cfg = config(**{"cooldown_hours: 24": "cooldown_hours: 0"})
    f = facts(newest_data_version="v-new")
    d = decisions.decide(cfg, f, [retrain_at(NOW - timedelta(minutes=1))], run_id="r", now=NOW)
    assert d.decision == "retrain"


def test_manual_runs_neither_wait_for_the_cooldown_nor_start_one():
    cfg = config()
    recent = [retrain_at(NOW - timedelta(hours=1))]
    manual = decisions.decide(cfg, facts("manual"), recent, run_id="m", now=NOW)
    assert manual.decision == "retrain" and manual.triggers == ["manual"]
    assert manual.reason == "started by hand (exempt from cooldown)"
    # the cooldown still runs from the automatic retrain an hour before the manual one
    inside = decisions.decide(
        cfg, facts(newest_data_version="v-new"), [*recent, manual], run_id="s", now=NOW
    )
    assert inside.decision == "skip" and "run earlier" in inside.reason
    # a manual retrain alone starts no cooldown: the next automatic trigger retrains
    after = decisions.decide(
        cfg, facts(newest_data_version="v-new"), [manual], run_id="s", now=NOW + timedelta(hours=2)
    )
    assert after.decision == "retrain" and after.triggers == ["new_data"]


def test_the_log_records_each_decision_once_and_status_prints_them(mlp_home):
    from mlplatform.settings import get_settings

    settings, cfg = get_settings(), config()
    first, new = decisions.decide_and_record(settings, cfg, facts(), run_id="r1", now=NOW)
    assert new and first.decision == "skip"
    # a retried decide of the same run gets the recorded decision back, nothing appended
    again, new = decisions.decide_and_record(
        settings, cfg, facts(newest_data_version="v-new"), run_id="r1", now=NOW
    )
    assert not new and again == first
    second, _ = decisions.decide_and_record(
        settings, cfg, facts(newest_data_version="v-new"), run_id="r2", now=NOW
    )
    lines = decisions.log_path(settings, "demo").read_text().splitlines()
    assert [json.loads(x)["run_id"] for x in lines] == ["r1", "r2"]
    assert json.loads(lines[1])["figures"]["newest_data_version"] == "v-new"
    status = decisions.status_lines(settings, "demo")
    assert status[1] == f"    2026-03-10 12:00  r2  {second.summary()}"
    assert status[2].endswith(first.summary())


def test_training_config_hash_ignores_what_does_not_change_the_model():
    from mlplatform.lineage import training_config_hash

    base = training_config_hash(config())
    same = {
        "drift_share: 0.3": "drift_share: 0.4",
        "cooldown_hours: 24": "cooldown_hours: 1",
        "min: 0.70": "min: 0.8",
        "  model_name: demo": "  model_name: other",
        'schedule: "@weekly"': 'schedule: "@daily"',
    }
    for old, new in same.items():
        assert training_config_hash(config(**{old: new})) == base, old
    for old, new in {"epochs: 4": "epochs: 5", "holdout_fraction: 0.2": "holdout_fraction: 0.3",
                     "  suite: demo_raw": "  suite: other"}.items():  # fmt: skip
        assert training_config_hash(config(**{old: new})) != base, old
    windowed = config(**{"  on_drift: true": "  on_drift: true\n  window_days: 30"})
    assert training_config_hash(windowed) != base


# ------------------------------------------------------------------------------ DAGs


def _asset_names(condition) -> set[str]:
    objects = getattr(condition, "objects", None)
    if objects is None:
        return {condition.name}
    return {n for o in objects for n in _asset_names(o)}


def test_train_schedule_follows_the_retrain_section(tmp_path):
    from airflow.sdk import Asset, AssetOrTimeSchedule

    from mlplatform.dag_factory import train_schedule

    landing = LANDING.format(root=tmp_path)
    with_uri = DEMO.replace("  format: csv", landing)
    both = train_schedule(config(with_uri))
    assert isinstance(both, AssetOrTimeSchedule)
    assert _asset_names(both.asset_condition) == {"mlp_demo_data", "mlp_demo_drift"}
    assert both.timetable.expression == "0 0 * * 0"  # @weekly
    # no landing source: no ingest DAG emits the data asset, so only drift (and the cron)
    assert _asset_names(train_schedule(config()).asset_condition) == {"mlp_demo_drift"}
    no_cron = train_schedule(config(with_uri, **{'schedule: "@weekly"': "schedule: null"}))
    assert _asset_names(no_cron) == {"mlp_demo_data", "mlp_demo_drift"}
    drift_only = config(
        **{'schedule: "@weekly"': "schedule: null", "on_new_data: true": "on_new_data: false"}
    )
    assert isinstance(train_schedule(drift_only), Asset)
    cron_only = config(**{"on_drift: true": "on_drift: false"})
    assert train_schedule(cron_only) == "@weekly"
    nothing = config(**{'schedule: "@weekly"': "schedule: null", "on_drift: true": "on_drift: false"})  # fmt: skip
    assert train_schedule(nothing) is None


def test_once_cannot_be_combined_with_assets():
    from mlplatform.config import ConfigError
    from mlplatform.dag_factory import train_schedule

    with pytest.raises(ConfigError, match="retrain.schedule '@once' cannot be combined"):
        train_schedule(config(**{'schedule: "@weekly"': 'schedule: "@once"'}))


def test_train_dag_decides_first_and_ingest_dag_only_with_a_landing_source(tmp_path, mlp_home):
    from mlplatform.dag_factory import build_pipeline_dags

    ids = [d.dag_id for d in build_pipeline_dags(config())]
    assert "mlp_demo_train" in ids and "mlp_demo_ingest" not in ids
    landing = config(DEMO.replace("  format: csv", LANDING.format(root=tmp_path)))
    dags = {d.dag_id: d for d in build_pipeline_dags(landing)}
    train, ingest = dags["mlp_demo_train"], dags["mlp_demo_ingest"]
    assert train.get_task("decide").upstream_task_ids == {"start_run"}
    assert train.get_task("ingest").upstream_task_ids == {"decide"}
    assert train.params["data_uri"] == ""
    assert ingest.dag_id == "mlp_demo_ingest"
    assert set(ingest.task_ids) == {"start_run", "ingest", "validate", "features", "publish", "end_run"}  # fmt: skip
    assert ingest.get_task("ingest").source_uri == f"{tmp_path}/{{{{ data_interval_start | ds }}}}/*.csv"  # fmt: skip
    assert ingest.get_task("ingest").landing and ingest.get_task("ingest").run_scope == "ingest"
    assert [o.name for o in ingest.get_task("publish").outlets] == ["mlp_demo_data"]
    assert ingest.get_task("end_run").is_teardown
    from airflow.sdk import CronDataIntervalTimetable

    assert ingest.timetable == CronDataIntervalTimetable("@daily", "UTC")  # data intervals


def test_platform_run_ids_of_two_dags_never_collide():
    from operators.run_control import split_run_id

    assert split_run_id("ingest__scheduled__2026-03-02T00:00:00+00:00") == ("ingest", "scheduled__2026-03-02T00:00:00+00:00")  # fmt: skip
    assert split_run_id("scheduled__2026-03-02T00:00:00+00:00") == ("", "scheduled__2026-03-02T00:00:00+00:00")  # fmt: skip
    assert split_run_id("manual__x") == ("", "manual__x")


def test_a_landing_interval_without_files_is_no_batch(tmp_path, mlp_home):
    from mlplatform.settings import get_settings
    from mlplatform.sources import NoBatch, resolve

    cfg = config()
    for uri in (f"{tmp_path}/2026-03-01/*.csv", f"{tmp_path}/2026-03-01/", f"{tmp_path}/none.csv"):
        with pytest.raises(NoBatch):
            resolve(uri, cfg, get_settings(), tmp_path / "staging")


# ------------------------------------------------------------------------------ slow: real runs


def _dag_runs(home: Path, pipelines: Path, *runs: list[str], webhook: str = "") -> list[dict]:
    """Each of ``runs`` (a DAG id and its ``tests.dag_runs`` options) one after the other in one
    fresh process (``--then``); their reports in order."""
    env = {**os.environ, "MLP_HOME": str(home), "MLP_PIPELINES_PATH": str(pipelines)}
    env["MLP_ALERT_WEBHOOK_URL"] = webhook
    for key in [k for k in env if k.startswith("AIRFLOW")]:
        env.pop(key)
    args = [arg for i, run in enumerate(runs) for arg in ([] if i == 0 else ["--then"]) + run]
    out = subprocess.run(
        [sys.executable, "-m", "tests.dag_runs", *args],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=900,
    )  # fmt: skip
    lines = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
    assert out.returncode == 0 and len(lines) == len(runs), (out.stdout + out.stderr)[-4000:]
    return [json.loads(line[len("RESULT ") :]) for line in lines]


def _batch(landing: Path, day: str, seed: int) -> None:
    from mlplatform import datagen

    end = datetime.fromisoformat(day).replace(hour=23, tzinfo=UTC)
    datagen.write(datagen.generate(600, seed=seed, end=end), landing / day / "batch.csv")


@contextlib.contextmanager
def _webhook() -> Iterator[tuple[str, list[dict]]]:
    """A local HTTP endpoint that records the JSON bodies POSTed to it (an alert webhook)."""
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/hook", received
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.slow
def test_landing_ingest_and_scheduled_decisions(mlp_home, pipelines_dir, tmp_path, monkeypatch):
    from mlplatform.config import load_pipeline
    from mlplatform.history import newest_validated
    from mlplatform.lineage import trainer_code_hash, training_config_hash
    from mlplatform.settings import get_settings
    from mlplatform.stages.ingest import reuse_newest_validated
    from mlplatform.stages.registry import client
    from mlplatform.storage import run_key

    landing = tmp_path / "landing"
    cfg_path = pipelines_dir / "demo.yaml"
    cfg_path.write_text(DEMO.replace("  format: csv", LANDING.format(root=landing)))
    _batch(landing, "2026-03-01", seed=1)

    # 1. the interval's batch is ingested, validated, stored and announced; 2. the same interval
    # again; 3. an interval with no batch (three runs, one after the other, in one process)
    first, again, empty = _dag_runs(
        mlp_home, pipelines_dir,
        ["mlp_demo_ingest", "--logical-date", "2026-03-02"],
        ["mlp_demo_ingest", "--logical-date", "2026-03-02"],
        ["mlp_demo_ingest", "--logical-date", "2026-03-05"],
    )  # fmt: skip
    assert first["state"] == "success" and first["tasks"]["publish"] == "success", first
    [event] = first["events"]
    assert event["asset"] == "mlp_demo_data"
    assert event["extra"]["rows"] == 600 and event["extra"]["run_id"] == first["run_id"]
    settings, cfg = get_settings(), load_pipeline(cfg_path)
    version = event["extra"]["data_version"]
    assert newest_validated(cfg, settings).data_version == version

    # 2. the same interval again: validated before, so not new: no event
    assert again["tasks"]["publish"] == "skipped" and again["events"] == []
    again_dir = Path(settings.storage) / "demo" / run_key(f"ingest__{again['run_id']}")
    summary = again_dir / "publish" / "summary.json"
    assert "was validated by an earlier run: not new" in json.loads(summary.read_text())["outputs"]["skipped"]  # fmt: skip

    # 3. an interval with no batch: skipped with the reason, not failed
    assert empty["state"] == "success" and empty["tasks"]["ingest"] == "skipped", empty
    assert empty["tasks"]["end_run"] == "success" and empty["events"] == []
    reasons = [
        json.loads(p.read_text())["outputs"].get("skipped", "")
        for p in Path(settings.storage).glob("demo/*/ingest/summary.json")
    ]
    assert any(r.startswith(f"no batch under {landing}/2026-03-04/*.csv for 2026-03-04T00:00:00+00:00/2026-03-05T00:00:00+00:00") for r in reasons), reasons  # fmt: skip

    # 4. a run without a batch hands on the newest validated batch (restored from DVC)
    monkeypatch.setenv("MLP_PIPELINES_PATH", str(pipelines_dir))
    reused = reuse_newest_validated(cfg, tmp_path / "reuse", settings)
    assert reused["reused"] is True and reused["data_version"] == version and reused["rows"] == 600

    # 5. a champion trained on that version with this config and code (tags as training sets them)
    c = client(settings)
    c.create_registered_model("demo")
    tags = {"data_version": version, "training_config_hash": training_config_hash(cfg),
            "trainer_code_hash": trainer_code_hash(settings.repo_root)}  # fmt: skip
    mv = c.create_model_version("demo", source=(tmp_path / "model").as_uri(), tags=tags)
    c.set_registered_model_alias("demo", "champion", mv.version)

    # 6. the weekly check: nothing new -> skipped with the reason, note and decisions log
    with _webhook() as (url, alerts):
        [check] = _dag_runs(mlp_home, pipelines_dir, ["mlp_demo_train", "--run-type", "scheduled", "--logical-date", "2026-03-08"], webhook=url)  # fmt: skip
    assert check["run_type"] == "scheduled" and check["state"] == "success"
    assert check["tasks"]["decide"] == "skipped" and check["tasks"]["ingest"] == "skipped"
    assert check["tasks"]["promote"] == "skipped" and check["tasks"]["end_run"] == "success"
    [logged] = decisions.read(settings, "demo")
    assert logged.run_id == check["run_id"] and logged.decision == "skip"
    assert check["note"] == logged.summary()
    assert logged.reason.startswith("nothing new: champion v1")
    [alert] = alerts  # the retrain_decision alert, with the decision's facts
    assert alert["mlplatform"]["event"] == "retrain_decision"
    assert alert["mlplatform"]["summary"] == logged.summary()
    assert alert["mlplatform"]["decision"] == "skip"
    assert alert["mlplatform"]["champion_version"] == 1
    from mlplatform import audit

    [entry] = audit.read(settings, "demo")  # the audit trail: who/what, why
    assert (entry.action, entry.actor, entry.run_id) == ("retrain_decision", "schedule", check["run_id"])  # fmt: skip
    assert entry.reason == logged.summary()

    # 7. a new batch is announced; with a retrain 1 h ago the asset-triggered run is in cooldown
    # (the retrain is recorded before the ingest run, which reads no decision)
    _batch(landing, "2026-03-08", seed=2)
    decisions.record(settings, retrain_at(datetime.now(UTC) - timedelta(hours=1), "scheduled__x"))
    second, triggered = _dag_runs(
        mlp_home, pipelines_dir,
        ["mlp_demo_ingest", "--logical-date", "2026-03-09"],
        ["mlp_demo_train", "--run-type", "asset_triggered", "--consume", "mlp_demo_data"],
    )  # fmt: skip
    new_version = second["events"][0]["extra"]["data_version"]
    assert triggered["tasks"]["decide"] == "skipped" and triggered["tasks"]["train"] == "skipped"
    last = decisions.read(settings, "demo")[-1]
    assert last.run_id == triggered["run_id"] and last.triggers == ["new_data"]
    assert sorted(last.figures["event_data_versions"]) == sorted([version, new_version])
    assert last.reason.startswith("cooldown: last retrain 1.0 h ago (run scheduled__x")
    assert f"deferred: 1 new data version(s) {new_version[:12]} (600 rows)" in last.reason
    assert triggered["note"] == last.summary()
    assert audit.read(settings, "demo")[-1].actor == "asset event mlp_demo_data"
    status = subprocess.run(
        [sys.executable, "-m", "mlplatform.cli", "status", "demo"], capture_output=True, text=True,
        cwd=REPO, env={**os.environ, "MLP_HOME": str(mlp_home)}, timeout=300,
    )  # fmt: skip
    assert f"{triggered['run_id']}  {last.summary()}" in status.stdout, (
        status.stdout + status.stderr
    )
