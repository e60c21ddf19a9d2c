"""deploy/k8s/: the RBAC manifests validate offline (kubernetes-validate --strict: unknown fields
fail) and grant exactly what the training backend calls; the Airflow Helm chart values use the
chart's documented keys, the platform image and secrets by name only, and agree with the RBAC
manifests, the platform's settings and terraform's names.

The chart itself is not here (no network): its keys are checked against the parameters that the
official chart (1.22) documents for what this file sets, listed below.
"""

from __future__ import annotations

import json
import re
from typing import Any

import kubernetes_validate
import pytest
import yaml

from mlplatform.k8s import KubernetesSettings
from mlplatform.settings import Settings
from tests.conftest import REPO
from tests.deploy_render import unknown_airflow_options
from tests.deploy_scan import checkov_report, describe, under

K8S_VERSION = "1.31"
DEPLOY = REPO / "deploy" / "k8s"
RBAC = DEPLOY / "rbac.yaml"
VALUES = DEPLOY / "airflow-values.yaml"
SHARED_HOME = DEPLOY / "shared-home.yaml"

#: keys of the official Airflow chart (1.22 parameters reference) that the values file may set;
#: a dict value below a key listed with a trailing "*" is free-form (airflow.cfg, annotations ...)
CHART_KEYS = {
    "airflowVersion",
    "images.airflow.repository",
    "images.airflow.tag",
    "images.airflow.pullPolicy",
    "uid",
    "gid",
    "executor",
    "data.metadataSecretName",
    "fernetKeySecretName",
    "apiSecretKeySecretName",
    "jwtSecretName",
    "postgresql.enabled",
    "redis.enabled",
    "pgbouncer.enabled",
    "dags.persistence.enabled",
    "dags.gitSync.enabled",
    "config*",
    "createUserJob.defaultUser.enabled",
    "env",
    "extraEnvFrom",
    "volumes",
    "volumeMounts",
    "workers.serviceAccount.create",
    "workers.serviceAccount.name",
    "workers.serviceAccount.annotations*",
    "workers.resources*",
    "triggerer.serviceAccount.create",
    "triggerer.serviceAccount.name",
    "dagProcessor.enabled",
    "apiServer.replicas",
}
EXECUTORS = {"LocalExecutor", "CeleryExecutor", "KubernetesExecutor", "CeleryKubernetesExecutor"}

#: kubernetes client calls (and KubernetesHook custom-object calls) of operators/ -> the
#: (resource, verb) each needs
API_CALLS = {
    "create_custom_object": ("mpijobs", "create"),
    "get_custom_object": ("mpijobs", "get"),
    "delete_custom_object": ("mpijobs", "delete"),
    "create_namespaced_custom_object": ("mpijobs", "create"),
    "get_namespaced_custom_object": ("mpijobs", "get"),
    "delete_namespaced_custom_object": ("mpijobs", "delete"),
    "patch_namespaced_custom_object": ("mpijobs", "patch"),
    "list_namespaced_custom_object": ("mpijobs", "list"),
    "list_namespaced_pod": ("pods", "list"),
    "read_namespaced_pod": ("pods", "get"),
    "read_namespaced_pod_log": ("pods/log", "get"),
    "delete_namespaced_pod": ("pods", "delete"),
    "create_namespaced_pod": ("pods", "create"),
    "list_namespaced_event": ("events", "list"),
}
#: what the KubernetesPodOperator does with the pod (create, poll, watch, label on finish,
#: delete), its logs, the XCom sidecar (exec) and the failure events
POD_OPERATOR_NEEDS = {
    ("pods", v) for v in ("create", "get", "list", "watch", "patch", "delete")
} | {("pods/log", "get"), ("pods/exec", "create"), ("events", "list")}


@pytest.fixture(scope="module")
def rbac() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(RBAC.read_text()) if doc]


@pytest.fixture(scope="module")
def values() -> dict[str, Any]:
    return yaml.safe_load(VALUES.read_text())


def _by_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def _grants(role: dict) -> set[tuple[str, str]]:
    return {
        (resource, verb)
        for rule in role["rules"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_rbac_manifests_validate_strictly(rbac):
    assert {d["kind"] for d in rbac} == {"Namespace", "ServiceAccount", "Role", "RoleBinding"}
    for doc in rbac:
        assert kubernetes_validate.validate(doc, desired_version=K8S_VERSION, strict=True)


def test_strict_validation_rejects_an_unknown_field(rbac):
    role = dict(_by_kind(rbac, "Role")["mlplatform-trainer-launcher"])
    role["rule"] = role["rules"]  # a typo
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(role, desired_version=K8S_VERSION, strict=True)


def test_trainer_service_account_is_the_platforms(rbac):
    k8s = KubernetesSettings()
    accounts = _by_kind(rbac, "ServiceAccount")
    account = accounts[k8s.service_account]
    assert account["metadata"]["namespace"] == k8s.namespace
    assert account["automountServiceAccountToken"] is False  # the trainer calls no Kubernetes API
    assert k8s.namespace in _by_kind(rbac, "Namespace")
    for role in _by_kind(rbac, "Role").values():
        assert role["metadata"]["namespace"] == k8s.namespace


def test_launcher_role_grants_what_the_operators_call(rbac):
    launcher = _grants(_by_kind(rbac, "Role")["mlplatform-trainer-launcher"])
    sources = "\n".join(p.read_text() for p in (REPO / "operators").glob("*.py"))
    calls = set(re.findall(r"\.(\w+_namespaced_\w+|\w+_custom_object)\(", sources))
    assert {"create_custom_object", "get_namespaced_custom_object"} <= calls  # hook and trigger
    unknown = calls - set(API_CALLS)
    assert not unknown, f"map these calls to RBAC verbs here and grant them: {sorted(unknown)}"
    needed = {API_CALLS[c] for c in calls} | POD_OPERATOR_NEEDS
    assert needed <= launcher, sorted(needed - launcher)
    for resource, _ in launcher:
        assert resource in {"pods", "pods/log", "pods/exec", "events", "mpijobs", "mpijobs/status"}
    mpijob_group = {
        g
        for rule in _by_kind(rbac, "Role")["mlplatform-trainer-launcher"]["rules"]
        if "mpijobs" in rule["resources"]
        for g in rule["apiGroups"]
    }
    from mlplatform.k8s import MPIJOB_GROUP, MPIJOB_PLURAL

    assert mpijob_group == {MPIJOB_GROUP}
    assert (MPIJOB_PLURAL, "create") in launcher


def test_watcher_role_reads_and_deletes_only_on_kill(rbac):
    watcher = _grants(_by_kind(rbac, "Role")["mlplatform-trainer-watcher"])
    # the triggers' on_kill deletes (MPIJobTrigger.delete_job, KubernetesPodTrigger's pod)
    writes = {(r, v) for r, v in watcher if v not in {"get", "list", "watch"}}
    assert writes == {("mpijobs", "delete"), ("pods", "delete")}
    trigger_source = (REPO / "operators" / "mpijob_trigger.py").read_text()
    assert "delete_namespaced_custom_object(" in trigger_source
    assert ("pods/log", "get") in watcher
    assert ("mpijobs", "watch") in watcher


def test_bindings_name_the_chart_service_accounts(rbac, values):
    bindings = _by_kind(rbac, "RoleBinding")
    namespace = "airflow"  # the release namespace of the README's helm command
    expected = {
        "mlplatform-trainer-launcher": values["workers"]["serviceAccount"]["name"],
        "mlplatform-trainer-watcher": values["triggerer"]["serviceAccount"]["name"],
    }
    for binding, account in expected.items():
        subjects = bindings[binding]["subjects"]
        assert subjects == [{"kind": "ServiceAccount", "name": account, "namespace": namespace}]
        assert bindings[binding]["roleRef"]["name"] == binding


def _leaf_keys(node: Any, prefix: str = "") -> list[str]:
    if isinstance(node, dict) and node and not any(prefix == k[:-1] for k in CHART_KEYS):
        return [k for key, value in node.items() for k in _leaf_keys(value, f"{prefix}{key}.")]
    return [prefix.rstrip(".")]


def test_values_use_documented_chart_keys(values):
    documented = {k.rstrip("*") for k in CHART_KEYS}
    free_form = tuple(k[:-1] + "." for k in CHART_KEYS if k.endswith("*"))
    for key in _leaf_keys(values):
        if key in documented or key.startswith(free_form):
            continue
        pytest.fail(f"{key}: not a chart parameter this test knows (typo, or add it to CHART_KEYS)")


def test_values_run_the_platform_image_with_kubernetes_executor(values):
    assert values["executor"] == "KubernetesExecutor" and values["executor"] in EXECUTORS
    assert values["images"]["airflow"]["repository"].endswith("/airflow")
    lock = (REPO / "uv.lock").read_text()
    locked = re.search(r'name = "apache-airflow"\nversion = "([^"]+)"', lock).group(1)
    assert values["airflowVersion"] == locked
    dockerfile = (REPO / "docker" / "airflow.Dockerfile").read_text()
    workdir = re.findall(r"^WORKDIR (\S+)", dockerfile, re.M)[-1]
    assert values["config"]["core"]["dags_folder"] == f"{workdir}/dags"
    assert values["uid"] == 50000 and "USER 50000:0" in dockerfile


def test_values_config_is_airflow_options(values):
    pairs = [(section, option) for section, opts in values["config"].items() for option in opts]
    assert not unknown_airflow_options(pairs)


def test_values_name_secrets_and_hold_none(values):
    for key in ("fernetKeySecretName", "apiSecretKeySecretName", "jwtSecretName"):
        assert re.fullmatch(r"[a-z0-9-]+", values[key]), key
    assert values["data"] == {"metadataSecretName": "airflow-metadata"}
    for literal in ("fernetKey", "apiSecretKey", "jwtSecret", "webserverSecretKey"):
        assert literal not in values
    assert yaml.safe_load(values["extraEnvFrom"]) == [{"secretRef": {"name": "mlplatform-env"}}]


def test_values_env_is_platform_settings(values):
    env = {item["name"]: item["value"] for item in values["env"]}
    settings = {f"MLP_{name.upper()}" for name in Settings.model_fields}
    k8s_fields = {f"MLP_K8S_{name.upper()}" for name in KubernetesSettings.model_fields}
    unknown = {k for k in env if k.startswith("MLP_")} - settings - k8s_fields
    assert not unknown, sorted(unknown)
    k8s = KubernetesSettings()
    assert env["MLP_TRAINING_BACKEND"] == "kubernetes"
    assert env["MLP_K8S_NAMESPACE"] == k8s.namespace
    assert env["MLP_K8S_SERVICE_ACCOUNT"] == k8s.service_account
    assert env["MLP_K8S_S3_SECRET"] == ""  # IRSA
    # how to reach the cluster is the Airflow connection's, read by the provider's hooks
    conn = json.loads(env[f"AIRFLOW_CONN_{k8s.kubernetes_conn_id.upper()}"])
    assert conn == {"conn_type": "kubernetes", "extra": {"in_cluster": True}}


def test_values_buckets_are_terraforms(values):
    """The bucket URIs are terraform's platform_env for its default environment."""
    variables = (REPO / "terraform" / "variables.tf").read_text()
    environment = re.search(r'variable "environment" \{.*?default\s+= "([^"]+)"', variables, re.S)
    outputs = (REPO / "terraform" / "outputs.tf").read_text()
    env = {item["name"]: item["value"] for item in values["env"]}
    name = f"mlplatform-{environment.group(1)}"
    for var, use in (
        ("MLP_STORAGE_URI", "runs"),
        ("MLP_DVC_REMOTE", "dvc"),
        ("MLP_MLFLOW_ARTIFACT_URI", "mlflow"),
    ):
        template = re.search(
            rf'{var}\s+= "s3://\$\{{local\.buckets\["{use}"\]\}}(/[^"]*)"', outputs
        )
        assert template, var
        assert env[var] == f"s3://{name}-{use}{template.group(1)}", var


def test_checkov_passes_the_kubernetes_files():
    report = checkov_report("kubernetes")
    assert not under(report["failed"], "/repo/deploy/"), describe(report["failed"])
    assert len(under(report["passed"], "/repo/deploy/k8s/rbac.yaml")) > 10


def test_shared_home_validates_and_is_the_platform_home(values):
    text = SHARED_HOME.read_text()
    body = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    assert set(re.findall(r"\$\{(\w+)\}", body)) == {"EFS_FILE_SYSTEM_ID"}  # what envsubst fills
    outputs = (REPO / "terraform" / "outputs.tf").read_text()
    assert 'output "efs_file_system_id"' in outputs
    docs = [d for d in yaml.safe_load_all(text.replace("${EFS_FILE_SYSTEM_ID}", "fs-0123456789"))]
    for doc in docs:
        assert kubernetes_validate.validate(doc, desired_version=K8S_VERSION, strict=True)
    claim = _by_kind(docs, "PersistentVolumeClaim")["mlplatform-home"]
    storage_class = _by_kind(docs, "StorageClass")[claim["spec"]["storageClassName"]]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]  # every task pod at once
    assert claim["metadata"]["namespace"] == "airflow"
    assert storage_class["provisioner"] == "efs.csi.aws.com"
    assert storage_class["parameters"]["uid"] == str(values["uid"])
    # the values mount that claim at MLP_HOME in every Airflow container
    env = {item["name"]: item["value"] for item in values["env"]}
    (volume,) = [
        v for v in values["volumes"] if v["persistentVolumeClaim"]["claimName"] == "mlplatform-home"
    ]
    (mount,) = [m for m in values["volumeMounts"] if m["name"] == volume["name"]]
    assert mount["mountPath"] == env["MLP_HOME"]
