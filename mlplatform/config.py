"""The pipeline config: one YAML per model under ``pipelines/``, the self-service contract.

:func:`load_pipeline` parses and validates a file and raises :class:`ConfigError` whose message
names the file, the line and the field, e.g.::

    pipelines/churn.yaml:14: gate.min: Input should be less than or equal to 1 (got 1.5)
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class ConfigError(ValueError):
    """A pipeline config is malformed; ``str()`` is one readable line (or one line per field)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SourceConfig(_Strict):
    uri: str | None = Field(default=None, description="default data URI; overridable per run")
    format: Literal["csv", "parquet"] = "csv"
    timestamp: str = Field(description="event-time column")
    entity: str = Field(description="entity key column")


class ValidationConfig(_Strict):
    suite: str = Field(description="expectation suite name under great_expectations/expectations/")


class FeaturesConfig(_Strict):
    view: str
    ttl_days: int = Field(default=30, gt=0)
    label: str
    numeric: list[str] = Field(default_factory=list)
    categorical: list[str] = Field(default_factory=list)
    holdout_fraction: float = Field(default=0.2, gt=0, lt=1)

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
    kind: Literal["tabular_classifier", "tabular_regressor"] = "tabular_classifier"
    hidden_units: list[int] = Field(default_factory=lambda: [64, 32])
    epochs: int = Field(default=5, ge=1, le=1000)
    batch_size: int = Field(default=256, ge=1)
    learning_rate: float = Field(default=1e-3, gt=0)
    seed: int = 42

    @field_validator("hidden_units")
    @classmethod
    def _positive_units(cls, v: list[int]) -> list[int]:
        if not v or any(u <= 0 for u in v):
            raise ValueError("hidden_units must be a non-empty list of positive integers")
        return v


class TrainingConfig(_Strict):
    workers: int = Field(default=1, ge=1, description="pods (Kubernetes) / hosts")
    processes_per_worker: int = Field(
        default=2, ge=1, description="horovod slots per worker on CPU"
    )
    gpus_per_worker: int = Field(default=0, ge=0, description="GPUs per pod; one process per GPU")
    image: str = "mlplatform/trainer:latest"
    resources: dict[str, str] = Field(default_factory=dict)

    @property
    def np(self) -> int:
        """Total horovod processes: one per GPU, else ``processes_per_worker`` per worker."""
        return self.workers * (self.gpus_per_worker or self.processes_per_worker)


class GateConfig(_Strict):
    metric: Literal["auc", "accuracy", "rmse", "mae"] = "auc"
    min: float | None = Field(default=None, description="absolute floor (ceiling for rmse/mae)")
    max_regression: float = Field(default=0.0, ge=0, description="allowed loss vs champion")
    slices: list[str] = Field(
        default_factory=list, description="categorical features to also gate per value"
    )
    min_slice_rows: int = Field(
        default=30, ge=1, description="smaller slices are reported, not gated"
    )

    @property
    def higher_is_better(self) -> bool:
        return self.metric in ("auc", "accuracy")


class ServingConfig(_Strict):
    model_name: str = Field(pattern=r"^[A-Za-z0-9_\-]+$")
    canary: bool = Field(
        default=False, description="promote as label canary; stable moves on `mlplatform promote`"
    )
    latency_budget_ms: float = Field(default=250.0, gt=0, description="infra validation p99 budget")
    warmup_requests: int = Field(
        default=20, ge=1, le=1000, description="hold-out requests replayed"
    )


class MonitoringConfig(_Strict):
    schedule: str = "@daily"
    drift_share: float = Field(default=0.3, gt=0, le=1)
    min_rows: int = Field(default=500, ge=1)
    cooldown_hours: int = Field(default=24, ge=0)


class RetrainConfig(_Strict):
    schedule: str | None = "@weekly"
    on_new_data: bool = True
    on_drift: bool = True


class PipelineConfig(_Strict):
    """One model's pipeline: data source through serving and monitoring."""

    name: str = Field(
        pattern=r"^[a-z][a-z0-9_]*$", description="pipeline id (DAG ids derive from it)"
    )
    description: str = ""
    source: SourceConfig
    validation: ValidationConfig
    features: FeaturesConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    gate: GateConfig = Field(default_factory=GateConfig)
    serving: ServingConfig
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig)
    retrain: RetrainConfig = Field(default_factory=RetrainConfig)

    @model_validator(mode="after")
    def _metric_fits_kind(self) -> PipelineConfig:
        classifier = self.model.kind == "tabular_classifier"
        if classifier != self.gate.higher_is_better:
            raise ValueError(
                f"gate.metric {self.gate.metric!r} does not fit model.kind {self.model.kind!r}"
            )
        unknown = [s for s in self.gate.slices if s not in self.features.categorical]
        if unknown:
            raise ValueError(f"gate.slices must name categorical features, not {unknown}")
        return self

    def config_hash(self) -> str:
        """Stable hash of the validated config (a lineage tag on every model version)."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


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


def parse_pipeline(text: str, where: str = "<config>") -> PipelineConfig:
    """Validate YAML text; errors name ``where:line: field: problem``."""
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}{line}: not valid YAML: {problem}") from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"{where}: expected a mapping of pipeline settings, got {type(data).__name__}"
        )
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = tuple(p for p in err["loc"])
            field = ".".join(str(p) for p in loc) or "(top level)"
            line = None if err["type"] == "missing" and len(loc) == 1 else _line_of(root, loc)
            msg = err["msg"].removeprefix("Value error, ")
            got = (
                f" (got {err['input']!r})"
                if err["type"] not in ("missing",) and not isinstance(err.get("input"), dict)
                else ""
            )
            lines.append(
                f"{where}:{line}: {field}: {msg}{got}" if line else f"{where}: {field}: {msg}{got}"
            )
        raise ConfigError("\n".join(lines)) from None


def load_pipeline(path: str | Path) -> PipelineConfig:
    """Read and validate ``pipelines/<name>.yaml``."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read pipeline config: {exc.strerror}") from None
    return parse_pipeline(text, where=str(path))


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
