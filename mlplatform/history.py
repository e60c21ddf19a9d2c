"""The validated history of a pipeline: its data versions in the offline feature store.

Only batches that passed validation reach the offline store (``<data_version>.parquet`` each,
:mod:`mlplatform.stages.features`), so its files are the pipeline's validated data versions;
each row carries when its batch landed (``mlp_ingested_at``). :func:`validated_versions` lists
them newest first: the newest is what a retrain without a new batch trains towards (the training
window ends at its latest event time) and what the champion's ``data_version`` is compared with.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlplatform.config import INGESTED_AT_COLUMN, PipelineConfig
from mlplatform.settings import Settings


@dataclass(frozen=True)
class ValidatedVersion:
    data_version: str
    ingested_at: str  # ISO 8601, UTC
    rows: int


def validated_versions(cfg: PipelineConfig, settings: Settings) -> list[ValidatedVersion]:
    """The validated data versions still in the offline store, newest landing first."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from mlplatform.stages.features import offline_dir, stored_batches

    found = []
    for path in stored_batches(offline_dir(cfg, settings)):
        column = pq.read_table(path, columns=[INGESTED_AT_COLUMN]).column(0)
        latest = pc.max(column).as_py()
        found.append(ValidatedVersion(path.stem, latest.isoformat() if latest else "", len(column)))
    return sorted(found, key=lambda v: (v.ingested_at, v.data_version), reverse=True)


def newest_validated(cfg: PipelineConfig, settings: Settings) -> ValidatedVersion | None:
    versions = validated_versions(cfg, settings)
    return versions[0] if versions else None


def is_validated(cfg: PipelineConfig, settings: Settings, data_version: str) -> bool:
    """Whether ``data_version`` is in the offline store already (validated by an earlier run)."""
    from mlplatform.stages.features import offline_dir

    return (offline_dir(cfg, settings) / f"{data_version}.parquet").exists()
