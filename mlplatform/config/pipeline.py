"""The whole pipeline config (:class:`PipelineConfig`), validated across its sections."""

from __future__ import annotations

import hashlib
import json

from pydantic import Field, model_validator

from mlplatform.config.common import INGESTED_AT_COLUMN, FieldProblem, _Strict
from mlplatform.config.data_sections import FeaturesConfig, SourceConfig, ValidationConfig
from mlplatform.config.model_sections import (
    CLASSIFIER_METRICS,
    REGRESSOR_METRICS,
    GateConfig,
    ModelConfig,
    TrainingConfig,
)
from mlplatform.config.ops_sections import (
    AlertsConfig,
    MonitoringConfig,
    RetrainConfig,
    ScoringConfig,
    ServingConfig,
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
