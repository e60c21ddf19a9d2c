"""Object storage through fsspec: one code path for ``file://`` and ``s3://`` (MinIO, moto, AWS).

The platform's stages work on local files; this module moves files between a local directory and
an object store URI, and nothing else:

* :func:`filesystem` - the fsspec filesystem and path of a URI (``fsspec.core.url_to_fs``); for
  ``s3://`` an s3fs filesystem on ``endpoint_url`` (``MLP_S3_ENDPOINT_URL``: MinIO, moto) or
  botocore's own endpoint configuration; credentials from botocore's chain (``AWS_*`` variables,
  profiles, instance roles). Listings are never cached: another process may have written since.
* :func:`fetch` - materialise an object or a prefix locally; a file whose local copy has the
  remote's size and ETag (recorded in ``index_dir``) is not downloaded again.
* :func:`publish` - replace the objects under a prefix with a local directory's files, the
  marker object (``_SUCCESS``) written last, so a reader that sees the marker sees every file.

No TensorFlow, Airflow or platform settings here: the trainer imports it too (its endpoint comes
from ``MLP_S3_ENDPOINT_URL`` in its environment, :func:`endpoint_from_env`).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

#: written last under a published prefix: its presence means every other object is complete
MARKER = "_SUCCESS"
#: the environment variable that carries the S3 endpoint to processes without platform settings
ENDPOINT_ENV = "MLP_S3_ENDPOINT_URL"


def is_remote(uri: str | os.PathLike[str]) -> bool:
    """True for a URI with a scheme other than ``file`` (``s3://``, ``gs://`` ...); a plain path,
    a ``file://`` URI and a Windows drive letter are local."""
    scheme = urlparse(str(uri)).scheme
    return bool(scheme) and scheme != "file" and len(scheme) > 1


def endpoint_from_env() -> str | None:
    """``MLP_S3_ENDPOINT_URL`` from the environment (None when unset or empty)."""
    return os.environ.get(ENDPOINT_ENV) or None


def storage_options(uri: str, endpoint_url: str | None) -> dict[str, Any]:
    """fsspec options for ``uri``: for ``s3://`` the endpoint (when given) and no listing cache."""
    if urlparse(uri).scheme not in ("s3", "s3a"):
        return {}
    options: dict[str, Any] = {"use_listings_cache": False}
    if endpoint_url:
        options["client_kwargs"] = {"endpoint_url": endpoint_url}
    return options


def filesystem(uri: str, endpoint_url: str | None = None) -> tuple[Any, str]:
    """``(fsspec filesystem, path within it)`` for ``uri`` (see the module doc)."""
    from fsspec.core import url_to_fs

    return url_to_fs(uri, **storage_options(uri, endpoint_url))


def join(uri: str, *parts: str) -> str:
    """``uri`` with ``parts`` appended by ``/`` (no doubled slashes)."""
    return "/".join([uri.rstrip("/"), *(p.strip("/") for p in parts if p.strip("/"))])


def _index_file(index_dir: Path, uri: str) -> Path:
    return index_dir / f"{hashlib.sha256(uri.encode()).hexdigest()[:32]}.json"


def _identity(info: dict[str, Any]) -> dict[str, Any]:
    """What identifies an object's content without reading it: size and ETag (or mtime)."""
    tag = info.get("ETag") or info.get("etag") or info.get("mtime") or info.get("LastModified")
    return {"size": info.get("size"), "etag": str(tag) if tag is not None else None}


def fetch(
    uri: str, dest: Path, endpoint_url: str | None = None, index_dir: Path | None = None
) -> Path:
    """Download the object ``uri`` to the file ``dest``, or every object under the prefix
    ``uri`` into the directory ``dest``; returns ``dest``. With ``index_dir``, a local copy whose
    remote size and ETag are unchanged since it was fetched is kept as is (no download).

    Raises ``FileNotFoundError`` when nothing exists at ``uri``."""
    fs, path = filesystem(uri, endpoint_url)
    if fs.isfile(path):
        _fetch_file(fs, path, uri, dest, fs.info(path), index_dir)
        return dest
    found = fs.find(path, detail=True)
    if not found:
        raise FileNotFoundError(f"{uri}: no such object or prefix")
    root = path.rstrip("/")
    for name, info in found.items():
        if info.get("type") == "directory":
            continue
        rel = name[len(root) :].lstrip("/")
        _fetch_file(fs, name, join(uri, rel), dest / rel, info, index_dir)
    return dest


def _fetch_file(
    fs: Any, path: str, uri: str, dest: Path, info: dict[str, Any], index_dir: Path | None
) -> None:
    identity = _identity(info)
    record = _index_file(index_dir, uri) if index_dir is not None else None
    if record is not None and dest.is_file() and record.is_file():
        try:
            if (
                json.loads(record.read_text()) == identity
                and dest.stat().st_size == identity["size"]
            ):
                return
        except (OSError, ValueError):
            pass  # an unreadable record: download again
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")  # ranks may fetch at once
    fs.get_file(path, str(tmp))
    os.replace(tmp, dest)
    if record is not None:
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps(identity))


def upload_file(local: Path, uri: str, endpoint_url: str | None = None) -> None:
    """Copy one local file to the object ``uri``."""
    fs, path = filesystem(uri, endpoint_url)
    fs.put_file(str(local), path)


def publish(
    local_dir: Path, uri: str, endpoint_url: str | None = None, marker: str | None = MARKER
) -> list[str]:
    """Make the prefix ``uri`` hold exactly the files under ``local_dir`` (objects of an earlier
    try are removed first), then write ``marker`` (empty) last; returns the keys written,
    relative to ``uri``. Symlinks are followed; ``.*.part``/``.*.tmp`` leftovers are skipped."""
    fs, root = filesystem(uri, endpoint_url)
    root = root.rstrip("/")
    if fs.exists(root):
        stale = [name for name in fs.find(root) if name != root]
        if stale:
            fs.rm(stale)
    written = []
    for file in sorted(p for p in local_dir.rglob("*") if p.is_file()):
        if file.name.startswith(".") and file.name.endswith((".part", ".tmp")):
            continue
        rel = file.relative_to(local_dir).as_posix()
        if rel == marker:
            continue
        fs.put_file(str(file), f"{root}/{rel}")
        written.append(rel)
    if marker:
        fs.pipe_file(f"{root}/{marker}", b"")
        written.append(marker)
    return written


def exists(uri: str, endpoint_url: str | None = None) -> bool:
    """True when an object, or any object under the prefix, exists at ``uri``."""
    fs, path = filesystem(uri, endpoint_url)
    return bool(fs.exists(path))
