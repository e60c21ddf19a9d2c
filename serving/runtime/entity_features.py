"""One pipeline's online features: the entity keys of a predict request in, the model's input
columns out, from the pipeline's Feast feature view (:class:`PipelineFeatures`). The rules
(missing entities, typed keys, errors) are :mod:`serving.runtime.online_features`'s."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serving.api.errors import ApiError

__all__ = ["SHOWN_MISSING", "EntityRequest", "PipelineFeatures"]

#: entities named in a "not in the online store" error; the rest are counted
SHOWN_MISSING = 10


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


@dataclass(frozen=True)
class EntityRequest:
    """The entity keys of a request and the format they came in."""

    keys: list[Any]
    columnar: bool  # ``inputs`` (columns) rather than ``instances`` (rows)
    signature_name: str | None


class PipelineFeatures:
    """The online features of one pipeline: entity ``entity``, feature view ``view``.

    ``store_factory`` builds the Feast ``FeatureStore`` (on first use, again after a failure
    or when the file ``registry`` changed); a missing ``registry`` means "nothing materialized
    yet".
    """

    def __init__(
        self,
        pipeline: str,
        entity: str,
        view: str,
        store_factory: Callable[[], Any],
        registry: Path | None = None,
    ) -> None:
        self.pipeline, self.entity, self.view = pipeline, entity, view
        self._factory, self._registry = store_factory, registry
        self._lock = threading.Lock()
        self._store: Any = None
        self._store_version: int | None = None
        self._integer_keys: bool | None = None
        self._view_features: set[str] = set()

    # ------------------------------------------------------------------ request shape

    def entity_request(self, payload: Any) -> EntityRequest | None:
        """The request's entity keys, or None when it is not an entity-key request."""
        if not isinstance(payload, dict):
            return None
        signature = payload.get("signature_name")
        if signature is not None and not isinstance(signature, str):
            return None
        rows, columns = payload.get("instances"), payload.get("inputs")
        if isinstance(rows, list) and rows and "inputs" not in payload:
            if all(isinstance(r, dict) and set(r) == {self.entity} for r in rows):
                return EntityRequest([r[self.entity] for r in rows], False, signature)
        if (
            isinstance(columns, dict)
            and set(columns) == {self.entity}
            and "instances" not in payload
        ):
            keys = columns[self.entity]
            if isinstance(keys, list) and keys:
                return EntityRequest(keys, True, signature)
        return None

    def expand(self, request: EntityRequest, names: list[str]) -> dict[str, Any]:
        """The predict request body with the features ``names`` in place of the entity keys."""
        columns = self.fetch(request.keys, names)
        body: dict[str, Any] = {}
        if request.signature_name is not None:
            body["signature_name"] = request.signature_name
        if request.columnar:
            body["inputs"] = columns
        else:
            body["instances"] = [
                {n: columns[n][i] for n in names} for i in range(len(request.keys))
            ]
        return body

    # ------------------------------------------------------------------ lookup

    def fetch(self, keys: list[Any], names: list[str]) -> dict[str, list[Any]]:
        """Feature columns ``names`` for ``keys`` from the online store; see the module doc."""
        store = self._ready_store()
        unknown = sorted(set(names) - self._view_features)
        if unknown:
            raise ApiError.of(
                "FAILED_PRECONDITION",
                f"model input(s) {', '.join(unknown)} are not features of view {self.view} of "
                f"pipeline {self.pipeline!r}; the served model and the feature config disagree",
            )
        typed = [self._typed_key(k, i) for i, k in enumerate(keys)]
        refs = [f"{self.view}:{n}" for n in names]
        try:
            response = store.get_online_features(
                features=refs, entity_rows=[{self.entity: k} for k in typed]
            )
            values = response.to_dict()
            missing = self._missing(response.proto, typed)
        except ApiError:
            raise
        except Exception as exc:  # noqa: BLE001 - Feast and the stores raise many types
            self._store = None  # build it again on the next request
            raise ApiError.of(
                "UNAVAILABLE",
                f"online features of pipeline {self.pipeline!r} cannot be read: {_first_line(exc)}",
            ) from exc
        if missing:
            shown = ", ".join(str(k) for k in missing[:SHOWN_MISSING])
            more = (
                f" and {len(missing) - SHOWN_MISSING} more" if len(missing) > SHOWN_MISSING else ""
            )
            raise ApiError(
                400,
                f"entity {self.entity} {shown}{more} not in the online store of pipeline "
                f"{self.pipeline!r} (feature view {self.view})",
            )
        return {n: list(values[n]) for n in names}

    def _registry_version(self) -> int | None:
        """The registry file's mtime (None without a registry path); raises UNAVAILABLE when
        the file is missing."""
        if self._registry is None:
            return None
        try:
            return self._registry.stat().st_mtime_ns
        except FileNotFoundError:
            raise ApiError.of(
                "UNAVAILABLE",
                f"no online features for pipeline {self.pipeline!r} yet: run its pipeline "
                "(the features stage materializes them)",
            ) from None

    def _ready_store(self) -> Any:
        """The Feast store, built again when the registry file changed (an apply, a reset, a
        materialization), so that a changed view is seen without a restart."""
        with self._lock:
            version = self._registry_version()
            if self._store is not None and version == self._store_version:
                return self._store
            try:
                store = self._factory()
                view = store.get_feature_view(self.view)
                value_type = store.get_entity(self.entity).value_type
            except Exception as exc:  # noqa: BLE001 - FeatureViewNotFoundException, IO errors ...
                raise ApiError.of(
                    "UNAVAILABLE",
                    f"online features of pipeline {self.pipeline!r} cannot be read: "
                    f"{_first_line(exc)}",
                ) from exc
            self._view_features = {f.name for f in view.features}
            self._integer_keys = value_type.name == "INT64"
            self._store, self._store_version = store, version
            return store

    def _typed_key(self, key: Any, index: int) -> Any:
        if self._integer_keys:
            if isinstance(key, float) and key.is_integer():
                return int(key)
            if isinstance(key, int) and not isinstance(key, bool):
                return key
            raise ApiError(
                400, f"entity {self.entity} of instance {index} must be an integer, got {key!r}"
            )
        if isinstance(key, str):
            return key
        if isinstance(key, int) and not isinstance(key, bool):
            return str(key)
        raise ApiError(
            400, f"entity {self.entity} of instance {index} must be a string, got {key!r}"
        )

    def _missing(self, proto: Any, keys: list[Any]) -> list[Any]:
        """Keys the online store holds no feature value for: every feature NOT_FOUND or
        OUTSIDE_MAX_AGE, or without a value (Feast's Redis store answers PRESENT with an empty
        value for an unknown key); the entity column of the response is left out."""
        from feast.protos.feast.serving.ServingService_pb2 import FieldStatus

        absent = {FieldStatus.NOT_FOUND, FieldStatus.OUTSIDE_MAX_AGE}
        names = list(proto.metadata.feature_names.val)
        features = [r for n, r in zip(names, proto.results, strict=True) if n != self.entity]

        def empty(column: Any, i: int) -> bool:
            return column.statuses[i] in absent or column.values[i].WhichOneof("val") is None

        return [
            key
            for i, key in enumerate(keys)
            if features and all(empty(column, i) for column in features)
        ]
