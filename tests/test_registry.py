"""Registry stages with real MLflow and real SavedModels: gate, infra validation, promote, rollback.

Models here are small hand-written ``tf.Module`` scorers with the platform's signature (raw demo
features by name -> ``score``), logged with MLflow's TensorFlow flavor exactly like the trainer does,
so each test controls how good, bad or broken the challenger is.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlplatform import datagen
from mlplatform.config import load_pipeline
from mlplatform.settings import get_settings
from mlplatform.stages import GateRefused
from mlplatform.stages.infra_validate import InfraValidationFailed, infra_validate
from mlplatform.stages.registry import alias_version, gate, promote, register, rollback
from mlplatform.stages.train import ensure_experiment
from tests.conftest import REPO

END = pd.Timestamp("2026-06-01", tz="UTC").to_pydatetime()


def _module(kind: str):
    """A scorer following datagen's true logit ('good'), noise ('bad'), or broken variants."""
    import tensorflow as tf

    spec = {
        n: tf.TensorSpec([None], tf.float32, name=n)
        for n in ("tenure_months", "monthly_charges", "support_calls", "usage_minutes")
    }
    spec |= {n: tf.TensorSpec([None], tf.string, name=n) for n in ("contract_type", "region")}

    class Scorer(tf.Module):
        @tf.function(input_signature=[spec])
        def serve(self, f):
            logit = (
                -1.4 + 0.55 * f["support_calls"] - 0.05 * f["tenure_months"] + 0.025 * (f["monthly_charges"] - 70.0)
                - 0.004 * (f["usage_minutes"] - 300.0)
                + tf.where(tf.equal(f["contract_type"], "month-to-month"), 1.3, tf.where(tf.equal(f["contract_type"], "one-year"), 0.2, -0.8))
            )  # fmt: skip
            score = tf.sigmoid(logit)
            if kind == "bad":
                score = tf.sigmoid(tf.sin(f["usage_minutes"] * 13.0))  # unrelated to the label
            if kind == "slice_broken":
                score = tf.where(tf.equal(f["region"], "south"), 1.0 - score, score)
            if kind == "nan":  # a model that broke on some inputs
                score = tf.where(f["support_calls"] > 3.0, float("nan"), score)
            if kind == "inf":
                score = tf.where(f["support_calls"] > 3.0, float("inf"), score)
            if kind == "wrong_shape":
                return {"score": tf.stack([score, score], axis=1)}
            return {"score": score}

    return Scorer()


def _register(cfg, settings, kind: str, tags: dict[str, str] | None = None) -> int:
    import mlflow
    import mlflow.tensorflow

    ensure_experiment(settings, cfg.name)
    module = _module(kind)
    with mlflow.start_run(
        experiment_id=mlflow.get_experiment_by_name(cfg.name).experiment_id
    ) as run:
        info = mlflow.tensorflow.log_model(
            module, name="model", saved_model_kwargs={"signatures": {"serving_default": module.serve.get_concrete_function()}},
            pip_requirements=["tensorflow"],
        )  # fmt: skip
    return int(
        register(
            cfg,
            f"models:/{info.model_id}",
            run.info.run_id,
            {"data_version": kind, **(tags or {})},
            settings,
        )["model_version"]
    )


@pytest.fixture
def env(mlp_home, tmp_path):
    cfg = load_pipeline(REPO / "pipelines" / "demo.yaml")
    settings = get_settings()
    holdout = tmp_path / "holdout.parquet"
    datagen.generate(1200, seed=5, end=END).to_parquet(holdout)
    return cfg, settings, holdout.as_uri(), tmp_path


def _ship(cfg, settings, version, holdout_uri, out):
    gate(cfg, version, holdout_uri, settings)
    validated = infra_validate(cfg, version, holdout_uri, out / f"infra{version}", settings)
    return promote(cfg, version, settings, candidate_dir=validated["candidate_dir"])


def test_first_model_needs_only_the_floor_and_a_worse_model_is_never_promoted(env):
    from serving import layout
    from serving.runtime import warmup

    cfg, settings, holdout, tmp = env
    cfg.gate.min = None  # the regression rule alone must stop the worse model
    v1 = _register(cfg, settings, "good")
    result = _ship(cfg, settings, v1, holdout, tmp)
    assert result["served_version"] == v1 and alias_version(settings, "demo", "champion") == v1
    records = warmup.read_warmup_file(settings.models_dir / "demo" / str(v1))
    assert len(records) == cfg.serving.warmup_requests
    inputs = records[0].predict_log.request.inputs
    assert set(inputs) == set(cfg.features.all)
    # TF Serving rejects a warm-up tensor whose dtype differs from the signature's (and then the load)
    from tensorflow.core.framework import types_pb2

    assert {inputs[c].dtype for c in cfg.features.numeric} == {types_pb2.DT_FLOAT}
    assert {inputs[c].dtype for c in cfg.features.categorical} == {types_pb2.DT_STRING}

    v2 = _register(cfg, settings, "bad")
    assert alias_version(settings, "demo", "challenger") == v2
    with pytest.raises(
        GateRefused,
        match=rf"gate refused demo v{v2}: auc=0\.\d+ vs champion v{v1} 0\.8\d+ regresses more than the allowed 0.02",
    ):
        gate(cfg, v2, holdout, settings)
    assert alias_version(settings, "demo", "champion") == v1
    assert layout.served_version(settings.models_dir, "demo") == v1
    assert layout.list_versions(settings.models_dir, "demo") == [v1]

    cfg.gate.min = 0.7
    with pytest.raises(GateRefused, match=r"is past the floor 0.7"):
        gate(cfg, v2, holdout, settings)


def test_a_slice_that_regresses_refuses_the_gate(env):
    cfg, settings, holdout, tmp = env
    v1 = _register(cfg, settings, "good")
    _ship(cfg, settings, v1, holdout, tmp)
    v2 = _register(cfg, settings, "slice_broken")
    cfg.gate.min, cfg.gate.max_regression = None, 0.25  # overall the broken slice costs less ...
    passed = gate(cfg, v2, holdout, settings)  # ... so without slices it passes
    assert passed["decision"] == "promote"
    cfg.gate.slices = ["region"]
    with pytest.raises(GateRefused, match=r"slice region=south: auc=0\.\d+ vs champion"):
        gate(cfg, v2, holdout, settings)


def test_a_metric_that_is_not_a_number_is_refused_never_promoted(env):
    from mlplatform.stages.registry import client

    cfg, settings, holdout, tmp = env
    v1 = _register(cfg, settings, "good")
    _ship(cfg, settings, v1, holdout, tmp)
    for kind in ("nan", "inf"):
        broken = _register(cfg, settings, kind)
        with pytest.raises(GateRefused) as err:
            gate(cfg, broken, holdout, settings)
        message = str(err.value)
        assert "\n" not in message
        assert f"gate refused demo v{broken}: auc=nan on 1200 hold-out rows: the model " in message
        assert "answered NaN or infinity for" in message and "never promoted" in message
        assert alias_version(settings, "demo", "champion") == v1

    # AUC on a hold-out of one class is undefined: refused with the reason, not a crash
    one_class = tmp / "one_class.parquet"
    frame = pd.read_parquet(holdout.removeprefix("file://"))
    frame[frame["churned"] == 0].to_parquet(one_class)
    with pytest.raises(GateRefused, match="the hold-out holds one class only"):
        gate(cfg, v1, one_class.as_uri(), settings)

    # a champion whose metric is not a number cannot be compared with: the floor decides
    client(settings).set_registered_model_alias("demo", "champion", str(broken))
    good = _register(cfg, settings, "good")
    passed = gate(cfg, good, holdout, settings)
    assert passed["decision"] == "promote" and passed["champion"] is None
    assert passed["champion_note"].startswith(f"champion v{broken}: auc is not a number")


def test_infra_validation_blocks_broken_and_slow_models(env):
    cfg, settings, holdout, tmp = env
    wrong = _register(cfg, settings, "wrong_shape")
    with pytest.raises(
        InfraValidationFailed, match="infra validation: each prediction must be one number"
    ):
        infra_validate(cfg, wrong, holdout, tmp / "a", settings)

    good = _register(cfg, settings, "good")
    cfg.serving.latency_budget_ms = 0.001
    with pytest.raises(
        InfraValidationFailed, match=r"p99 latency [\d.]+ ms exceeds the budget of 0.001 ms"
    ):
        infra_validate(cfg, good, holdout, tmp / "b", settings)

    cfg.serving.latency_budget_ms = 250
    corrupt = _register(cfg, settings, "good")
    store = Path(settings.artifact_uri.removeprefix("file://"))
    pbs = [p for p in store.rglob("saved_model.pb")]
    for pb in pbs:  # corrupt only the newest version's artifact
        if pb.stat().st_mtime == max(p.stat().st_mtime for p in pbs):
            pb.write_bytes(b"not a saved model")
    with pytest.raises(
        InfraValidationFailed, match=rf"demo v{corrupt} does not load in the server"
    ):
        infra_validate(cfg, corrupt, holdout, tmp / "c", settings)
    from serving import layout

    assert layout.list_versions(settings.models_dir, "demo") == []


def test_canary_then_promote_and_rollback_errors(env):
    from serving import layout

    cfg, settings, holdout, tmp = env
    v1 = _register(cfg, settings, "good")
    _ship(cfg, settings, v1, holdout, tmp)
    cfg.serving.canary = True
    v2 = _register(cfg, settings, "good")
    result = _ship(cfg, settings, v2, holdout, tmp)
    labels = layout.read_models_config(settings.models_dir)["demo"]["labels"]
    assert labels == {"stable": v1, "canary": v2} and result["served_version"] == v1
    assert (
        alias_version(settings, "demo", "champion") == v1
        and alias_version(settings, "demo", "canary") == v2
    )
    rollback("demo", settings, to_version=v2)  # explicit version: make the canary stable
    assert layout.read_models_config(settings.models_dir)["demo"]["labels"] == {"stable": v2}
    from mlplatform.stages import StageError

    with pytest.raises(StageError, match=r"demo v99 is not published"):
        rollback("demo", settings, to_version=99)
    rollback("demo", settings)
    with pytest.raises(StageError, match=rf"demo v{v1} is the oldest published version"):
        rollback("demo", settings)


def test_a_retrain_on_the_inputs_of_a_rolled_back_version_is_not_promoted_again(env):
    from serving import layout

    cfg, settings, holdout, tmp = env
    same = {"training_config_hash": "cfg-a", "trainer_code_hash": "code-a"}
    v1 = _register(cfg, settings, "good", {"data_version": "d1", **same})
    _ship(cfg, settings, v1, holdout, tmp)
    v2 = _register(cfg, settings, "good", {"data_version": "d2", **same})
    _ship(cfg, settings, v2, holdout, tmp)
    rollback("demo", settings)  # a person decided v2 must not serve
    assert layout.served_version(settings.models_dir, "demo") == v1

    v3 = _register(cfg, settings, "good", {"data_version": "d2", **same})  # the same retrain
    with pytest.raises(
        GateRefused,
        match=rf"gate refused demo v{v3}: it was trained on the same data, training config and "
        rf"trainer code as v{v2}, which was rolled back",
    ):
        gate(cfg, v3, holdout, settings)
    assert alias_version(settings, "demo", "champion") == v1
    assert layout.served_version(settings.models_dir, "demo") == v1

    # new data (or a changed config) makes a different model: judged as usual
    v4 = _register(cfg, settings, "good", {"data_version": "d3", **same})
    assert _ship(cfg, settings, v4, holdout, tmp)["served_version"] == v4
    # an identity not fully recorded (older versions lack training_config_hash) never matches
    v5 = _register(cfg, settings, "good", {"data_version": "d2", "trainer_code_hash": "code-a"})
    assert gate(cfg, v5, holdout, settings)["decision"] == "promote"


def test_twenty_promote_and_rollback_cycles_under_traffic_lose_no_request(env):
    import uvicorn

    from serving.client import PredictionClient
    from serving.server import create_app

    cfg, settings, holdout, tmp = env
    v1 = _register(cfg, settings, "good")
    _ship(cfg, settings, v1, holdout, tmp)
    v2 = _register(cfg, settings, "good")
    _ship(cfg, settings, v2, holdout, tmp)

    app = create_app(settings.models_dir, log_dir=None, poll_seconds=0.05)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    client = PredictionClient(f"http://127.0.0.1:{port}")
    client.wait_until_available("demo", timeout_s=60)
    rows = (
        datagen.generate(4, seed=1, end=END)
        .drop(columns=["customer_id", "event_time", "churned"])
        .to_dict("records")
    )

    stop, failures, seen, count = threading.Event(), [], set(), [0]

    def traffic():
        while not stop.is_set():
            try:
                result = client.predict("demo", rows)
                assert len(result.predictions) == 4
                seen.add(result.model_version)
                count[0] += 1
            except Exception as exc:  # every failure is recorded and fails the test
                failures.append(repr(exc))

    sender = threading.Thread(target=traffic)
    sender.start()
    rollback_seconds = []
    try:
        for _ in range(20):
            started = time.perf_counter()
            rollback("demo", settings)  # v2 -> v1
            rollback_seconds.append(time.perf_counter() - started)
            time.sleep(0.1)
            promote(cfg, v2, settings)  # v1 -> v2 (already published: a label move)
            time.sleep(0.1)
    finally:
        stop.set()
        sender.join(timeout=30)
        server.should_exit = True
        thread.join(timeout=30)
    assert failures == []
    assert count[0] > 40 and seen == {v1, v2}
    assert max(rollback_seconds) < 5, (
        rollback_seconds
    )  # "seconds", with wide margin on a loaded CI box
    assert alias_version(settings, "demo", "champion") == v2
    print(f"{count[0]} requests, rollback median {np.median(rollback_seconds) * 1000:.0f} ms")


def test_a_failed_promotion_keeps_the_served_version_and_champion(env):
    from mlplatform.stages import StageError
    from serving import layout

    cfg, settings, holdout, tmp = env
    v1 = _register(cfg, settings, "good")
    _ship(cfg, settings, v1, holdout, tmp)
    v2 = _register(cfg, settings, "good")
    empty = tmp / "not-a-model"
    empty.mkdir()
    with pytest.raises(StageError, match=rf"promote: demo v{v2} holds no SavedModel"):
        promote(cfg, v2, settings, candidate_dir=str(empty))
    assert layout.served_version(settings.models_dir, "demo") == v1
    assert layout.list_versions(settings.models_dir, "demo") == [v1]
    assert alias_version(settings, "demo", "champion") == v1
    assert not [p for p in (settings.models_dir / "demo").iterdir() if p.name.startswith(".tmp")]


def test_cli_rollback_and_status(env, monkeypatch):
    import socket

    from tests.cli_inprocess import run_cli

    with socket.socket() as sock:  # a port nobody serves on: no server to wait for
        sock.bind(("127.0.0.1", 0))
        monkeypatch.setenv("MLP_SERVING_PORT", str(sock.getsockname()[1]))
    cfg, settings, holdout, tmp = env
    v1 = _register(cfg, settings, "good")
    _ship(cfg, settings, v1, holdout, tmp)
    v2 = _register(cfg, settings, "good")
    _ship(cfg, settings, v2, holdout, tmp)

    def cli(*args):
        return run_cli(*args, cwd=REPO)

    status = cli("status", "demo")
    assert status.returncode == 0 and f"demo: served version {v2}" in status.stdout
    assert f"'champion': {v2}" in status.stdout
    back = cli("rollback", "demo", "--reason", "v2 answers slowly")
    assert back.returncode == 0, back.stderr
    from mlplatform import audit

    (entry,) = audit.read(settings, "demo")  # who, when, why: in the pipeline's audit trail
    assert (entry.action, entry.version, entry.reason) == ("rollback", v1, "v2 answers slowly")
    assert entry.actor.startswith("command line (") and entry.details == {"from_version": v2}
    url = get_settings().serving_url
    assert back.stdout.splitlines() == [
        f"demo: rolled back to v{v1} (was v{v2}): stable label and alias champion -> v{v1}; "
        f"v{v1} answered {cfg.serving.warmup_requests} warm-up request(s)",
        f"no server answering at {url}; the next start serves v{v1}",
    ]
    again = cli("rollback", "demo")
    assert again.returncode == 1
    assert len(audit.read(settings, "demo")) == 1  # a refused rollback records nothing
    assert (
        again.stderr.strip()
        == f"mlplatform: rollback: demo v{v1} is the oldest published version; nothing to roll back to"
    )
    assert cli("status", "nope").returncode == 2


def test_a_label_move_to_a_version_gone_from_the_model_base_fails_in_one_line(env, monkeypatch):
    """Without a candidate, promote moves labels to a published version; one the model base
    lost (its content tag names what it held) cannot be published again from nothing."""
    from mlplatform.stages import StageError, registry

    cfg, settings, _, _ = env
    monkeypatch.setattr(registry, "_version_tag", lambda *args: "ab" * 32)
    with pytest.raises(StageError, match=r"^promote: demo v3 has content_sha256 abababababab… but"):
        promote(cfg, 3, settings)
    from serving import layout

    assert layout.list_versions(settings.models_dir, "demo") == [], "published from nothing"


def test_gate_decision_line_states_the_decision():
    from operators.registry import gate_decision_line

    passed = {
        "metric": "auc",
        "challenger_version": 2,
        "challenger": 0.8311,
        "champion_version": 1,
        "champion": 0.829,
        "holdout_rows": 800,
        "slices": {},
        "decision": "promote",
    }
    assert gate_decision_line(passed) == (
        "promote v2: auc 0.8311 vs champion v1 0.829 on 800 hold-out rows"
    )
    first = {**passed, "challenger_version": 1, "champion_version": None, "champion": None}
    assert gate_decision_line({**first, "cached_from": "manual__x"}) == (
        "promote v1: auc 0.8311 vs champion none on 800 hold-out rows (cached from run manual__x)"
    )


def test_rollback_operator_records_who_when_and_why(env):
    """The rollback DAG's task (RollbackOperator) writes the audit record: the user who
    triggered the run, when, the reason given in the form, from which version to which."""
    from datetime import UTC, datetime
    from types import SimpleNamespace

    from mlplatform import audit
    from operators.registry import RollbackOperator
    from serving import layout

    cfg, settings, holdout, tmp = env
    v1 = _register(cfg, settings, "good")
    _ship(cfg, settings, v1, holdout, tmp)
    v2 = _register(cfg, settings, "good")
    _ship(cfg, settings, v2, holdout, tmp)
    before = datetime.now(UTC).replace(microsecond=0)  # the trail keeps whole seconds
    run_id = "manual__2026-11-28T12:00:00+00:00"
    context = {
        "run_id": run_id,
        "dag_run": SimpleNamespace(run_type="manual", triggering_user_name="alice"),
        "params": {"to_version": "", "reason": "v2 answers slowly"},
    }
    result = RollbackOperator(pipeline="demo", to_version="").execute(context)
    assert (
        result["served_version"] == v1 and layout.served_version(settings.models_dir, "demo") == v1
    )
    [*_, entry] = audit.read(settings, "demo")
    assert (entry.action, entry.actor, entry.reason) == (
        "rollback",
        "user alice",
        "v2 answers slowly",
    )
    assert (entry.model, entry.version, entry.run_id) == ("demo", v1, run_id)
    assert entry.details["from_version"] == v2
    assert before <= datetime.fromisoformat(entry.time) <= datetime.now(UTC)

    # from the command line (dag.test's user), with no reason: the OS user, and it says so
    context["dag_run"] = SimpleNamespace(run_type="manual", triggering_user_name="dag_test")
    context["params"] = {}
    RollbackOperator(pipeline="demo", to_version=str(v2)).execute(context)
    last = audit.read(settings, "demo")[-1]
    assert last.actor.startswith("command line (") and last.reason == "no reason given"
    assert (last.version, last.details["from_version"]) == (v2, v1)
