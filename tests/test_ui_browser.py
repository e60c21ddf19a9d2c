"""The platform view in a real browser (issue 14, item 8, in part): headless Chromium from the
Debian package, driven by Playwright with ``executable_path``, against ``mlplatform ui``.

Logged in the way Airflow's login page leaves a browser (the ``_token`` cookie, from Airflow's own
``/auth/token`` with the generated password), it opens "ML platform" in Airflow's navigation
(``/plugin/mlplatform``: the plugin's page in an iframe), follows the model link, and presses
"Trigger retrain": the form posts from the browser (same-origin check included) and the page
reports the run Airflow created. Screenshots go to ``test-artifacts/ui/``."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.conftest import REPO

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = REPO / "test-artifacts" / "ui"


@pytest.mark.slow
@pytest.mark.skipif(not shutil.which("chromium"), reason="no chromium: apt-get install -y chromium")
def test_platform_view_in_a_browser(mlp_home, monkeypatch):
    from playwright.sync_api import sync_playwright

    monkeypatch.delenv("MLP_UI_ALL_ADMINS", raising=False)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlplatform.cli", "ui", "--port", "0"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        # this checkout's mlplatform in every service, whichever checkout the environment installed
        env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)},
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
            page.goto(f"{url}/plugin/mlplatform", timeout=120_000)
            frame = page.frame_locator("iframe")
            frame.get_by_text("ML platform: pipelines and models").wait_for(timeout=120_000)
            page.screenshot(path=str(ARTIFACTS / "1-nav-platform-view.png"))
            frame.get_by_role("link", name="demo", exact=True).click()
            frame.get_by_text("Model demo").wait_for(timeout=60_000)
            page.screenshot(path=str(ARTIFACTS / "2-model-page.png"))
            frame.get_by_role("button", name="Trigger retrain").click()
            message = frame.locator(".msg")
            message.wait_for(timeout=60_000)
            page.screenshot(path=str(ARTIFACTS / "3-retrain-triggered.png"))
            assert re.match(r"triggered mlp_demo_train run manual__", message.inner_text()), (
                message.inner_text()
            )
            browser.close()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
    assert proc.returncode == 0
