"""Airflow plugin of the platform: extra links on tasks, and the reports they point to.

* Extra links on task instances: "GX Data Docs" (validate), "MLflow run" (train), "MLflow model
  version" (register).
* A small FastAPI app mounted in the Airflow API server at ``/mlplatform``: ``/mlplatform/reports/
  <path>`` serves the HTML reports that stages write under the platform storage (GX Data Docs now,
  Evidently reports later) — browsers refuse ``file://`` links from an http page, so the Data Docs
  link points here. Only files inside a ``data_docs``/``reports`` folder are served.

Imports stay light: FastAPI (already loaded by the API server) and the link classes.
"""

from __future__ import annotations

from pathlib import Path

from airflow.plugins_manager import AirflowPlugin
from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse

from operators.links import REPORTS_PREFIX, DataDocsLink, MlflowModelLink, MlflowRunLink

REPORT_FOLDERS = {"data_docs", "reports"}

reports_app = FastAPI(title="mlplatform reports", docs_url=None, redoc_url=None, openapi_url=None)


@reports_app.get("/reports/{path:path}")
def report(path: str) -> FileResponse:
    """A file of a stage's HTML report, by its path relative to the platform storage."""
    from mlplatform.settings import get_settings
    from mlplatform.storage import to_path

    root = to_path(get_settings().storage).resolve()
    target = (root / path).resolve()
    if target.is_dir():
        target = target / "index.html"
    if root not in target.parents or not REPORT_FOLDERS & set(target.relative_to(root).parts[:-1]):
        raise HTTPException(status_code=404, detail="not a report file")
    if not target.is_file():
        raise HTTPException(status_code=404, detail=f"no report at {path}")
    return FileResponse(Path(target))


class MlPlatformPlugin(AirflowPlugin):
    name = "mlplatform"
    operator_extra_links = [DataDocsLink(), MlflowRunLink(), MlflowModelLink()]
    fastapi_apps = [
        {"app": reports_app, "url_prefix": REPORTS_PREFIX, "name": "mlplatform reports"}
    ]
