"""Ingest: read a raw batch, check it parses, version it with DVC, hand on a typed Parquet copy.

Contract: ``ingest(cfg, source_uri, out_dir, settings)`` returns ``data_uri`` (Parquet under
``out_dir``), ``data_version`` (the DVC md5 of the batch), ``data_commit`` (commit of the DVC data
repository that records it), ``rows`` and ``duplicates_dropped`` (exact copies of a row are kept
once; copies that conflict are left for validation to refuse). The batch is stored in the DVC data repository
(``<home>/data-repo``, a git repo with a DVC remote) as ``<pipeline>/batch.<format>``, so
``git checkout <data_commit> && dvc checkout`` restores exactly the data a model was trained on.
A file that cannot be parsed or lacks the entity/timestamp columns raises ``StageError`` and
versions nothing.
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

from mlplatform.config import PipelineConfig
from mlplatform.settings import Settings
from mlplatform.stages import StageError
from mlplatform.storage import to_path, to_uri

log = logging.getLogger(__name__)

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
    ts = pd.to_datetime(column, utc=True, errors="coerce", format="ISO8601")
    if ts.isna().sum() > column.isna().sum():
        ts = pd.to_datetime(column, utc=True, errors="coerce", format="mixed")
    return ts


def read_batch(path: Path, fmt: str, cfg: PipelineConfig) -> pd.DataFrame:
    """Parse a raw batch; one-line errors name the file and the problem."""
    try:
        df = pd.read_parquet(path) if fmt == "parquet" else pd.read_csv(path)
    except FileNotFoundError:
        raise StageError(f"ingest: {path}: no such file") from None
    except Exception as exc:  # pandas raises many parser types; the user needs one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StageError(f"ingest: {path}: cannot parse as {fmt}: {first}") from None
    required = [cfg.source.entity, cfg.source.timestamp]
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise StageError(
            f"ingest: {path}: missing column(s) {', '.join(missing)} (has: {', '.join(map(str, df.columns))})"
        )
    if df.empty:
        raise StageError(f"ingest: {path}: the batch has no rows")
    ts = parse_timestamps(df[cfg.source.timestamp])
    bad = int(ts.isna().sum() - df[cfg.source.timestamp].isna().sum())
    if bad:
        raise StageError(
            f"ingest: {path}: {bad} value(s) in {cfg.source.timestamp!r} are not timestamps"
        )
    df[cfg.source.timestamp] = ts
    return df


def _git(repo: Path, *args: str) -> str:
    env = {**os.environ, **_GIT_ENV}
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env
    ).stdout


def ensure_data_repo(repo_dir: Path, remote_url: str):
    """Create (once) the git + DVC repository that versions raw batches, with a default remote."""
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
        conf["remote"]["default"] = {"url": remote_url}
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


def version_batch(src: Path, pipeline: str, fmt: str, settings: Settings) -> tuple[str, str]:
    """``dvc add`` + git commit + ``dvc push`` the batch; return (md5, data repo commit)."""
    with data_repo_lock(settings.dvc_repo_dir):
        return _version_batch_locked(src, pipeline, fmt, settings)


def _version_batch_locked(
    src: Path, pipeline: str, fmt: str, settings: Settings
) -> tuple[str, str]:
    repo_dir = settings.dvc_repo_dir
    repo = ensure_data_repo(repo_dir, settings.dvc_remote_url)
    target = repo_dir / pipeline / f"batch.{fmt}"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, target)
    rel = str(target.relative_to(repo_dir))
    repo.add([str(target)])
    repo.push()
    md5 = yaml.safe_load((repo_dir / f"{rel}.dvc").read_text())["outs"][0]["md5"]
    _git(repo_dir, "add", "-A")
    if _git(repo_dir, "status", "--porcelain").strip():
        _git(repo_dir, "commit", "-q", "-m", f"{pipeline}: batch {md5}")
    commit = _git(repo_dir, "rev-parse", "HEAD").strip()
    return md5, commit


def ingest(
    cfg: PipelineConfig, source_uri: str, out_dir: Path, settings: Settings
) -> dict[str, object]:
    """Run the ingest stage (see module docstring)."""
    if not source_uri:
        raise StageError(
            f"ingest: no data URI: set source.uri in the {cfg.name} pipeline or pass --data"
        )
    src = to_path(source_uri)
    fmt = "parquet" if src.suffix == ".parquet" else cfg.source.format
    df = read_batch(src, fmt, cfg)
    duplicates = int(df.duplicated().sum())
    if (
        duplicates
    ):  # the rule: exact copies of a row are one row; conflicting copies fail validation
        df = df.drop_duplicates(ignore_index=True)
        log.warning("dropped %d exact duplicate row(s) of %s", duplicates, src)
    md5, commit = version_batch(src, cfg.name, fmt, settings)
    out = out_dir / "raw.parquet"
    df.to_parquet(out, index=False)
    log.info(
        "ingested %d rows from %s as DVC version %s (data repo %s)", len(df), src, md5, commit[:8]
    )
    return {
        "data_uri": to_uri(out),
        "data_version": md5,
        "data_commit": commit,
        "rows": len(df),
        "duplicates_dropped": duplicates,
        "source_uri": str(src),
    }
