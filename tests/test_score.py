"""Batch scoring with a real registered champion (MLflow + a real SavedModel), real Parquet and
the real request log: 100k rows in chunks, the latest offline features, bad input, no champion.
The scoring DAG's shape; its run through Airflow is in tests/test_alerts.py (failure) and below
(slow, success)."""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from mlplatform import datagen
from mlplatform.config import ConfigError, load_pipeline, parse_pipeline
from mlplatform.settings import get_settings
from mlplatform.stages import StageError
from mlplatform.stages.features import land_batch, offline_dir
from mlplatform.stages.score import LOG_ROWS_PER_LINE, PREDICTIONS, score
from tests.conftest import REPO
from tests.saved_models import demo_score, register_demo_model

END = pd.Timestamp("2026-06-01", tz="UTC").to_pydatetime()
COLUMNS = [
    "customer_id",
    "event_time",
    "score",
    "model_version",
    "data_version",
    "input_version",
    "scored_at",
]


@pytest.fixture(scope="module")
def champion(tmp_path_factory):
    """A platform home whose demo model has a champion (the datagen logit, tag dv-champion)."""
    home = tmp_path_factory.mktemp("score-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLP_HOME", str(home))
        mp.delenv("MLP_ALERT_WEBHOOK_URL", raising=False)
        cfg = load_pipeline(REPO / "pipelines" / "demo.yaml")
        settings = get_settings()
        version = register_demo_model(cfg, settings)
        yield SimpleNamespace(home=home, cfg=cfg, settings=settings, version=version)


def _log_lines(settings, model: str = "demo") -> list[dict]:
    files = sorted((settings.request_log_dir / model).glob("*.jsonl"))
    return [json.loads(line) for f in files for line in f.read_text().splitlines()]


def test_scores_100k_rows_in_bounded_chunks_with_lineage_and_request_log(champion, tmp_path):
    cfg, settings = champion.cfg, champion.settings
    before = len(_log_lines(settings))
    rows = datagen.generate(100_000, seed=3, end=END)
    table = datagen.write(rows, tmp_path / "customers.csv")
    out = tmp_path / "score"

    result = score(cfg, out, settings, input_uri=str(table), run_id="run-100k", chunk_rows=16_384)

    assert result["rows"] == 100_000
    assert result["chunks"] == math.ceil(100_000 / 16_384) == 7
    assert result["max_chunk_rows"] == 16_384  # never more than one chunk in memory
    assert result["model_version"] == champion.version
    assert result["data_version"] == "dv-champion"
    predictions = pq.ParquetFile(out / PREDICTIONS)
    assert predictions.metadata.num_row_groups == 7  # appended chunk by chunk
    assert max(predictions.metadata.row_group(i).num_rows for i in range(7)) == 16_384
    got = predictions.read().to_pandas()
    assert list(got.columns) == COLUMNS
    assert len(got) == 100_000
    assert (got["customer_id"].to_numpy() == rows["customer_id"].to_numpy()).all()
    assert (got["event_time"] == rows["event_time"].dt.floor("s")).all()
    assert set(got["model_version"]) == {champion.version}
    assert set(got["data_version"]) == {"dv-champion"}
    assert set(got["input_version"]) == {hashlib.md5(table.read_bytes()).hexdigest()}
    assert got["scored_at"].nunique() == 1 and str(got["scored_at"].dt.tz) == "UTC"
    np.testing.assert_allclose(got["score"], demo_score(rows), rtol=1e-4, atol=1e-5)
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")], "temp files left"

    lines = _log_lines(settings)[before:]
    per_chunk = [16_384] * 6 + [100_000 - 6 * 16_384]
    assert len(lines) == result["request_log_lines"]
    assert len(lines) == sum(math.ceil(n / LOG_ROWS_PER_LINE) for n in per_chunk)
    assert {(x["protocol"], x["method"], x["format"]) for x in lines} == {
        ("batch", "batch", "instances")
    }
    assert {(x["model"], x["version"], x["run_id"]) for x in lines} == {
        ("demo", champion.version, "run-100k")
    }
    inputs = [row for x in lines for row in x["inputs"]]
    outputs = [value for x in lines for value in x["outputs"]]
    entities = [key for x in lines for key in x["entities"]]
    assert len(inputs) == len(outputs) == len(entities) == 100_000
    assert set(inputs[0]) == set(cfg.features.all)
    assert entities == rows["customer_id"].tolist()
    np.testing.assert_allclose(outputs, got["score"], rtol=1e-6)


def test_without_input_scores_every_entitys_latest_offline_features(champion, tmp_path):
    cfg, settings = champion.cfg, champion.settings
    first = datagen.generate(600, seed=11, end=END)
    # a later batch re-sends some entities with newer rows and brings new ones
    second = datagen.generate(300, seed=12, end=END + pd.Timedelta(days=3), days=2)
    land_batch(cfg, first, "v-first", offline_dir(cfg, settings))
    land_batch(cfg, second, "v-second", offline_dir(cfg, settings))
    history = pd.concat([first.assign(v="v-first"), second.assign(v="v-second")])
    latest = history.sort_values("event_time", kind="mergesort").drop_duplicates(
        "customer_id", keep="last"
    )

    result = score(cfg, tmp_path / "score", settings, input_uri=None, chunk_rows=97)

    got = pd.read_parquet(tmp_path / "score" / PREDICTIONS).sort_values("customer_id")
    latest = latest.sort_values("customer_id")
    assert result["rows"] == len(latest) == len(got) == got["customer_id"].nunique()
    assert result["chunks"] == math.ceil(len(latest) / 97)
    assert (got["customer_id"].to_numpy() == latest["customer_id"].to_numpy()).all()
    assert (got["event_time"].to_numpy() == latest["event_time"].to_numpy()).all()
    assert (got["input_version"].to_numpy() == latest["v"].to_numpy()).all()
    assert {"v-first", "v-second"} <= set(got["input_version"])
    np.testing.assert_allclose(got["score"], demo_score(latest), rtol=1e-4, atol=1e-5)
    assert "churned" not in got.columns


def test_bad_input_fails_in_one_line_and_keeps_the_previous_predictions(champion, tmp_path):
    cfg, settings = champion.cfg, champion.settings
    out = tmp_path / "score"
    good = datagen.write(datagen.generate(500, seed=4, end=END), tmp_path / "good.csv")
    score(cfg, out, settings, input_uri=str(good), chunk_rows=100)
    kept = (out / PREDICTIONS).read_bytes()
    logged = len(_log_lines(settings))

    rows = datagen.generate(500, seed=5, end=END).astype({"support_calls": object})
    rows.loc[350, "support_calls"] = "many"  # a later chunk holds text in a numeric feature
    bad_value = datagen.write(rows, tmp_path / "bad_value.csv")
    lacking = datagen.write(
        datagen.generate(50, seed=6, end=END).drop(columns=["region"]), tmp_path / "lacking.csv"
    )
    cases = {
        bad_value: "cannot be scored",
        lacking: "lacks column(s) region",
        tmp_path / "absent.csv": "no such file",
    }
    for uri, what in cases.items():
        with pytest.raises(StageError) as err:
            score(cfg, out, settings, input_uri=str(uri), chunk_rows=100)
        message = str(err.value)
        assert message.startswith("score: ") and what in message and "\n" not in message
        assert (out / PREDICTIONS).read_bytes() == kept
        assert sorted(p.name for p in out.iterdir()) == [PREDICTIONS]
        assert len(_log_lines(settings)) == logged, "a failed run must not log requests"


def test_no_champion_is_one_line(mlp_home, tmp_path):
    cfg = load_pipeline(REPO / "pipelines" / "demo.yaml")
    table = datagen.write(datagen.generate(20, seed=1, end=END), tmp_path / "t.csv")
    with pytest.raises(StageError, match=r"^score: no champion for demo: train one first"):
        score(cfg, tmp_path / "score", get_settings(), input_uri=str(table))
    assert not (tmp_path / "score" / PREDICTIONS).exists()


def test_scoring_config_defaults_and_schedule_check():
    text = (REPO / "pipelines" / "demo.yaml").read_text()
    cfg = parse_pipeline(text)
    assert (cfg.scoring.schedule, cfg.scoring.input_uri, cfg.scoring.chunk_rows) == (
        None,
        None,
        50_000,
    )
    custom = parse_pipeline(
        text + "scoring: {schedule: '@daily', input_uri: s3://b/x/, chunk_rows: 1000}\n"
    )
    assert custom.scoring.schedule == "@daily" and custom.scoring.chunk_rows == 1000
    with pytest.raises(ConfigError, match=r"scoring.schedule: .*not a schedule"):
        parse_pipeline(text + "scoring: {schedule: '@sometimes'}\n")
    with pytest.raises(ConfigError, match=r"scoring.chunk_rows"):
        parse_pipeline(text + "scoring: {chunk_rows: 0}\n")


def test_score_dag_is_manual_by_default_with_an_input_param_and_failure_alerts(mlp_home):
    from mlplatform.dag_factory import build_pipeline_dags
    from mlplatform.score_dag import build_score_dag
    from operators.notifiers import FailureAlertNotifier
    from operators.score import ScoreOperator

    text = (REPO / "pipelines" / "demo.yaml").read_text()
    cfg = parse_pipeline(text)
    dag = build_score_dag(cfg)
    assert dag.dag_id == "mlp_demo_score" and dag.schedule is None
    assert dag.params["input_uri"] == ""
    (task,) = dag.tasks
    assert isinstance(task, ScoreOperator) and task.pipeline == "demo"
    assert task.input_uri == "{{ params.input_uri }}" and task.retries == 0
    assert any(isinstance(c, FailureAlertNotifier) for c in task.on_failure_callback)
    ids = {d.dag_id for d in build_pipeline_dags(cfg)}
    assert ids == {
        f"mlp_demo_{kind}" for kind in ("train", "rollback", "score", "monitor", "ingest")
    }
    for built in build_pipeline_dags(cfg):
        for t in built.tasks:
            assert any(isinstance(c, FailureAlertNotifier) for c in t.on_failure_callback), (
                f"{built.dag_id}.{t.task_id} sends no failure alert"
            )
    scheduled = parse_pipeline(text + "scoring: {schedule: '0 3 * * *', input_uri: /d/x.csv}\n")
    dag = build_score_dag(scheduled)
    assert dag.params["input_uri"] == "/d/x.csv"
    assert dag.schedule == "0 3 * * *"


@pytest.mark.slow
def test_cli_scores_through_airflow(mlp_home, tmp_path):
    cfg = load_pipeline(REPO / "pipelines" / "demo.yaml")
    version = register_demo_model(cfg, get_settings())
    table = datagen.write(datagen.generate(3000, seed=2, end=END), tmp_path / "t.parquet")
    env = {**os.environ, "MLP_HOME": str(mlp_home)}
    out = subprocess.run(
        [sys.executable, "-m", "mlplatform.cli", "score", "demo", "--data", str(table)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "rows=3000 chunks=1" in out.stdout and f"with demo v{version}" in out.stdout
    (path,) = (mlp_home / "storage" / "demo").glob("score__manual__*/score/predictions.parquet")
    assert len(pd.read_parquet(path)) == 3000
    assert "3 line(s) appended" in out.stdout
