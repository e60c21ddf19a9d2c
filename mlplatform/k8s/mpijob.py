"""The Kubeflow ``MPIJob`` (``kubeflow.org/v2beta1``, mpi-operator >= 0.6) for ``training.workers > 1``,
and how to read one back (its state from the status conditions, the trainer's result line).

The launcher runs ``horovodrun -np <workers*slots> --hostfile /etc/mpi/hostfile python -m
training.train --spec-json ...`` on the hostfile the mpi-operator generates (``<job>-worker-<i>.
<job>.<ns>.svc slots=<slotsPerWorker>``); horovodrun turns it into the same ``mpirun
--allow-run-as-root -bind-to none -map-by slot ...`` line as the mpi-operator's Horovod example
(``examples/v2beta1/horovod``), or into Gloo over SSH when the image's Horovod has no MPI. Workers
run the image with no command: the mpi-operator starts ``/usr/sbin/sshd -De`` and mounts the SSH
keys (``sshAuthMountPath``).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from mlplatform.k8s.names import trainer_labels
from mlplatform.k8s.pod_spec import (
    _common_pod_spec,
    _env_from,
    _k8s,
    _quantities,
    _training_pod_spec,
    slots_per_worker,
    trainer_env,
)
from mlplatform.k8s.settings import KubernetesSettings
from training.spec import RESULT_MARKER, TrainSpec, horovodrun_command, spec_args

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
#: states of :func:`mpijob_state` after which the job never runs again
TERMINAL_STATES = ("Succeeded", "Failed")


def launcher_command(
    training: TrainingConfig, spec: TrainSpec, train_rows: int | None = None
) -> list[str]:
    """The MPI launcher's ``horovodrun`` over every worker slot of the mpi-operator's hostfile."""
    return horovodrun_command(
        training.workers * slots_per_worker(training, train_rows),
        spec_args(spec=spec),
        hostfile=MPI_HOSTFILE,
    )


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
