"""Past data versions of a pipeline: list them and restore any one, byte for byte, from DVC.

Ingest commits each batch to the DVC data repository (``<home>/data-repo``) as
``<pipeline>/batch.<format>`` (+ its ``.dvc`` file) and pushes it to the DVC remote. A *data
version* is one such commit; it is named by the batch's md5 (``data_version``, a model version's
lineage tag) or by the commit (``data_commit``, any unique prefix of 7+ hex digits), or ``latest``.

Contracts:

* :func:`list_versions` -> the pipeline's versions, newest first.
* :func:`checkout_version` writes the batch of one version to a file: ``dvc.api.open`` at that
  commit reads it from the local DVC cache or, when the cache lacks it (deleted, another machine),
  from the DVC remote. The bytes are checked against the md5 in the ``.dvc`` file, then the file
  appears atomically. Errors are :class:`~mlplatform.stages.StageError` with one line.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

from mlplatform.settings import Settings
from mlplatform.stages import StageError

_BATCH = re.compile(r"^batch\.(csv|parquet)\.dvc$")


@dataclass(frozen=True)
class DataVersion:
    """One versioned batch: ``path`` is relative to the data repo (``demo/batch.csv``)."""

    pipeline: str
    commit: str
    md5: str
    path: str
    date: str

    @property
    def format(self) -> str:
        return self.path.rsplit(".", 1)[-1]

    def describe(self) -> str:
        return f"{self.md5}  commit {self.commit[:10]}  {self.date}  {self.path}"


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    ).stdout


def list_versions(settings: Settings, pipeline: str) -> list[DataVersion]:
    """The pipeline's data versions, newest first (empty when nothing was ingested)."""
    repo = settings.dvc_repo_dir
    if not (repo / ".git").exists():
        return []
    log = _git(repo, "log", "--format=%H %cI", "--", f"{pipeline}/")
    versions = []
    for line in log.splitlines():
        commit, date = line.split(" ", 1)
        names = _git(repo, "ls-tree", "--name-only", commit, f"{pipeline}/").split()
        for name in names:
            if _BATCH.match(Path(name).name):
                meta = yaml.safe_load(_git(repo, "show", f"{commit}:{name}"))
                md5 = meta["outs"][0]["md5"]
                if not versions or versions[-1].md5 != md5:  # a commit that kept the batch
                    versions.append(DataVersion(pipeline, commit, md5, name[: -len(".dvc")], date))
    return versions


def find_version(settings: Settings, pipeline: str, version: str) -> DataVersion:
    """The version named by an md5, a commit (prefix of 7+ hex digits) or ``latest``."""
    versions = list_versions(settings, pipeline)
    if not versions:
        raise StageError(
            f"data: no data versions of {pipeline!r} in {settings.dvc_repo_dir} (nothing ingested)"
        )
    key = version.strip().lower()
    if key == "latest":
        return versions[0]
    by_md5 = [v for v in versions if v.md5 == key]
    if by_md5:
        return by_md5[0]
    by_commit = [v for v in versions if len(key) >= 7 and v.commit.startswith(key)]
    if len(by_commit) == 1:
        return by_commit[0]
    known = ", ".join(f"{v.md5[:8]} ({v.date[:10]})" for v in versions[:5])
    more = f" and {len(versions) - 5} more" if len(versions) > 5 else ""
    raise StageError(
        f"data: {pipeline!r} has no data version {version!r} (md5 or commit); "
        f"known: {known}{more}; see `mlplatform data versions {pipeline}`"
    )


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checkout_version(
    settings: Settings, pipeline: str, version: str, out: Path | None = None
) -> tuple[DataVersion, Path]:
    """Restore the batch of ``version`` to ``out`` (default ``./<pipeline>-<md5[:8]>.<format>``);
    returns the version and the file written (see the module doc)."""
    import dvc.api

    found = find_version(settings, pipeline, version)
    target = (out or Path.cwd() / f"{pipeline}-{found.md5[:8]}.{found.format}").resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    try:
        with (
            dvc.api.open(found.path, repo=str(settings.dvc_repo_dir), rev=found.commit, mode="rb") as src,
            open(partial, "wb") as dst,
        ):  # fmt: skip
            shutil.copyfileobj(src, dst, 1 << 20)
    except Exception as exc:  # DVC raises many types (missing in cache and remote, ...)
        partial.unlink(missing_ok=True)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StageError(
            f"data: cannot restore {pipeline} {found.md5} (commit {found.commit[:10]}) from the "
            f"DVC cache or remote {settings.dvc_remote_url}: {first}"
        ) from None
    got = _md5(partial)
    if got != found.md5:
        partial.unlink(missing_ok=True)
        raise StageError(
            f"data: restored {found.path} has md5 {got}, not {found.md5}: the DVC remote "
            f"{settings.dvc_remote_url} holds a corrupt copy"
        )
    partial.replace(target)
    return found, target
