"""The safe repairs of ``mlplatform doctor --repair``."""

from __future__ import annotations

from datetime import UTC, datetime

from mlplatform.reconcile.findings import findings, intact_champion
from mlplatform.reconcile.inspect import inspect_model, mlflow_client
from mlplatform.reconcile.records import (
    CHAMPION,
    CONTENT_SHA256,
    RECOVERED_FROM,
    Finding,
    ModelSnapshot,
    ReconcileError,
)
from mlplatform.settings import Settings


def _register_from_disk(settings: Settings, snap: ModelSnapshot, after: int) -> list[int]:
    """Create MLflow versions after..max(disk) from the version directories; numbers must match.

    A number missing on disk gets a placeholder version that is deleted at once (MLflow never
    reuses a number), so the next on-disk version keeps its number.
    """
    c = mlflow_client(settings)
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
    c = mlflow_client(settings)
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
            champion = intact_champion(inspect_model(settings, other, hash_all=False))
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
    c = mlflow_client(settings)
    config_fix = [f for f in findings(snap) if f.kind == "config" and f.repairable]
    if config_fix:
        champion = intact_champion(snap)
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
