"""Content hash of a SavedModel and the ``mlplatform_version.json`` each published version
carries (see :mod:`serving.layout`)."""

from __future__ import annotations

import hashlib
import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from serving.layout.paths import VERSION_METADATA, _validate_version, validate_model_name


class DigestMismatch(ValueError):
    """A published version's files no longer hash to the digest recorded when it was published."""


def _file_sha256(path: Path) -> bytes:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").digest()


def saved_model_digest(saved_model_dir: str | os.PathLike[str]) -> str:
    """Hex sha256 of a SavedModel directory's content, independent of where it lives.

    Covers every regular file below the directory (``saved_model.pb``, ``variables/``,
    ``assets/``, ``assets.extra/`` with the warm-up records ...): for each, in sorted order
    of its relative POSIX path, the path, a NUL byte and the file's own sha256. The
    platform's metadata file (:data:`VERSION_METADATA`) at the top level is left out, so a
    candidate and its published copy hash the same. Empty directories do not count.
    Raises FileNotFoundError if ``saved_model_dir`` is not a directory.
    """
    root = Path(saved_model_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"not a directory: {root}")
    files: list[tuple[str, Path]] = []
    for dirpath, _dirnames, filenames in os.walk(root):
        for filename in filenames:
            path = Path(dirpath) / filename
            rel = path.relative_to(root).as_posix()
            if rel != VERSION_METADATA and path.is_file():
                files.append((rel, path))
    digest = hashlib.sha256()
    for rel, path in sorted(files):
        digest.update(rel.encode("utf-8") + b"\0")
        digest.update(_file_sha256(path))
    return digest.hexdigest()


def _version_dir(model_base: str | os.PathLike[str], model_name: str, version: int) -> Path:
    return Path(model_base) / validate_model_name(model_name) / str(_validate_version(version))


def read_version_metadata(
    model_base: str | os.PathLike[str], model_name: str, version: int
) -> dict[str, Any] | None:
    """The ``mlplatform_version.json`` of a published version, or None if it has none (legacy).

    Raises ValueError if the file exists but is not a JSON object with a hex ``sha256``.
    """
    path = _version_dir(model_base, model_name, version) / VERSION_METADATA
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"unreadable {path}: {exc}") from exc
    sha = data.get("sha256") if isinstance(data, dict) else None
    if not isinstance(sha, str) or not re.fullmatch(r"[0-9a-f]{64}", sha):
        raise ValueError(f"unreadable {path}: no sha256 digest in it")
    return data


def read_version_digest(
    model_base: str | os.PathLike[str], model_name: str, version: int
) -> str | None:
    """The sha256 recorded when the version was published; None for a legacy directory."""
    metadata = read_version_metadata(model_base, model_name, version)
    return None if metadata is None else str(metadata["sha256"])


def verify_version_digest(model_base: str | os.PathLike[str], model_name: str, version: int) -> str:
    """Hash a published version and compare it with its recorded digest; return the hash.

    Raises DigestMismatch when a digest is recorded and the files hash differently,
    ValueError for unreadable metadata, FileNotFoundError for a missing version. A legacy
    directory (no metadata) is not checked.
    """
    recorded = read_version_digest(model_base, model_name, version)
    actual = saved_model_digest(_version_dir(model_base, model_name, version))
    if recorded is not None and recorded != actual:
        raise DigestMismatch(
            f"model {model_name} version {version} does not match its recorded content hash "
            f"(sha256 {actual[:12]}… on disk != {recorded[:12]}… recorded at publishing)"
        )
    return actual


def _write_version_metadata(
    version_dir: Path, model_name: str, version: int, sha256: str, source: Path
) -> None:
    metadata = {
        "sha256": sha256,
        "published_at": datetime.now(UTC).isoformat(),
        "model": model_name,
        "version": version,
        "source": str(source),
    }
    (version_dir / VERSION_METADATA).write_text(json.dumps(metadata, indent=1) + "\n")


# --------------------------------------------------------------------------- versions
