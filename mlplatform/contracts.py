"""The train DAG's stage contracts: its stages in order and the XCom each one returns.

One place for what used to be written in several (the DAG factory's chain, the CLI's stage
table, the benchmarks, the tests). Each stage's output is a ``TypedDict``: the keys of the dict
its operator returns (the task's XCom ``return_value``, also ``outputs`` in ``summary.json``).
A stage reused from an earlier run (:mod:`operators.caching`) carries ``cached_from`` and
``cache_key`` too. The dicts forbid undeclared keys when validated
(:func:`validate_output`), so a stage that grows or loses a key fails
``tests/test_contracts.py`` until its contract says so.

Cheap to import (``typing_extensions`` and ``pydantic``, which the config needs anyway): the
DAG factory, the CLI and the operators import it at parse time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, NotRequired

from pydantic import with_config

# pydantic validates a TypedDict only from typing_extensions on Python < 3.12
from typing_extensions import TypedDict

if TYPE_CHECKING:
    from pydantic import TypeAdapter


# validated, an undeclared key is an error (the contract drifted); subclasses inherit it
@with_config(extra="forbid")
class StageOutput(TypedDict):
    """Keys any stage's XCom may carry: those step caching adds to a reused output."""

    cached_from: NotRequired[str]
    cache_key: NotRequired[str]


class StartRunOutput(StageOutput):
    """``start_run``: the run's lease is taken and its config frozen."""

    config_hash: str
    config_snapshot: str
    waited_s: float
    reaped_run: str | None


class DecideOutput(StageOutput):
    """``decide`` (retrain only: a skip skips the task)."""

    decision: str
    triggers: list[str]
    reason: str
    summary: str


class IngestOutput(StageOutput):
    """``ingest``: the batch as Parquet, versioned with DVC."""

    data_uri: str
    data_version: str
    data_commit: str
    rows: int
    duplicates_dropped: int
    chunks: int
    files: int
    source_uri: str
    new: bool
    reused: NotRequired[bool]
    ingested_at: NotRequired[str]


class ValidateOutput(StageOutput):
    """``validate``: the batch passed its expectation suite."""

    validation: str
    data_docs: str
    evaluated: int


class FeaturesOutput(StageOutput):
    """``features``: the batch in the offline store, definitions applied, materialized."""

    feature_service: str
    feature_view: str
    applied: bool
    apply: str
    definitions_sha256: str
    materialization: str
    materialized: list[dict[str, Any]]
    materialized_batches: int
    materialized_from: str | None
    materialized_to: str | None
    materialized_rows: int
    entity_kind: str
    ingested_at: str
    superseded_rows: int
    stored_batches: int
    dropped_columns: list[str]


class TrainingSetOutput(StageOutput):
    """``training_set``: the point-in-time training set, split train/hold-out by time."""

    training_set_uri: str
    train_uri: str
    holdout_uri: str
    rows: int
    train_rows: int
    holdout_rows: int
    window_days: int | None
    window_from: str
    window_to: str
    imputed: dict[str, int]


class TrainOutput(StageOutput):
    """``train`` (both backends, :func:`operators.training.train_xcom`)."""

    mlflow_run_id: str | None
    model_uri: str | None
    metrics: dict[str, float | None]
    world_size: int
    samples_per_sec: float | None
    tags: dict[str, str]


class RegisterOutput(StageOutput):
    """``register``: the trained model as a registered version with alias challenger."""

    model_name: str
    model_version: int
    mlflow_run_id: str
    model_uri: str


class GateOutput(StageOutput):
    """``gate`` (passed only: a refusal skips the task)."""

    metric: str
    challenger_version: int
    challenger: float
    champion_version: int | None
    champion: float | None
    holdout_rows: int
    slices: dict[str, float]
    champion_note: NotRequired[str]
    decision: str


class InfraValidateOutput(StageOutput):
    """``infra_validate``: the candidate loaded, answered and met the latency budget."""

    candidate_dir: str
    version: int
    requests: int
    p50_ms: float
    p99_ms: float
    warmup_file: str


class PromoteOutput(StageOutput):
    """``promote``: the candidate published and labelled."""

    model_name: str
    served_version: int | None
    label: str
    version: int
    previous_version: int | None
    model_base: str
    content_sha256: str


class EndRunOutput(StageOutput):
    """``end_run`` (teardown): the lease given back."""

    lease: str


@dataclass(frozen=True)
class Stage:
    """One task of the train DAG: its task id, its XCom's type and the output key that
    ``mlplatform run`` shows on the stage's line."""

    name: str
    output: type
    key: str


#: the train DAG's tasks, in chain order (``end_run`` is ``start_run``'s teardown)
TRAIN_DAG: tuple[Stage, ...] = (
    Stage("start_run", StartRunOutput, "config_hash"),
    Stage("decide", DecideOutput, "summary"),
    Stage("ingest", IngestOutput, "data_version"),
    Stage("validate", ValidateOutput, "data_docs"),
    Stage("features", FeaturesOutput, "feature_service"),
    Stage("training_set", TrainingSetOutput, "training_set_uri"),
    Stage("train", TrainOutput, "model_uri"),
    Stage("register", RegisterOutput, "model_uri"),
    Stage("gate", GateOutput, "challenger"),
    Stage("infra_validate", InfraValidateOutput, "p99_ms"),
    Stage("promote", PromoteOutput, "served_version"),
    Stage("end_run", EndRunOutput, "lease"),
)
#: the train DAG's task ids in chain order
TRAIN_STAGES: tuple[str, ...] = tuple(s.name for s in TRAIN_DAG)
#: the tasks that control the run rather than work on data or models
RUN_CONTROL: frozenset[str] = frozenset(("start_run", "decide", "end_run"))
#: the stages that do the pipeline's work (``ingest`` .. ``promote``), in order
WORK_STAGES: tuple[str, ...] = tuple(s for s in TRAIN_STAGES if s not in RUN_CONTROL)
#: stage name -> its output type
OUTPUTS: Mapping[str, type] = {s.name: s.output for s in TRAIN_DAG}


class ContractError(ValueError):
    """A stage's output does not match its declared type."""


@cache
def _adapter(stage: str) -> TypeAdapter[Any]:
    from pydantic import TypeAdapter

    return TypeAdapter(OUTPUTS[stage])


def validate_output(stage: str, output: Mapping[str, Any]) -> dict[str, Any]:
    """``output`` validated against ``stage``'s declared type (an unknown stage is a
    :class:`KeyError`); raises :class:`ContractError` naming the stage and every key that is
    missing, undeclared or of the wrong type, on one line. Returns the validated dict."""
    from pydantic import ValidationError

    if stage not in OUTPUTS:
        raise KeyError(f"no contract for stage {stage!r}; stages: {', '.join(TRAIN_STAGES)}")
    try:
        return dict(_adapter(stage).validate_python(dict(output)))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '<output>'}: {e['msg']}" for e in exc.errors()
        )
        raise ContractError(f"{stage}: output breaks its contract: {problems}") from None
