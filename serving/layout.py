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
* The *served* version of a model is the version labelled ``stable`` if that label
  exists and its directory is present, otherwise the highest version on disk.

This module does not import TensorFlow; it only needs ``protobuf`` and the
``tensorflow_serving.config`` protos shipped with ``tensorflow-serving-api``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "MODELS_CONFIG",
    "SAVED_MODEL_PB",
    "STABLE_LABEL",
    "list_models",
    "list_versions",
    "publish_version",
    "read_models_config",
    "remove_label",
    "remove_version",
    "served_version",
    "set_label",
    "validate_model_name",
    "write_models_config",
]

MODELS_CONFIG = "models.config"
SAVED_MODEL_PB = "saved_model.pb"
STABLE_LABEL = "stable"

_LOCK_FILE = ".models.config.lock"
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
) -> Path:
    """Atomically publish ``saved_model_dir`` as ``<model_base>/<model_name>/<version>``.

    The SavedModel is copied to ``<model_name>/.tmp-<version>-<random>``, fsynced, then
    renamed into place with ``os.rename`` (atomic on POSIX within one filesystem), so a
    poller never sees a half-copied version. Existing versions are left untouched.

    Returns the final version directory.

    Raises:
        ValueError: ``saved_model_dir`` has no ``saved_model.pb``, or bad name/version.
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


def served_version(model_base: str | os.PathLike[str], model_name: str) -> int | None:
    """Version served by default: ``stable`` label if set and published, else the highest.

    Returns None when the model has no published version. Raises ValueError if
    ``models.config`` exists but cannot be parsed (rather than guessing a version).
    """
    versions = list_versions(model_base, model_name)
    if not versions:
        return None
    stable = read_models_config(model_base).get(model_name, {}).get("labels", {}).get(STABLE_LABEL)
    if stable is not None and stable in versions:
        return stable
    return versions[-1]
