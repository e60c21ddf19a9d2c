"""Tiny real SavedModels for serving tests: ``x: float32[None], c: string[None] -> score``.

``score = sigmoid(sign(c) * x * w)`` with ``sign = -1`` for ``c == "neg"``; with ``multi`` a second
output ``tag = c + "!"``. Different weights give different files, so different content digests.
"""

from __future__ import annotations

import math
from pathlib import Path


def expected_score(x: float, c: str, w: float) -> float:
    """What the model answers for one row (the tests' oracle)."""
    sign = -1.0 if c == "neg" else 1.0
    return 1.0 / (1.0 + math.exp(-sign * x * w))


def build_scorer(
    path: Path, w: float, multi: bool = False, warmup_model: str | None = None
) -> Path:
    """Save the scorer with weight ``w`` at ``path``; with ``warmup_model``, also TF Serving's
    warm-up file (two requests) for a model of that name."""
    import tensorflow as tf

    class Scorer(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = tf.Variable(w, dtype=tf.float32)

        @tf.function(
            input_signature=[
                {
                    "x": tf.TensorSpec([None], tf.float32, name="x"),
                    "c": tf.TensorSpec([None], tf.string, name="c"),
                }
            ]
        )
        def serve(self, inputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
            sign = tf.where(tf.equal(inputs["c"], "neg"), -1.0, 1.0)
            out = {"score": tf.sigmoid(sign * inputs["x"] * self.w)}
            if multi:
                out["tag"] = tf.strings.join([inputs["c"], "!"])
            return out

    module = Scorer()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    if warmup_model is not None:
        import numpy as np

        from serving import warmup

        batch = {"x": np.array([1.0, 2.0], np.float32), "c": np.array([b"a", b"neg"])}
        warmup.write_warmup_file(
            path, warmup_model, [batch, batch], {"x": tf.float32, "c": tf.string}
        )
    return path
