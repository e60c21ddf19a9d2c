"""The embedded home's two SQLite databases, seeded from migrated-schema templates
(:mod:`mlplatform.schema_templates`) instead of migrated on the home's first use.

* Airflow's metadata DB (``<home>/airflow/airflow.db``): the template is made by ``airflow db
  migrate`` itself in a scratch Airflow home with this home's Airflow settings. Its key: the
  versions of apache-airflow-core and of every installed Airflow provider (providers may bring
  their own tables through DB managers), the names of Airflow's migration scripts, and every
  ``AIRFLOW__*`` setting that does not point into the home (the migration writes some of them as
  rows: the default pool's size, the log-name templates). Used only for a home whose Airflow
  configuration comes from the environment alone (no ``airflow.cfg`` in it yet, no
  ``AIRFLOW_CONFIG``): a hand-written configuration is migrated as before.
* MLflow's tracking DB (``<home>/mlflow.db``, the default tracking URI only): the template is
  made by MLflow's own table initialisation (what its SQLAlchemy store runs on an empty DB),
  keyed by the mlflow version and its migration script names. MLflow creates the default
  experiment (with this home's artifact location) on first use of the copy. Building it costs a
  fresh interpreter's MLflow import (5-10 s), more than MLflow's table creation in a process
  that has MLflow loaded anyway (≈1.5 s), so a cache without it is filled in the background at
  the lowest CPU priority (``python -m mlplatform.embedded_dbs mlflow``) and this home's MLflow
  creates its tables itself, as before.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from mlplatform import schema_templates
from mlplatform.schema_templates import Schema
from mlplatform.settings import Settings

#: settings that point into a home or a checkout: not part of a template's key (the migration
#: does not read the DAG and plugin folders; the others are replaced in the build)
_PATHS = (
    "AIRFLOW_HOME",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
    "AIRFLOW__LOGGING__BASE_LOG_FOLDER",
    "AIRFLOW__CORE__DAGS_FOLDER",
    "AIRFLOW__CORE__PLUGINS_FOLDER",
)


def _run(cmd: list[str], env: dict[str, str] | None = None) -> None:
    """Run a build command; RuntimeError with its last error line if it fails."""
    done = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True, umask=0o077)  # fmt: skip
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or [f"exit {done.returncode}"]
        raise RuntimeError(f"{' '.join(cmd[:3])}: {lines[-1]}")


def _airflow_providers() -> list[str]:
    """``name-version`` of every installed Airflow provider distribution, from the names of
    their ``.dist-info`` folders (a glob: importlib.metadata would read all 300+ packages'
    metadata files on the runner's start-up path)."""
    found = set()
    for entry in sys.path:
        for info in Path(entry or ".").glob("apache_airflow_providers_*.dist-info"):
            found.add(info.name.removesuffix(".dist-info"))
    return sorted(found)


def airflow_schema(settings: Settings, env: dict[str, str]) -> Schema:
    """Airflow's metadata schema for a home configured by ``env`` (the full process
    environment after :func:`mlplatform.airflow_runner.prepare_airflow` exported the home's)."""
    version, scripts = schema_templates.package_migrations(
        "apache-airflow-core", "airflow", "migrations", "versions"
    )
    home = str(settings.home_dir)
    rows = sorted(
        f"{k}={v}"
        for k, v in env.items()
        if k.startswith("AIRFLOW__") and k not in _PATHS and home not in v
    )

    def build(db_path: Path) -> None:
        scratch = db_path.parent / "airflow-home"
        scratch.mkdir(mode=0o700)
        build_env = {k: v for k, v in env.items() if k != "AIRFLOW_CONFIG"}
        build_env.update(
            AIRFLOW_HOME=str(scratch),
            AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{db_path}",
            AIRFLOW__LOGGING__BASE_LOG_FOLDER=str(scratch / "logs"),
        )
        _run([str(Path(sys.executable).parent / "airflow"), "db", "migrate"], build_env)

    return Schema("airflow", (version, scripts, *_airflow_providers(), *rows), build)


def seed_airflow_db(settings: Settings) -> bool:
    """Copy the Airflow template into a home with no metadata DB yet; False: migrate it."""
    if not settings.schema_templates or os.environ.get("AIRFLOW_CONFIG"):
        return False
    if (settings.airflow_home / "airflow.cfg").exists():
        return False
    try:
        schema = airflow_schema(settings, dict(os.environ))
    except LookupError:
        return False
    return schema_templates.seed(
        settings.airflow_home / "airflow.db", schema, settings.schema_cache_dir
    )


_MLFLOW_BUILD = """
import sys
import sqlalchemy
from mlflow.store.db.utils import _initialize_tables
_initialize_tables(sqlalchemy.create_engine("sqlite:///" + sys.argv[1]))
"""


def mlflow_schema() -> Schema:
    """MLflow's tracking schema (tables and alembic upgrades, no rows)."""
    version, scripts = schema_templates.package_migrations(
        "mlflow", "mlflow", "store", "db_migrations", "versions"
    )

    def build(db_path: Path) -> None:
        _run([sys.executable, "-c", _MLFLOW_BUILD, str(db_path)])

    return Schema("mlflow", (version, scripts), build)


def seed_mlflow_db(settings: Settings) -> bool:
    """Copy the MLflow template to ``<home>/mlflow.db`` when the tracking URI is the embedded
    default and that DB does not exist yet; False otherwise (MLflow creates it on first use).
    A missing template is built in the background for the next fresh home."""
    db_path = settings.home_dir / "mlflow.db"
    if not settings.schema_templates or settings.mlflow_tracking_uri or db_path.exists():
        return False
    try:
        schema = mlflow_schema()
    except LookupError:
        return False
    cache = settings.schema_cache_dir
    if schema_templates.seed(db_path, schema, cache, build=False):
        return True
    if schema_templates.building(schema, cache):
        return False
    # the builder belongs to no home: none of the home's settings in its environment
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLP_", "AIRFLOW"))}
    subprocess.Popen(
        [sys.executable, "-m", "mlplatform.embedded_dbs", "mlflow"],
        env={**env, "MLP_SCHEMA_CACHE": str(cache)},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # outlives this process; nobody waits for it
        preexec_fn=lambda: os.nice(19),
    )
    return False


def main(argv: list[str] | None = None) -> int:
    """``python -m mlplatform.embedded_dbs mlflow``: build the MLflow template if missing."""
    from mlplatform.settings import get_settings

    names = argv if argv is not None else sys.argv[1:]
    if names != ["mlflow"]:
        print("usage: python -m mlplatform.embedded_dbs mlflow", file=sys.stderr)
        return 2
    made = schema_templates.template(mlflow_schema(), get_settings().schema_cache_dir)
    return 0 if made else 1


if __name__ == "__main__":
    sys.exit(main())
