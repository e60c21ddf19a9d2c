"""The Kubernetes runner: the official ``tensorflow/serving`` image in a pod next to the candidate.

:meth:`KubernetesRunner.serve`, in order:

1. stage the candidate where the pod can read it, as TF Serving's layout
   ``<base>/<model_name>/<version>/``: under the stage directory on the shared storage volume
   (``MLP_K8S_STORAGE_PVC``), or uploaded with fsspec to ``<MLP_STORAGE_URI>/<pipeline>/<run>/
   <stage>/tfs`` when the storage is ``s3://``;
2. render the pod (:func:`mlplatform.k8s.serving_pod.serving_pod`) and create it with the
   cncf.kubernetes provider's ``PodManager`` through ``KubernetesHook`` (the Airflow connection
   ``MLP_K8S_KUBERNETES_CONN_ID``), wait for it to leave ``Pending``;
3. poll gRPC ``GetModelStatus`` on the pod's IP until the version is ``AVAILABLE``
   (:class:`serving.client.GrpcPredictionClient`, which speaks TF Serving's own protos) within
   ``MLP_K8S_SERVING_READY_TIMEOUT_SECONDS``;
4. hand back a :class:`GrpcCandidate` (``Predict`` over gRPC with the signature's dtypes);
5. on leaving the context, close the channel and delete the pod, whatever happened.

The Airflow worker must reach pod IPs on the gRPC port (the usual case inside one cluster).
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlplatform.infra_runners import InfraRunner
from mlplatform.k8s.names import dns_label
from mlplatform.k8s.serving_pod import GRPC_PORT, serving_pod
from mlplatform.k8s.settings import KubernetesSettings

if TYPE_CHECKING:
    import numpy as np

    from mlplatform.config import PipelineConfig
    from mlplatform.settings import Settings
    from serving.client import GrpcPredictionClient


def _fail(message: str) -> Exception:
    from mlplatform.stages.infra_validate import InfraValidationFailed

    return InfraValidationFailed(" ".join(f"infra validation: {message}".split()))


class GrpcCandidate:
    """The candidate as TF Serving serves it, asked over gRPC ``Predict``."""

    def __init__(self, client: GrpcPredictionClient, name: str, version: int) -> None:
        self.client = client
        self.name = name
        self.version = version

    def predict(self, rows: list[dict[str, Any]], columns: dict[str, np.ndarray]) -> dict[str, Any]:
        from serving.client import ServingError

        try:
            result = self.client.predict(self.name, columns, version=self.version)
        except ServingError as exc:
            raise _fail(f"the server rejected a hold-out request: {exc}") from None
        return {"predictions": result.predictions}

    def input_dtypes(self) -> dict[str, Any]:
        """From ``GetModelMetadata`` (``DT_FLOAT`` ...) as TensorFlow dtypes."""
        import tensorflow as tf
        from tensorflow.core.framework import types_pb2

        signature = self.client.model_metadata(self.name, self.version)["metadata"]
        inputs = signature["signature_def"]["signature_def"]["serving_default"]["inputs"]
        return {
            k: tf.dtypes.as_dtype(types_pb2.DataType.Value(v["dtype"])) for k, v in inputs.items()
        }


class KubernetesRunner(InfraRunner):
    """Serve the candidate in a ``tensorflow/serving`` pod; see the module doc."""

    kind = "kubernetes"

    def __init__(
        self,
        settings: Settings,
        k8s: KubernetesSettings | None = None,
        *,
        grpc_port: int = GRPC_PORT,
    ) -> None:
        self.settings = settings
        self.k8s = k8s or KubernetesSettings()
        self.grpc_port = grpc_port

    # -- rendering (no cluster needed) ---------------------------------------------------------

    def pod_name(self, cfg: PipelineConfig, version: int, out_dir: Path) -> str:
        """``mlp-iv-<model>-<version>-<hash of the stage dir>``: one per run and version."""
        digest = hashlib.sha256(str(out_dir).encode()).hexdigest()[:8]
        return dns_label(f"mlp-iv-{cfg.serving.model_name}-{version}", 54) + f"-{digest}"

    def model_base(self, cfg: PipelineConfig, out_dir: Path) -> tuple[str, str | None]:
        """``(model base the pod reads, storage mount path or None)`` for this stage directory."""
        storage = self.settings.storage
        from mlplatform.object_store import is_remote

        if self.k8s.storage_pvc:
            from mlplatform.storage import to_path

            if is_remote(storage):
                raise _fail(
                    f"MLP_K8S_STORAGE_PVC needs MLP_STORAGE_URI to be a shared local path, not {storage!r}"
                )
            return str(out_dir / "tfs"), str(to_path(storage))
        if storage.startswith("s3://"):
            run, stage = out_dir.parent.name, out_dir.name
            return f"{storage.rstrip('/')}/{cfg.name}/{run}/{stage}/tfs", None
        raise _fail(
            "the kubernetes runner needs the candidate where a pod can read it: set "
            "MLP_K8S_STORAGE_PVC (shared storage volume) or an s3:// MLP_STORAGE_URI"
        )

    def render(self, cfg: PipelineConfig, version: int, out_dir: Path) -> dict[str, Any]:
        """The serving pod's manifest for this candidate."""
        base, mount = self.model_base(cfg, out_dir)
        return serving_pod(
            cfg,
            version,
            base,
            pod_name=self.pod_name(cfg, version, out_dir),
            k8s=self.k8s,
            storage_mount=mount,
            grpc_port=self.grpc_port,
        )

    def stage(self, cfg: PipelineConfig, version: int, candidate: Path, out_dir: Path) -> str:
        """Copy the candidate to ``<model base>/<model>/<version>`` (the layout TF Serving reads)."""
        base, mount = self.model_base(cfg, out_dir)
        target = f"{base}/{cfg.serving.model_name}/{version}"
        if mount is not None:
            shutil.copytree(candidate, target, dirs_exist_ok=True)
        else:
            import fsspec

            fs, path = fsspec.core.url_to_fs(target)
            fs.put(str(candidate), path, recursive=True)
        return target

    # -- running -------------------------------------------------------------------------------

    @contextmanager
    def serve(
        self, cfg: PipelineConfig, version: int, candidate: Path, out_dir: Path
    ) -> Iterator[GrpcCandidate]:
        from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook
        from airflow.providers.cncf.kubernetes.pod_generator import PodGenerator
        from airflow.providers.cncf.kubernetes.utils.pod_manager import PodManager

        from serving.client import GrpcPredictionClient

        manifest = self.render(cfg, version, out_dir)
        self.stage(cfg, version, candidate, out_dir)
        hook = KubernetesHook(conn_id=self.k8s.kubernetes_conn_id)
        manager = PodManager(kube_client=hook.core_v1_client)
        pod = PodGenerator.deserialize_model_dict(manifest)
        where = f"pod {pod.metadata.namespace}/{pod.metadata.name}"
        timeout = self.k8s.serving_ready_timeout_seconds
        client = None
        manager.create_pod(pod)
        try:
            try:
                asyncio.run(
                    manager.await_pod_start(
                        pod, schedule_timeout=int(timeout), startup_timeout=int(timeout)
                    )
                )
            except Exception as exc:  # noqa: BLE001 - the provider raises several kinds
                raise _fail(f"{where} ({self.k8s.serving_image}) did not start: {exc}") from None
            remote = manager.read_pod(pod)
            if remote.status.phase != "Running" or not remote.status.pod_ip:
                raise _fail(f"{where} is {remote.status.phase}, not serving")
            client = GrpcPredictionClient(f"{remote.status.pod_ip}:{self.grpc_port}")
            try:
                client.wait_until_available(cfg.serving.model_name, timeout_s=timeout)
            except TimeoutError as exc:
                raise _fail(
                    f"{cfg.serving.model_name} v{version} did not load in {where}: {exc}"
                ) from None
            yield GrpcCandidate(client, cfg.serving.model_name, version)
        finally:
            if client is not None:
                client.close()
            manager.delete_pod(pod)
