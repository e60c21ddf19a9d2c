"""TensorFlow's start-up lines stay out of stderr (and so out of red ERROR task-log lines);
other stderr output of the same block still shows."""

from __future__ import annotations

import subprocess
import sys

from mlplatform.quiet_tf import is_startup_noise
from tests.conftest import REPO

# lines TensorFlow 2.21 wrote on this machine (CPU only) at import and first device query
STARTUP = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1795872765.165649   30575 port.cc:153] oneDNN custom operations are on. You may"
    " see slightly different numerical results due to floating-point round-off errors",
    "I0000 00:00:1795872765.165972   30575 cudart_stub.cc:31] Could not find cuda drivers on your"
    " machine, GPU will not be used.",
    "E0000 00:00:1795872780.856883   30575 cuda_platform.cc:52] failed call to cuInit: INTERNAL:"
    " CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)",
]


def test_startup_lines_are_noise_and_real_errors_are_not():
    assert all(is_startup_noise(line) for line in STARTUP)
    for line in (
        "E0000 00:00:1795872780.856883   30575 saved_model_loader.cc:1] could not load",
        "ValueError: the model has no serving_default signature",
        "Traceback (most recent call last):",
    ):
        assert not is_startup_noise(line), line


def test_import_tensorflow_writes_no_startup_lines():
    code = (
        "import os, sys\n"
        "from mlplatform.quiet_tf import import_tensorflow\n"
        "tf = import_tensorflow()\n"
        "print(tf.constant(2).numpy() + 1)\n"
        "os.write(2, b'a real error line\\n')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=180
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "3"
    assert proc.stderr.splitlines() == ["a real error line"], proc.stderr
