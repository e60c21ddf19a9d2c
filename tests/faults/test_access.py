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
from pathlib import Path

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
login = {"username": "admin", "password": os.environ["UI_PASSWORD"]}
logged_in = client.post("/auth/token", json=login)
wrong = client.post("/auth/token", json={**login, "password": "guess"})
report = "/mlplatform/reports/demo/run1/validate/data_docs/index.html"
bearer = lambda t: {"Authorization": f"Bearer {t}"}

def pack(r):
    return {"status": r.status_code, "type": r.headers.get("content-type", ""), "body": r.text[:2000]}

def call(url, headers=None, cookies=None):
    client.cookies.clear()
    for k, v in (cookies or {}).items():
        client.cookies.set(k, v)
    return pack(client.get(url, headers=headers or {}))

out = {
    "login": pack(logged_in) | {"body": ""},
    "login_wrong": pack(wrong),
    "no_login_token": call("/auth/token"),  # the all-admins shortcut is off
    "logged_in": call(report, bearer(logged_in.json().get("access_token"))),
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
# a report of remote storage that this host has no copy of, which cannot be fetched
os.environ["MLP_STORAGE_URI"] = "nosuch://bucket/runs"
out["broken_storage"] = call(report.replace("run1", "run2"), bearer(token))
print(json.dumps(out))
"""


@pytest.fixture
def airflow_api_env(mlp_home, monkeypatch) -> dict[str, str]:
    """The embedded Airflow environment of the platform (``Settings.airflow_env``: this repo's
    plugins, SQLite, the UI login), migrated, with the UI password in ``UI_PASSWORD``."""
    from mlplatform.airflow_runner import ensure_ui_login
    from mlplatform.settings import Settings

    for key in ("MLP_UI_ALL_ADMINS", "MLP_STORAGE_URI", "MLP_PIPELINES_PATH"):
        monkeypatch.delenv(key, raising=False)
    settings = Settings()
    env = {
        **os.environ,
        **settings.airflow_env(),
        "AIRFLOW__API_AUTH__JWT_SECRET": "tests-only-" + "x" * 64,
        "PYTHONPATH": str(REPO),
        "UI_PASSWORD": ensure_ui_login(settings).password,
    }
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

    assert got["login"]["status"] == 201 and got["login_wrong"]["status"] == 401
    assert got["no_login_token"]["status"] == 403
    assert got["logged_in"]["status"] == 200  # the generated password logs in
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
        assert ".py" not in body and "s3://" not in body and "nosuch:" not in body, case
        if answer["status"] >= 400:
            assert answer["type"].startswith("application/json"), case
            assert len(json.loads(body)["detail"]) < 120, case


# -- credentials reach pods only through secrets -------------------------------------------------

PASSWORD = "hunter2-Zq9"
SECRET_URI = f"http://bob:{PASSWORD}@mlflow.internal:5000"


@pytest.fixture
def k8s_env(mlp_home, pipelines_dir, monkeypatch):
    """Production-like settings whose MLflow tracking URI carries a password."""
    monkeypatch.setenv("MLP_MLFLOW_TRACKING_URI", SECRET_URI)
    monkeypatch.setenv("MLP_MLFLOW_ARTIFACT_URI", "s3://mlp-bucket/mlartifacts")
    monkeypatch.setenv("MLP_STORAGE_URI", "s3://mlp-bucket/runs")
    for key in list(os.environ):
        if key.startswith("MLP_K8S_"):
            monkeypatch.delenv(key)
    return pipelines_dir


def rendered_manifests() -> dict[str, dict]:
    """The single pod as the operator renders it and the MPIJob of a 2-worker pipeline."""
    from mlplatform import k8s
    from mlplatform.settings import get_settings
    from tests.test_kubernetes_training import (
        RUN_ID,
        TRAINING_SET,
        demo_cfg,
        make_context,
        make_operator,
        rendered_pod,
    )

    op, context = make_operator(), make_context()
    pod = rendered_pod(op, context)
    cfg = demo_cfg(workers=2, gpus_per_worker=4)
    spec = op.trainer_spec(context, get_settings(), cfg, k8s.KubernetesSettings())
    job = k8s.mpijob_manifest(
        cfg, spec, settings=get_settings(), name="mlp-demo-train-0123456789", run_id=RUN_ID
    )
    assert spec.train_uri == TRAINING_SET["train_uri"]
    return {"pod": pod, "mpijob": job}


def test_tracking_uri_with_password_reaches_pods_only_through_the_secret(k8s_env, monkeypatch):
    import kubernetes_validate

    from tests.test_kubernetes_training import K8S_VERSION, crd_validator, validate_pod_template

    monkeypatch.setenv("MLP_K8S_MLFLOW_SECRET", "mlplatform-mlflow")
    manifests = rendered_manifests()
    for kind, manifest in manifests.items():
        text = json.dumps(manifest)
        for leak in (PASSWORD, "bob:", "mlflow.internal", SECRET_URI):
            assert leak not in text, f"{leak!r} is a literal of the {kind}"
    pod, job = manifests["pod"], manifests["mpijob"]
    assert kubernetes_validate.validate(pod, desired_version=K8S_VERSION, strict=True)
    crd_validator().validate(job)
    replicas = job["spec"]["mpiReplicaSpecs"]
    containers = [pod["spec"]["containers"][0]]
    for role in ("Launcher", "Worker"):
        validate_pod_template(replicas[role]["template"])
        containers.append(replicas[role]["template"]["spec"]["containers"][0])
    for container in containers:
        env = {e["name"]: e for e in container["env"]}
        assert env["MLFLOW_TRACKING_URI"] == {
            "name": "MLFLOW_TRACKING_URI",
            "valueFrom": {
                "secretKeyRef": {
                    "name": "mlplatform-mlflow",
                    "key": "MLFLOW_TRACKING_URI",
                    "optional": False,
                }
            },
        }
        for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
            assert env[key]["valueFrom"]["secretKeyRef"]["optional"] is True
        if "command" in container:
            spec = json.loads(container["command"][-1])
            assert "tracking_uri" not in spec["mlflow"] and spec["mlflow"]["experiment"] == "demo"


def test_tracking_uri_with_password_and_no_secret_is_refused(k8s_env, monkeypatch):
    from airflow.sdk.exceptions import AirflowFailException

    from mlplatform import k8s
    from tests.test_kubernetes_training import make_context, make_operator

    with pytest.raises(k8s.CredentialsInManifest) as err:
        rendered_manifests()
    message = str(err.value)
    assert "\n" not in message and PASSWORD not in message and "bob" not in message
    assert "http://***@mlflow.internal:5000" in message and "MLP_K8S_MLFLOW_SECRET" in message
    with pytest.raises(AirflowFailException) as failed:  # the task fails, without retries
        make_operator().execute(make_context())
    assert str(failed.value) == message

    monkeypatch.setenv("MLP_MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
    monkeypatch.setenv(
        "MLP_K8S_EXTRA_ENV", json.dumps({"DB_URL": f"postgresql://u:{PASSWORD}@db/x"})
    )
    with pytest.raises(k8s.CredentialsInManifest, match=r"^env DB_URL=postgresql://\*\*\*@db/x "):
        rendered_manifests()


def test_trainer_takes_the_tracking_uri_from_its_environment(monkeypatch, tmp_path):
    from training.spec import SpecError, parse_spec, redact_uri

    raw = {
        "label": "y",
        "numeric_features": ["a"],
        "categorical_features": [],
        "model": {},
        "train_uri": str(tmp_path / "t.parquet"),
        "holdout_uri": str(tmp_path / "h.parquet"),
        "output_dir": str(tmp_path / "out"),
        "mlflow": {"experiment": "demo", "tags": {}},
    }
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(SpecError, match="mlflow.tracking_uri is missing and MLFLOW_TRACKING_URI"):
        parse_spec(raw).resolve()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", SECRET_URI)
    assert parse_spec(raw).resolve().mlflow.tracking_uri == SECRET_URI
    assert "tracking_uri" not in raw["mlflow"]  # the spec itself is left as it was
    assert redact_uri(SECRET_URI) == "http://***@mlflow.internal:5000"  # mlflow_run.json
    assert redact_uri("sqlite:////x/mlflow.db") == "sqlite:////x/mlflow.db"


# -- the embedded UI has a login; embedded state is private --------------------------------------

UI_PROBE = r"""
import os, sys
def fake_exec(path, argv):
    print("EXEC " + " ".join(argv[1:]), flush=True)
    os._exit(0)
os.execv = fake_exec
from mlplatform.cli import main
sys.exit(main(sys.argv[1:]))
"""


def run_ui(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """``mlplatform airflow ARGS`` with ``MLP_HOME=home``, stopped where it would exec Airflow."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLP_"))}
    out = subprocess.run(
        [sys.executable, "-c", UI_PROBE, "airflow", *args],
        capture_output=True, text=True, cwd=REPO, timeout=300,
        env={**clean, "MLP_HOME": str(home), **env},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    return out


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_embedded_airflow_has_a_login_unless_opted_out(monkeypatch, tmp_path):
    from mlplatform.settings import Settings

    for key in ("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "MLP_UI_ALL_ADMINS"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MLP_HOME", str(tmp_path / "h"))
    env = Settings().airflow_env()
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS"] == "False"
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] == "admin:admin"
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"] == str(
        tmp_path / "h" / "airflow" / "simple_auth_manager_passwords.json.generated"
    )
    monkeypatch.setenv("MLP_UI_ALL_ADMINS", "true")
    assert Settings().airflow_env()["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS"] == "True"


def test_ui_prints_url_and_login_and_state_is_private(tmp_path):
    home = tmp_path / "fresh-home"  # created by the CLI
    out = run_ui(home, "standalone")
    airflow_home = home / "airflow"
    password_file = airflow_home / "simple_auth_manager_passwords.json.generated"
    password = json.loads(password_file.read_text())["admin"]
    assert len(password) == 16
    lines = out.stdout.splitlines()
    assert lines[0] == "Airflow UI: http://localhost:8080"
    assert lines[1] == f"  log in as 'admin' with password {password}"
    assert str(password_file) in lines[2]
    assert lines[-1] == "EXEC standalone"
    assert mode(home) == 0o700 and mode(airflow_home) == 0o700
    assert mode(airflow_home / "airflow.db") == 0o600  # created by `airflow db migrate`
    assert mode(password_file) == 0o600

    again = run_ui(home, "api-server", "--port", "8099", AIRFLOW__API__PORT="8099")
    assert again.stdout.splitlines()[:2] == [
        "Airflow UI: http://localhost:8099",
        f"  log in as 'admin' with password {password}",  # kept, not regenerated
    ]
    assert "log in" not in run_ui(home, "dags", "list").stdout  # not a UI command
    opted_out = run_ui(home, "standalone", MLP_UI_ALL_ADMINS="true").stdout.splitlines()
    assert opted_out[0].startswith("Airflow UI: http://localhost:8080  (no login")


def test_existing_state_is_tightened(mlp_home):
    airflow_home = mlp_home / "airflow"
    airflow_home.mkdir(mode=0o755)
    (airflow_home / "airflow.db").write_bytes(b"")  # an empty SQLite DB: no migration needed
    password_file = airflow_home / "simple_auth_manager_passwords.json.generated"
    password_file.write_text('{"admin": "earlier-secret"}\n')  # as Airflow wrote it before
    for path in (mlp_home, airflow_home, airflow_home / "airflow.db", password_file):
        path.chmod(0o755 if path.is_dir() else 0o644)

    out = run_ui(mlp_home, "standalone")
    assert "password earlier-secret" in out.stdout
    assert (mode(mlp_home), mode(airflow_home)) == (0o700, 0o700)
    assert (mode(airflow_home / "airflow.db"), mode(password_file)) == (0o600, 0o600)


def test_a_shared_sticky_directory_is_left_alone(tmp_path):
    from mlplatform.permissions import private_dir

    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    private_dir(shared)
    assert shared.stat().st_mode & 0o7777 == 0o1777
    assert mode(private_dir(shared / "mine")) == 0o700
