"""``mlplatform.inprocess_api``: ``dag.test``'s in-process Execution API built for the Task SDK
client's API version only. Fails loudly when Airflow or Cadwyn change what it relies on."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import REPO

PROBE = r"""
import json
from mlplatform.airflow_runner import prepare_airflow
prepare_airflow()
from mlplatform.inprocess_api import serve_client_version_only
served = serve_client_version_only()

from airflow.api_fastapi.execution_api.app import create_task_execution_api_app
from airflow.api_fastapi.execution_api.versions import bundle
from airflow.sdk.api.client import ServerResponseError
from airflow.sdk.api.datamodels._generated import API_VERSION
from airflow.sdk.execution_time.supervisor import InProcessTestSupervisor, in_process_api_server


def routes(app, version):
    # every route of one version: path, methods, name, request and response JSON schemas
    out = {}
    for r in app.router.versioned_routers[version].routes:
        if not hasattr(r, "methods"):
            continue
        body = getattr(r, "body_field", None)
        body = getattr(body.field_info.annotation, "model_json_schema", None) if body else None
        model = getattr(getattr(r, "response_model", None), "model_json_schema", None)
        out[f"{sorted(r.methods)} {r.path}"] = [
            r.name, body() if body else None, model() if model else None
        ]
    return out


app = in_process_api_server().app
full = create_task_execution_api_app()  # Airflow's own app, every version
full._cadwyn_initialize()
client = InProcessTestSupervisor._api_client()  # what dag.test's tasks use
ping = client.get("health/ping")
try:
    client.get("health/ping", headers={"airflow-api-version": bundle.versions[-1].value})
    older = "served"
except ServerResponseError as exc:
    older = exc.response.status_code
print(json.dumps({
    "served": served,
    "client_version": API_VERSION,
    "client_header": client.headers.get("airflow-api-version"),
    "airflow_versions": [v.value for v in bundle.versions],
    "versions_built": list(app.router.versioned_routers),
    "same_routes": routes(app, API_VERSION) == routes(full, API_VERSION),
    "route_count": len(routes(app, API_VERSION)),
    "ping": [ping.status_code, ping.json()],
    "older": older,
}))
"""


def test_the_in_process_api_serves_exactly_the_clients_version(mlp_home):
    """The runner's Execution API is built for the version the client sends (the newest) and
    nothing else, with exactly the routes and schemas Airflow's full app serves for that
    version; the client's requests are answered and an older version is refused."""
    env = {**os.environ, "MLP_HOME": str(mlp_home)}
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=REPO, env=env,
        timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    # if this fails, Airflow changed what mlplatform.inprocess_api relies on: the runner then
    # falls back to Airflow's normal (slower) path; adapt the module to the new Airflow
    assert got["served"] == got["client_version"] == got["client_header"], got
    assert got["airflow_versions"][0] == got["client_version"]
    assert len(got["airflow_versions"]) > 1  # there was something to leave out
    assert got["versions_built"] == [got["client_version"]]
    assert got["same_routes"] and got["route_count"] > 20, got
    assert got["ping"][0] == 200
    assert got["older"] == 404
