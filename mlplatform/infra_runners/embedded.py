"""The embedded runner: the candidate in the project's own server runtime, in this process."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlplatform.infra_runners import InfraRunner

if TYPE_CHECKING:
    import numpy as np

    from mlplatform.config import PipelineConfig


class EmbeddedCandidate:
    """A servable loaded by :func:`serving.runtime.load_servable`, answering through the server's
    own request path (:func:`serving.runtime.predict_json`, the REST handler's)."""

    def __init__(self, servable: Any) -> None:
        self.servable = servable

    def predict(self, rows: list[dict[str, Any]], columns: dict[str, np.ndarray]) -> dict[str, Any]:
        from mlplatform.stages.infra_validate import InfraValidationFailed
        from serving.api import ApiError
        from serving.runtime import predict_json

        try:
            _, _, body = predict_json(self.servable, {"instances": rows})
        except ApiError as exc:
            raise InfraValidationFailed(
                f"infra validation: the server rejected a hold-out request: {exc.message}"
            ) from None
        result: dict[str, Any] = body
        return result

    def input_dtypes(self) -> dict[str, Any]:
        specs = self.servable.input_specs["serving_default"]
        return {k: spec.dtype for k, spec in specs.items()}


class EmbeddedRunner(InfraRunner):
    """Loads the candidate with the server's loader; nothing to start or tear down."""

    kind = "embedded"

    @contextmanager
    def serve(
        self, cfg: PipelineConfig, version: int, candidate: Path, out_dir: Path
    ) -> Iterator[EmbeddedCandidate]:
        from mlplatform.stages.infra_validate import load_in_server

        yield EmbeddedCandidate(load_in_server(cfg.serving.model_name, version, candidate))
