"""Shared fixtures: an isolated platform home per test (MLP_HOME), the repo root, small data."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def use_home(home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point every setting at the platform home ``home`` (created): ``MLP_HOME``, an Airflow home
    inside it, no inherited ``AIRFLOW__*`` setting. ``monkeypatch`` undoes it (a module- or
    session-scoped fixture passes its own ``pytest.MonkeyPatch.context()``)."""
    home.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("MLP_HOME", str(home))
    for key in list(os.environ):
        if key.startswith("AIRFLOW__") or key == "AIRFLOW_HOME":
            monkeypatch.delenv(key)
    monkeypatch.setenv("AIRFLOW_HOME", str(home / "airflow"))
    return home


@pytest.fixture(autouse=True)
def no_mlflow_uri_outlives_its_test() -> Iterator[None]:
    """``mlflow.set_tracking_uri`` / ``set_registry_uri`` (the platform calls them in-process)
    also export ``MLFLOW_TRACKING_URI`` / ``MLFLOW_REGISTRY_URI`` and keep process globals: left
    set, a later test's subprocesses and default-URI clients would read an earlier test's
    registry (two workers' test orders found it). Reset after every test."""
    yield
    if "mlflow" in sys.modules:
        import mlflow

        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        os.environ.pop(key, None)


@pytest.fixture
def mlp_home(tmp_path, monkeypatch) -> Path:
    """A fresh embedded platform home; every setting derives from it."""
    return use_home(tmp_path / "home", monkeypatch)


@pytest.fixture
def pipelines_dir(tmp_path, monkeypatch) -> Path:
    """A copy of pipelines/ that a test may edit (MLP_PIPELINES_PATH points at it)."""
    target = tmp_path / "pipelines"
    shutil.copytree(REPO / "pipelines", target)
    monkeypatch.setenv("MLP_PIPELINES_PATH", str(target))
    return target


@pytest.fixture
def redis_connection() -> Iterator[str]:
    """A fresh redis-server on a free loopback port (``127.0.0.1:PORT``), stopped afterwards."""
    from tests.services import redis_server

    with redis_server() as connection:
        yield connection


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throw-away PostgreSQL cluster for the session (SQLAlchemy URL, trust auth on loopback)."""
    from tests.services import postgres_server

    with postgres_server() as url:
        yield url


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server for the session (its http:// URL)."""
    from tests.services import moto_s3_server

    with moto_s3_server() as url:
        yield url


@dataclass
class S3Bucket:
    """A fresh bucket on the test S3 server and a boto3 client for it."""

    client: Any
    name: str

    def put(self, key: str, body: bytes | Path) -> str:
        """Upload ``body`` (bytes or a file) as ``key``; returns ``s3://bucket/key``."""
        data = body.read_bytes() if isinstance(body, Path) else body
        self.client.put_object(Bucket=self.name, Key=key, Body=data)
        return f"s3://{self.name}/{key}"


@pytest.fixture
def s3(s3_endpoint, monkeypatch) -> S3Bucket:
    """A fresh bucket on the moto server; the platform's settings point at the same endpoint
    (``MLP_S3_ENDPOINT_URL``) with test credentials."""
    import uuid

    import boto3

    for key, value in {
        "MLP_S3_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(key, raising=False)
    bucket = S3Bucket(boto3.client("s3", endpoint_url=s3_endpoint), f"b-{uuid.uuid4().hex[:12]}")
    bucket.client.create_bucket(Bucket=bucket.name)
    return bucket


# ------------------------------------------------------------------------------------ tiers

#: modules whose tests are pure logic on small in-memory or tmp-file inputs: no server, no
#: Airflow metadata DB, no subprocess, no TensorFlow model, no MLflow store; each test well
#: under a second (``make test-unit``)
UNIT_MODULES = frozenset(
    {
        "tests/test_audit.py",
        "tests/test_check.py",
        "tests/test_config.py",
        "tests/test_config_fields.py",
        "tests/test_dag_docs.py",
        "tests/test_docs_reference.py",
        "tests/test_errors.py",
        "tests/test_plugin.py",
        "tests/test_request_log.py",
        "tests/test_storage.py",
        "tests/test_suite_order.py",
        "tests/test_triggers.py",
    }
)
#: fixtures that start a real server: a test using one is at least integration
SERVER_FIXTURES = frozenset({"redis_connection", "postgres_url", "s3_endpoint", "s3"})


def tier(item: pytest.Item) -> str:
    """The tier of a test: ``e2e`` (marked ``e2e`` or ``slow``: a real Airflow DAG run, real
    training, a browser or the installed wheel), ``unit`` (a module of :data:`UNIT_MODULES`, not
    marked ``integration``, no server fixture) or ``integration`` (the rest: real libraries, servers and subprocesses
    on small data)."""
    if item.get_closest_marker("e2e") or item.get_closest_marker("slow"):
        return "e2e"
    if item.get_closest_marker("integration"):  # a heavy test in a unit module says so itself
        return "integration"
    module = item.path.relative_to(REPO).as_posix()
    if module in UNIT_MODULES and not SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
        return "unit"
    return "integration"


#: files run in this order of their heaviest tier (see :func:`heaviest_first`)
TIER_ORDER = ("e2e", "integration", "unit")


def heaviest_first(items: list[pytest.Item], tiers: dict[str, str]) -> list[pytest.Item]:
    """``items`` with whole files reordered: files holding an end-to-end test first, then
    integration files, then unit files; the files of one rank, and the tests of one file, keep
    their collection order (``test_end_to_end.py``'s tests build on each other in order).

    Why: ``--dist loadfile`` hands files to the xdist workers in this order, each worker taking
    the next file when it is done, so the long files start early and the short ones fill the
    last minutes of both workers (longest-first scheduling). xdist's own default order (most
    tests first) ran the single-test end-to-end files last, where one could keep one worker busy
    for minutes while the other had nothing left (``make test`` passes ``--no-loadscope-reorder``
    so that this order is the one used)."""
    rank: dict[Path, int] = {}
    for item in items:
        r = TIER_ORDER.index(tiers[item.nodeid])
        rank[item.path] = min(rank.get(item.path, r), r)
    return sorted(items, key=lambda item: rank[item.path])  # stable: ties keep their order


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test with its tier (``-m unit``, ``-m integration``, ``-m e2e``); ``slow``
    stays an alias of ``e2e``, so ``-m "not slow"`` still skips the end-to-end tier. Then order
    the files heaviest tier first (:func:`heaviest_first`)."""
    tiers = {}
    for item in items:
        kind = tiers[item.nodeid] = tier(item)
        item.add_marker(kind)
        if kind == "e2e":
            item.add_marker("slow")
    items[:] = heaviest_first(items, tiers)
