"""``mlplatform reset NAME [--features]``: start a pipeline's feature history (and markers) afresh.

What it removes, and nothing else:

* always, the pipeline's Feast state, ``<home>/feast/<name>/``: the offline store (``offline/``,
  one Parquet file per validated batch), the registry (``registry.db``), the SQLite online
  store (``online.db``) and the platform's apply record and materialization ledger
  (``applied_definitions.json``, ``materialized.json``); with ``MLP_FEAST_ONLINE_STORE=redis`` the project's online keys are torn
  down through Feast first;
* without ``--features``, also the run storage markers of the pipeline: the regular files directly
  in ``<storage>/<name>/`` (``last_validated.json``, ...) and the trainer checkpoints
  ``<storage>/<name>/checkpoints/``.

It keeps the run directories ``<storage>/<name>/<run>/`` (MLflow lineage tags point at their
training sets), the DVC data repository, the quarantine, MLflow runs and models, and the served
versions. The next run lands its batch in an empty offline store, so the training history starts
from that batch. It asks nothing, refuses while a run of the pipeline is alive, and returns one
line per thing it removed.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from mlplatform.settings import Settings
from mlplatform.storage import to_path

NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class ResetRefused(RuntimeError):
    """The reset would pull state from under a live run (or the name is not a pipeline name)."""


def _live_run(settings: Settings, name: str) -> str | None:
    from mlplatform import runs

    holder = runs.current(settings, name)
    if holder is None or runs.staleness(holder, settings.run_stale_s) is not None:
        return None
    return holder.describe()


def _describe_feast(root: Path) -> str:
    batches = len(list((root / "offline").glob("*.parquet")))
    names = ("registry.db", "online.db", "applied_definitions.json", "materialized.json")
    present = [n for n in names if (root / n).exists()]
    return ", ".join([f"offline store of {batches} batch file(s)", *present])


def _teardown_redis(name: str, settings: Settings) -> str | None:
    """Tear the project's online keys out of Redis through Feast; a line saying what failed."""
    if settings.feast_online_store != "redis":
        return None
    from mlplatform.stages.features import feature_store_for

    try:
        feature_store_for(name, settings).teardown()
    except Exception as exc:  # noqa: BLE001 - report, then remove the files all the same
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return f"could not tear down the Redis online keys of {name!r}: {first}"
    return None


def _remove_feast(name: str, settings: Settings) -> list[str]:
    root = settings.feast_dir / name
    if not root.exists():
        return []
    lines = []
    failure = (root / "registry.db").exists() and _teardown_redis(name, settings)
    if failure:
        lines.append(failure)
    what = _describe_feast(root)
    shutil.rmtree(root)
    lines.append(f"removed {root} (Feast: {what})")
    return lines


def _remove_markers(name: str, settings: Settings) -> list[str]:
    root = to_path(settings.storage) / name
    if not root.is_dir():
        return []
    lines = []
    for path in sorted(root.iterdir()):
        if path.is_file() or path.is_symlink():
            path.unlink()
            lines.append(f"removed {path}")
    checkpoints = root / "checkpoints"
    if checkpoints.is_dir():
        shutil.rmtree(checkpoints)
        lines.append(f"removed {checkpoints} (trainer checkpoints)")
    return lines


def reset_pipeline(settings: Settings, name: str, features_only: bool = False) -> list[str]:
    """Remove the pipeline's state listed in the module docstring; returns one line per removal
    (none when there was nothing to remove). Raises :class:`ResetRefused` for a name that is not
    a pipeline name or while a run of the pipeline is alive."""
    if not NAME.fullmatch(name):
        raise ResetRefused(f"{name!r} is not a pipeline name (lowercase letters, digits, _)")
    live = _live_run(settings, name)
    if live:
        raise ResetRefused(
            f"{live} is in progress; reset {name!r} after it ends (or stop it first)"
        )
    lines = _remove_feast(name, settings)
    if not features_only:
        lines += _remove_markers(name, settings)
    return lines
