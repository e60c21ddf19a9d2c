"""Entity keys in, features out: the predict pre-step for models whose pipeline config says
``serving.features_from: online_store``.

Which models: the server is given a directory of pipeline configs (``create_app(...,
pipelines_dir=DIR)``; ``python -m serving.server --pipelines DIR``, by default the platform's
pipelines directory, ``MLP_PIPELINES_PATH`` or ``<repo>/pipelines``). Each valid config maps its
``serving.model_name`` to its pipeline; a model whose config asks for ``online_store`` gets this
pre-step, every other model is served exactly as before (except that a raw-feature row may carry
the pipeline's entity column, see :func:`serving.runtime.predict.entity_to_strip`). The directory is re-read when its files
change (checked at most every ``rescan_seconds``), so a config edit needs no restart.

Requests: for such a model, ``{"instances": [{"<entity>": key}, ...]}`` (every instance an object
holding only the pipeline's entity column) or ``{"inputs": {"<entity>": [key, ...]}}`` over REST
(:meth:`OnlineFeatureSources.apply`), or a gRPC ``PredictRequest`` whose only input is the entity
column (:meth:`OnlineFeatureSources.apply_to_request`), is
replaced, before the SavedModel runs, by the same request with the model signature's inputs
fetched from the pipeline's feature view (Feast ``get_online_features``, from the online store the
platform settings name: SQLite under ``MLP_HOME`` or Redis). Any other request (raw feature
rows) passes unchanged. Integer entity keys must be JSON integers (or whole floats); string keys
strings (integers are taken as their decimal text, as the offline store does).

Missing values: an entity the online store holds no feature value for (not materialized, past
the view's TTL, or every requested feature null) is refused with a 400 that names it, e.g. ``entity customer_id 424242, 999999 not in the online store
of pipeline 'demo' (feature view customer_activity)``: a model answering its imputed defaults for
an unknown customer would be a silent wrong answer. A feature that is null in a known entity's
latest row is sent as null, which the platform's models impute (numeric: training mean plus a
was-missing flag; categorical: out of vocabulary), as for a raw request with ``null``.

Other errors: a model input that the feature view lacks is a FAILED_PRECONDITION (400) naming it;
an online store that cannot be read (nothing materialized yet, Redis down) is UNAVAILABLE (503).
Feast and the pipeline configs are imported on first use, never by the server's import.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from serving.api.errors import ApiError
from serving.codec.json_tensors import strip_entity, to_array, to_json_value
from serving.codec.tensor_proto import TensorProtoError, to_ndarray, to_tensor_proto
from serving.runtime.entity_features import EntityRequest, PipelineFeatures
from serving.runtime.predict import DEFAULT_POLICY, ModelPolicy, entity_to_strip
from serving.runtime.signatures import get_signature

__all__ = [
    "EntityRequest",
    "OnlineFeatureSources",
    "PipelineFeatures",
    "platform_pipelines_dir",
]

log = logging.getLogger(__name__)

ONLINE_STORE = "online_store"


class OnlineFeatureSources:
    """Model name -> :class:`PipelineFeatures` for the models whose pipeline config in
    ``pipelines_dir`` says ``serving.features_from: online_store`` (see the module doc)."""

    def __init__(self, pipelines_dir: Path, rescan_seconds: float = 1.0) -> None:
        self.pipelines_dir = Path(pipelines_dir)
        self.rescan_seconds = rescan_seconds
        self._lock = threading.Lock()
        self._checked = float("-inf")
        self._signature: tuple = ()
        self._sources: dict[str, PipelineFeatures | ApiError] = {}
        self._policies: dict[str, ModelPolicy] = {}

    def apply(self, servable: Any, payload: Any) -> tuple[Any, dict[str, Any] | None]:
        """The predict pre-step: for an entity-key request to a model served from the online
        store, the request with its features fetched and ``{"entities": keys}`` for the request
        log; for a raw-feature request whose rows carry the pipeline's entity column (which the
        model does not take), the request without it and ``{"entities": keys}``; any other
        request as it came, and None."""
        source = self.for_model(servable.name)
        wanted = source.entity_request(payload) if source is not None else None
        if source is None or wanted is None:
            return self._strip_entity(servable, payload)
        _key, _fn, specs, _sigdef = get_signature(servable, wanted.signature_name)
        return source.expand(wanted, sorted(specs)), {"entities": wanted.keys}

    def apply_to_request(self, servable: Any, request: Any, max_elements: int) -> list[Any] | None:
        """The same pre-step for a gRPC ``PredictRequest``, changed in place: a request whose
        only input is the entity column of a model served from the online store gets the
        signature's inputs fetched (:meth:`PipelineFeatures.fetch`, as over REST) as
        TensorProtos of the signature's dtypes; a raw-feature request carrying the entity
        column (which the model does not take) loses it. Returns the entity keys for the
        request log, or None when the request is left as it came."""
        signature = request.model_spec.signature_name or None
        source = self.for_model(servable.name)
        if source is not None and set(request.inputs) == {source.entity}:
            keys = _proto_keys(request.inputs[source.entity], source.entity, max_elements)
            _key, _fn, specs, _sigdef = get_signature(servable, signature)
            names = sorted(specs)
            columns = source.expand(EntityRequest(keys, True, signature), names)["inputs"]
            del request.inputs[source.entity]
            for name in names:
                # nulls become what a JSON null is for that dtype (NaN, ""): the REST rule
                array = to_array(columns[name], specs[name], name, allow_non_finite=True)
                request.inputs[name].CopyFrom(
                    to_tensor_proto(array, specs[name].dtype.as_datatype_enum)
                )
            return keys
        entity = entity_to_strip(servable, signature, self.policy(servable.name))
        if entity is None or entity not in request.inputs or len(request.inputs) < 2:
            return None
        keys = _proto_keys(request.inputs[entity], entity, max_elements)
        del request.inputs[entity]
        return keys

    def _strip_entity(self, servable: Any, payload: Any) -> tuple[Any, dict[str, Any] | None]:
        """Raw rows that carry the entity column: the column moves to the request log."""
        if not isinstance(payload, dict):
            return payload, None
        signature = payload.get("signature_name")
        entity = entity_to_strip(
            servable, signature if isinstance(signature, str) else None, self.policy(servable.name)
        )
        if entity is None:
            return payload, None
        stripped, keys = strip_entity(payload, entity)
        return stripped, None if keys is None else {"entities": keys}

    def policy(self, model: str) -> ModelPolicy:
        """What ``model``'s pipeline config allows its requests (:class:`ModelPolicy`;
        TF Serving's behaviour, ``DEFAULT_POLICY``, for a model no single config serves)."""
        with self._lock:
            if time.monotonic() - self._checked >= self.rescan_seconds:
                self._rescan()
            return self._policies.get(model, DEFAULT_POLICY)

    def for_model(self, model: str) -> PipelineFeatures | None:
        """The model's online features, or None when it takes raw features (``request``).
        Raises :class:`ApiError` when two pipeline configs claim the model."""
        with self._lock:
            if time.monotonic() - self._checked >= self.rescan_seconds:
                self._rescan()
            source = self._sources.get(model)
        if isinstance(source, ApiError):
            raise source
        return source

    def _files_signature(self) -> tuple:
        try:
            files = sorted(self.pipelines_dir.glob("*.yaml"))
            return tuple((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in files)
        except OSError:
            return ()

    def _rescan(self) -> None:
        self._checked = time.monotonic()
        signature = self._files_signature()
        if signature == self._signature:
            return
        self._signature = signature
        self._sources = _sources_from(self.pipelines_dir, self._sources)
        self._policies = _policies_from(self.pipelines_dir)


def _proto_keys(proto: Any, entity: str, max_elements: int) -> list[Any]:
    """The entity keys a TensorProto holds, as JSON values (ints, text)."""
    try:
        keys = to_json_value(to_ndarray(proto, max_elements))
    except TensorProtoError as exc:
        raise ApiError(400, f"Input '{entity}': {exc}") from exc
    return keys if isinstance(keys, list) else [keys]


def _policies_from(pipelines_dir: Path) -> dict[str, ModelPolicy]:
    """Model -> :class:`ModelPolicy` (entity column, ``serving.allow_non_finite``) for the
    models exactly one valid config of ``pipelines_dir`` serves (whatever its
    ``features_from``)."""
    from mlplatform.config import load_pipelines, pipeline_files

    by_model: dict[str, list[ModelPolicy]] = {}
    for item in load_pipelines(pipeline_files(pipelines_dir)):
        cfg = item.config
        if cfg is not None:
            by_model.setdefault(cfg.serving.model_name, []).append(
                ModelPolicy(cfg.source.entity, cfg.serving.allow_non_finite)
            )
    return {model: found[0] for model, found in by_model.items() if len(found) == 1}


def _sources_from(
    pipelines_dir: Path, previous: dict[str, PipelineFeatures | ApiError]
) -> dict[str, PipelineFeatures | ApiError]:
    """Model -> source for the valid configs of ``pipelines_dir`` that ask for online features;
    an unchanged source is kept (with its open store)."""
    from mlplatform.config import load_pipelines, pipeline_files

    by_model: dict[str, list[Any]] = {}
    for item in load_pipelines(pipeline_files(pipelines_dir)):
        if item.config is not None:
            by_model.setdefault(item.config.serving.model_name, []).append(item.config)
        else:
            log.warning("pipeline config ignored by the server: %s", item.error)
    sources: dict[str, PipelineFeatures | ApiError] = {}
    for model, configs in by_model.items():
        if not any(c.serving.features_from == ONLINE_STORE for c in configs):
            continue
        if len(configs) > 1:
            names = ", ".join(sorted(c.name for c in configs))
            sources[model] = ApiError.of(
                "FAILED_PRECONDITION",
                f"model {model!r} is the serving.model_name of pipelines {names}; entity-key "
                "requests need exactly one",
            )
            continue
        cfg = configs[0]
        old = previous.get(model)
        same = isinstance(old, PipelineFeatures) and (old.pipeline, old.entity, old.view) == (
            cfg.name,
            cfg.source.entity,
            cfg.features.view,
        )
        sources[model] = old if same else _pipeline_features(cfg)
    return sources


def _pipeline_features(cfg: Any) -> PipelineFeatures:
    from mlplatform.settings import get_settings
    from mlplatform.stages.features import feast_root, feature_store_for

    settings = get_settings()
    return PipelineFeatures(
        cfg.name,
        cfg.source.entity,
        cfg.features.view,
        lambda: feature_store_for(cfg.name, settings),
        registry=feast_root(cfg.name, settings) / "registry.db",
    )


def platform_pipelines_dir() -> Path | None:
    """The platform's pipelines directory (``MLP_PIPELINES_PATH`` or ``<repo>/pipelines``), if
    it exists: the server's default ``--pipelines``."""
    from mlplatform.settings import get_settings

    path = get_settings().pipelines_dir
    return path if path.is_dir() else None
