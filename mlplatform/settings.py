"""Platform settings: one object, environment variables with the ``MLP_`` prefix (or ``.env``).

The defaults are the *embedded* profile: everything lives under ``MLP_HOME`` (default
``.mlplatform/`` in the working directory) and needs no server — SQLite for Airflow and MLflow,
local directories for storage, the DVC remote and the served models, Feast's SQLite online store.
The production profile only changes URIs (``MLP_MLFLOW_TRACKING_URI=http://mlflow:5000``,
``MLP_STORAGE_URI=s3://bucket/mlp``, ``MLP_DVC_REMOTE=s3://bucket/dvc``,
``MLP_MLFLOW_ARTIFACT_URI=s3://bucket/mlflow``, ``MLP_S3_ENDPOINT_URL`` ...); the same code runs
in both (README "Production profile").

The embedded Airflow UI has a login: Airflow's Simple auth manager with the user ``admin`` (role
admin) and a generated password (``mlplatform airflow standalone`` prints both); every visitor is
an admin without login only with ``MLP_UI_ALL_ADMINS=true``. The home is private (``0700``).
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent
#: a wheel install has no checkout: the wheel carries the checkout's ``pipelines/``, ``dags/``,
#: ``plugins/`` and ``great_expectations/expectations/`` here (pyproject's ``force-include``);
#: a checkout (editable install) has no such folder
BUNDLED = Path(__file__).resolve().parent / "bundled"
#: the embedded Airflow UI's user (role admin); its password is generated on first use
UI_USER = "admin"


class Settings(BaseSettings):
    """All knobs of the platform; read with :func:`get_settings`."""

    model_config = SettingsConfigDict(env_prefix="MLP_", env_file=".env", extra="ignore")

    home: Path = Field(default=Path(".mlplatform"), description="root of all embedded state")
    repo_root: Path = Field(default=REPO_ROOT, description="checkout holding pipelines/, dags/ ...")
    pipelines_path: Path | None = Field(
        default=None, description="pipeline YAMLs; default <repo>/pipelines"
    )
    expectations_path: Path | None = Field(
        default=None,
        description="expectation suites (<suite>.json); default <repo>/great_expectations/expectations",
    )
    storage_uri: str | None = Field(
        default=None,
        description="run artifacts: a local path or s3://bucket/prefix (stages work in "
        "<home>/storage and publish there, mlplatform.storage); default <home>/storage",
    )
    mlflow_tracking_uri: str | None = Field(default=None, description="default sqlite in <home>")
    mlflow_artifact_uri: str | None = Field(default=None, description="default <home>/mlartifacts")
    model_base: Path | None = Field(default=None, description="TF Serving model base path")
    dvc_remote: str | None = Field(
        default=None, description="DVC remote URL; default <home>/dvc-remote"
    )
    feast_online_store: Literal["sqlite", "redis"] = "sqlite"
    feast_redis_connection: str = "localhost:6379"
    s3_endpoint_url: str | None = Field(
        default=None,
        description="S3 endpoint (MinIO, moto) of every s3:// URI: storage, sources, the DVC "
        "remote, MLflow artifacts (MLFLOW_S3_ENDPOINT_URL), the trainer; default botocore's own "
        "(AWS_ENDPOINT_URL_S3, profile); credentials from botocore's chain (AWS_* variables)",
    )
    ingest_chunk_rows: int = Field(
        default=500_000,
        ge=1,
        description="rows ingest holds in memory at a time; larger batches stream in chunks",
    )
    training_backend: Literal["local", "kubernetes"] = "local"
    serving_host: str = "127.0.0.1"
    serving_port: int = 8501
    serving_grpc_port: int = Field(
        default=8500, description="gRPC PredictionService port; 0 disables"
    )
    serving_workers: int = Field(
        default=1,
        ge=1,
        description="processes of the local model server sharing its ports (mlplatform serve)",
    )
    serving_log_sample_rate: float = Field(
        default=1.0, ge=0, le=1, description="share of served requests the request log keeps"
    )
    serving_log_max_file_mib: float | None = Field(
        default=None, gt=0, description="rotate a request-log day file at this size; unset: no cap"
    )
    serving_log_redact: str = Field(
        default="",
        description="comma-separated input/output fields the request log writes as [redacted]",
    )
    mlflow_ui_url: str = Field(
        default="http://127.0.0.1:5000", description="linked from the Airflow UI"
    )
    run_lock_wait_s: float = Field(
        default=3600.0, ge=0, description="how long a run waits for another run of its pipeline"
    )
    run_timeout_hours: float = Field(
        default=24.0, gt=0, description="Airflow fails a training run still running after this"
    )
    run_stale_s: float = Field(
        default=600.0, gt=0, description="a run with no heartbeat for this long is taken for dead"
    )
    alert_webhook_url: str | None = Field(
        default=None,
        description="Slack-compatible webhook for alerts when a pipeline sets none "
        "(mlplatform.alerts); unset: no alert leaves the machine",
    )
    ui_all_admins: bool = Field(
        default=False,
        description="embedded Airflow UI without a login, every visitor an admin (explicit "
        "opt-in, MLP_UI_ALL_ADMINS=true); by default the Simple auth manager's user 'admin'",
    )

    schema_templates: bool = Field(
        default=True,
        description="seed a fresh home's SQLite databases (Airflow, MLflow) from migrated-schema "
        "templates instead of migrating them (mlplatform.schema_templates); false: migrate",
    )
    schema_cache: Path | None = Field(
        default=None,
        description="where the schema templates are kept; default "
        "$XDG_CACHE_HOME/mlplatform/schemas or ~/.cache/mlplatform/schemas",
    )

    @cached_property
    def home_dir(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def schema_cache_dir(self) -> Path:
        """The schema templates' cache (:mod:`mlplatform.schema_templates`)."""
        from mlplatform.schema_templates import default_cache_dir

        return (self.schema_cache or default_cache_dir()).expanduser().resolve()

    @property
    def storage(self) -> str:
        return self.storage_uri or str(self.home_dir / "storage")

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.home_dir / 'mlflow.db'}"

    @property
    def artifact_uri(self) -> str:
        return self.mlflow_artifact_uri or (self.home_dir / "mlartifacts").as_uri()

    @property
    def models_dir(self) -> Path:
        return (self.model_base or self.home_dir / "serving" / "models").resolve()

    @property
    def request_log_dir(self) -> Path:
        return self.home_dir / "serving" / "requests"

    @property
    def dvc_repo_dir(self) -> Path:
        """The DVC-tracked data repository (a git repo of its own) holding ingested batches."""
        return self.home_dir / "data-repo"

    @property
    def dvc_remote_url(self) -> str:
        return self.dvc_remote or str(self.home_dir / "dvc-remote")

    @property
    def feast_dir(self) -> Path:
        return self.home_dir / "feast"

    @property
    def airflow_home(self) -> Path:
        return self.home_dir / "airflow"

    @property
    def ui_password_file(self) -> Path:
        """The Simple auth manager's password file of the embedded UI (mode 0600)."""
        return self.airflow_home / "simple_auth_manager_passwords.json.generated"

    @property
    def serving_url(self) -> str:
        return f"http://{self.serving_host}:{self.serving_port}"

    @property
    def platform_files(self) -> Path:
        """The folder holding ``pipelines/``, ``dags/``, ``plugins/`` and
        ``great_expectations/expectations/``: ``repo_root`` (the checkout, or wherever
        ``MLP_REPO_ROOT`` points); in a wheel install with no ``MLP_REPO_ROOT``, the copies the
        wheel bundles (:data:`BUNDLED`). ``MLP_PIPELINES_PATH`` / ``MLP_EXPECTATIONS_PATH``
        point at an installed platform's own pipelines and suites."""
        if self.repo_root == REPO_ROOT and BUNDLED.is_dir():
            return BUNDLED
        return self.repo_root

    @property
    def pipelines_dir(self) -> Path:
        return (self.pipelines_path or self.platform_files / "pipelines").resolve()

    @property
    def expectations_dir(self) -> Path:
        """Where pipelines' expectation suites live (``validation.suite`` + ``.json``)."""
        default = self.platform_files / "great_expectations" / "expectations"
        return (self.expectations_path or default).resolve()

    @property
    def dags_dir(self) -> Path:
        """Airflow's DAGs folder: the factory file and ``examples/``."""
        return self.platform_files / "dags"

    @property
    def plugins_dir(self) -> Path:
        """Airflow's plugins folder (the platform view, the decision notes)."""
        return self.platform_files / "plugins"

    def airflow_env(self) -> dict[str, str]:
        """Environment that points Airflow at this checkout and an embedded SQLite database, with
        the UI's login (see the module doc); variables already set in the environment win."""
        env = {
            "AIRFLOW_HOME": str(self.airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_dir),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(self.plugins_dir),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.airflow_home / 'airflow.db'}",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.airflow_home / "logs"),
            # embedded profile: the Simple auth manager with one admin user and its generated
            # password (mlplatform.airflow_runner.ensure_ui_login); no login only on opt-in
            **self._ui_auth_env(),
            "MLP_HOME": str(self.home_dir),
            "MLP_PIPELINES_PATH": str(self.pipelines_dir),
            "MLP_EXPECTATIONS_PATH": str(self.expectations_dir),
        }
        return {k: os.environ.get(k, v) for k, v in env.items()}

    def _ui_auth_env(self) -> dict[str, str]:
        if self.ui_all_admins:
            return {"AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True"}
        return {
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{UI_USER}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.ui_password_file),
        }


def get_settings() -> Settings:
    """Fresh settings from the current environment (cheap; no caching so tests can override)."""
    return Settings()
