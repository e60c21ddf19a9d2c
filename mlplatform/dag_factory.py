"""Airflow DAGs from pipeline files; what ``dags/mlplatform_pipelines.py`` exposes to Airflow.

Per valid ``pipelines/*.yaml``: a training DAG ``mlp_<name>_train``, a manual rollback DAG
``mlp_<name>_rollback``, a batch scoring DAG ``mlp_<name>_score`` (:mod:`mlplatform.score_dag`),
with a ``monitoring.schedule`` a monitor DAG ``mlp_<name>_monitor`` (:mod:`mlplatform.monitor_dag`)
and, when the pipeline names a landing source (``source.uri``), an ingest DAG ``mlp_<name>_ingest``.
Every DAG's ``default_args`` come from :func:`dag_default_args` (failure alerts included). Per file
that is *not* valid: a placeholder DAG
``mlp_<file stem>_invalid``, so that the problem shows in the Airflow UI while every good
pipeline keeps its DAGs.

Why a placeholder rather than an import error: Airflow records import errors per DAG *file*, and
a DAG file that raises loses all of its DAGs; this one file builds every pipeline's DAGs, so one
bad YAML would hide them all. A placeholder is tagged ``invalid``, its description is the very
line ``mlplatform check`` prints for that file (:func:`check_pipeline`), it has no schedule, and
its one task ``config_error`` fails with that line if anyone triggers it. A file is invalid when
it does not validate (:func:`mlplatform.config.load_pipelines`: YAML limits, schema, schedules),
when its pipeline name is also declared by another file (both files get a placeholder), or when
building or validating its DAGs raises (the error becomes the line).

Airflow (the SDK and the operators) is imported inside the functions, so ``mlplatform`` stays
importable without Airflow and ``mlplatform check`` builds the DAGs of one config in-process.
"""

from __future__ import annotations

import hashlib
import logging
import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlplatform.config import (
    ConfigError,
    PipelineConfig,
    PipelineFile,
    load_pipelines,
    one_line,
    pipeline_files,
)
from mlplatform.dag_docs import train_dag_doc
from mlplatform.settings import get_settings

if TYPE_CHECKING:
    from airflow.sdk import DAG

log = logging.getLogger(__name__)

START_DATE = datetime(2026, 1, 1)
INVALID_TAG = "invalid"

INGEST_DAG_DOC = """Ingest DAG of a pipeline with a landing source (``source.uri``, templated by the
run's data interval, e.g. ``{{ mlp_home }}/landing/{{ data_interval_start | ds }}/*.csv``)::

    start_run -> ingest -> validate -> features -> publish  (end_run: teardown, always)

Scheduled on ``source.schedule``. ``publish`` emits the pipeline's data asset for a data version
no earlier run validated; an interval with no batch skips the run with the reason.
"""

#: Airflow schedules that cannot be combined with assets (they are not cron expressions)
NOT_CRON = ("@once", "@continuous")


def dag_default_args(cfg: PipelineConfig, **overrides: Any) -> dict[str, Any]:
    """The ``default_args`` of every platform DAG of pipeline ``cfg``: ``owner`` (``cfg.owner``),
    ``pipeline`` (every platform
    operator takes it) and ``on_failure_callback``, a :class:`~operators.notifiers.FailureAlertNotifier`
    (a task that fails for good sends a ``failure`` alert), plus ``overrides`` (``retries`` ...)."""
    from operators.notifiers import FailureAlertNotifier

    return {
        "pipeline": cfg.name,
        "owner": cfg.owner,
        "on_failure_callback": [FailureAlertNotifier(cfg.name)],
        **overrides,
    }


def pipeline_dag(cfg: PipelineConfig, kind: str, **kwargs: Any) -> DAG:
    """A platform DAG of pipeline ``cfg``: ``mlp_<name>_<kind>``, starting at ``START_DATE``
    with no catch-up, tagged ``mlplatform``, ``kind`` and the pipeline's name; ``kwargs`` are the
    rest of ``DAG``'s arguments (``schedule``, ``description``, ``max_active_runs``, ...)."""
    from airflow.sdk import DAG

    return DAG(
        dag_id=f"mlp_{cfg.name}_{kind}",
        start_date=START_DATE,
        catchup=False,
        tags=["mlplatform", kind, cfg.name],
        **kwargs,
    )


def train_operator_class() -> type:
    """The train operator of ``MLP_TRAINING_BACKEND`` (``local`` | ``kubernetes``)."""
    if get_settings().training_backend == "kubernetes":
        # ≈3.6 s of kubernetes-client imports: only Kubernetes deployments pay them at parse time
        from operators.kubernetes_training import HorovodKubernetesTrainOperator

        return HorovodKubernetesTrainOperator
    from operators import LocalHorovodTrainOperator

    return LocalHorovodTrainOperator


def train_schedule(cfg: PipelineConfig) -> Any:
    """The train DAG's schedule from the ``retrain`` section: the cron ``retrain.schedule``, the
    data asset (``on_new_data``, only where an ingest DAG emits it: ``source.uri`` set) and the
    drift asset (``on_drift``), any of them (Airflow's ``AssetOrTimeSchedule`` / ``|``); None
    when none is set."""
    from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable

    from mlplatform.assets import data_asset, drift_asset

    assets = []
    if cfg.retrain.on_new_data and cfg.source.uri:
        assets.append(data_asset(cfg.name))
    if cfg.retrain.on_drift:
        assets.append(drift_asset(cfg.name))
    cron = cfg.retrain.schedule
    if not assets:
        return cron
    condition = assets[0]
    for asset in assets[1:]:
        condition = condition | asset
    if cron is None:
        return condition
    if cron in NOT_CRON:
        raise ConfigError(
            f"retrain.schedule {cron!r} cannot be combined with retrain.on_new_data/on_drift; "
            "use a cron expression or preset, or set both to false"
        )
    return AssetOrTimeSchedule(
        timetable=CronTriggerTimetable(cron, timezone="UTC"), assets=condition
    )


def build_train_dag(cfg: PipelineConfig) -> DAG:
    """The training DAG of one pipeline; every task is a platform operator."""
    from airflow.sdk import Param

    from operators import (
        FeaturesOperator,
        GateOperator,
        InfraValidateOperator,
        IngestOperator,
        PromoteOperator,
        RegisterOperator,
        TrainingSetOperator,
        ValidateOperator,
    )
    from operators.decide import DecideOperator
    from operators.run_control import EndRunOperator, StartRunOperator

    with pipeline_dag(
        cfg,
        "train",
        description=cfg.description or f"train {cfg.name}",
        schedule=train_schedule(cfg),
        max_active_runs=1,
        # a backstop: a run whose driver died outright is failed by the scheduler after this
        dagrun_timeout=timedelta(hours=get_settings().run_timeout_hours),
        params={
            "data_uri": Param(
                "",
                type="string",
                description="raw batch to ingest; empty: train on the validated history",
            ),
            "cache": Param(
                True,
                type="boolean",
                description="reuse a stage's earlier output when its cache key is unchanged "
                "(false: run every stage afresh; config `cache: false` turns caching off)",
            ),
        },
        default_args=dag_default_args(cfg, retries=1, retry_delay=timedelta(seconds=30)),
        doc_md=train_dag_doc(cfg, get_settings()),
    ) as dag:
        start = StartRunOperator()
        decide = DecideOperator()
        ingest = IngestOperator()
        validate = ValidateOperator(data=ingest.output)
        features = FeaturesOperator(data=ingest.output)
        training_set = TrainingSetOperator(data=ingest.output)
        train = train_operator_class()(
            training_set=training_set.output,
            lineage=[ingest.output, validate.output, features.output],
        )
        registered = RegisterOperator(trained=train.output)
        gate = GateOperator(registered=registered.output, training_set=training_set.output)
        infra = InfraValidateOperator(
            registered=registered.output, training_set=training_set.output
        )
        promote = PromoteOperator(validated=infra.output)
        start >> decide >> ingest
        promote >> EndRunOperator().as_teardown(setups=start)
        validate >> features >> training_set
        gate >> infra
    return dag


def build_ingest_dag(cfg: PipelineConfig) -> DAG:
    """The ingest DAG of a pipeline with a landing source (``source.uri``): the batch of each data
    interval, validated, stored in the offline store and announced (data asset). Same operators
    and pipeline lease as the train DAG; its runs are scoped ``ingest`` (``run_scope``)."""
    from airflow.sdk import CronDataIntervalTimetable

    from operators import FeaturesOperator, IngestOperator, ValidateOperator
    from operators.publish import PublishDataOperator
    from operators.run_control import EndRunOperator, StartRunOperator

    assert cfg.source.uri, "an ingest DAG needs source.uri"
    cron = cfg.source.schedule
    schedule = cron if cron is None or cron in NOT_CRON else CronDataIntervalTimetable(cron, "UTC")
    with pipeline_dag(
        cfg,
        "ingest",
        description=f"ingest {cfg.name}'s landing batches: {cfg.source.uri}",
        schedule=schedule,
        max_active_runs=1,
        dagrun_timeout=timedelta(hours=get_settings().run_timeout_hours),
        default_args=dag_default_args(
            cfg, run_scope="ingest", retries=1, retry_delay=timedelta(seconds=30)
        ),
        doc_md=INGEST_DAG_DOC,
        # ``{{ mlp_home }}`` in source.uri: the platform home (MLP_HOME), e.g. a landing
        # directory beside the embedded state, wherever the home is
        user_defined_macros={"mlp_home": str(get_settings().home_dir)},
    ) as dag:
        start = StartRunOperator()
        ingest = IngestOperator(source_uri=cfg.source.uri, landing=True)
        validate = ValidateOperator(data=ingest.output)
        features = FeaturesOperator(data=ingest.output)
        publish = PublishDataOperator(data=ingest.output)
        start >> ingest
        validate >> features >> publish
        publish >> EndRunOperator().as_teardown(setups=start)
    return dag


def build_rollback_dag(cfg: PipelineConfig) -> DAG:
    """Manual DAG: serve the previous version again (param ``to_version`` to pick one)."""
    from airflow.sdk import Param

    from operators import RollbackOperator

    with pipeline_dag(
        cfg,
        "rollback",
        description=f"roll {cfg.serving.model_name} back to the previous served version",
        schedule=None,
        # both optional: the UI's trigger form requires a field unless its type allows null
        params={
            "to_version": Param(
                None,
                type=["null", "integer"],
                minimum=1,
                description="version to serve; empty = the previous published version",
            ),
            "reason": Param(
                None, type=["null", "string"], description="why (kept in the audit trail)"
            ),
        },
        default_args=dag_default_args(cfg, retries=0),
    ) as dag:
        RollbackOperator(to_version="{{ params.to_version }}")
    return dag


def build_pipeline_dags(cfg: PipelineConfig) -> list[DAG]:
    """The DAGs of one valid pipeline, each checked as the DagBag checks it (``validate``:
    timetable, params; ``check_cycle``), so that a failure here, not in the DagBag, says why."""
    from mlplatform.monitor_dag import build_monitor_dag
    from mlplatform.score_dag import build_score_dag

    dags = [build_train_dag(cfg), build_rollback_dag(cfg), build_score_dag(cfg)]
    dags += [dag for dag in [build_monitor_dag(cfg)] if dag is not None]
    if cfg.source.uri:
        dags.append(build_ingest_dag(cfg))
    for dag in dags:
        dag.validate()
        dag.check_cycle()
    return dags


def build_error(path: Path, exc: BaseException) -> str:
    """The one line for a pipeline whose DAGs could not be built."""
    return f"{path}: cannot build its DAGs: {type(exc).__name__}: {one_line(exc, 300)}"


def invalid_dag_id(path: Path, taken: set[str] | dict[str, Any] = frozenset()) -> str:
    """``mlp_<file stem>_invalid`` (stem reduced to Airflow's dag id characters); a short hash of
    the path is appended if that id is already in ``taken``."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", path.stem)[:200] or "pipeline"
    dag_id = f"mlp_{stem}_invalid"
    if dag_id in taken:
        dag_id = f"mlp_{stem}_{hashlib.sha256(str(path).encode()).hexdigest()[:8]}_invalid"
    return dag_id


def build_invalid_dag(path: Path, error: str, dag_id: str | None = None) -> DAG:
    """The placeholder DAG of a pipeline file that is not valid (see the module doc)."""
    from airflow.sdk import DAG

    from operators import InvalidPipelineOperator

    doc = (
        f"**Pipeline file `{path.name}` is not valid**; fix it and this placeholder is replaced "
        f"by the pipeline's DAGs on the next parse (`mlplatform check {path}` says the same):"
        f"\n\n```\n{error}\n```\n"
    )
    with DAG(
        dag_id=dag_id or invalid_dag_id(path),
        description=error,
        schedule=None,
        start_date=START_DATE,
        catchup=False,
        tags=["mlplatform", INVALID_TAG],
        doc_md=doc,
    ) as dag:
        InvalidPipelineOperator(error=error)
    return dag


def build_all(pipelines_dir: Path) -> dict[str, DAG]:
    """Every DAG of the pipeline files in ``pipelines_dir``, by dag id: each valid pipeline's,
    and a placeholder per invalid file. Never raises for a pipeline file."""
    dags: dict[str, DAG] = {}
    invalid: list[tuple[Path, str]] = []
    for item in load_pipelines(pipeline_files(pipelines_dir)):
        if item.config is None:
            invalid.append((item.path, item.error or "invalid"))
            continue
        try:
            built = build_pipeline_dags(item.config)
        except Exception as exc:  # noqa: BLE001 - one pipeline must not hide the others
            invalid.append((item.path, build_error(item.path, exc)))
            continue
        dags.update((dag.dag_id, dag) for dag in built)
    for path, error in invalid:
        log.error("pipeline file %s is not valid: %s", path.name, error)
        dag = build_invalid_dag(path, error, invalid_dag_id(path, dags))
        dags[dag.dag_id] = dag
    return dags


def check_pipeline(path: Path, pipelines_dir: Path) -> tuple[PipelineConfig, bool]:
    """Validate ``path`` as the DAG factory would, against the files of ``pipelines_dir`` (a
    name they declare too is an error, as it would be once the file is there), and build its
    DAGs in-process. Returns ``(config, dags_built)``; ``dags_built`` is False only where
    Airflow is not installed. Raises :class:`ConfigError` with the placeholder's line."""
    item: PipelineFile = load_pipelines([path, *pipeline_files(pipelines_dir)])[0]
    if item.config is None:
        raise ConfigError(item.error or f"{path}: invalid")
    try:
        import airflow.sdk  # noqa: F401
    except ImportError:  # pragma: no cover - the core without Airflow
        return item.config, False
    try:
        build_pipeline_dags(item.config)
    except Exception as exc:  # noqa: BLE001 - whatever would fail the DagBag
        raise ConfigError(build_error(path, exc)) from None
    return item.config, True
