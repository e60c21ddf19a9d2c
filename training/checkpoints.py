"""Per-epoch checkpoints and resume.

At the end of every epoch rank 0 writes ``<checkpoint_dir>/ckpt-<epoch>`` (a
``tf.train.Checkpoint`` of the model, the optimizer with its step counter, the epoch, the
history so far and the model's config fingerprint) through a ``tf.train.CheckpointManager``
(``max_to_keep=2``). TensorFlow writes the data files first, then the ``.index`` file (written
aside and renamed), and only then rewrites the ``checkpoint`` state file (atomically), so a kill
at any moment leaves "latest" naming a complete checkpoint. On start, if ``<checkpoint_dir>`` has
one, rank 0 restores it (every model variable, the Normalization statistics included; the
StringLookup vocabularies are constants rebuilt from the same data and are part of the
fingerprint) and broadcasts the state to all ranks; training goes on at epoch K+1. A checkpoint
written for a different model (kind, hidden units, features, label or vocabularies) fails the run
with one line naming what differs; it is never silently discarded.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from training import distribution
from training.model import missing_indicators
from training.spec import SpecError, TrainSpec

CHECKPOINT_NAME = "ckpt"
CHECKPOINTS_KEPT = 2


def model_fingerprint(spec: TrainSpec, model: keras.Model) -> dict[str, Any]:
    """What a checkpoint must agree on to be restored into this run's model: the architecture
    (was-missing inputs included), the features and label, and a digest of the StringLookup
    vocabularies (constants of the model, rebuilt from the data rather than restored)."""
    vocabularies = {
        layer.name: [str(t) for t in layer.get_vocabulary()]
        for layer in model.layers
        if isinstance(layer, keras.layers.StringLookup)
    }
    digest = hashlib.sha256(json.dumps(vocabularies, sort_keys=True).encode()).hexdigest()
    return {
        "kind": spec.model.kind,
        "hidden_units": list(spec.model.hidden_units),
        "numeric_features": list(spec.numeric_features),
        "categorical_features": list(spec.categorical_features),
        "label": spec.label,
        "vocabularies_sha256": digest[:16],
        "missing_indicators": missing_indicators(model),
    }


@dataclass
class ResumeState:
    """What rank 0 broadcasts before training: the last finished epoch and its history, or the
    one-line error that stops every rank."""

    epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    checkpoint: str | None = None
    error: str | None = None


class Checkpointer:
    """Rank 0's per-epoch checkpoints in ``directory`` (``ckpt-<epoch>``, the newest two kept).

    ``tf.train.Checkpoint(model=, optimizer=, epoch=, history=, config=)``: every model variable
    (Normalization statistics included) and optimizer variable (the step counter, so the LR
    schedule and Adam's bias correction continue where they were), the last finished epoch, the
    history as JSON and the model fingerprint as JSON.
    """

    def __init__(
        self,
        directory: Path,
        model: keras.Model,
        optimizer: keras.optimizers.Optimizer,
        fingerprint: dict[str, Any],
    ) -> None:
        self.directory = directory
        self.fingerprint = fingerprint
        self._epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
        self._history = tf.Variable("[]", dtype=tf.string, trainable=False)
        self._config = tf.Variable(json.dumps(fingerprint, sort_keys=True), dtype=tf.string)
        self.checkpoint = tf.train.Checkpoint(
            model=model,
            optimizer=optimizer,
            epoch=self._epoch,
            history=self._history,
            config=self._config,
        )
        directory.mkdir(parents=True, exist_ok=True)
        # A kill during a write can leave "<prefix>_temp/" behind: never referenced, remove it.
        for leftover in directory.glob(f"{CHECKPOINT_NAME}-*_temp"):
            shutil.rmtree(leftover, ignore_errors=True)
        self.manager = tf.train.CheckpointManager(
            self.checkpoint,
            str(directory),
            max_to_keep=CHECKPOINTS_KEPT,
            checkpoint_name=CHECKPOINT_NAME,
        )

    def restore_latest(self) -> ResumeState:
        """Restore the newest checkpoint, if any; ``ResumeState()`` (epoch 0) when there is none.

        Raises ``SpecError`` when it was written for another model or cannot be read.
        """
        path = self.manager.latest_checkpoint
        if path is None:
            return ResumeState()
        try:
            reader = tf.train.load_checkpoint(path)
            stored = json.loads(reader.get_tensor("config/.ATTRIBUTES/VARIABLE_VALUE"))
        except Exception as exc:
            raise SpecError(
                f"checkpoint {path} is unreadable or not a training.train checkpoint "
                f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                f"delete {self.directory} to start over"
            ) from exc
        if stored != self.fingerprint:
            diffs = [
                f"{key}: {stored.get(key)!r} -> {self.fingerprint.get(key)!r}"
                for key in sorted(set(stored) | set(self.fingerprint))
                if stored.get(key) != self.fingerprint.get(key)
            ]
            raise SpecError(
                f"checkpoint {path} was written for a different model ({'; '.join(diffs)}); "
                f"delete {self.directory} to start over"
            )
        try:
            status = self.checkpoint.restore(path)
            status.assert_consumed()
            status.assert_existing_objects_matched()
        except Exception as exc:
            raise SpecError(
                f"cannot restore checkpoint {path}: {str(exc).splitlines()[0]}; "
                f"delete {self.directory} to start over"
            ) from exc
        return ResumeState(
            epoch=int(self._epoch.numpy()),
            history=json.loads(self._history.numpy().decode()),
            checkpoint=path,
        )

    def save(self, epoch: int, history: list[dict[str, Any]]) -> str:
        """Write ``ckpt-<epoch>``; returns its prefix (the state file names it once complete)."""
        self._epoch.assign(epoch)
        self._history.assign(json.dumps(history))
        return self.manager.save(checkpoint_number=epoch)


def resume_state(checkpointer: Checkpointer | None) -> ResumeState:
    """Rank 0 restores (``checkpointer``; ``None`` on other ranks) and broadcasts the outcome;
    every rank returns the same state or raises the same ``SpecError``."""
    state = ResumeState()
    if checkpointer is not None:
        try:
            state = checkpointer.restore_latest()
        except SpecError as exc:
            state = ResumeState(error=str(exc))
    state = ResumeState(
        **distribution.broadcast_object(dataclasses.asdict(state), name="resume_state")
    )
    if state.error:
        raise SpecError(state.error)
    return state
