"""The trainer pod: the trainer image under ``horovodrun`` in one pod (``training.workers == 1``),
and the pod parts an MPIJob's workers share with it (GPUs, ``/dev/shm``, env, scheduling).

Pure builders (no Airflow, no Kubernetes client, no I/O): they return manifests in the API's own
JSON form (camelCase keys, what ``kubectl apply`` and ``kubernetes-validate`` take). One pod runs
``N`` = ``gpus_per_worker`` (or ``processes_per_worker`` on CPU) ranks::

    horovodrun -np N -H localhost:N [--gloo on CPU] python -m training.train --spec-json '<json>'

How the trainer hands its result back: rank 0 writes ``/airflow/xcom/return.json`` (the path is in
``MLPLATFORM_XCOM_PATH``, set only for the single pod, whose XCom sidecar reads it) and prints, as
its last stdout line, ``MLPLATFORM_RESULT <one-line JSON>`` (what the MPIJob path parses from the
launcher log).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlplatform.config import quantity_problem
from mlplatform.k8s.names import dns_label, trainer_labels
from mlplatform.k8s.settings import (
    CredentialsInManifest,
    KubernetesSettings,
    pod_tracking_uri,
    redact_uri,
    uri_has_credentials,
)
from training.spec import MlflowSpec, TrainSpec, horovodrun_command, spec_args

if TYPE_CHECKING:
    from mlplatform.config import PipelineConfig, TrainingConfig
    from mlplatform.settings import Settings

#: KubernetesPodOperator's base container name: its logs and XCom are read from it
POD_CONTAINER = "base"
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


def trainer_spec(
    cfg: PipelineConfig,
    training_set: dict[str, object],
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
