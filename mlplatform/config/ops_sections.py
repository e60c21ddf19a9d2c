"""Config sections of operations: ``serving``, ``monitoring``, ``retrain``, ``scoring``, ``alerts``."""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import Field, field_validator

from mlplatform.config.common import _Strict, check_schedule


class ServingConfig(_Strict):
    model_name: str = Field(
        pattern=r"^[A-Za-z0-9_\-]+$",
        description="registered model and served model name (MLflow, TF Serving model base)",
    )
    canary: bool = Field(
        default=False, description="promote as label canary; stable moves on `mlplatform promote`"
    )
    latency_budget_ms: float = Field(default=250.0, gt=0, description="infra validation p99 budget")
    warmup_requests: int = Field(
        default=20, ge=1, le=1000, description="hold-out requests replayed"
    )
    infra_runner: Literal["auto", "embedded", "kubernetes"] = Field(
        default="auto",
        description="where infra validation serves the candidate: embedded = the local server "
        "runtime in the worker; kubernetes = the tensorflow/serving image in a pod, over gRPC "
        "(mlplatform/infra_runners); auto = kubernetes when MLP_TRAINING_BACKEND=kubernetes",
    )
    features_from: Literal["request", "online_store"] = Field(
        default="request",
        description="online_store: predict requests may send entity keys; the server fetches the "
        "features from the Feast online store (serving/runtime/online_features.py)",
    )
    allow_non_finite: bool = Field(
        default=False,
        description="the server scores NaN/Infinity in float inputs instead of refusing them "
        "(400 / INVALID_ARGUMENT); a JSON null is a missing value either way",
    )


class MonitoringConfig(_Strict):
    schedule: str | None = Field(default="@daily", description="drift checks; null: none")
    drift_share: float = Field(
        default=0.3,
        gt=0,
        le=1,
        description="share of drifted features (Evidently) at which the drift asset is published",
    )
    min_rows: int = Field(
        default=500,
        ge=1,
        description="fewer logged requests (or labelled rows) than this: that check is not made",
    )
    cooldown_hours: int = Field(
        default=24, ge=0, description="no second automatic retrain within this many hours"
    )
    max_metric_drop: float = Field(
        default=0.05,
        ge=0,
        description="the live gate.metric on labelled requests may be worse than the champion's "
        "hold-out metric by this much; more publishes the drift asset (reason 'metric drop')",
    )
    labels_uri: str | None = Field(
        default=None,
        description="delayed ground truth each check imports (path, glob, s3://, sql+...): the "
        "entity, time (source.timestamp) and label (features.label) columns; null: only labels "
        "stored by `mlplatform labels`",
    )
    label_delay_hours: float = Field(
        default=72.0,
        gt=0,
        description="a label joins the latest request of its entity made at most this long "
        "before the label's time",
    )

    @field_validator("schedule")
    @classmethod
    def _airflow_schedule(cls, value: str | None) -> str | None:
        return check_schedule(value)


class RetrainConfig(_Strict):
    schedule: str | None = Field(
        default="@weekly",
        description="cron of the retrain check (the decide task retrains on new data, a changed "
        "config or trainer code, or no champion); null: none",
    )
    on_new_data: bool = Field(
        default=True, description="a new validated data version (the data asset) triggers a run"
    )
    on_drift: bool = Field(default=True, description="the monitor's drift asset triggers a run")
    window_days: float | None = Field(
        default=None,
        gt=0,
        description="training history: null = the newest batch alone; N = every validated row "
        "whose event time lies within N days before the newest batch's latest event time",
    )

    @field_validator("schedule")
    @classmethod
    def _airflow_schedule(cls, value: str | None) -> str | None:
        return check_schedule(value)


class ScoringConfig(_Strict):
    schedule: str | None = Field(
        default=None,
        description="batch scoring DAG mlp_<name>_score; null: manual runs only (the opt-in)",
    )
    input_uri: str | None = Field(
        default=None,
        description="table to score (path, glob, s3://, sql+...; see mlplatform.sources); "
        "null: every entity's latest row of the offline feature store; overridable per run",
    )
    chunk_rows: int = Field(
        default=50_000, ge=1, description="rows scored (and held in memory) at a time"
    )

    @field_validator("schedule")
    @classmethod
    def _airflow_schedule(cls, value: str | None) -> str | None:
        return check_schedule(value)


#: the events an alert is sent for (:data:`mlplatform.alerts.EVENTS`)
AlertEvent = Literal["failure", "gate_refused", "drift", "retrain_decision"]


class AlertsConfig(_Strict):
    webhook_url: str | None = Field(
        default=None,
        description="Slack-compatible incoming webhook; null: MLP_ALERT_WEBHOOK_URL, else none",
    )
    events: list[AlertEvent] = Field(
        default_factory=lambda: list(get_args(AlertEvent)),
        description="which events are sent (mlplatform.alerts.EVENTS)",
    )
