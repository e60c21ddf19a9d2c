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
