"""The trainer entry point: ``python -m training.train (--spec SPEC.json | --spec-json TEXT)``.

Run it under ``horovodrun`` for data parallelism (``horovodrun -np N --gloo -H localhost:N python
-m training.train --spec ...``) or plainly (world size 1). The spec is the contract between the
platform (``mlplatform/stages/train.py`` writes it) and this executor; ``--spec PATH`` reads it
from a file, ``--spec-json TEXT`` takes the same JSON inline (a Kubernetes pod's command line):

    {"pipeline": "demo", "label": "churned",
     "numeric_features": [...], "categorical_features": [...],
     "model": {"kind": "tabular_classifier" | "tabular_regressor", "hidden_units": [64, 32],
               "epochs": 5, "batch_size": 256, "learning_rate": 0.001, "seed": 42},
     "train_uri": "/abs/train.parquet", "holdout_uri": "/abs/holdout.parquet",
     "output_dir": "/abs/train_out",
     "checkpoint_dir": "/abs/train_out/checkpoints",   # optional; this is the default
     "mlflow": {"tracking_uri": ..., "experiment": ..., "run_name": ..., "tags": {...},
                "artifact_location": ...}   # optional; "artifact_location" only used to create
    }                                       # a missing experiment

``mlflow.tracking_uri`` may be left out (a Kubernetes pod gets it from a Secret): the trainer then
takes ``MLFLOW_TRACKING_URI`` from its environment (MLflow itself reads
``MLFLOW_TRACKING_USERNAME``/``PASSWORD``/``TOKEN`` from there). The URI is never written to
disk with credentials: ``mlflow_run.json`` records it with its userinfo replaced by ``***``.

URIs (``train_uri``, ``holdout_uri``, ``output_dir``, ``checkpoint_dir``) are local paths or
``file://`` URIs; any other scheme (``s3://`` included) is a one-line spec error naming the key.
``batch_size`` is per rank (global = batch_size * N).

Data parallelism (Keras 3 + ``horovod.tensorflow``; ``horovod.tensorflow.keras`` does not average
gradients under Keras 3): every rank reads the whole training set, adapts the preprocessing layers
on all of it (so they agree), shuffles the row order with ``seed`` and takes ``rows[rank::N]``
truncated to ``n // N`` rows, so all ranks run the same number of steps per epoch. Each epoch
visits this shard in an order drawn from ``(seed, rank, epoch)`` alone, so a resumed run sees the
same batches as an uninterrupted one. The learning rate is ``learning_rate * N`` after a linear
warm-up from ``learning_rate`` over the first epoch (it follows the optimizer's step counter).
Before the first step rank 0's model and optimizer variables are broadcast; each step averages
gradients with ``hvd.grouped_allreduce`` (skipped at world size 1, where it would only add
Horovod's per-step queueing latency). Epoch losses are averaged over ranks.

Checkpoints and resume: at the end of every epoch rank 0 writes ``<checkpoint_dir>/ckpt-<epoch>``
(a ``tf.train.Checkpoint`` of the model, the optimizer with its step counter, the epoch, the
history so far and the model's config fingerprint) through a ``tf.train.CheckpointManager``
(``max_to_keep=2``). TensorFlow writes the data files first, then the ``.index`` file (written
aside and renamed), and only then rewrites the ``checkpoint`` state file (atomically), so a kill
at any moment leaves "latest" naming a complete checkpoint. On start, if ``<checkpoint_dir>`` has
one, rank 0 restores it (every model variable, the Normalization statistics included; the
StringLookup vocabularies are constants rebuilt from the same data and are part of the
fingerprint), prints ``resuming from checkpoint at epoch K/N`` and broadcasts the state to all
ranks; training goes on at epoch K+1 (K >= N: nothing left to train, the model is exported). A
checkpoint written for a different model (kind, hidden units, features, label or vocabularies)
fails the run with one line (exit 2) naming what differs; it is never silently discarded.
With ``mlflow`` the run is created when training starts and its id is kept in
``<checkpoint_dir>/mlflow_run.json``; a resumed trainer continues that run (``loss`` is logged
per epoch after the epoch's checkpoint is written, and any epoch the checkpoint has but the run
lacks is back-filled), so the run holds one continuous series.

Outputs (rank 0): ``<output_dir>/saved_model`` (signature ``serving_default``: raw features by
name, rank-1 ``[None]`` float32 / string tensors, NaN / ``""`` for a missing value ->
``{"score"|"prediction": float32 [None]}``),
``<output_dir>/metrics.json`` (``holdout``, ``history`` [``epoch``, ``loss``, ``seconds``,
``samples_per_sec`` per epoch], ``world_size``, ``train_rows``, ``samples_per_sec``,
``steady_samples_per_sec``, ``seconds``, ``resumed_from_epoch``), ``<output_dir>/result.json``
(``mlflow_run_id``, ``model_uri`` = ``runs:/<id>/model``, ``saved_model_dir``, ``metrics``) and,
with ``mlflow`` in the spec, one MLflow run with params, per-epoch ``loss``, ``holdout_*`` metrics
and the SavedModel logged with the TensorFlow flavor as ``model`` (its SavedModel is
``model/tf2model/``). With ``--dump-weights`` every rank writes
``<output_dir>/weights_rank<r>.npz``.

Throughput: ``seconds`` is the training loop's time in this process (steps plus the per-epoch
loss allreduce; not TF start-up, data loading, checkpoint writes or MLflow calls);
``samples_per_sec`` = global rows per epoch * epochs trained here / ``seconds``;
``steady_samples_per_sec`` leaves out the first epoch trained here (it traces the step function).

Environment: ``MLP_TRAINER_EPOCH_PAUSE_S`` (a test hook, default 0) makes rank 0 sleep that long
after each epoch's checkpoint, so that a test can kill the trainer at a known epoch.

Exit codes: 0 ok; 2 bad spec / data / environment / incompatible checkpoint, with one
``training.train: error: ...`` line.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402
from urllib.parse import unquote, urlparse  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pyarrow.dataset as pads  # noqa: E402
import tensorflow as tf  # noqa: E402

from training.model import (  # noqa: E402
    CLASSIFIER,
    MISSING_CATEGORY,
    MODEL_KINDS,
    ServingModule,
    build_model,
    export_saved_model,
    missing_indicators,
    output_name,
)

try:
    import horovod.tensorflow as hvd
except Exception as exc:  # ImportError, or a TF/horovod ABI mismatch when loading mpi_lib
    hvd = None
    _HOROVOD_IMPORT_ERROR: str = f"{type(exc).__name__}: {exc}".splitlines()[0]
else:
    _HOROVOD_IMPORT_ERROR = ""

PROG = "training.train"
CHECKPOINT_NAME = "ckpt"
CHECKPOINTS_KEPT = 2
MLFLOW_RUN_FILE = "mlflow_run.json"
PAUSE_ENV = "MLP_TRAINER_EPOCH_PAUSE_S"


class SpecError(Exception):
    """A bad spec or bad input data: reported as one line, exit code 2."""


# --------------------------------------------------------------------------------------- spec


@dataclass(frozen=True)
class ModelParams:
    kind: str
    hidden_units: list[int]
    epochs: int
    batch_size: int
    learning_rate: float
    seed: int


@dataclass(frozen=True)
class TrainSpec:
    pipeline: str
    label: str
    numeric_features: list[str]
    categorical_features: list[str]
    model: ModelParams
    train_path: Path
    holdout_path: Path
    output_dir: Path
    checkpoint_dir: Path
    mlflow: dict[str, Any] | None = None
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def features(self) -> list[str]:
        return [*self.numeric_features, *self.categorical_features]


def local_path(uri: str, key: str) -> Path:
    """A plain path or a ``file://`` URI -> an absolute local path; any other scheme (``s3://``
    included) raises ``SpecError`` naming ``key``."""
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path)).resolve()
    if parsed.scheme and len(parsed.scheme) > 1:  # one letter: a Windows drive, not a scheme
        raise SpecError(
            f"spec: {key}: unsupported URI scheme {parsed.scheme + '://'!r} in {uri!r} "
            "(only local paths and file:// URIs are supported)"
        )
    return Path(uri).resolve()


def parse_spec(raw: dict[str, Any]) -> TrainSpec:
    """Validate the JSON spec; raises ``SpecError`` naming the first problem."""

    def need(obj: dict[str, Any], key: str, typ: type | tuple[type, ...], where: str = "") -> Any:
        if key not in obj or obj[key] is None:
            raise SpecError(f"spec: missing required key {where}{key!r}")
        value = obj[key]
        if not isinstance(value, typ):
            raise SpecError(f"spec: {where}{key!r} has the wrong type ({type(value).__name__})")
        return value

    if not isinstance(raw, dict):
        raise SpecError("spec: the top level must be a JSON object")
    numeric = need(raw, "numeric_features", list)
    categorical = need(raw, "categorical_features", list)
    for name in [*numeric, *categorical]:
        if not isinstance(name, str) or not name:
            raise SpecError(f"spec: feature names must be non-empty strings, got {name!r}")
    if not numeric and not categorical:
        raise SpecError("spec: no features (numeric_features and categorical_features are empty)")
    if len(set(numeric) | set(categorical)) != len(numeric) + len(categorical):
        raise SpecError("spec: a feature is listed twice")
    label = need(raw, "label", str)
    if label in numeric or label in categorical:
        raise SpecError(f"spec: the label {label!r} is also listed as a feature")

    m = need(raw, "model", dict)
    kind = m.get("kind", CLASSIFIER)
    if kind not in MODEL_KINDS:
        raise SpecError(f"spec: model.kind must be one of {list(MODEL_KINDS)}, got {kind!r}")
    hidden = m.get("hidden_units", [64, 32])
    if (
        not isinstance(hidden, list)
        or not hidden
        or any(not isinstance(u, int) or isinstance(u, bool) or u <= 0 for u in hidden)
    ):
        raise SpecError(
            f"spec: model.hidden_units must be a non-empty list of positive ints, got {hidden!r}"
        )
    params = ModelParams(
        kind=kind,
        hidden_units=[int(u) for u in hidden],
        epochs=_positive(m.get("epochs", 5), "model.epochs", int),
        batch_size=_positive(m.get("batch_size", 256), "model.batch_size", int),
        learning_rate=_positive(m.get("learning_rate", 1e-3), "model.learning_rate", float),
        seed=int(m.get("seed", 42)),
    )
    mlflow_cfg = raw.get("mlflow")
    if mlflow_cfg is not None:
        if not isinstance(mlflow_cfg, dict):
            raise SpecError("spec: 'mlflow' must be an object or null")
        mlflow_cfg = {**mlflow_cfg, "tracking_uri": _tracking_uri(mlflow_cfg)}
        need(mlflow_cfg, "experiment", str, "mlflow.")
        if not isinstance(mlflow_cfg.get("tags") or {}, dict):
            raise SpecError("spec: 'mlflow.tags' must be an object")
    output_dir = local_path(need(raw, "output_dir", str), "output_dir")
    checkpoint_uri = raw.get("checkpoint_dir")
    if checkpoint_uri is None:
        checkpoint_dir = output_dir / "checkpoints"
    elif isinstance(checkpoint_uri, str) and checkpoint_uri:
        checkpoint_dir = local_path(checkpoint_uri, "checkpoint_dir")
    else:
        raise SpecError(
            f"spec: 'checkpoint_dir' must be a non-empty string, got {checkpoint_uri!r}"
        )
    return TrainSpec(
        pipeline=str(raw.get("pipeline") or "default"),
        label=label,
        numeric_features=list(numeric),
        categorical_features=list(categorical),
        model=params,
        train_path=local_path(need(raw, "train_uri", str), "train_uri"),
        holdout_path=local_path(need(raw, "holdout_uri", str), "holdout_uri"),
        output_dir=output_dir,
        checkpoint_dir=checkpoint_dir,
        mlflow=mlflow_cfg,
        raw=raw,
    )


def _tracking_uri(mlflow_cfg: dict[str, Any]) -> str:
    """``mlflow.tracking_uri`` of the spec, else ``MLFLOW_TRACKING_URI`` of the environment."""
    uri = mlflow_cfg.get("tracking_uri")
    if uri is None:
        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            raise SpecError(
                "spec: mlflow.tracking_uri is missing and MLFLOW_TRACKING_URI is not set"
            )
    if not isinstance(uri, str) or not uri:
        raise SpecError("spec: 'mlflow.tracking_uri' must be a non-empty string")
    return uri


def redact_uri(uri: str) -> str:
    """``uri`` with any userinfo (``user:password@``) replaced by ``***@``."""
    scheme, sep, rest = uri.partition("://")
    if not sep:
        return uri
    authority, slash, path = rest.partition("/")
    if "@" not in authority:
        return uri
    return f"{scheme}://***@{authority.rpartition('@')[2]}{slash}{path}"


def _positive(value: Any, key: str, typ: type) -> Any:
    ok_types = (int,) if typ is int else (int, float)
    if not isinstance(value, ok_types) or isinstance(value, bool) or value <= 0:
        raise SpecError(f"spec: {key} must be a positive {typ.__name__}, got {value!r}")
    return typ(value)


def load_spec(path: str) -> TrainSpec:
    """Read and validate the spec file at ``path``."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError as exc:
        raise SpecError(f"spec file not found: {path}") from exc
    return load_spec_json(text, f"spec file {path}")


def load_spec_json(text: str, source: str = "--spec-json") -> TrainSpec:
    """Validate the spec given as JSON text (``source`` names it in errors)."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SpecError(f"{source} is not valid JSON: {exc}") from exc
    return parse_spec(raw)


# --------------------------------------------------------------------------------------- data


@dataclass
class Table:
    """Feature columns as rank-1 numpy arrays (float32 with NaN / str objects with
    ``MISSING_CATEGORY`` where a value is missing) and the float32 label (never missing)."""

    features: dict[str, np.ndarray]
    label: np.ndarray

    def __len__(self) -> int:
        return len(self.label)

    def take(self, idx: np.ndarray) -> Table:
        return Table({k: v[idx] for k, v in self.features.items()}, self.label[idx])


def read_table(path: Path, spec: TrainSpec, role: str) -> Table:
    """Read ``role`` (train / holdout) parquet, checking that every spec column is there."""
    if not path.exists():
        raise SpecError(f"{role} data not found: {path}")
    try:
        names = set(pads.dataset(str(path), format="parquet").schema.names)
    except Exception as exc:
        raise SpecError(f"cannot read {role} parquet {path}: {exc}".splitlines()[0]) from exc
    columns = [*spec.features, spec.label]
    missing = [c for c in columns if c not in names]
    if missing:
        raise SpecError(
            f"column {missing[0]!r} not found in {role} data {path}"
            + (f" (also missing: {', '.join(missing[1:])})" if len(missing) > 1 else "")
        )
    df = pd.read_parquet(path, columns=columns)
    if df.empty:
        raise SpecError(f"{role} data {path} has no rows")
    features: dict[str, np.ndarray] = {}
    for name in spec.numeric_features:
        try:
            col = pd.to_numeric(df[name]).to_numpy(dtype=np.float32, na_value=np.nan)
        except (TypeError, ValueError) as exc:
            raise SpecError(f"numeric feature {name!r} in {path} is not numeric: {exc}") from exc
        features[name] = col  # NaN: missing, imputed inside the model
    for name in spec.categorical_features:
        col = df[name].astype("string").fillna(MISSING_CATEGORY).to_numpy(dtype=object)
        features[name] = col.astype(str).astype(object)
    if role == "train":
        _require_values(features, spec, path)
    try:
        label = pd.to_numeric(df[spec.label]).to_numpy(dtype=np.float32, na_value=np.nan)
    except (TypeError, ValueError) as exc:
        raise SpecError(f"label {spec.label!r} in {path} is not numeric: {exc}") from exc
    if np.isnan(label).any():
        raise SpecError(
            f"label {spec.label!r} in {path} has {int(np.isnan(label).sum())} missing values"
        )
    if spec.model.kind == CLASSIFIER and not np.isin(label, (0.0, 1.0)).all():
        bad = sorted(set(np.unique(label).tolist()) - {0.0, 1.0})[:5]
        raise SpecError(
            f"label {spec.label!r} in {path} must be 0/1 for a tabular_classifier, found {bad}"
        )
    return Table(features, label)


def _require_values(features: dict[str, np.ndarray], spec: TrainSpec, path: Path) -> None:
    """A feature without any value in the training rows cannot be learned: ``SpecError``."""
    for name, col in features.items():
        if name in spec.numeric_features:
            empty = bool(np.isnan(col).all())
        else:
            empty = bool((col == MISSING_CATEGORY).all())
        if empty:
            raise SpecError(f"feature {name!r} has no value in any row of the train data {path}")


# ------------------------------------------------------------------------------------- horovod


def init_horovod() -> tuple[int, int, str]:
    """``hvd.init()``, pin one GPU per local rank if there are GPUs, size CPU thread pools.

    Returns ``(rank, size, device)`` where ``device`` is "CPU" or the GPU's name.
    """
    if hvd is None:
        raise SpecError(
            f"horovod is not importable ({_HOROVOD_IMPORT_ERROR}): "
            "install it into this environment with scripts/install_horovod.sh"
        )
    hvd.init()
    gpus = tf.config.list_physical_devices("GPU")
    device = "CPU"
    if gpus:
        gpu = gpus[hvd.local_rank() % len(gpus)]
        for g in gpus:
            tf.config.experimental.set_memory_growth(g, True)
        tf.config.set_visible_devices(gpu, "GPU")
        device = tf.config.experimental.get_device_details(gpu).get("device_name", "GPU")
    elif hvd.local_size() > 1:
        # N trainer processes share this host's cores: don't let each one use all of them.
        try:
            tf.config.threading.set_intra_op_parallelism_threads(
                max(1, (os.cpu_count() or 1) // hvd.local_size())
            )
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:  # the TF runtime was already initialised
            pass
    return hvd.rank(), hvd.size(), device


class LinearWarmup(keras.optimizers.schedules.LearningRateSchedule):
    """``base * (1 + (world_size - 1) * min(1, (step + 1) / warmup_steps))``: from ``base`` to
    ``base * world_size`` over the first ``warmup_steps`` steps (one epoch)."""

    def __init__(self, base: float, world_size: int, warmup_steps: int) -> None:
        self.base = float(base)
        self.world_size = int(world_size)
        self.warmup_steps = max(1, int(warmup_steps))

    def __call__(self, step: Any) -> Any:
        step = keras.ops.cast(step, "float32")
        frac = keras.ops.minimum(1.0, (step + 1.0) / float(self.warmup_steps))
        return self.base * (1.0 + (self.world_size - 1) * frac)

    def get_config(self) -> dict[str, Any]:
        return {"base": self.base, "world_size": self.world_size, "warmup_steps": self.warmup_steps}


def shard_rows(n: int, rank: int, size: int, seed: int) -> np.ndarray:
    """This rank's row indices: a seeded shuffle, every ``size``-th row, equal length on all ranks."""
    per_rank = n // size
    if per_rank == 0:
        raise SpecError(f"only {n} training rows for {size} ranks")
    order = np.random.default_rng(seed).permutation(n)
    return order[rank::size][:per_rank]


def epoch_order(n: int, seed: int, rank: int, epoch: int) -> np.ndarray:
    """The order in which ``rank`` visits its ``n`` shard rows in ``epoch``: a function of
    ``(seed, rank, epoch)`` only, so an epoch after a resume sees the same batches as without."""
    return np.random.default_rng([seed, rank, epoch]).permutation(n).astype(np.int64)


class Trainer:
    """One rank's model, optimizer, data shard and compiled training step.

    The model is built after ``keras.utils.set_random_seed(seed)`` (identical initial weights on
    every rank) and the optimizer is built up front, so its variables exist before the first step
    (to be restored from a checkpoint and broadcast). ``run_epoch`` is the only place that steps.
    """

    def __init__(self, spec: TrainSpec, train_table: Table, rank: int, size: int) -> None:
        params = spec.model
        self.spec, self.rank, self.size = spec, rank, size
        self.train_rows = len(train_table)
        keras.utils.set_random_seed(params.seed)
        self.model = build_model(
            params.kind,
            params.hidden_units,
            spec.numeric_features,
            spec.categorical_features,
            {k: v.reshape(-1, 1) for k, v in train_table.features.items()},
            output_bias=float(train_table.label.mean()) if params.kind != CLASSIFIER else 0.0,
            output_scale=float(train_table.label.std()) if params.kind != CLASSIFIER else 1.0,
        )
        shard = train_table.take(shard_rows(len(train_table), rank, size, params.seed))
        self.per_rank = len(shard)
        self.global_rows = self.per_rank * size
        self.steps_per_epoch = math.ceil(self.per_rank / params.batch_size)  # same on all ranks
        # The shard as (n, 1) tensors; each batch is a gather of a slice of the epoch's order.
        self._columns = {k: tf.constant(v.reshape(-1, 1)) for k, v in shard.features.items()}
        self._labels = tf.constant(shard.label.reshape(-1, 1))

        self.optimizer = keras.optimizers.Adam(
            learning_rate=LinearWarmup(params.learning_rate, size, self.steps_per_epoch)
        )
        self.optimizer.build(self.model.trainable_variables)
        if params.kind == CLASSIFIER:
            loss_fn: keras.losses.Loss = keras.losses.BinaryCrossentropy()
        else:
            loss_fn = keras.losses.MeanSquaredError()
        self._loss_sum = tf.Variable(0.0, dtype=tf.float32, trainable=False)
        model, optimizer, loss_sum = self.model, self.optimizer, self._loss_sum
        average = size > 1

        x_spec = {
            name: tf.TensorSpec(
                [None, 1], tf.float32 if name in spec.numeric_features else tf.string, name=name
            )
            for name in spec.features
        }
        y_spec = tf.TensorSpec([None, 1], tf.float32)

        @tf.function(input_signature=[x_spec, y_spec])
        def train_step(x: dict[str, tf.Tensor], y: tf.Tensor) -> None:
            with tf.GradientTape() as tape:
                loss = loss_fn(y, model(x, training=True))
            grads = tape.gradient(loss, model.trainable_variables)
            if average:  # the mean over one rank is the gradient itself: skip Horovod's queue
                grads = hvd.grouped_allreduce(grads, op=hvd.Average)
            optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
            # Accumulate on the device: no host round trip per step.
            loss_sum.assign_add(loss * tf.cast(tf.shape(y)[0], tf.float32))

        self._train_step = train_step

    def batches(self, epoch: int) -> tf.data.Dataset:
        """Epoch ``epoch``'s batches of this rank's shard (``epoch_order``), prefetched."""
        columns, labels = self._columns, self._labels
        order = epoch_order(self.per_rank, self.spec.model.seed, self.rank, epoch)

        def gather(idx: tf.Tensor) -> tuple[dict[str, tf.Tensor], tf.Tensor]:
            return {k: tf.gather(v, idx) for k, v in columns.items()}, tf.gather(labels, idx)

        return (
            tf.data.Dataset.from_tensor_slices(order)
            .batch(self.spec.model.batch_size)
            .map(gather)
            .prefetch(2)
        )

    def broadcast_state(self) -> None:
        """Rank 0's model and optimizer variables (step counter included) to every rank."""
        hvd.broadcast_variables([v.value for v in self.model.variables], root_rank=0)
        hvd.broadcast_variables([v.value for v in self.optimizer.variables], root_rank=0)

    def run_epoch(self, epoch: int) -> tuple[float, float]:
        """Train one epoch; returns ``(loss averaged over rows and ranks, seconds)``."""
        t0 = time.perf_counter()
        self._loss_sum.assign(0.0)
        for x, y in self.batches(epoch):
            self._train_step(x, y)
        loss = hvd.allreduce(
            self._loss_sum.read_value() / float(self.per_rank),
            op=hvd.Average,
            name=f"epoch_loss_{epoch}",
        )
        loss_value = float(loss)  # waits for the epoch's last step
        return loss_value, time.perf_counter() - t0


# ------------------------------------------------------------------------------ checkpointing


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
        "hidden_units": spec.model.hidden_units,
        "numeric_features": spec.numeric_features,
        "categorical_features": spec.categorical_features,
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
        **hvd.broadcast_object(dataclasses.asdict(state), root_rank=0, name="resume_state")
    )
    if state.error:
        raise SpecError(state.error)
    return state


# ---------------------------------------------------------------------------------- evaluation


def evaluate(kind: str, y: np.ndarray, pred: np.ndarray) -> dict[str, float | None]:
    """Hold-out metrics: auc / accuracy / log_loss (classifier) or rmse / mae (regressor)."""
    if not np.isfinite(pred).all():  # a diverged model: report it, the gate refuses it
        names = ("auc", "accuracy", "log_loss") if kind == CLASSIFIER else ("rmse", "mae")
        return dict.fromkeys(names, float("nan"))
    if kind == CLASSIFIER:
        from sklearn.metrics import log_loss, roc_auc_score

        auc = float(roc_auc_score(y, pred)) if len(np.unique(y)) == 2 else None
        return {
            "auc": auc,
            "accuracy": float(np.mean((pred >= 0.5).astype(np.float32) == y)),
            "log_loss": float(log_loss(y, np.clip(pred, 1e-7, 1 - 1e-7), labels=[0.0, 1.0])),
        }
    err = pred.astype(np.float64) - y.astype(np.float64)
    return {"rmse": float(np.sqrt(np.mean(err**2))), "mae": float(np.mean(np.abs(err)))}


def dump_weights(model: keras.Model, path: Path) -> None:
    np.savez(
        path,
        **{
            f"{i:03d}_{v.path.replace('/', '__')}": np.asarray(v)
            for i, v in enumerate(model.variables)
        },
    )


# -------------------------------------------------------------------------------------- mlflow


class _DropLogRecords(logging.Filter):
    """Drop log records whose message contains ``text``."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


class MlflowTracker:
    """Rank 0's MLflow run for one training job, continued across retries.

    ``open`` creates the run (and a missing experiment) when training starts and records its id
    in ``<checkpoint_dir>/mlflow_run.json``; when that file names a run that still exists on the
    same tracking URI, the run is continued instead (``mlflow.start_run(run_id=...)``). Params
    the run lacks are logged; one whose value changed on a retry (say ``world_size``) is kept and
    the new value set as tag ``resumed.<param>``. ``log_epoch`` logs ``loss`` at step ``epoch``
    (after that epoch's checkpoint is written); ``open`` back-fills the epochs of the restored
    history that the run lacks, so ``loss`` is one series with each epoch once. ``finish`` logs
    the hold-out metrics and the model and ends the run; ``fail`` ends it FAILED (a killed
    process leaves it RUNNING, and the retry continues it).
    """

    def __init__(self, spec: TrainSpec, device: str, world_size: int, train_rows: int) -> None:
        import mlflow

        self.mlflow = mlflow
        self.spec = spec
        self.cfg: dict[str, Any] = spec.mlflow or {}
        self.device = device
        self.world_size = world_size
        self.train_rows = train_rows
        self.run_file = spec.checkpoint_dir / MLFLOW_RUN_FILE
        self.run_id: str | None = None

    def _params(self) -> dict[str, Any]:
        params = self.spec.model
        return {
            "model_kind": params.kind,
            "hidden_units": json.dumps(params.hidden_units),
            "epochs": params.epochs,
            "batch_size": params.batch_size,
            "global_batch_size": params.batch_size * self.world_size,
            "learning_rate": params.learning_rate,
            "seed": params.seed,
            "world_size": self.world_size,
            "label": self.spec.label,
            "numeric_features": ",".join(self.spec.numeric_features),
            "categorical_features": ",".join(self.spec.categorical_features),
            "train_rows": self.train_rows,
        }

    def _previous_run_id(self, client: Any) -> str | None:
        """The run named by ``mlflow_run.json`` if it is usable here, else ``None`` (printed)."""
        if not self.run_file.exists():
            return None
        try:
            stored = json.loads(self.run_file.read_text())
            run_id = str(stored["run_id"])
        except (OSError, ValueError, KeyError, TypeError):
            print(f"warning: ignoring unreadable {self.run_file}; starting a new MLflow run")
            return None
        if redact_uri(str(stored.get("tracking_uri"))) != redact_uri(self.cfg["tracking_uri"]):
            print(
                f"warning: {self.run_file} names run {run_id} on another tracking URI; "
                "starting a new MLflow run",
                flush=True,
            )
            return None
        try:
            run = client.get_run(run_id)
        except Exception:
            run = None
        if run is None or run.info.lifecycle_stage != "active":
            print(f"warning: MLflow run {run_id} is gone; starting a new MLflow run", flush=True)
            return None
        return run_id

    def open(self, state: ResumeState) -> str:
        """Start or continue the run; returns its id."""
        mlflow = self.mlflow
        mlflow.set_tracking_uri(self.cfg["tracking_uri"])
        client = mlflow.MlflowClient(self.cfg["tracking_uri"])
        tags = {str(k): str(v) for k, v in (self.cfg.get("tags") or {}).items()}
        tags.update(
            {
                "device": self.device,
                "pipeline": self.spec.pipeline,
                "trainer": "training.train (horovod)",
            }
        )
        run_id = self._previous_run_id(client)
        params = {k: str(v) for k, v in self._params().items()}
        if run_id is not None:
            mlflow.start_run(run_id=run_id)
            logged = client.get_run(run_id).data.params
            tags.update(
                {f"resumed.{k}": v for k, v in params.items() if k in logged and logged[k] != v}
            )
            tags["resumed_from_epoch"] = str(state.epoch)
            params = {k: v for k, v in params.items() if k not in logged}
            print(f"continuing MLflow run {run_id}", flush=True)
        else:
            experiment = mlflow.get_experiment_by_name(self.cfg["experiment"])
            if experiment is None:
                experiment_id = mlflow.create_experiment(
                    self.cfg["experiment"], artifact_location=self.cfg.get("artifact_location")
                )
            else:
                experiment_id = experiment.experiment_id
            run = mlflow.start_run(experiment_id=experiment_id, run_name=self.cfg.get("run_name"))
            run_id = run.info.run_id
            record = {
                "run_id": run_id,
                "experiment_id": experiment_id,
                "tracking_uri": redact_uri(self.cfg["tracking_uri"]),
            }
            self.run_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.run_file.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(record, indent=2))
            tmp.replace(self.run_file)
        self.run_id = run_id
        mlflow.set_tags(tags)
        if params:
            mlflow.log_params(params)
        have = {m.step for m in client.get_metric_history(run_id, "loss")}
        for point in state.history:
            if point["epoch"] not in have:
                self.log_epoch(point)
        return run_id

    def log_epoch(self, point: dict[str, Any]) -> None:
        """Log one finished epoch's ``loss`` at step ``epoch``."""
        self.mlflow.log_metric("loss", point["loss"], step=int(point["epoch"]))

    def finish(
        self, module: ServingModule, metrics: dict[str, Any], holdout: Table
    ) -> tuple[str, str, str | None]:
        """Hold-out metrics, ``metrics.json`` and the model (TF flavor); ends the run.

        Returns ``(run_id, "runs:/<run_id>/model", logged_model_id)``.
        """
        import mlflow.tensorflow
        from mlflow.models import ModelSignature
        from mlflow.types.schema import Schema, TensorSpec

        mlflow, spec = self.mlflow, self.spec
        assert self.run_id is not None, "open() first"
        # The serving signature as MLflow tensor specs: rank-1 raw-feature columns in, one out.
        inputs = [TensorSpec(np.dtype(np.float32), (-1,), name) for name in spec.numeric_features]
        inputs += [TensorSpec(np.dtype(object), (-1,), name) for name in spec.categorical_features]
        signature = ModelSignature(
            inputs=Schema(inputs),
            outputs=Schema([TensorSpec(np.dtype(np.float32), (-1,), output_name(spec.model.kind))]),
        )
        example = {name: col[:5] for name, col in holdout.features.items()}
        scalars = {
            **{f"holdout_{k}": v for k, v in metrics["holdout"].items()},
            "samples_per_sec": metrics["samples_per_sec"],
            "train_seconds": metrics["seconds"],
        }
        mlflow.log_metrics({k: v for k, v in scalars.items() if v is not None})
        mlflow.log_dict(metrics, "metrics.json")
        # MLflow checks the input example by serving it through the flavor's pyfunc, whose
        # tf2-module wrapper takes a single ndarray only, never named columns: that check fails
        # by design here (the platform serves the SavedModel itself), so drop its warning.
        model_logger = logging.getLogger("mlflow.models.model")
        quiet = _DropLogRecords("Failed to validate serving input example")
        model_logger.addFilter(quiet)
        try:
            # A tf.Module (not a keras.Model) takes the flavor's "tf2-module" path:
            # tf.saved_model.save(module, <model>/tf2model, **saved_model_kwargs), i.e. the very
            # SavedModel exported above, serving_default signature included.
            info = mlflow.tensorflow.log_model(
                module,
                name="model",
                signature=signature,
                input_example=example,
                saved_model_kwargs={"signatures": module.signature_functions()},
                pip_requirements=mlflow.tensorflow.get_default_pip_requirements(),
            )
        finally:
            model_logger.removeFilter(quiet)
        mlflow.end_run("FINISHED")
        return self.run_id, f"runs:/{self.run_id}/model", getattr(info, "model_id", None)

    def fail(self) -> None:
        """End the active run as FAILED (an error in this process)."""
        if self.mlflow.active_run() is not None:
            self.mlflow.end_run("FAILED")


# ---------------------------------------------------------------------------------------- main


def run(spec: TrainSpec, dump: bool) -> int:
    """Train (resuming from ``spec.checkpoint_dir`` if it holds a checkpoint), export, log."""
    rank, size, device = init_horovod()
    train_table = read_table(spec.train_path, spec, "train")
    holdout = read_table(spec.holdout_path, spec, "holdout") if rank == 0 else None
    epochs = spec.model.epochs
    if rank == 0:
        spec.output_dir.mkdir(parents=True, exist_ok=True)
        print(
            f"training {spec.model.kind} on {len(train_table)} rows, world_size={size}, "
            f"device={device}, batch={spec.model.batch_size}/rank",
            flush=True,
        )

    trainer = Trainer(spec, train_table, rank, size)
    checkpointer = None
    if rank == 0:
        checkpointer = Checkpointer(
            spec.checkpoint_dir,
            trainer.model,
            trainer.optimizer,
            model_fingerprint(spec, trainer.model),
        )
    state = resume_state(checkpointer)
    trainer.broadcast_state()  # fresh or restored: rank 0's state everywhere before step one
    if rank == 0 and state.checkpoint:
        print(
            f"resuming from checkpoint at epoch {state.epoch}/{epochs} ({state.checkpoint})",
            flush=True,
        )
        if state.epoch >= epochs:
            print(f"all {epochs} epochs are trained already: exporting", flush=True)

    tracker = None
    if rank == 0 and spec.mlflow:
        tracker = MlflowTracker(spec, device, size, len(train_table))
    try:
        if tracker is not None:
            tracker.open(state)
        history = list(state.history)
        epoch_seconds: list[float] = []
        pause = float(os.environ.get(PAUSE_ENV) or 0)
        for epoch in range(state.epoch + 1, epochs + 1):
            loss, dt = trainer.run_epoch(epoch)
            point = {
                "epoch": epoch,
                "loss": loss,
                "seconds": dt,
                "samples_per_sec": trainer.global_rows / dt,
            }
            history.append(point)
            epoch_seconds.append(dt)
            if checkpointer is not None:
                checkpointer.save(epoch, history)
                if tracker is not None:
                    tracker.log_epoch(point)
                print(
                    f"epoch {epoch}/{epochs} loss={loss:.4f} "
                    f"samples/s={trainer.global_rows / dt:.0f} ({dt:.1f}s, world_size={size})",
                    flush=True,
                )
                if pause > 0:
                    time.sleep(pause)
        if dump:
            dump_weights(trainer.model, spec.output_dir / f"weights_rank{rank}.npz")
        if rank != 0:
            return 0
        assert holdout is not None
        return finish(spec, trainer, holdout, history, epoch_seconds, state, device, tracker)
    except BaseException:
        if tracker is not None:
            tracker.fail()
        raise


def finish(
    spec: TrainSpec,
    trainer: Trainer,
    holdout: Table,
    history: list[dict[str, Any]],
    epoch_seconds: list[float],
    state: ResumeState,
    device: str,
    tracker: MlflowTracker | None,
) -> int:
    """Rank 0 after training: SavedModel, hold-out metrics, ``metrics.json``, MLflow, result."""
    module = ServingModule(
        trainer.model, spec.model.kind, spec.numeric_features, spec.categorical_features
    )
    saved_model_dir = spec.output_dir / "saved_model"
    if saved_model_dir.exists():
        shutil.rmtree(saved_model_dir)
    export_saved_model(module, saved_model_dir)
    holdout_metrics = evaluate(spec.model.kind, holdout.label, module.predict(holdout.features))
    seconds = sum(epoch_seconds)
    rows = trainer.global_rows
    steady = epoch_seconds[1:]
    metrics: dict[str, Any] = {
        "holdout": holdout_metrics,
        "history": history,
        "world_size": trainer.size,
        "train_rows": trainer.train_rows,
        "holdout_rows": len(holdout),
        "samples_per_sec": rows * len(epoch_seconds) / seconds if seconds > 0 else None,
        "steady_samples_per_sec": (
            rows * len(steady) / sum(steady)
            if steady
            else (rows / seconds if seconds > 0 else None)
        ),
        "seconds": seconds,
        "epochs_trained": len(epoch_seconds),
        "resumed_from_epoch": state.epoch,
        "global_batch_size": spec.model.batch_size * trainer.size,
        "device": device,
    }
    (spec.output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print(
        "holdout " + " ".join(f"{k}={v:.4f}" for k, v in holdout_metrics.items() if v is not None),
        flush=True,
    )

    run_id = model_uri = model_id = None
    if tracker is not None:
        run_id, model_uri, model_id = tracker.finish(module, metrics, holdout)
        print(f"mlflow run {run_id}: {model_uri}", flush=True)
    result = {
        "mlflow_run_id": run_id,
        "model_uri": model_uri,
        "mlflow_model_id": model_id,
        "saved_model_dir": str(saved_model_dir),
        "metrics": holdout_metrics,
        "world_size": trainer.size,
        "samples_per_sec": metrics["samples_per_sec"],
    }
    (spec.output_dir / "result.json").write_text(json.dumps(result, indent=2))
    hand_back_result(result)
    return 0


def hand_back_result(result: dict[str, Any]) -> None:
    """Give the result to a Kubernetes launcher (see ``mlplatform/k8s.py``, ``RESULT_MARKER``).

    In the single-pod case ``MLPLATFORM_XCOM_PATH`` names the file that the KubernetesPodOperator's
    XCom sidecar reads (``/airflow/xcom/return.json``); for MPIJobs the operator parses the last
    ``MLPLATFORM_RESULT <json>`` line of the launcher's log. Locally both are harmless.
    """
    xcom_path = os.environ.get("MLPLATFORM_XCOM_PATH")
    if xcom_path:
        Path(xcom_path).parent.mkdir(parents=True, exist_ok=True)
        Path(xcom_path).write_text(json.dumps(result))
    print("MLPLATFORM_RESULT " + json.dumps(result, separators=(",", ":")), flush=True)


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, run, map ``SpecError`` to one ``error:`` line and exit code 2."""
    parser = argparse.ArgumentParser(prog=f"python -m {PROG}", description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--spec", metavar="PATH", help="the JSON train spec, as a file")
    source.add_argument(
        "--spec-json", metavar="TEXT", help="the JSON train spec, inline (e.g. in a pod command)"
    )
    parser.add_argument(
        "--dump-weights",
        action="store_true",
        help="every rank writes <output_dir>/weights_rank<r>.npz",
    )
    args = parser.parse_args(argv)
    try:
        spec = load_spec(args.spec) if args.spec is not None else load_spec_json(args.spec_json)
        return run(spec, args.dump_weights)
    except SpecError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr, flush=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
