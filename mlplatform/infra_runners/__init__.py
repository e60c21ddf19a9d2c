"""Where infra validation serves the candidate: the runner interface and the choice of runner.

A runner starts a server on a candidate SavedModel and hands back a :class:`ServedCandidate`
that answers requests the way that server does; :func:`mlplatform.stages.infra_validate.
infra_validate` times the requests, checks the answers and tears the server down (the runner's
context manager). Two runners:

* ``embedded`` (:class:`~mlplatform.infra_runners.embedded.EmbeddedRunner`): the project's own
  server runtime, in this process (the embedded profile: no server to start);
* ``kubernetes`` (:class:`~mlplatform.infra_runners.kubernetes.KubernetesRunner`): the official
  ``tensorflow/serving`` image in a pod next to the candidate, loaded, readiness by gRPC
  ``GetModelStatus``, requests over gRPC ``Predict``, the pod deleted afterwards.

``serving.infra_runner`` in the pipeline config chooses (:func:`runner_for`); ``auto`` (the
default) is ``kubernetes`` when ``MLP_TRAINING_BACKEND=kubernetes`` (the production profile),
else ``embedded``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import numpy as np

    from mlplatform.config import PipelineConfig
    from mlplatform.settings import Settings


class ServedCandidate(Protocol):
    """A candidate model being served."""

    def predict(self, rows: list[dict[str, Any]], columns: dict[str, np.ndarray]) -> dict[str, Any]:
        """One predict call: ``rows`` as a REST client sends them (``null`` for a missing value),
        ``columns`` the same typed (NaN / ``""``) as a gRPC client sends them. Returns the REST
        body ``{"predictions": [...]}``; raises ``InfraValidationFailed`` if the server refuses."""
        ...

    def input_dtypes(self) -> dict[str, Any]:
        """The ``serving_default`` inputs' dtypes (TensorFlow dtypes), for the warm-up file."""
        ...


class InfraRunner(ABC):
    """Starts a server on a candidate: ``with runner.serve(...) as served: ...``."""

    kind: str

    @abstractmethod
    def serve(
        self, cfg: PipelineConfig, version: int, candidate: Path, out_dir: Path
    ) -> AbstractContextManager[ServedCandidate]:
        """Serve ``candidate`` (a SavedModel directory) as ``cfg.serving.model_name`` version
        ``version``; ``out_dir`` is the stage's directory (for staging). Raises
        ``InfraValidationFailed`` (one line) when the server cannot load it."""


def runner_kind(cfg: PipelineConfig, settings: Settings) -> str:
    """``embedded`` or ``kubernetes``: ``serving.infra_runner``, ``auto`` resolved."""
    kind = cfg.serving.infra_runner
    if kind == "auto":
        return "kubernetes" if settings.training_backend == "kubernetes" else "embedded"
    return kind


def runner_for(cfg: PipelineConfig, settings: Settings) -> InfraRunner:
    """The runner that ``cfg.serving.infra_runner`` (and the settings, for ``auto``) choose."""
    if runner_kind(cfg, settings) == "kubernetes":
        from mlplatform.infra_runners.kubernetes import KubernetesRunner

        return KubernetesRunner(settings)
    from mlplatform.infra_runners.embedded import EmbeddedRunner

    return EmbeddedRunner()
