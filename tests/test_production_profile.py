"""The demo pipeline on the production profile, against real servers on loopback.

The fixture starts, each on a free loopback port and always stopped: PostgreSQL (Debian
binaries; one database for Airflow's metadata, one for the MLflow backend), moto's S3 server
(the run storage, the DVC remote and MLflow's artifacts, all in one bucket), redis-server
(Feast's online store) and an ``mlflow server`` (PostgreSQL backend, S3 artifacts). Airflow's
database is migrated as a deployment does (``airflow db migrate``). Then ``mlplatform demo``
runs the training DAG through Airflow with only environment variables changed - nothing is
patched - and the test checks what must be true of that profile: the run succeeded (in
PostgreSQL), every stage's output and its ``_SUCCESS`` marker are in the bucket, the data batch
is in the DVC remote and the Feast offline files beside the run storage, the model version's
artifacts are on S3, the features are in Redis, and the served model answered.

Slow (servers, Airflow, TensorFlow): ``-m "not slow"`` skips it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from mlplatform.contracts import TRAIN_STAGES
from tests.conftest import REPO
from tests.services import (
    _stop,
    _wait_for_port,
    free_port,
    moto_s3_server,
    postgres_server,
    redis_server,
)

pytestmark = pytest.mark.slow

BUCKET = "mlp"
BIN = Path(sys.executable).parent
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _create_databases(pg_url: str, *names: str) -> None:
    import psycopg

    conninfo = pg_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for name in names:
            conn.execute(f'CREATE DATABASE "{name}"')


def _mlflow_server(backend: str, artifacts: str, env: dict[str, str], log: Path):
    """``mlflow server`` on a free port (PostgreSQL backend, S3 artifacts written by the
    clients themselves); returns (process, URL) once ``/health`` answers."""
    port = free_port()
    cmd = [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
           "--backend-store-uri", backend, "--default-artifact-root", artifacts,
           "--no-serve-artifacts", "--workers", "1"]  # fmt: skip
    out = open(log, "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for_port(port, proc, "mlflow server", timeout_s=240)
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=5).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
    except BaseException:
        _stop(proc)
        out.close()
        raise
    return proc, url, out


@pytest.fixture
def production(tmp_path, monkeypatch) -> Iterator[dict[str, str]]:
    """The servers and the environment of the production profile (see the module doc)."""
    import boto3

    with ExitStack() as stack:
        pg = stack.enter_context(postgres_server())
        s3 = stack.enter_context(moto_s3_server())
        redis = stack.enter_context(redis_server())
        _create_databases(pg, "airflow", "mlflow")
        boto3.client("s3", endpoint_url=s3, **_boto_credentials()).create_bucket(Bucket=BUCKET)
        base = pg.rsplit("/", 1)[0]
        home = tmp_path / "home"
        env = {
            **{
                k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLP_", "AWS_"))
            },
            **CREDENTIALS,
            "MLP_HOME": str(home),
            "AIRFLOW_HOME": str(home / "airflow"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"{base}/airflow",
            # Airflow 3's async engine would default to asyncpg; psycopg 3 speaks async too
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": f"{base}/airflow",
            "MLP_STORAGE_URI": f"s3://{BUCKET}/storage",
            "MLP_DVC_REMOTE": f"s3://{BUCKET}/dvc",
            "MLP_MLFLOW_ARTIFACT_URI": f"s3://{BUCKET}/mlflow",
            "MLP_S3_ENDPOINT_URL": s3,
            "MLP_FEAST_ONLINE_STORE": "redis",
            "MLP_FEAST_REDIS_CONNECTION": redis,
        }
        # Airflow's migration and the MLflow server's (its own schema in the other database)
        # run side by side: each spends much of its time waiting on PostgreSQL
        migrate_log = tmp_path / "airflow-db-migrate.log"
        with open(migrate_log, "wb") as out:
            migrate = subprocess.Popen(
                [str(BIN / "airflow"), "db", "migrate"], env=env, stdout=out,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        stack.callback(_stop, migrate)
        # the platform's clients get MLFLOW_S3_ENDPOINT_URL from MLP_S3_ENDPOINT_URL themselves
        server_env = {**env, "MLFLOW_S3_ENDPOINT_URL": s3}
        proc, url, log = _mlflow_server(
            f"{base}/mlflow", f"s3://{BUCKET}/mlflow", server_env, tmp_path / "mlflow-server.log"
        )
        stack.callback(log.close)
        stack.callback(_stop, proc)
        env["MLP_MLFLOW_TRACKING_URI"] = url
        env["MLP_MLFLOW_UI_URL"] = url
        assert migrate.wait(timeout=600) == 0, migrate_log.read_text()[-4000:]
        yield {**env, "PG_URL": base, "S3_URL": s3, "REDIS": redis, "MLFLOW_URL": url}


def _boto_credentials() -> dict[str, str]:
    return {
        "aws_access_key_id": CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        "region_name": CREDENTIALS["AWS_DEFAULT_REGION"],
    }


def _keys(client, prefix: str) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def test_demo_runs_on_postgres_s3_redis_and_an_mlflow_server(production):
    import boto3
    import psycopg
    import redis as redis_client
    from mlflow import MlflowClient

    env = {
        k: v for k, v in production.items() if k not in ("PG_URL", "S3_URL", "REDIS", "MLFLOW_URL")
    }
    started = time.monotonic()
    demo = subprocess.run(
        [sys.executable, "-m", "mlplatform.cli", "demo", "--rows", "1500"],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=1500,
    )  # fmt: skip
    print(f"demo on the production profile: {time.monotonic() - started:.0f}s\n{demo.stdout}")
    assert demo.returncode == 0, demo.stdout[-4000:] + demo.stderr[-4000:]
    run_id = re.search(r"^run (\S+): success", demo.stdout, re.M).group(1)
    assert "answered by model demo version 1" in demo.stdout
    predictions = [float(m) for m in re.findall(r"-> \[?([0-9.eE-]+)\]?$", demo.stdout, re.M)]
    assert len(predictions) == 3 and all(0.0 <= p <= 1.0 for p in predictions)

    # Airflow's metadata is in PostgreSQL: the run is there, successful
    pg = production["PG_URL"].replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(f"{pg}/airflow") as conn:
        (state,) = conn.execute(
            "SELECT state FROM dag_run WHERE dag_id = 'mlp_demo_train' AND run_id = %s", (run_id,)
        ).fetchone()
    assert state == "success"

    # every stage's output, its summary and its _SUCCESS marker are in the bucket
    s3 = boto3.client("s3", endpoint_url=production["S3_URL"], **_boto_credentials())
    from mlplatform.storage import run_key

    run_prefix = f"storage/demo/{run_key(run_id)}/"
    keys = set(_keys(s3, run_prefix))
    for stage in TRAIN_STAGES:
        for name in ("summary.json", "_SUCCESS"):
            assert f"{run_prefix}{stage}/{name}" in keys, f"{stage}/{name} not in the bucket"
    assert f"{run_prefix}ingest/batch.parquet" in keys or any(
        k.startswith(f"{run_prefix}ingest/") and k.endswith(".parquet") for k in keys
    )
    assert f"{run_prefix}train/saved_model/saved_model.pb" in keys
    assert f"{run_prefix}training_set/train.parquet" in keys
    assert _keys(s3, "dvc/files/md5/"), "the batch is not in the DVC remote"
    assert _keys(s3, "storage/demo/feast/offline/"), "the Feast offline files are not in S3"

    # the MLflow backend is PostgreSQL, the model version's artifacts are on S3
    client = MlflowClient(
        tracking_uri=production["MLFLOW_URL"], registry_uri=production["MLFLOW_URL"]
    )
    version = client.get_model_version_by_alias("demo", "champion")
    assert int(version.version) == 1
    assert version.tags["training_set_uri"].startswith(f"s3://{BUCKET}/storage/demo/")
    run = client.get_run(version.run_id)
    assert run.info.artifact_uri.startswith(f"s3://{BUCKET}/mlflow/")
    source = client.get_model_version_download_uri("demo", version.version)
    assert source.startswith(f"s3://{BUCKET}/mlflow/"), source
    model_keys = _keys(s3, source.removeprefix(f"s3://{BUCKET}/").rstrip("/") + "/")
    assert any(k.endswith("saved_model.pb") for k in model_keys), model_keys
    with psycopg.connect(f"{pg}/mlflow") as conn:
        assert conn.execute("SELECT name FROM registered_models").fetchall() == [("demo",)]

    # Feast wrote the online features to Redis
    host, port = production["REDIS"].split(":")
    assert redis_client.Redis(host=host, port=int(port)).dbsize() > 0
