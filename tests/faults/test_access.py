"""Access (issue 9, item 7): reports behind Airflow's login, credentials only through secrets, a
login on the embedded UI, private embedded state.

The report server is exercised inside Airflow's real API app (``create_app``, the plugin mounted
by Airflow's plugin manager) in a child process, so that Airflow's configuration, auth manager
and metadata DB are those of a fresh ``AIRFLOW_HOME``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO, VENV_BIN

API_PROBE = r"""
import json, os, sys
from fastapi.testclient import TestClient
from airflow.api_fastapi.app import create_app, get_auth_manager
from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

app = create_app("core")
client = TestClient(app, raise_server_exceptions=False)
manager = get_auth_manager()
token = manager.generate_jwt(SimpleAuthManagerUser(username="admin", role="admin"))
viewer = manager.generate_jwt(SimpleAuthManagerUser(username="vera", role="viewer"))
no_role = manager.generate_jwt(SimpleAuthManagerUser(username="nobody", role=None))
report = "/mlplatform/reports/demo/run1/validate/data_docs/index.html"
bearer = lambda t: {"Authorization": f"Bearer {t}"}

def call(url, headers=None, cookies=None):
    client.cookies.clear()
    for k, v in (cookies or {}).items():
        client.cookies.set(k, v)
    r = client.get(url, headers=headers or {})
    return {"status": r.status_code, "type": r.headers.get("content-type", ""), "body": r.text[:2000]}

out = {
    "api_anonymous": call("/api/v2/dags"),
    "anonymous": call(report),
    "bad_token": call(report, bearer("not-a-jwt")),
    "admin": call(report, bearer(token)),
    "viewer": call(report, bearer(viewer)),
    "ui_cookie": call(report, cookies={"_token": token}),
    "no_role": call(report, bearer(no_role)),
    "traversal": call("/mlplatform/reports/demo/run1/validate/data_docs/%2e%2e/%2e%2e/ingest/raw.parquet", bearer(token)),
    "not_report": call("/mlplatform/reports/demo/run1/ingest/raw.parquet", bearer(token)),
    "nul_byte": call("/mlplatform/reports/demo/x%00y/data_docs/index.html", bearer(token)),
}
os.environ["MLP_STORAGE_URI"] = "s3://bucket/runs"  # storage the server cannot read locally
out["broken_storage"] = call(report, bearer(token))
print(json.dumps(out))
"""


@pytest.fixture
def airflow_api_env(mlp_home) -> dict[str, str]:
    """Environment of a fresh, migrated embedded Airflow with the plugin folder of this repo."""
    airflow_home = mlp_home / "airflow"
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{airflow_home / 'airflow.db'}",
        "AIRFLOW__API_AUTH__JWT_SECRET": "tests-only-" + "x" * 64,
        "PYTHONPATH": str(REPO),
    }
    airflow_home.mkdir()
    subprocess.run(
        [str(VENV_BIN / "airflow"), "db", "migrate"],
        env=env, check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    return env


def test_reports_sit_behind_airflow_authentication(airflow_api_env, mlp_home):
    docs = mlp_home / "storage" / "demo" / "run1" / "validate" / "data_docs"
    docs.mkdir(parents=True)
    (docs / "index.html").write_text("<html>suite demo_raw</html>")
    (mlp_home / "storage" / "demo" / "run1" / "ingest").mkdir()
    (mlp_home / "storage" / "demo" / "run1" / "ingest" / "raw.parquet").write_bytes(b"data")

    out = subprocess.run(
        [sys.executable, "-c", API_PROBE],
        capture_output=True, text=True, cwd=REPO, env=airflow_api_env, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])

    assert got["api_anonymous"]["status"] == 401  # Airflow's own API ...
    assert got["anonymous"]["status"] == 401  # ... and the reports answer alike
    assert got["bad_token"]["status"] in (401, 403)
    assert got["no_role"]["status"] == 403
    for who in ("admin", "viewer", "ui_cookie"):
        assert got[who]["status"] == 200 and "suite demo_raw" in got[who]["body"], who
    assert got["traversal"]["status"] == got["not_report"]["status"] == 404
    assert got["nul_byte"]["status"] == 404
    assert got["broken_storage"]["status"] == 500
    for case, answer in got.items():
        body = answer["body"]
        assert "Traceback" not in body and str(mlp_home) not in body and str(REPO) not in body, case
        assert ".py" not in body and "s3://" not in body, case
        if answer["status"] >= 400:
            assert answer["type"].startswith("application/json"), case
            assert len(json.loads(body)["detail"]) < 120, case
