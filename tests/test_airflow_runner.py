"""The runner's recovery when two first runs collide registering their DAG in the metadata DB."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO

PROBE = r"""
from mlplatform.airflow_runner import prepare_airflow, _discard_failed_session, _dag_run_exists
prepare_airflow()
from airflow import settings
from airflow.models.dagbundle import DagBundleModel
from sqlalchemy.exc import IntegrityError, PendingRollbackError

session = settings.Session()
session.add(DagBundleModel(name="twice"))
session.commit()
session.add(DagBundleModel(name="twice"))  # what a concurrent runner's registration does
try:
    session.flush()
except IntegrityError:
    pass
try:
    _dag_run_exists("mlp_demo_train", "manual__x")
    print("no error without the reset")
except PendingRollbackError:
    print("refused until rolled back")
_discard_failed_session()
print("exists:", _dag_run_exists("mlp_demo_train", "manual__x"))
"""


def test_a_collided_registration_leaves_a_session_the_retry_can_use(mlp_home):
    """After the UNIQUE collision the thread's ORM session refuses every query; the runner's
    retry must discard it first (found by three concurrent first runs in CI)."""
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=REPO, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    assert lines[-2:] == ["refused until rolled back", "exists: False"], out.stdout


def test_a_fresh_home_gets_one_airflow_cfg_before_any_service_starts(mlp_home, monkeypatch):
    """The four services start at once and each `airflow` command writes a missing airflow.cfg
    with its own generated secrets; a scheduler-signed task token was then "Invalid auth token"
    to the API server. prepare_airflow writes it once, first (here Airflow's configuration is
    already loaded in this process for another home, so a child process writes it)."""
    from mlplatform.airflow_runner import prepare_airflow
    from mlplatform.settings import get_settings

    settings = get_settings()
    for key, value in settings.airflow_env().items():  # prepare_airflow exports these: the
        monkeypatch.setenv(key, value)  # test gives them back (MLP_EXPECTATIONS_PATH among them)
    cfg = settings.airflow_home / "airflow.cfg"
    assert not cfg.exists()
    prepare_airflow()
    text = cfg.read_text()
    secret = next(line for line in text.splitlines() if line.startswith("jwt_secret = "))
    assert len(secret) > len("jwt_secret = ") + 8
    assert cfg.stat().st_mode & 0o777 == 0o600
    prepare_airflow()  # a later start reads it, never writes another
    assert cfg.read_text() == text
