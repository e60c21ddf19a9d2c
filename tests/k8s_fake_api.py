"""A fake Kubernetes API server on loopback that speaks the real REST paths, for the MPIJob path.

It answers what the provider's hooks and PodManager send (``kubernetes`` and ``kubernetes_asyncio``
clients, over HTTP, through an Airflow connection whose kubeconfig points here):

* ``/apis/kubeflow.org/v2beta1/namespaces/{ns}/mpijobs`` (POST: 201, or 409 with a ``Status``)
  and ``.../mpijobs/{name}`` (GET: the job, its status advancing one step of ``timeline`` per GET;
  DELETE: the job and its pods go, ``propagationPolicy`` recorded; 404 when absent);
* ``/api/v1/namespaces/{ns}/pods`` (GET with ``labelSelector``: equality selectors matched
  against the pods' labels; POST: the pod is scheduled and ``Running`` at once, on ``pod_ip``),
  ``.../pods/{name}`` (GET, DELETE) and ``.../pods/{name}/log`` (``timestamps``).

It plays the mpi-operator by ``tests/data/mpi_operator_conventions.yaml`` (its published labels,
not the code's constants): once a job is ``Running`` its launcher pod exists with those labels.
Every request is recorded in :attr:`FakeKubernetes.requests` as ``(method, path, query)``.
"""

from __future__ import annotations

import asyncio
import copy
import json
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import yaml
from aiohttp import web

from tests.conftest import REPO

CONVENTIONS = yaml.safe_load(
    (REPO / "tests" / "data" / "mpi_operator_conventions.yaml").read_text()
)
MPIJOBS = "/apis/kubeflow.org/v2beta1/namespaces/{ns}/mpijobs"
PHASE = {"Running": "Running", "Succeeded": "Succeeded", "Failed": "Failed"}


def go_bool(value: str | None) -> bool:
    """A query flag as the API server parses it (Go's ``strconv.ParseBool``)."""
    return value in ("1", "t", "T", "TRUE", "true", "True")


def condition(kind: str, reason: str = "", message: str = "") -> dict[str, str]:
    return {"type": kind, "status": "True", "reason": reason, "message": message}


def status(*conditions: dict[str, str]) -> dict[str, Any]:
    return {"conditions": list(conditions)}


def state_of(job: dict[str, Any]) -> str:
    """The newest true condition's type, by the operator's own list (``Pending`` if none)."""
    true = [
        c["type"] for c in (job.get("status") or {}).get("conditions", []) if c["status"] == "True"
    ]
    for kind in ("Failed", "Succeeded", "Running", "Created"):
        if kind in true:
            return kind
    return "Pending"


class FakeKubernetes:
    """The fake API server; :meth:`start` serves on ``127.0.0.1`` (:attr:`url`), :meth:`stop`."""

    def __init__(
        self, timeline: list[dict[str, Any]] | None = None, launcher_log: list[str] | None = None
    ) -> None:
        self.timeline = timeline or []
        self.launcher_log = launcher_log or []
        #: when each launcher line was written (default: long ago, fixed stamps)
        self.log_times: list[datetime] = []
        self.jobs: dict[tuple[str, str], dict[str, Any]] = {}
        self.queues: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.pods: dict[tuple[str, str], dict[str, Any]] = {}
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.created: list[dict[str, Any]] = []
        self.deleted: list[tuple[str, str | None]] = []
        self.created_pods: list[dict[str, Any]] = []
        self.deleted_pods: list[str] = []
        self.pod_ip = "127.0.0.1"
        #: statuses the next MPIJob GETs answer with instead of the job (an API server in trouble)
        self.job_get_faults: list[int] = []
        #: a ``(status, reason, message)`` the next MPIJob create answers with
        self.create_fault: tuple[int, str, str] | None = None
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self.url = ""

    # -- state a test may set up ---------------------------------------------------------------

    def add_job(self, job: dict[str, Any], queue: list[dict[str, Any]] | None = None) -> None:
        """A job already there (a previous try's), going through ``queue`` from now on."""
        key = (job["metadata"]["namespace"], job["metadata"]["name"])
        self.jobs[key] = copy.deepcopy(job)
        self.queues[key] = list(queue or [job.get("status") or {}])
        self._sync_pods(key)

    def kubeconfig(self, namespace: str = "mlplatform") -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "airflow", "user": {}}],
            "contexts": [
                {
                    "name": "fake",
                    "context": {"cluster": "fake", "user": "airflow", "namespace": namespace},
                }
            ],
            "current-context": "fake",
        }

    def connection_uri_env(self) -> str:
        """The JSON of an Airflow connection (``AIRFLOW_CONN_<ID>``) to this server."""
        return json.dumps(
            {"conn_type": "kubernetes", "extra": {"kube_config": json.dumps(self.kubeconfig())}}
        )

    # -- the operator's part -------------------------------------------------------------------

    def _labels(self, job: str, role: str) -> dict[str, str]:
        return {k: v.format(job=job, role=role) for k, v in CONVENTIONS["pod_labels"].items()}

    def _sync_pods(self, key: tuple[str, str]) -> None:
        """The launcher pod follows the job's state, as the mpi-operator's launcher Job does."""
        namespace, name = key
        job = self.jobs.get(key)
        state = state_of(job) if job else "Gone"
        pod_name = CONVENTIONS["launcher_pod_name"].format(job=name, suffix="x7k2p")
        if state not in PHASE:
            if state == "Gone":
                self.pods.pop((namespace, pod_name), None)
            return
        terminated = state != "Running"
        container_state = (
            {
                "terminated": {
                    "exitCode": 0 if state == "Succeeded" else 1,
                    "reason": "Completed" if state == "Succeeded" else "Error",
                    # 10 minutes ago: a deferred task resumes when the triggerer gets to it
                    "finishedAt": (datetime.now(UTC) - timedelta(minutes=10)).strftime(
                        "%Y-%m-%dT%H:%M:%SZ"
                    ),
                }
            }
            if terminated
            else {"running": {"startedAt": "2026-03-01T12:00:00Z"}}
        )
        self.pods[(namespace, pod_name)] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": pod_name,
                "namespace": namespace,
                "labels": self._labels(name, "launcher"),
                "creationTimestamp": "2026-03-01T12:00:00Z",
            },
            "spec": {"containers": [{"name": "launcher", "image": "trainer"}]},
            "status": {
                "phase": PHASE[state],
                "containerStatuses": [
                    {
                        "name": "launcher",
                        "image": "trainer",
                        "imageID": "trainer@sha256:0",
                        "ready": not terminated,
                        "restartCount": 0,
                        "state": container_state,
                    }
                ],
            },
        }

    # -- HTTP ----------------------------------------------------------------------------------

    @staticmethod
    def _status(code: int, reason: str, message: str) -> web.Response:
        body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
                "reason": reason, "code": code}  # fmt: skip
        return web.json_response(body, status=code)

    async def _record(self, request: web.Request) -> None:
        self.requests.append((request.method, request.path, dict(request.query)))

    async def create_job(self, request: web.Request) -> web.Response:
        await self._record(request)
        body = await request.json()
        key = (request.match_info["ns"], body["metadata"]["name"])
        if self.create_fault is not None:
            fault, self.create_fault = self.create_fault, None
            return self._status(*fault)
        if key in self.jobs:
            return self._status(
                409, "AlreadyExists", f'mpijobs.kubeflow.org "{key[1]}" already exists'
            )
        self.created.append(copy.deepcopy(body))
        body["metadata"]["creationTimestamp"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.jobs[key] = {**body, "status": {}}
        self.queues[key] = list(self.timeline)
        return web.json_response(self.jobs[key], status=201)

    async def get_job(self, request: web.Request) -> web.Response:
        await self._record(request)
        key = (request.match_info["ns"], request.match_info["name"])
        if self.job_get_faults:
            code = self.job_get_faults.pop(0)
            return self._status(code, "ServiceUnavailable", "etcdserver: leader changed")
        if key not in self.jobs:
            return self._status(404, "NotFound", f'mpijobs.kubeflow.org "{key[1]}" not found')
        queue = self.queues.get(key)
        if queue:
            self.jobs[key]["status"] = queue.pop(0) if len(queue) > 1 else queue[0]
        self._sync_pods(key)
        return web.json_response(self.jobs[key])

    async def delete_job(self, request: web.Request) -> web.Response:
        await self._record(request)
        key = (request.match_info["ns"], request.match_info["name"])
        if key not in self.jobs:
            return self._status(404, "NotFound", f'mpijobs.kubeflow.org "{key[1]}" not found')
        policy = request.query.get("propagationPolicy")
        if policy is None and request.can_read_body:
            policy = (await request.json() or {}).get("propagationPolicy")
        self.deleted.append((key[1], policy))
        del self.jobs[key]
        self.queues.pop(key, None)
        self._sync_pods(key)
        return web.json_response({"kind": "Status", "status": "Success"})

    async def list_pods(self, request: web.Request) -> web.Response:
        await self._record(request)
        wanted = dict(
            term.split("=", 1) for term in request.query.get("labelSelector", "").split(",") if term
        )
        items = [
            pod for (ns, _), pod in self.pods.items()
            if ns == request.match_info["ns"]
            and all(pod["metadata"]["labels"].get(k) == v for k, v in wanted.items())
        ]  # fmt: skip
        return web.json_response(
            {"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items}
        )

    async def create_pod(self, request: web.Request) -> web.Response:
        await self._record(request)
        body = await request.json()
        key = (request.match_info["ns"], body["metadata"]["name"])
        if key in self.pods:
            return self._status(409, "AlreadyExists", f'pods "{key[1]}" already exists')
        self.created_pods.append(copy.deepcopy(body))
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body["metadata"]["creationTimestamp"] = now
        body["status"] = {
            "phase": "Running",
            "podIP": self.pod_ip,
            "containerStatuses": [
                {"name": c["name"], "image": c["image"], "imageID": f"{c['image']}@sha256:0",
                 "ready": True, "restartCount": 0, "state": {"running": {"startedAt": now}}}
                for c in body["spec"]["containers"]
            ],
        }  # fmt: skip
        self.pods[key] = body
        return web.json_response(body, status=201)

    async def delete_pod(self, request: web.Request) -> web.Response:
        await self._record(request)
        pod = self.pods.pop((request.match_info["ns"], request.match_info["name"]), None)
        if pod is None:
            return self._status(404, "NotFound", "pod not found")
        self.deleted_pods.append(request.match_info["name"])
        return web.json_response(pod)

    async def get_pod(self, request: web.Request) -> web.Response:
        await self._record(request)
        pod = self.pods.get((request.match_info["ns"], request.match_info["name"]))
        if pod is None:
            return self._status(404, "NotFound", "pod not found")
        return web.json_response(pod)

    async def pod_log(self, request: web.Request) -> web.Response:
        await self._record(request)
        if (request.match_info["ns"], request.match_info["name"]) not in self.pods:
            return self._status(404, "NotFound", "pod not found")
        stamps = go_bool(request.query.get("timestamps"))
        since = request.query.get("sinceSeconds")
        oldest = datetime.now(UTC) - timedelta(seconds=int(since)) if since else None
        lines = []
        for i, line in enumerate(self.launcher_log):
            at = self.log_times[i] if i < len(self.log_times) else None
            if oldest is not None and (at is None or at < oldest):
                continue  # the kubelet's sinceSeconds: lines at or after now - N seconds
            stamp = (
                at.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if at else f"2026-03-01T12:00:{i:02d}.{i + 1}Z"
            )
            lines.append((f"{stamp} " if stamps else "") + f"{line}\n")
        text = "".join(lines)
        return web.Response(text=text, content_type="text/plain")

    def app(self) -> web.Application:
        app = web.Application()
        jobs = MPIJOBS.format(ns="{ns}")
        app.router.add_post(jobs, self.create_job)
        app.router.add_get(jobs + "/{name}", self.get_job)
        app.router.add_delete(jobs + "/{name}", self.delete_job)
        app.router.add_get("/api/v1/namespaces/{ns}/pods", self.list_pods)
        app.router.add_post("/api/v1/namespaces/{ns}/pods", self.create_pod)
        app.router.add_get("/api/v1/namespaces/{ns}/pods/{name}", self.get_pod)
        app.router.add_delete("/api/v1/namespaces/{ns}/pods/{name}", self.delete_pod)
        app.router.add_get("/api/v1/namespaces/{ns}/pods/{name}/log", self.pod_log)
        return app

    def start(self) -> FakeKubernetes:
        async def serve() -> None:
            self._runner = web.AppRunner(self.app())
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            await site.start()
            port = self._runner.addresses[0][1]
            self.url = f"http://127.0.0.1:{port}"

        threading.Thread(target=self._loop.run_forever, daemon=True).start()
        asyncio.run_coroutine_threadsafe(serve(), self._loop).result(timeout=10)
        return self

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
