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

The package's modules: :mod:`~serving.layout.paths` (names, the config lock, fsync),
:mod:`~serving.layout.digest` (content hash, version metadata), :mod:`~serving.layout.versions`
(list, publish) and :mod:`~serving.layout.models_config` (the config, labels, removal, the
served-version rule); every public name is importable from ``serving.layout``.
"""

from __future__ import annotations

from serving.layout.digest import (
    DigestMismatch,
    read_version_digest,
    read_version_metadata,
    saved_model_digest,
    verify_version_digest,
)
from serving.layout.models_config import (
    config_in_effect,
    configured_version,
    read_config_in_effect,
    read_models_config,
    remove_label,
    remove_version,
    served_version,
    set_label,
    write_models_config,
)
from serving.layout.paths import (
    MODELS_CONFIG,
    SAVED_MODEL_PB,
    STABLE_LABEL,
    VERSION_METADATA,
    validate_model_name,
)
from serving.layout.versions import list_models, list_versions, publish_version

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
