"""The loaded models of one model base, kept in sync with the directory and ``models.config``.

:class:`ModelRegistry` is the version manager: a background thread re-scans ``model_base``
every ``poll_seconds``; a new served version is loaded completely (after its files are checked
against the content hash recorded at publishing) and then swapped in under a lock, so in-flight
requests finish on the version they started with. See :mod:`serving.server` for the serving
policy (labels, degraded state, TF Serving's ``--model_base_path`` mode).
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from serving import layout
from serving.api.errors import ApiError
from serving.runtime.config_watch import ConfigWatch
from serving.runtime.model_state import (
    ModelState,
    labelled_version,
    status_entries,
    status_entry,
)
from serving.runtime.servable import Servable, load_servable

__all__ = ["ModelRegistry"]

log = logging.getLogger(__name__)


class ModelRegistry:
    """Loaded models of one model base, kept in sync with the directory by polling.

    Thread-safe: ``resolve`` may be called from any request thread while ``refresh``
    runs in the poller. Loading happens outside the registry lock; only the swap of
    references happens under it.
    """

    def __init__(
        self,
        model_base: Path,
        poll_seconds: float = 1.0,
        *,
        max_extra_versions: int = 2,
        retry_seconds: float = 30.0,
    ) -> None:
        self.model_base = Path(model_base)
        self.poll_seconds = poll_seconds
        self.max_extra_versions = max_extra_versions
        self.retry_seconds = retry_seconds
        self._lock = threading.Lock()
        self._models: dict[str, ModelState] = {}
        self._load_locks: dict[tuple[str, int], threading.Lock] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._watch = ConfigWatch(self.model_base)

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Start the background poller (idempotent)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._poll_loop, name="model-poller", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the poller and wait for it (a load in progress finishes first)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _poll_loop(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.refresh()
            except Exception:  # the poller must never die
                log.exception("model poll of %s failed", self.model_base)

    # ---------------------------------------------------------------- loading

    def _load(self, name: str, version: int) -> Servable:
        """Return the loaded servable, loading it (once, even if raced) when needed."""
        with self._lock:
            state = self._models.setdefault(name, ModelState(name))
            if version in state.loaded:
                return state.loaded[version]
            load_lock = self._load_locks.setdefault((name, version), threading.Lock())
        with load_lock:
            with self._lock:
                state = self._models.setdefault(name, ModelState(name))
                if version in state.loaded:
                    return state.loaded[version]
            path = self.model_base / name / str(version)
            start = time.monotonic()
            try:
                layout.verify_version_digest(self.model_base, name, version)
                servable = load_servable(name, version, path)
            except Exception as exc:
                message = " ".join(f"{type(exc).__name__}: {exc}".split())[:2000]
                log.error("failed to load model %s version %s: %s", name, version, message)
                with self._lock:
                    self._models.setdefault(name, ModelState(name)).failed[version] = (
                        message,
                        time.monotonic(),
                    )
                raise
            log.info("loaded model %s version %s in %.2fs", name, version, time.monotonic() - start)
            with self._lock:
                state = self._models.setdefault(name, ModelState(name))
                state.loaded[version] = servable
                state.failed.pop(version, None)
            return servable

    def _should_try(self, state: ModelState | None, version: int) -> bool:
        if state is None or version not in state.failed:
            return True
        return time.monotonic() - state.failed[version][1] >= self.retry_seconds

    def refresh(self) -> None:
        """Scan ``model_base`` once: read ``models.config``, load what it makes served or
        labelled, keep the last good served set where it names nothing valid, unload what
        is no longer needed. Never raises for a single broken model."""
        config = self._watch.read()
        names = set(layout.list_models(self.model_base)) | set(config or {})
        for name in sorted(names):
            try:
                self._refresh_model(name, config)
            except Exception:
                log.exception("refreshing model %s failed", name)
        with self._lock:
            for gone in set(self._models) - names:
                log.info("model %s disappeared from %s; unloading", gone, self.model_base)
                del self._models[gone]

    def _refresh_model(self, name: str, config: dict[str, dict[str, Any]] | None) -> None:
        versions = layout.list_versions(self.model_base, name)
        on_disk = set(versions)
        target, reason, new_labels = self._watch.target(name, config, versions)
        with self._lock:
            state = self._models.get(name)
            current = state.served if state is not None and state.served in state.loaded else None
            old_labels = dict(state.labels) if state is not None else {}
        labels = {
            k: v
            for k, v in (old_labels if new_labels is None else new_labels).items()
            if v in on_disk
        }

        def ensure_loaded(version: int) -> bool:
            nonlocal state
            with self._lock:
                if state is not None and version in state.loaded:
                    return True
            if not self._should_try(state, version):
                return False
            try:
                self._load(name, version)
                return True
            except Exception:  # recorded in state.failed
                return False
            finally:
                with self._lock:
                    state = self._models.get(name)

        effective = None
        if target is not None:
            if ensure_loaded(target):
                effective = target
            else:
                with self._lock:
                    error = state.failed.get(target, ("unknown error", 0.0))[0] if state else ""
                reason = f"version {target} failed to load: {error}"
        for version in sorted(set(labels.values()) - {target}, reverse=True):
            ensure_loaded(version)
        if effective is None and current is None and target is not None and not self._watch.seen:
            # --model_base_path mode with nothing served yet: the newest older version that loads.
            for version in [v for v in reversed(versions) if v < target][:3]:
                if ensure_loaded(version):
                    effective = version
                    break
        self._apply(name, effective, reason, labels, on_disk)

    def _apply(
        self,
        name: str,
        effective: int | None,
        reason: str | None,
        labels: dict[str, int],
        on_disk: set[int],
    ) -> None:
        """Swap in the served version and labels; keep the last good ones where ``effective``
        is None; record and log (once per change) why the model is degraded."""
        with self._lock:
            state = self._models.setdefault(name, ModelState(name))
            if effective is not None and state.served != effective:
                log.info("model %s now serves version %s (was %s)", name, effective, state.served)
                if state.served is not None:
                    state.previous = state.served
                state.served = effective
            if reason != state.degraded:
                if reason is not None:
                    served = state.served if state.served in state.loaded else None
                    log.error(
                        "model %s degraded: %s; serving %s",
                        name,
                        reason,
                        f"version {served} (the last good one)"
                        if served is not None
                        else "nothing",
                    )
                else:
                    log.info("model %s serves what models.config says again", name)
                state.degraded = reason
            state.labels = labels
            if state.previous is not None and (
                state.previous not in on_disk or state.previous == state.served
            ):
                state.previous = None
            for version in [v for v in state.extra if v not in on_disk]:
                del state.extra[version]
            keep = {state.served, state.previous, *labels.values(), *state.extra}
            for version in [v for v in state.loaded if v not in keep]:
                log.info("unloading model %s version %s", name, version)
                del state.loaded[version]
            for version in [v for v in state.failed if v not in on_disk]:
                del state.failed[version]

    # ---------------------------------------------------------------- lookups

    def resolve(self, name: str, version: int | None = None, label: str | None = None) -> Servable:
        """The servable for a request; lazily loads an explicitly requested version.

        Raises ApiError: NOT_FOUND (404) for an unknown model or version, INVALID_ARGUMENT
        (400) for an unknown label (as TF Serving), FAILED_PRECONDITION (400) for a version
        that is published but failed to load, or a model none of whose versions loaded.
        """
        with self._lock:
            state = self._models.get(name)
            if state is None:
                raise ApiError(404, f"Servable not found for request: Latest({name})")
            if label is not None:
                version = labelled_version(state, label)
            if version is None:
                if state.served is None or state.served not in state.loaded:
                    if state.failed:
                        failed, (message, _) = max(state.failed.items())
                        raise ApiError.of(
                            "FAILED_PRECONDITION",
                            f"Model {name} has no available version: version {failed} "
                            f"failed to load: {message}",
                        )
                    why = f": {state.degraded}" if state.degraded else ""
                    raise ApiError(404, f"Servable not found for request: Latest({name}){why}")
                return state.loaded[state.served]
            servable = state.loaded.get(version)
            if servable is not None:
                if version in state.extra:
                    state.extra.move_to_end(version)
                return servable
        if version not in layout.list_versions(self.model_base, name):
            raise ApiError(404, f"Servable not found for request: Specific({name}, {version})")
        with self._lock:
            state = self._models.get(name)
            if state is not None and not self._should_try(state, version):
                raise ApiError.of(
                    "FAILED_PRECONDITION",
                    f"Servable {name} version {version} is not available: "
                    f"failed to load: {state.failed[version][0]}",
                )
        try:
            servable = self._load(name, version)
        except Exception as exc:
            raise ApiError.of(
                "FAILED_PRECONDITION",
                f"Servable {name} version {version} is not available: failed to load: "
                f"{type(exc).__name__}: {exc}",
            ) from exc
        with self._lock:
            state = self._models.get(name)
            if state is not None and version not in {state.served, state.previous} | set(
                state.labels.values()
            ):
                state.extra[version] = None
                state.extra.move_to_end(version)
                while len(state.extra) > self.max_extra_versions:
                    evicted, _ = state.extra.popitem(last=False)
                    if evicted not in {state.served, state.previous} | set(state.labels.values()):
                        state.loaded.pop(evicted, None)
        return servable

    def status(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> list[dict[str, Any]]:
        """``model_version_status`` entries (newest first).

        Raises ApiError: NOT_FOUND (404) for an unknown model or version, INVALID_ARGUMENT
        (400) for an unknown label.
        """
        with self._lock:
            state = self._models.get(name)
            if state is None:
                raise ApiError(404, f"Could not find any versions of model {name}")
            if label is not None:
                version = labelled_version(state, label)
            entries = status_entries(state)
        if version is not None:
            if version not in entries:
                if version in layout.list_versions(self.model_base, name):
                    return [status_entry(version, "END", "OK", "")]  # published, not loaded
                raise ApiError(404, f"Could not find version {version} of model {name}")
            return [entries[version]]
        if not entries:
            raise ApiError(404, f"Could not find any versions of model {name}")
        return [entries[v] for v in sorted(entries, reverse=True)]

    def integrity_status(self) -> dict[str, Any]:
        """What this server serves and whether that is what ``models.config`` says.

        ``{"status": "ok" | "degraded", "reason": <config problem or None>, "mode":
        "models.config" | "model_base_path", "models": {name: {"served_version": int |
        None, "labels": {label: version}, "degraded": <reason or None>}}}``; ``status`` is
        degraded when the config is unusable or any model is degraded.
        """
        with self._lock:
            models = {
                name: {
                    "served_version": state.served if state.served in state.loaded else None,
                    "labels": dict(sorted(state.labels.items())),
                    "degraded": state.degraded,
                }
                for name, state in sorted(self._models.items())
            }
            reason = self._watch.error
        degraded = reason is not None or any(m["degraded"] for m in models.values())
        return {
            "status": "degraded" if degraded else "ok",
            "reason": reason,
            "mode": "models.config" if self._watch.seen else "model_base_path",
            "models": models,
        }

    def model_names(self) -> list[str]:
        """Names of the models currently known to the registry."""
        with self._lock:
            return sorted(self._models)
