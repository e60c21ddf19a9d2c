"""Feast's offline files on the production profile: kept in object storage, used locally.

Feast reads the offline store through its dask file source from local paths
(``<home>/feast/<pipeline>/offline/``, :func:`mlplatform.stages.features.offline_dir`), which
this platform also rewrites in place (a superseded row is removed from an older file). With a
remote ``MLP_STORAGE_URI`` the files are therefore *fetched locally*, not read from ``s3://`` by
Feast: the features stage publishes the directory to ``<storage>/<pipeline>/feast/offline/``
when it has written it (``_SUCCESS`` last), and a worker with no local copy restores it from
there before reading or writing. Local storage: both are no-ops (nothing copied).
"""

from __future__ import annotations

from pathlib import Path

from mlplatform import object_store
from mlplatform.settings import Settings


def offline_uri(pipeline: str, settings: Settings) -> str | None:
    """``<storage>/<pipeline>/feast/offline`` for a remote storage, else None."""
    if not object_store.is_remote(settings.storage):
        return None
    return object_store.join(settings.storage, pipeline, "feast", "offline")


def restore(pipeline: str, directory: Path, settings: Settings) -> bool:
    """Fetch the published offline files into ``directory`` when it holds none; True if any."""
    uri = offline_uri(pipeline, settings)
    if uri is None or any(directory.glob("*.parquet")):
        return False
    if not object_store.exists(uri, settings.s3_endpoint_url):
        return False
    object_store.fetch(uri, directory, settings.s3_endpoint_url)
    (directory / object_store.MARKER).unlink(missing_ok=True)
    return True


def publish(pipeline: str, directory: Path, settings: Settings) -> str | None:
    """Publish ``directory`` (the offline files) to :func:`offline_uri`; its URI, or None."""
    uri = offline_uri(pipeline, settings)
    if uri is None:
        return None
    object_store.publish(directory, uri, settings.s3_endpoint_url)
    return uri
