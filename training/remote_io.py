"""The trainer's remote inputs and outputs (``s3://`` URIs in its spec), through fsspec.

:meth:`training.spec.TrainSpec.paths` gives every remote URI a local working copy; this module
moves the bytes (no TensorFlow here):

* :func:`fetch_inputs` - every rank downloads ``train_uri``/``holdout_uri`` (kept while the
  object's size and ETag are unchanged, so the ranks of one machine and a retry download once);
* :func:`restore_checkpoints` - rank 0 fetches a remote ``checkpoint_dir`` before resuming, so a
  retried pod on another node resumes where the last one stopped;
* :func:`publish_checkpoints` - rank 0 mirrors its checkpoints after every epoch;
* :func:`publish_outputs` - rank 0 publishes ``output_dir`` (the SavedModel, metrics, result)
  when it has finished, the ``_SUCCESS`` marker last.

The endpoint is ``MLP_S3_ENDPOINT_URL`` from the environment (botocore's own when unset);
credentials from botocore's chain.
"""

from __future__ import annotations

from pathlib import Path

from mlplatform import object_store
from training.spec import LocalPaths, working_root


def _index(paths: LocalPaths) -> Path:
    return working_root() / ".fetched"


def fetch_inputs(paths: LocalPaths) -> None:
    """Download the remote train and hold-out tables to their working copies."""
    for name in ("train", "holdout"):
        uri = paths.remote.get(name)
        if uri:
            object_store.fetch(
                uri, getattr(paths, name), object_store.endpoint_from_env(), _index(paths)
            )


def restore_checkpoints(paths: LocalPaths) -> bool:
    """Fetch a remote checkpoint directory into the local one; True when one was there."""
    uri = paths.remote.get("checkpoint_dir")
    if not uri or not object_store.exists(uri, object_store.endpoint_from_env()):
        return False
    object_store.fetch(uri, paths.checkpoint_dir, object_store.endpoint_from_env())
    return True


def publish_checkpoints(paths: LocalPaths) -> None:
    """Mirror the local checkpoint directory to its remote URI (no-op when it is local)."""
    uri = paths.remote.get("checkpoint_dir")
    if uri and paths.checkpoint_dir.is_dir():
        object_store.publish(paths.checkpoint_dir, uri, object_store.endpoint_from_env(), None)


def publish_outputs(paths: LocalPaths) -> str | None:
    """Publish ``output_dir`` to its remote URI (marker last); its URI, or None when local.
    A checkpoint directory inside the output directory is left to :func:`publish_checkpoints`."""
    uri = paths.remote.get("output_dir")
    if not uri:
        return None
    object_store.publish(paths.output_dir, uri, object_store.endpoint_from_env())
    return uri


def uri_of(paths: LocalPaths, local: Path) -> str:
    """The URI a file under the working ``output_dir`` will have once published (its local path
    when the output directory is local)."""
    uri = paths.remote.get("output_dir")
    if not uri:
        return str(local)
    return object_store.join(uri, local.relative_to(paths.output_dir).as_posix())
