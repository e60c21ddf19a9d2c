"""Airflow operators of the platform, one per stage: thin wrappers over :mod:`mlplatform.stages`.

Import cost matters (Airflow parses DAG files every few seconds): these modules import only the
Airflow SDK and pydantic config at top level; libraries load inside ``execute``.
"""

from operators.base import PlatformOperator
from operators.features import FeaturesOperator, TrainingSetOperator
from operators.ingest import IngestOperator
from operators.invalid import InvalidPipelineOperator
from operators.registry import (
    GateOperator,
    InfraValidateOperator,
    PromoteOperator,
    RegisterOperator,
    RollbackOperator,
)
from operators.score import ScoreOperator
from operators.training import LocalHorovodTrainOperator
from operators.validate import ValidateOperator

__all__ = [
    "FeaturesOperator",
    "GateOperator",
    "InfraValidateOperator",
    "IngestOperator",
    "InvalidPipelineOperator",
    "LocalHorovodTrainOperator",
    "PlatformOperator",
    "PromoteOperator",
    "RegisterOperator",
    "RollbackOperator",
    "ScoreOperator",
    "TrainingSetOperator",
    "ValidateOperator",
]
