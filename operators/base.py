"""The base of every stage operator: config loading, the run's stage directory, timing, errors.

A subclass implements :meth:`PlatformOperator.run_stage` and returns a small dict (URIs, ids,
metrics) that becomes the task's XCom ``return_value``. Every task of a run reads the config frozen
at the run's start (``start_run``, :mod:`mlplatform.runs`), never the live YAML; in a run that
holds the pipeline lease, a task first checks that its run still holds it (else it fails: a run
judged dead must not write shared state) and refreshes its heartbeat while it works.

Errors map to Airflow outcomes:

* :class:`~mlplatform.stages.ValidationFailed` -> failed, no retry (the data must change);
* :class:`~mlplatform.stages.GateRefused` -> skipped with the reason (a decision, not a crash);
* other :class:`~mlplatform.stages.StageError` -> failed with its one-line message.

Step caching (:mod:`mlplatform.cache`): a subclass that declares :meth:`cache_parts` is cacheable.
Before running, the task computes its key; when an entry with that key exists and its outputs
are still usable (:func:`~mlplatform.cache.missing_outputs`, :meth:`cache_check`, an unchanged
:meth:`cache_state`), the stage does not run: its XCom is the recorded result plus
``cached_from`` (the Airflow run that produced it) and ``cache_key``, :meth:`on_cache_hit` redoes
its cheap side effects (an alias, a marker, a link), and the log line and ``summary.json`` say
"cached from run R". Otherwise it runs and, on success, records its result under the key (its
XCom carries ``cache_key``, so downstream stages can put it in theirs). ``cache: false`` in the
config turns both off; the DAG param ``cache=false`` (``mlplatform run --no-cache``) turns off
the lookup only.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException

from mlplatform.config import PipelineConfig
from mlplatform.settings import Settings, get_settings


class PlatformOperator(BaseOperator):
    """Runs one pipeline stage for ``pipeline`` and writes ``<storage>/<pipeline>/<run>/<stage>/``."""

    stage: str = "stage"
    ui_color = "#e8f1fb"

    def __init__(self, *, pipeline: str, **kwargs: Any) -> None:
        kwargs.setdefault("task_id", self.stage)
        super().__init__(**kwargs)
        self.pipeline = pipeline

    def run_stage(
        self, cfg: PipelineConfig, out_dir: Path, settings: Settings, context: Any
    ) -> dict[str, Any]:
        raise NotImplementedError

    # -- step caching (see the module doc); the defaults make a stage not cacheable ---------------

    def cache_parts(
        self, cfg: PipelineConfig, settings: Settings, context: Any
    ) -> dict[str, Any] | None:
        """What determines this stage's output for this run (JSON-able), or None when the
        stage cannot be cached for this run (say, an upstream stage without a key)."""
        return None

    def cache_check(
        self, cfg: PipelineConfig, settings: Settings, result: dict[str, Any]
    ) -> str | None:
        """Why a recorded ``result`` can no longer be used (beyond its files), or None."""
        return None

    def cache_state(
        self, cfg: PipelineConfig, settings: Settings, result: dict[str, Any]
    ) -> dict[str, Any] | None:
        """A fingerprint of the shared state this stage's output lives in, recorded after a
        success; an entry is reused only while the fingerprint is the same."""
        return None

    def on_cache_hit(
        self, cfg: PipelineConfig, settings: Settings, result: dict[str, Any], context: Any
    ) -> None:
        """Redo the cheap side effects of the stage for a reused ``result`` (links, aliases)."""

    def _cache_lookup(
        self, cfg: PipelineConfig, settings: Settings, key: str
    ) -> tuple[Any, str | None]:
        """``(entry, None)`` for a usable entry, ``(None, why not)`` otherwise."""
        from mlplatform import cache

        entry = cache.lookup(settings, cfg.name, self.stage, key)
        if entry is None:
            return None, "no earlier output with this key"
        why = cache.missing_outputs(settings, entry.result)
        if why is None:
            try:
                why = self.cache_check(cfg, settings, entry.result)
            except Exception as exc:  # noqa: BLE001 - a check that cannot run is a miss
                why = f"its outputs could not be checked ({type(exc).__name__}: {exc})"
        if why is None and entry.state is not None:
            if self.cache_state(cfg, settings, entry.result) != entry.state:
                why = "the state its output lives in changed since"
        if why is not None:
            cache.forget(settings, cfg.name, self.stage, key)
            return None, f"the output of run {entry.run_id} cannot be reused: {why}"
        return entry, None

    def execute(self, context: Any) -> dict[str, Any]:
        from mlplatform import runs
        from mlplatform.stages import GateRefused, StageError, ValidationFailed
        from mlplatform.storage import run_key, stage_dir, write_summary

        settings = get_settings()
        run = run_key(context["run_id"])
        cfg = runs.load_run_config(settings, self.pipeline, run)
        leased = (
            self.stage not in ("start_run", "end_run")
            and runs.snapshot_path(settings, cfg.name, run).exists()
        )
        if leased:
            try:
                runs.heartbeat(settings, cfg.name, context["run_id"])
            except runs.LeaseLost as exc:
                raise AirflowFailException(str(exc)) from None
        out_dir = stage_dir(settings.storage, cfg.name, run, self.stage)
        started = time.monotonic()
        key = None
        if cfg.cache:
            from mlplatform import cache

            try:
                parts = self.cache_parts(cfg, settings, context)
            except Exception as exc:  # noqa: BLE001 - no key is no caching, never a failure
                self.log.warning("%s: not cached, its key cannot be computed: %s", self.stage, exc)
                parts = None
            if parts is not None:
                key = cache.stage_key(cfg.name, self.stage, parts)
            if key is not None and not caching_param(context):
                self.log.info("%s: cache lookup off for this run (param cache=false)", self.stage)
            elif key is not None:
                entry, why = self._cache_lookup(cfg, settings, key)
                if entry is not None:
                    result = {
                        **entry.result,
                        cache.CACHED_FROM: entry.run_id,
                        cache.CACHE_KEY: key,
                    }
                    self.on_cache_hit(cfg, settings, result, context)
                    write_summary(out_dir, self.stage, time.monotonic() - started, result)
                    self.log.info(
                        "%s cached from run %s (key %s): %s",
                        self.stage,
                        entry.run_id,
                        key[:12],
                        result,
                    )
                    return result
                self.log.info("%s: cache miss (key %s): %s", self.stage, key[:12], why)
        try:
            with (
                runs.heartbeating(settings, cfg.name, context["run_id"])
                if leased
                else nullcontext()
            ):
                result = self.run_stage(cfg, out_dir, settings, context)
        except GateRefused as exc:
            write_summary(out_dir, self.stage, time.monotonic() - started, {"skipped": str(exc)})
            raise AirflowSkipException(str(exc)) from None
        except ValidationFailed as exc:
            write_summary(out_dir, self.stage, time.monotonic() - started, {"failed": str(exc)})
            raise AirflowFailException(str(exc)) from None
        except StageError as exc:
            write_summary(out_dir, self.stage, time.monotonic() - started, {"failed": str(exc)})
            raise AirflowException(str(exc)) from None
        if key is not None:
            from mlplatform import cache

            try:
                state = self.cache_state(cfg, settings, result)
                cache.record(settings, cfg.name, self.stage, key, context["run_id"], result, state)
            except Exception as exc:  # noqa: BLE001 - the stage succeeded; only reuse is lost
                self.log.warning(
                    "%s: its output was not recorded in the cache: %s", self.stage, exc
                )
            else:
                result = {**result, cache.CACHE_KEY: key}
        write_summary(out_dir, self.stage, time.monotonic() - started, result)
        self.log.info("%s done in %.1fs: %s", self.stage, time.monotonic() - started, result)
        return result


def caching_param(context: Any) -> bool:
    """The run's ``cache`` param (``mlplatform run --no-cache`` sets it false); True if absent."""
    params = context.get("params") or {}
    value = params.get("cache", True)
    if isinstance(value, str):
        return value.strip().lower() not in ("false", "0", "no", "off")
    return bool(value)
