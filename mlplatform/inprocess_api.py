"""The in-process Execution API of ``dag.test``, built for the one API version its client speaks.

``dag.test`` runs every task in this process and talks to Airflow's Execution API through an
in-process FastAPI app (``airflow.sdk.execution_time.supervisor.in_process_api_server``, one per
process). The app is a Cadwyn app versioned by date; on its first request Cadwyn generates a
router for every API version Airflow still serves (nine in Airflow 3.3), each derived from the
next newer one: ≈4-6 s on this machine, paid by the run's first task. The Task SDK's client in
the same process always sends one version (``airflow.sdk.api.datamodels._generated.API_VERSION``,
the newest), so the older versions are built for nobody.

:func:`serve_client_version_only` builds that app ahead of the first task with a version bundle
of the client's version alone, so Cadwyn generates one router: the newest version's routes,
which are the head routes minus those marked ``only_exists_in_older_versions`` (Cadwyn drops
those from the newest version itself; here they are dropped before generation, since a bundle
with no older version cannot restore them). No request is migrated between versions in either
case. It needs Airflow and Cadwyn internals (the ``versions.bundle`` module attribute that
``create_task_execution_api_app`` reads, the supervisor's cached server, Cadwyn's latest-version
router and deleted-route tag), so on any surprise it leaves Airflow's normal path in place.
``tests/test_inprocess_api.py`` fails loudly when those internals change, and checks that the
one version served has exactly the routes Airflow's full app serves for it.
"""

from __future__ import annotations

import logging
import time

log = logging.getLogger("mlplatform.inprocess_api")


def serve_client_version_only() -> str | None:
    """Build ``dag.test``'s in-process Execution API now with only the client's API version.

    Returns that version, or None when Airflow's normal app (every version, built on the first
    task's first request) is kept: the client does not speak the newest version, the head
    version has changes of its own, the server was already built, or anything failed."""
    try:
        from airflow.api_fastapi.execution_api import versions
        from airflow.sdk.api.datamodels._generated import API_VERSION
        from airflow.sdk.execution_time import supervisor
        from cadwyn import HeadVersion, Version, VersionBundle
        from cadwyn.route_generation import _DELETED_ROUTE_TAG
        from fastapi.routing import APIRoute
    except ImportError as exc:
        log.warning("in-process Execution API: Airflow's normal path (%s)", exc)
        return None
    full = versions.bundle
    if full.versions[0].value != API_VERSION or full.head_version.changes:
        log.warning(
            "in-process Execution API: Airflow's normal path (client version %s, newest %s)",
            API_VERSION,
            full.versions[0].value,
        )
        return None
    if supervisor.in_process_api_server.cache_info().currsize:
        return None  # already built by Airflow: nothing to gain
    started = time.monotonic()
    try:
        api = supervisor.in_process_api_server()  # the one instance dag.test's tasks will use
        versions.bundle = VersionBundle(HeadVersion(), Version(API_VERSION))
        try:
            app = api.app  # create_task_execution_api_app() reads versions.bundle here
        finally:
            versions.bundle = full
        latest = app._latest_version_router
        latest.routes = [
            r
            for r in latest.routes
            if not (isinstance(r, APIRoute) and _DELETED_ROUTE_TAG in r.tags)
        ]
        app._cadwyn_initialize()  # now: a surprise falls back here, not in the first task
        served = list(app.router.versioned_routers)
        if served != [API_VERSION]:
            raise RuntimeError(f"the app serves {served}, not [{API_VERSION}]")
    except Exception as exc:
        supervisor.in_process_api_server.cache_clear()  # the first task builds Airflow's own
        log.warning(
            "in-process Execution API: Airflow's normal path (%s: %s)", type(exc).__name__, exc
        )
        return None
    log.info(
        "in-process Execution API: built for API version %s only in %.1fs",
        API_VERSION,
        time.monotonic() - started,
    )
    return API_VERSION
