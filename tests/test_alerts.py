"""Alerts reach a webhook as Slack-compatible JSON: a real HTTP server on a loopback port receives
them from ``alerts.send``, from a task that fails in a real Airflow run (the platform's notifier,
``on_failure_callback``), from a refused gate (real MLflow models) and from
``mlplatform alerts test``. The events filter holds, and with no alert setting nothing touches
the network."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any

import pytest

from mlplatform import alerts, datagen
from mlplatform.config import parse_pipeline
from mlplatform.settings import get_settings
from tests.conftest import REPO

SECRET = "T000/B000/not-for-logs"


@dataclass
class Webhook:
    """A Slack-style incoming webhook on a loopback port: records every POST, answers ``status``."""

    url: str
    received: list[dict[str, Any]] = field(default_factory=list)
    status: int = 200

    def bodies(self, event: str | None = None) -> list[dict[str, Any]]:
        return [
            r["body"]
            for r in self.received
            if event is None or r["body"]["mlplatform"]["event"] == event
        ]


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers["Content-Length"]))
            hook.received.append(
                {
                    "path": self.path,
                    "content_type": self.headers["Content-Type"],
                    "body": json.loads(body),
                }
            )
            self.send_response(hook.status)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    hook.url = f"http://127.0.0.1:{server.server_address[1]}/services/{SECRET}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hook
    finally:
        server.shutdown()
        server.server_close()


def _config(extra: str = ""):
    return parse_pipeline((REPO / "pipelines" / "demo.yaml").read_text() + extra)


def test_send_posts_slack_compatible_json(mlp_home, webhook):
    cfg = _config(f"alerts: {{webhook_url: '{webhook.url}'}}\n")
    assert alerts.send(cfg, "drift", "drift share 0.5 > 0.3", drift_share=0.5, report="r.html")
    (request,) = webhook.received
    assert request["path"] == f"/services/{SECRET}"
    assert request["content_type"] == "application/json"
    body = request["body"]
    assert body["text"] == "[mlplatform] demo: drift: drift share 0.5 > 0.3"
    assert [b["type"] for b in body["blocks"]] == ["section", "section"]
    assert body["blocks"][0]["text"] == {"type": "mrkdwn", "text": body["text"]}
    assert "*drift_share*: 0.5" in body["blocks"][1]["text"]["text"]
    assert body["mlplatform"] == {
        "event": "drift",
        "pipeline": "demo",
        "summary": "drift share 0.5 > 0.3",
        "drift_share": 0.5,
        "report": "r.html",
    }


def test_events_filter_and_the_environment_webhook(mlp_home, webhook, monkeypatch):
    cfg = _config(f"alerts: {{webhook_url: '{webhook.url}', events: [gate_refused]}}\n")
    assert not alerts.send(cfg, "failure", "a task failed")
    assert not alerts.send(cfg, "drift", "drift")
    assert webhook.received == []
    assert alerts.send(cfg, "gate_refused", "refused")
    assert [b["mlplatform"]["event"] for b in webhook.bodies()] == ["gate_refused"]
    # no webhook in the pipeline: MLP_ALERT_WEBHOOK_URL, every event by default
    monkeypatch.setenv("MLP_ALERT_WEBHOOK_URL", webhook.url)
    assert alerts.send(_config(), "retrain_decision", "retrain: new data")
    assert len(webhook.bodies("retrain_decision")) == 1


def test_an_undeliverable_alert_never_raises(mlp_home, webhook):
    webhook.status = 500
    cfg = _config(f"alerts: {{webhook_url: '{webhook.url}'}}\n")
    assert alerts.send(cfg, "failure", "x") is False and len(webhook.received) == 1
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}/hook"
    assert alerts.send(_config(f"alerts: {{webhook_url: '{closed}'}}\n"), "failure", "x") is False


def test_no_alert_setting_makes_no_network_call(mlp_home, webhook, monkeypatch):
    from operators.notifiers import FailureAlertNotifier

    monkeypatch.delenv("MLP_ALERT_WEBHOOK_URL", raising=False)
    opened: list[Any] = []
    real_urlopen, real_connect = urllib.request.urlopen, socket.create_connection

    def urlopen_spy(*args: Any, **kwargs: Any) -> Any:
        opened.append(("urlopen", args))
        return real_urlopen(*args, **kwargs)

    def connect_spy(*args: Any, **kwargs: Any) -> Any:
        opened.append(("connect", args))
        return real_connect(*args, **kwargs)

    monkeypatch.setattr(urllib.request, "urlopen", urlopen_spy)
    monkeypatch.setattr(socket, "create_connection", connect_spy)
    cfg = _config()
    assert cfg.alerts.webhook_url is None and get_settings().alert_webhook_url is None
    for event in alerts.EVENTS:
        assert alerts.send(cfg, event, "nobody hears this") is False
    ti = SimpleNamespace(dag_id="mlp_demo_score", task_id="score", run_id="r", try_number=1)
    FailureAlertNotifier("demo")({"ti": ti, "run_id": "r", "exception": RuntimeError("boom")})
    assert opened == []
    assert webhook.received == []


def test_the_failure_callback_of_every_platform_task_posts_the_run_facts(
    mlp_home, webhook, monkeypatch
):
    """Each task's ``on_failure_callback`` called as Airflow's task runner calls it (one context
    argument); the real Airflow run is the slow test below."""
    from mlplatform.dag_factory import build_pipeline_dags

    monkeypatch.setenv("MLP_ALERT_WEBHOOK_URL", webhook.url)
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "http://airflow.example:8080/")
    dags = build_pipeline_dags(_config())
    for dag in dags:
        for task in dag.tasks:
            ti = SimpleNamespace(
                dag_id=dag.dag_id,
                task_id=task.task_id,
                run_id="manual__1",
                try_number=2,
                log_url=f"http://airflow.example:8080/dags/{dag.dag_id}/runs/manual__1/tasks/x",
            )
            context = {"ti": ti, "run_id": "manual__1", "exception": ValueError("bad\nsecond")}
            for callback in task.on_failure_callback:
                callback(context)
    tasks = [(d.dag_id, t.task_id) for d in dags for t in d.tasks]
    bodies = webhook.bodies("failure")
    assert [(b["mlplatform"]["dag"], b["mlplatform"]["task"]) for b in bodies] == tasks
    facts = bodies[0]["mlplatform"]
    assert (facts["run"], facts["try"], facts["error"]) == ("manual__1", 2, "bad")
    assert facts["log"].startswith("http://airflow.example:8080/dags/")
    monkeypatch.delenv("AIRFLOW__API__BASE_URL")
    build_pipeline_dags(_config())[0].tasks[0].on_failure_callback[0](context)
    assert "log" not in webhook.bodies("failure")[-1]["mlplatform"]  # no base URL: no link


@pytest.mark.slow
def test_a_failing_task_of_a_platform_dag_alerts_through_airflow(
    mlp_home, pipelines_dir, webhook, monkeypatch
):
    """``mlplatform score`` with no champion: the score task fails in a real Airflow run, and
    Airflow calls the platform's notifier (on_failure_callback), which posts the alert."""
    cfg_file = pipelines_dir / "demo.yaml"
    cfg_file.write_text(cfg_file.read_text() + f"alerts: {{webhook_url: '{webhook.url}'}}\n")
    env = {
        **os.environ,
        "MLP_HOME": str(mlp_home),
        "AIRFLOW__API__BASE_URL": "http://airflow.example:8080",
    }
    env.pop("MLP_ALERT_WEBHOOK_URL", None)
    out = subprocess.run(
        [sys.executable, "-m", "mlplatform.cli", "score", "demo"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=600,
    )
    assert out.returncode == 1, out.stdout + out.stderr
    error = "score: no champion for demo: train one first (`mlplatform run demo`)"
    assert out.stderr.strip() == f"mlplatform: {error}"
    (body,) = webhook.bodies()
    facts = body["mlplatform"]
    assert facts["event"] == "failure" and facts["pipeline"] == "demo"
    assert (facts["dag"], facts["task"], facts["try"]) == ("mlp_demo_score", "score", 1)
    assert facts["run"].startswith("manual__")
    assert facts["error"] == error
    assert facts["log"].startswith("http://airflow.example:8080/dags/mlp_demo_score/runs/manual__")
    assert "/tasks/score" in facts["log"]
    assert body["text"] == f"[mlplatform] demo: failure: task mlp_demo_score.score failed: {error}"


def test_a_refused_gate_alerts_with_its_figures(mlp_home, webhook, tmp_path):
    from mlplatform.stages import GateRefused
    from mlplatform.stages.registry import gate
    from tests.saved_models import register_demo_model

    cfg = _config(f"alerts: {{webhook_url: '{webhook.url}'}}\n")
    cfg.gate.min = None  # the regression rule refuses
    settings = get_settings()
    champion = register_demo_model(cfg, settings)
    challenger = register_demo_model(cfg, settings, noise=True, champion=False)
    holdout = tmp_path / "holdout.parquet"
    datagen.generate(800, seed=5).to_parquet(holdout)
    with pytest.raises(GateRefused) as refused:
        gate(cfg, challenger, holdout.as_uri(), settings, alert_fields={"run": "manual__1"})
    (body,) = webhook.bodies()
    facts = body["mlplatform"]
    assert facts["event"] == "gate_refused" and facts["summary"] == str(refused.value)
    assert facts["metric"] == "auc" and facts["run"] == "manual__1"
    assert (facts["challenger_version"], facts["champion_version"]) == (challenger, champion)
    assert facts["challenger"] < facts["champion"] - cfg.gate.max_regression
    assert facts["max_regression"] == cfg.gate.max_regression
    assert "*champion*:" in body["blocks"][1]["text"]["text"]


def test_alerts_test_command_says_where_the_alert_went(mlp_home, webhook, monkeypatch, capsys):
    from mlplatform.cli.main import main

    monkeypatch.delenv("MLP_ALERT_WEBHOOK_URL", raising=False)
    assert main(["alerts", "test", "demo"]) == 1
    assert "no webhook configured for demo" in capsys.readouterr().err
    assert webhook.received == []

    monkeypatch.setenv("MLP_ALERT_WEBHOOK_URL", webhook.url)
    assert main(["alerts", "test", "demo"]) == 0
    out = capsys.readouterr().out
    port = webhook.url.split(":")[2].split("/")[0]
    assert f"sent to http://127.0.0.1:{port}/services/… (MLP_ALERT_WEBHOOK_URL)" in out
    assert SECRET not in out
    (body,) = webhook.bodies("test")
    assert body["text"].startswith("[mlplatform] demo: test: ")

    webhook.status = 404
    assert main(["alerts", "test", "demo"]) == 1
    err = capsys.readouterr().err.strip()
    assert "test alert not delivered" in err and "404" in err and SECRET not in err
