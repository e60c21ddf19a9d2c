"""The MPIJob path against a fake Kubernetes API on loopback (``tests/k8s_fake_api.py``).

Nothing of the provider is patched: the operator's ``KubernetesHook`` and the trigger's
``AsyncKubernetesHook`` reach the fake through an Airflow connection (``AIRFLOW_CONN_K8S_FAKE``,
a kubeconfig pointing at it), the launcher's log comes through the provider's ``PodManager``, and
the fake plays the mpi-operator by its published labels and conditions
(``tests/data/mpi_operator_conventions.yaml``), not by the code's constants.
"""

from __future__ import annotations

import asyncio
import importlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowException, TaskDeferred

from mlplatform import k8s
from tests import test_kubernetes_training
from tests.k8s_fake_api import CONVENTIONS, FakeKubernetes, condition, go_bool, status
from tests.test_kubernetes_training import (
    LINEAGE,
    RUN_ID,
    TRAINING_SET,
    crd_validator,
    make_context,
    set_training,
    validate_pod_template,
)

production_env = test_kubernetes_training.production_env  # the same production-like settings
NAME = k8s.mpijob_name("mlp_demo_train", "train", RUN_ID)
NS = "mlplatform"
CREATED = status(condition("Created", "MPIJobCreated"))
RUNNING = status(condition("Created"), condition("Running", "MPIJobRunning"))
SUCCEEDED = status(condition("Created"), condition("Succeeded", "MPIJobSucceeded", "done"))
FAILED = status(
    condition("Created"),
    condition(
        "Failed",
        "BackoffLimitExceeded/Error",
        "Job has reached the specified backoff limit:\n  launcher exited with code 2",
    ),
)
RESULT = {
    "mlflow_run_id": "abc123",
    "mlflow_experiment_id": "7",
    "model_uri": "runs:/abc123/model",
    "mlflow_model_id": "m-42",
    "metrics": {"auc": 0.83},
    "world_size": 16,
    "samples_per_sec": 1234.5,
}
LAUNCHER_LOG = [
    "training tabular_classifier on 10000 rows, world_size=16",
    "[1,0]<stdout>:epoch 1/2 loss=0.52",
    "[1,0]<stdout>:holdout auc=0.8300",
    f"[1,0]<stdout>:MLPLATFORM_RESULT {json.dumps(RESULT)}",
]
FAILED_LOG = [
    "start",
    "[1,0]<stderr>:training.train: error: spec: train_uri: no such file",
    "RuntimeError: Horovod detected that one or more processes exited with non-zero status",
]


@pytest.fixture
def cluster(production_env, monkeypatch):
    """A fake API server (timeline and launcher log set by the test) and the connection to it."""
    servers: list[FakeKubernetes] = []

    def start(timeline: list[dict], log: list[str] = LAUNCHER_LOG) -> FakeKubernetes:
        fake = FakeKubernetes(timeline, log).start()
        servers.append(fake)
        monkeypatch.setenv("AIRFLOW_CONN_K8S_FAKE", fake.connection_uri_env())
        monkeypatch.setenv("MLP_K8S_KUBERNETES_CONN_ID", "k8s_fake")
        monkeypatch.setenv("MLP_K8S_POLL_INTERVAL_SECONDS", "0.01")
        return fake

    yield start
    for fake in servers:
        fake.stop()


def trigger(**kwargs: Any):
    from operators.mpijob_trigger import MPIJobTrigger

    args = {"name": NAME, "namespace": NS, "kubernetes_conn_id": "k8s_fake", "poll_interval": 0.01}
    return MPIJobTrigger(**{**args, **kwargs})


def first_event(trig) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        async for event in trig.run():
            return event.payload
        raise AssertionError("the trigger ended without an event")

    return asyncio.run(asyncio.wait_for(run(), timeout=60))


def job_gets(fake: FakeKubernetes) -> int:
    path = f"/apis/kubeflow.org/v2beta1/namespaces/{NS}/mpijobs/{NAME}"
    return sum(1 for method, p, _ in fake.requests if method == "GET" and p == path)


def operator(**kwargs: Any):
    from operators.kubernetes_training import HorovodKubernetesTrainOperator

    return HorovodKubernetesTrainOperator(
        pipeline="demo", training_set=TRAINING_SET, lineage=LINEAGE, **kwargs
    )


def deferred(op, context) -> TaskDeferred:
    with pytest.raises(TaskDeferred) as info:
        op.execute(context)
    return info.value


# -- the trigger --------------------------------------------------------------------------------


def test_trigger_serialize_round_trips():
    trig = trigger(startup_timeout=900, submitted_at=1_700_000_000.5, on_kill_action="keep_pod")
    classpath, kwargs = trig.serialize()
    assert classpath == "operators.mpijob_trigger.MPIJobTrigger"
    module, _, name = classpath.rpartition(".")  # how the triggerer re-creates it
    again = getattr(importlib.import_module(module), name)(**json.loads(json.dumps(kwargs)))
    assert again.serialize() == (classpath, kwargs)
    assert kwargs["submitted_at"] == 1_700_000_000.5 and kwargs["kubernetes_conn_id"] == "k8s_fake"


def test_trigger_polls_the_conditions_until_the_job_succeeds(cluster):
    fake = cluster([CREATED, RUNNING, RUNNING, SUCCEEDED])
    fake.add_job(
        {"metadata": {"name": NAME, "namespace": NS}}, [CREATED, RUNNING, RUNNING, SUCCEEDED]
    )
    event = first_event(trigger())
    assert event == {
        "status": "success",
        "name": NAME,
        "namespace": NS,
        "state": "Succeeded",
        "reason": "MPIJobSucceeded",
        "message": "done",
        "last_log_time": None,
    }  # no logging_interval: the launcher log was not read
    assert job_gets(fake) == 4  # one poll per status, through the async hook's connection


def test_trigger_rides_out_a_transient_api_error_with_the_providers_retry(cluster):
    fake = cluster([])
    fake.add_job({"metadata": {"name": NAME, "namespace": NS}}, [RUNNING, SUCCEEDED])
    fake.job_get_faults = [503]  # retried (generic_api_retry: 5xx is transient), not an event
    event = first_event(trigger())
    assert event["status"] == "success"
    assert job_gets(fake) == 3 and fake.job_get_faults == []


def test_trigger_reports_a_failed_job_on_one_line(cluster):
    fake = cluster([])
    fake.add_job({"metadata": {"name": NAME, "namespace": NS}}, [RUNNING, FAILED])
    event = first_event(trigger())
    assert event["status"] == "failed" and event["reason"] == "BackoffLimitExceeded/Error"
    assert event["message"] == (
        "Job has reached the specified backoff limit: launcher exited with code 2"
    )


def test_trigger_times_out_a_job_that_never_starts(cluster):
    fake = cluster([])
    fake.add_job({"metadata": {"name": NAME, "namespace": NS}}, [CREATED])
    event = first_event(trigger(startup_timeout=0.05))
    assert event["status"] == "timeout" and event["state"] == "Created"
    assert "not running after 0s (state Created;" in event["message"]
    assert job_gets(fake) >= 1


def test_trigger_reports_a_job_that_is_gone(cluster):
    cluster([])
    event = first_event(trigger())
    assert (
        event["status"] == "error" and "404" in event["message"] and "deleted?" in event["message"]
    )


def test_trigger_on_kill_deletes_the_job_unless_kept(cluster):
    fake = cluster([])
    fake.add_job({"metadata": {"name": NAME, "namespace": NS}}, [RUNNING])
    asyncio.run(trigger(on_kill_action="keep_pod").on_kill())
    assert fake.deleted == []
    asyncio.run(trigger().on_kill())
    assert fake.deleted == [(NAME, "Foreground")]


# -- the operator -------------------------------------------------------------------------------


def test_operator_submits_the_mpijob_and_defers(cluster, production_env):
    set_training(production_env, workers=2, gpus_per_worker=4)
    fake = cluster([CREATED, RUNNING, SUCCEEDED])
    context = make_context()
    defer = deferred(operator(), context)

    assert defer.method_name == "execute_mpijob_complete"
    classpath, kwargs = defer.trigger.serialize()
    assert classpath == "operators.mpijob_trigger.MPIJobTrigger"
    assert kwargs["name"] == NAME and kwargs["namespace"] == NS
    assert kwargs["kubernetes_conn_id"] == "k8s_fake" and kwargs["startup_timeout"] == 900
    assert len(fake.created) == 1 and not fake.deleted  # submitted through the hook, once
    job = fake.created[0]
    crd_validator().validate(job)
    for replica in job["spec"]["mpiReplicaSpecs"].values():
        validate_pod_template(replica["template"])
    assert job["spec"]["mpiReplicaSpecs"]["Worker"]["replicas"] == 2
    assert context["ti"].xcom == {"mpijob_name": NAME, "mpijob_namespace": NS}


def test_operator_resumes_reads_the_launcher_log_and_cleans_up(cluster, production_env, capsys):
    set_training(production_env, workers=2, gpus_per_worker=4)
    fake = cluster([CREATED, RUNNING, RUNNING, SUCCEEDED])
    # no live log (logging_interval=None): the resumed task writes the whole launcher log
    op, context = operator(logging_interval=None), make_context()
    event = first_event(deferred(op, context).trigger)
    assert event["status"] == "success" and event["last_log_time"] is None

    capsys.readouterr()
    result = op.execute_mpijob_complete(context, event)
    task_log = capsys.readouterr().out  # Airflow's structlog writes the task log to stdout here
    assert result == {
        "mlflow_run_id": "abc123",
        "model_uri": "models:/m-42",
        "metrics": {"auc": 0.83},
        "world_size": 16,
        "samples_per_sec": 1234.5,
        "tags": result["tags"],
    }
    assert result["tags"]["data_version"] == LINEAGE[0]["data_version"]
    assert context["ti"].xcom["mlflow_run_url"].endswith("/#/experiments/7/runs/abc123")
    # the launcher pod was found by the mpi-operator's labels and its log read with timestamps
    pod = CONVENTIONS["launcher_pod_name"].format(job=NAME, suffix="x7k2p")
    logs = [q for m, p, q in fake.requests if p == f"/api/v1/namespaces/{NS}/pods/{pod}/log"]
    assert logs and logs[0]["container"] == "launcher" and go_bool(logs[0]["timestamps"])
    assert "[launcher] [1,0]<stdout>:holdout auc=0.8300" in task_log
    # on_finish_action=delete_succeeded_pod: the succeeded job goes, after its log was read
    assert fake.deleted == [(NAME, "Foreground")]


def test_the_launcher_log_follows_the_running_job_and_the_resume_writes_only_the_rest(
    cluster, production_env, monkeypatch, capsys, caplog
):
    """While the job runs the trigger writes the launcher's lines into the task log (the
    provider's AsyncPodManager, ``sinceSeconds`` reads); the resumed task writes only the lines
    after the trigger's ``last_log_time`` and still reads the result from the whole log."""
    monkeypatch.setenv("MLP_K8S_LOGGING_INTERVAL_SECONDS", "1")
    set_training(production_env, workers=2, gpus_per_worker=4)
    fake = cluster([CREATED, RUNNING, RUNNING, SUCCEEDED], LAUNCHER_LOG[:3])
    written = datetime.now(UTC) - timedelta(seconds=5)  # the first lines, before the first poll
    fake.log_times = [written + timedelta(milliseconds=10 * i) for i in range(3)]
    op, context = operator(), make_context()
    trig = deferred(op, context).trigger
    assert trig.serialize()[1]["logging_interval"] == 1
    capsys.readouterr()
    caplog.clear()
    event = first_event(trig)
    while_running = capsys.readouterr().out + caplog.text
    assert "[launcher] [1,0]<stdout>:holdout auc=0.8300" in while_running
    assert "MLPLATFORM_RESULT" not in while_running
    assert event["status"] == "success" and event["last_log_time"]
    reads = [q for m, p, q in fake.requests if p.endswith("/log")]
    assert reads and reads[0]["container"] == "launcher"

    fake.launcher_log.append(LAUNCHER_LOG[3])  # the result line, written after that read
    fake.log_times.append(datetime.now(UTC))
    caplog.clear()
    result = op.execute_mpijob_complete(context, event)
    on_resume = capsys.readouterr().out + caplog.text
    assert "[launcher] [1,0]<stdout>:MLPLATFORM_RESULT" in on_resume
    assert "holdout auc" not in on_resume  # not written twice
    assert result["mlflow_run_id"] == "abc123" and result["model_uri"] == "models:/m-42"


@pytest.mark.parametrize(
    ("action", "deleted"), [("delete_succeeded_pod", []), ("delete_pod", [NAME])]
)
def test_failed_job_fails_the_task_on_one_line_and_is_cleaned_by_policy(
    cluster, production_env, action, deleted
):
    set_training(production_env, workers=2, gpus_per_worker=4)
    fake = cluster([CREATED, RUNNING, FAILED], FAILED_LOG)
    op, context = operator(on_finish_action=action), make_context()
    event = first_event(deferred(op, context).trigger)
    with pytest.raises(AirflowException) as info:
        op.execute_mpijob_complete(context, event)
    message = str(info.value)
    assert "\n" not in message
    assert message == (
        f"train: MPIJob {NS}/{NAME} failed (BackoffLimitExceeded/Error): Job has reached the "
        "specified backoff limit: launcher exited with code 2; trainer error: spec: train_uri: "
        "no such file"
    )
    assert [name for name, _ in fake.deleted] == deleted


def test_a_job_that_never_starts_times_out_and_is_deleted(cluster, production_env, monkeypatch):
    set_training(production_env, workers=2, gpus_per_worker=4)
    fake = cluster([CREATED])
    op, context = operator(startup_timeout_seconds=0), make_context()
    event = first_event(deferred(op, context).trigger)
    with pytest.raises(
        AirflowException, match=r"^train: MPIJob mlplatform/.* not running after 0s"
    ):
        op.execute_mpijob_complete(context, event)
    assert fake.deleted == [(NAME, "Foreground")]
    assert not [p for _, p, _ in fake.requests if p.endswith("/log")]  # nothing ran: no log read


def test_success_without_a_result_line_fails(cluster, production_env):
    set_training(production_env, workers=2, gpus_per_worker=4)
    fake = cluster([RUNNING, SUCCEEDED], ["no result here"])
    op, context = operator(), make_context()
    event = first_event(deferred(op, context).trigger)
    with pytest.raises(AirflowException, match="has no 'MLPLATFORM_RESULT {json}' line"):
        op.execute_mpijob_complete(context, event)
    assert fake.deleted == [(NAME, "Foreground")]


def test_a_refused_submission_fails_on_one_line(cluster, production_env):
    set_training(production_env, workers=2, gpus_per_worker=4)
    fake = cluster([])
    fake.create_fault = (
        422,
        "Invalid",
        'MPIJob.kubeflow.org "x" is invalid:\n spec.slotsPerWorker: Invalid value: -1',
    )
    with pytest.raises(AirflowException) as info:
        operator().execute(make_context())
    assert str(info.value) == (
        f"train: could not submit MPIJob {NS}/{NAME}: 422 Unprocessable Entity: MPIJob.kubeflow.org "
        '"x" is invalid: spec.slotsPerWorker: Invalid value: -1'
    )
    assert fake.created == []


def test_a_retry_reattaches_to_a_running_job(cluster, production_env):
    set_training(production_env, workers=2, gpus_per_worker=4)
    fake = cluster([])
    fake.add_job({"metadata": {"name": NAME, "namespace": NS}, "status": RUNNING})
    defer = deferred(operator(), make_context())
    assert fake.created == [] and fake.deleted == []  # followed, not created again
    assert defer.trigger.name == NAME


def test_a_retry_replaces_a_failed_job(cluster, production_env):
    set_training(production_env, workers=2, gpus_per_worker=4)
    fake = cluster([CREATED])
    fake.add_job({"metadata": {"name": NAME, "namespace": NS}, "status": FAILED})
    deferred(operator(), make_context())
    assert fake.deleted == [(NAME, "Foreground")] and len(fake.created) == 1


# -- reading a job back -------------------------------------------------------------------------


def test_mpijob_state_reads_the_operators_conditions():
    assert k8s.mpijob_state({}) == ("Pending", "", "")
    assert k8s.mpijob_state({"status": RUNNING})[0] == "Running"
    state, reason, message = k8s.mpijob_state({"status": FAILED})
    assert (state, reason) == ("Failed", "BackoffLimitExceeded/Error") and "\n" not in message
    suspended = status(condition("Created"), condition("Suspended", "MPIJobSuspended"))
    assert k8s.mpijob_state({"status": suspended})[0] == "Suspended"
    assert set(CONVENTIONS["condition_types"]) >= {"Succeeded", "Failed", "Running", "Created"}
    assert k8s.parse_result_line('[0]<stdout>:MLPLATFORM_RESULT {"a": 1}') == {"a": 1}
    assert k8s.parse_result_line("MLPLATFORM_RESULT not-json") is None


def test_train_xcom_needs_a_result():
    from operators.kubernetes_training import train_xcom

    assert train_xcom({**RESULT, "mlflow_model_id": None}, {})["model_uri"] == "runs:/abc123/model"
    with pytest.raises(AirflowException, match="/airflow/xcom/return.json"):
        train_xcom(None, {})
