"""Lineage facts that travel as MLflow run and model-version tags.

From any served version one walks back: model version -> tags ``data_version`` (DVC md5),
``data_commit`` (commit of the DVC data repo), ``validation`` (GX result + Data Docs),
``feature_service``, ``training_set_uri``, ``git_commit`` (this platform checkout),
``pipeline_config_hash`` (the whole config), ``training_config_hash`` (:func:`training_config_hash`:
only what determines the model, so that editing alerts, monitoring or serving settings does not
retrain) and ``trainer_code_hash`` (:func:`trainer_code_hash`: a retrain is due when the code that
trains changed, even where git is absent, as in a container image).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlplatform.config import PipelineConfig

LINEAGE_KEYS = (
    "data_version",
    "data_commit",
    "data_uri",
    "validation",
    "data_docs",
    "feature_service",
    "training_set_uri",
    "git_commit",
    "pipeline_config_hash",
    "training_config_hash",
    "trainer_code_hash",
    "airflow_run_id",
)


@cache
def git_commit(repo: Path) -> str:
    """HEAD of the platform checkout (``+dirty`` when it has uncommitted changes), or ``unknown``."""
    try:
        sha = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


#: the code that determines what a training run produces, relative to the platform checkout
TRAINER_CODE = ("training", "mlplatform/stages/train.py", "mlplatform/scoring.py")


def code_hash(repo: Path, entries: tuple[str, ...]) -> str:
    """sha256 (16 hex) over the Python sources of ``entries`` (files or directories, relative
    to ``repo``), by relative path and content: stable across checkouts and machines, changed by
    any edit to that code. Also the code part of the step-cache keys (:mod:`mlplatform.cache`)."""
    return _code_hash(repo.resolve(), entries)


@cache
def _code_hash(repo: Path, entries: tuple[str, ...]) -> str:
    digest = hashlib.sha256()
    for entry in entries:
        root = repo / entry
        files = sorted(root.rglob("*.py")) if root.is_dir() else [root]
        for path in files:
            if path.is_file():
                digest.update(path.relative_to(repo).as_posix().encode() + b"\0")
                digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def trainer_code_hash(repo: Path) -> str:
    """:func:`code_hash` of the trainer's sources (:data:`TRAINER_CODE`)."""
    return code_hash(repo, TRAINER_CODE)


#: the config that determines what a training run produces: section -> fields (None: all). Where
#: data comes from (``source.uri``/``query``/``schedule``: the data version says what was read),
#: the gate, serving, monitoring, alerts and when to retrain are not in it.
TRAINING_CONFIG: dict[str, tuple[str, ...] | None] = {
    "source": ("format", "timestamp", "entity"),
    "validation": None,
    "features": None,
    "model": None,
    "training": ("workers", "processes_per_worker", "gpus_per_worker", "image"),
    "retrain": ("window_days",),
}


def training_config_hash(cfg: PipelineConfig) -> str:
    """sha256 (16 hex) of the parts of ``cfg`` that determine the model (:data:`TRAINING_CONFIG`);
    the champion's tag of it, compared with the live config's, tells whether a retrain is due."""
    dumped = cfg.model_dump(mode="json")
    picked = {
        section: dumped[section]
        if fields is None
        else {name: dumped[section][name] for name in fields}
        for section, fields in TRAINING_CONFIG.items()
    }
    blob = json.dumps(picked, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def lineage_tags(values: dict[str, object]) -> dict[str, str]:
    """Keep the known lineage keys, stringified (MLflow tags are strings)."""
    return {k: str(values[k]) for k in LINEAGE_KEYS if values.get(k) not in (None, "")}


def training_run_tags(
    upstream: Sequence[Mapping[str, object] | None],
    training_set: Mapping[str, object] | None,
    repo_root: Path,
    config_hash: str,
    airflow_run_id: str,
    training_hash: str | None = None,
) -> dict[str, str]:
    """The lineage tags of a training run: upstream stages' XComs (ingest, validate, features),
    the training set, this checkout's commit, the config hashes and the Airflow run id."""
    values: dict[str, object] = {}
    for xcom in upstream:
        values.update(xcom or {})
    values.update(training_set or {})
    values |= {
        "git_commit": git_commit(repo_root),
        "pipeline_config_hash": config_hash,
        "training_config_hash": training_hash,
        "trainer_code_hash": trainer_code_hash(repo_root),
        "airflow_run_id": airflow_run_id,
    }
    return lineage_tags(values)
