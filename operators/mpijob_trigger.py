"""The trigger that follows an MPIJob while its task is deferred (no worker slot held for hours).

:class:`MPIJobTrigger` runs in the triggerer. Every ``poll_interval`` seconds it reads the MPIJob
through :class:`~airflow.providers.cncf.kubernetes.hooks.kubernetes.AsyncKubernetesHook` (the
connection ``kubernetes_conn_id``; the call is wrapped in the provider's ``generic_api_retry``:
409/429/5xx and dropped connections are retried with backoff, ``Retry-After`` honoured) and reads
its state from the status conditions (:func:`mlplatform.k8s.mpijob.mpijob_state`). It fires one
event, a dict with ``status``, ``name``, ``namespace``, ``state``, ``reason`` and a one-line
``message``:

* ``success`` / ``failed``: the job reached ``Succeeded`` / ``Failed``;
* ``timeout``: still ``Pending``/``Created`` ``startup_timeout`` seconds after ``submitted_at``
  (no GPUs free, an image that does not pull);
* ``error``: the API refused for good (the job was deleted: 404; RBAC: 403).

Every event also carries ``last_log_time`` (ISO, or None). With ``logging_interval`` set, the
trigger writes the launcher's new log lines into the task log while the job runs (every
``logging_interval`` seconds, through the provider's
:class:`~airflow.providers.cncf.kubernetes.utils.pod_manager.AsyncPodManager`, as the
provider's own pod trigger does: ``sinceSeconds`` reads that stop short of the current second, so
no line is written twice), and ``last_log_time`` says where the resumed task goes on reading.

A user who marks the deferred task failed or clears it (Airflow >= 3.3 calls :meth:`on_kill`)
deletes the job with its pods, unless ``on_kill_action`` is ``keep_pod``. A triggerer restart does
not: the trigger is re-created from :meth:`serialize` and goes on polling.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import datetime
from functools import cached_property
from typing import Any

import pendulum
from airflow.providers.cncf.kubernetes.hooks.kubernetes import AsyncKubernetesHook
from airflow.providers.cncf.kubernetes.kubernetes_helper_functions import generic_api_retry
from airflow.providers.cncf.kubernetes.utils.pod_manager import AsyncPodManager
from airflow.triggers.base import BaseTrigger, TriggerEvent
from kubernetes_asyncio.client import CoreV1Api, CustomObjectsApi
from kubernetes_asyncio.client.exceptions import ApiException

from mlplatform.k8s.mpijob import (
    LAUNCHER_CONTAINER,
    MPIJOB_GROUP,
    MPIJOB_PLURAL,
    MPIJOB_VERSION,
    TERMINAL_STATES,
    launcher_selector,
    mpijob_state,
)


def parse_log_time(value: str | None) -> pendulum.DateTime | None:
    """The ``last_log_time`` of an event (ISO text, JSON-safe) as the provider's log readers
    take it."""
    return pendulum.instance(datetime.fromisoformat(value)) if value else None


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


class MPIJobTrigger(BaseTrigger):
    """Poll one MPIJob's status conditions until it ends, times out starting, or disappears."""

    def __init__(
        self,
        *,
        name: str,
        namespace: str,
        kubernetes_conn_id: str | None = None,
        poll_interval: float = 10.0,
        startup_timeout: float | None = None,
        submitted_at: float | None = None,
        on_kill_action: str = "delete_pod",
        in_cluster: bool | None = None,
        cluster_context: str | None = None,
        config_file: str | None = None,
        logging_interval: float | None = None,
        last_log_time: str | None = None,
    ) -> None:
        super().__init__()
        self.name = name
        self.namespace = namespace
        self.kubernetes_conn_id = kubernetes_conn_id
        self.poll_interval = poll_interval
        self.startup_timeout = startup_timeout
        self.submitted_at = time.time() if submitted_at is None else submitted_at
        self.on_kill_action = on_kill_action
        self.in_cluster = in_cluster
        self.cluster_context = cluster_context
        self.config_file = config_file
        self.logging_interval = logging_interval
        self.last_log_time = last_log_time
        self._fired = False

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Classpath and the keyword arguments that re-create this trigger in the triggerer."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "name": self.name,
                "namespace": self.namespace,
                "kubernetes_conn_id": self.kubernetes_conn_id,
                "poll_interval": self.poll_interval,
                "startup_timeout": self.startup_timeout,
                "submitted_at": self.submitted_at,
                "on_kill_action": self.on_kill_action,
                "in_cluster": self.in_cluster,
                "cluster_context": self.cluster_context,
                "config_file": self.config_file,
                "logging_interval": self.logging_interval,
                "last_log_time": self.last_log_time,
            },
        )

    @cached_property
    def hook(self) -> AsyncKubernetesHook:
        return AsyncKubernetesHook(
            conn_id=self.kubernetes_conn_id,
            in_cluster=self.in_cluster,
            cluster_context=self.cluster_context,
            config_file=self.config_file,
        )

    @generic_api_retry
    async def get_job(self) -> dict[str, Any]:
        """The MPIJob object (retried on transient API errors by the provider's policy)."""
        async with self.hook.get_conn() as api:
            job: dict[str, Any] = await CustomObjectsApi(api).get_namespaced_custom_object(
                MPIJOB_GROUP, MPIJOB_VERSION, self.namespace, MPIJOB_PLURAL, self.name
            )
            return job

    @generic_api_retry
    async def delete_job(self) -> None:
        """Delete the MPIJob with its pods (foreground); a job already gone is fine."""
        async with self.hook.get_conn() as api:
            try:
                await CustomObjectsApi(api).delete_namespaced_custom_object(
                    MPIJOB_GROUP,
                    MPIJOB_VERSION,
                    self.namespace,
                    MPIJOB_PLURAL,
                    self.name,
                    propagation_policy="Foreground",
                )
            except ApiException as exc:
                if exc.status != 404:
                    raise

    @generic_api_retry
    async def launcher_pod(self) -> Any | None:
        """The newest launcher pod of the job (a launcher retry is a new pod), or None."""
        async with self.hook.get_conn() as api:
            pods = await CoreV1Api(api).list_namespaced_pod(
                self.namespace, label_selector=launcher_selector(self.name)
            )
        if not pods.items:
            return None
        return max(pods.items, key=lambda pod: str(pod.metadata.creation_timestamp or ""))

    async def stream_launcher_log(self) -> None:
        """Write the launcher's lines since :attr:`last_log_time` into the task log (the
        provider's AsyncPodManager) and move :attr:`last_log_time` on. A failed read is logged
        and retried at the next interval: the log is a view, the job's state decides."""
        try:
            pod = await self.launcher_pod()
            if pod is None:
                return
            since = parse_log_time(self.last_log_time)
            until = await AsyncPodManager(async_hook=self.hook).fetch_container_logs_before_current_sec(
                pod, LAUNCHER_CONTAINER, since_time=since
            )  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - logs are best effort; polling goes on
            self.log.warning("could not read the launcher log of %s: %s", self.name, exc)
            return
        if until is not None:
            self.last_log_time = until.isoformat()

    def _event(self, status: str, state: str, reason: str, message: str) -> TriggerEvent:
        self._fired = True
        return TriggerEvent(
            {
                "status": status,
                "name": self.name,
                "namespace": self.namespace,
                "state": state,
                "reason": reason,
                "message": _one_line(message),
                "last_log_time": self.last_log_time,
            }
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        where = f"MPIJob {self.namespace}/{self.name}"
        last = None
        next_log_read = time.monotonic()
        while True:
            try:
                job = await self.get_job()
            except ApiException as exc:
                yield self._event(
                    "error", "Unknown", str(exc.reason or exc.status), f"{where}: API {exc.status} "
                    f"{exc.reason or ''}".strip() + (" (deleted?)" if exc.status == 404 else ""),
                )  # fmt: skip
                return
            state, reason, message = mpijob_state(job)
            if state != last:
                self.log.info("%s: %s%s", where, state, f" ({message})" if message else "")
                last = state
            if state in TERMINAL_STATES:
                status = "success" if state == "Succeeded" else "failed"
                yield self._event(status, state, reason, message)
                return
            if state == "Running" and self.logging_interval and time.monotonic() >= next_log_read:
                await self.stream_launcher_log()
                next_log_read = time.monotonic() + self.logging_interval
            waited = time.time() - self.submitted_at
            if (
                self.startup_timeout is not None
                and state in ("Pending", "Created")
                and waited > self.startup_timeout
            ):
                yield self._event(
                    "timeout", state, reason,
                    f"{where} not running after {self.startup_timeout:.0f}s (state {state}; "
                    "see kubectl describe of its pods)",
                )  # fmt: skip
                return
            await asyncio.sleep(self.poll_interval)

    async def on_kill(self) -> None:
        """The user killed the deferred task: delete the job unless ``on_kill_action=keep_pod``."""
        if self._fired or self.on_kill_action == "keep_pod":
            return
        self.log.info("deleting MPIJob %s/%s (task killed)", self.namespace, self.name)
        try:
            await self.delete_job()
        except Exception:  # noqa: BLE001 - a failed cleanup is logged, not raised in the triggerer
            self.log.exception("could not delete MPIJob %s/%s", self.namespace, self.name)
