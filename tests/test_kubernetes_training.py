"""The Kubernetes training backend without a cluster.

The pod the operator would create is rendered through the KubernetesPodOperator's own
``build_pod_request_obj`` and validated with kubernetes-validate (strict: unknown fields fail);
the MPIJob is checked against the mpi-operator's published CRD schema (``tests/data``) and its pod
templates with kubernetes-validate. Submitting and following an MPIJob: ``tests/test_mpijob.py``.
"""

from __future__ import annotations

import copy
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import jsonschema
import kubernetes_validate
import pytest
import yaml
from airflow.providers.cncf.kubernetes.pod_generator import make_safe_label_value
from kubernetes.client import ApiClient

from mlplatform import k8s
from mlplatform.config import ConfigError, TrainingConfig, load_pipeline, parse_pipeline
from mlplatform.settings import get_settings
from tests.conftest import REPO

K8S_VERSION = "1.31"
RUN_ID = "manual__2026-03-01T12:00:00.123456+00:00"
TRAINING_SET = {
    "train_uri": "s3://mlp-bucket/runs/demo/r1/training_set/train.parquet",
    "holdout_uri": "s3://mlp-bucket/runs/demo/r1/training_set/holdout.parquet",
    "training_set_uri": "s3://mlp-bucket/runs/demo/r1/training_set/training_set.parquet",
}
LINEAGE = [{"data_version": "132a373544697ddbaaf7c46902f38cca", "ignored": 1}, {"validation": "ok"}]
SECRETISH = re.compile(r"SECRET|PASSWORD|TOKEN|ACCESS_KEY|CREDENTIAL", re.I)
CRD_SCHEMA = REPO / "tests" / "data" / "mpijob_v2beta1_schema.yaml"


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture
def production_env(mlp_home, pipelines_dir, monkeypatch):
    """Production-like settings (MLflow server, S3 storage, MinIO endpoint)."""
    monkeypatch.setenv("MLP_MLFLOW_TRACKING_URI", "http://mlflow.mlplatform:5000")
    monkeypatch.setenv("MLP_MLFLOW_ARTIFACT_URI", "s3://mlp-bucket/mlartifacts")
    monkeypatch.setenv("MLP_STORAGE_URI", "s3://mlp-bucket/runs")
    monkeypatch.setenv("MLP_K8S_S3_ENDPOINT_URL", "http://minio.mlplatform:9000")
    monkeypatch.setenv("MLP_K8S_AWS_REGION", "eu-west-1")
    for key in (
        "MLP_K8S_NAMESPACE",
        "MLP_K8S_GPU_NODE_SELECTOR",
        "MLP_K8S_S3_SECRET",
        "MLP_K8S_MLFLOW_SECRET",
        "MLP_K8S_MLFLOW_TRACKING_URI",
    ):
        monkeypatch.delenv(key, raising=False)
    return pipelines_dir


def set_training(pipelines_dir: Path, **training) -> None:
    """Rewrite the demo pipeline's ``training:`` section."""
    path = pipelines_dir / "demo.yaml"
    raw = yaml.safe_load(path.read_text())
    raw["training"] = {**raw["training"], **training}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))


def demo_cfg(**training):
    cfg = load_pipeline(REPO / "pipelines" / "demo.yaml")
    return cfg.model_copy(
        update={"training": TrainingConfig(**{"image": "reg/trainer:1", **training})}
    )


class FakeTI:
    dag_id = "mlp_demo_train"
    task_id = "train"
    map_index = -1
    try_number = 1

    def __init__(self) -> None:
        self.xcom: dict[str, object] = {}
        self.start_date = datetime.now(tz=UTC)

    def xcom_push(self, key: str, value: object) -> None:
        self.xcom[key] = value


def make_context() -> dict:
    return {"ti": FakeTI(), "run_id": RUN_ID, "dag": SimpleNamespace()}


def make_operator(**kwargs):
    from operators.kubernetes_training import HorovodKubernetesTrainOperator

    return HorovodKubernetesTrainOperator(
        pipeline="demo", training_set=TRAINING_SET, lineage=LINEAGE, **kwargs
    )


def rendered_pod(op, context) -> dict:
    """The pod the operator would create, in the API's JSON form."""
    op.build_trainer_pod(context)
    pod = op.build_pod_request_obj(context, dry_run=True)
    return ApiClient().sanitize_for_serialization(pod)


def env_of(container: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def assert_no_literal_secrets(container: dict) -> None:
    for item in container.get("env", []):
        assert not (SECRETISH.search(item["name"]) and "value" in item), item
    assert container.get("envFrom") == [{"secretRef": {"name": "mlplatform-s3"}}]


def spec_arg(command: list[str]) -> dict:
    assert command[-2] == "--spec-json"
    return json.loads(command[-1])


# -- the operator -------------------------------------------------------------------------------


def test_operator_is_a_kubernetes_pod_operator_with_production_defaults(production_env):
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from airflow.providers.cncf.kubernetes.utils.pod_manager import OnFinishAction
    from airflow.sdk import DAG

    from operators.kubernetes_training import HorovodKubernetesTrainOperator

    assert issubclass(HorovodKubernetesTrainOperator, KubernetesPodOperator)
    with DAG("mlp_demo_train", schedule=None, default_args={"pipeline": "demo"}):
        op = HorovodKubernetesTrainOperator(training_set=TRAINING_SET, lineage=LINEAGE)
    assert op.task_id == "train" and op.pipeline == "demo"
    assert op.deferrable is True
    assert op.reattach_on_restart is True and op.durable is True
    assert op.on_finish_action == OnFinishAction.DELETE_SUCCEEDED_POD
    assert op.get_logs is True and op.logging_interval == 60 and op.log_events_on_failure is True
    assert op.do_xcom_push is True
    assert op.service_account_name == "mlplatform-trainer" and op.namespace == "mlplatform"
    assert op.startup_timeout_seconds == 900
    assert {"training_set", "lineage"} <= set(op.template_fields)
    assert set(KubernetesPodOperator.template_fields) <= set(op.template_fields)


def test_gpu_pod_validates_and_carries_gpus_shm_env_and_labels(production_env):
    set_training(
        production_env,
        gpus_per_worker=4,
        image="reg/trainer:1",
        resources={"cpu": "16", "memory": "64Gi"},
    )
    context = make_context()
    obj = rendered_pod(make_operator(), context)

    assert kubernetes_validate.validate(obj, desired_version=K8S_VERSION, strict=True)
    spec = obj["spec"]
    base, sidecar = spec["containers"]
    assert base["name"] == "base" and sidecar["name"] == "airflow-xcom-sidecar"
    assert base["image"] == "reg/trainer:1" and base["imagePullPolicy"] == "IfNotPresent"
    assert base["command"][:8] == [
        "horovodrun", "-np", "4", "-H", "localhost:4", "python", "-m", "training.train",
    ]  # fmt: skip
    trainer = spec_arg(base["command"])
    assert trainer["train_uri"] == TRAINING_SET["train_uri"]
    assert (
        trainer["output_dir"]
        == f"s3://mlp-bucket/runs/demo/{RUN_ID.replace(':', '_').replace('+', '_')}/train"
    )
    assert trainer["mlflow"]["tracking_uri"] == "http://mlflow.mlplatform:5000"
    assert trainer["mlflow"]["artifact_location"] == "s3://mlp-bucket/mlartifacts/demo"
    assert trainer["mlflow"]["tags"]["data_version"] == LINEAGE[0]["data_version"]
    assert trainer["mlflow"]["tags"]["airflow_run_id"] == RUN_ID
    assert "ignored" not in trainer["mlflow"]["tags"]

    assert base["resources"] == {
        "limits": {"cpu": "16", "memory": "64Gi", "nvidia.com/gpu": "4"},
        "requests": {"cpu": "16", "memory": "64Gi"},
    }
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert spec["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["dshm"] == {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}}
    assert {"name": "dshm", "mountPath": "/dev/shm"} in base["volumeMounts"]
    assert {"name": "xcom", "mountPath": "/airflow/xcom"} in base["volumeMounts"]  # KPO's sidecar
    assert spec["serviceAccountName"] == "mlplatform-trainer"
    assert spec["restartPolicy"] == "Never"
    assert base["terminationMessagePolicy"] == "FallbackToLogsOnError"

    env = env_of(base)
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow.mlplatform:5000"
    assert env["AWS_DEFAULT_REGION"] == "eu-west-1"
    assert (
        env["MLFLOW_S3_ENDPOINT_URL"] == env["AWS_ENDPOINT_URL"] == "http://minio.mlplatform:9000"
    )
    assert env["NCCL_DEBUG"] == "WARN"
    assert env["MLPLATFORM_XCOM_PATH"] == "/airflow/xcom/return.json"
    assert_no_literal_secrets(base)

    labels = obj["metadata"]["labels"]
    assert labels["app.kubernetes.io/name"] == "mlplatform-trainer"
    assert labels["mlplatform/pipeline"] == "demo"
    # the provider's make_safe_label_value: ":" and "+" are not label characters, so a hash suffix
    assert labels["mlplatform/run"] == make_safe_label_value(RUN_ID)
    assert labels["mlplatform/run"].startswith("manual__2026-03-01T120000.123456")
    assert (
        labels["dag_id"] == "mlp_demo_train" and labels["task_id"] == "train"
    )  # KPO's re-attach keys
    assert obj["metadata"]["namespace"] == "mlplatform"
    assert obj["metadata"]["name"].startswith("mlp-demo-train-")


def test_cpu_pod_runs_gloo_without_gpu_scheduling(production_env, monkeypatch):
    monkeypatch.setenv("MLP_K8S_CPU_NODE_SELECTOR", '{"pool": "cpu"}')
    set_training(production_env, gpus_per_worker=0, processes_per_worker=3, resources={"cpu": "6"})
    obj = rendered_pod(make_operator(), make_context())

    assert kubernetes_validate.validate(obj, desired_version=K8S_VERSION, strict=True)
    base = obj["spec"]["containers"][0]
    assert base["command"][:7] == [
        "horovodrun",
        "-np",
        "3",
        "--gloo",
        "-H",
        "localhost:3",
        "python",
    ]
    assert base["resources"] == {"limits": {"cpu": "6"}, "requests": {"cpu": "6"}}
    assert obj["spec"]["nodeSelector"] == {"pool": "cpu"}
    assert not obj["spec"].get("tolerations")


def test_bad_resource_quantity_is_refused_by_field(production_env):
    # the pipeline config refuses it, with its line (kubernetes.utils.parse_quantity decides)
    text = (
        (REPO / "pipelines" / "demo.yaml")
        .read_text()
        .replace("  image: mlplatform/trainer:latest", "  image: x\n  resources: {memory: lots}")
    )
    with pytest.raises(
        ConfigError, match=r"p.yaml:30: training.resources.memory: not a Kubernetes quantity"
    ):
        parse_pipeline(text, "p.yaml")
    # and so do the builders, for quantities that come from the settings
    with pytest.raises(ValueError, match=r"launcher_resources.cpu: not a Kubernetes quantity"):
        k8s._quantities({"cpu": "two"}, "launcher_resources")
    assert k8s._quantities({"cpu": "1.5", "memory": "512Mi"}, "x") == {
        "cpu": "1.5",
        "memory": "512Mi",
    }


# -- the MPIJob ---------------------------------------------------------------------------------


def _closed(schema):
    """The CRD schema with unknown fields refused (as ``kubectl apply --validate=strict``)."""
    if isinstance(schema, dict):
        out = {k: _closed(v) for k, v in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_closed(v) for v in schema]
    return schema


def crd_validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(_closed(yaml.safe_load(CRD_SCHEMA.read_text())))


def validate_pod_template(template: dict) -> None:
    kubernetes_validate.validate(
        {
            "apiVersion": "v1",
            "kind": "PodTemplate",
            "metadata": {"name": "t"},
            "template": template,
        },
        desired_version=K8S_VERSION,
        strict=True,
    )


def test_mpijob_manifest_fits_the_crd_and_the_pod_schema(production_env):
    cfg = demo_cfg(workers=3, gpus_per_worker=8, resources={"cpu": "32", "memory": "256Gi"})
    spec = k8s.trainer_spec(
        cfg, TRAINING_SET, output_dir="s3://b/o", tracking_uri="http://mlflow:5000",
        artifact_location="s3://b/a", run_name="r", tags={},
    )  # fmt: skip
    name = k8s.mpijob_name("mlp_demo_train", "train", RUN_ID)
    job = k8s.mpijob_manifest(cfg, spec, settings=get_settings(), name=name, run_id=RUN_ID)

    crd_validator().validate(job)
    replicas = job["spec"]["mpiReplicaSpecs"]
    for template in (replicas["Launcher"]["template"], replicas["Worker"]["template"]):
        validate_pod_template(template)

    assert job["apiVersion"] == "kubeflow.org/v2beta1" and job["kind"] == "MPIJob"
    assert job["spec"]["slotsPerWorker"] == 8
    assert job["spec"]["runPolicy"] == {
        "cleanPodPolicy": "Running", "backoffLimit": 0, "ttlSecondsAfterFinished": 86400,
    }  # fmt: skip
    # the mpi-operator's own validation (pkg/apis/kubeflow/validation): launcher replicas 1,
    # restart policies Never/OnFailure, and "<name>-worker-<last>" a DNS-1035 label
    assert replicas["Launcher"]["replicas"] == 1 and replicas["Worker"]["replicas"] == 3
    assert {r["restartPolicy"] for r in replicas.values()} <= {"Never", "OnFailure"}
    assert re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", f"{name}-worker-2")

    launcher = replicas["Launcher"]["template"]["spec"]["containers"][0]
    assert launcher["command"][:8] == [
        "horovodrun", "-np", "24", "--hostfile", "/etc/mpi/hostfile", "python", "-m", "training.train",
    ]  # fmt: skip
    assert spec_arg(launcher["command"]) == spec.model_dump(exclude_none=True)
    assert "nvidia.com/gpu" not in json.dumps(launcher["resources"])
    assert_no_literal_secrets(launcher)

    worker_pod = replicas["Worker"]["template"]["spec"]
    worker = worker_pod["containers"][0]
    assert "command" not in worker  # the mpi-operator runs sshd in workers
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == "8"
    assert worker_pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert worker_pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert {"name": "dshm", "mountPath": "/dev/shm"} in worker["volumeMounts"]
    assert worker_pod["serviceAccountName"] == "mlplatform-trainer"
    assert env_of(worker)["NCCL_DEBUG"] == "WARN"
    assert_no_literal_secrets(worker)
    assert job["metadata"]["labels"]["mlplatform/pipeline"] == "demo"

    misspelled = copy.deepcopy(job)
    misspelled["spec"]["slotPerWorker"] = misspelled["spec"].pop("slotsPerWorker")
    with pytest.raises(jsonschema.ValidationError, match="slotPerWorker"):
        crd_validator().validate(misspelled)


def test_names_and_labels_are_deterministic_and_dns_safe():
    long_dag = "mlp_" + "very_long_pipeline_name_" * 5 + "train"
    a = k8s.mpijob_name(long_dag, "train", RUN_ID)
    assert a == k8s.mpijob_name(long_dag, "train", RUN_ID)
    assert a != k8s.mpijob_name(long_dag, "train", RUN_ID.replace("12:00", "13:00"))
    assert len(a) <= k8s.MPIJOB_NAME_MAX and re.fullmatch(r"[a-z][-a-z0-9]*[a-z0-9]", a)
    assert k8s.mpijob_name("9_dag", "t", "r").startswith("mlp-9-dag-t-")
    value = k8s.label_value("scheduled__" + "2026-01-01T00:00:00+00:00" * 4)
    assert len(value) <= 63 and re.fullmatch(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?", value)


def test_shared_storage_pvc_is_mounted_at_the_storage_path(production_env, monkeypatch, tmp_path):
    shared = tmp_path / "shared-runs"
    monkeypatch.setenv("MLP_STORAGE_URI", str(shared))
    monkeypatch.setenv("MLP_K8S_STORAGE_PVC", "mlplatform-runs")
    obj = rendered_pod(make_operator(), make_context())
    assert kubernetes_validate.validate(obj, desired_version=K8S_VERSION, strict=True)
    assert {"name": "storage", "persistentVolumeClaim": {"claimName": "mlplatform-runs"}} in obj[
        "spec"
    ]["volumes"]
    mounts = obj["spec"]["containers"][0]["volumeMounts"]
    assert {"name": "storage", "mountPath": str(shared)} in mounts
    monkeypatch.setenv("MLP_STORAGE_URI", "s3://bucket/runs")
    with pytest.raises(
        ValueError, match="MLP_K8S_STORAGE_PVC needs MLP_STORAGE_URI to be a shared local path"
    ):
        rendered_pod(make_operator(), make_context())
