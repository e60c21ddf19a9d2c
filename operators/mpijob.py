"""The MPIJob's calls from the worker, on the cncf.kubernetes provider's primitives.

:class:`MPIJobClient` submits one MPIJob through
:class:`~airflow.providers.cncf.kubernetes.hooks.kubernetes.KubernetesHook`'s custom-object calls
(``get``/``delete`` carry the provider's ``generic_api_retry``; ``create`` does not, and must not:
a retried create would answer itself 409) and, once the job has ended, reads the launcher pod's
log with the provider's :class:`~airflow.providers.cncf.kubernetes.utils.pod_manager.PodManager`
(each line into the task log, prefixed ``[launcher]``) and parses the trainer's
``MLPLATFORM_RESULT`` line from it. Following the job while it runs is the trigger's
(:mod:`operators.mpijob_trigger`).

Re-attach: a create answered 409 Conflict means a previous try (or a worker that died) already
submitted this name; a job still running or succeeded is followed, a failed one is deleted
(foreground, so that its pods are gone) and created again: that is what an Airflow retry asks for.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook
from airflow.providers.cncf.kubernetes.utils.pod_manager import PodManager
from kubernetes.client import V1Pod
from kubernetes.client.exceptions import ApiException

from mlplatform.k8s.mpijob import (
    LAUNCHER_CONTAINER,
    MPIJOB_GROUP,
    MPIJOB_PLURAL,
    MPIJOB_VERSION,
    launcher_selector,
    mpijob_state,
    parse_result_line,
)
from operators.mpijob_trigger import parse_log_time
from training.spec import read_error_line

_log = logging.getLogger(__name__)


class MPIJobFailed(RuntimeError):
    """An MPIJob failed, timed out or lost its result; ``str()`` is one line."""


@dataclass
class LauncherLog:
    """What the launcher's log said: the trainer's result, its error line, the last line."""

    result: dict[str, Any] | None = None
    trainer_error: str = ""
    last_line: str = ""

    def add(self, message: str) -> None:
        for line in message.splitlines():
            if line.strip():
                self.last_line = line.strip()
            if (error := read_error_line(line)) is not None:
                self.trainer_error = error
            if (result := parse_result_line(line)) is not None:
                self.result = result

    def detail(self) -> str:
        """``; trainer error: ...`` or ``; last launcher line: ...`` (or nothing)."""
        if self.trainer_error:
            return f"; trainer error: {self.trainer_error}"
        return f"; last launcher line: {self.last_line}" if self.last_line else ""


def api_error_line(exc: ApiException) -> str:
    """``<status> <reason>: <the API server's message>`` on one line (the ``Status`` body's)."""
    message = ""
    try:
        message = str(json.loads(exc.body or "{}").get("message") or "")
    except (ValueError, AttributeError):
        message = str(exc.body or "")
    return " ".join(f"{exc.status} {exc.reason or ''}: {message or 'no message'}".split())


class MPIJobClient:
    """One MPIJob (``name`` in ``namespace``) through ``hook``; see the module doc."""

    def __init__(
        self,
        hook: KubernetesHook,
        name: str,
        namespace: str,
        *,
        log: Any = _log,
        poll_interval: float = 5.0,
        delete_timeout: float = 600.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.hook = hook
        self.name = name
        self.namespace = namespace
        self.log = log
        self.poll_interval = poll_interval
        self.delete_timeout = delete_timeout
        self._sleep = sleep

    @property
    def where(self) -> str:
        return f"MPIJob {self.namespace}/{self.name}"

    def _ids(self) -> dict[str, str]:
        return {
            "group": MPIJOB_GROUP,
            "version": MPIJOB_VERSION,
            "plural": MPIJOB_PLURAL,
            "namespace": self.namespace,
        }

    def get(self) -> dict[str, Any]:
        job: dict[str, Any] = self.hook.get_custom_object(name=self.name, **self._ids())
        return job

    def submit(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Create the MPIJob, or re-attach to the one of the same name (see the module doc)."""
        try:
            job: dict[str, Any] = self.hook.create_custom_object(body=manifest, **self._ids())
        except ApiException as exc:
            if exc.status != 409:
                raise
        else:
            self.log.info("submitted %s", self.where)
            return job
        job = self.get()
        state, reason, message = mpijob_state(job)
        if state != "Failed":
            self.log.info("re-attaching to %s (%s)", self.where, state)
            return job
        self.log.info(
            "%s exists and failed (%s: %s): running it again", self.where, reason, message
        )
        self.delete(wait=True)
        job = self.hook.create_custom_object(body=manifest, **self._ids())
        self.log.info("submitted %s", self.where)
        return job

    def delete(self, *, wait: bool = False) -> None:
        """Delete the MPIJob with its pods (foreground); with ``wait``, until it is gone."""
        try:
            self.hook.delete_custom_object(
                name=self.name, propagation_policy="Foreground", **self._ids()
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
            return
        self.log.info("deleted %s", self.where)
        deadline = time.monotonic() + self.delete_timeout
        while wait:
            try:
                self.get()
            except ApiException as exc:
                if exc.status == 404:
                    return
                raise
            if time.monotonic() > deadline:
                raise MPIJobFailed(
                    f"train: {self.where} still exists {self.delete_timeout:.0f}s after deleting it"
                )
            self._sleep(self.poll_interval)

    def launcher_pod(self) -> V1Pod | None:
        """The newest launcher pod of the job (a launcher retry is a new pod), or None."""
        pods = self.hook.core_v1_client.list_namespaced_pod(
            namespace=self.namespace, label_selector=launcher_selector(self.name)
        ).items
        if not pods:
            return None

        def created(pod: V1Pod) -> datetime:
            return pod.metadata.creation_timestamp or datetime.min.replace(tzinfo=UTC)

        pod: V1Pod = max(pods, key=created)
        return pod

    def read_launcher_log(self, kept_seconds: int, since: str | None = None) -> LauncherLog:
        """Write the launcher's log into the task log (the provider's PodManager, which joins
        continuation lines and re-opens a dropped stream) and return what it said.

        ``since`` (ISO time, the trigger's ``last_log_time``): the trigger already wrote the
        lines before it into the task log while the job ran, so only the rest is written; what
        the log *said* (result, trainer error) is still read from the whole log.

        ``kept_seconds``: how long after it ended the launcher pod is kept (the job's
        ``ttlSecondsAfterFinished``). The PodManager reads nothing from a container that ended
        more than ``post_termination_timeout`` ago (120 s by default), and a deferred task resumes
        when the triggerer gets to it: the whole lifetime of the pod is the right bound."""
        out = LauncherLog()
        pod = self.launcher_pod()
        if pod is None:
            self.log.warning("%s has no launcher pod (deleted? see runPolicy)", self.where)
            return out

        def tap(container: str, message: str) -> str:
            if since is None:
                out.add(message)
            return f"[{container}] {message}"

        if since is not None:
            raw = self.hook.core_v1_client.read_namespaced_pod_log(
                pod.metadata.name,
                self.namespace,
                container=LAUNCHER_CONTAINER,
                _preload_content=False,  # raw bytes: a non-UTF-8 line must not fail the task
            )
            out.add(raw.data.decode("utf-8", errors="replace"))
        PodManager(kube_client=self.hook.core_v1_client).fetch_container_logs(
            pod,
            LAUNCHER_CONTAINER,
            follow=False,
            since_time=parse_log_time(since),
            post_termination_timeout=kept_seconds,
            log_formatter=tap,
        )
        return out
