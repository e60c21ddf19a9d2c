"""``models.config``: read and write it, move labels, remove an unlabelled version, and the
served-version rule (see :mod:`serving.layout`)."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from serving.layout.paths import (
    _MANAGED_MARKER,
    MODELS_CONFIG,
    STABLE_LABEL,
    _config_lock,
    _fsync_path,
    _validate_label,
    _validate_version,
    validate_model_name,
)
from serving.layout.versions import list_models, list_versions


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
