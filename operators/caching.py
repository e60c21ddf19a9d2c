"""Step caching for operators (:mod:`mlplatform.cache`): the hooks a stage declares, and the
lookup and record steps its ``execute`` runs around the stage.

A stage is cacheable when its operator (a :class:`CacheableStage`) returns the parts of its key
from :meth:`~CacheableStage.cache_parts`. Before running, :func:`cache_key` computes the key
(None: caching off in the config, or the stage not cacheable for this run) and :func:`reuse`
looks it up: an entry whose outputs are still usable (:func:`~mlplatform.cache.missing_outputs`,
:meth:`~CacheableStage.cache_check`, an unchanged :meth:`~CacheableStage.cache_state`) becomes
the XCom, plus ``cached_from`` (the Airflow run that produced it) and ``cache_key``;
:meth:`~CacheableStage.on_cache_hit` redoes the stage's cheap side effects, and the log says
"<stage> cached from run R". Otherwise the stage runs and :func:`remember` records its result
(the XCom then carries ``cache_key``, so downstream stages can put it in their keys).

``cache: false`` in the config turns both off; the DAG param ``cache=false`` (``mlplatform run
--no-cache``) turns off the lookup only. No library is imported at module level.
"""

from __future__ import annotations

from typing import Any


class CacheableStage:
    """The caching hooks of a stage; the defaults make it not cacheable."""

    stage: str = "stage"
    log: Any

    def cache_parts(self, cfg: Any, settings: Any, context: Any) -> dict[str, Any] | None:
        """What determines this stage's output for this run (JSON-able), or None when the
        stage cannot be cached for this run (say, an upstream stage without a key)."""
        return None

    def cache_check(self, cfg: Any, settings: Any, result: dict[str, Any]) -> str | None:
        """Why a recorded ``result`` can no longer be used (beyond its files), or None."""
        return None

    def cache_state(self, cfg: Any, settings: Any, result: dict[str, Any]) -> dict | None:
        """A fingerprint of the shared state this stage's output lives in, recorded after a
        success; an entry is reused only while the fingerprint is the same."""
        return None

    def on_cache_hit(self, cfg: Any, settings: Any, result: dict[str, Any], context: Any) -> None:
        """Redo the cheap side effects of the stage for a reused ``result`` (links, aliases)."""


def caching_param(context: Any) -> bool:
    """The run's ``cache`` param (``mlplatform run --no-cache`` sets it false); True if absent."""
    params = context.get("params") or {}
    value = params.get("cache", True)
    if isinstance(value, str):
        return value.strip().lower() not in ("false", "0", "no", "off")
    return bool(value)


def cache_key(op: CacheableStage, cfg: Any, settings: Any, context: Any) -> str | None:
    """The stage's key for this run, or None (``cache: false``, not cacheable, or its parts
    cannot be computed: logged, never a failure)."""
    from mlplatform import cache

    if not cfg.cache:
        return None
    try:
        parts = op.cache_parts(cfg, settings, context)
    except Exception as exc:  # noqa: BLE001 - no key is no caching, never a failure
        op.log.warning("%s: not cached, its key cannot be computed: %s", op.stage, exc)
        return None
    return None if parts is None else cache.stage_key(cfg.name, op.stage, parts)


def _usable(op: CacheableStage, cfg: Any, settings: Any, key: str) -> tuple[Any, str]:
    """``(entry, "")`` for a usable entry, ``(None, why not)`` otherwise; an entry whose
    outputs are gone is removed."""
    from mlplatform import cache

    entry = cache.lookup(settings, cfg.name, op.stage, key)
    if entry is None:
        return None, "no earlier output with this key"
    why = cache.missing_outputs(settings, entry.result)
    if why is None:
        try:
            why = op.cache_check(cfg, settings, entry.result)
        except Exception as exc:  # noqa: BLE001 - a check that cannot run is a miss
            why = f"its outputs could not be checked ({type(exc).__name__}: {exc})"
    if why is None and entry.state is not None:
        if op.cache_state(cfg, settings, entry.result) != entry.state:
            why = "the state its output lives in changed since"
    if why is not None:
        cache.forget(settings, cfg.name, op.stage, key)
        return None, f"the output of run {entry.run_id} cannot be reused: {why}"
    return entry, ""


def reuse(
    op: CacheableStage, cfg: Any, settings: Any, context: Any, key: str | None
) -> dict[str, Any] | None:
    """The XCom of a usable earlier output for ``key`` (its side effects redone), or None: the
    stage must run (no key, lookup off for this run, or a miss; each logged with its reason)."""
    from mlplatform import cache

    if key is None:
        return None
    if not caching_param(context):
        op.log.info("%s: cache lookup off for this run (param cache=false)", op.stage)
        return None
    entry, why = _usable(op, cfg, settings, key)
    if entry is None:
        op.log.info("%s: cache miss (key %s): %s", op.stage, key[:12], why)
        return None
    result = {**entry.result, cache.CACHED_FROM: entry.run_id, cache.CACHE_KEY: key}
    op.on_cache_hit(cfg, settings, result, context)
    op.log.info("%s cached from run %s (key %s): %s", op.stage, entry.run_id, key[:12], result)
    return result


def remember(
    op: CacheableStage,
    cfg: Any,
    settings: Any,
    context: Any,
    key: str | None,
    result: dict[str, Any],
) -> dict[str, Any]:
    """Record a successful ``result`` under ``key``; returns the XCom (with ``cache_key`` when
    recorded). A failure to record is logged: the stage succeeded, only reuse is lost."""
    from mlplatform import cache

    if key is None:
        return result
    try:
        state = op.cache_state(cfg, settings, result)
        cache.record(settings, cfg.name, op.stage, key, context["run_id"], result, state)
    except Exception as exc:  # noqa: BLE001
        op.log.warning("%s: its output was not recorded in the cache: %s", op.stage, exc)
        return result
    return {**result, cache.CACHE_KEY: key}
