"""Settings of the Kubernetes backends (``MLP_K8S_*``) and the guard that keeps credentials out of
manifests.

Connection settings (API server, kubeconfig, in-cluster, context) are not here: they come from the
Airflow connection named by ``kubernetes_conn_id`` (type ``kubernetes``; the provider's hooks read
its ``in_cluster``, ``kube_config_path``, ``kube_config``, ``cluster_context`` extras), so that the
pod operator, the MPIJob calls and the trigger all reach the same cluster.

Secrets never appear in a manifest: S3 credentials come from ``envFrom`` the secret named by
``MLP_K8S_S3_SECRET``; only non-secret endpoints and names are literal. The MLflow tracking URI
(which may carry a password) comes from the Secret named by ``MLP_K8S_MLFLOW_SECRET`` when it is
set; without it the URI is a literal, and a URI with credentials in it is refused with
:class:`CredentialsInManifest` before anything is rendered (:func:`uri_has_credentials`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from mlplatform.config import quantity_problem

if TYPE_CHECKING:
    from mlplatform.settings import Settings


class KubernetesSettings(BaseSettings):
    """Knobs of the Kubernetes training backend: environment variables ``MLP_K8S_*`` (or ``.env``).

    Dicts and lists are JSON in the environment, e.g.
    ``MLP_K8S_GPU_NODE_SELECTOR='{"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}'``.
    """

    model_config = SettingsConfigDict(env_prefix="MLP_K8S_", env_file=".env", extra="ignore")

    namespace: str = "mlplatform"
    service_account: str = Field(default="mlplatform-trainer", description="pods' service account")
    kubernetes_conn_id: str = Field(
        default="kubernetes_default",
        description="Airflow connection (type kubernetes) of the cluster: in_cluster, kubeconfig, "
        "context; every Kubernetes call of the platform goes through it",
    )
    startup_timeout_seconds: int = Field(
        default=900, ge=1, description="scheduling + start: GPU nodes scale up, CUDA images are big"
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    image_pull_secrets: list[str] = Field(default_factory=list)
    priority_class_name: str | None = None
    gpu_resource: str = "nvidia.com/gpu"
    gpu_node_selector: dict[str, str] = Field(
        default_factory=lambda: {"nvidia.com/gpu.present": "true"},
        description="pods with GPUs (the label of NVIDIA GPU feature discovery)",
    )
    cpu_node_selector: dict[str, str] = Field(
        default_factory=dict, description="CPU-only trainer pods and the MPI launcher"
    )
    shm_size: str = Field(default="8Gi", description="sizeLimit of the memory-backed /dev/shm")
    storage_pvc: str | None = Field(
        default=None,
        description="ReadWriteMany PVC holding MLP_STORAGE_URI (a local path shared with the Airflow "
        "workers, e.g. EFS/NFS); mounted at that same path so the spec's paths resolve in the pod",
    )
    s3_secret: str = Field(
        default="mlplatform-s3", description="Secret with AWS_ACCESS_KEY_ID/...; '' for none (IRSA)"
    )
    s3_endpoint_url: str | None = Field(default=None, description="MinIO/S3 endpoint, if not AWS")
    aws_region: str | None = None
    mlflow_tracking_uri: str | None = Field(
        default=None,
        description="MLflow as the pods reach it, without credentials; default "
        "MLP_MLFLOW_TRACKING_URI (ignored when mlflow_secret is set)",
    )
    mlflow_secret: str = Field(
        default="",
        description="Secret with MLFLOW_TRACKING_URI (+ optional MLFLOW_TRACKING_USERNAME/"
        "PASSWORD/TOKEN) for the pods; '' for none (then the URI is a literal without credentials)",
    )
    nccl_debug: str = "WARN"
    extra_env: dict[str, str] = Field(
        default_factory=dict, description="more literal, non-secret env"
    )
    poll_interval_seconds: float = Field(
        default=10.0, gt=0, description="pod / MPIJob status polls"
    )
    logging_interval_seconds: int = Field(
        default=60, ge=1, description="deferred pod: fetch new log lines this often"
    )
    log_read_timeout_seconds: int = Field(
        default=300, ge=1, description="MPI launcher log stream: re-open after this long silent"
    )
    launcher_resources: dict[str, str] = Field(
        default_factory=lambda: {"cpu": "1", "memory": "2Gi"}
    )
    mpi_implementation: Literal["OpenMPI", "Intel", "MPICH"] = "OpenMPI"
    mpi_ssh_auth_mount_path: str = "/root/.ssh"
    mpi_backoff_limit: int = Field(
        default=0, ge=0, description="launcher retries; Airflow's task retries recreate the job"
    )
    mpi_ttl_seconds_after_finished: int = Field(
        default=86400, ge=0, description="finished MPIJobs (and failed pods) kept this long"
    )
    serving_image: str = Field(
        default="tensorflow/serving:2.21.0",
        description="infra validation on Kubernetes: the TF Serving image the candidate loads in",
    )
    serving_resources: dict[str, str] = Field(
        default_factory=lambda: {"cpu": "1", "memory": "2Gi"},
        description="infra validation pod's requests = limits",
    )
    serving_ready_timeout_seconds: float = Field(
        default=300.0,
        gt=0,
        description="infra validation: pod scheduled, image pulled, model AVAILABLE",
    )

    @field_validator("shm_size")
    @classmethod
    def _is_quantity(cls, value: str) -> str:
        problem = quantity_problem(value)
        if problem:
            raise ValueError(problem)
        return value


class CredentialsInManifest(ValueError):
    """A credential would become a literal of a manifest; ``str()`` is one line, credential-free."""


def uri_has_credentials(value: str) -> bool:
    """Whether ``value`` is a URI with credentials in it: a password (``user:password@``), or
    any userinfo of an http(s) URI (``https://token@host``: basic auth with a token). A bare
    user of another scheme (``ssh://git@host``, ``postgresql://app@db``) is not a secret."""
    if "://" not in value:
        return False
    try:
        parts = urlsplit(value.strip())
        if "@" not in parts.netloc:
            return False
        return parts.password is not None or parts.scheme.lower() in ("http", "https")
    except ValueError:
        return True  # unparsable: do not let it through


def redact_uri(value: str) -> str:
    """``value`` with the userinfo of a URI replaced by ``***`` (for messages and records)."""
    try:
        parts = urlsplit(value)
    except ValueError:
        return "<unparsable URI>"
    if "@" not in parts.netloc:
        return value
    return parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]).geturl()


def pod_tracking_uri(settings: Settings, k8s: KubernetesSettings) -> str | None:
    """The MLflow tracking URI to write into a pod's spec and env: None when the pods get it
    from ``k8s.mlflow_secret``; else ``MLP_K8S_MLFLOW_TRACKING_URI`` or
    ``MLP_MLFLOW_TRACKING_URI``, refused (:class:`CredentialsInManifest`) if it carries
    credentials."""
    if k8s.mlflow_secret:
        return None
    uri = k8s.mlflow_tracking_uri or settings.tracking_uri
    if uri_has_credentials(uri):
        raise CredentialsInManifest(
            f"the MLflow tracking URI {redact_uri(uri)} carries credentials and would be a literal "
            "of the trainer pod: put it in a Kubernetes Secret (key MLFLOW_TRACKING_URI, optionally "
            "MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD) and set MLP_K8S_MLFLOW_SECRET"
        )
    return uri
