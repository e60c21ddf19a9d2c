"""The platform view: server-rendered pages and JSON of pipelines, models, versions and lineage,
and the actions people take there (roll back, retrain), mounted by ``mlplatform_plugin`` under
``/mlplatform`` in Airflow's API server and linked from Airflow's navigation ("ML platform").

Pages (HTML, no external assets) and their JSON twins:

* ``/`` and ``/api/models``: every valid pipeline with its model, served version, champion,
  schedules, gate thresholds and last drift check;
* ``/models/<model>`` and ``/api/models/<model>``: the versions (aliases, labels, served, gate
  figures per slice), the last drift check, the audit trail and the retrain decisions, with a
  rollback form (version picker, default the version a rollback without ``to_version`` serves)
  and a retrain button;
* ``/models/<model>/versions/<v>`` and ``/api/models/<model>/versions/<v>``: the lineage chain.

Actions are POSTed forms. They trigger the pipeline's own DAG (``mlp_<p>_rollback`` with
``to_version``/``reason``, ``mlp_<p>_train`` with ``data_uri``) through Airflow's
``trigger_dag``, as a manual run triggered by the logged-in user (``triggering_user_name``), so
the run shows in Airflow as any other, the scheduler runs it and the operator records the user
in the audit trail. A form whose ``Origin`` is another site is refused (the UI's cookie would
otherwise let any page post here). Bad input answers one line and triggers nothing.

Reading needs read access to the pipeline's train DAG, an action the right to create runs of the
DAG it triggers (``platform_auth``). The data comes from :mod:`mlplatform.platform_view`
(imported on the first request: it reads MLflow).
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from platform_auth import AirflowUser, authorize_pipeline, authorize_trigger, user_name

PREFIX = "/mlplatform"  # where mlplatform_plugin mounts the app (operators.links.REPORTS_PREFIX)
TEMPLATES = Path(__file__).resolve().parent / "templates" / "platform"

log = logging.getLogger(__name__)
router = APIRouter()


@functools.cache
def _templates() -> Any:
    """The Jinja2 environment of the pages (autoescaped; Jinja2 ships with Airflow); one per
    process, so each template is compiled once."""
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    return Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape())


def render(template: str, **values: Any) -> HTMLResponse:
    page = _templates().get_template(template).render(prefix=PREFIX, **values)
    return HTMLResponse(page)


def _settings() -> Any:
    from mlplatform.settings import get_settings

    return get_settings()


def _config(request: Request, user: Any, model: str) -> Any:
    """The pipeline config serving ``model`` (404 otherwise), after the read check."""
    from mlplatform.platform_view import UnknownModel, config_of_model

    try:
        cfg = config_of_model(_settings(), model)
    except UnknownModel as exc:
        raise HTTPException(status_code=404, detail=str(exc)[:110]) from None
    authorize_pipeline(request, user, cfg.name)
    return cfg


def readable_models(request: Request, user: Any) -> list[dict[str, Any]]:
    """The model views of every pipeline the user may read."""
    from mlplatform.platform_view import model_view, pipeline_configs

    settings = _settings()
    views = []
    for cfg in pipeline_configs(settings):
        try:
            authorize_pipeline(request, user, cfg.name)
        except HTTPException:
            continue
        views.append(model_view(settings, cfg, history=5))
    return views


@router.get("/", response_class=HTMLResponse)
def index(request: Request, user: AirflowUser) -> HTMLResponse:
    """The overview page."""
    return render("index.html", models=readable_models(request, user))


@router.get("/api/models")
def api_models(request: Request, user: AirflowUser) -> list[dict[str, Any]]:
    """The overview as JSON."""
    return readable_models(request, user)


@router.get("/models/{model}", response_class=HTMLResponse)
def model_page(
    model: str, request: Request, user: AirflowUser, message: str = "", error: bool = False
) -> HTMLResponse:
    """A model's page: versions, gate, drift, audit, decisions, actions."""
    from mlplatform.platform_view import model_view

    cfg = _config(request, user, model)
    return render("model.html", m=model_view(_settings(), cfg), message=message[:300], error=error)


@router.get("/api/models/{model}")
def api_model(model: str, request: Request, user: AirflowUser) -> dict[str, Any]:
    from mlplatform.platform_view import model_view

    return model_view(_settings(), _config(request, user, model))


def _lineage(request: Request, user: Any, model: str, version: int) -> dict[str, Any]:
    from mlplatform.platform_view import UnknownModel, version_lineage

    cfg = _config(request, user, model)
    try:
        return version_lineage(_settings(), cfg, version)
    except UnknownModel as exc:
        raise HTTPException(status_code=404, detail=str(exc)[:110]) from None


@router.get("/models/{model}/versions/{version}", response_class=HTMLResponse)
def lineage_page(model: str, version: int, request: Request, user: AirflowUser) -> HTMLResponse:
    return render("lineage.html", l=_lineage(request, user, model, version))


@router.get("/api/models/{model}/versions/{version}")
def api_lineage(model: str, version: int, request: Request, user: AirflowUser) -> dict[str, Any]:
    return _lineage(request, user, model, version)


# ---------------------------------------------------------------------------------- actions


def same_origin(request: Request) -> None:
    """403 when the form was posted from another site (``Origin`` names another host)."""
    origin = request.headers.get("origin")
    if origin and origin != "null" and urlsplit(origin).netloc != request.headers.get("host"):
        raise HTTPException(status_code=403, detail="cross-site form refused")


def trigger(dag_id: str, conf: dict[str, Any], user: str) -> str:
    """Trigger a manual run of ``dag_id`` as ``user`` (Airflow's ``trigger_dag``); its run id."""
    from airflow.api.common.trigger_dag import trigger_dag
    from airflow.utils.types import DagRunTriggeredByType

    run = trigger_dag(
        dag_id, triggered_by=DagRunTriggeredByType.UI, triggering_user_name=user, conf=conf
    )
    if run is None:  # pragma: no cover - trigger_dag returns the run it created
        raise HTTPException(status_code=500, detail=f"{dag_id} was not triggered")
    return run.run_id


def _back(model: str, message: str, error: bool = False) -> RedirectResponse:
    url = f"{PREFIX}/models/{quote(model)}?message={quote(message)}"
    return RedirectResponse(url + ("&error=true" if error else ""), status_code=303)


def _action(request: Request, user: Any, dag_id: str, conf: dict[str, Any]) -> str:
    from airflow.exceptions import DagNotFound

    same_origin(request)
    authorize_trigger(request, user, dag_id)
    try:
        return trigger(dag_id, conf, user_name(user))
    except DagNotFound:
        raise HTTPException(
            status_code=404, detail=f"{dag_id} is not in Airflow yet (parsing?)"
        ) from None


@router.post("/models/{model}/rollback")
def rollback_action(
    model: str,
    request: Request,
    user: AirflowUser,
    to_version: Annotated[str, Form()] = "",
    reason: Annotated[str, Form()] = "",
) -> RedirectResponse:
    """Trigger ``mlp_<p>_rollback``: to ``to_version`` (a published version other than the
    served one) or, empty, to the previous one."""
    from mlplatform.platform_view import model_view

    cfg = _config(request, user, model)
    view = model_view(_settings(), cfg, history=0)
    target: int | None = None
    if to_version.strip():
        try:
            target = int(to_version)
        except ValueError:
            return _back(model, f"to_version {to_version[:20]!r} is not a version number", True)
        if target not in view["published"] or target == view["served_version"]:
            others = [v for v in view["published"] if v != view["served_version"]]
            return _back(model, f"v{target} is not a version to roll back to (published, not "
                         f"served: {others or 'none'})", True)  # fmt: skip
    elif view["rollback_default"] is None:
        return _back(
            model, "nothing to roll back to: no published version before the served one", True
        )
    conf = {"to_version": target, "reason": reason.strip()[:300] or None}
    run_id = _action(request, user, view["dags"]["rollback"], conf)
    goes_to = f"v{target}" if target else f"the previous version (v{view['rollback_default']})"
    return _back(model, f"triggered {view['dags']['rollback']} run {run_id}: {goes_to}")


@router.post("/models/{model}/retrain")
def retrain_action(
    model: str, request: Request, user: AirflowUser, data_uri: Annotated[str, Form()] = ""
) -> RedirectResponse:
    """Trigger ``mlp_<p>_train`` (``data_uri``: a batch to ingest; empty: the validated
    history)."""
    cfg = _config(request, user, model)
    dag_id = f"mlp_{cfg.name}_train"
    run_id = _action(request, user, dag_id, {"data_uri": data_uri.strip()})
    return _back(model, f"triggered {dag_id} run {run_id}")
