"""The base of every stage operator: config loading, the run's stage directory, timing, errors.

A subclass implements :meth:`PlatformOperator.run_stage` and returns a small dict (URIs, ids,
metrics) that becomes the task's XCom ``return_value``. Every task of a run reads the config frozen
at the run's start (``start_run``, :mod:`mlplatform.runs`), never the live YAML; in a run that
holds the pipeline lease, a task first checks that its run still holds it (else it fails: a run
judged dead must not write shared state) and refreshes its heartbeat while it works.

Errors map to Airflow outcomes (:func:`airflow_outcome`; the classes are :mod:`mlplatform.errors`):

* :class:`~mlplatform.stages.StageSkipped` (e.g. ``GateRefused``, ``NothingToDo``) -> skipped
  with the reason (a decision, not a crash);
* a :class:`~mlplatform.errors.TransientError` (e.g. an S3 endpoint that did not answer) ->
  failed with its message, retried as the DAG allows;
* any other :class:`~mlplatform.errors.PermanentError` (every other ``StageError``:
  ``ValidationFailed``, a source that cannot be read, a trainer that crashed) or a config error
  -> failed with its one-line message, never retried (the inputs must change first);
* an exception the platform does not know -> Airflow's default (retried), its one line
  ``<stage>: <Type>: <message>`` recorded in ``summary.json`` for ``mlplatform run``/``status``.

Step caching (:mod:`operators.caching`): a subclass that declares ``cache_parts`` (and, where
needed, ``cache_check``, ``cache_state``, ``on_cache_hit``) reuses an earlier output whose key is
unchanged; its XCom then carries ``cached_from`` and ``cache_key``, and ``summary.json`` and the
log say "cached from run R".
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException

from mlplatform.config import PipelineConfig
from mlplatform.errors import PlatformError
from mlplatform.settings import Settings, get_settings
from operators.caching import CacheableStage, cache_key, remember, reuse


def airflow_outcome(exc: BaseException) -> BaseException:
    """The exception a task raises to Airflow for ``exc`` raised by a stage (see the module
    doc): skip, fail without retry, or fail with retry; its message is ``str(exc)``."""
    from mlplatform.errors import is_transient
    from mlplatform.stages import StageSkipped

    if isinstance(exc, StageSkipped):
        return AirflowSkipException(str(exc))
    if is_transient(exc):
        return AirflowException(str(exc))
    return AirflowFailException(str(exc))


def failure_line(stage: str, exc: BaseException) -> str:
    """The one line recorded for a failed stage: a platform error's own message (it names the
    stage and the cause), else ``<stage>: <Type>: <message>`` squeezed onto one line."""
    from mlplatform.config import one_line

    if isinstance(exc, PlatformError) or (
        isinstance(exc, AirflowException) and str(exc).startswith(f"{stage}:")
    ):
        return one_line(exc, 1000)
    return f"{stage}: {type(exc).__name__}: {one_line(exc, 300)}"


class PlatformOperator(CacheableStage, BaseOperator):
    """Runs one pipeline stage for ``pipeline`` and writes ``<storage>/<pipeline>/<run>/<stage>/``.

    ``run_scope`` (a DAG's ``default_args``) keeps the runs of a second DAG of the pipeline that
    takes the pipeline lease apart from the train DAG's: Airflow names scheduled runs of every DAG
    ``scheduled__<date>``, so the ingest DAG's runs are ``ingest__<run id>`` for the lease, the
    config snapshot and storage (``run_prefix`` scopes storage alone, for DAGs without a lease).
    """

    stage: str = "stage"
    #: prefix of the run's directory key: DAGs other than the training DAG (the monitor's) set
    #: one, so that their runs never share a training run's directory, lease or frozen config
    run_prefix: str = ""
    #: empty the stage directory before the stage runs (False: the stage replaces its outputs
    #: atomically itself, so a failed try leaves an earlier try's outputs intact)
    fresh_stage_dir: bool = True
    #: the stage loads TensorFlow in this process: import it first without its start-up noise
    #: on stderr (:mod:`mlplatform.quiet_tf`)
    imports_tensorflow: bool = False
    ui_color = "#e8f1fb"

    def __init__(self, *, pipeline: str, run_scope: str = "", **kwargs: Any) -> None:
        kwargs.setdefault("task_id", self.stage)
        super().__init__(**kwargs)
        self.pipeline = pipeline
        self.run_scope = run_scope

    def platform_run_id(self, context: Any) -> str:
        """The run's id for the platform (lease, snapshot, storage): Airflow's run id, prefixed
        with ``run_scope`` when the DAG sets one."""
        run_id = context["run_id"]
        return f"{self.run_scope}__{run_id}" if self.run_scope else run_id

    def run_stage(
        self, cfg: PipelineConfig, out_dir: Path, settings: Settings, context: Any
    ) -> Mapping[str, Any]:
        raise NotImplementedError

    def execute(self, context: Any) -> dict[str, Any]:
        from mlplatform import runs
        from mlplatform.config import ConfigError
        from mlplatform.stages import StageSkipped
        from mlplatform.storage import (
            configure_clients,
            publish_stage,
            run_key,
            stage_dir,
            write_summary,
        )

        settings = get_settings()
        configure_clients(settings)
        run_id = self.platform_run_id(context)
        run = self.run_prefix + run_key(run_id)
        try:
            cfg = runs.load_run_config(settings, self.pipeline, run)
        except ConfigError as exc:  # the snapshot or the YAML: retrying reads the same file
            raise AirflowFailException(str(exc)) from None
        leased = (
            self.stage not in ("start_run", "end_run")
            and runs.snapshot_path(settings, cfg.name, run).exists()
        )
        if leased:
            try:
                runs.heartbeat(settings, cfg.name, run_id)
            except runs.LeaseLost as exc:
                raise AirflowFailException(str(exc)) from None
        out_dir = stage_dir(settings.storage, cfg.name, run, self.stage, fresh=self.fresh_stage_dir)
        started = time.monotonic()
        key = cache_key(self, cfg, settings, context)
        cached = reuse(self, cfg, settings, context, key)
        if cached is not None:
            write_summary(out_dir, self.stage, time.monotonic() - started, cached)
            publish_stage(settings, out_dir, cfg.name, run, self.stage)
            return cached
        if self.imports_tensorflow:
            from mlplatform.quiet_tf import import_tensorflow

            import_tensorflow()
        try:
            with runs.heartbeating(settings, cfg.name, run_id) if leased else nullcontext():
                result = dict(self.run_stage(cfg, out_dir, settings, context))
        except StageSkipped as exc:
            write_summary(out_dir, self.stage, time.monotonic() - started, {"skipped": str(exc)})
            raise airflow_outcome(exc) from None
        except AirflowSkipException:
            raise
        except AirflowException as exc:  # a subclass chose the outcome itself (e.g. a lost pod)
            line = failure_line(self.stage, exc)
            write_summary(out_dir, self.stage, time.monotonic() - started, {"failed": line})
            raise
        except Exception as exc:
            line = failure_line(self.stage, exc)
            write_summary(out_dir, self.stage, time.monotonic() - started, {"failed": line})
            outcome = airflow_outcome(exc)
            if type(outcome) is AirflowException and not isinstance(exc, PlatformError):
                raise  # unknown: Airflow's default (retry), with the trace in the task log
            raise type(outcome)(line) from None
        result = remember(self, cfg, settings, context, key, result)
        write_summary(out_dir, self.stage, time.monotonic() - started, result)
        published = publish_stage(settings, out_dir, cfg.name, run, self.stage)
        if published:
            self.log.info("%s published to %s", self.stage, published)
        self.log.info("%s done in %.1fs: %s", self.stage, time.monotonic() - started, result)
        return result
