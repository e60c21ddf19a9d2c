"""The monitor: Evidently drift against the champion's training set, the offline report, the
MLflow figures on the champion version, delayed labels and the live metric, the monitor DAG.

Real libraries on small data: Evidently, MLflow (SQLite under a fresh MLP_HOME), the request log
written by the server's own ``RequestLogger``; the champion is registered through MLflow's client
(a training run with its hold-out metric, a version with the lineage tag ``training_set_uri``).
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlplatform import datagen
from mlplatform.config import load_pipeline
from mlplatform.settings import get_settings
from mlplatform.storage import stage_dir, to_path, to_uri

NUMERIC = ["tenure_months", "monthly_charges", "support_calls", "usage_minutes"]
CATEGORICAL = ["contract_type", "region"]
FEATURES = NUMERIC + CATEGORICAL
MIN_ROWS = 300


@pytest.fixture
def cfg(mlp_home, pipelines_dir):
    """The demo pipeline with ``monitoring.min_rows`` 300 (small data)."""
    path = pipelines_dir / "demo.yaml"
    path.write_text(path.read_text().replace("min_rows: 500", f"min_rows: {MIN_ROWS}"))
    return load_pipeline(path)


def make_champion(cfg, tmp_path: Path, reference: pd.DataFrame, holdout_auc: float = 0.8) -> int:
    """Register a champion version of ``demo`` whose training set is ``reference``."""
    from mlplatform.stages.registry import CHAMPION, client
    from mlplatform.stages.train import ensure_experiment

    settings = get_settings()
    c = client(settings)
    training_set = tmp_path / "training_set.parquet"
    reference.to_parquet(training_set, index=False)
    run = c.create_run(ensure_experiment(settings, cfg.name), run_name="train")
    c.log_metric(run.info.run_id, "holdout_auc", holdout_auc)
    c.set_terminated(run.info.run_id)
    c.create_registered_model(cfg.serving.model_name)
    mv = c.create_model_version(
        cfg.serving.model_name,
        source=str(tmp_path / "model"),
        run_id=run.info.run_id,
        tags={"training_set_uri": to_uri(training_set), "data_version": "md5-of-training-data"},
    )
    c.set_registered_model_alias(cfg.serving.model_name, CHAMPION, mv.version)
    return int(mv.version)


def log_requests(
    rows: pd.DataFrame, start: datetime, scores: np.ndarray | None = None, per_request: int = 50
) -> None:
    """Write ``rows`` to the request log as the server does: instances of raw features, the
    entity key under ``entities``, one request per ``per_request`` rows, 1 s apart."""
    from serving.request_log import RequestLogger

    logger = RequestLogger(get_settings().request_log_dir)
    scores = np.full(len(rows), 0.5) if scores is None else scores
    for n, i in enumerate(range(0, len(rows), per_request)):
        chunk = rows.iloc[i : i + per_request]
        logger.log(
            {
                "time": (start + timedelta(seconds=n)).isoformat(),
                "model": "demo",
                "version": 1,
                "protocol": "rest",
                "method": "predict",
                "format": "instances",
                "inputs": json.loads(chunk[FEATURES].to_json(orient="records")),
                "outputs": [float(s) for s in scores[i : i + per_request]],
                "latency_ms": 1.0,
                "request_id": uuid.uuid4().hex,
                "entities": [int(k) for k in chunk["customer_id"]],
            }
        )


def _check(cfg, run: str, now: datetime | None = None) -> dict:
    from mlplatform.monitoring.check import run_check

    settings = get_settings()
    out = stage_dir(settings.storage, cfg.name, f"monitor__{run}", "drift")
    return run_check(cfg, out, settings, run, now or datetime.now(UTC))


def test_drift_detected_on_shifted_data_not_on_same_distribution(cfg, tmp_path):
    from mlflow import MlflowClient

    from mlplatform.monitoring.drift import external_resources
    from mlplatform.monitoring.state import read_state, status_lines

    version = make_champion(cfg, tmp_path, datagen.generate(2000, seed=1))
    t0 = datetime.now(UTC) - timedelta(hours=2)
    log_requests(datagen.generate(600, seed=2), t0)
    calm = _check(cfg, "run_1", t0 + timedelta(hours=1))
    assert calm["triggered"] is False and calm["rows_requests"] == 600
    assert calm["drift_share"] < cfg.monitoring.drift_share, calm
    assert calm["reason"].startswith("no threshold crossed")

    log_requests(datagen.generate(600, seed=3, drift=1.0), t0 + timedelta(hours=1, minutes=1))
    shifted = _check(cfg, "run_2", t0 + timedelta(hours=2))
    assert shifted["rows_requests"] == 600  # only the requests since the last check
    assert shifted["triggered"] is True, shifted
    assert shifted["drift_share"] >= cfg.monitoring.drift_share
    assert {"monthly_charges", "support_calls", "contract_type"} <= set(shifted["drifted_features"])
    assert shifted["reason"].startswith("drift: ")

    # the report: one file with the run, rendering without any network access
    report = to_path(shifted["report"])
    assert report.name == "drift.html" and report.parent.name == "reports"
    html = report.read_text(encoding="utf-8")
    assert "<script" in html and external_resources(html) == [] and shifted["report_offline"]

    # the figures in MLflow, against the champion's version
    c = MlflowClient(get_settings().tracking_uri)
    run = c.get_run(shifted["mlflow_run_id"])
    assert run.data.tags["model_name"] == "demo" and run.data.tags["model_version"] == str(version)
    assert run.data.metrics["drift_share"] == pytest.approx(shifted["drift_share"])
    assert run.data.metrics["rows_current"] == 600
    assert run.data.metrics["drift_score.monthly_charges"] > 0
    tags = c.get_model_version("demo", str(version)).tags
    assert float(tags["last_drift_share"]) == pytest.approx(shifted["drift_share"], abs=1e-4)
    assert tags["last_drift_run"] == shifted["mlflow_run_id"]

    # a retry of run_2 reads the same window again (idempotent), and status shows the result
    again = _check(cfg, "run_2", t0 + timedelta(hours=2, minutes=5))
    assert again["rows_requests"] == 600 and again["triggered"] is True
    assert again["mlflow_run_id"] == shifted["mlflow_run_id"]  # the retry logs to the same run
    assert read_state(get_settings(), "demo")["run"] == "run_2"
    (line,) = status_lines(get_settings(), "demo")
    assert "share" in line and "monthly_charges" in line and "drift.html" in line
    from mlplatform.reconcile import status_report

    assert line in status_report(get_settings(), "demo", None)  # `mlplatform status demo`


def test_report_check_names_network_resources():
    from mlplatform.monitoring.drift import external_resources

    html = (
        '<html><head><script src="https://cdn.example.com/plotly.js"></script>'
        "<link rel=stylesheet href='//fonts.example.com/a.css'><style>@import url(\"http://x/y.css\");"
        "</style><script>var u = 'https://docs.example.com';</script></head></html>"
    )
    assert external_resources(html) == [
        "https://cdn.example.com/plotly.js",
        "//fonts.example.com/a.css",
        "http://x/y.css",
    ]


def test_too_few_rows_is_skipped_with_the_reason_and_the_window_kept(cfg, tmp_path):
    from mlplatform.monitoring.check import NotEnoughRows
    from mlplatform.monitoring.state import read_state
    from mlplatform.stages import StageSkipped

    with pytest.raises(StageSkipped, match="has no champion yet"):
        _check(cfg, "run_0")
    make_champion(cfg, tmp_path, datagen.generate(1000, seed=1))
    t0 = datetime.now(UTC) - timedelta(hours=2)
    log_requests(datagen.generate(200, seed=2), t0)
    with pytest.raises(NotEnoughRows, match=r"too few rows.*200 requests.*min_rows is 300"):
        _check(cfg, "run_1", t0 + timedelta(hours=1))
    assert read_state(get_settings(), "demo") == {}  # nothing advanced
    log_requests(datagen.generate(200, seed=3), t0 + timedelta(hours=1, minutes=1))
    result = _check(cfg, "run_2", t0 + timedelta(hours=2))
    assert result["rows_requests"] == 400  # the skipped rows count now


def test_delayed_labels_join_and_a_metric_drop_publishes(cfg, tmp_path, capsys):
    """Labels stored by `mlplatform labels` join the request log by entity and time; a live AUC
    far below the champion's hold-out AUC triggers the check with reason "metric drop"."""
    from mlplatform.cli.main import main
    from mlplatform.monitoring.labels import join_labels, received_in
    from mlplatform.monitoring.requests import request_rows
    from mlplatform.monitoring.state import Window

    make_champion(cfg, tmp_path, datagen.generate(1500, seed=1), holdout_auc=0.8)
    t0 = datetime.now(UTC) - timedelta(hours=3)
    traffic = datagen.generate(400, seed=2).assign(customer_id=range(5000, 5400))
    rng = np.random.default_rng(0)
    log_requests(traffic, t0, scores=rng.uniform(size=len(traffic)))  # a model that guesses

    labels = traffic[["customer_id", "churned"]].copy()
    labels["event_time"] = t0 + timedelta(hours=1)  # the outcome is known an hour later
    late = labels.head(20).assign(event_time=t0 + timedelta(days=10))  # beyond the delay
    early = labels.tail(20).assign(event_time=t0 - timedelta(hours=1))  # before any request
    delivery = pd.concat([labels, late, early])
    path = tmp_path / "labels.csv"
    delivery.to_csv(path, index=False)
    assert main(["labels", "demo", "--data", str(path)]) == 0
    assert "stored 440 labels" in capsys.readouterr().out
    assert main(["labels", "demo", "--data", str(path)]) == 0
    assert "already stored" in capsys.readouterr().out
    bad = tmp_path / "bad.csv"
    delivery.drop(columns="churned").to_csv(bad, index=False)
    assert main(["labels", "demo", "--data", str(bad)]) == 2
    assert "missing column(s) ['churned']" in capsys.readouterr().err

    # the join: each in-time label to the latest earlier request of its entity
    settings = get_settings()
    now = datetime.now(UTC)
    received = received_in(cfg, settings, Window(None, now))
    requests = request_rows(
        settings.request_log_dir, "demo", Window(None, now), FEATURES, "customer_id"
    )
    joined, unmatched = join_labels(requests, received, "customer_id", 72.0)
    assert len(joined) == 400 and unmatched == 40

    result = _check(cfg, "run_1", now)
    assert result["label_rows"] == 400 and result["labels_unmatched"] == 40
    assert result["live_metric"] == pytest.approx(0.5, abs=0.1)
    assert result["triggered"] is True
    assert "metric drop: auc" in result["reason"] and "max_metric_drop 0.05" in result["reason"]
    assert result["drift_share"] is not None  # 400 requests >= min_rows: drift checked too

    from mlflow import MlflowClient

    metrics = MlflowClient(settings.tracking_uri).get_run(result["mlflow_run_id"]).data.metrics
    assert metrics["live_auc"] == pytest.approx(result["live_metric"])
    assert metrics["label_rows"] == 400
    # the labels are judged once: the next check has neither new requests nor new labels
    from mlplatform.monitoring.check import NotEnoughRows

    with pytest.raises(NotEnoughRows, match="0 requests/batch rows and 0 joined labels"):
        _check(cfg, "run_2")


def test_monitor_dag_publishes_the_drift_asset_only_when_triggered(cfg):
    from airflow.sdk import DAG  # noqa: F401

    from mlplatform.assets import drift_asset
    from mlplatform.dag_factory import build_pipeline_dags
    from mlplatform.monitor_dag import build_monitor_dag

    dag = build_monitor_dag(cfg)
    assert dag.dag_id == "mlp_demo_monitor"
    assert set(dag.task_ids) == {"drift_check", "publish_drift"}
    publish = dag.get_task("publish_drift")
    assert publish.upstream_task_ids == {"drift_check"}
    assert [a.uri for a in publish.outlets] == [drift_asset("demo").uri]
    assert {d.dag_id for d in build_pipeline_dags(cfg)} >= {"mlp_demo_monitor"}
    quiet = cfg.model_copy(
        update={"monitoring": cfg.monitoring.model_copy(update={"schedule": None})}
    )
    assert build_monitor_dag(quiet) is None


ASSET_EVENTS = """
import json
from mlplatform.airflow_runner import prepare_airflow
prepare_airflow()
from airflow.models.asset import AssetEvent, AssetModel
from airflow.utils.session import create_session
from sqlalchemy import select
with create_session() as s:
    rows = s.execute(
        select(AssetEvent.extra).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
        .where(AssetModel.uri == "mlplatform://demo/drift")
    ).all()
print(json.dumps([r[0] for r in rows]))
"""


def test_publish_drift_sets_the_asset_extra_and_alerts_only_when_triggered(cfg, tmp_path):
    """publish_drift with Airflow's own outlet-event accessors and a real webhook (a local HTTP
    server): a triggered check fills the drift asset's extra and posts the drift alert; a calm
    one is skipped with its reason, nothing posted."""
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from airflow.sdk.execution_time.context import OutletEventAccessors

    from mlplatform.assets import drift_asset
    from mlplatform.stages import StageSkipped
    from operators.monitor import PublishDriftOperator

    posted: list[dict] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            posted.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        hooked = cfg.model_copy(
            update={"alerts": cfg.alerts.model_copy(update={"webhook_url": url})}
        )
        check = {
            "triggered": True,
            "reason": "drift: 2 of 6 features drifted (share 0.33 >= 0.3): a, b",
            "drift_share": 0.33,
            "drifted_features": ["a", "b"],
            "report": "file:///x/drift/reports/drift.html",
            "live_metric": None,
            "model_name": "demo",
            "champion_version": 3,
        }
        events = OutletEventAccessors()
        op = PublishDriftOperator(check=check, pipeline="demo", outlets=[drift_asset("demo")])
        out = op.run_stage(hooked, tmp_path, get_settings(), {"outlet_events": events})
        extra = events[drift_asset("demo")].extra
        assert extra["reason"] == check["reason"] and extra["drift_share"] == 0.33
        assert extra["report"].endswith("drift.html") and out["published"] is True
        (alert,) = posted
        assert alert["mlplatform"]["event"] == "drift" and "share 0.33" in alert["text"]

        calm = {"triggered": False, "reason": "no threshold crossed: drift share 0.10 < 0.3"}
        quiet = OutletEventAccessors()
        op = PublishDriftOperator(check=calm, pipeline="demo", task_id="publish_calm")
        with pytest.raises(StageSkipped, match="drift share 0.10 < 0.3"):
            op.run_stage(hooked, tmp_path, get_settings(), {"outlet_events": quiet})
        assert len(quiet) == 0 and len(posted) == 1
    finally:
        server.shutdown()


def test_labels_uri_is_imported_once_per_content(cfg, tmp_path):
    """``monitoring.labels_uri`` (any source URI; a Parquet glob here) is imported by each
    check: new content becomes a delivery received at the check's time, unchanged content none."""
    from mlplatform.monitoring.labels import LABEL, LABEL_TIME, import_source, received_in
    from mlplatform.monitoring.state import Window

    drop = tmp_path / "outcomes"
    drop.mkdir()
    when = datetime(2026, 6, 1, tzinfo=UTC)
    pd.DataFrame({"customer_id": [1, 2], "event_time": [when, when], "churned": [0, 1]}).to_parquet(
        drop / "day1.parquet"
    )
    uri = str(drop / "*.parquet")
    wired = cfg.model_copy(
        update={"monitoring": cfg.monitoring.model_copy(update={"labels_uri": uri})}
    )
    settings = get_settings()
    t1, t2 = when + timedelta(days=1), when + timedelta(days=2)
    assert import_source(wired, settings, t1)["stored"] is True
    assert import_source(wired, settings, t2)["stored"] is False  # same rows: stored once
    first = received_in(wired, settings, Window(None, t1))
    assert first[LABEL].tolist() == [0, 1] and str(first[LABEL_TIME].iloc[0]) == str(when)
    assert received_in(wired, settings, Window(t1, t2)).empty
    from mlplatform.stages import StageError

    pd.DataFrame({"customer_id": [3], "event_time": [pd.NaT], "churned": [1]}).to_parquet(
        drop / "day2.parquet"
    )
    with pytest.raises(StageError, match="labels: .*must not be empty .*1 times"):
        import_source(wired, settings, t2)
