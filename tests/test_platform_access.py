"""The platform view inside Airflow's real API app (``create_app``, the plugin mounted by
Airflow's plugin manager, the Simple auth manager, a migrated SQLite DB with the DAGs
serialized): anonymous requests are refused, a viewer reads but cannot act, an admin's retrain
and rollback buttons create manual runs recorded as triggered by that user."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO, VENV_BIN
from tests.faults.test_access import airflow_api_env  # noqa: F401 - the fixture

PROBE = r"""
import json
from fastapi.testclient import TestClient
from airflow.api_fastapi.app import create_app, get_auth_manager
from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

app = create_app("core")
client = TestClient(app, raise_server_exceptions=False)
manager = get_auth_manager()
admin = {"Authorization": "Bearer " + manager.generate_jwt(SimpleAuthManagerUser(username="admin", role="admin"))}
viewer = {"Authorization": "Bearer " + manager.generate_jwt(SimpleAuthManagerUser(username="vera", role="viewer"))}

def pack(r):
    return {"status": r.status_code, "type": r.headers.get("content-type", ""), "body": r.text[:3000],
            "location": r.headers.get("location", "")}

out = {
    "anonymous_page": pack(client.get("/mlplatform/")),
    "anonymous_json": pack(client.get("/mlplatform/api/models")),
    "anonymous_rollback": pack(client.post("/mlplatform/models/demo/rollback", data={"to_version": ""})),
    "viewer_page": pack(client.get("/mlplatform/models/demo", headers=viewer)),
    "viewer_retrain": pack(client.post("/mlplatform/models/demo/retrain", headers=viewer, follow_redirects=False)),
    "admin_page": pack(client.get("/mlplatform/", headers=admin)),
    "admin_retrain": pack(client.post("/mlplatform/models/demo/retrain", data={"data_uri": ""}, headers=admin, follow_redirects=False)),
    "plugins": pack(client.get("/api/v2/plugins", headers=admin)),
}
from airflow.models.dagrun import DagRun
from airflow.utils.session import create_session
from sqlalchemy import select
with create_session() as session:
    out["runs"] = [
        {"dag_id": r.dag_id, "run_type": str(r.run_type), "user": r.triggering_user_name, "conf": r.conf}
        for r in session.scalars(select(DagRun))
    ]
print(json.dumps(out))
"""


def test_platform_view_behind_airflows_login(airflow_api_env):  # noqa: F811
    subprocess.run(
        [str(VENV_BIN / "airflow"), "dags", "reserialize"],
        env=airflow_api_env, check=True, capture_output=True, timeout=600, cwd=REPO,
    )  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        capture_output=True, text=True, cwd=REPO, env=airflow_api_env, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])

    for case in ("anonymous_page", "anonymous_json", "anonymous_rollback"):
        assert got[case]["status"] == 401, case
    assert got["viewer_page"]["status"] == 200 and "Model demo" in got["viewer_page"]["body"]
    assert got["viewer_retrain"]["status"] == 403  # reading is not acting
    assert got["admin_page"]["status"] == 200 and "mlp_demo_train" in got["admin_page"]["body"]
    assert got["admin_retrain"]["status"] == 303, got["admin_retrain"]
    assert "triggered%20mlp_demo_train%20run%20manual__" in got["admin_retrain"]["location"]
    assert got["runs"] == [
        {
            "dag_id": "mlp_demo_train",
            "run_type": "manual",
            "user": "admin",
            "conf": {"data_uri": ""},
        }
    ]
    views = [v for p in json.loads(got["plugins"]["body"])["plugins"] for v in p["external_views"]]
    assert {"name": "ML platform", "href": "/mlplatform/"}.items() <= views[0].items()
