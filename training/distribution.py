"""Horovod for the trainer: start-up, device choice, and what ranks exchange outside the step.

Keras 3 + ``horovod.tensorflow`` (``horovod.tensorflow.keras`` does not average gradients under
Keras 3): the step itself averages with ``hvd.grouped_allreduce`` (:mod:`training.loop`); this
module holds ``hvd.init`` and the broadcasts of variables and Python objects. Importing it
imports TensorFlow.
"""

from __future__ import annotations

import os
from typing import Any

import tensorflow as tf

from training.spec import SpecError

try:
    import horovod.tensorflow as hvd
except Exception as exc:  # ImportError, or a TF/horovod ABI mismatch when loading mpi_lib
    hvd = None
    _HOROVOD_IMPORT_ERROR: str = f"{type(exc).__name__}: {exc}".splitlines()[0]
else:
    _HOROVOD_IMPORT_ERROR = ""


def init_horovod() -> tuple[int, int, str]:
    """``hvd.init()``, pin one GPU per local rank if there are GPUs, size CPU thread pools.

    Returns ``(rank, size, device)`` where ``device`` is "CPU" or the GPU's name. Raises
    :class:`SpecError` when Horovod cannot be imported here.
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


def broadcast_variables(variables: list[Any]) -> None:
    """Rank 0's values of ``variables`` (Keras 3 variables) to every rank."""
    hvd.broadcast_variables([v.value for v in variables], root_rank=0)


def broadcast_object(value: Any, name: str) -> Any:
    """Rank 0's ``value`` (picklable) on every rank."""
    return hvd.broadcast_object(value, root_rank=0, name=name)


def grouped_average(tensors: list[tf.Tensor]) -> list[tf.Tensor]:
    """The mean of each tensor over all ranks (one fused allreduce)."""
    return hvd.grouped_allreduce(tensors, op=hvd.Average)


def average(value: tf.Tensor, name: str) -> tf.Tensor:
    """The mean of one tensor over all ranks."""
    return hvd.allreduce(value, op=hvd.Average, name=name)
