"""Train: the trainer spec and the local Horovod launch.

The trainer itself is ``training/train.py`` (run as ``python -m training.train --spec SPEC``);
this module writes its JSON spec (TFX-style: spec apart from executor), builds the ``horovodrun``
command, and — for the local backend — runs it as a subprocess with its output streamed line by
line into the caller's log. The Kubernetes backend runs the very same command inside the trainer
image (``operators/training.py``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from mlplatform.config import PipelineConfig
from mlplatform.settings import Settings
from mlplatform.stages import StageError
from mlplatform.storage import to_path

log = logging.getLogger(__name__)


def ensure_experiment(settings: Settings, name: str) -> str:
    """Create the MLflow experiment with its artifacts under the platform's artifact root."""
    import mlflow

    mlflow.set_tracking_uri(settings.tracking_uri)
    exp = mlflow.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    return mlflow.create_experiment(name, artifact_location=f"{settings.artifact_uri}/{name}")


def checkpoint_key(cfg: PipelineConfig, training_set: dict[str, object]) -> str:
    """What determines a training job's checkpoints: the exact train/hold-out bytes, the model,
    the features and the world size. A run that trains on the same batch with the same config
    (say, after the previous run died mid-training) resumes from the same checkpoints."""
    digest = hashlib.sha256()
    for key in ("train_uri", "holdout_uri"):
        with open(to_path(str(training_set[key])), "rb") as fh:
            digest.update(hashlib.file_digest(fh, "sha256").digest())
    recipe = {
        "model": cfg.model.model_dump(mode="json"),
        "features": cfg.features.model_dump(mode="json"),
        "np": cfg.training.np,
    }
    digest.update(json.dumps(recipe, sort_keys=True).encode())
    return digest.hexdigest()[:16]


def checkpoint_dir(
    cfg: PipelineConfig, training_set: dict[str, object], settings: Settings
) -> Path:
    """``<storage>/<pipeline>/checkpoints/<checkpoint_key>``: outside the run's own directory so
    that an Airflow retry and a later run on the same batch both resume; removed on success."""
    return to_path(settings.storage) / cfg.name / "checkpoints" / checkpoint_key(cfg, training_set)


def write_spec(
    cfg: PipelineConfig,
    training_set: dict[str, object],
    out_dir: Path,
    settings: Settings,
    run_name: str,
    tags: dict[str, str],
) -> Path:
    """Write ``out_dir/spec.json`` for the trainer; returns its path."""
    ensure_experiment(settings, cfg.name)
    spec = {
        "pipeline": cfg.name,
        "label": cfg.features.label,
        "numeric_features": cfg.features.numeric,
        "categorical_features": cfg.features.categorical,
        "model": cfg.model.model_dump(),
        "train_uri": str(to_path(str(training_set["train_uri"]))),
        "holdout_uri": str(to_path(str(training_set["holdout_uri"]))),
        "output_dir": str(out_dir),
        "checkpoint_dir": str(checkpoint_dir(cfg, training_set, settings)),
        "mlflow": {
            "tracking_uri": settings.tracking_uri,
            "experiment": cfg.name,
            "run_name": run_name,
            "tags": tags,
        },
    }
    path = out_dir / "spec.json"
    path.write_text(json.dumps(spec, indent=2))
    return path


def trainer_command(spec_path: str, np: int, python: str = "python") -> list[str]:
    """``horovodrun`` over ``np`` local slots (Gloo) running the trainer module."""
    return [
        "horovodrun", "-np", str(np), "--gloo", "-H", f"localhost:{np}",
        python, "-m", "training.train", "--spec", spec_path,
    ]  # fmt: skip


def stop_trainer(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """Terminate ``horovodrun`` and every rank it started (SIGKILL after ``grace_s``)."""
    from mlplatform import processes

    processes.terminate(processes.tree(proc.pid), grace_s)


def run_local(
    cfg: PipelineConfig,
    spec_path: Path,
    settings: Settings,
    emit: Callable[[str], None] = print,
    on_start: Callable[[subprocess.Popen], None] | None = None,
) -> dict[str, object]:
    """Run the trainer under ``horovodrun`` here; stream its output; return its ``result.json``."""
    bin_dir = Path(sys.executable).parent
    horovodrun = bin_dir / "horovodrun"
    if not horovodrun.exists() and not shutil.which("horovodrun"):
        raise StageError(
            "train: horovodrun is not installed in this environment: run `make env` (scripts/install_horovod.sh)"
        )
    cmd = trainer_command(str(spec_path), cfg.training.np, python=sys.executable)
    cmd[0] = str(horovodrun) if horovodrun.exists() else "horovodrun"
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(settings.repo_root), env.get("PYTHONPATH")])
    )
    emit(f"launching: {' '.join(cmd)}")
    proc = subprocess.Popen(
        cmd,
        cwd=settings.repo_root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    )
    assert proc.stdout is not None
    if on_start is not None:
        on_start(proc)
    tail: list[str] = []
    for line in proc.stdout:
        line = line.rstrip()
        emit(line)
        tail = (tail + [line])[-20:]
    code = proc.wait()
    if code != 0:
        last = next((t for t in reversed(tail) if t.strip()), "")
        raise StageError(f"train: trainer exited with code {code}: {last}")
    result_path = Path(json.loads(spec_path.read_text())["output_dir"]) / "result.json"
    return json.loads(result_path.read_text())
