"""The Kubernetes training backend: the trainer image under ``horovodrun`` in a pod, or an MPIJob.

:class:`HorovodKubernetesTrainOperator` is a KubernetesPodOperator. At execute time it loads the
pipeline config, builds the trainer's spec and the pod from :func:`mlplatform.k8s.trainer_pod_spec`
(``pod_template_dict``) and lets the provider do the rest: create or re-attach to the pod, defer
to the triggerer while it runs, stream its log, read the result from the XCom sidecar
(``/airflow/xcom/return.json``, written by the trainer's rank 0) and delete the pod if it
succeeded. With ``training.workers > 1`` it submits the Kubeflow MPIJob of
:func:`mlplatform.k8s.mpijob_manifest` instead through the provider's hook
(:class:`operators.mpijob.MPIJobClient`), defers to :class:`operators.mpijob_trigger.MPIJobTrigger`
while it runs, and on its end reads the launcher's log with the provider's PodManager, parsing the
trainer's ``MLPLATFORM_RESULT`` line from it.

Both paths push the XCom of ``LocalHorovodTrainOperator``: ``mlflow_run_id``, ``model_uri``,
``metrics``, ``world_size``, ``samples_per_sec``, ``tags``.

Import cost: this module imports the provider's operator module at the top (a real subclass needs
its base class), which costs ≈3.6 s on top of ``airflow.sdk`` on the 2-core dev machine (the
``kubernetes`` and ``kubernetes_asyncio`` clients). DAG files should import it only when
``MLP_TRAINING_BACKEND=kubernetes``. Still no TensorFlow or MLflow here.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any, cast

from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook
from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.providers.cncf.kubernetes.utils.pod_manager import OnFinishAction
from airflow.sdk.exceptions import AirflowException, AirflowFailException
from kubernetes.client.exceptions import ApiException

from mlplatform import k8s as k8s_objects
from mlplatform.k8s import KubernetesSettings
from operators.caching import cache_key, remember, reuse
from operators.links import MlflowRunLink
from operators.mpijob import MPIJobClient, MPIJobFailed, api_error_line
from operators.mpijob_trigger import MPIJobTrigger
from operators.training import TrainCaching, train_xcom
from training.spec import TrainSpec

_log = logging.getLogger(__name__)

__all__ = ["HorovodKubernetesTrainOperator", "MPIJobFailed", "train_xcom"]


class HorovodKubernetesTrainOperator(TrainCaching, KubernetesPodOperator):
    """Train on Kubernetes: one pod with ``N`` GPUs, or a Kubeflow MPIJob when ``workers > 1``.

    ``pipeline`` names the pipeline config, ``training_set`` is the training-set task's XCom
    (``train_uri``, ``holdout_uri``) and ``lineage`` a list of upstream XComs whose lineage keys
    become MLflow tags, as for ``LocalHorovodTrainOperator``; the XCom is the same too
    (``mlflow_run_id``, ``model_uri``, ``metrics``, ``world_size``, ``samples_per_sec``, ``tags``).

    Defaults (any KubernetesPodOperator argument overrides them):

    * ``deferrable=True``: the pod runs while the task waits in the triggerer, not on a worker;
    * ``durable=True`` (Airflow 3.3's name for ``reattach_on_restart=True``, which it deprecates;
      ``self.reattach_on_restart`` mirrors it): a retry or a restarted worker re-attaches to the
      running pod instead of starting a second training;
    * ``on_finish_action="delete_succeeded_pod"``: failed pods stay for ``kubectl logs/describe``;
    * ``get_logs=True`` and ``logging_interval`` (``MLP_K8S_LOGGING_INTERVAL_SECONDS``, 60): see
      the comment in ``__init__``; ``log_events_on_failure=True``;
    * ``do_xcom_push=True``: the provider's sidecar reads ``/airflow/xcom/return.json``;
    * ``termination_message_policy="FallbackToLogsOnError"``: a failed pod's last log lines
      become the task's error message; ``log_pod_spec_on_failure=False`` keeps that message short;
    * namespace, connection id, service account, ``startup_timeout_seconds`` and the poll
      interval from :class:`~mlplatform.k8s.KubernetesSettings` (``MLP_K8S_*``), read when the
      DAG is parsed: they must be the same when a deferred task resumes on another machine. How
      to reach the cluster (in-cluster, kubeconfig, context) is the Airflow connection's. The pod
      itself is built from the settings read at execute time.

    The MPIJob path defers too: submit (or re-attach: the name is
    :func:`mlplatform.k8s.mpijob_name`, the same on every try), then
    :class:`~operators.mpijob_trigger.MPIJobTrigger` polls it in the triggerer and
    :meth:`execute_mpijob_complete` reads the result. ``on_finish_action`` is its cleanup policy
    too: ``delete_succeeded_pod`` deletes a succeeded job (after its launcher log is read) and
    keeps a failed one for ``kubectl logs/describe`` (until ``ttlSecondsAfterFinished``);
    ``delete_pod`` deletes both; ``keep_pod`` neither. A job that never started within
    ``startup_timeout_seconds`` is deleted unless ``keep_pod``: its pending pods would otherwise
    start later and train with nobody waiting for the result.

    Step caching as for the local backend (:class:`~operators.training.TrainCaching`): a training
    set, model and trainer code already trained on reuse that training, and no pod is started.
    """

    stage = "train"
    template_fields = (*KubernetesPodOperator.template_fields, "training_set", "lineage")
    operator_extra_links = (MlflowRunLink(),)
    ui_color = "#f3eafb"

    def __init__(
        self,
        *,
        pipeline: str,
        training_set: Any,
        lineage: list[Any] | None = None,
        **kwargs: Any,
    ) -> None:
        k8s = KubernetesSettings()
        kwargs.setdefault("task_id", self.stage)
        kwargs.setdefault("name", f"mlp-{pipeline}-train")
        kwargs.setdefault("namespace", k8s.namespace)
        kwargs.setdefault("kubernetes_conn_id", k8s.kubernetes_conn_id)
        kwargs.setdefault("service_account_name", k8s.service_account)
        kwargs.setdefault("startup_timeout_seconds", k8s.startup_timeout_seconds)
        kwargs.setdefault("deferrable", True)
        if "reattach_on_restart" not in kwargs:
            kwargs.setdefault("durable", True)
        kwargs.setdefault("on_finish_action", "delete_succeeded_pod")
        kwargs.setdefault("do_xcom_push", True)
        kwargs.setdefault("termination_message_policy", "FallbackToLogsOnError")
        kwargs.setdefault("log_pod_spec_on_failure", False)
        kwargs.setdefault("log_events_on_failure", True)
        # Logs for a run of hours. Deferred without a logging_interval, the provider shows nothing
        # until the pod ends and then replays the whole log in one read (which the kubelet may
        # already have rotated: containerLogMaxSize, 10 MiB by default). With logging_interval the
        # trigger itself reads the lines of the last interval every N seconds (sinceSeconds, no
        # return to a worker) and the final resume reads only the rest, so the task log follows
        # the training and each read stays small (large reads are what exhaust the triggerer's
        # memory, apache/airflow#73044). The sync path (deferrable=False) follows the stream and
        # re-opens it when it drops. poll_interval: pod status checks; 10 s is plenty for hours.
        kwargs.setdefault("get_logs", True)
        kwargs.setdefault("logging_interval", k8s.logging_interval_seconds)
        kwargs.setdefault("poll_interval", k8s.poll_interval_seconds)
        super().__init__(**kwargs)
        self.pipeline = pipeline
        self.training_set = training_set
        self.lineage = lineage or []
        self._final_result: dict[str, Any] | None = None
        self._mpijob: MPIJobClient | None = None

    # -- shared --------------------------------------------------------------------------------

    def _load(self) -> tuple[Any, Any]:
        from mlplatform.config import find_pipeline, load_pipeline
        from mlplatform.settings import get_settings

        settings = get_settings()
        return settings, load_pipeline(find_pipeline(self.pipeline, settings.pipelines_dir))

    def _tags(self, context: Any, settings: Any, cfg: Any) -> dict[str, str]:
        from mlplatform.lineage import training_config_hash, training_run_tags

        return training_run_tags(
            self.lineage,
            dict(self.training_set),
            settings.repo_root,
            cfg.config_hash(),
            context["run_id"],
            training_config_hash(cfg),
        )

    def trainer_spec(
        self, context: Any, settings: Any, cfg: Any, k8s: KubernetesSettings
    ) -> TrainSpec:
        """The trainer's spec for this run; output under ``<storage>/<pipeline>/<run>/train``.
        No tracking URI in it when the pods get it from ``MLP_K8S_MLFLOW_SECRET``; raises
        :class:`~mlplatform.k8s.CredentialsInManifest` for one with credentials and no secret."""
        from mlplatform.storage import run_key

        run_id = context["run_id"]
        return k8s_objects.trainer_spec(
            cfg,
            dict(self.training_set),
            output_dir=f"{settings.storage.rstrip('/')}/{cfg.name}/{run_key(run_id)}/{self.stage}",
            tracking_uri=k8s_objects.pod_tracking_uri(settings, k8s),
            artifact_location=f"{settings.artifact_uri}/{cfg.name}",
            run_name=f"{cfg.name}-{run_id}",
            tags=self._tags(context, settings, cfg),
        )

    def _train_rows(self) -> int | None:
        """The training set's ``train_rows`` (its XCom), for ``processes_per_worker: auto``."""
        rows = self.training_set.get("train_rows") if isinstance(self.training_set, dict) else None
        return rows if isinstance(rows, int) else None

    def _finish(self, context: Any, raw: dict[str, Any] | None) -> dict[str, Any]:
        settings, cfg = self._load()
        result = train_xcom(raw, self._tags(context, settings, cfg))
        result = remember(
            self, cfg, settings, context, cache_key(self, cfg, settings, context), result
        )
        run_id = result["mlflow_run_id"]
        if run_id:
            context["ti"].xcom_push(
                key=MlflowRunLink.xcom_key, value=self._mlflow_run_url(settings, cfg, raw or {})
            )
        self._write_summary(settings, cfg, context, result)
        self.log.info("train done: %s", result)
        return result

    @staticmethod
    def _mlflow_run_url(settings: Any, cfg: Any, raw: dict[str, Any]) -> str:
        experiment = raw.get("mlflow_experiment_id")
        if experiment:  # no MLflow import, no round trip
            url = settings.mlflow_ui_url
            return f"{url}/#/experiments/{experiment}/runs/{raw['mlflow_run_id']}"
        try:
            return MlflowRunLink.url(settings, cfg.name, raw.get("mlflow_run_id"))
        except Exception as exc:  # noqa: BLE001 - a link is not worth failing a training for
            _log.warning("no MLflow run link: %s", exc)
            return ""

    def _write_summary(self, settings: Any, cfg: Any, context: Any, result: dict) -> None:
        """``summary.json`` for ``mlplatform run`` when storage is a local/shared directory."""
        from mlplatform.storage import run_key, to_path, write_summary

        try:
            out = to_path(settings.storage) / cfg.name / run_key(context["run_id"]) / self.stage
        except ValueError:  # s3:// storage: the CLI's summaries are local-only for now
            return
        started = getattr(context["ti"], "start_date", None)  # kept across deferrals
        seconds = (datetime.now(tz=UTC) - started).total_seconds() if started else 0.0
        try:
            out.mkdir(parents=True, exist_ok=True)
            write_summary(out, self.stage, seconds, result)
        except OSError as exc:
            _log.warning("could not write %s/summary.json: %s", out, exc)

    # -- the single pod ------------------------------------------------------------------------

    def build_trainer_pod(
        self,
        context: Any,
        settings: Any | None = None,
        cfg: Any | None = None,
        k8s: KubernetesSettings | None = None,
    ) -> dict[str, Any]:
        """Build the trainer pod manifest for ``context``, set it as ``pod_template_dict`` (which
        ``build_pod_request_obj`` merges with this operator's own settings) and return it."""
        if settings is None or cfg is None:
            settings, cfg = self._load()
        k8s = k8s or KubernetesSettings()
        spec = self.trainer_spec(context, settings, cfg, k8s)
        self.pod_template_dict = k8s_objects.trainer_pod_spec(
            cfg,
            spec,
            settings=settings,
            k8s=k8s,
            run_id=context["run_id"],
            xcom=self.do_xcom_push,
            train_rows=self._train_rows(),
        )
        return self.pod_template_dict

    def execute(self, context: Any) -> Any:
        """Run the single pod (deferring) or the MPIJob. A credential that would become a
        literal of the manifest fails the task without retries, before anything is submitted."""
        settings, cfg = self._load()
        cached = reuse(self, cfg, settings, context, cache_key(self, cfg, settings, context))
        if cached is not None:
            self._write_summary(settings, cfg, context, cached)
            return cached
        k8s = KubernetesSettings()
        try:
            if cfg.training.workers > 1:
                return self.execute_mpijob(context, settings, cfg, k8s)
            self.build_trainer_pod(context, settings, cfg, k8s)
        except k8s_objects.CredentialsInManifest as exc:
            raise AirflowFailException(str(exc)) from None
        # deferrable: raises TaskDeferred here, and the task resumes in trigger_reentry
        raw = super().execute(context)
        if self._final_result is not None:  # the pod had already finished: no deferral happened
            return self._final_result
        return self._finish(context, raw)

    def trigger_reentry(self, context: Any, event: dict[str, Any]) -> Any:
        raw = super().trigger_reentry(context, event)
        self._final_result = self._finish(context, raw)
        return self._final_result

    # -- the MPIJob ----------------------------------------------------------------------------

    def mpijob_client(self, name: str, namespace: str) -> MPIJobClient:
        """The MPIJob's calls through this operator's hook (its Kubernetes connection)."""
        hook = cast(KubernetesHook, self.hook)  # the provider builds a KubernetesHook
        return MPIJobClient(hook, name, namespace, log=self.log, poll_interval=self.poll_interval)

    def execute_mpijob(
        self, context: Any, settings: Any, cfg: Any, k8s: KubernetesSettings
    ) -> dict[str, Any]:
        """Submit (or re-attach to) the MPIJob of this task instance and defer until it ends."""
        ti = context["ti"]
        name = k8s_objects.mpijob_name(
            ti.dag_id, ti.task_id, context["run_id"], getattr(ti, "map_index", -1)
        )
        spec = self.trainer_spec(context, settings, cfg, k8s)
        manifest = k8s_objects.mpijob_manifest(
            cfg,
            spec,
            settings=settings,
            k8s=k8s,
            name=name,
            run_id=context["run_id"],
            train_rows=self._train_rows(),
        )
        if self.namespace:
            manifest["metadata"]["namespace"] = self.namespace
        namespace = manifest["metadata"]["namespace"]
        self._mpijob = self.mpijob_client(name, namespace)
        try:
            self._mpijob.submit(manifest)
        except ApiException as exc:  # RBAC, the CRD's validation, a missing mpi-operator ...
            raise AirflowException(
                f"train: could not submit {self._mpijob.where}: {api_error_line(exc)}"
            ) from None
        ti.xcom_push(key="mpijob_name", value=name)
        ti.xcom_push(key="mpijob_namespace", value=namespace)
        self.defer(
            trigger=MPIJobTrigger(
                name=name,
                namespace=namespace,
                kubernetes_conn_id=self.kubernetes_conn_id,
                poll_interval=self.poll_interval,
                startup_timeout=self.startup_timeout_seconds,
                submitted_at=time.time(),
                on_kill_action=self.on_kill_action.value,
                in_cluster=self.in_cluster,
                cluster_context=self.cluster_context,
                config_file=self.config_file,
                logging_interval=self.logging_interval if self.get_logs else None,
            ),
            method_name="execute_mpijob_complete",
        )

    def _cleanup_mpijob(self, client: MPIJobClient, status: str) -> None:
        """Delete the job as ``on_finish_action`` says (see the class doc)."""
        action = OnFinishAction(self.on_finish_action)
        delete = {
            "success": action != OnFinishAction.KEEP_POD,
            "failed": action in (OnFinishAction.DELETE_POD, OnFinishAction.DELETE_ACTIVE_POD),
            "timeout": action != OnFinishAction.KEEP_POD,
        }.get(status, False)
        if delete:
            try:
                client.delete()
            except ApiException as exc:
                self.log.warning("could not delete %s: %s", client.where, exc.reason or exc.status)

    def execute_mpijob_complete(self, context: Any, event: dict[str, Any]) -> dict[str, Any]:
        """Resume after :class:`MPIJobTrigger`'s event: read the launcher log, clean up by policy,
        return the train XCom, or fail the task with one line."""
        client = self.mpijob_client(event["name"], event["namespace"])
        self._mpijob = client
        status = event.get("status")
        if status in ("success", "failed"):
            try:
                launcher = client.read_launcher_log(
                    KubernetesSettings().mpi_ttl_seconds_after_finished,
                    since=event.get("last_log_time"),
                )
            except ApiException as exc:
                raise AirflowException(
                    f"train: {client.where} ended ({status}) but its launcher log could not be "
                    f"read: {api_error_line(exc)}"
                ) from None
        self._cleanup_mpijob(client, str(status))
        if status == "success":
            if launcher.result is None:
                raise AirflowException(
                    f"train: {client.where} succeeded but its launcher log has no "
                    f"'{k8s_objects.RESULT_MARKER} {{json}}' line (launcher pod gone? see its ttl)"
                )
            return self._finish(context, launcher.result)
        if status == "failed":
            reason, message = event.get("reason") or "Failed", event.get("message") or "no message"
            raise AirflowException(
                " ".join(
                    f"train: {client.where} failed ({reason}): {message}{launcher.detail()}".split()
                )
            )
        raise AirflowException(" ".join(f"train: {event.get('message') or event}".split()))

    def on_kill(self) -> None:
        if self._mpijob is None:
            return super().on_kill()
        self._killed = True
        if self.on_kill_action.value == "keep_pod":
            self.log.info("keeping %s (on_kill_action=keep_pod)", self._mpijob.where)
            return None
        try:
            self._mpijob.delete()
        except ApiException:
            self.log.exception("unable to delete %s", self._mpijob.where)
        return None
