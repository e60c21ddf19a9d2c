"""Names, locks and durability helpers shared by the layout modules (see :mod:`serving.layout`)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

MODELS_CONFIG = "models.config"
SAVED_MODEL_PB = "saved_model.pb"
STABLE_LABEL = "stable"
VERSION_METADATA = "mlplatform_version.json"

_LOCK_FILE = ".models.config.lock"
_MANAGED_MARKER = ".models.config.managed"
_VERSION_RE = re.compile(r"[0-9]+")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_LABEL_RE = re.compile(r"[A-Za-z0-9_-]+")


def validate_model_name(model_name: str) -> str:
    """Return ``model_name`` if it is a safe directory/URL name, else raise ValueError.

    Allowed: ``[A-Za-z0-9][A-Za-z0-9._-]*`` (no slashes, colons or leading dots, so it
    can appear in ``/v1/models/<name>:predict`` and as a directory name).
    """
    if not isinstance(model_name, str) or not _NAME_RE.fullmatch(model_name):
        raise ValueError(
            f"invalid model name {model_name!r}: use letters, digits, '.', '_' or '-' "
            "and start with a letter or digit"
        )
    return model_name


def _validate_version(version: Any) -> int:
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise ValueError(f"invalid model version {version!r}: must be a non-negative int")
    return version


def _validate_label(label: Any) -> str:
    if not isinstance(label, str) or not _LABEL_RE.fullmatch(label):
        raise ValueError(f"invalid version label {label!r}: use letters, digits, '_' or '-'")
    return label


def _fsync_path(path: Path) -> None:
    """fsync a file or directory; best effort (some filesystems refuse dir fsync)."""
    flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for dirpath, _dirnames, filenames in os.walk(root):
        for filename in filenames:
            _fsync_path(Path(dirpath) / filename)
        _fsync_path(Path(dirpath))


@contextlib.contextmanager
def _config_lock(model_base: Path) -> Iterator[None]:
    model_base.mkdir(parents=True, exist_ok=True)
    with open(model_base / _LOCK_FILE, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


# --------------------------------------------------------------------------- content hash
