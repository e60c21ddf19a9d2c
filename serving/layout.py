"""TF Serving on-disk model layout: versioned SavedModels plus ``models.config``.

Layout (exactly what ``tensorflow_model_server --model_config_file`` consumes)::

    <model_base>/
        models.config                 # ModelServerConfig text proto (labels, version policy)
        <model_name>/
            <version>/saved_model.pb  # one directory per integer version
            <version>/variables/...
            .tmp-<version>-<random>/  # in-flight publish, ignored by everyone
            .trash-<version>-<random>/ # in-flight removal, ignored by everyone

Contract:

* A version is visible (``list_versions``) only once ``<version>/saved_model.pb`` exists.
  ``publish_version`` copies into a hidden temp directory and ``os.rename``-s it into
  place, so readers (this package's server, or a real TF Serving) never see a partial
  SavedModel. Published versions are immutable: publishing an existing version fails.
* ``models.config`` is always replaced atomically (temp file + ``os.replace``); writers
  in this module serialise on ``<model_base>/.models.config.lock`` (``fcntl.flock``).
* Every published version carries ``<version>/mlplatform_version.json``
  (``{"sha256", "published_at", "model", "version", "source"}``): the content hash of the
  SavedModel (:func:`saved_model_digest`), written before the rename. TF Serving ignores
  unknown top-level files. Directories published before this existed have none (legacy).
* Once this module has written ``models.config`` it leaves ``.models.config.managed``
  beside it, so a later reader knows a config governs serving even if the file is gone.
* The *served* version of a model (:func:`configured_version`): with a ``models.config``
  in effect, exactly what it says (the ``stable`` label; for an entry without one, its
  version policy as TF Serving applies it) or nothing; only when no config has ever
  governed the model base, the newest version on disk (TF Serving's
  ``--model_base_path`` mode).

This module does not import TensorFlow; it only needs ``protobuf`` and the
``tensorflow_serving.config`` protos shipped with ``tensorflow-serving-api``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = [
    "MODELS_CONFIG",
    "SAVED_MODEL_PB",
    "STABLE_LABEL",
    "VERSION_METADATA",
    "DigestMismatch",
    "config_in_effect",
    "configured_version",
    "list_models",
    "list_versions",
    "publish_version",
    "read_config_in_effect",
    "read_models_config",
    "read_version_digest",
    "read_version_metadata",
    "remove_label",
    "remove_version",
    "saved_model_digest",
    "served_version",
    "set_label",
    "validate_model_name",
    "verify_version_digest",
    "write_models_config",
]

MODELS_CONFIG = "models.config"
SAVED_MODEL_PB = "saved_model.pb"
STABLE_LABEL = "stable"
VERSION_METADATA = "mlplatform_version.json"

_LOCK_FILE = ".models.config.lock"
_MANAGED_MARKER = ".models.config.managed"
_VERSION_RE = re.compile(r"[0-9]+")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_LABEL_RE = re.compile(r"[A-Za-z0-9_-]+")


# --------------------------------------------------------------------------- helpers


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


class DigestMismatch(ValueError):
    """A published version's files no longer hash to the digest recorded when it was published."""


def _file_sha256(path: Path) -> bytes:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.digest()


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


def remove_version(model_base: str | os.PathLike[str], model_name: str, version: int) -> None:
    """Remove a published version: rename it to a hidden trash dir, then delete it.

    The rename makes the version disappear atomically for pollers. Refuses (ValueError)
    to remove a version that a label in ``models.config`` still points to; move or drop
    the label first (``set_label`` / ``remove_label``). Raises FileNotFoundError if the
    version does not exist.
    """
    validate_model_name(model_name)
    _validate_version(version)
    base = Path(model_base)
    model_dir = base / model_name
    target = model_dir / str(version)
    with _config_lock(base):
        if not target.is_dir():
            raise FileNotFoundError(f"model {model_name!r} version {version} does not exist")
        labels = read_models_config(base).get(model_name, {}).get("labels", {})
        pointing = sorted(lbl for lbl, v in labels.items() if v == version)
        if pointing:
            raise ValueError(
                f"model {model_name!r} version {version} is still labelled "
                f"{', '.join(pointing)}; relabel before removing it"
            )
        trash = model_dir / f".trash-{version}-{secrets.token_hex(4)}"
        os.rename(target, trash)
        _fsync_path(model_dir)
    shutil.rmtree(trash, ignore_errors=True)


# --------------------------------------------------------------------------- models.config


def read_models_config(model_base: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """Parse ``<model_base>/models.config``.

    Returns ``{model_name: {"labels": {label: version}, "versions": [int, ...],
    "policy": "specific" | "latest" | "all", "base_path": str}}``; ``versions`` lists the
    ``specific`` policy's versions (descending, as written) and is ``[]`` for other
    policies. A missing file gives ``{}``; an unparsable one raises ValueError.
    """
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    path = Path(model_base) / MODELS_CONFIG
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    config = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as exc:
        raise ValueError(f"cannot parse {path}: {exc}".replace("\n", " ")) from exc
    result: dict[str, dict[str, Any]] = {}
    for model in config.model_config_list.config:
        policy_kind = model.model_version_policy.WhichOneof("policy_choice") or "latest"
        versions = (
            [int(v) for v in model.model_version_policy.specific.versions]
            if policy_kind == "specific"
            else []
        )
        result[model.name] = {
            "labels": {label: int(v) for label, v in sorted(model.version_labels.items())},
            "versions": versions,
            "policy": policy_kind,
            "base_path": model.base_path,
        }
    return result


def _pinned_versions(labels: Mapping[str, int], on_disk: list[int]) -> list[int]:
    """Versions a real TF Serving should keep loaded: labelled ones + the one before stable."""
    pinned = set(labels.values())
    stable = labels.get(STABLE_LABEL)
    if stable is not None:
        older = [v for v in on_disk if v < stable]
        if older:
            pinned.add(older[-1])
    return sorted(pinned, reverse=True)


def write_models_config(
    model_base: str | os.PathLike[str], labels: Mapping[str, Mapping[str, int]]
) -> Path:
    """Atomically (re)write ``<model_base>/models.config`` from ``labels``.

    ``labels`` maps model name -> {label: version}; it *replaces* all labels in the file
    (use ``set_label`` to change one label). Every model present on disk is written, so
    a real TF Serving using this file serves all of them:

    * a model with labels gets ``model_version_policy { specific { versions: ... } }``
      listing its labelled versions plus the version just below ``stable`` (kept warm for
      rollback), and ``version_labels`` entries;
    * a model without labels gets ``latest { num_versions: 2 }``.

    Raises ValueError for a bad name/label/version or a label pointing to a version that
    is not on disk. Returns the config path.
    """
    base = Path(model_base)
    with _config_lock(base):
        return _write_models_config_locked(base, labels)


def _write_models_config_locked(base: Path, labels: Mapping[str, Mapping[str, int]]) -> Path:
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    for model_name, model_labels in labels.items():
        validate_model_name(model_name)
        on_disk = set(list_versions(base, model_name))
        for label, version in model_labels.items():
            _validate_label(label)
            _validate_version(version)
            if version not in on_disk:
                raise ValueError(
                    f"label {label!r} of model {model_name!r} points to version {version}, "
                    "which is not published"
                )

    config = model_server_config_pb2.ModelServerConfig()
    for model_name in sorted(set(labels) | set(list_models(base))):
        model_labels = dict(labels.get(model_name, {}))
        entry = config.model_config_list.config.add()
        entry.name = model_name
        entry.base_path = str((base / model_name).resolve())
        entry.model_platform = "tensorflow"
        if model_labels:
            pinned = _pinned_versions(model_labels, list_versions(base, model_name))
            entry.model_version_policy.specific.versions.extend(pinned)
            for label, version in sorted(model_labels.items()):
                entry.version_labels[label] = version
        else:
            entry.model_version_policy.latest.num_versions = 2

    path = base / MODELS_CONFIG
    tmp = base / f".{MODELS_CONFIG}.tmp-{secrets.token_hex(4)}"
    (base / _MANAGED_MARKER).touch()  # from now on a config governs this model base
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text_format.MessageToString(config))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    _fsync_path(base)
    return path


def _current_labels(base: Path) -> dict[str, dict[str, int]]:
    return {name: dict(info["labels"]) for name, info in read_models_config(base).items()}


def set_label(
    model_base: str | os.PathLike[str], model_name: str, label: str, version: int
) -> None:
    """Point ``label`` of ``model_name`` at ``version`` (must be published); keeps other labels."""
    base = Path(model_base)
    with _config_lock(base):
        labels = _current_labels(base)
        labels.setdefault(validate_model_name(model_name), {})[_validate_label(label)] = (
            _validate_version(version)
        )
        _write_models_config_locked(base, labels)


def remove_label(model_base: str | os.PathLike[str], model_name: str, label: str) -> bool:
    """Drop ``label`` from ``model_name``; returns False if it was not set."""
    base = Path(model_base)
    with _config_lock(base):
        labels = _current_labels(base)
        if label not in labels.get(model_name, {}):
            return False
        del labels[model_name][label]
        _write_models_config_locked(base, labels)
        return True


def config_in_effect(model_base: str | os.PathLike[str]) -> bool:
    """Whether a ``models.config`` governs serving: it exists, or this module once wrote it."""
    base = Path(model_base)
    return (base / MODELS_CONFIG).exists() or (base / _MANAGED_MARKER).exists()


def read_config_in_effect(
    model_base: str | os.PathLike[str],
) -> dict[str, dict[str, Any]] | None:
    """The parsed ``models.config`` governing serving, or None if none ever did.

    Raises ValueError (one line) if the file cannot be parsed, or is gone although this
    module wrote one before (a lost config is not the same as never having had one).
    """
    base = Path(model_base)
    if not (base / MODELS_CONFIG).exists():
        if (base / _MANAGED_MARKER).exists():
            raise ValueError(f"{base / MODELS_CONFIG} is missing (a config governed this base)")
        return None
    return read_models_config(base)


def configured_version(
    config: Mapping[str, Mapping[str, Any]] | None,
    model_name: str,
    published: Sequence[int],
) -> tuple[int | None, str | None]:
    """The version that serves ``model_name`` by default, or None and the reason why none does.

    ``config`` is :func:`read_config_in_effect`'s answer, ``published`` the versions on
    disk. Rule (the server's and :func:`served_version`'s):

    * no config in effect (None): the newest published version (TF Serving's
      ``--model_base_path`` mode);
    * the model has no entry in the config: none;
    * the entry labels a version ``stable``: that version if published, else none;
    * an entry without ``stable``: its version policy, as TF Serving applies it (the
      highest published version the ``specific`` policy lists, else the newest).
    """
    versions = sorted(published)
    if config is None:
        if versions:
            return versions[-1], None
        return None, f"model {model_name} has no published version"
    entry = config.get(model_name)
    if entry is None:
        return None, f"models.config has no entry for model {model_name}"
    stable = entry.get("labels", {}).get(STABLE_LABEL)
    if stable is not None:
        if stable in versions:
            return stable, None
        return None, f"models.config labels version {stable} stable, which is not published"
    if entry.get("policy") == "specific":
        listed = [v for v in entry.get("versions", []) if v in versions]
        if listed:
            return max(listed), None
        wanted = ", ".join(str(v) for v in entry.get("versions", [])) or "none"
        return None, f"models.config lists versions {wanted}, none of which is published"
    if versions:
        return versions[-1], None
    return None, f"model {model_name} has no published version"


def served_version(model_base: str | os.PathLike[str], model_name: str) -> int | None:
    """The version the server serves by default (:func:`configured_version`'s rule).

    Returns None when nothing valid is configured (no entry, a ``stable`` label on a
    version that is not published) or nothing is published. Raises ValueError if the
    config in effect cannot be read (unparsable, or lost) rather than guessing a version.
    """
    config = read_config_in_effect(model_base)
    version, _reason = configured_version(config, model_name, list_versions(model_base, model_name))
    return version
