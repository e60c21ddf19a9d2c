"""Reading the records of one model: model base, ``models.config``, MLflow, a running server."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlplatform.reconcile.records import (
    CHAMPION,
    DiskVersion,
    ModelSnapshot,
    RegisteredVersion,
    ServerView,
)
from mlplatform.settings import Settings


def mlflow_client(settings: Settings) -> Any:
    """The platform's MLflow client (imported here, on first use: MLflow is slow to import)."""
    from mlplatform.stages.registry import client

    return client(settings)


def _parse_time(text: Any) -> datetime | None:
    try:
        value = datetime.fromisoformat(str(text))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _disk_version(base: Path, name: str, version: int, hash_files: bool) -> DiskVersion:
    from serving import layout

    try:
        metadata = layout.read_version_metadata(base, name, version)
    except ValueError as exc:
        return DiskVersion(version, None, None, None, str(exc))
    actual = layout.saved_model_digest(base / name / str(version)) if hash_files else None
    if metadata is None:
        return DiskVersion(version, None, actual, None)
    return DiskVersion(
        version, metadata["sha256"], actual, _parse_time(metadata.get("published_at"))
    )


def model_names(settings: Settings) -> list[str]:
    """Models known to the registry, the model base or its ``models.config``."""
    from serving import layout

    names = set(layout.list_models(settings.models_dir))
    try:
        names |= set(layout.read_config_in_effect(settings.models_dir) or {})
    except ValueError:
        pass
    names |= {m.name for m in mlflow_client(settings).search_registered_models()}
    return sorted(names)


def _read_registry(
    settings: Settings, name: str
) -> tuple[bool, dict[int, RegisteredVersion], dict[str, int]]:
    from mlflow.exceptions import MlflowException

    c = mlflow_client(settings)
    try:
        model = c.get_registered_model(name)
    except MlflowException:
        return False, {}, {}
    versions = {
        int(v.version): RegisteredVersion(
            int(v.version),
            datetime.fromtimestamp(v.creation_timestamp / 1000, UTC),
            dict(v.tags or {}),
            v.run_id,
        )
        for v in c.search_model_versions(f"name='{name}'")
    }
    aliases = {alias: int(v) for alias, v in (model.aliases or {}).items()}
    return True, versions, aliases


def inspect_model(
    settings: Settings,
    name: str,
    *,
    hash_all: bool = True,
    server_url: str | None = None,
    timeout_s: float = 1.0,
) -> ModelSnapshot:
    """Read the four records of ``name``.

    ``hash_all``: hash every published version's files (``doctor``); otherwise only the stable
    and champion versions (``status``). ``server_url``: also ask that server (short timeout).
    """
    from serving import layout

    base = settings.models_dir
    config_error, config = None, None
    try:
        config = layout.read_config_in_effect(base)
    except ValueError as exc:
        config_error = str(exc)
    config_mode = config is not None or config_error is not None
    entry = (config or {}).get(name)
    stable = (entry or {}).get("labels", {}).get(layout.STABLE_LABEL)
    versions = layout.list_versions(base, name)
    configured = None
    if config_error is None:
        configured, _reason = layout.configured_version(config, name, versions)
    registered, registry, aliases = _read_registry(settings, name)
    wanted = set(versions) if hash_all else {stable, aliases.get(CHAMPION), configured}
    disk = {v: _disk_version(base, name, v, v in wanted) for v in versions}
    snapshot = ModelSnapshot(
        name=name,
        model_base=base,
        disk=disk,
        config_mode=config_mode,
        config_error=config_error,
        has_entry=entry is not None,
        stable=stable,
        configured=configured,
        registered=registered,
        registry=registry,
        aliases=aliases,
    )
    if server_url:
        snapshot.server = query_server(server_url, name, timeout_s)
    return snapshot


def query_server(url: str, model: str, timeout_s: float = 1.0) -> ServerView:
    """Ask the server at ``url`` what it serves for ``model`` (never raises).

    Uses this platform's ``GET /v1/mlplatform/status``; a server without it (a real TF Serving)
    is asked for the model's metadata, whose ``model_spec.version`` is the default version.
    """
    from serving.client import PredictionClient, ServingError

    with PredictionClient(url, timeout=timeout_s) as client:
        try:
            status = client.platform_status()
        except ServingError as exc:
            if exc.status_code is None:
                return ServerView(url, False, error=str(exc))
            if exc.status_code != 404:
                return ServerView(url, True, error=str(exc))
            return _metadata_view(client, url, model)
    entry = (status.get("models") or {}).get(model)
    if entry is None:
        return ServerView(url, True, degraded=status.get("reason"), error="model not loaded")
    worker = status.get("worker")
    return ServerView(
        url,
        True,
        entry.get("served_version"),
        {str(k): int(v) for k, v in (entry.get("labels") or {}).items()},
        entry.get("degraded") or status.get("reason"),
        worker=(int(worker["index"]), int(worker["workers"])) if worker else None,
    )


def _metadata_view(client: Any, url: str, model: str) -> ServerView:
    from serving.client import ServingError

    try:
        spec = client.model_metadata(model).get("model_spec", {})
        return ServerView(url, True, int(spec["version"]))
    except (ServingError, KeyError, TypeError, ValueError) as exc:
        return ServerView(url, True, error=f"no served version: {exc}")


def wait_until_served(
    url: str, model: str, version: int, timeout_s: float, poll_s: float = 0.2
) -> ServerView:
    """Poll ``url`` until it serves ``version`` of ``model`` or ``timeout_s`` passes.

    A server of several processes (``--workers N``, its status names the worker that answered;
    each poll is a new connection, which the kernel hands to any worker) serves ``version``
    once every worker has answered it as its latest answer.

    Returns the last answer: unreachable at once if no server answers the first poll; else
    ``served_version == version`` on success, or what it served (or that it went away) at the
    deadline (for several workers: the answer of one that does not serve it yet).
    """
    deadline = time.monotonic() + timeout_s
    ask = min(2.0, max(timeout_s, 0.5))
    view = query_server(url, model, ask)
    if not view.reachable:
        return view
    latest: dict[int, ServerView] = {}
    while True:
        if view.worker is not None:
            latest[view.worker[0]] = view
        if view.served_version == version and (
            view.worker is None
            or (
                len(latest) == view.worker[1]
                and all(v.served_version == version for v in latest.values())
            )
        ):
            return view
        if time.monotonic() >= deadline:
            behind = [v for v in latest.values() if v.served_version != version]
            return behind[0] if behind else view
        time.sleep(poll_s)
        view = query_server(url, model, ask)
