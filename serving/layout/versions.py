"""Published versions: list them, publish one atomically (see :mod:`serving.layout`)."""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

from serving.layout.digest import _write_version_metadata, saved_model_digest
from serving.layout.paths import (
    _NAME_RE,
    _VERSION_RE,
    SAVED_MODEL_PB,
    _fsync_path,
    _fsync_tree,
    _validate_version,
    validate_model_name,
)


def list_versions(model_base: str | os.PathLike[str], model_name: str) -> list[int]:
    """Sorted (ascending) integer versions of ``model_name`` that are complete.

    A version counts only if ``<model_base>/<model_name>/<digits>/saved_model.pb``
    exists; hidden temp/trash directories and anything non-numeric are ignored.
    A missing model directory gives ``[]``.
    """
    model_dir = Path(model_base) / model_name
    try:
        entries = list(os.scandir(model_dir))
    except (FileNotFoundError, NotADirectoryError):
        return []
    versions: set[int] = set()
    for entry in entries:
        if _VERSION_RE.fullmatch(entry.name) and (Path(entry.path) / SAVED_MODEL_PB).is_file():
            versions.add(int(entry.name))
    return sorted(versions)


def list_models(model_base: str | os.PathLike[str]) -> list[str]:
    """Sorted names of models under ``model_base`` that have at least one complete version."""
    base = Path(model_base)
    try:
        entries = list(os.scandir(base))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(
        e.name
        for e in entries
        if _NAME_RE.fullmatch(e.name) and e.is_dir() and list_versions(base, e.name)
    )


def publish_version(
    model_base: str | os.PathLike[str],
    model_name: str,
    version: int,
    saved_model_dir: str | os.PathLike[str],
    *,
    expected_sha256: str | None = None,
) -> Path:
    """Atomically publish ``saved_model_dir`` as ``<model_base>/<model_name>/<version>``.

    The SavedModel is copied to ``<model_name>/.tmp-<version>-<random>``, hashed
    (:func:`saved_model_digest`), given its ``mlplatform_version.json``, fsynced, then
    renamed into place with ``os.rename`` (atomic on POSIX within one filesystem), so a
    poller never sees a half-copied or unhashed version. Existing versions are left
    untouched. A ``mlplatform_version.json`` inside ``saved_model_dir`` is replaced.

    Returns the final version directory.

    Raises:
        ValueError: ``saved_model_dir`` has no ``saved_model.pb``, bad name/version, or the
            copy does not hash to ``expected_sha256`` (when given); nothing is published.
        FileExistsError: that version is already published (versions are immutable).
    """
    validate_model_name(model_name)
    _validate_version(version)
    src = Path(saved_model_dir)
    if not (src / SAVED_MODEL_PB).is_file():
        raise ValueError(f"not a SavedModel: {src} has no {SAVED_MODEL_PB}")
    model_dir = Path(model_base) / model_name
    target = model_dir / str(version)
    if target.exists():
        raise FileExistsError(f"model {model_name!r} version {version} already exists at {target}")
    model_dir.mkdir(parents=True, exist_ok=True)
    tmp = model_dir / f".tmp-{version}-{secrets.token_hex(4)}"
    try:
        shutil.copytree(src, tmp)
        digest = saved_model_digest(tmp)
        if expected_sha256 is not None and digest != expected_sha256:
            raise ValueError(
                f"copy of {src} hashes to sha256 {digest[:12]}…, not the expected "
                f"{expected_sha256[:12]}…; not published"
            )
        _write_version_metadata(tmp, model_name, version, digest, src)
        _fsync_tree(tmp)
        if target.exists():  # lost a race with another publisher while copying
            raise FileExistsError(
                f"model {model_name!r} version {version} already exists at {target}"
            )
        try:
            os.rename(tmp, target)
        except OSError as exc:  # ENOTEMPTY/EEXIST: someone else won the race
            raise FileExistsError(
                f"model {model_name!r} version {version} already exists at {target}"
            ) from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_path(model_dir)
    return target
