"""The platform in a real browser (issue 14, item 8): headless Chromium from the Debian package,
driven by Playwright with ``executable_path``, against ``mlplatform ui``, in one browser session.

Logged in the way Airflow's login page leaves a browser (the ``_token`` cookie, from Airflow's own
``/auth/token`` with the generated password), it

1. triggers the demo DAG from the Airflow UI's own trigger form (a new batch as ``data_uri``) and
   waits for the scheduler's run to succeed;
2. opens "ML platform" in Airflow's navigation (``/plugin/mlplatform``: the plugin's page in an
   iframe), sees the new version served, opens its lineage and follows every link of the chain:
   the ingest and features task pages (their logs show), the Data Docs, the Airflow run, the
   MLflow run and model version (an MLflow server started for the test; the model version links
   back to the Airflow run), and the served version;
3. rolls back from the picker (its default: the previous version) with a reason, waits for the
   rollback run and sees the served version change; the audit trail names the user and reason;
4. presses "Trigger retrain" and sees the run Airflow created.

To keep it short, version 1 is not trained: a small real SavedModel (the demo's signature) is
registered, infra-validated and promoted before the UI starts. Screenshots go to
``test-artifacts/ui/``."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.pipeline_configs import drop_crons

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = REPO / "test-artifacts" / "ui"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _seed_served_version(pipelines_dir: Path, tmp: Path) -> None:
    """Version 1 of ``demo``: a real SavedModel, gated, infra-validated and promoted."""
    from mlplatform import datagen
    from mlplatform.config import load_pipeline
    from mlplatform.settings import get_settings
    from mlplatform.stages.infra_validate import infra_validate
    from mlplatform.stages.registry import gate, promote
    from tests.saved_models import register_demo_model

    cfg, settings = load_pipeline(pipelines_dir / "demo.yaml"), get_settings()
    holdout = tmp / "holdout.parquet"
    datagen.generate(400, seed=5).to_parquet(holdout)
    version = register_demo_model(cfg, settings, champion=False)
    gate(cfg, version, holdout.as_uri(), settings)
    checked = infra_validate(cfg, version, holdout.as_uri(), tmp / "infra", settings)
    promote(cfg, version, settings, candidate_dir=checked["candidate_dir"])


def _api(url: str, token: str, path: str) -> dict:
    request = urllib.request.Request(url + path, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=60) as answer:
        return json.loads(answer.read())


def _wait_for_run(url: str, token: str, dag_id: str, run_id: str, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        state = _api(url, token, f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")["state"]
        if state in ("success", "failed") or time.monotonic() > deadline:
            return state
        time.sleep(3)


def _start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)


def _stop(proc: subprocess.Popen | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.mark.slow
@pytest.mark.skipif(not shutil.which("chromium"), reason="no chromium: apt-get install -y chromium")
def test_platform_in_a_browser(mlp_home, pipelines_dir, tmp_path, monkeypatch):
    from playwright.sync_api import sync_playwright

    from mlplatform import audit, datagen
    from mlplatform.settings import get_settings

    monkeypatch.delenv("MLP_UI_ALL_ADMINS", raising=False)
    mlflow_url = f"http://127.0.0.1:{_free_port()}"
    monkeypatch.setenv("MLP_MLFLOW_UI_URL", mlflow_url)
    # the seeded v1 is datagen's true logit: let a trained v2 pass the gate beside it
    cfg = pipelines_dir / "demo.yaml"
    cfg.write_text(cfg.read_text().replace("max_regression: 0.02", "max_regression: 0.5"))
    # every train run here is triggered: no scheduled one for the form's run to wait behind, no
    # scheduled ingest of an empty landing interval (the monitor DAG stays: null drops it)
    drop_crons(pipelines_dir, "source", "retrain")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    _seed_served_version(pipelines_dir, tmp_path)
    batch = datagen.write(datagen.generate(1500, seed=3), tmp_path / "batch-2.csv")
    # this checkout's mlplatform in every service, whichever checkout the environment installed
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)}
    mlflow = _start(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1",
         "--port", mlflow_url.rsplit(":", 1)[1], "--workers", "1",
         "--backend-store-uri", get_settings().tracking_uri],
        env, tmp_path / "mlflow.log",
    )  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlplatform.cli", "ui", "--port", "0"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 420
        while not any("platform view:" in line for line in lines):
            line = proc.stdout.readline()
            assert line or proc.poll() is None, "".join(lines)
            lines.append(line)
            assert time.monotonic() < deadline, "".join(lines)
        text = "".join(lines)
        url = re.search(r"Airflow UI: (http://127\.0\.0\.1:\d+)", text)[1]
        password = re.search(r"with password (\S+)", text)[1]
        login = urllib.request.Request(
            f"{url}/auth/token", method="POST",
            data=json.dumps({"username": "admin", "password": password}).encode(),
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(login, timeout=60) as answer:
            token = json.loads(answer.read())["access_token"]
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            context = browser.new_context(viewport={"width": 1400, "height": 900})
            context.add_cookies([{"name": "_token", "value": token, "url": url}])
            page = context.new_page()

            # 1. the demo DAG from Airflow's own trigger form
            page.goto(f"{url}/dags/mlp_demo_train", timeout=120_000)
            page.get_by_role("button", name="Trigger Dag").click()
            form = page.get_by_role("dialog")
            form.locator("#element_data_uri").fill(str(batch))
            page.screenshot(path=str(ARTIFACTS / "1-trigger-form.png"))
            form.get_by_role("button", name="Trigger", exact=True).click()
            page.wait_for_url(re.compile(r".*/dags/mlp_demo_train/runs/manual__.*"))
            run_id = urllib.request.unquote(page.url.rsplit("/runs/", 1)[1])
            state = _wait_for_run(url, token, "mlp_demo_train", run_id, 600)
            page.reload()
            page.get_by_text("Success").first.wait_for(timeout=60_000)
            page.screenshot(path=str(ARTIFACTS / "2-run-succeeded.png"))
            assert state == "success", f"the run triggered from the form ended {state}"

            # 2. the platform view: v2 served; its lineage, every link followed
            page.goto(f"{url}/plugin/mlplatform", timeout=120_000)
            frame = page.frame_locator("iframe")
            frame.get_by_text("ML platform: pipelines and models").wait_for(timeout=120_000)
            frame.get_by_role("link", name="demo", exact=True).click()
            frame.get_by_text("Model demo").wait_for(timeout=60_000)
            assert "Served: v2" in frame.locator("body").inner_text()
            page.screenshot(path=str(ARTIFACTS / "3-model-page.png"))
            frame.locator("#v2").get_by_role("link", name="lineage").click()
            frame.get_by_role("heading", name="Lineage").wait_for(timeout=60_000)
            page.screenshot(path=str(ARTIFACTS / "4-lineage.png"))
            steps = {}
            for item in frame.locator("ol.lineage li").all():
                link = item.locator("a")
                step = item.locator("b").inner_text()
                steps[step] = link.get_attribute("href") if link.count() else None
            assert list(steps) == [
                "data version", "validation (Data Docs)", "features", "Airflow run",
                "MLflow run", "model version", "served version",
            ]  # fmt: skip
            assert all(steps.values()), steps
            _follow_lineage(page, context, url, mlflow_url, run_id, steps)

            # 3. roll back from the picker (default: the previous version), with a reason
            page.goto(f"{url}/plugin/mlplatform", timeout=120_000)
            frame = page.frame_locator("iframe")
            frame.get_by_role("link", name="demo", exact=True).click()
            picker = frame.locator("select[name=to_version]")
            assert picker.input_value() == "1"
            frame.locator("input[name=reason]").fill("browser test: back to v1")
            frame.get_by_role("button", name="Roll back").click()
            message = frame.locator(".msg")
            message.wait_for(timeout=60_000)
            rollback = re.match(r"triggered mlp_demo_rollback run (\S+):", message.inner_text())
            assert rollback, message.inner_text()
            state = _wait_for_run(url, token, "mlp_demo_rollback", rollback[1], 300)
            assert state == "success", f"the rollback run ended {state}"
            page.reload()  # the navigation's iframe starts at the overview again
            frame = page.frame_locator("iframe")
            frame.get_by_role("link", name="demo", exact=True).click()
            frame.get_by_text("Served: v1").wait_for(timeout=60_000)
            page.screenshot(path=str(ARTIFACTS / "6-rolled-back.png"))
            entry = audit.read(get_settings(), "demo")[-1]
            assert (entry.action, entry.actor, entry.version) == ("rollback", "user admin", 1)
            assert entry.reason == "browser test: back to v1"

            # 4. a retrain from the platform view
            frame.get_by_role("button", name="Trigger retrain").click()
            message = frame.locator(".msg")
            message.wait_for(timeout=60_000)
            page.screenshot(path=str(ARTIFACTS / "7-retrain-triggered.png"))
            assert re.match(r"triggered mlp_demo_train run manual__", message.inner_text())
            browser.close()
    finally:
        _stop(proc)
        _stop(mlflow)
    assert proc.returncode == 0


def _follow_lineage(page, context, url, mlflow_url, run_id, steps) -> None:
    """Each lineage link answers with what it names (Airflow pages in the browser, the rest as
    requests of the same logged-in session)."""
    quoted = urllib.request.quote(run_id, safe="")
    # the data version and the features: their task pages in Airflow, logs shown
    for step, task in (("data version", "ingest"), ("features", "features")):
        assert steps[step] == f"/dags/mlp_demo_train/runs/{quoted}/tasks/{task}", steps[step]
        page.goto(url + steps[step], timeout=120_000)
        page.get_by_text(f"{task} done in").first.wait_for(timeout=60_000)
    page.screenshot(path=str(ARTIFACTS / "5-features-task-log.png"))
    assert steps["Airflow run"] == f"/dags/mlp_demo_train/runs/{quoted}"
    page.goto(url + steps["Airflow run"], timeout=120_000)
    page.get_by_text("promote").first.wait_for(timeout=60_000)
    docs = context.request.get(url + steps["validation (Data Docs)"])
    assert docs.status == 200 and "demo_raw" in docs.text()
    assert "cdn.jsdelivr" not in docs.text() and "cdnjs" not in docs.text()
    mlflow_run = steps["MLflow run"]
    assert mlflow_run.startswith(f"{mlflow_url}/#/experiments/"), mlflow_run
    assert context.request.get(mlflow_run).status == 200  # the MLflow UI's page
    run = context.request.get(
        f"{mlflow_url}/api/2.0/mlflow/runs/get?run_id={mlflow_run.rsplit('/', 1)[1]}"
    )
    assert run.status == 200, run.text()
    assert steps["model version"] == f"{mlflow_url}/#/models/demo/versions/2"
    version = context.request.get(
        f"{mlflow_url}/api/2.0/mlflow/model-versions/get?name=demo&version=2"
    )
    assert version.status == 200, version.text()
    tags = {t["key"]: t["value"] for t in version.json()["model_version"]["tags"]}
    assert tags["airflow_run_url"] == f"{url}/dags/mlp_demo_train/runs/{quoted}"  # back to Airflow
    served = context.request.get(url + steps["served version"].split("#")[0])
    assert served.status == 200 and "v2 <b>served</b>" in served.text()
