"""TensorFlow's start-up noise kept out of task logs.

Importing TensorFlow 2.21 (a CUDA build) on a machine without a GPU writes lines to stderr from
C++ before absl logging is initialised (``WARNING: All log messages before absl::InitializeLog()
...``, ``I0000 ... port.cc] oneDNN custom operations are on``, ``cudart_stub.cc] Could not find
cuda drivers``), and its first device query writes ``E0000 ... cuda_platform.cc] failed call to
cuInit``. ``TF_CPP_MIN_LOG_LEVEL`` does not reach the pre-initialisation lines (measured: they
appear at 2 and 3), and Airflow logs a task process's stderr at level ERROR, so a successful
gate or infra validation showed red ERROR lines.

The fix is at the source: :func:`import_tensorflow` imports TensorFlow and runs its device query
with file descriptor 2 sent to a temporary file, then writes back every line that is not one of
these start-up lines (:data:`STARTUP_NOISE`), so a real error still shows. Operators that load
models in their own process call it first (``PlatformOperator.imports_tensorflow``); later
``import tensorflow`` statements are then no-ops. Child processes (the trainer) get
``TF_CPP_MIN_LOG_LEVEL=2`` and their output relayed through :func:`is_startup_noise`.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

#: TensorFlow/XLA lines written while TensorFlow starts on a machine without a usable GPU
STARTUP_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IWE]\d{4} [\d:.]+\s+\d+ (port|cudart_stub|cuda_platform|cuda_dnn|cuda_fft|cuda_blas"
    r"|cpu_feature_guard|cuda_executor|cuda_diagnostics)\.cc:\d+\] .*)$"
)


def is_startup_noise(line: str) -> bool:
    """Whether ``line`` is one of TensorFlow's start-up lines (see the module doc)."""
    return STARTUP_NOISE.match(line.strip()) is not None


@contextmanager
def stderr_without_startup_noise() -> Iterator[None]:
    """Run the block with fd 2 captured; afterwards write back its lines that are not noise."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [
                raw
                for raw in captured.read().splitlines(keepends=True)
                if not is_startup_noise(raw.decode("utf-8", "replace"))
            ]
            if kept:
                os.write(2, b"".join(kept))


def import_tensorflow() -> ModuleType:
    """``import tensorflow`` and its first device query, without the start-up noise (once per
    process; ``TF_CPP_MIN_LOG_LEVEL`` defaults to 2 for the lines after start-up)."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with stderr_without_startup_noise():
        import tensorflow as tf

        tf.config.list_physical_devices()  # initialises the CUDA platform: its cuInit line
    return tf
