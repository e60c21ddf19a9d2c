"""What ``mlplatform status`` and ``mlplatform doctor`` print."""

from __future__ import annotations

from mlplatform import decisions
from mlplatform.monitoring.state import status_lines as drift_status_lines
from mlplatform.reconcile.findings import findings, short_digest
from mlplatform.reconcile.inspect import inspect_model, model_names, wait_until_served
from mlplatform.reconcile.records import CONTENT_SHA256, ModelSnapshot, ServerView
from mlplatform.reconcile.repair import repair
from mlplatform.settings import Settings


def _select(settings: Settings, model: str | None) -> list[str]:
    names = model_names(settings)
    if model is None:
        return names
    if model not in names:
        raise LookupError(f"no model {model!r} in MLflow, the model base or models.config")
    return [model]


def _server_line(view: ServerView | None) -> str | None:
    if view is None:
        return None
    if not view.reachable:
        return f"  server not reachable at {view.url}"
    served = f"v{view.served_version}" if view.served_version is not None else "nothing"
    state = f" (degraded: {view.degraded})" if view.degraded else ""
    return f"  server {view.url}: serves {served}{state}"


def describe(snap: ModelSnapshot, max_versions: int = 10) -> list[str]:
    """``status`` lines for one model: served version and aliases, versions, the server."""
    if snap.config_error:
        served = "unknown (models.config unusable)"
    else:
        served = str(snap.configured)
        if snap.configured is not None and snap.configured == snap.stable:
            served += " (stable label)"
        elif snap.configured is not None:
            served += " (version policy)" if snap.config_mode else " (newest: no models.config)"
    aliases = dict(sorted(snap.aliases.items()))
    lines = [f"{snap.name}: served version {served}, aliases {aliases}"]
    for number in sorted(set(snap.registry) | set(snap.disk), reverse=True)[:max_versions]:
        registered, disk = snap.registry.get(number), snap.disk.get(number)
        tags = registered.tags if registered else {}
        gate = " ".join(f"{k}={v}" for k, v in sorted(tags.items()) if k.startswith("gate_"))
        where = "" if disk else "  (not on disk)"
        if registered is None:
            where = "  (not in MLflow)"
        lines.append(
            f"  v{number}  data={tags.get('data_version', '?')[:12]}  {gate or 'gate=-'}  "
            f"sha256={short_digest(disk.digest if disk else tags.get(CONTENT_SHA256))}  "
            f"run={(registered.run_id if registered else None) or '-'}{where}"
        )
    server = _server_line(snap.server)
    return [*lines, *([server] if server else [])]


def status_report(settings: Settings, model: str | None, server_url: str | None) -> list[str]:
    """``mlplatform status`` lines: each model, then each disagreement as a ``! `` line, then
    the latest retrain decisions of its pipeline(s).

    Hashes only the stable and champion versions. Raises LookupError for an unknown model.
    """
    names = _select(settings, model)
    if not names:
        return ["no registered models yet: run `mlplatform demo`"]
    lines: list[str] = []
    for name in names:
        snap = inspect_model(settings, name, hash_all=False, server_url=server_url)
        found = findings(snap)
        lines += describe(snap) + drift_status_lines(settings, name) + [f.line() for f in found]
        if any(f.repairable for f in found):
            lines.append(f"  (`mlplatform doctor {name} --repair` fixes what it can)")
        lines += decisions.model_status_lines(settings, name)
    return lines


def doctor_report(
    settings: Settings,
    model: str | None,
    *,
    fix: bool,
    server_url: str | None,
    wait_s: float = 10.0,
) -> tuple[list[str], bool]:
    """``mlplatform doctor`` lines and whether everything agrees (after repairing, with ``fix``).

    Every version is hashed. After a repair, waits up to ``wait_s`` for a reachable server to
    follow ``models.config``. Raises LookupError for an unknown model, ReconcileError.
    """
    lines: list[str] = []
    healthy = True
    for name in _select(settings, model):
        snap = inspect_model(settings, name, server_url=server_url)
        found = findings(snap)
        if fix and any(f.repairable for f in found):
            lines += [f"repaired {name}: {done}" for done in repair(settings, name, found)]
            snap = inspect_model(settings, name)
            if server_url and snap.configured is not None:
                wait_until_served(server_url, name, snap.configured, wait_s)
            snap = inspect_model(settings, name, server_url=server_url)
            found = findings(snap)
        lines += [f.line() for f in found]
        server = _server_line(snap.server) if snap.server and not snap.server.reachable else None
        lines += [server] if server else []
        if not found and not snap.disk:
            lines.append(f"{name}: ok (registered only, nothing published)")
        elif not found:
            lines.append(f"{name}: ok (served v{snap.configured}, champion v{snap.champion})")
        healthy = healthy and not found
    return lines, healthy
