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


@pytest.fixture
def mlp_home(tmp_path, monkeypatch) -> Path:
    """A fresh embedded platform home; every setting derives from it."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("MLP_HOME", str(home))
    for key in list(os.environ):
        if key.startswith("AIRFLOW__") or key == "AIRFLOW_HOME":
            monkeypatch.delenv(key)
    monkeypatch.setenv("AIRFLOW_HOME", str(home / "airflow"))
    return home


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
