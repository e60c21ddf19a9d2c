"""Airflow's own authentication and authorization for the platform plugin's routes.

Every route depends on :func:`airflow_user` (Airflow's ``get_user``: a JWT bearer token or the
cookie the Airflow UI holds; 401/403 otherwise). Reading a pipeline's pages or reports needs read
access to the task instances of ``mlp_<pipeline>_train`` (:func:`authorize_pipeline`); an action
needs the right to create runs of the DAG it triggers (:func:`authorize_trigger`), both through
Airflow's ``requires_access_dag``, so the auth manager in use (Simple, FAB, Keycloak ...) decides.
Airflow's security module is imported on the first request.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer, OAuth2PasswordBearer

# the same token sources as Airflow's API (airflow.api_fastapi.core_api.security)
_oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/auth/token", auto_error=False)
_bearer_scheme = HTTPBearer(auto_error=False)


async def airflow_user(
    request: Request,
    oauth_token: Annotated[str | None, Depends(_oauth2_scheme)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer_scheme)],
) -> Any:
    """The Airflow user of the request, by Airflow's own ``get_user`` (401 without a token,
    401/403 for an expired or invalid one)."""
    from airflow.api_fastapi.core_api.security import get_user

    return await get_user(request, oauth_token, bearer)


AirflowUser = Annotated[Any, Depends(airflow_user)]


def authorize_pipeline(request: Request, user: Any, pipeline: str) -> None:
    """403 unless ``user`` may read the task instances of ``mlp_<pipeline>_train``."""
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
    from airflow.api_fastapi.core_api.security import requires_access_dag

    check = requires_access_dag(
        "GET", DagAccessEntity.TASK_INSTANCE, param_dag_id=f"mlp_{pipeline}_train"
    )
    check(request, user)


def authorize_trigger(request: Request, user: Any, dag_id: str) -> None:
    """403 unless ``user`` may create runs of ``dag_id`` (what Airflow's trigger form needs)."""
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
    from airflow.api_fastapi.core_api.security import requires_access_dag

    requires_access_dag("POST", DagAccessEntity.RUN, param_dag_id=dag_id)(request, user)


def user_name(user: Any) -> str:
    """The user's name as Airflow records it on the runs it triggers."""
    getter = getattr(user, "get_name", None)
    return str(getter() if callable(getter) else user)
