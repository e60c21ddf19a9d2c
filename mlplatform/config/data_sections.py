"""Config sections of the data: ``source``, ``validation``, ``features``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from mlplatform.config.common import (
    FieldProblem,
    _Strict,
    _usable_names,
    check_schedule,
    model_name_clash,
)


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
