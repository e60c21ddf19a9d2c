"""Names and labels of the platform's Kubernetes objects (trainer pods, MPIJobs, serving pods).

Label values go through the cncf.kubernetes provider's ``make_safe_label_value`` (the function
the KubernetesPodOperator labels its own pods with): <= 63 chars, alphanumeric ends, and a hash
suffix whenever the value had to change, so distinct inputs stay distinct.
"""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlplatform.config import PipelineConfig

APP_LABEL = "app.kubernetes.io/name"
APP_NAME = "mlplatform-trainer"
PIPELINE_LABEL = "mlplatform/pipeline"
RUN_LABEL = "mlplatform/run"
#: ``<name>-worker-<i>`` must stay a DNS-1035 label (<= 63): the mpi-operator rejects longer names
MPIJOB_NAME_MAX = 50


def label_value(text: str) -> str:
    """A valid label value for ``text``: the provider's ``make_safe_label_value`` (imported here,
    lazily: the provider module costs seconds and only renders need it)."""
    from airflow.providers.cncf.kubernetes.pod_generator import make_safe_label_value

    return make_safe_label_value(text)


def dns_label(text: str, max_len: int = 63) -> str:
    """Lowercase DNS-1035 label (``[a-z]([-a-z0-9]*[a-z0-9])?``) made from ``text``.

    Hand-written: the provider's ``create_unique_id`` adds a random suffix, and MPIJob names must
    be the same on every try of a task (that is how a retry re-attaches)."""
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
