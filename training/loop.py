"""One rank's training loop: model, optimizer, data shard and the compiled GradientTape step.

Data parallelism: every rank reads the whole training set, adapts the preprocessing layers on all
of it (so they agree), shuffles the row order with ``seed`` and takes ``rows[rank::N]`` truncated
to ``n // N`` rows, so all ranks run the same number of steps per epoch
(:func:`training.data.shard_rows`). Each epoch visits this shard in an order drawn from
``(seed, rank, epoch)`` alone (:func:`training.data.epoch_order`), so a resumed run sees the same
batches as an uninterrupted one. The learning rate is ``learning_rate * N`` after a linear
warm-up from ``learning_rate`` over the first epoch (it follows the optimizer's step counter).
Each step averages gradients over ranks (skipped at world size 1, where it would only add
Horovod's per-step queueing latency); epoch losses are averaged over ranks.
"""

from __future__ import annotations

import math
import time
from typing import Any

import keras
import tensorflow as tf

from training import distribution
from training.data import Table, epoch_order, shard_rows
from training.model import build_model
from training.spec import CLASSIFIER, TrainSpec


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
                grads = distribution.grouped_average(grads)
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
        distribution.broadcast_variables(self.model.variables)
        distribution.broadcast_variables(self.optimizer.variables)

    def run_epoch(self, epoch: int) -> tuple[float, float]:
        """Train one epoch; returns ``(loss averaged over rows and ranks, seconds)``."""
        t0 = time.perf_counter()
        self._loss_sum.assign(0.0)
        for x, y in self.batches(epoch):
            self._train_step(x, y)
        loss = distribution.average(
            self._loss_sum.read_value() / float(self.per_rank), name=f"epoch_loss_{epoch}"
        )
        loss_value = float(loss)  # waits for the epoch's last step
        return loss_value, time.perf_counter() - t0
