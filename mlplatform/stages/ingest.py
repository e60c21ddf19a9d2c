"""Ingest: read a raw batch, check it parses, version it with DVC, hand on a typed Parquet copy.

Contract: ``ingest(cfg, source_uri, out_dir, settings)`` reads the batch that ``source_uri`` names
(a file, glob, directory, ``s3://`` object or prefix, or SQL query: :mod:`mlplatform.sources`) in
chunks of ``MLP_INGEST_CHUNK_ROWS`` rows and writes it, event times parsed to UTC, to
``out_dir/raw.parquet`` without holding the whole batch in memory. It returns ``data_uri`` (that
Parquet), ``data_version`` (the DVC md5 of the batch), ``data_commit`` (commit of the DVC data
repository that records it), ``rows``, ``duplicates_dropped`` (exact copies of a row are kept
once; copies that conflict are left for validation to refuse), ``chunks``, ``files`` and
``source_uri`` (passwords hidden).

DVC versions what was read, in the DVC data repository (``<home>/data-repo``, a git repo with a
DVC remote) as ``<pipeline>/batch.<format>``: a batch of one file (local or S3) as its own bytes,
a batch of several files or a query as the Parquet this stage hands on. So
``mlplatform data checkout <pipeline> --version <data_version>`` (or ``git checkout
<data_commit> && dvc checkout``) restores exactly the data a model was trained on.

A batch that cannot be read, is empty, lacks the entity/timestamp columns, has unparsable event
times or a column name Feast/TensorFlow cannot take raises ``StageError`` with one line naming
the file (object, query) and versions nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import yaml

from mlplatform import sources
from mlplatform.config import (
    COLUMN_NAME_RULE,
    PipelineConfig,
    one_line,
    suggest_name,
    unusable_column_names,
)
from mlplatform.data_versions import DataVersion
from mlplatform.settings import Settings
from mlplatform.sources import Chunk
from mlplatform.stages import StageError
from mlplatform.storage import to_uri

log = logging.getLogger(__name__)

#: formats a versioned batch file can have (``<pipeline>/batch.<format>`` in the data repo)
BATCH_FORMATS = ("csv", "parquet")

_GIT_ENV = {
    "GIT_AUTHOR_NAME": "mlplatform",
    "GIT_AUTHOR_EMAIL": "mlplatform@localhost",
    "GIT_COMMITTER_NAME": "mlplatform",
    "GIT_COMMITTER_EMAIL": "mlplatform@localhost",
}


def parse_timestamps(column: pd.Series) -> pd.Series:
    """UTC timestamps; unparsable values become NaT. ISO 8601 in any precision first (pandas
    otherwise takes the first value's format for all and refuses ``...:00`` after ``...:00.5``),
    then element by element for other spellings."""
    if pd.api.types.is_datetime64_any_dtype(column):  # SQL and Parquet sources: typed already
        return pd.to_datetime(column, utc=True)
    ts = pd.to_datetime(column, utc=True, errors="coerce", format="ISO8601")
    if ts.isna().sum() > column.isna().sum():
        ts = pd.to_datetime(column, utc=True, errors="coerce", format="mixed")
    return ts


def _typed_chunk(chunk: Chunk, cfg: PipelineConfig) -> pd.DataFrame:
    """Check one chunk as read and parse its event times (see :func:`ingest`); one-line errors
    name the file, object or query."""
    df, where = chunk.frame, chunk.where
    if chunk.first_of_file:
        bad_names = unusable_column_names(df.columns)
        if bad_names:
            raise StageError(
                f"ingest: {where}: column name(s) {', '.join(map(repr, bad_names))} cannot be "
                f"used: {COLUMN_NAME_RULE}; map them to usable names under source.rename "
                f"(e.g. {{{bad_names[0]!r}: {suggest_name(bad_names[0])!r}}})"
            )
        required = [cfg.source.entity, cfg.source.timestamp]
        missing = [c for c in required if c not in df.columns]
        if missing:
            raise StageError(
                f"ingest: {where}: missing column(s) {', '.join(missing)} "
                f"(has: {', '.join(map(str, df.columns))})"
            )
    column = df[cfg.source.timestamp]
    ts = parse_timestamps(column)
    unparsed = ts.isna() & column.notna()
    if unparsed.any():
        example = one_line(column[unparsed].iloc[0], 40)
        raise StageError(
            f"ingest: {where}: {int(unparsed.sum())} value(s) in {cfg.source.timestamp!r} "
            f"are not timestamps, e.g. {example!r}"
        )
    df[cfg.source.timestamp] = ts
    return df


def _git(repo: Path, *args: str) -> str:
    env = {**os.environ, **_GIT_ENV}
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env
    ).stdout


def ensure_data_repo(repo_dir: Path, remote_url: str, endpoint_url: str | None = None):
    """Create (once) the git + DVC repository that versions raw batches, with a default remote:
    a local directory, or an ``s3://`` URL (dvc-s3) on ``endpoint_url`` (``MLP_S3_ENDPOINT_URL``:
    MinIO, moto; None: botocore's own endpoint), credentials from the ``AWS_*`` variables."""
    from dvc.repo import Repo

    if not (repo_dir / ".dvc").exists():
        repo_dir.mkdir(parents=True, exist_ok=True)
        if not (repo_dir / ".git").exists():
            _git(repo_dir, "init", "-q")
        Repo.init(str(repo_dir))
        _git(repo_dir, "add", "-A")
        _git(repo_dir, "commit", "-q", "-m", "init data repository")
    repo = Repo(str(repo_dir))
    with repo.config.edit() as conf:
        remote = {"url": remote_url}
        if endpoint_url and remote_url.startswith("s3://"):
            remote["endpointurl"] = endpoint_url
        conf["remote"]["default"] = remote
        conf["core"]["remote"] = "default"
        conf["core"]["autostage"] = True
    return repo


@contextlib.contextmanager
def data_repo_lock(repo_dir: Path) -> Iterator[None]:
    """Serialise writers of the shared data repository (all pipelines commit to one git repo)."""
    repo_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(repo_dir.parent / ".data-repo.lock", "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def version_batch(
    src: Path, pipeline: str, fmt: str, settings: Settings, note: str = ""
) -> tuple[str, str]:
    """``dvc add`` + git commit + ``dvc push`` the batch; return (md5, data repo commit)."""
    with data_repo_lock(settings.dvc_repo_dir):
        return _version_batch_locked(src, pipeline, fmt, settings, note)


def _version_batch_locked(
    src: Path, pipeline: str, fmt: str, settings: Settings, note: str = ""
) -> tuple[str, str]:
    repo_dir = settings.dvc_repo_dir
    repo = ensure_data_repo(repo_dir, settings.dvc_remote_url, settings.s3_endpoint_url)
    target = repo_dir / pipeline / f"batch.{fmt}"
    target.parent.mkdir(parents=True, exist_ok=True)
    for other in BATCH_FORMATS:  # one batch file per pipeline and commit: the snapshot
        stale = repo_dir / pipeline / f"batch.{other}.dvc"
        if other != fmt and stale.exists():
            repo.remove(str(stale), outs=True)
    shutil.copyfile(src, target)
    rel = str(target.relative_to(repo_dir))
    repo.add([str(target)])
    repo.push()
    md5 = yaml.safe_load((repo_dir / f"{rel}.dvc").read_text())["outs"][0]["md5"]
    _git(repo_dir, "add", "-A")
    if _git(repo_dir, "status", "--porcelain").strip():
        message = f"{pipeline}: batch {md5}" + (f"\n\nsource: {note}" if note else "")
        _git(repo_dir, "commit", "-q", "-m", message)
    commit = _git(repo_dir, "rev-parse", "HEAD").strip()
    return md5, commit


def ingest(
    cfg: PipelineConfig,
    source_uri: str,
    out_dir: Path,
    settings: Settings,
    restored: DataVersion | None = None,
) -> dict[str, object]:
    """Run the ingest stage (see module docstring). ``restored``: the batch at ``source_uri`` is
    that data version, restored from DVC; it is read as any batch but not versioned again."""
    staging = out_dir / ".staging"
    try:
        source = sources.resolve(source_uri or "", cfg, settings, staging / "download")
        out = out_dir / "raw.parquet"
        chunks = sources.read_chunks(source, settings.ingest_chunk_rows)
        try:
            stats = sources.write_parquet(
                chunks, out, staging / "parts", prepare=lambda c: _typed_chunk(c, cfg)
            )
        except StageError:
            out.unlink(missing_ok=True)
            raise
        if stats.rows == 0:
            out.unlink(missing_ok=True)
            raise StageError(f"ingest: {source.display}: the batch has no rows")
        if (
            stats.duplicates
        ):  # exact copies of a row are one row; conflicting copies fail validation
            log.warning("dropped %d exact duplicate row(s) of %s", stats.duplicates, source.display)
        # DVC versions what was read: the file's own bytes, or (several files, a query) the batch
        raw, fmt = source.single_file or (out, "parquet")
        if restored is None:
            md5, commit = version_batch(raw, cfg.name, fmt, settings, note=source.display)
        else:
            md5, commit = restored.md5, restored.commit
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info(
        "ingested %d rows (%d chunk(s), %d file(s)) from %s as DVC version %s (data repo %s)",
        stats.rows, stats.chunks, len(source.files), source.display, md5, commit[:8],
    )  # fmt: skip
    return {
        "data_uri": to_uri(out),
        "data_version": md5,
        "data_commit": commit,
        "rows": stats.rows,
        "duplicates_dropped": stats.duplicates,
        "chunks": stats.chunks,
        "files": len(source.files),
        "source_uri": source.display,
    }


def reuse_newest_validated(
    cfg: PipelineConfig, out_dir: Path, settings: Settings
) -> dict[str, object]:
    """Hand on the newest validated batch again, for a run that ingests nothing new (one started
    by the schedule or an asset, or by hand without a batch): the batch is restored from DVC
    (:func:`mlplatform.data_versions.checkout_version`) and read as :func:`ingest` reads any, so
    validate, features and the training set see the XCom they always see, plus ``reused: True``
    and ``ingested_at`` (when the version first landed). The training set then covers the
    validated history in ``retrain.window_days`` up to that batch. Raises ``StageError`` when
    nothing was validated yet."""
    from mlplatform.data_versions import checkout_version, find_version
    from mlplatform.history import newest_validated

    newest = newest_validated(cfg, settings)
    if newest is None:
        raise StageError(
            f"ingest: no validated batch of {cfg.name!r} yet and this run names none; pass one "
            f"(mlplatform run {cfg.name} --data URI) or let mlp_{cfg.name}_ingest read the "
            "landing source"
        )
    found = find_version(settings, cfg.name, newest.data_version)
    restore_dir = out_dir / ".restore"
    try:
        _, path = checkout_version(
            settings, cfg.name, found.md5, restore_dir / f"batch.{found.format}"
        )
        result = ingest(cfg, str(path), out_dir, settings, restored=found)
    finally:
        shutil.rmtree(restore_dir, ignore_errors=True)
    log.info(
        "nothing new to ingest: handing on the newest validated data version %s (landed %s)",
        found.md5, newest.ingested_at,
    )  # fmt: skip
    return {
        **result,
        "source_uri": f"validated data version {found.md5} (restored from DVC)",
        "reused": True,
        "ingested_at": newest.ingested_at,
    }
