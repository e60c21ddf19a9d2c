"""Where stages read and write: ``<storage>/<pipeline>/<run_key>/<stage>/``.

Every stage gets a fresh directory per run (re-running a task for the same run replaces it, so
tasks are idempotent) and passes on URIs; XCom carries only URIs, ids and metrics.

Two profiles, one code path. Stage logic always works on local files:

* ``MLP_STORAGE_URI`` a local path or ``file://`` (embedded default): the stage directory *is*
  the storage; nothing is copied, URIs are ``file://``.
* ``MLP_STORAGE_URI=s3://bucket/prefix`` (production): the stage works in the same layout under
  the local working root ``<home>/storage`` (:func:`local_root`), and the operator publishes the
  directory to ``s3://bucket/prefix/<pipeline>/<run>/<stage>/`` when the stage succeeds, the
  marker ``_SUCCESS`` last (:func:`publish_stage`). :func:`to_uri` names a file of the working
  root by its ``s3://`` URI, and :func:`to_path` maps such a URI back, downloading it (file or
  prefix) when this machine has no copy - another worker's output. An ``s3://`` URI outside the
  storage is fetched into ``<home>/cache/objects/`` (kept while its size and ETag are unchanged).

Run-control state that is not a stage's output (config snapshots, the step-cache index, the
last-validated marker, local checkpoints) stays in the worker's working root: the production
profile's workers share one ``MLP_HOME`` (one machine, or a shared volume).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from mlplatform import object_store

if TYPE_CHECKING:
    from mlplatform.settings import Settings

#: run directories of the DAGs that are not a pipeline's training run: a monitor or score run
#: never shares a train run's directory, lease or frozen config, even at the same run id
MONITOR_RUN_PREFIX = "monitor__"
SCORE_RUN_PREFIX = "score__"


def run_key(run_id: str) -> str:
    """Filesystem-safe form of an Airflow run id (``manual__2026-01-01T00:00:00+00:00``)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", run_id).strip("_")


def _settings() -> Settings:
    from mlplatform.settings import get_settings

    return get_settings()


def local_root(settings: Settings) -> Path:
    """The local directory stages work in: the storage itself when it is local, else the working
    root ``<home>/storage`` that mirrors the remote storage's layout."""
    if object_store.is_remote(settings.storage):
        return settings.home_dir / "storage"
    return _local_path(settings.storage)


def _local_path(text: str) -> Path:
    parsed = urlparse(text)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    return Path(text).expanduser().resolve()


def to_path(uri: str | Path) -> Path:
    """Local path of a plain path, a ``file://`` URI, or a remote URI (materialised locally, see
    the module doc); a scheme fsspec cannot open raises ``ValueError`` in one line."""
    text = str(uri)
    parsed = urlparse(text)
    if parsed.scheme == "file" or not object_store.is_remote(text):
        return _local_path(text)
    return _materialise(text, _settings())


def _materialise(uri: str, settings: Settings) -> Path:
    storage = settings.storage.rstrip("/")
    endpoint = settings.s3_endpoint_url
    if object_store.is_remote(storage) and (uri.rstrip("/") + "/").startswith(storage + "/"):
        rel = uri[len(storage) :].strip("/")
        local = local_root(settings) / rel
        if rel and not local.exists():
            try:
                object_store.fetch(uri, local, endpoint)
            except FileNotFoundError:
                pass  # not written yet: the path a writer will fill, as for local storage
        return local
    parsed = urlparse(uri)
    local = settings.home_dir / "cache" / "objects" / parsed.scheme / parsed.netloc
    local = local / parsed.path.strip("/")
    try:
        return object_store.fetch(
            uri, local, endpoint, index_dir=settings.home_dir / "cache" / "fetched"
        )
    except ImportError as exc:  # fsspec knows the scheme but its package is not installed
        raise ValueError(f"unsupported storage URI {uri!r}: {exc}") from None
    except ValueError as exc:  # fsspec: "Protocol not known"
        raise ValueError(
            f"unsupported storage URI scheme {parsed.scheme!r} in {uri!r}: {exc}"
        ) from None


def to_uri(path: str | Path) -> str:
    """The URI of a local file: its ``s3://`` URI when it lies in the working root of a remote
    storage (where :func:`publish_stage` puts it), else its ``file://`` URI."""
    resolved = Path(path).resolve()
    settings = _settings()
    if object_store.is_remote(settings.storage):
        try:
            rel = resolved.relative_to(local_root(settings).resolve())
        except ValueError:
            return resolved.as_uri()
        return object_store.join(settings.storage, rel.as_posix())
    return resolved.as_uri()


def stage_uri(settings: Settings, pipeline: str, run: str, stage: str) -> str:
    """``<storage>/<pipeline>/<run>/<stage>`` as a URI."""
    return object_store.join(settings.storage, pipeline, run, stage)


def publish_stage(
    settings: Settings, directory: Path, pipeline: str, run: str, stage: str
) -> str | None:
    """Publish a finished stage directory to the remote storage (objects replaced, ``_SUCCESS``
    last); returns its URI, or None for local storage, where the directory already is the
    storage (nothing copied)."""
    if not object_store.is_remote(settings.storage):
        return None
    uri = stage_uri(settings, pipeline, run, stage)
    object_store.publish(directory, uri, settings.s3_endpoint_url)
    return uri


def stage_dir(storage: str, pipeline: str, run: str, stage: str, fresh: bool = True) -> Path:
    """The stage's local output directory, emptied first when ``fresh`` (idempotent re-runs).

    ``storage`` is the local storage, or a remote storage URI, whose local working root is used.
    What must outlive a try lives elsewhere: the trainer's checkpoints are keyed by their inputs
    under ``<storage>/<pipeline>/checkpoints/`` (:func:`mlplatform.stages.train.checkpoint_dir`).
    """
    path = to_path(storage) / pipeline / run / stage
    if fresh and path.exists():
        for entry in path.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_summary(directory: Path, stage: str, seconds: float, outputs: dict[str, Any]) -> None:
    """``summary.json`` beside a stage's outputs: what the CLI prints after a run."""
    (directory / "summary.json").write_text(
        json.dumps(
            {"stage": stage, "seconds": round(seconds, 2), "outputs": outputs},
            indent=2,
            default=str,
        )
    )


def read_summaries(storage: str, pipeline: str, run: str) -> list[dict[str, Any]]:
    root = to_path(storage) / pipeline / run
    out = []
    for path in sorted(root.glob("*/summary.json"), key=lambda p: p.stat().st_mtime):
        out.append(json.loads(path.read_text()))
    return out


def client_environment(settings: Settings) -> dict[str, str]:
    """Variables that point the libraries which read only their own environment at the
    platform's S3 endpoint: MLflow's artifact client (``MLFLOW_S3_ENDPOINT_URL``) and the trainer
    (``MLP_S3_ENDPOINT_URL``). Empty without ``MLP_S3_ENDPOINT_URL`` (boto3's own endpoint)."""
    endpoint = settings.s3_endpoint_url
    if not endpoint:
        return {}
    return {"MLFLOW_S3_ENDPOINT_URL": endpoint, object_store.ENDPOINT_ENV: endpoint}


def configure_clients(settings: Settings) -> None:
    """Set :func:`client_environment` in this process (variables already set win)."""
    import os

    for key, value in client_environment(settings).items():
        os.environ.setdefault(key, value)
