"""The Kubernetes training backend: the trainer image under ``horovodrun`` in a pod, or an MPIJob.

:class:`HorovodKubernetesTrainOperator` is a KubernetesPodOperator. At execute time it loads the
pipeline config, builds the trainer's spec and the pod from :func:`mlplatform.k8s.trainer_pod_spec`
(``pod_template_dict``) and lets the provider do the rest: create or re-attach to the pod, defer
to the triggerer while it runs, stream its log, read the result from the XCom sidecar
(``/airflow/xcom/return.json``, written by the trainer's rank 0) and delete the pod if it
succeeded. With ``training.workers > 1`` it submits the Kubeflow MPIJob of
:func:`mlplatform.k8s.mpijob_manifest` instead, follows it until it succeeds or fails, streams the
launcher's log into the task log and parses the trainer's ``MLPLATFORM_RESULT`` line from it.

Both paths push the XCom of ``LocalHorovodTrainOperator``: ``mlflow_run_id``, ``model_uri``,
``metrics``, ``world_size``, ``samples_per_sec``, ``tags``.

Import cost: this module imports the provider's operator module at the top (a real subclass needs
its base class), which costs ≈3.6 s on top of ``airflow.sdk`` on the 2-core dev machine (the
``kubernetes`` and ``kubernetes_asyncio`` clients). DAG files should import it only when
``MLP_TRAINING_BACKEND=kubernetes``. Still no TensorFlow or MLflow here.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException
from kubernetes.client.exceptions import ApiException

from mlplatform import k8s as k8s_objects
from mlplatform.k8s import KubernetesSettings
from operators.caching import cache_key, remember, reuse
from operators.links import MlflowRunLink
from operators.training import TrainCaching, train_xcom
from training.spec import TrainSpec, read_error_line

_log = logging.getLogger(__name__)


class MPIJobFailed(RuntimeError):
    """The MPIJob ended in ``Failed``; ``str()`` is one line: job, reason, message, last log line."""


def _ts_key(stamp: str) -> tuple[str, int]:
    """Sortable key of a log line's RFC3339Nano timestamp: the seconds as text, the fraction as
    nanoseconds (Go trims trailing zeros, so ``.5`` and ``.25`` do not compare as text)."""
    seconds, _, fraction = stamp.rstrip("Z").partition(".")
    return seconds, int(fraction[:9].ljust(9, "0")) if fraction.isdigit() else 0


class MPIJobRunner:
    """Submit one MPIJob (or re-attach to it) and follow it to its end, streaming the launcher log.

    ``custom_api`` and ``core_api`` are a ``kubernetes.client.CustomObjectsApi`` and a
    ``CoreV1Api`` (or objects with the same methods). Re-attach: a create answered with 409
    Conflict means a previous try (or a worker that died) already submitted this name; a job still
    running or already succeeded is followed, a failed one is deleted (foreground, so that its pods
    are gone) and created again — that is what an Airflow retry asks for.

    Launcher log lines are read with timestamps and emitted once each, even when the stream is
    re-opened (after ``log_read_timeout`` seconds of silence, a dropped connection, or a launcher
    restart). :attr:`result` is the last ``MLPLATFORM_RESULT`` JSON seen. A job that is not
    ``Running`` within ``startup_timeout`` seconds (no GPUs free, an image that does not pull)
    fails the follow with one line; the job itself is left for the next try to re-attach to.
    """

    def __init__(
        self,
        custom_api: Any,
        core_api: Any,
        manifest: dict[str, Any],
        *,
        log: Any = _log,
        poll_interval: float = 10.0,
        log_read_timeout: float = 300.0,
        startup_timeout: float | None = None,
        delete_timeout: float = 600.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.custom = custom_api
        self.core = core_api
        self.manifest = manifest
        self.name: str = manifest["metadata"]["name"]
        self.namespace: str = manifest["metadata"]["namespace"]
        self.log = log
        self.poll_interval = poll_interval
        self.log_read_timeout = log_read_timeout
        self.startup_timeout = startup_timeout
        self.delete_timeout = delete_timeout
        self._sleep = sleep
        self._clock = clock
        self.result: dict[str, Any] | None = None
        self.last_line = ""
        self.trainer_error = ""  # the trainer's own ``training.train: error:`` line, if any
        # launcher pod name -> (newest line's timestamp key, clock at the end of the read)
        self._seen: dict[str, tuple[tuple[str, int] | None, float]] = {}

    # -- the custom object ---------------------------------------------------------------------

    def _api_kwargs(self) -> dict[str, str]:
        return {
            "group": k8s_objects.MPIJOB_GROUP,
            "version": k8s_objects.MPIJOB_VERSION,
            "namespace": self.namespace,
            "plural": k8s_objects.MPIJOB_PLURAL,
        }

    def get(self) -> dict[str, Any]:
        return self.custom.get_namespaced_custom_object(name=self.name, **self._api_kwargs())

    def _create(self) -> dict[str, Any]:
        return self.custom.create_namespaced_custom_object(body=self.manifest, **self._api_kwargs())

    def submit(self) -> dict[str, Any]:
        """Create the MPIJob, or re-attach to the one of the same name (see the class doc)."""
        try:
            job = self._create()
        except ApiException as exc:
            if exc.status != 409:
                raise
        else:
            self.log.info("submitted MPIJob %s/%s", self.namespace, self.name)
            return job
        job = self.get()
        state, reason, message = k8s_objects.mpijob_state(job)
        if state != "Failed":
            self.log.info("re-attaching to MPIJob %s/%s (%s)", self.namespace, self.name, state)
            return job
        self.log.info(
            "MPIJob %s/%s exists and failed (%s: %s): deleting it to run again",
            self.namespace, self.name, reason, message,
        )  # fmt: skip
        self.delete(wait=True)
        job = self._create()
        self.log.info("submitted MPIJob %s/%s", self.namespace, self.name)
        return job

    def delete(self, *, wait: bool = False) -> None:
        """Delete the MPIJob with its pods (foreground); with ``wait``, until it is gone."""
        try:
            self.custom.delete_namespaced_custom_object(
                name=self.name, propagation_policy="Foreground", **self._api_kwargs()
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
            return
        deadline = self._clock() + self.delete_timeout
        while wait:
            try:
                self.get()
            except ApiException as exc:
                if exc.status == 404:
                    return
                raise
            if self._clock() > deadline:
                raise MPIJobFailed(
                    f"train: MPIJob {self.namespace}/{self.name} still exists "
                    f"{self.delete_timeout:.0f}s after deleting it"
                )
            self._sleep(self.poll_interval)

    # -- the launcher's log --------------------------------------------------------------------

    def _launcher_pod(self) -> Any | None:
        pods = self.core.list_namespaced_pod(
            namespace=self.namespace, label_selector=k8s_objects.launcher_selector(self.name)
        ).items
        if not pods:
            return None

        def created(pod: Any) -> datetime:
            return pod.metadata.creation_timestamp or datetime.min.replace(tzinfo=UTC)

        return max(pods, key=created)  # a launcher retry (backoffLimit > 0) is a new pod

    def _emit(self, message: str) -> None:
        self.log.info("[launcher] %s", message)
        if message.strip():
            self.last_line = message.strip()
        if (error := read_error_line(message)) is not None:
            self.trainer_error = error
        if (result := k8s_objects.parse_result_line(message)) is not None:
            self.result = result

    def stream_launcher_log(self, *, follow: bool) -> bool:
        """Emit the launcher's new log lines; with ``follow``, block while it runs (until it ends,
        the connection drops or ``log_read_timeout`` seconds pass without a line). Returns whether
        a launcher pod exists yet.

        Lines carry their timestamps: a re-opened stream asks for the seconds since the last read
        (``sinceSeconds``, with a margin) and drops lines not newer than the last one emitted.
        """
        pod = self._launcher_pod()
        if pod is None:
            return False
        phase = pod.status.phase if pod.status else None
        if phase in (None, "Pending"):
            return True
        name = pod.metadata.name
        cutoff, read_end = self._seen.get(name, (None, None))
        since = None if read_end is None else math.ceil(self._clock() - read_end) + 10
        newest = cutoff
        resp = None
        try:
            resp = self.core.read_namespaced_pod_log(
                name=name,
                namespace=self.namespace,
                container=k8s_objects.LAUNCHER_CONTAINER,
                follow=follow and phase == "Running",
                timestamps=True,
                since_seconds=since,
                _preload_content=False,
                _request_timeout=(30, self.log_read_timeout),
            )
            for raw in resp:
                text = raw.decode("utf-8", "backslashreplace") if isinstance(raw, bytes) else raw
                for line in text.splitlines():
                    stamp, _, message = line.partition(" ")
                    key = _ts_key(stamp)
                    if cutoff is not None and key <= cutoff:
                        continue  # emitted before the stream was re-opened
                    newest = key if newest is None else max(newest, key)
                    self._emit(message)
        except Exception as exc:  # noqa: BLE001 - read timeouts, dropped streams: poll, re-open
            self.log.debug("launcher log stream of %s ended: %r", name, exc)
        finally:
            release = getattr(resp, "release_conn", None)
            if callable(release):
                release()
            self._seen[name] = (newest, self._clock())
        return True

    # -- follow to the end ---------------------------------------------------------------------

    def wait(self) -> dict[str, Any]:
        """Follow the job until ``Succeeded`` (returns the job) or ``Failed`` (raises
        :class:`MPIJobFailed` with a one-line message)."""
        last = None
        started = self._clock()
        while True:
            job = self.get()
            state, reason, message = k8s_objects.mpijob_state(job)
            if (
                self.startup_timeout is not None
                and state in ("Pending", "Created")
                and self._clock() - started > self.startup_timeout
            ):
                raise MPIJobFailed(
                    f"train: MPIJob {self.namespace}/{self.name} not running after "
                    f"{self.startup_timeout:.0f}s (state {state}; see kubectl describe of its pods)"
                )
            if state != last:
                self.log.info(
                    "MPIJob %s/%s: %s%s", self.namespace, self.name, state,
                    f" ({message})" if message else "",
                )  # fmt: skip
                last = state
            if state in ("Succeeded", "Failed"):
                break
            self.stream_launcher_log(follow=True)
            self._sleep(self.poll_interval)
        self.stream_launcher_log(follow=False)  # the tail written since the last read
        if state == "Failed":
            detail = f"; last launcher line: {self.last_line}" if self.last_line else ""
            if self.trainer_error:
                detail = f"; trainer error: {self.trainer_error}"
            raise MPIJobFailed(
                " ".join(
                    f"train: MPIJob {self.namespace}/{self.name} failed ({reason or 'Failed'}): "
                    f"{message or 'no message'}{detail}".split()
                )
            )
        return job

    def run(self) -> dict[str, Any]:
        """Submit (or re-attach), follow to the end, return the trainer's result."""
        self.submit()
        self.wait()
        if self.result is None:
            raise MPIJobFailed(
                f"train: MPIJob {self.namespace}/{self.name} succeeded but its launcher log has no "
                f"'{k8s_objects.RESULT_MARKER} {{json}}' line (launcher pod gone? see its ttl)"
            )
        return self.result


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
    * namespace, connection, service account, ``startup_timeout_seconds`` and the poll interval
      from :class:`~mlplatform.k8s.KubernetesSettings` (``MLP_K8S_*``), read when the DAG is
      parsed: they must be the same when a deferred task resumes on another machine. The pod
      itself is built from the settings read at execute time.

    The MPIJob path runs on the worker (synchronously) for the whole training; its name is
    :func:`mlplatform.k8s.mpijob_name` (same on every try), which is how it re-attaches.

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
        kwargs.setdefault("in_cluster", k8s.in_cluster)
        kwargs.setdefault("config_file", k8s.kube_config_path)
        kwargs.setdefault("cluster_context", k8s.cluster_context)
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
        self._mpijob: MPIJobRunner | None = None

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
            self.training_set,
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
            self.training_set,
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

    def mpijob_clients(self) -> tuple[Any, Any]:
        """``(CustomObjectsApi, CoreV1Api)`` of this operator's Kubernetes connection."""
        return self.hook.custom_object_client, self.hook.core_v1_client

    def execute_mpijob(
        self, context: Any, settings: Any, cfg: Any, k8s: KubernetesSettings
    ) -> dict[str, Any]:
        """Run the MPIJob of this task instance to its end and return the train XCom."""
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
        custom, core = self.mpijob_clients()
        self._mpijob = MPIJobRunner(
            custom,
            core,
            manifest,
            log=self.log,
            poll_interval=k8s.poll_interval_seconds,
            log_read_timeout=k8s.log_read_timeout_seconds,
            startup_timeout=self.startup_timeout_seconds,
        )
        ti.xcom_push(key="mpijob_name", value=name)
        ti.xcom_push(key="mpijob_namespace", value=manifest["metadata"]["namespace"])
        try:
            raw = self._mpijob.run()
        except MPIJobFailed as exc:
            raise AirflowException(str(exc)) from None
        return self._finish(context, raw)

    def on_kill(self) -> None:
        if self._mpijob is None:
            return super().on_kill()
        self._killed = True
        if self.on_kill_action.value == "keep_pod":
            self.log.info("keeping MPIJob %s (on_kill_action=keep_pod)", self._mpijob.name)
            return None
        try:
            self._mpijob.delete()
        except ApiException:
            self.log.exception("unable to delete MPIJob %s", self._mpijob.name)
        return None
