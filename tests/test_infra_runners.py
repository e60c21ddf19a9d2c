"""Infra validation's runners: the choice, the ``tensorflow/serving`` pod rendered and validated
offline (kubernetes-validate, strict), and the Kubernetes runner end to end against the fake
Kubernetes API (``tests/k8s_fake_api.py``) with the project's TF-Serving-compatible server standing
in for the pod: readiness by gRPC ``GetModelStatus``, requests by gRPC ``Predict``, the pod
deleted afterwards."""

from __future__ import annotations

import kubernetes_validate
import numpy as np
import pytest

from mlplatform.config import ConfigError, load_pipeline, parse_pipeline
from mlplatform.infra_runners import runner_kind
from mlplatform.infra_runners.kubernetes import KubernetesRunner
from mlplatform.k8s import KubernetesSettings
from mlplatform.settings import get_settings
from mlplatform.stages.infra_validate import InfraValidationFailed
from tests.conftest import REPO
from tests.k8s_fake_api import FakeKubernetes
from tests.saved_models import build_scorer, expected_score

K8S_VERSION = "1.31"


def cfg_with(**serving):
    cfg = load_pipeline(REPO / "pipelines" / "demo.yaml")
    return cfg.model_copy(update={"serving": cfg.serving.model_copy(update=serving)})


@pytest.fixture
def k8s_env(mlp_home, monkeypatch):
    for key in ("MLP_K8S_STORAGE_PVC", "MLP_K8S_S3_ENDPOINT_URL", "MLP_K8S_AWS_REGION"):
        monkeypatch.delenv(key, raising=False)
    return monkeypatch


@pytest.mark.parametrize(
    ("runner", "backend", "kind"),
    [
        ("auto", "local", "embedded"),
        ("auto", "kubernetes", "kubernetes"),
        ("embedded", "kubernetes", "embedded"),
        ("kubernetes", "local", "kubernetes"),
    ],
)
def test_the_pipeline_config_chooses_the_runner(k8s_env, runner, backend, kind):
    k8s_env.setenv("MLP_TRAINING_BACKEND", backend)
    assert runner_kind(cfg_with(infra_runner=runner), get_settings()) == kind


def test_an_unknown_runner_is_refused_with_its_line():
    text = (REPO / "pipelines" / "demo.yaml").read_text()
    assert "\nserving:\n" in text
    text = text.replace("\nserving:\n", "\nserving:\n  infra_runner: docker\n", 1)
    with pytest.raises(ConfigError, match=r"serving.infra_runner: .*'auto', 'embedded'"):
        parse_pipeline(text, "p.yaml")


def test_serving_pod_on_the_shared_volume_validates(k8s_env, tmp_path):
    storage = tmp_path / "shared"
    k8s_env.setenv("MLP_STORAGE_URI", str(storage))
    k8s_env.setenv("MLP_K8S_STORAGE_PVC", "mlplatform-runs")
    out_dir = storage / "demo" / "run1" / "infra_validate"
    pod = KubernetesRunner(get_settings()).render(cfg_with(), 3, out_dir)

    assert kubernetes_validate.validate(pod, desired_version=K8S_VERSION, strict=True)
    container = pod["spec"]["containers"][0]
    assert container["image"] == KubernetesSettings().serving_image
    assert container["image"].startswith("tensorflow/serving:")
    assert container["args"] == [
        "--port=8500",
        "--rest_api_port=8501",
        "--model_name=demo",
        f"--model_base_path={out_dir}/tfs/demo",
    ]
    assert {"name": "storage", "mountPath": str(storage), "readOnly": True} in container[
        "volumeMounts"
    ]
    assert pod["spec"]["volumes"][0]["persistentVolumeClaim"] == {
        "claimName": "mlplatform-runs",
        "readOnly": True,
    }
    assert pod["spec"]["restartPolicy"] == "Never" and "envFrom" not in container
    assert pod["metadata"]["labels"]["mlplatform/model-version"] == "demo-3"
    assert pod["metadata"]["name"].startswith("mlp-iv-demo-3-")


def test_serving_pod_on_s3_validates_and_holds_no_secret(k8s_env, tmp_path):
    k8s_env.setenv("MLP_STORAGE_URI", "s3://mlp-bucket/runs")
    k8s_env.setenv("MLP_K8S_S3_ENDPOINT_URL", "http://minio.mlplatform:9000")
    k8s_env.setenv("MLP_K8S_AWS_REGION", "eu-west-1")
    out_dir = tmp_path / "demo" / "run1" / "infra_validate"
    pod = KubernetesRunner(get_settings()).render(cfg_with(), 3, out_dir)

    assert kubernetes_validate.validate(pod, desired_version=K8S_VERSION, strict=True)
    container = pod["spec"]["containers"][0]
    assert container["args"][-1] == (
        "--model_base_path=s3://mlp-bucket/runs/demo/run1/infra_validate/tfs/demo"
    )
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env == {
        "AWS_REGION": "eu-west-1",
        "S3_ENDPOINT": "minio.mlplatform:9000",
        "S3_USE_HTTPS": "0",
    }
    assert container["envFrom"] == [{"secretRef": {"name": "mlplatform-s3"}}]
    assert "volumes" not in pod["spec"]


def test_a_candidate_no_pod_can_read_is_refused_on_one_line(k8s_env, tmp_path):
    k8s_env.setenv("MLP_STORAGE_URI", str(tmp_path / "local"))
    with pytest.raises(InfraValidationFailed) as info:
        KubernetesRunner(get_settings()).render(cfg_with(), 3, tmp_path / "x")
    assert "\n" not in str(info.value) and "MLP_K8S_STORAGE_PVC" in str(info.value)


def test_kubernetes_runner_loads_times_and_tears_down_over_grpc(k8s_env, tmp_path):
    import tensorflow as tf
    from fastapi.testclient import TestClient

    from serving.app import create_app

    storage = tmp_path / "shared"
    k8s_env.setenv("MLP_STORAGE_URI", str(storage))
    k8s_env.setenv("MLP_K8S_STORAGE_PVC", "mlplatform-runs")
    fake = FakeKubernetes().start()
    k8s_env.setenv("AIRFLOW_CONN_K8S_FAKE", fake.connection_uri_env())
    k8s_env.setenv("MLP_K8S_KUBERNETES_CONN_ID", "k8s_fake")
    k8s_env.setenv("MLP_K8S_SERVING_READY_TIMEOUT_SECONDS", "60")
    cfg = cfg_with(model_name="scorer")
    out_dir = storage / "demo" / "run1" / "infra_validate"
    candidate = build_scorer(out_dir / "candidate", w=0.5)
    rows = [{"x": 1.0, "c": "a"}, {"x": 2.0, "c": "neg"}]
    columns = {"x": np.array([1.0, 2.0], np.float32), "c": np.array([b"a", b"neg"])}
    # the "pod": the project's own TF-Serving-compatible server on the staged model base
    app = create_app(out_dir / "tfs", poll_seconds=0.2, grpc_port=0)
    try:
        with TestClient(app):
            runner = KubernetesRunner(get_settings(), grpc_port=app.state.grpc_port)
            with runner.serve(cfg, 1, candidate, out_dir) as served:
                assert len(fake.created_pods) == 1 and fake.deleted_pods == []
                body = served.predict(rows, columns)
                dtypes = served.input_dtypes()
    finally:
        fake.stop()
    np.testing.assert_allclose(
        np.ravel(body["predictions"]), [expected_score(1.0, "a", 0.5), expected_score(2.0, "neg", 0.5)],
        rtol=1e-6,
    )  # fmt: skip
    assert dtypes == {"x": tf.float32, "c": tf.string}
    pod = fake.created_pods[0]
    assert kubernetes_validate.validate(pod, desired_version=K8S_VERSION, strict=True)
    assert fake.deleted_pods == [pod["metadata"]["name"]]  # torn down
    assert (out_dir / "tfs" / "scorer" / "1" / "saved_model.pb").exists()  # TF Serving's layout
