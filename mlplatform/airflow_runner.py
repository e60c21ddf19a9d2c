"""Run one DAG run of a pipeline through Airflow itself (``dag.test``) in this process.

Used by ``mlplatform run`` in a child process whose output goes to a log file, so the parent can
print a clean per-stage summary. Usage::

    python -m mlplatform.airflow_runner DAG_ID RESULT_JSON [--conf JSON] [--logical-date ISO]

Sets up the embedded Airflow home (SQLite, ``airflow db migrate`` on first use) from settings and
writes ``{"run_id", "state", "tasks": {task_id: state}}`` to RESULT_JSON. ``dag.test`` runs the
tasks in this process: no API server, so no login is involved.

The embedded UI (``mlplatform airflow standalone``) logs in with :func:`ensure_ui_login`'s user
and password. The platform home and the Airflow home are ``0700``, the SQLite DB and the password
file ``0600`` (:mod:`mlplatform.permissions`).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import secrets
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from mlplatform.permissions import PRIVATE_FILE, private_dir, private_file
from mlplatform.settings import UI_USER, Settings, get_settings

# the alphabet of the Simple auth manager's own generated passwords
_PASSWORD_ALPHABET = "abcdefghkmnpqrstuvwxyzABCDEFGHKMNPQRSTUVWXYZ23456789"


def prepare_airflow() -> dict[str, str]:
    """Export the embedded Airflow environment, make the homes private and migrate the SQLite
    DB the first time (created ``0600``; an existing one is tightened to it)."""
    settings = get_settings()
    env = settings.airflow_env()
    os.environ.update(env)
    private_dir(settings.home_dir)
    private_dir(settings.airflow_home)
    db = settings.airflow_home / "airflow.db"
    if env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("sqlite") and not db.exists():
        airflow_bin = Path(sys.executable).parent / "airflow"
        subprocess.run(
            [str(airflow_bin), "db", "migrate"],
            check=True,
            env=os.environ.copy(),
            stdout=subprocess.DEVNULL,
            umask=0o077,
        )
    private_file(db)
    return env


@dataclass(frozen=True)
class UiLogin:
    """How to log in to the embedded Airflow UI."""

    user: str
    password: str
    password_file: Path


def ensure_ui_login(settings: Settings) -> UiLogin:
    """The UI user's password, generated into the Simple auth manager's password file
    (``settings.ui_password_file``, JSON ``{user: password}``, mode ``0600``) if the file lacks
    it; an existing password is kept. Airflow's API server reads that file and, finding the
    user there, generates nothing. Raises ``ValueError`` (one line) if the file is not JSON."""
    path = settings.ui_password_file
    private_dir(path.parent)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE)
    with os.fdopen(fd, "r+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # the API server's workers lock this file too
        os.fchmod(fd, PRIVATE_FILE)
        try:
            passwords = json.loads(fh.read().strip() or "{}")
        except json.JSONDecodeError:
            raise ValueError(
                f"{path} is not JSON: delete it and a new UI password is generated"
            ) from None
        if not isinstance(passwords, dict):
            raise ValueError(f"{path} is not a JSON object: delete it to generate a new one")
        if not passwords.get(UI_USER):
            passwords[UI_USER] = "".join(secrets.choice(_PASSWORD_ALPHABET) for _ in range(16))
            fh.seek(0)
            fh.truncate()
            fh.write(json.dumps(passwords) + "\n")
    return UiLogin(UI_USER, passwords[UI_USER], path)


def ui_url() -> str:
    """The API server's URL as Airflow's configuration has it (``[api] base_url``, else
    ``http://<host>:<port>``, a wildcard host shown as localhost). Imports Airflow."""
    from airflow.configuration import conf

    base = conf.get("api", "base_url", fallback="")
    if base:
        return base.rstrip("/")
    host = conf.get("api", "host", fallback="localhost")
    port = conf.get("api", "port", fallback="8080")
    return f"http://{'localhost' if host in ('', '0.0.0.0', '::') else host}:{port}"


def ui_banner(settings: Settings, env: dict[str, str], url: str) -> list[str]:
    """Lines that say where the embedded UI is and how to log in, as ``env`` (the Airflow
    environment of :func:`prepare_airflow`) configures it; generates the password if needed."""
    if env.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "").lower() == "true":
        return [f"Airflow UI: {url}  (no login: every visitor is admin; MLP_UI_ALL_ADMINS=true)"]
    login = ensure_ui_login(settings)
    return [
        f"Airflow UI: {url}",
        f"  log in as {login.user!r} with password {login.password}",
        f"  (kept in {login.password_file}, mode 0600; MLP_UI_ALL_ADMINS=true turns the login off)",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("dag_id")
    parser.add_argument("result")
    parser.add_argument("--conf", default="{}")
    parser.add_argument("--logical-date", default=None)
    args = parser.parse_args(argv)
    prepare_airflow()

    from airflow.dag_processing.dagbag import DagBag

    settings = get_settings()
    bag = DagBag(dag_folder=str(settings.repo_root / "dags"))
    dag = bag.dags.get(args.dag_id)
    if dag is None:
        errors = "; ".join(
            f"{k}: {v.strip().splitlines()[-1]}" for k, v in bag.import_errors.items()
        )
        Path(args.result).write_text(
            json.dumps({"error": f"no DAG {args.dag_id}" + (f" ({errors})" if errors else "")})
        )
        return 2
    logical = datetime.fromisoformat(args.logical_date) if args.logical_date else datetime.now(UTC)
    run = dag.test(logical_date=logical, run_conf=json.loads(args.conf))
    tasks = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    Path(args.result).write_text(
        json.dumps({"run_id": run.run_id, "state": str(run.state), "tasks": tasks})
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
