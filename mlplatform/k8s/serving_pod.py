"""The ``tensorflow/serving`` pod that infra validation starts next to a candidate model.

A pure builder, like the trainer pod: one container ``tfserving`` running the official image with
``--model_name=<name> --model_base_path=<base>/<name>`` (TF Serving then loads the newest
``<base>/<name>/<version>/``), gRPC on :data:`GRPC_PORT` and REST on :data:`REST_PORT`. The
candidate reaches the pod in one of two ways:

* ``MLP_K8S_STORAGE_PVC``: the shared storage volume, mounted read-only at the storage path (the
  same path as on the Airflow worker, as for the trainer pod);
* an ``s3://`` model base: TF Serving's own S3 file system, with the S3 credentials from
  ``envFrom`` the ``MLP_K8S_S3_SECRET`` Secret and the endpoint/region as literals (TF Serving reads
  ``S3_ENDPOINT``/``S3_USE_HTTPS``/``AWS_REGION``).

The readiness that counts is the runner's gRPC ``GetModelStatus`` (AVAILABLE), not a probe: TF
Serving opens its port before the model has loaded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from mlplatform.k8s.names import label_value
from mlplatform.k8s.pod_spec import _common_pod_spec, _env_from, _quantities
from mlplatform.k8s.settings import KubernetesSettings

if TYPE_CHECKING:
    from mlplatform.config import PipelineConfig

GRPC_PORT = 8500
REST_PORT = 8501
SERVING_CONTAINER = "tfserving"
SERVING_APP = "mlplatform-infra-validation"


def _s3_env(k8s: KubernetesSettings) -> list[dict[str, str]]:
    env = []
    if k8s.aws_region:
        env.append({"name": "AWS_REGION", "value": k8s.aws_region})
    if k8s.s3_endpoint_url:
        endpoint = urlsplit(k8s.s3_endpoint_url)
        env.append({"name": "S3_ENDPOINT", "value": endpoint.netloc or k8s.s3_endpoint_url})
        env.append({"name": "S3_USE_HTTPS", "value": "0" if endpoint.scheme == "http" else "1"})
    return env


def serving_pod(
    cfg: PipelineConfig,
    version: int,
    model_base: str,
    *,
    pod_name: str,
    k8s: KubernetesSettings,
    storage_mount: str | None = None,
    grpc_port: int = GRPC_PORT,
) -> dict[str, Any]:
    """The ``v1/Pod`` manifest serving ``<model_base>/<cfg.serving.model_name>/<version>``.

    ``storage_mount``: the path at which the ``MLP_K8S_STORAGE_PVC`` volume is mounted read-only
    (``model_base`` is under it); None for an ``s3://`` model base. Labels: app
    ``mlplatform-infra-validation``, pipeline, model version. ``restartPolicy: Never``: a model
    that crashes the server fails the validation, it is not retried.
    """
    name = cfg.serving.model_name
    container: dict[str, Any] = {
        "name": SERVING_CONTAINER,
        "image": k8s.serving_image,
        "imagePullPolicy": k8s.image_pull_policy,
        "args": [
            f"--port={grpc_port}",
            f"--rest_api_port={REST_PORT}",
            f"--model_name={name}",
            f"--model_base_path={model_base.rstrip('/')}/{name}",
        ],
        "ports": [
            {"name": "grpc", "containerPort": grpc_port},
            {"name": "http", "containerPort": REST_PORT},
        ],
    }
    if k8s.serving_resources:
        res = _quantities(k8s.serving_resources, "serving_resources")
        container["resources"] = {"limits": res, "requests": dict(res)}
    spec: dict[str, Any] = {**_common_pod_spec(k8s), "restartPolicy": "Never"}
    if storage_mount is not None:
        if not k8s.storage_pvc:
            raise ValueError("serving_pod: storage_mount needs MLP_K8S_STORAGE_PVC")
        container["volumeMounts"] = [
            {"name": "storage", "mountPath": storage_mount, "readOnly": True}
        ]
        spec["volumes"] = [
            {
                "name": "storage",
                "persistentVolumeClaim": {"claimName": k8s.storage_pvc, "readOnly": True},
            }
        ]
    else:
        if env := _s3_env(k8s):
            container["env"] = env
        if env_from := _env_from(k8s):
            container["envFrom"] = env_from
    if k8s.cpu_node_selector:
        spec["nodeSelector"] = dict(k8s.cpu_node_selector)
    spec["containers"] = [container]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name,
            "namespace": k8s.namespace,
            "labels": {
                "app.kubernetes.io/name": SERVING_APP,
                "app.kubernetes.io/part-of": "mlplatform",
                "mlplatform/pipeline": label_value(cfg.name),
                "mlplatform/model-version": label_value(f"{name}-{version}"),
            },
        },
        "spec": spec,
    }
