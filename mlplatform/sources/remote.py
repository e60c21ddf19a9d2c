"""S3 sources through fsspec (s3fs): ``s3://bucket/key`` (one object), ``s3://bucket/prefix/``
(every object under it) or ``s3://bucket/prefix/*.csv`` (a glob on the key), objects whose name
starts with ``_`` or ``.`` (``_SUCCESS``) left out. Objects are downloaded to a staging directory
and read like local files; listing them alone gives the ingest cache key (size and ETag).

The endpoint is ``MLP_S3_ENDPOINT_URL`` (MinIO, moto) or botocore's own configuration
(``AWS_ENDPOINT_URL_S3``, profiles); credentials come from botocore's chain (``AWS_*``).
"""

from __future__ import annotations

import fnmatch
import logging
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from mlplatform import object_store
from mlplatform.config import PipelineConfig, one_line
from mlplatform.settings import Settings
from mlplatform.sources.types import (
    GLOB_CHARS,
    NoBatch,
    ResolvedSource,
    SourceError,
    SourceUnavailable,
    file_format,
)

log = logging.getLogger(__name__)


def _split(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    if not parsed.netloc:
        raise SourceError(f"ingest: {uri}: no bucket in the URI (s3://bucket/key)")
    return parsed.netloc, parsed.path.lstrip("/")


def list_objects(uri: str, settings: Settings) -> list[tuple[str, dict[str, Any]]]:
    """``(s3://bucket/key, fsspec info)`` of the objects ``uri`` names, sorted by key; raises
    :class:`NoBatch` when none matches, :class:`SourceError` for a missing bucket or another
    failure (:class:`SourceUnavailable` when the endpoint does not answer)."""
    bucket, key = _split(uri)
    try:
        fs, _ = object_store.filesystem(uri, settings.s3_endpoint_url)
        if key and not key.endswith("/") and not GLOB_CHARS.search(key):
            try:
                info = fs.info(f"{bucket}/{key}")
            except FileNotFoundError:
                _require_bucket(fs, bucket, key)
                raise NoBatch(f"ingest: s3://{bucket}/{key}: no such object") from None
            if info.get("type") == "file":
                return [(f"s3://{bucket}/{key}", info)]
            key += "/"  # a "directory": every object under it
        objects = _matching(fs, bucket, key)
        if not objects:
            _require_bucket(fs, bucket, key)
    except SourceError:
        raise
    except Exception as exc:  # botocore/aiohttp/fsspec raise many types: the user needs one line
        raise remote_problem(exc, uri, settings.s3_endpoint_url) from None
    if not objects:
        raise NoBatch(f"ingest: {uri}: no object matches")
    return objects


def _require_bucket(fs: Any, bucket: str, key: str) -> None:
    """A missing object may be a missing bucket: say which."""
    if not fs.exists(bucket):
        raise SourceError(f"ingest: s3://{bucket}/{key}: no such bucket")


def _matching(fs: Any, bucket: str, key: str) -> list[tuple[str, dict[str, Any]]]:
    """Objects under the prefix ``key`` (or matching the glob ``key``), hidden names left out."""
    match = GLOB_CHARS.search(key)
    prefix = key[: match.start()] if match else key
    folder = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
    found = fs.find(f"{bucket}/{folder}".rstrip("/"), detail=True)
    objects = []
    for path, info in found.items():
        name = path[len(bucket) + 1 :]
        base = name.rsplit("/", 1)[-1]
        if info.get("type") == "directory" or not base or base.startswith(("_", ".")):
            continue
        if not name.startswith(prefix) or (match and not fnmatch.fnmatchcase(name, key)):
            continue
        objects.append((f"s3://{bucket}/{name}", info))
    return sorted(objects)


def resolve_s3(uri: str, cfg: PipelineConfig, settings: Settings, staging: Path) -> ResolvedSource:
    """Download the objects ``uri`` names into ``staging`` (see the module doc)."""
    objects = list_objects(uri, settings)
    staging.mkdir(parents=True, exist_ok=True)
    files = []
    try:
        fs, _ = object_store.filesystem(uri, settings.s3_endpoint_url)
        for i, (name, _info) in enumerate(objects):
            local = staging / f"{i:05d}-{name.rsplit('/', 1)[-1]}"
            fs.get_file(name, str(local))
            files.append((name, local, file_format(name, cfg.source.format)))
    except Exception as exc:  # as in list_objects
        raise remote_problem(exc, uri, settings.s3_endpoint_url) from None
    log.info("downloaded %d S3 object(s) for %s", len(files), uri)
    return ResolvedSource(display=uri, files=files)


def listing(uri: str, settings: Settings) -> list[list[object]]:
    """``[s3://bucket/key, size, ETag]`` of the objects ``uri`` names (nothing downloaded)."""
    return [
        [name, info.get("size"), info.get("ETag")] for name, info in list_objects(uri, settings)
    ]


def remote_problem(exc: Exception, where: str, endpoint: str | None) -> SourceError:
    """One line for a failure of the S3 client: :class:`SourceUnavailable` (retried) when the
    endpoint does not answer, else :class:`SourceError` (missing object or bucket, access
    denied, no credentials, ...)."""
    from botocore.exceptions import ClientError, NoCredentialsError
    from botocore.exceptions import ConnectionError as BotoConnectionError

    if isinstance(exc, (BotoConnectionError, ConnectionError, TimeoutError)) or _is_aiohttp_connect(
        exc
    ):
        where_to = endpoint or getattr(exc, "kwargs", {}).get("endpoint_url", "")
        return SourceUnavailable(
            f"ingest: {where}: cannot reach the S3 endpoint {where_to}: {one_line(exc, 160)}"
        )
    if isinstance(exc, NoCredentialsError):
        what = "no AWS credentials (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile)"
    elif isinstance(exc, FileNotFoundError):
        what = "no such object"
    elif isinstance(exc, PermissionError):
        what = "access denied"
    elif isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        what = {
            "404": "no such object",
            "NoSuchKey": "no such object",
            "NoSuchBucket": "no such bucket",
            "403": "access denied",
            "AccessDenied": "access denied",
        }.get(code, one_line(exc, 200))
    else:
        what = one_line(exc, 200)
    return SourceError(f"ingest: {where}: {what}")


def _is_aiohttp_connect(exc: Exception) -> bool:
    try:
        from aiohttp import ClientConnectionError
    except ImportError:  # pragma: no cover - s3fs depends on aiohttp
        return False
    return isinstance(exc, ClientConnectionError)
