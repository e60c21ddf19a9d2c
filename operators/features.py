"""Feast operators: apply + materialize the batch, then the point-in-time training set."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlplatform.contracts import IngestOutput
from operators.base import PlatformOperator

if TYPE_CHECKING:
    from mlplatform.config import PipelineConfig
    from mlplatform.settings import Settings


class FeaturesOperator(PlatformOperator):
    """Land the validated batch in the offline store as the newest copy of its rows, ``feast
    apply`` when the definitions changed, materialize what the online store lacks and record it
    in the ledger (``data``: ingest's XCom; :mod:`mlplatform.stages.materialize`).

    XCom: ``feature_service``, ``feature_view``, ``applied``, ``apply`` (``applied: <reason>``
    or ``skipped: definitions unchanged ...``), ``definitions_sha256``, ``materialization``
    (one line, ``already materialized: ...`` on a re-run), ``materialized`` (intervals, the
    first 20), ``materialized_batches``, ``materialized_from``/``materialized_to``,
    ``materialized_rows``, ``entity_kind``, ``ingested_at``, ``superseded_rows``,
    ``stored_batches``, ``dropped_columns``.
    """

    stage = "features"
    data: IngestOutput  # its XCom, rendered when the task runs
    template_fields = ("data",)
    ui_color = "#eef7ea"

    def __init__(self, *, data: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.data = data

    def run_stage(
        self, cfg: PipelineConfig, out_dir: Path, settings: Settings, context: Any
    ) -> Mapping[str, Any]:
        from mlplatform.stages.features import materialize_features

        return materialize_features(
            cfg, self.data["data_uri"], self.data["data_version"], out_dir, settings
        )

    def cache_parts(self, cfg, settings, context):
        from mlplatform.cache_keys import features_parts

        return features_parts(cfg, self.data, settings)

    def cache_state(self, cfg, settings, result):
        from mlplatform.cache_keys import feast_state

        return feast_state(cfg, settings)


class TrainingSetOperator(PlatformOperator):
    """Point-in-time join of the history's labels (the batch's, or ``retrain.window_days`` of
    history) with the feature service, split train/hold-out by time; stops before training when
    training cannot mean anything.

    XCom: ``training_set_uri``, ``train_uri``, ``holdout_uri``, ``rows``, ``train_rows``,
    ``holdout_rows``, ``window_days``/``window_from``/``window_to``, ``imputed`` (missing values
    per feature, imputed by the model).
    """

    stage = "training_set"
    data: IngestOutput  # its XCom, rendered when the task runs
    template_fields = ("data",)
    ui_color = "#eef7ea"

    def __init__(self, *, data: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.data = data

    def run_stage(
        self, cfg: PipelineConfig, out_dir: Path, settings: Settings, context: Any
    ) -> Mapping[str, Any]:
        from mlplatform.stages.features import build_training_set

        return build_training_set(cfg, self.data["data_uri"], out_dir, settings)

    def cache_parts(self, cfg, settings, context):
        from mlplatform.cache_keys import training_set_parts

        return training_set_parts(cfg, self.data, settings)
