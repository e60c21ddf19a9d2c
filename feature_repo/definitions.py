"""Feast definitions, declared from a pipeline config: entity, file source, feature view, service.

A pipeline's features are declared in its YAML (``features:``); this module turns that into Feast
objects, so onboarding a model needs no Feast code. ``feast apply`` equivalents run in
:mod:`mlplatform.stages.features`. Names: entity ``<entity column>``, view ``features.view``,
service ``<pipeline>_service``; the offline source is the directory of validated batches.

The source's ``created_timestamp_column`` is the ingestion time that the features stage stamps on
every batch (:data:`mlplatform.config.INGESTED_AT_COLUMN`): of two copies of one (entity, event
time) row, the newer one wins. The entity's value type follows the data: ``"int64"`` keys are
``INT64``, ``"string"`` keys ``STRING`` (:func:`mlplatform.stages.features.entity_kind`).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Literal

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Float32, Int64, String

from mlplatform.config import INGESTED_AT_COLUMN, PipelineConfig

EntityKind = Literal["int64", "string"]

_ENTITY_TYPES = {"int64": (ValueType.INT64, Int64), "string": (ValueType.STRING, String)}


def service_name(cfg: PipelineConfig) -> str:
    return f"{cfg.name}_service"


def build_definitions(
    cfg: PipelineConfig, offline_dir: Path, entity_kind: EntityKind = "int64"
) -> tuple[Entity, FeatureView, FeatureService]:
    """The Feast objects for one pipeline; ``offline_dir`` holds its validated Parquet batches,
    whose entity keys are of ``entity_kind``."""
    value_type, field_type = _ENTITY_TYPES[entity_kind]
    entity = Entity(name=cfg.source.entity, join_keys=[cfg.source.entity], value_type=value_type)
    source = FileSource(
        name=f"{cfg.name}_batches",
        path=str(offline_dir),
        timestamp_field=cfg.source.timestamp,
        created_timestamp_column=INGESTED_AT_COLUMN,
    )
    schema = [Field(name=cfg.source.entity, dtype=field_type)]
    schema += [Field(name=c, dtype=Float32) for c in cfg.features.numeric]
    schema += [Field(name=c, dtype=String) for c in cfg.features.categorical]
    view = FeatureView(
        name=cfg.features.view,
        entities=[entity],
        ttl=timedelta(days=cfg.features.ttl_days),
        schema=schema,
        source=source,
        online=True,
        tags={"pipeline": cfg.name},
    )
    service = FeatureService(name=service_name(cfg), features=[view], tags={"pipeline": cfg.name})
    return entity, view, service
