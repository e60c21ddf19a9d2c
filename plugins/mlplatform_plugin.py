"""Airflow plugin of the platform: extra links on tasks, the reports they point to, and the
platform view (``platform_pages``: models, versions, gate, drift, lineage, audit, rollback and
retrain), linked from Airflow's navigation as "ML platform".

* Extra links on task instances: "GX Data Docs" (validate), "Drift report" (the monitor's
  drift_check), "MLflow run" (train), "MLflow model version" (register).
* A small FastAPI app mounted in the Airflow API server at ``/mlplatform``: ``/mlplatform/reports/
  <path>`` serves the HTML reports that stages write under the platform storage (GX Data Docs,
  Evidently drift reports) — browsers refuse ``file://`` links from an http page, so the Data Docs
  link points here. Only files inside a ``data_docs``/``reports`` folder are served; Data Docs
  pages with their CDN assets replaced by local copies (``gx_assets``, ``/mlplatform/static/``).

Access is Airflow's own, as for the rest of its API: every route depends on Airflow's
``get_user`` (a JWT bearer token, or the cookie the Airflow UI holds), so a request without a
valid token gets 401/403; a report of pipeline ``P`` (``<storage>/P/...``) further needs read access
to the task instances of DAG ``mlp_P_train`` (Airflow's ``requires_access_dag``), checked after
the path is resolved so that ``..`` cannot step into another pipeline. Errors are short JSON
(``{"detail": ...}``): no traceback, no server path; unexpected exceptions are logged server-side.

Imports stay light: FastAPI (already loaded by the API server) and the link classes; Airflow's
security module is imported on the first request.
"""

from __future__ import annotations

import logging
from pathlib import Path

from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from gx_assets import STATIC, localize
from platform_auth import AirflowUser, airflow_user, authorize_pipeline
from platform_pages import router as pages_router

from operators.links import (
    REPORTS_PREFIX,
    DataDocsLink,
    DriftReportLink,
    MlflowModelLink,
    MlflowRunLink,
)

REPORT_FOLDERS = {"data_docs", "reports"}

log = logging.getLogger(__name__)

reports_app = FastAPI(
    title="mlplatform reports",
    docs_url=None,
    redoc_url=None,
    openapi_url=None,
    dependencies=[Depends(airflow_user)],
)


@reports_app.exception_handler(Exception)
async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    """A short JSON 500 for anything unexpected; the trace goes to the server log only."""
    log.error("report server: %s %s failed", request.method, request.url.path, exc_info=exc)
    return JSONResponse(status_code=500, content={"detail": "internal error of the report server"})


def to_path_root() -> Path:
    """The local directory holding the platform storage (or its working copy)."""
    from mlplatform.settings import get_settings
    from mlplatform.storage import local_root

    return local_root(get_settings()).resolve()


def report_target(path: str) -> tuple[Path, str]:
    """``(file, pipeline)`` of a report path relative to the platform storage; 404 unless it
    resolves (symlinks and ``..`` included) inside the storage and inside a report folder."""
    root = to_path_root()
    try:
        target = (root / path).resolve()
        if target.is_dir():
            target = target / "index.html"
    except (ValueError, OSError):  # a NUL byte, a symlink loop ...
        raise HTTPException(status_code=404, detail="not a report file") from None
    if root not in target.parents:
        raise HTTPException(status_code=404, detail="not a report file")
    relative = target.relative_to(root).parts
    if not REPORT_FOLDERS & set(relative[:-1]):
        raise HTTPException(status_code=404, detail="not a report file")
    return target, relative[0]


def fetch_remote_report(relative: tuple[str, ...]) -> None:
    """With remote (``s3://``) storage, bring a report's stage directory (``<pipeline>/<run>/
    <stage>``) into this host's working copy when it is not there: the stage may have run on
    another worker. Local storage: nothing to do."""
    from mlplatform import object_store
    from mlplatform.settings import get_settings
    from mlplatform.storage import to_path

    storage = get_settings().storage
    if object_store.is_remote(storage) and len(relative) > 3:
        to_path(object_store.join(storage, *relative[:3]))


@reports_app.get("/reports/{path:path}")
def report(path: str, request: Request, user: AirflowUser) -> FileResponse:
    """A file of a stage's HTML report, by its path relative to the platform storage (fetched
    from remote storage into the working copy when it is not there yet)."""
    target, pipeline = report_target(path)
    authorize_pipeline(request, user, pipeline)
    if not target.exists():
        fetch_remote_report(target.relative_to(to_path_root()).parts)
    if not target.is_file():
        raise HTTPException(status_code=404, detail="no such report")
    if target.suffix == ".html" and "data_docs" in target.parts:
        # GX pages load their scripts and styles from CDNs: served with local copies instead
        return HTMLResponse(
            localize(target.read_text(errors="replace"), f"{REPORTS_PREFIX}/static")
        )
    return FileResponse(target)


reports_app.include_router(pages_router)
# public library files (GX Data Docs' scripts, styles and fonts), vendored: no CDN needed
reports_app.mount("/static", StaticFiles(directory=STATIC), name="static")


class MlPlatformPlugin(AirflowPlugin):
    name = "mlplatform"
    operator_extra_links = [DataDocsLink(), DriftReportLink(), MlflowRunLink(), MlflowModelLink()]
    fastapi_apps = [
        {"app": reports_app, "url_prefix": REPORTS_PREFIX, "name": "mlplatform reports"}
    ]
    # the platform view in Airflow's navigation: embedded at /plugin/mlplatform
    external_views = [
        {
            "name": "ML platform",
            "href": f"{REPORTS_PREFIX}/",
            "destination": "nav",
            "url_route": "mlplatform",
        }
    ]
