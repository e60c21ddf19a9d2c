"""Kubernetes objects of the platform, as pure builders (no Airflow, no Kubernetes client, no I/O).

* :mod:`~mlplatform.k8s.settings`: ``MLP_K8S_*`` settings and the credentials guard;
* :mod:`~mlplatform.k8s.names`: names and labels;
* :mod:`~mlplatform.k8s.pod_spec`: the trainer pod (``training.workers == 1``);
* :mod:`~mlplatform.k8s.mpijob`: the Kubeflow MPIJob (``training.workers > 1``) and its state;
* :mod:`~mlplatform.k8s.serving_pod`: the ``tensorflow/serving`` pod of infra validation.

``operators/kubernetes_training.py`` hands the pod to the KubernetesPodOperator and submits the
MPIJob through the provider's hook; ``mlplatform/infra_runners`` starts the serving pod.
"""

from mlplatform.k8s.mpijob import (
    LAUNCHER_CONTAINER,
    MPI_HOSTFILE,
    MPI_JOB_NAME_LABEL,
    MPI_JOB_ROLE_LABEL,
    MPIJOB_GROUP,
    MPIJOB_KIND,
    MPIJOB_PLURAL,
    MPIJOB_VERSION,
    TERMINAL_STATES,
    WORKER_CONTAINER,
    launcher_command,
    launcher_selector,
    mpijob_manifest,
    mpijob_state,
    parse_result_line,
)
from mlplatform.k8s.names import (
    APP_LABEL,
    APP_NAME,
    MPIJOB_NAME_MAX,
    PIPELINE_LABEL,
    RUN_LABEL,
    dns_label,
    label_value,
    mpijob_name,
    trainer_labels,
)
from mlplatform.k8s.pod_spec import (
    MLFLOW_SECRET_KEYS,
    POD_CONTAINER,
    XCOM_PATH_ENV,
    XCOM_RESULT_PATH,
    _quantities,
    pod_command,
    slots_per_worker,
    trainer_env,
    trainer_pod_spec,
    trainer_resources,
    trainer_spec,
)
from mlplatform.k8s.settings import (
    CredentialsInManifest,
    KubernetesSettings,
    pod_tracking_uri,
    redact_uri,
    uri_has_credentials,
)
from training.spec import RESULT_MARKER

__all__ = [
    "APP_LABEL",
    "APP_NAME",
    "LAUNCHER_CONTAINER",
    "MLFLOW_SECRET_KEYS",
    "MPIJOB_GROUP",
    "MPIJOB_KIND",
    "MPIJOB_NAME_MAX",
    "MPIJOB_PLURAL",
    "MPIJOB_VERSION",
    "MPI_HOSTFILE",
    "MPI_JOB_NAME_LABEL",
    "MPI_JOB_ROLE_LABEL",
    "PIPELINE_LABEL",
    "POD_CONTAINER",
    "RESULT_MARKER",
    "RUN_LABEL",
    "TERMINAL_STATES",
    "WORKER_CONTAINER",
    "XCOM_PATH_ENV",
    "XCOM_RESULT_PATH",
    "CredentialsInManifest",
    "KubernetesSettings",
    "_quantities",
    "dns_label",
    "label_value",
    "launcher_command",
    "launcher_selector",
    "mpijob_manifest",
    "mpijob_name",
    "mpijob_state",
    "parse_result_line",
    "pod_command",
    "pod_tracking_uri",
    "redact_uri",
    "slots_per_worker",
    "trainer_env",
    "trainer_labels",
    "trainer_pod_spec",
    "trainer_resources",
    "trainer_spec",
    "uri_has_credentials",
]
