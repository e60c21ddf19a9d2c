"""The pipeline config: one YAML per model under ``pipelines/``, the self-service contract.

:func:`load_pipeline` parses and validates a file and raises :class:`ConfigError` whose message
names the file, the line and the field, e.g.::

    pipelines/churn.yaml:14: gate.min: Input should be less than or equal to 1 (got 1.5)

:func:`load_pipelines` does that for every file of a directory and also refuses pipeline names
declared by more than one file (DAG ids derive from the name), naming both files.

A pipeline file cannot hurt the others, nor the process that reads it:

* YAML is read by a bounded loader: at most ``MAX_CONFIG_BYTES`` (256 KiB), nesting at most
  ``MAX_DEPTH`` levels, at most ``MAX_ALIASES`` alias uses and at most ``MAX_NODES`` nodes *after*
  alias expansion, so an alias bomb ("billion laughs") is refused in milliseconds at the alias
  that crosses the limit. Anchors and aliases stay allowed (``<<: *defaults`` is handy) because a
  bounded expansion costs nothing; only their expansion is capped. Recursive aliases are refused.
* Echoed input in errors (``(got ...)``) is cut to ``ECHO_CHARS`` characters and at most
  ``MAX_ERROR_LINES`` field errors are listed.
* Schedules (``source.schedule``, ``monitoring.schedule``, ``retrain.schedule``,
  ``scoring.schedule``) are null, an Airflow preset or a cron
  expression that croniter (Airflow's own cron parser, imported lazily) accepts and that fires.
"""

from __future__ import annotations

import hashlib
import json
import re
import reprlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

#: a pipeline config larger than this is refused before it is parsed
MAX_CONFIG_BYTES = 256 * 1024
#: YAML nesting depth (the schema needs 3)
MAX_DEPTH = 20
#: alias uses (``*name``) in one file
MAX_ALIASES = 32
#: YAML nodes with every alias expanded (the demo has about 100)
MAX_NODES = 10_000
#: echoed input in an error message is cut to this many characters
ECHO_CHARS = 80
#: field errors listed for one file; the rest are counted
MAX_ERROR_LINES = 10

#: the offline feature store's ingestion (Feast "created") timestamp column; no pipeline may use it
INGESTED_AT_COLUMN = "mlp_ingested_at"

#: schedule strings Airflow takes besides cron expressions
AIRFLOW_SCHEDULE_PRESETS = (
    "@once",
    "@continuous",
    "@hourly",
    "@daily",
    "@weekly",
    "@monthly",
    "@quarterly",
    "@yearly",
)


#: a column name that Feast (field names), TensorFlow (SavedModel input names) and GX all take
COLUMN_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
COLUMN_NAME_RULE = "Feast and TensorFlow take letters, digits and _, not a digit first"


def unusable_column_names(names: Iterable[object]) -> list[str]:
    """The names among ``names`` that are not usable as feature names (``COLUMN_NAME``)."""
    return [str(n) for n in names if not COLUMN_NAME.fullmatch(str(n))]


#: names of the trained model's own layers (``training/model.py``: ``build_model``): every feature
#: is a Keras ``Input`` named after it, and Keras refuses two layers of one name
MODEL_LAYER_NAMES = (
    "features",
    "score",
    "prediction",
    "standardized_prediction",
    "tabular_classifier",
    "tabular_regressor",
)
#: per-feature layers of ``training/model.py``: ``normalize_F``, ``impute_F`` (numeric),
#: ``lookup_F`` (categorical)
MODEL_LAYER_PREFIXES = ("normalize_", "impute_", "lookup_")
_HIDDEN_LAYER = re.compile(r"^hidden_[0-9]+$")


def model_name_clash(name: str, features: Iterable[str]) -> str | None:
    """Why the model cannot take a feature called ``name`` beside ``features`` (a layer of the
    model would have the same name), or None."""
    if name in MODEL_LAYER_NAMES or _HIDDEN_LAYER.match(name):
        return (
            f"{name!r} is the name of a layer of the trained model (reserved: "
            f"{', '.join(MODEL_LAYER_NAMES)}, hidden_<n>); rename the column at the source"
        )
    for prefix in MODEL_LAYER_PREFIXES:
        if name.startswith(prefix) and name.removeprefix(prefix) in features:
            return (
                f"{name!r} is the name the model gives its {prefix.rstrip('_')} layer of feature "
                f"{name.removeprefix(prefix)!r}; rename one of the columns at the source"
            )
    return None


def suggest_name(name: str) -> str:
    """A usable column name (``COLUMN_NAME``) for ``name``: every run of other characters
    becomes ``_``, a leading digit gets a ``c_`` prefix (``"monthly spend"`` ->
    ``monthly_spend``, ``"2nd.value"`` -> ``c_2nd_value``)."""
    text = re.sub(r"[^A-Za-z0-9_]+", "_", str(name)).strip("_") or "column"
    return f"c_{text}" if text[0].isdigit() else text


def _usable_names(value: Any) -> Any:
    """Field validator: a column name, or a list of them, must match ``COLUMN_NAME``."""
    bad = unusable_column_names(value if isinstance(value, list) else [value])
    if bad:
        raise ValueError(
            f"column name(s) {', '.join(map(repr, bad))} cannot be used: {COLUMN_NAME_RULE}; "
            "rename the column(s) at the source"
        )
    return value


class ConfigError(ValueError):
    """A pipeline config is malformed; ``str()`` is one readable line (or one line per field)."""


class FieldProblem(ValueError):
    """Raised by a validator about a field below the one it validates (a model validator about
    ``gate.metric``, a dict validator about one key): ``loc`` is that field's path relative to
    the validated model or field, so that the error names its line and dotted field."""

    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc


_ECHO = reprlib.Repr()
_ECHO.maxlevel, _ECHO.maxlist, _ECHO.maxtuple, _ECHO.maxdict = 2, 5, 5, 4
_ECHO.maxstring, _ECHO.maxother, _ECHO.maxlong = ECHO_CHARS, ECHO_CHARS, ECHO_CHARS


def echo(value: Any) -> str:
    """``repr(value)`` cut to at most ``ECHO_CHARS`` characters, in time independent of its size
    (``reprlib`` stops at a few items and levels, even on a structure of shared references)."""
    text = _ECHO.repr(value)
    return text if len(text) <= ECHO_CHARS else text[: ECHO_CHARS - 3] + "..."


def one_line(text: object, limit: int = ECHO_CHARS) -> str:
    """Free text (a YAML problem, a library message) squeezed onto one line of at most
    ``limit`` characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def check_schedule(value: str | None) -> str | None:
    """Return ``value`` if Airflow can schedule it: null, a preset of
    ``AIRFLOW_SCHEDULE_PRESETS`` or a cron expression (5 to 7 fields) that croniter parses and
    that has a next fire time (``0 0 31 2 *`` never fires); else raise ``ValueError``.

    croniter comes with Airflow and is imported here, lazily, so that this module stays
    importable without Airflow; without croniter only the cron syntax check is skipped.
    """
    if value is None or value in AIRFLOW_SCHEDULE_PRESETS:
        return value
    hint = "use null, an Airflow preset (" + ", ".join(AIRFLOW_SCHEDULE_PRESETS) + ") or cron"
    if value.startswith("@") or not 5 <= len(value.split()) <= 7:
        raise ValueError(f"not a schedule: {hint} like '0 3 * * *'")
    try:
        from croniter import croniter
    except ImportError:  # pragma: no cover - croniter is installed with Airflow
        return value
    try:
        croniter(value).get_next(datetime)
    except Exception as exc:  # noqa: BLE001 - croniter raises ValueError, KeyError, ...
        raise ValueError(f"not a valid cron expression ({one_line(exc)}); {hint}") from None
    return value


def quantity_problem(value: object) -> str | None:
    """Why ``value`` is not a positive Kubernetes resource quantity (``500m``, ``16Gi``), or None.

    Parsed by the Kubernetes client's own ``kubernetes.utils.parse_quantity`` (imported here,
    lazily: the client costs seconds to import, and only configs with quantities pay it)."""
    from kubernetes.utils import parse_quantity

    try:
        amount = parse_quantity(value)
    except (ValueError, TypeError, ArithmeticError):
        return (
            f"not a Kubernetes quantity: {echo(value)} (e.g. cpu: '4', '500m'; memory: 16Gi, 512Mi)"
        )
    if amount <= 0:
        return f"a quantity must be positive: {echo(value)}"
    return None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SourceConfig(_Strict):
    uri: str | None = Field(
        default=None,
        description="default data URI (path, glob, s3://, sql+<SQLAlchemy URL>); "
        "overridable per run (see mlplatform.sources)",
    )
    query: str | None = Field(
        default=None, description="SQL query for a SQL source URI without ?query="
    )
    format: Literal["csv", "parquet"] = Field(
        default="csv", description="file format of file and S3 sources"
    )
    rename: dict[str, str] = Field(
        default_factory=dict,
        description="source column -> platform name, applied as every batch is read (ingest, "
        "scoring input, labels): for source columns whose names Feast and TensorFlow cannot "
        "take (spaces, dots, ...); everything after the read (suite, features, the served "
        "model's inputs) uses the platform name",
    )
    timestamp: str = Field(description="event-time column")
    entity: str = Field(description="entity key column")
    schedule: str | None = Field(
        default="@daily",
        description="when the ingest DAG (built only with a uri) reads the landing batch of its "
        "data interval; null: none (trigger it by hand)",
    )

    @field_validator("timestamp", "entity")
    @classmethod
    def _column_names(cls, value: str) -> str:
        return _usable_names(value)

    @field_validator("rename")
    @classmethod
    def _rename_targets(cls, value: dict[str, str]) -> dict[str, str]:
        _usable_names(list(value.values()))
        targets = list(value.values())
        doubled = sorted({t for t in targets if targets.count(t) > 1})
        if doubled:
            raise ValueError(f"several source columns renamed to the same name: {doubled}")
        return value

    @field_validator("schedule")
    @classmethod
    def _airflow_schedule(cls, value: str | None) -> str | None:
        return check_schedule(value)

    @property
    def templated(self) -> bool:
        """Whether ``uri`` is a landing source templated by the run's data interval (Jinja,
        e.g. ``landing/{{ data_interval_start | ds }}/*.csv``)."""
        return self.uri is not None and ("{{" in self.uri or "{%" in self.uri)


class ValidationConfig(_Strict):
    suite: str = Field(description="expectation suite name under great_expectations/expectations/")
    future_horizon_hours: float = Field(
        default=24.0, ge=0, description="event times further ahead of now than this are refused"
    )


class FeaturesConfig(_Strict):
    view: str = Field(description="Feast feature view name (the feature service derives from it)")
    ttl_days: int = Field(
        default=30,
        gt=0,
        description="Feast TTL: how old a feature row may be in a point-in-time join",
    )
    label: str = Field(description="label column (the model's target)")
    numeric: list[str] = Field(
        default_factory=list, description="numeric feature columns (standardized in the model)"
    )
    categorical: list[str] = Field(
        default_factory=list,
        description="categorical feature columns (vocabulary lookup in the model)",
    )
    holdout_fraction: float = Field(
        default=0.2,
        gt=0,
        lt=1,
        description="the newest fraction of the training set's rows (by event time) is the "
        "gate's hold-out",
    )
    min_rows: int = Field(
        default=100,
        ge=2,
        description="a training set with fewer rows stops the run before training",
    )

    @field_validator("label", "numeric", "categorical")
    @classmethod
    def _column_names(cls, value: str | list[str]) -> str | list[str]:
        return _usable_names(value)

    @model_validator(mode="after")
    def _model_can_take_names(self) -> FeaturesConfig:
        for section in ("numeric", "categorical"):
            for index, name in enumerate(getattr(self, section)):
                clash = model_name_clash(name, self.all)
                if clash:
                    raise FieldProblem((section, index), clash)
        return self

    @model_validator(mode="after")
    def _has_features(self) -> FeaturesConfig:
        if not self.numeric and not self.categorical:
            raise ValueError("declare at least one feature under numeric or categorical")
        overlap = set(self.numeric) & set(self.categorical)
        if overlap:
            raise ValueError(f"features listed as both numeric and categorical: {sorted(overlap)}")
        if self.label in self.numeric or self.label in self.categorical:
            raise ValueError(f"label {self.label!r} must not also be a feature")
        return self

    @property
    def all(self) -> list[str]:
        return [*self.numeric, *self.categorical]


class ModelConfig(_Strict):
    kind: Literal["tabular_classifier", "tabular_regressor"] = Field(
        default="tabular_classifier",
        description="binary classifier (gate metric auc/accuracy) or regressor (rmse/mae)",
    )
    hidden_units: list[int] = Field(
        default_factory=lambda: [64, 32], description="units of each hidden dense layer"
    )
    epochs: int = Field(default=5, ge=1, le=1000, description="passes over the training rows")
    batch_size: int = Field(default=256, ge=1, description="rows per step on each process")
    learning_rate: float = Field(
        default=1e-3,
        gt=0,
        description="Adam learning rate (times the process count after a one-epoch warm-up)",
    )
    seed: int = Field(
        default=42, description="seed of the weights and of the shuffling (repeatable runs)"
    )

    @field_validator("hidden_units")
    @classmethod
    def _positive_units(cls, v: list[int]) -> list[int]:
        if not v or any(u <= 0 for u in v):
            raise ValueError("hidden_units must be a non-empty list of positive integers")
        return v


#: ``processes_per_worker: auto`` on CPU: each process gets at least this many training rows...
ROWS_PER_CPU_PROCESS = 100_000
#: ...and at least this many cores (TensorFlow already spreads one process over the cores; a
#: second process on the same cores pays its own TF start-up and a Gloo allreduce per step:
#: 0.34-0.85x np=1 on 2 cores, benchmarks/results/training.md)
CORES_PER_CPU_PROCESS = 2


class TrainingConfig(_Strict):
    workers: int = Field(default=1, ge=1, description="pods (Kubernetes) / hosts")
    processes_per_worker: int | Literal["auto"] = Field(
        default="auto",
        description="horovod slots per worker on CPU; auto: fitted to the training rows and cores",
    )
    gpus_per_worker: int = Field(default=0, ge=0, description="GPUs per pod; one process per GPU")
    image: str = Field(
        default="mlplatform/trainer:latest",
        description="trainer image of the Kubernetes backend (MLP_TRAINING_BACKEND=kubernetes)",
    )
    resources: dict[str, str] = Field(
        default_factory=dict,
        description="requests = limits of each trainer pod (Kubernetes quantities: cpu: '4', "
        "memory: 16Gi)",
    )

    @field_validator("resources")
    @classmethod
    def _quantities(cls, value: dict[str, str]) -> dict[str, str]:
        for key, quantity in value.items():
            problem = quantity_problem(quantity)
            if problem:
                raise FieldProblem((key,), problem)
        return value

    @field_validator("processes_per_worker")
    @classmethod
    def _at_least_one(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v < 1:
            raise ValueError("processes_per_worker must be a positive integer or 'auto'")
        return v

    def processes(self, train_rows: int | None, cores: int | None) -> int:
        """Horovod processes per worker: one per GPU; on CPU ``processes_per_worker``, or for
        ``auto`` one per ``ROWS_PER_CPU_PROCESS`` training rows and ``CORES_PER_CPU_PROCESS``
        cores of the worker, at least one (``None``: unknown, counts as none)."""
        if self.gpus_per_worker:
            return self.gpus_per_worker
        if self.processes_per_worker != "auto":
            return self.processes_per_worker
        by_rows = (train_rows or 0) // ROWS_PER_CPU_PROCESS
        by_cores = (cores or 0) // CORES_PER_CPU_PROCESS
        return max(1, min(by_rows, by_cores))

    def world_size(self, train_rows: int | None, cores: int | None) -> int:
        """Total horovod processes: ``workers`` times :meth:`processes`."""
        return self.workers * self.processes(train_rows, cores)


#: gate metrics where higher is better (a threshold is a floor: ``gate.min``), by model kind
CLASSIFIER_METRICS = ("auc", "accuracy")
#: error metrics, lower is better (a threshold is a ceiling: ``gate.max``)
REGRESSOR_METRICS = ("rmse", "mae")


class GateConfig(_Strict):
    metric: Literal["auc", "accuracy", "rmse", "mae"] = Field(
        default="auc",
        description="hold-out metric that the gate compares (auc/accuracy for a classifier, "
        "rmse/mae for a regressor)",
    )
    min: float | None = Field(
        default=None, description="floor of auc/accuracy: a challenger below it is refused"
    )
    max: float | None = Field(
        default=None,
        description="ceiling of rmse/mae (error metrics, lower is better): a challenger above it "
        "is refused",
    )
    max_regression: float = Field(default=0.0, ge=0, description="allowed loss vs champion")
    slices: list[str] = Field(
        default_factory=list, description="categorical features to also gate per value"
    )
    min_slice_rows: int = Field(
        default=30, ge=1, description="smaller slices are reported, not gated"
    )

    @property
    def higher_is_better(self) -> bool:
        return self.metric in CLASSIFIER_METRICS

    @property
    def threshold(self) -> float | None:
        """The absolute bound of the metric: the floor ``min`` (auc, accuracy) or the ceiling
        ``max`` (rmse, mae)."""
        return self.min if self.higher_is_better else self.max

    def describe(self) -> str:
        """The gate in words, its direction spelled out (``rmse <= 0.5 (a ceiling: ...)``)."""
        if self.higher_is_better:
            bound = f" >= {self.min:g} (a floor: higher is better)" if self.min is not None else ""
        else:
            bound = f" <= {self.max:g} (a ceiling: lower is better)" if self.max is not None else ""
        worse = "lower" if self.higher_is_better else "higher"
        return (
            f"{self.metric}{bound or ' (no absolute bound)'}, at most {self.max_regression:g} "
            f"{worse} than the champion's"
        )

    @model_validator(mode="after")
    def _threshold_direction(self) -> GateConfig:
        if not self.higher_is_better and self.min is not None:
            raise FieldProblem(
                ("min",),
                f"{self.metric} is an error metric (lower is better): its threshold is a ceiling, "
                f"not a floor; write gate.max: {self.min:g} (the worst {self.metric} to promote)",
            )
        if self.higher_is_better and self.max is not None:
            raise FieldProblem(
                ("max",),
                f"{self.metric} is higher-is-better: its threshold is a floor, not a ceiling; "
                f"write gate.min: {self.max:g} (the lowest {self.metric} to promote)",
            )
        return self


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


class PipelineConfig(_Strict):
    """One model's pipeline: data source through serving and monitoring."""

    name: str = Field(
        pattern=r"^[a-z][a-z0-9_]*$",
        max_length=64,
        description="pipeline id (DAG ids and Kubernetes names derive from it)",
    )
    description: str = Field(default="", description="the training DAG's description in Airflow")
    owner: str = Field(
        default="mlplatform",
        min_length=1,
        max_length=100,
        description="who answers for the pipeline: the Airflow owner of its DAGs, named in the docs",
    )
    source: SourceConfig = Field(description="where raw batches come from and their key columns")
    validation: ValidationConfig = Field(description="the blocking Great Expectations check")
    features: FeaturesConfig = Field(description="Feast features, label and training set")
    model: ModelConfig = Field(default_factory=ModelConfig, description="the Keras model")
    training: TrainingConfig = Field(
        default_factory=TrainingConfig, description="Horovod processes and trainer pods"
    )
    gate: GateConfig = Field(
        default_factory=GateConfig, description="challenger vs champion before promotion"
    )
    serving: ServingConfig = Field(description="promotion and the served model")
    monitoring: MonitoringConfig = Field(
        default_factory=MonitoringConfig, description="drift and live-metric checks"
    )
    retrain: RetrainConfig = Field(
        default_factory=RetrainConfig, description="when the training DAG runs"
    )
    scoring: ScoringConfig = Field(
        default_factory=ScoringConfig, description="the batch scoring DAG"
    )
    alerts: AlertsConfig = Field(default_factory=AlertsConfig, description="webhook alerts")
    cache: bool = Field(
        default=True,
        description="step caching: a stage whose key (data version, config sections, definitions, "
        "code) is unchanged reuses its earlier output (mlplatform.cache); false: every run "
        "runs every stage and records nothing",
    )

    @model_validator(mode="after")
    def _metric_fits_kind(self) -> PipelineConfig:
        classifier = self.model.kind == "tabular_classifier"
        if classifier != self.gate.higher_is_better:
            fits = CLASSIFIER_METRICS if classifier else REGRESSOR_METRICS
            raise FieldProblem(
                ("gate", "metric"),
                f"gate.metric {self.gate.metric!r} does not fit model.kind {self.model.kind!r}: "
                f"a {self.model.kind} is gated on {' or '.join(fits)}",
            )
        for index, name in enumerate(self.gate.slices):
            if name not in self.features.categorical:
                raise FieldProblem(
                    ("gate", "slices", index),
                    f"gate.slices must name categorical features, not {name!r}",
                )
        return self

    @model_validator(mode="after")
    def _columns_distinct(self) -> PipelineConfig:
        keys = {self.source.entity, self.source.timestamp}
        clash = sorted(keys & {*self.features.all, self.features.label})
        if clash:
            raise ValueError(
                f"the entity/timestamp column(s) {clash} must not also be a feature or the label"
            )
        used = {*keys, *self.features.all, self.features.label}
        if INGESTED_AT_COLUMN in used:
            raise ValueError(
                f"{INGESTED_AT_COLUMN!r} is reserved for the offline store's ingestion time"
            )
        return self

    def config_hash(self) -> str:
        """Stable hash of the validated config (a lineage tag on every model version); ``cache``
        is left out: it changes how a run gets its outputs, not what they are."""
        blob = json.dumps(self.model_dump(mode="json", exclude={"cache"}), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


class _LimitExceeded(yaml.YAMLError):
    """The bounded loader refused the document; ``problem`` says why, at ``problem_mark``."""

    def __init__(self, problem: str, mark: yaml.Mark | None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.problem_mark = mark


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader with the limits of the module doc, checked while composing.

    Every node composed counts 1; an alias counts the expanded size of the node it names (that
    size is recorded when the anchored node is complete, so the count is exact and linear in
    the text). Composition only links alias to node, so it stays cheap even on a bomb: the
    limits stop the *expansion* that validation and error messages would otherwise walk.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0
        self._expanded = 0
        self._open_anchors: set[str] = set()
        self._sizes: dict[int, int] = {}  # id(node) -> size with aliases expanded

    def _count(self, size: int, mark: yaml.Mark) -> None:
        self._expanded += size
        if self._expanded > MAX_NODES:
            raise _LimitExceeded(
                f"YAML with its aliases expanded exceeds {MAX_NODES} nodes "
                "(the limit of a pipeline config)",
                mark,
            )

    def _size(self, node: yaml.Node) -> int:
        if isinstance(node, yaml.SequenceNode):
            children: Iterable[yaml.Node] = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        else:
            return 1
        return 1 + sum(self._sizes.get(id(child), 1) for child in children)

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise _LimitExceeded(
                    f"more than {MAX_ALIASES} YAML aliases (the limit of a pipeline config)",
                    event.start_mark,
                )
            if event.anchor in self._open_anchors:
                raise _LimitExceeded(
                    f"recursive YAML alias *{one_line(event.anchor)}", event.start_mark
                )
            node = super().compose_node(parent, index)
            self._count(self._sizes.get(id(node), 1), event.start_mark)
            return node
        if self._depth >= MAX_DEPTH:
            raise _LimitExceeded(
                f"YAML nested deeper than {MAX_DEPTH} levels (the limit of a pipeline config)",
                event.start_mark,
            )
        self._count(1, event.start_mark)
        anchor = getattr(event, "anchor", None)
        if anchor is not None:
            self._open_anchors.add(anchor)
        self._depth += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
            self._open_anchors.discard(anchor)
        if not isinstance(node, yaml.ScalarNode):
            self._sizes[id(node)] = self._size(node)
        return node


def _read_yaml(text: str, where: str) -> tuple[Any, yaml.Node | None]:
    """``(data, root node)`` of one YAML document read with :class:`_BoundedLoader`; raises
    :class:`ConfigError` ``where[:line]: ...`` on a size limit or invalid YAML."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"{where}: {size} bytes, over the {MAX_CONFIG_BYTES // 1024} KiB limit "
            "of a pipeline config"
        )
    loader = _BoundedLoader(text)
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    except _LimitExceeded as exc:
        line = f":{exc.problem_mark.line + 1}" if exc.problem_mark else ""
        raise ConfigError(f"{where}{line}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}{line}: not valid YAML: {one_line(problem)}") from None
    except (ValueError, RecursionError) as exc:  # e.g. an int literal past Python's digit limit
        raise ConfigError(f"{where}: not valid YAML: {one_line(exc)}") from None
    finally:
        loader.dispose()
    return data, root


def _line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """1-based line of the YAML node at ``loc`` (the deepest one that exists)."""
    line = node.start_mark.line + 1 if node is not None else None
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            match = [(k, v) for k, v in node.value if k.value == key]
            if not match:
                break
            line = match[0][0].start_mark.line + 1
            node = match[0][1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _field_errors(exc: ValidationError, root: yaml.Node | None, where: str) -> str:
    """One ``where:line: field: problem (got ...)`` line per pydantic error (the first
    ``MAX_ERROR_LINES``), the echoed input cut to ``ECHO_CHARS``."""
    errors = exc.errors()
    lines = []
    for err in errors[:MAX_ERROR_LINES]:
        loc = tuple(err["loc"])
        problem = (err.get("ctx") or {}).get("error")
        if isinstance(problem, FieldProblem):  # a validator naming a field below its own;
            loc = loc + problem.loc  # its message names the value itself
            err = {**err, "input": {}}
        field = ".".join(str(p) for p in loc) or "(top level)"
        line = None if err["type"] == "missing" and len(loc) == 1 else _line_of(root, loc)
        msg = one_line(err["msg"].removeprefix("Value error, "), 200)
        shown = err["type"] != "missing" and not isinstance(err.get("input"), dict)
        got = f" (got {echo(err['input'])})" if shown else ""
        lines.append(
            f"{where}:{line}: {field}: {msg}{got}" if line else f"{where}: {field}: {msg}{got}"
        )
    if len(errors) > MAX_ERROR_LINES:
        lines.append(f"{where}: ... and {len(errors) - MAX_ERROR_LINES} more errors")
    return "\n".join(lines)


def _parse(text: str, where: str) -> tuple[PipelineConfig, yaml.Node]:
    data, root = _read_yaml(text, where)
    if not isinstance(data, dict):
        raise ConfigError(
            f"{where}: expected a mapping of pipeline settings, got {type(data).__name__}"
        )
    try:
        return PipelineConfig.model_validate(data), root
    except ValidationError as exc:
        raise ConfigError(_field_errors(exc, root, where)) from None


def parse_pipeline(text: str, where: str = "<config>") -> PipelineConfig:
    """Validate YAML text; errors name ``where:line: field: problem`` (see the module doc for
    the limits on size, nesting and aliases)."""
    return _parse(text, where)[0]


def _read(path: Path) -> str:
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read pipeline config: {exc.strerror}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"{path}: over the {MAX_CONFIG_BYTES // 1024} KiB limit of a pipeline config"
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None


def load_pipeline(path: str | Path) -> PipelineConfig:
    """Read and validate ``pipelines/<name>.yaml`` (never more than ``MAX_CONFIG_BYTES``)."""
    path = Path(path)
    return parse_pipeline(_read(path), where=str(path))


def field_locator(path: str | Path) -> Callable[[tuple[str | int, ...]], str]:
    """For a pipeline file that parses: a function from a field's path (``("features",
    "numeric", 2)``) to ``file:line`` of that field in the file (``file`` alone when the field is
    not written there, e.g. a default), for errors found after validation (``mlplatform check``)."""
    path = Path(path)
    _, root = _read_yaml(_read(path), str(path))

    def where(loc: tuple[str | int, ...]) -> str:
        line = _line_of(root, loc)
        return f"{path}:{line}" if line else str(path)

    return where


@dataclass(frozen=True)
class PipelineFile:
    """One pipeline file as the DAG factory and ``mlplatform check`` see it: its validated
    ``config``, or the ``error`` (the :class:`ConfigError` text) that keeps it out."""

    path: Path
    config: PipelineConfig | None = None
    error: str | None = None
    name_line: int | None = None

    @property
    def ok(self) -> bool:
        return self.config is not None


def _load_file(path: Path) -> PipelineFile:
    try:
        cfg, root = _parse(_read(path), str(path))
    except ConfigError as exc:
        return PipelineFile(path, error=str(exc))
    return PipelineFile(path, config=cfg, name_line=_line_of(root, ("name",)))


def _name_matches_file(item: PipelineFile) -> PipelineFile:
    """Tasks look a pipeline's config up as ``<name>.yaml``: another file name is an error."""
    if item.config is None or item.config.name == item.path.stem:
        return item
    where = f"{item.path}:{item.name_line}" if item.name_line else str(item.path)
    error = (
        f"{where}: name: {item.config.name!r} must match the file name; rename the file to "
        f"{item.config.name}.yaml or set name: {item.path.stem}"
    )
    return PipelineFile(item.path, error=error, name_line=item.name_line)


def load_pipelines(paths: Iterable[Path]) -> list[PipelineFile]:
    """Load every file of ``paths`` (duplicates by resolved path once, in the given order).

    A file that does not validate carries its error, and so does one whose ``name`` differs
    from its file name (tasks find a pipeline's config as ``<name>.yaml``). Files that validate
    but declare a
    pipeline ``name`` that another file also declares all fail, each with one line naming the
    others::

        pipelines/b.yaml:3: name: pipeline 'churn' is also declared in pipelines/a.yaml:3;
        pipeline names must be unique (DAG ids derive from them)
    """
    seen: set[Path] = set()
    files = []
    for path in paths:
        if path.resolve() not in seen:
            seen.add(path.resolve())
            files.append(_load_file(path))
    by_name: dict[str, list[PipelineFile]] = {}
    for item in files:
        if item.config is not None:
            by_name.setdefault(item.config.name, []).append(item)
    clashes = {id(f): group for group in by_name.values() if len(group) > 1 for f in group}
    return [
        _duplicate(item, clashes[id(item)]) if id(item) in clashes else _name_matches_file(item)
        for item in files
    ]


def _duplicate(item: PipelineFile, group: list[PipelineFile]) -> PipelineFile:
    assert item.config is not None
    others = ", ".join(
        f"{other.path}:{other.name_line}" if other.name_line else str(other.path)
        for other in group
        if other is not item
    )
    where = f"{item.path}:{item.name_line}" if item.name_line else str(item.path)
    error = (
        f"{where}: name: pipeline {item.config.name!r} is also declared in {others}; "
        "pipeline names must be unique (DAG ids derive from them)"
    )
    return PipelineFile(item.path, error=error, name_line=item.name_line)


def pipeline_files(pipelines_dir: Path) -> list[Path]:
    """The pipeline files of a directory: ``*.yaml``, sorted."""
    return sorted(pipelines_dir.glob("*.yaml"))


def find_pipeline(name_or_path: str, pipelines_dir: Path) -> Path:
    """Resolve ``demo`` or ``pipelines/demo.yaml`` to a file, with a clear error when absent."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") and candidate.exists():
        return candidate
    path = pipelines_dir / f"{name_or_path}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in pipelines_dir.glob("*.yaml"))
        raise ConfigError(
            f"no pipeline {name_or_path!r} in {pipelines_dir} (known: {', '.join(known) or 'none'})"
        )
    return path
