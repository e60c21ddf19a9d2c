"""Train: the trainer spec and the local launch.

The trainer itself is ``training/train.py`` (run as ``python -m training.train --spec SPEC``);
its contract is :mod:`training.spec` (the spec, the result, the ``horovodrun`` command), which
this module and ``mlplatform/k8s/`` import: this module writes the spec (TFX-style: spec apart
from executor), picks the number of processes (:meth:`TrainingConfig.processes`: on CPU fitted to
the training rows unless the config fixes it) and runs the trainer as a subprocess with its
output streamed line by line into the caller's log: under ``horovodrun`` for more than one
process, plainly (no launcher, one TensorFlow start-up) for one. A trainer that fails raises
:class:`StageError` with the trainer's own error line (:func:`training.spec.read_error`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from mlplatform.config import PipelineConfig
from mlplatform.quiet_tf import is_startup_noise
from mlplatform.settings import Settings
from mlplatform.stages import StageError
from mlplatform.storage import to_path
from training.spec import (
    MlflowSpec,
    ModelParams,
    TrainResult,
    TrainSpec,
    clear_errors,
    horovodrun_command,
    read_error,
    spec_args,
    trainer_command,
)

log = logging.getLogger(__name__)


def ensure_experiment(settings: Settings, name: str) -> str:
    """Create the MLflow experiment with its artifacts under the platform's artifact root."""
    import mlflow

    mlflow.set_tracking_uri(settings.tracking_uri)
    exp = mlflow.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    return mlflow.create_experiment(name, artifact_location=f"{settings.artifact_uri}/{name}")


def local_world_size(cfg: PipelineConfig, train_uri: str) -> int:
    """Processes of a local run: :meth:`TrainingConfig.world_size` for the training rows (the
    Parquet footer) and this machine's cores."""
    from training.data import parquet_rows

    return cfg.training.world_size(parquet_rows(to_path(train_uri)), os.cpu_count())


def checkpoint_key(cfg: PipelineConfig, training_set: Mapping[str, object], np: int) -> str:
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
        "np": np,
    }
    digest.update(json.dumps(recipe, sort_keys=True).encode())
    return digest.hexdigest()[:16]


def checkpoint_dir(
    cfg: PipelineConfig, training_set: Mapping[str, object], settings: Settings, np: int
) -> Path:
    """``<storage>/<pipeline>/checkpoints/<checkpoint_key>``: outside the run's own directory so
    that an Airflow retry and a later run on the same batch both resume; removed on success."""
    return (
        to_path(settings.storage) / cfg.name / "checkpoints" / checkpoint_key(cfg, training_set, np)
    )


def build_spec(
    cfg: PipelineConfig,
    training_set: dict[str, object],
    *,
    output_dir: str,
    checkpoint_dir: str | None,
    mlflow: MlflowSpec | None,
) -> TrainSpec:
    """The trainer's spec for ``cfg`` on ``training_set`` (URIs kept as given): what the local
    stage writes and the Kubernetes builders put on the pod's command line."""
    return TrainSpec(
        pipeline=cfg.name,
        label=cfg.features.label,
        numeric_features=cfg.features.numeric,
        categorical_features=cfg.features.categorical,
        model=ModelParams.model_validate(cfg.model.model_dump()),
        train_uri=str(training_set["train_uri"]),
        holdout_uri=str(training_set["holdout_uri"]),
        output_dir=output_dir,
        checkpoint_dir=checkpoint_dir,
        mlflow=mlflow,
    )


def write_spec(
    cfg: PipelineConfig,
    training_set: Mapping[str, object],
    out_dir: Path,
    settings: Settings,
    run_name: str,
    tags: dict[str, str],
) -> Path:
    """Write ``out_dir/spec.json`` for a local run (local paths, this machine's world size in
    the checkpoint key); returns its path. The trainer creates a missing experiment with its
    artifacts under the platform's artifact root (``mlflow.artifact_location``), so this process
    need not import MLflow."""
    np = local_world_size(cfg, str(training_set["train_uri"]))
    local = {key: str(to_path(str(training_set[key]))) for key in ("train_uri", "holdout_uri")}
    spec = build_spec(
        cfg,
        {**training_set, **local},
        output_dir=str(out_dir),
        checkpoint_dir=str(checkpoint_dir(cfg, training_set, settings, np)),
        mlflow=MlflowSpec(
            tracking_uri=settings.tracking_uri,
            experiment=cfg.name,
            run_name=run_name,
            tags=tags,
            artifact_location=f"{settings.artifact_uri}/{cfg.name}",
        ),
    )
    path = out_dir / "spec.json"
    path.write_text(spec.to_json(indent=2))
    return path


def stop_trainer(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """Terminate ``horovodrun`` and every rank it started (SIGKILL after ``grace_s``)."""
    from mlplatform import processes

    processes.terminate(processes.tree(proc.pid), grace_s)


def local_command(np: int, spec_path: Path) -> list[str]:
    """The trainer for ``np`` local processes: Horovod's launcher over Gloo for more than one
    (as ``python -m training.launch``: ``horovodrun`` without its own TensorFlow import), the
    trainer alone for one (no launcher to start, one TensorFlow import)."""
    import importlib.util

    args = spec_args(path=str(spec_path))
    if np == 1:
        return trainer_command(args, python=sys.executable)
    if importlib.util.find_spec("horovod") is None:
        raise StageError(
            "train: horovod is not installed in this environment: run `make env` "
            "(scripts/install_horovod.sh)"
        )
    return horovodrun_command(
        np,
        args,
        gloo=True,
        python=sys.executable,
        launcher=(sys.executable, "-m", "training.launch"),
    )


def run_local(
    cfg: PipelineConfig,
    spec_path: Path,
    settings: Settings,
    emit: Callable[[str], None] = print,
    on_start: Callable[[subprocess.Popen], None] | None = None,
) -> dict[str, object]:
    """Run the trainer here; stream its output; return its ``result.json`` (a
    :class:`~training.spec.TrainResult` as a dict). A failed trainer raises :class:`StageError`
    with its own error line."""
    spec = TrainSpec.model_validate_json(spec_path.read_text())
    output_dir = Path(spec.output_dir)
    cmd = local_command(local_world_size(cfg, spec.train_uri), spec_path)
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(settings.repo_root), env.get("PYTHONPATH")])
    )
    clear_errors(output_dir)
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
        if is_startup_noise(line):
            continue
        emit(line)
        tail = (tail + [line])[-200:]
    code = proc.wait()
    if code != 0:
        cause = read_error(output_dir, tail) or next((t for t in reversed(tail) if t.strip()), "")
        raise StageError(f"train: the trainer failed (exit code {code}): {cause}")
    result = TrainResult.model_validate_json((output_dir / "result.json").read_text())
    return result.model_dump()
