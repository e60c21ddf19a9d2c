"""Kubernetes objects of the training backend: the trainer pod and the Kubeflow ``MPIJob``.

Pure builders (no Airflow, no Kubernetes client, no I/O): they turn a :class:`PipelineConfig`, the
platform :class:`~mlplatform.settings.Settings`, the :class:`KubernetesSettings` below and the
trainer's JSON spec into plain manifests in the API's own JSON form (camelCase keys, what
``kubectl apply`` and ``kubernetes-validate`` take). ``operators/kubernetes_training.py`` hands
the pod to the KubernetesPodOperator (``pod_template_dict``) and submits the MPIJob through the
API; both run the very command of the local backend, with the spec inline:

* one pod, ``N`` = ``gpus_per_worker`` (or ``processes_per_worker`` on CPU)::

    horovodrun -np N -H localhost:N [--gloo on CPU] python -m training.train --spec-json '<json>'

* ``training.workers > 1``: a ``kubeflow.org/v2beta1`` MPIJob (mpi-operator v0.8) whose launcher
  runs ``horovodrun -np <workers*slots> --hostfile /etc/mpi/hostfile python -m training.train
  --spec-json ...`` on the hostfile the mpi-operator generates (``<job>-worker-<i>.<job>.<ns>.svc
  slots=<slotsPerWorker>``); horovodrun turns it into the same ``mpirun --allow-run-as-root
  -bind-to none -map-by slot -mca pml ob1 -mca btl ^openib -x ...`` line as the mpi-operator's
  Horovod example (``examples/v2beta1/horovod``), or into Gloo over SSH when the image's Horovod
  has no MPI. Workers run the image with no command: the mpi-operator starts ``/usr/sbin/sshd -De``
  and mounts the SSH keys (``sshAuthMountPath``).

How the trainer hands its result back (see ``RESULT_MARKER`` and ``XCOM_RESULT_PATH``): rank 0
writes ``/airflow/xcom/return.json`` (the path is in the env var ``MLPLATFORM_XCOM_PATH``, set only
in the single-pod case, where the KubernetesPodOperator's XCom sidecar reads it) and prints, as its
last stdout line, ``MLPLATFORM_RESULT <one-line JSON>`` (what the MPIJob path parses from the
launcher log).

Secrets never appear in a manifest: S3 credentials come from ``envFrom`` the secret named by
``MLP_K8S_S3_SECRET``; only non-secret endpoints and names are literal. The MLflow tracking URI
(which may carry a password) comes from the Secret named by ``MLP_K8S_MLFLOW_SECRET`` when it is
set: its key ``MLFLOW_TRACKING_URI`` (required) and ``MLFLOW_TRACKING_USERNAME``,
``MLFLOW_TRACKING_PASSWORD``, ``MLFLOW_TRACKING_TOKEN`` (optional) become the containers' env by
``secretKeyRef``, and the trainer's spec carries no ``mlflow.tracking_uri`` (the trainer reads
its environment). Without that secret the URI is a literal, and a URI with credentials in it
(``user:password@``, ``https://token@``) is refused with :class:`CredentialsInManifest` before anything is
rendered; so is any other literal env value that is a URI with credentials
(:func:`uri_has_credentials`).
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from mlplatform.config import quantity_problem
from training.spec import (
    RESULT_MARKER,
    MlflowSpec,
    TrainSpec,
    horovodrun_command,
    spec_args,
)

if TYPE_CHECKING:
    from mlplatform.config import PipelineConfig, TrainingConfig
    from mlplatform.settings import Settings

MPIJOB_GROUP = "kubeflow.org"
MPIJOB_VERSION = "v2beta1"
MPIJOB_PLURAL = "mpijobs"
MPIJOB_KIND = "MPIJob"
#: the hostfile the mpi-operator mounts into the launcher (ConfigMap ``<job>-config``)
MPI_HOSTFILE = "/etc/mpi/hostfile"
#: labels the mpi-operator (v2beta1) puts on the pods of a job
MPI_JOB_NAME_LABEL = "training.kubeflow.org/job-name"
MPI_JOB_ROLE_LABEL = "training.kubeflow.org/job-role"
LAUNCHER_CONTAINER = "launcher"
WORKER_CONTAINER = "worker"
#: KubernetesPodOperator's base container name: its logs and XCom are read from it
POD_CONTAINER = "base"
#: ``<name>-worker-<i>`` must stay a DNS-1035 label (<= 63): the mpi-operator rejects longer names
MPIJOB_NAME_MAX = 50

#: where rank 0 writes the same JSON when the KubernetesPodOperator's XCom sidecar is there
XCOM_RESULT_PATH = "/airflow/xcom/return.json"
XCOM_PATH_ENV = "MLPLATFORM_XCOM_PATH"

#: keys of the ``MLP_K8S_MLFLOW_SECRET`` Secret given to the trainer containers (the first is required)
MLFLOW_SECRET_KEYS = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
)

APP_LABEL = "app.kubernetes.io/name"
APP_NAME = "mlplatform-trainer"
PIPELINE_LABEL = "mlplatform/pipeline"
RUN_LABEL = "mlplatform/run"


class KubernetesSettings(BaseSettings):
    """Knobs of the Kubernetes training backend: environment variables ``MLP_K8S_*`` (or ``.env``).

    Dicts and lists are JSON in the environment, e.g.
    ``MLP_K8S_GPU_NODE_SELECTOR='{"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}'``.
    """

    model_config = SettingsConfigDict(env_prefix="MLP_K8S_", env_file=".env", extra="ignore")

    namespace: str = "mlplatform"
    service_account: str = Field(default="mlplatform-trainer", description="pods' service account")
    kubernetes_conn_id: str = Field(default="kubernetes_default", description="Airflow connection")
    in_cluster: bool | None = Field(default=None, description="None: as the connection says")
    kube_config_path: str | None = None
    cluster_context: str | None = None
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


# ---------------------------------------------------------------------------------------------
# names and labels


def label_value(text: str) -> str:
    """A valid label value for ``text`` (<= 63 chars of ``[A-Za-z0-9._-]``, alphanumeric ends);
    long values keep a prefix and a hash, so distinct inputs stay distinct."""
    value = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._-")
    if len(value) > 63:
        digest = hashlib.sha256(text.encode()).hexdigest()[:10]
        value = f"{value[:52].rstrip('._-')}-{digest}"
    return value


def dns_label(text: str, max_len: int = 63) -> str:
    """Lowercase DNS-1035 label (``[a-z]([-a-z0-9]*[a-z0-9])?``) made from ``text``."""
    value = re.sub(r"[^a-z0-9-]+", "-", text.lower())
    value = re.sub(r"-{2,}", "-", value).strip("-")
    if not value or not value[0].isalpha():
        value = f"mlp-{value}".rstrip("-")
    return value[:max_len].rstrip("-")


def mpijob_name(dag_id: str, task_id: str, run_id: str, map_index: int = -1) -> str:
    """Deterministic MPIJob name of one task instance (same on every try: a retry or a restarted
    worker finds the job again). A DNS-1035 label of at most ``MPIJOB_NAME_MAX`` (50) chars, so
    that the mpi-operator's ``<name>-worker-<i>`` and ``<name>-launcher`` stay valid too."""
    key = "\0".join([dag_id, task_id, run_id, str(map_index)])
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    stem = dns_label(f"{dag_id}-{task_id}", MPIJOB_NAME_MAX - len(digest) - 1)
    return f"{stem}-{digest}"


def trainer_labels(
    cfg: PipelineConfig, run_id: str, component: str | None = None
) -> dict[str, str]:
    """Labels of every trainer object: app name, pipeline, run (and component, if given)."""
    labels = {
        APP_LABEL: APP_NAME,
        "app.kubernetes.io/part-of": "mlplatform",
        PIPELINE_LABEL: label_value(cfg.name),
    }
    if run_id:
        labels[RUN_LABEL] = label_value(run_id)
    if component:
        labels["app.kubernetes.io/component"] = component
    return labels


# ---------------------------------------------------------------------------------------------
# the trainer's spec and command


def trainer_spec(
    cfg: PipelineConfig,
    training_set: dict[str, Any],
    *,
    output_dir: str,
    tracking_uri: str | None,
    artifact_location: str,
    run_name: str,
    tags: dict[str, str],
) -> TrainSpec:
    """The trainer's spec (:class:`training.spec.TrainSpec`, built as the local stage builds it)
    with URIs kept as given (``s3://...`` in production), no ``checkpoint_dir`` (the trainer's
    default, under ``output_dir``) and ``mlflow.artifact_location`` so that the trainer creates a
    missing experiment itself. ``tracking_uri`` None (see :func:`pod_tracking_uri`) leaves
    ``mlflow.tracking_uri`` out: the trainer then reads ``MLFLOW_TRACKING_URI`` from its
    environment."""
    from mlplatform.stages.train import build_spec

    return build_spec(
        cfg,
        training_set,
        output_dir=output_dir,
        checkpoint_dir=None,
        mlflow=MlflowSpec(
            experiment=cfg.name,
            tracking_uri=tracking_uri,
            run_name=run_name,
            tags=tags,
            artifact_location=artifact_location,
        ),
    )


def slots_per_worker(training: TrainingConfig, train_rows: int | None = None) -> int:
    """Horovod processes per pod (:meth:`TrainingConfig.processes`): one per GPU, else
    ``processes_per_worker``, or for ``auto`` fitted to ``train_rows`` and the pod's
    ``training.resources.cpu`` (whole cores; none given counts as one core)."""
    cores = None
    if "cpu" in training.resources and quantity_problem(training.resources["cpu"]) is None:
        from kubernetes.utils import parse_quantity

        cores = int(parse_quantity(training.resources["cpu"]))
    return training.processes(train_rows, cores)


def pod_command(
    training: TrainingConfig, spec: TrainSpec, train_rows: int | None = None
) -> list[str]:
    """``horovodrun`` over this pod's slots; Gloo on CPU (as locally), on GPU Horovod's own
    controller choice with NCCL doing the allreduce (``HOROVOD_GPU_OPERATIONS=NCCL`` build)."""
    return horovodrun_command(
        slots_per_worker(training, train_rows),
        spec_args(spec=spec),
        gloo=not training.gpus_per_worker,
    )


def launcher_command(
    training: TrainingConfig, spec: TrainSpec, train_rows: int | None = None
) -> list[str]:
    """The MPI launcher's ``horovodrun`` over every worker slot of the mpi-operator's hostfile."""
    return horovodrun_command(
        training.workers * slots_per_worker(training, train_rows),
        spec_args(spec=spec),
        hostfile=MPI_HOSTFILE,
    )


# ---------------------------------------------------------------------------------------------
# pod parts


def _k8s(k8s: KubernetesSettings | None) -> KubernetesSettings:
    return k8s if k8s is not None else KubernetesSettings()


def _mlflow_secret_env(k8s: KubernetesSettings) -> list[dict]:
    """``MLFLOW_SECRET_KEYS`` by ``secretKeyRef`` from ``k8s.mlflow_secret`` (the URI required)."""
    return [
        {
            "name": key,
            "valueFrom": {
                "secretKeyRef": {"name": k8s.mlflow_secret, "key": key, "optional": index > 0}
            },
        }
        for index, key in enumerate(MLFLOW_SECRET_KEYS)
    ]


def trainer_env(settings: Settings, k8s: KubernetesSettings, *, xcom: bool = False) -> list[dict]:
    """Env of the trainer containers: literal, non-secret values, plus the MLflow Secret's keys
    by ``secretKeyRef`` when ``mlflow_secret`` is set (S3 credentials come by ``envFrom``).
    Raises :class:`CredentialsInManifest` if a literal value is a URI with credentials."""
    tracking_uri = pod_tracking_uri(settings, k8s)
    env = {
        **({"MLFLOW_TRACKING_URI": tracking_uri} if tracking_uri is not None else {}),
        "NCCL_DEBUG": k8s.nccl_debug,
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PYTHONUNBUFFERED": "1",
    }
    if k8s.aws_region:
        env["AWS_DEFAULT_REGION"] = k8s.aws_region
    if k8s.s3_endpoint_url:
        env["MLFLOW_S3_ENDPOINT_URL"] = k8s.s3_endpoint_url
        env["AWS_ENDPOINT_URL"] = k8s.s3_endpoint_url
    if xcom:
        env[XCOM_PATH_ENV] = XCOM_RESULT_PATH
    env.update(k8s.extra_env)
    for name, value in env.items():
        if uri_has_credentials(value):
            raise CredentialsInManifest(
                f"env {name}={redact_uri(value)} carries credentials and would be a literal of the "
                "trainer pod: deliver it from a Kubernetes Secret instead"
            )
    literal = [{"name": k, "value": v} for k, v in env.items()]
    if k8s.mlflow_secret:
        secret_keys = set(MLFLOW_SECRET_KEYS)
        literal = [item for item in literal if item["name"] not in secret_keys]
        return [*_mlflow_secret_env(k8s), *literal]
    return literal


def _env_from(k8s: KubernetesSettings) -> list[dict]:
    return [{"secretRef": {"name": k8s.s3_secret}}] if k8s.s3_secret else []


def _quantities(values: dict[str, str], where: str) -> dict[str, str]:
    for key, value in values.items():
        problem = quantity_problem(str(value))
        if problem:
            raise ValueError(f"{where}.{key}: {problem}")
    return {k: str(v) for k, v in values.items()}


def trainer_resources(training: TrainingConfig, k8s: KubernetesSettings) -> dict[str, dict]:
    """``training.resources`` (cpu, memory, ...) as requests = limits (Guaranteed QoS when cpu
    and memory are both given), plus ``nvidia.com/gpu: N`` in the limits when N > 0."""
    base = _quantities(training.resources, "training.resources")
    limits = dict(base)
    if training.gpus_per_worker:
        limits[k8s.gpu_resource] = str(training.gpus_per_worker)
    out: dict[str, dict] = {}
    if limits:
        out["limits"] = limits
    if base:
        out["requests"] = dict(base)
    return out


def _scheduling(training: TrainingConfig, k8s: KubernetesSettings) -> dict[str, Any]:
    if not training.gpus_per_worker:
        return {"nodeSelector": dict(k8s.cpu_node_selector)} if k8s.cpu_node_selector else {}
    spec: dict[str, Any] = {
        "tolerations": [{"key": k8s.gpu_resource, "operator": "Exists", "effect": "NoSchedule"}]
    }
    if k8s.gpu_node_selector:
        spec["nodeSelector"] = dict(k8s.gpu_node_selector)
    return spec


def _common_pod_spec(k8s: KubernetesSettings) -> dict[str, Any]:
    spec: dict[str, Any] = {"serviceAccountName": k8s.service_account}
    if k8s.image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": n} for n in k8s.image_pull_secrets]
    if k8s.priority_class_name:
        spec["priorityClassName"] = k8s.priority_class_name
    return spec


def _shm_volume(k8s: KubernetesSettings) -> dict[str, Any]:
    # NCCL and Horovod's shared-memory transports need far more than the runtime's 64 MiB /dev/shm;
    # a Memory emptyDir counts against the pod's memory limit, so size training.resources for it.
    return {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": k8s.shm_size}}


_SHM_MOUNT = {"name": "dshm", "mountPath": "/dev/shm"}


def _training_pod_spec(
    cfg: PipelineConfig,
    settings: Settings,
    k8s: KubernetesSettings,
    *,
    container_name: str,
    command: list[str] | None,
    xcom: bool = False,
) -> dict[str, Any]:
    """Pod spec of a pod that trains (the single pod, an MPI worker): GPUs, shm, env."""
    container: dict[str, Any] = {
        "name": container_name,
        "image": cfg.training.image,
        "imagePullPolicy": k8s.image_pull_policy,
    }
    if command:
        container["command"] = command
    container["env"] = trainer_env(settings, k8s, xcom=xcom)
    if env_from := _env_from(k8s):
        container["envFrom"] = env_from
    if resources := trainer_resources(cfg.training, k8s):
        container["resources"] = resources
    container["volumeMounts"] = [dict(_SHM_MOUNT)]
    volumes = [_shm_volume(k8s)]
    if k8s.storage_pvc:
        # The trainer reads and writes plain paths (train/hold-out Parquet, checkpoints, the
        # SavedModel): the run storage must be the same path in the pod as on the Airflow worker.
        from mlplatform.object_store import is_remote
        from mlplatform.storage import to_path

        if is_remote(settings.storage):  # s3:// storage: the trainer fetches and publishes itself
            raise ValueError(
                f"MLP_K8S_STORAGE_PVC needs MLP_STORAGE_URI to be a shared local path, not {settings.storage!r}"
            )
        mount_path = str(to_path(settings.storage))
        volumes.append({"name": "storage", "persistentVolumeClaim": {"claimName": k8s.storage_pvc}})
        container["volumeMounts"].append({"name": "storage", "mountPath": mount_path})
    return {
        **_common_pod_spec(k8s),
        **_scheduling(cfg.training, k8s),
        "containers": [container],
        "volumes": volumes,
    }


# ---------------------------------------------------------------------------------------------
# the two manifests


def trainer_pod_spec(
    cfg: PipelineConfig,
    spec: TrainSpec,
    *,
    settings: Settings,
    k8s: KubernetesSettings | None = None,
    run_id: str = "",
    name: str | None = None,
    xcom: bool = True,
    train_rows: int | None = None,
) -> dict[str, Any]:
    """The single trainer pod (``v1/Pod`` manifest) for ``training.workers == 1``.

    One container named ``base`` (the KubernetesPodOperator's) with image
    ``cfg.training.image``, command :func:`pod_command`, ``nvidia.com/gpu: N`` limits when
    ``gpus_per_worker`` > 0 plus ``training.resources`` as requests = limits; the GPU node selector
    and a ``nvidia.com/gpu`` NoSchedule toleration (GPU pods only; CPU pods get
    ``cpu_node_selector``); a memory-backed ``/dev/shm`` emptyDir of ``shm_size``; env for
    MLflow, S3 and NCCL, S3 credentials by ``envFrom`` the secret ``s3_secret``; the service
    account; labels ``app.kubernetes.io/name: mlplatform-trainer``, ``mlplatform/pipeline``,
    ``mlplatform/run``; ``restartPolicy: Never``. ``xcom`` sets ``MLPLATFORM_XCOM_PATH`` (the
    operator's XCom sidecar mounts ``/airflow/xcom``).
    """
    k8s = _k8s(k8s)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name or dns_label(f"mlp-{cfg.name}-train"),
            "namespace": k8s.namespace,
            "labels": trainer_labels(cfg, run_id, "trainer"),
        },
        "spec": {
            **_training_pod_spec(
                cfg,
                settings,
                k8s,
                container_name=POD_CONTAINER,
                command=pod_command(cfg.training, spec, train_rows),
                xcom=xcom,
            ),
            "restartPolicy": "Never",
        },
    }


def mpijob_manifest(
    cfg: PipelineConfig,
    spec: TrainSpec,
    *,
    settings: Settings,
    name: str,
    k8s: KubernetesSettings | None = None,
    run_id: str = "",
    train_rows: int | None = None,
) -> dict[str, Any]:
    """The ``kubeflow.org/v2beta1`` MPIJob for ``training.workers > 1`` (mpi-operator >= 0.6).

    ``slotsPerWorker`` = GPUs per worker (``processes_per_worker`` on CPU); ``runPolicy``:
    ``cleanPodPolicy: Running`` (finished pods stay for their logs until
    ``ttlSecondsAfterFinished``), ``backoffLimit`` (launcher retries; default 0: Airflow's retries
    own that); ``launcherCreationPolicy: WaitForWorkersReady`` (horovodrun's SSH checks need the
    workers up). ``Launcher``: one CPU pod running :func:`launcher_command`. ``Worker``:
    ``workers`` pods like the single trainer pod (GPUs, node selector, toleration, /dev/shm,
    env) without a command: the mpi-operator starts sshd in them. Both ``restartPolicy: Never``.
    """
    k8s = _k8s(k8s)
    training = cfg.training
    launcher_container: dict[str, Any] = {
        "name": LAUNCHER_CONTAINER,
        "image": training.image,
        "imagePullPolicy": k8s.image_pull_policy,
        "command": launcher_command(training, spec, train_rows),
        "env": trainer_env(settings, k8s),
    }
    if env_from := _env_from(k8s):
        launcher_container["envFrom"] = env_from
    if k8s.launcher_resources:
        res = _quantities(k8s.launcher_resources, "launcher_resources")
        launcher_container["resources"] = {"limits": res, "requests": dict(res)}
    launcher_spec: dict[str, Any] = {**_common_pod_spec(k8s), "containers": [launcher_container]}
    if k8s.cpu_node_selector:
        launcher_spec["nodeSelector"] = dict(k8s.cpu_node_selector)
    worker_spec = _training_pod_spec(
        cfg, settings, k8s, container_name=WORKER_CONTAINER, command=None
    )
    return {
        "apiVersion": f"{MPIJOB_GROUP}/{MPIJOB_VERSION}",
        "kind": MPIJOB_KIND,
        "metadata": {
            "name": name,
            "namespace": k8s.namespace,
            "labels": trainer_labels(cfg, run_id),
        },
        "spec": {
            "slotsPerWorker": slots_per_worker(training, train_rows),
            "runLauncherAsWorker": False,
            "mpiImplementation": k8s.mpi_implementation,
            "launcherCreationPolicy": "WaitForWorkersReady",
            "sshAuthMountPath": k8s.mpi_ssh_auth_mount_path,
            "runPolicy": {
                "cleanPodPolicy": "Running",
                "backoffLimit": k8s.mpi_backoff_limit,
                "ttlSecondsAfterFinished": k8s.mpi_ttl_seconds_after_finished,
            },
            "mpiReplicaSpecs": {
                "Launcher": {
                    "replicas": 1,
                    "restartPolicy": "Never",
                    "template": {
                        "metadata": {"labels": trainer_labels(cfg, run_id, "launcher")},
                        "spec": launcher_spec,
                    },
                },
                "Worker": {
                    "replicas": training.workers,
                    "restartPolicy": "Never",
                    "template": {
                        "metadata": {"labels": trainer_labels(cfg, run_id, "worker")},
                        "spec": worker_spec,
                    },
                },
            },
        },
    }


# ---------------------------------------------------------------------------------------------
# reading results back


def launcher_selector(job_name: str) -> str:
    """Label selector of an MPIJob's launcher pod(s)."""
    return f"{MPI_JOB_NAME_LABEL}={job_name},{MPI_JOB_ROLE_LABEL}=launcher"


def mpijob_state(job: dict[str, Any]) -> tuple[str, str, str]:
    """``(state, reason, message)`` of an MPIJob object from its status conditions.

    ``state`` is ``Failed`` or ``Succeeded`` (terminal), else ``Suspended``, ``Restarting``,
    ``Running``, ``Created`` or ``Pending`` (no condition yet): the first true condition in that
    order. ``message`` is squeezed onto one line.
    """
    conditions = (job.get("status") or {}).get("conditions") or []
    true = {c.get("type"): c for c in conditions if str(c.get("status")) == "True"}
    for state in ("Failed", "Succeeded", "Suspended", "Restarting", "Running", "Created"):
        if state in true:
            cond = true[state]
            return state, cond.get("reason") or "", " ".join(str(cond.get("message") or "").split())
    return "Pending", "", ""


def parse_result_line(line: str) -> dict[str, Any] | None:
    """The JSON after ``MLPLATFORM_RESULT`` anywhere in ``line`` (horovodrun prefixes rank output
    with ``[1,0]<stdout>:`` or ``[0]<stdout>:``), or None."""
    index = line.find(RESULT_MARKER + " ")
    if index < 0:
        return None
    try:
        value = json.loads(line[index + len(RESULT_MARKER) + 1 :])
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
