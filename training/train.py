"""The trainer entry point: ``python -m training.train --spec SPEC.json [--dump-weights]``.

Run it under ``horovodrun`` for data parallelism (``horovodrun -np N --gloo -H localhost:N python
-m training.train --spec ...``) or plainly (world size 1). The spec is the contract between the
platform (``mlplatform/stages/train.py`` writes it) and this executor:

    {"pipeline": "demo", "label": "churned",
     "numeric_features": [...], "categorical_features": [...],
     "model": {"kind": "tabular_classifier" | "tabular_regressor", "hidden_units": [64, 32],
               "epochs": 5, "batch_size": 256, "learning_rate": 0.001, "seed": 42},
     "train_uri": "/abs/train.parquet", "holdout_uri": "/abs/holdout.parquet",
     "output_dir": "/abs/train_out",
     "mlflow": {"tracking_uri": ..., "experiment": ..., "run_name": ..., "tags": {...},
                "artifact_location": ...}   # optional; "artifact_location" only used to create
    }                                       # a missing experiment

URIs are local paths or ``file://`` URIs. ``batch_size`` is per rank (global = batch_size * N).

Data parallelism (Keras 3 + ``horovod.tensorflow``; ``horovod.tensorflow.keras`` does not average
gradients under Keras 3): every rank reads the whole training set, adapts the preprocessing layers
on all of it (so they agree), shuffles the row order with ``seed`` and takes ``rows[rank::N]``
truncated to ``n // N`` rows, so all ranks run the same number of steps per epoch. The learning
rate is ``learning_rate * N`` after a linear warm-up from ``learning_rate`` over the first epoch.
Each step averages gradients with ``hvd.grouped_allreduce``; after the first step rank 0's model
and optimizer variables are broadcast. Epoch losses are averaged over ranks.

Outputs (rank 0): ``<output_dir>/saved_model`` (signature ``serving_default``: raw features by
name, rank-1 ``[None]`` float32 / string tensors -> ``{"score"|"prediction": float32 [None]}``),
``<output_dir>/metrics.json`` (``holdout``, ``history``, ``world_size``, ``train_rows``,
``samples_per_sec``, ``seconds``), ``<output_dir>/result.json`` (``mlflow_run_id``,
``model_uri`` = ``runs:/<id>/model``, ``saved_model_dir``, ``metrics``) and, with ``mlflow`` in
the spec, one MLflow run with params, per-epoch ``loss``, ``holdout_*`` metrics and the SavedModel
logged with the TensorFlow flavor as ``model`` (its SavedModel is ``model/tf2model/``). With
``--dump-weights`` every rank writes ``<output_dir>/weights_rank<r>.npz``.

Exit codes: 0 ok; 2 bad spec / data / environment, with one ``training.train: error: ...`` line.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
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
    MODEL_KINDS,
    ServingModule,
    build_model,
    export_saved_model,
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
    mlflow: dict[str, Any] | None = None
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def features(self) -> list[str]:
        return [*self.numeric_features, *self.categorical_features]


def local_path(uri: str, key: str) -> Path:
    """A plain path or a ``file://`` URI -> an absolute local path."""
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path)).resolve()
    if parsed.scheme and len(parsed.scheme) > 1:  # one letter: a Windows drive, not a scheme
        raise SpecError(f"{key}: only local paths and file:// URIs are supported, got {uri!r}")
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
        need(mlflow_cfg, "tracking_uri", str, "mlflow.")
        need(mlflow_cfg, "experiment", str, "mlflow.")
        if not isinstance(mlflow_cfg.get("tags") or {}, dict):
            raise SpecError("spec: 'mlflow.tags' must be an object")
    return TrainSpec(
        pipeline=str(raw.get("pipeline") or "default"),
        label=label,
        numeric_features=list(numeric),
        categorical_features=list(categorical),
        model=params,
        train_path=local_path(need(raw, "train_uri", str), "train_uri"),
        holdout_path=local_path(need(raw, "holdout_uri", str), "holdout_uri"),
        output_dir=local_path(need(raw, "output_dir", str), "output_dir"),
        mlflow=mlflow_cfg,
        raw=raw,
    )


def _positive(value: Any, key: str, typ: type) -> Any:
    ok_types = (int,) if typ is int else (int, float)
    if not isinstance(value, ok_types) or isinstance(value, bool) or value <= 0:
        raise SpecError(f"spec: {key} must be a positive {typ.__name__}, got {value!r}")
    return typ(value)


def load_spec(path: str) -> TrainSpec:
    try:
        raw = json.loads(Path(path).read_text())
    except FileNotFoundError as exc:
        raise SpecError(f"spec file not found: {path}") from exc
    except json.JSONDecodeError as exc:
        raise SpecError(f"spec file {path} is not valid JSON: {exc}") from exc
    return parse_spec(raw)


# --------------------------------------------------------------------------------------- data


@dataclass
class Table:
    """Feature columns as rank-1 numpy arrays (float32 / str objects) and the float32 label."""

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
        if np.isnan(col).any():
            raise SpecError(
                f"numeric feature {name!r} in {path} has {int(np.isnan(col).sum())} missing values"
            )
        features[name] = col
    for name in spec.categorical_features:
        col = df[name].astype("string").fillna("").to_numpy(dtype=object)
        features[name] = col.astype(str).astype(object)
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


def train(
    spec: TrainSpec, train_table: Table, rank: int, size: int
) -> tuple[keras.Model, list[dict[str, float]], float, int]:
    """Train data-parallel; returns ``(model, history, seconds, global_rows_per_epoch)``."""
    params = spec.model
    keras.utils.set_random_seed(params.seed)
    model = build_model(
        params.kind,
        params.hidden_units,
        spec.numeric_features,
        spec.categorical_features,
        {k: v.reshape(-1, 1) for k, v in train_table.features.items()},
        output_bias=float(train_table.label.mean()) if params.kind != CLASSIFIER else 0.0,
    )
    shard = train_table.take(shard_rows(len(train_table), rank, size, params.seed))
    per_rank = len(shard)
    steps_per_epoch = math.ceil(per_rank / params.batch_size)  # the same on every rank

    x_spec = {
        name: tf.TensorSpec(
            [None, 1], tf.float32 if name in spec.numeric_features else tf.string, name=name
        )
        for name in spec.features
    }
    y_spec = tf.TensorSpec([None, 1], tf.float32)
    data = (
        tf.data.Dataset.from_tensor_slices(
            ({k: v.reshape(-1, 1) for k, v in shard.features.items()}, shard.label.reshape(-1, 1))
        )
        .shuffle(per_rank, seed=params.seed + rank, reshuffle_each_iteration=True)
        .batch(params.batch_size)
        .prefetch(2)
    )

    optimizer = keras.optimizers.Adam(
        learning_rate=LinearWarmup(params.learning_rate, size, steps_per_epoch)
    )
    if params.kind == CLASSIFIER:
        loss_fn: keras.losses.Loss = keras.losses.BinaryCrossentropy()
    else:
        loss_fn = keras.losses.MeanSquaredError()

    @tf.function(input_signature=[x_spec, y_spec])
    def train_step(x: dict[str, tf.Tensor], y: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        grads = hvd.grouped_allreduce(grads, op=hvd.Average)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    history: list[dict[str, float]] = []
    started = time.perf_counter()
    first = True
    for epoch in range(1, params.epochs + 1):
        t0 = time.perf_counter()
        loss_sum, rows = 0.0, 0
        for x, y in data:
            loss = train_step(x, y)
            if first:
                # Rank 0's state wins: identical weights and optimizer slots everywhere.
                hvd.broadcast_variables([v.value for v in model.variables], root_rank=0)
                hvd.broadcast_variables([v.value for v in optimizer.variables], root_rank=0)
                first = False
            n = int(y.shape[0])
            loss_sum += float(loss) * n
            rows += n
        epoch_loss = float(
            hvd.allreduce(
                tf.constant(loss_sum / max(rows, 1), tf.float32),
                op=hvd.Average,
                name=f"epoch_loss_{epoch}",
            )
        )
        dt = time.perf_counter() - t0
        history.append({"epoch": epoch, "loss": epoch_loss})
        if rank == 0:
            print(
                f"epoch {epoch}/{params.epochs} loss={epoch_loss:.4f} "
                f"samples/s={per_rank * size / dt:.0f} ({dt:.1f}s, world_size={size})",
                flush=True,
            )
    return model, history, time.perf_counter() - started, per_rank * size


# ---------------------------------------------------------------------------------- evaluation


def evaluate(kind: str, y: np.ndarray, pred: np.ndarray) -> dict[str, float | None]:
    """Hold-out metrics: auc / accuracy / log_loss (classifier) or rmse / mae (regressor)."""
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


def log_to_mlflow(
    spec: TrainSpec,
    module: ServingModule,
    metrics: dict[str, Any],
    holdout: Table,
    device: str,
) -> tuple[str, str, str | None]:
    """One MLflow run: params, per-epoch loss, hold-out metrics, the model (TF flavor).

    Returns ``(run_id, "runs:/<run_id>/model", logged_model_id)``.
    """
    import mlflow
    import mlflow.tensorflow
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    cfg = spec.mlflow or {}
    mlflow.set_tracking_uri(cfg["tracking_uri"])
    experiment = mlflow.get_experiment_by_name(cfg["experiment"])
    if experiment is None:
        experiment_id = mlflow.create_experiment(
            cfg["experiment"], artifact_location=cfg.get("artifact_location")
        )
    else:
        experiment_id = experiment.experiment_id
    params = spec.model
    tags = {str(k): str(v) for k, v in (cfg.get("tags") or {}).items()}
    tags.update(
        {"device": device, "pipeline": spec.pipeline, "trainer": "training.train (horovod)"}
    )

    # The serving signature, as MLflow tensor specs: rank-1 raw-feature columns in, one column out.
    inputs = [TensorSpec(np.dtype(np.float32), (-1,), name) for name in spec.numeric_features]
    inputs += [TensorSpec(np.dtype(object), (-1,), name) for name in spec.categorical_features]
    signature = ModelSignature(
        inputs=Schema(inputs),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1,), output_name(params.kind))]),
    )
    example = {name: col[:5] for name, col in holdout.features.items()}

    with mlflow.start_run(
        experiment_id=experiment_id, run_name=cfg.get("run_name"), tags=tags
    ) as run:
        mlflow.log_params(
            {
                "model_kind": params.kind,
                "hidden_units": json.dumps(params.hidden_units),
                "epochs": params.epochs,
                "batch_size": params.batch_size,
                "global_batch_size": params.batch_size * metrics["world_size"],
                "learning_rate": params.learning_rate,
                "seed": params.seed,
                "world_size": metrics["world_size"],
                "label": spec.label,
                "numeric_features": ",".join(spec.numeric_features),
                "categorical_features": ",".join(spec.categorical_features),
                "train_rows": metrics["train_rows"],
            }
        )
        for point in metrics["history"]:
            mlflow.log_metric("loss", point["loss"], step=point["epoch"])
        mlflow.log_metrics(
            {
                **{f"holdout_{k}": v for k, v in metrics["holdout"].items() if v is not None},
                "samples_per_sec": metrics["samples_per_sec"],
                "train_seconds": metrics["seconds"],
            }
        )
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
    return run.info.run_id, f"runs:/{run.info.run_id}/model", getattr(info, "model_id", None)


# ---------------------------------------------------------------------------------------- main


def run(spec: TrainSpec, dump: bool) -> int:
    rank, size, device = init_horovod()
    train_table = read_table(spec.train_path, spec, "train")
    holdout = read_table(spec.holdout_path, spec, "holdout") if rank == 0 else None
    spec.output_dir.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        print(
            f"training {spec.model.kind} on {len(train_table)} rows, world_size={size}, "
            f"device={device}, batch={spec.model.batch_size}/rank",
            flush=True,
        )

    model, history, seconds, rows_per_epoch = train(spec, train_table, rank, size)
    if dump:
        dump_weights(model, spec.output_dir / f"weights_rank{rank}.npz")
    if rank != 0:
        return 0

    assert holdout is not None
    module = ServingModule(model, spec.model.kind, spec.numeric_features, spec.categorical_features)
    saved_model_dir = spec.output_dir / "saved_model"
    if saved_model_dir.exists():
        shutil.rmtree(saved_model_dir)
    export_saved_model(module, saved_model_dir)
    holdout_metrics = evaluate(spec.model.kind, holdout.label, module.predict(holdout.features))
    metrics: dict[str, Any] = {
        "holdout": holdout_metrics,
        "history": history,
        "world_size": size,
        "train_rows": len(train_table),
        "holdout_rows": len(holdout),
        "samples_per_sec": rows_per_epoch * spec.model.epochs / seconds if seconds > 0 else None,
        "seconds": seconds,
        "device": device,
    }
    (spec.output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print(
        "holdout " + " ".join(f"{k}={v:.4f}" for k, v in holdout_metrics.items() if v is not None),
        flush=True,
    )

    run_id = model_uri = model_id = None
    if spec.mlflow:
        run_id, model_uri, model_id = log_to_mlflow(spec, module, metrics, holdout, device)
        print(f"mlflow run {run_id}: {model_uri}", flush=True)
    result = {
        "mlflow_run_id": run_id,
        "model_uri": model_uri,
        "mlflow_model_id": model_id,
        "saved_model_dir": str(saved_model_dir),
        "metrics": holdout_metrics,
    }
    (spec.output_dir / "result.json").write_text(json.dumps(result, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {PROG}", description=__doc__.splitlines()[0])
    parser.add_argument("--spec", required=True, help="the JSON train spec")
    parser.add_argument(
        "--dump-weights",
        action="store_true",
        help="every rank writes <output_dir>/weights_rank<r>.npz",
    )
    args = parser.parse_args(argv)
    try:
        spec = load_spec(args.spec)
        return run(spec, args.dump_weights)
    except SpecError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr, flush=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
