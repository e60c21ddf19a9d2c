"""Reconcile what serves with what is recorded: MLflow, ``models.config``, the model base, a server.

Four records say which model serves, and after a lost database, a hand-edited config or a
corrupted file they can disagree:

* the MLflow registry: model versions, alias ``champion``, tag ``content_sha256``;
* ``models.config``: label ``stable`` (:func:`serving.layout.configured_version`);
* the model base: ``<model>/<version>/`` and the digest recorded at publishing;
* a running server: what ``GET /v1/mlplatform/status`` (or TF Serving's metadata) answers.

:func:`inspect_model` reads them into a :class:`ModelSnapshot`; :func:`findings` lists each
disagreement as a :class:`Finding` (one line, and what ``doctor --repair`` would do);
:func:`repair` applies the safe fixes: re-register the model base's versions into a lost, reset or
lagging registry so that version numbers line up again (a reset registry is renamed aside first,
nothing deleted), rewrite ``models.config`` from the champion alias when that version is intact,
move the champion alias to what ``models.config`` serves, and backfill missing digest tags. A
version whose files no longer match their digest is reported, never "repaired".
:func:`wait_until_served` polls a server until it serves a version (``mlplatform rollback``).

No TensorFlow here; MLflow is imported when the registry is read.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlplatform.settings import Settings

CHAMPION = "champion"
CONTENT_SHA256 = "content_sha256"
RECOVERED_FROM = "recovered_from"
STATUS_PATH = "/v1/mlplatform/status"


class ReconcileError(RuntimeError):
    """A repair step could not be completed; ``str()`` is one line."""


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class DiskVersion:
    """One published version: the digest recorded at publishing and the one its files give now.

    ``actual`` is None when the files were not hashed (a shallow inspection).
    """

    version: int
    recorded: str | None
    actual: str | None
    published_at: datetime | None
    metadata_error: str | None = None

    @property
    def intact(self) -> bool:
        """False only when the files are known to differ from their recorded digest."""
        return self.metadata_error is None and not (
            self.recorded and self.actual and self.recorded != self.actual
        )

    @property
    def digest(self) -> str | None:
        """The best-known digest of the content: recorded, else computed."""
        return self.recorded or self.actual


@dataclass(frozen=True)
class RegisteredVersion:
    """One MLflow model version (not deleted)."""

    version: int
    created: datetime
    tags: dict[str, str]
    run_id: str | None = None


@dataclass(frozen=True)
class ServerView:
    """What a server answered for one model; ``error`` says why it could not be asked."""

    url: str
    reachable: bool
    served_version: int | None = None
    labels: dict[str, int] = field(default_factory=dict)
    degraded: str | None = None
    error: str | None = None


@dataclass
class ModelSnapshot:
    """Everything the platform records about one model, read once."""

    name: str
    model_base: Path
    disk: dict[int, DiskVersion]
    config_mode: bool  # a models.config governs the model base
    config_error: str | None  # unreadable or lost
    has_entry: bool
    stable: int | None
    configured: int | None  # what the server serves by the config's rule
    registered: bool  # the registered model exists in MLflow
    registry: dict[int, RegisteredVersion]
    aliases: dict[str, int]
    server: ServerView | None = None

    @property
    def champion(self) -> int | None:
        """The version alias ``champion`` points at, if any."""
        return self.aliases.get(CHAMPION)


@dataclass(frozen=True)
class Finding:
    """One disagreement: ``problem`` and ``action`` are one line each.

    ``repairable``: ``doctor --repair`` does ``action``; otherwise ``action`` says what the user
    must do.
    """

    model: str
    kind: str
    problem: str
    action: str
    repairable: bool
    version: int | None = None  # the version a version-level finding is about

    def line(self) -> str:
        """``! <model>: <problem> -> <action>``."""
        return f"! {self.model}: {self.problem} -> {self.action}"


# --------------------------------------------------------------------------- reading


def _mlflow(settings: Settings) -> Any:
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
    names |= {m.name for m in _mlflow(settings).search_registered_models()}
    return sorted(names)


def _read_registry(
    settings: Settings, name: str
) -> tuple[bool, dict[int, RegisteredVersion], dict[str, int]]:
    from mlflow.exceptions import MlflowException

    c = _mlflow(settings)
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


# --------------------------------------------------------------------------- the server


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
    return ServerView(
        url,
        True,
        entry.get("served_version"),
        {str(k): int(v) for k, v in (entry.get("labels") or {}).items()},
        entry.get("degraded") or status.get("reason"),
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

    Returns the last answer: unreachable at once if no server answers the first poll; else
    ``served_version == version`` on success, or what it served (or that it went away) at the
    deadline.
    """
    deadline = time.monotonic() + timeout_s
    ask = min(2.0, max(timeout_s, 0.5))
    view = query_server(url, model, ask)
    if not view.reachable:
        return view
    while view.served_version != version and time.monotonic() < deadline:
        time.sleep(poll_s)
        view = query_server(url, model, ask)
    return view


# --------------------------------------------------------------------------- findings


def _short(digest: str | None) -> str:
    return f"{digest[:12]}…" if digest else "none"


def _conflicts(snap: ModelSnapshot) -> list[int]:
    """MLflow versions that are not the model on disk under the same number.

    A version tagged with another digest than the intact directory's, or, untagged, registered
    after the directory was published (it cannot be its source): the registry was reset and its
    numbers reused.
    """
    bad = []
    for number, registered in sorted(snap.registry.items()):
        disk = snap.disk.get(number)
        if disk is None or not disk.intact:
            continue
        tag = registered.tags.get(CONTENT_SHA256)
        if tag is not None:
            if disk.digest and tag != disk.digest:
                bad.append(number)
        elif disk.published_at is not None and registered.created > disk.published_at:
            bad.append(number)
    return bad


def _registry_findings(snap: ModelSnapshot) -> list[Finding]:
    name, on_disk = snap.name, sorted(snap.disk)
    if not on_disk:
        return []
    listed = ", ".join(f"v{v}" for v in on_disk)
    reregister = (
        f"re-register v1..v{on_disk[-1]} from the model base "
        f"(tags {CONTENT_SHA256}, {RECOVERED_FROM}=model_base), then alias champion -> stable"
    )
    if not snap.registry:
        return [
            Finding(
                name,
                "registry_lost",
                f"MLflow has no versions of {name}, but the model base holds {listed}",
                reregister,
                True,
            )
        ]
    conflicts = _conflicts(snap)
    if conflicts:
        numbers = ", ".join(f"v{v}" for v in conflicts)
        return [
            Finding(
                name,
                "registry_reset",
                f"MLflow holds other models than the model base under {numbers} of {name} "
                "(registered after publishing, or another content_sha256): the registry was reset",
                f"rename registered model {name} aside to {name}.orphaned-<time> "
                "(nothing deleted), "
                f"then {reregister}",
                True,
            )
        ]
    found = []
    behind = [v for v in on_disk if v > max(snap.registry)]
    if behind:
        missing = ", ".join(f"v{v}" for v in behind)
        found.append(
            Finding(
                name,
                "registry_behind",
                f"the model base holds {missing}, which MLflow does not know",
                f"register v{max(snap.registry) + 1}..v{behind[-1]} from the model base",
                True,
            )
        )
    for number, registered in sorted(snap.registry.items()):
        disk = snap.disk.get(number)
        if disk and disk.recorded and disk.intact and CONTENT_SHA256 not in registered.tags:
            found.append(
                Finding(
                    name,
                    "tag_missing",
                    f"MLflow v{number} has no {CONTENT_SHA256} tag (disk: {_short(disk.recorded)})",
                    f"tag MLflow v{number} {CONTENT_SHA256}={_short(disk.recorded)}",
                    True,
                    number,
                )
            )
    return found


def _digest_problem(snap: ModelSnapshot, number: int, disk: DiskVersion) -> str | None:
    """Why the files of a version are not what was published (None if they are, or unknown)."""
    where = f"models/{snap.name}/{number}"
    if disk.metadata_error:
        return f"{where}: {disk.metadata_error}"
    if not disk.intact:
        return (
            f"{where} does not match its recorded sha256 ({_short(disk.actual)} on disk != "
            f"{_short(disk.recorded)} recorded): its files changed after publishing"
        )
    registered = snap.registry.get(number)
    tag = registered.tags.get(CONTENT_SHA256) if registered else None
    if disk.recorded is None and tag and disk.actual and tag != disk.actual:  # legacy directory
        return f"{where} hashes to {_short(disk.actual)}, MLflow v{number} says {_short(tag)}"
    return None


def _digest_findings(snap: ModelSnapshot) -> list[Finding]:
    found = []
    for number, disk in sorted(snap.disk.items()):
        problem = _digest_problem(snap, number, disk)
        if problem is None:
            continue
        served = " (the served version)" if number == snap.configured else ""
        found.append(
            Finding(
                snap.name,
                "digest_mismatch",
                problem + served,
                f"not repaired: roll back to another version or re-promote v{number}",
                False,
                number,
            )
        )
    return found


def _intact_champion(snap: ModelSnapshot) -> int | None:
    champion = snap.champion
    disk = snap.disk.get(champion) if champion is not None else None
    return champion if disk is not None and disk.intact else None


def _config_findings(snap: ModelSnapshot) -> list[Finding]:
    name = snap.name
    if not snap.disk and not snap.has_entry:
        return []
    keeps = " (servers keep their last good version)"
    if snap.config_error:
        problem = f"models.config unusable: {snap.config_error}{keeps}"
    elif not snap.config_mode:
        problem = f"no models.config: a server serves the newest version v{max(snap.disk)}"
        if snap.champion is None or snap.champion == max(snap.disk):
            return []
    elif not snap.has_entry:
        problem = f"models.config has no entry for {name}{keeps}"
    elif snap.stable is not None and snap.stable not in snap.disk:
        problem = f"models.config labels v{snap.stable} stable, which is not on disk{keeps}"
    elif snap.stable is None and snap.champion is not None:
        problem = f"models.config has no stable label (champion is v{snap.champion})"
    else:
        return []
    champion = _intact_champion(snap)
    if champion is not None:
        action, repairable = f"rewrite models.config with stable = champion v{champion}", True
    else:
        action = (
            f"cannot repair: no intact champion version; run `mlplatform rollback {name} --to N`"
        )
        repairable = False
    return [Finding(name, "config", problem, action, repairable)]


def _alias_findings(snap: ModelSnapshot) -> list[Finding]:
    stable, champion = snap.stable, snap.champion
    if snap.config_error or stable is None or stable not in snap.disk or champion == stable:
        return []
    if champion is None:
        problem = f"alias champion is not set; models.config serves stable v{stable}"
    else:
        problem = f"alias champion -> v{champion} but models.config serves stable v{stable}"
    if stable in snap.registry and stable not in _conflicts(snap):
        return [Finding(snap.name, "alias", problem, f"move alias champion to v{stable}", True)]
    return [Finding(snap.name, "alias", problem, "repair the registry first", False)]


def _server_findings(snap: ModelSnapshot) -> list[Finding]:
    view = snap.server
    if view is None or not view.reachable or not (snap.disk or snap.has_entry):
        return []
    if view.error and view.served_version is None:
        problem = f"the server at {view.url} serves nothing: {view.degraded or view.error}"
    elif view.served_version != snap.configured or view.degraded:
        says = f"v{snap.configured}" if snap.configured is not None else "nothing valid"
        serves = f"v{view.served_version}" if view.served_version is not None else "nothing"
        problem = f"the server at {view.url} serves {serves}, models.config says {says}"
        if view.degraded:
            problem += f" (degraded: {view.degraded})"
    else:
        return []
    action = "not repaired here: the server follows models.config once it names a loadable version"
    return [Finding(snap.name, "server", problem, action, False)]


def findings(snap: ModelSnapshot) -> list[Finding]:
    """Every disagreement between the records of one model, most fundamental first."""
    return [
        *_registry_findings(snap),
        *_digest_findings(snap),
        *_config_findings(snap),
        *_alias_findings(snap),
        *_server_findings(snap),
    ]


# --------------------------------------------------------------------------- repair


def _register_from_disk(settings: Settings, snap: ModelSnapshot, after: int) -> list[int]:
    """Create MLflow versions after..max(disk) from the version directories; numbers must match.

    A number missing on disk gets a placeholder version that is deleted at once (MLflow never
    reuses a number), so the next on-disk version keeps its number.
    """
    c = _mlflow(settings)
    created = []
    for number in range(after + 1, max(snap.disk) + 1):
        source = (snap.model_base / snap.name / str(number)).as_uri()
        disk = snap.disk.get(number)
        tags = {RECOVERED_FROM: "model_base"}
        if disk is not None and disk.digest:
            tags[CONTENT_SHA256] = disk.digest
        mv = c.create_model_version(snap.name, source=source, tags=tags)
        if int(mv.version) != number:
            c.delete_model_version(snap.name, mv.version)
            raise ReconcileError(
                f"MLflow numbered the recovered {snap.name} v{number} as v{mv.version} (deleted "
                "versions keep their numbers); stopped"
            )
        if disk is None:
            c.delete_model_version(snap.name, mv.version)
        else:
            created.append(number)
    return created


def _repair_registry(settings: Settings, snap: ModelSnapshot, kinds: set[str]) -> list[str]:
    c = _mlflow(settings)
    done = []
    after = max(snap.registry, default=0)
    if "registry_reset" in kinds or (snap.registered and not snap.registry):
        # a reset registry, or one whose versions were all deleted: MLflow would not reuse the
        # numbers, so the old registered model goes aside (renamed, nothing deleted)
        aside = f"{snap.name}.orphaned-{datetime.now(UTC):%Y%m%dT%H%M%S}"
        c.rename_registered_model(snap.name, aside)
        done.append(f"renamed registered model {snap.name} to {aside}")
        snap.registered, after = False, 0
    if "registry_lost" in kinds or "registry_reset" in kinds or "registry_behind" in kinds:
        if not snap.registered:
            c.create_registered_model(snap.name, tags={RECOVERED_FROM: "model_base"})
        created = _register_from_disk(settings, snap, after)
        done.append(
            f"registered {', '.join(f'v{v}' for v in created)} of {snap.name} from the model base"
        )
    return done


def _rewrite_config(settings: Settings, name: str, version: int) -> str:
    """Point ``stable`` of ``name`` at ``version``; an unreadable config is rebuilt from aliases."""
    from serving import layout

    base = settings.models_dir
    try:
        layout.set_label(base, name, layout.STABLE_LABEL, version)
        return f"models.config: {name} stable -> v{version}"
    except ValueError:
        pass  # unreadable: rebuild every model's stable label from its intact champion
    labels: dict[str, dict[str, int]] = {name: {layout.STABLE_LABEL: version}}
    for other in layout.list_models(base):
        if other != name:
            champion = _intact_champion(inspect_model(settings, other, hash_all=False))
            if champion is not None:
                labels[other] = {layout.STABLE_LABEL: champion}
    layout.write_models_config(base, labels)
    rebuilt = ", ".join(f"{m} stable -> v{lbl[layout.STABLE_LABEL]}" for m, lbl in labels.items())
    return f"rewrote models.config from the champion aliases: {rebuilt}"


def repair(settings: Settings, name: str, found: list[Finding]) -> list[str]:
    """Apply the repairable ``found`` findings of ``name``, in order; return what was done.

    Registry first (so the champion alias can be set), then ``models.config`` from the champion,
    then the alias from ``models.config``, then missing digest tags. Each step re-reads the records.
    Raises ReconcileError (one line) if a step cannot be completed.
    """
    done: list[str] = []
    kinds = {f.kind for f in found if f.repairable}
    if kinds & {"registry_lost", "registry_reset", "registry_behind"}:
        done += _repair_registry(settings, inspect_model(settings, name), kinds)
    snap = inspect_model(settings, name)
    c = _mlflow(settings)
    config_fix = [f for f in findings(snap) if f.kind == "config" and f.repairable]
    if config_fix:
        champion = _intact_champion(snap)
        if champion is None:  # a repairable config finding names an intact champion
            raise ReconcileError(f"{name}: the champion version is no longer intact; stopped")
        done.append(_rewrite_config(settings, name, champion))
        snap = inspect_model(settings, name)
    for finding in findings(snap):
        if finding.kind == "alias" and finding.repairable:
            c.set_registered_model_alias(name, CHAMPION, str(snap.stable))
            done.append(f"alias champion of {name} -> v{snap.stable}")
        elif finding.kind == "tag_missing" and finding.version is not None:
            number = finding.version
            c.set_model_version_tag(name, str(number), CONTENT_SHA256, snap.disk[number].recorded)
            done.append(f"tagged MLflow {name} v{number} {CONTENT_SHA256}")
    return done


# --------------------------------------------------------------------------- reports


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
            f"sha256={_short(disk.digest if disk else tags.get(CONTENT_SHA256))}  "
            f"run={(registered.run_id if registered else None) or '-'}{where}"
        )
    server = _server_line(snap.server)
    return [*lines, *([server] if server else [])]


def status_report(settings: Settings, model: str | None, server_url: str | None) -> list[str]:
    """``mlplatform status`` lines: each model, then each disagreement as a ``! `` line.

    Hashes only the stable and champion versions. Raises LookupError for an unknown model.
    """
    names = _select(settings, model)
    if not names:
        return ["no registered models yet: run `mlplatform demo`"]
    lines: list[str] = []
    for name in names:
        snap = inspect_model(settings, name, hash_all=False, server_url=server_url)
        found = findings(snap)
        lines += describe(snap) + [f.line() for f in found]
        if any(f.repairable for f in found):
            lines.append(f"  (`mlplatform doctor {name} --repair` fixes what it can)")
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
