"""``mlplatform ui`` (``make ui``, issue 14 item 7): a real start of Airflow's four services
prints the URL and the login, serves the platform view behind the login, and SIGTERM stops
every process it started."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import psutil
import pytest

from tests.conftest import REPO


def _cmdline(proc: psutil.Process) -> str:
    try:
        return " ".join(proc.cmdline())
    except psutil.Error:  # a short-lived child that is already gone (or a zombie)
        return ""


@pytest.mark.slow
def test_ui_prints_url_and_login_and_sigterm_leaves_no_process(mlp_home, monkeypatch):
    monkeypatch.delenv("MLP_UI_ALL_ADMINS", raising=False)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlplatform.cli", "ui", "--port", "0"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
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
        assert re.search(r"log in as 'admin' with password \S{16}", text), text
        tree = psutil.Process(proc.pid).children(recursive=True)
        names = " ".join(map(_cmdline, tree))
        for service in ("api_server", "scheduler", "dag-processor", "triggerer"):
            assert service in names.replace("api-server", "api_server"), names
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{url}/mlplatform/", timeout=30)
        assert refused.value.code == 401  # the platform view sits behind the login
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:  # a failed check above: still stop what the command started
            proc.terminate()
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
    assert proc.returncode == 0, out
    assert re.search(r"stopped \d+ Airflow process", out), out
    _, alive = psutil.wait_procs(tree, timeout=10)
    assert alive == [], [p.pid for p in alive]
