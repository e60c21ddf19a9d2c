"""Each disagreement between the records of one model, as a :class:`Finding`."""

from __future__ import annotations

from mlplatform.reconcile.records import (
    CONTENT_SHA256,
    RECOVERED_FROM,
    DiskVersion,
    Finding,
    ModelSnapshot,
)


def short_digest(digest: str | None) -> str:
    """The first 12 hex digits of a digest, for one-line messages."""
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
                    f"MLflow v{number} has no {CONTENT_SHA256} tag (disk: {short_digest(disk.recorded)})",
                    f"tag MLflow v{number} {CONTENT_SHA256}={short_digest(disk.recorded)}",
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
            f"{where} does not match its recorded sha256 ({short_digest(disk.actual)} on disk != "
            f"{short_digest(disk.recorded)} recorded): its files changed after publishing"
        )
    registered = snap.registry.get(number)
    tag = registered.tags.get(CONTENT_SHA256) if registered else None
    if disk.recorded is None and tag and disk.actual and tag != disk.actual:  # legacy directory
        return f"{where} hashes to {short_digest(disk.actual)}, MLflow v{number} says {short_digest(tag)}"
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


def intact_champion(snap: ModelSnapshot) -> int | None:
    """The champion version if its files on disk match their recorded digest, else None."""
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
    champion = intact_champion(snap)
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
