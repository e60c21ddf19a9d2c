"""Private embedded state: the platform home and what holds secrets are for their owner only.

The embedded home holds the Airflow and MLflow databases, the generated UI password and every
run's data, so it is created ``0700`` and the files that hold secrets ``0600``. An existing
directory or file is tightened too, but only when it belongs to the current user and is not a
shared sticky directory (``MLP_HOME=/tmp`` must not lock everyone else out of ``/tmp``).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def _tighten(path: Path, mode: int) -> None:
    info = path.stat()
    if info.st_uid != os.getuid() or info.st_mode & stat.S_ISVTX:
        return
    if stat.S_IMODE(info.st_mode) & 0o077:
        path.chmod(stat.S_IMODE(info.st_mode) & mode)


def private_dir(path: Path) -> Path:
    """Create ``path`` (and missing parents) with mode ``0700``; tighten it if it exists."""
    path.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    _tighten(path, PRIVATE_DIR)
    return path


def private_file(path: Path) -> Path:
    """Tighten an existing file to ``0600`` (no group or other access)."""
    if path.exists():
        _tighten(path, PRIVATE_FILE)
    return path
