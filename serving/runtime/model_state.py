"""What the version manager knows of one model (:class:`ModelState`) and the status entries
built from it (TF Serving's ``model_version_status``)."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from serving.api.errors import ApiError
from serving.runtime.servable import Servable

__all__ = ["ModelState", "labelled_version", "status_entries", "status_entry"]


@dataclass
class ModelState:
    """One model's versions: served, kept for rollback, labelled, lazily loaded, failed."""

    name: str
    served: int | None = None
    previous: int | None = None
    labels: dict[str, int] = field(default_factory=dict)
    loaded: dict[int, Servable] = field(default_factory=dict)
    extra: OrderedDict[int, None] = field(default_factory=OrderedDict)  # lazily loaded, LRU
    failed: dict[int, tuple[str, float]] = field(default_factory=dict)  # version -> (error, t)
    degraded: str | None = None  # why the served version is not what the config says


def labelled_version(state: ModelState, label: str) -> int:
    """The version ``label`` points to; INVALID_ARGUMENT (400) for an unknown label, as TF
    Serving answers."""
    if label not in state.labels:
        raise ApiError(400, f"Unrecognized servable version label: {label} for model {state.name}")
    return state.labels[label]


def status_entry(version: int, state: str, code: str, message: str) -> dict[str, Any]:
    """One ``model_version_status`` entry."""
    return {
        "version": str(version),
        "state": state,
        "status": {"error_code": code, "error_message": message},
    }


def status_entries(state: ModelState) -> dict[int, dict[str, Any]]:
    """Version -> status entry: loaded versions AVAILABLE, failed ones END with their error."""
    entries: dict[int, dict[str, Any]] = {}
    for v, (message, _) in state.failed.items():
        entries[v] = status_entry(v, "END", "UNKNOWN", message)
    for v in state.loaded:
        entries[v] = status_entry(v, "AVAILABLE", "OK", "")
    return entries
