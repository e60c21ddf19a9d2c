"""``AirflowServices``' start order: the scheduler and the triggerer start only once the API
server answers, because every task runner they start calls its execution API (a task queued
before it listened failed at once with "Connection refused")."""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from typing import Any

import pytest

from mlplatform import airflow_services
from mlplatform.airflow_services import AirflowServices
from mlplatform.settings import get_settings


class _Health:
    status = 200

    def __enter__(self) -> _Health:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class _Started(list[str]):
    dead_api = False


@pytest.fixture
def started(mlp_home, monkeypatch) -> _Started:
    """The services started, in order; a harmless Python process stands in for each (the
    API server's exits with 3 when the test sets ``dead_api``), nothing else of Airflow runs."""
    names = _Started()
    real_popen = subprocess.Popen

    def popen(args: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        names.append(args[1])  # ``airflow <service> ...``
        dead = args[1] == "api-server" and names.dead_api
        code = "raise SystemExit(3)" if dead else "import time; time.sleep(60)"
        return real_popen([sys.executable, "-c", code], **kwargs)

    monkeypatch.setattr(airflow_services.subprocess, "Popen", popen)
    monkeypatch.setattr(airflow_services.time, "sleep", lambda s: None)
    monkeypatch.setattr("mlplatform.stages.registry.ensure_registry", lambda settings: None)
    monkeypatch.setattr(AirflowServices, "env", lambda self: {})
    return names


def test_scheduler_and_triggerer_start_only_once_the_api_server_answers(started, monkeypatch):
    answers: list[str] = []

    def urlopen(url: str, timeout: float) -> _Health:
        answers.append(url)
        if len(answers) < 3:
            raise ConnectionRefusedError(111, "Connection refused")  # not listening yet
        return _Health()

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    services = AirflowServices(get_settings())
    try:
        services.start()
        assert started == ["api-server", "dag-processor"]  # nothing that runs tasks yet
        services.wait_ready(timeout_s=60)
        assert len(answers) == 3 and answers[-1].endswith("/api/v2/monitor/health")
        assert started == ["api-server", "dag-processor", "scheduler", "triggerer"]
        assert sorted(services.procs) == sorted(started)
    finally:
        assert services.stop(grace_s=5) == 4


def test_a_dead_api_server_is_named_and_nothing_else_starts(started):
    started.dead_api = True
    services = AirflowServices(get_settings())
    try:
        services.start()
        services.procs["api-server"].wait(timeout=30)
        with pytest.raises(
            airflow_services.ServicesError, match="airflow api-server exited with 3"
        ):
            services.wait_ready(timeout_s=60)
        assert started == ["api-server", "dag-processor"]
    finally:
        services.stop(grace_s=5)
