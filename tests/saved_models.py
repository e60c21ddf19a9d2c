"""Tiny real SavedModels for tests: ``x: float32[None], c: string[None] -> score`` (serving), and
a demo-signature scorer registered as champion (batch scoring, alerts).

``score = sigmoid(sign(c) * x * w)`` with ``sign = -1`` for ``c == "neg"``; with ``multi`` a second
output ``tag = c + "!"``. Different weights give different files, so different content digests.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any


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

        from serving.runtime import warmup

        batch = {"x": np.array([1.0, 2.0], np.float32), "c": np.array([b"a", b"neg"])}
        warmup.write_warmup_file(
            path, warmup_model, [batch, batch], {"x": tf.float32, "c": tf.string}
        )
    return path


def demo_scorer_module(noise: bool = False):
    """A ``tf.Module`` with the demo pipeline's signature (its raw features by name -> ``score``),
    following datagen's churn logit (:func:`demo_score`): what a trained demo champion answers,
    without training. ``noise``: a score unrelated to the label (a challenger the gate refuses)."""
    import tensorflow as tf

    numeric = ("tenure_months", "monthly_charges", "support_calls", "usage_minutes")
    spec = {n: tf.TensorSpec([None], tf.float32, name=n) for n in numeric}
    spec |= {n: tf.TensorSpec([None], tf.string, name=n) for n in ("contract_type", "region")}

    class DemoScorer(tf.Module):
        @tf.function(input_signature=[spec])
        def serve(self, f):
            contract = tf.where(
                tf.equal(f["contract_type"], "month-to-month"),
                1.3,
                tf.where(tf.equal(f["contract_type"], "one-year"), 0.2, -0.8),
            )
            logit = (
                -1.4
                + 0.55 * f["support_calls"]
                - 0.05 * f["tenure_months"]
                + 0.025 * (f["monthly_charges"] - 70.0)
                - 0.004 * (f["usage_minutes"] - 300.0)
                + contract
            )
            if noise:
                return {"score": tf.sigmoid(tf.sin(f["usage_minutes"] * 13.0))}
            return {"score": tf.sigmoid(logit)}

    return DemoScorer()


def demo_score(frame: Any) -> Any:
    """What :func:`demo_scorer_module` answers for the rows of ``frame`` (the tests' oracle)."""
    import numpy as np

    contract = np.select(
        [frame["contract_type"] == "month-to-month", frame["contract_type"] == "one-year"],
        [1.3, 0.2],
        -0.8,
    )
    logit = (
        -1.4
        + 0.55 * frame["support_calls"]
        - 0.05 * frame["tenure_months"]
        + 0.025 * (frame["monthly_charges"] - 70.0)
        - 0.004 * (frame["usage_minutes"] - 300.0)
        + contract
    )
    return 1.0 / (1.0 + np.exp(-np.asarray(logit, dtype=np.float64)))


def register_demo_model(
    cfg, settings, data_version: str = "dv-champion", noise: bool = False, champion: bool = True
) -> int:
    """Log :func:`demo_scorer_module` with MLflow's TensorFlow flavor (as the trainer does),
    register it for ``cfg`` with lineage tag ``data_version`` (alias ``challenger``) and, with
    ``champion``, make it alias ``champion``; returns its version."""
    import mlflow
    import mlflow.tensorflow

    from mlplatform.stages.registry import CHAMPION, client, register
    from mlplatform.stages.train import ensure_experiment

    ensure_experiment(settings, cfg.name)
    module = demo_scorer_module(noise)
    signatures = {"serving_default": module.serve.get_concrete_function()}
    with mlflow.start_run(
        experiment_id=mlflow.get_experiment_by_name(cfg.name).experiment_id
    ) as run:
        info = mlflow.tensorflow.log_model(
            module,
            name="model",
            saved_model_kwargs={"signatures": signatures},
            pip_requirements=["tensorflow"],
        )
    registered = register(
        cfg, f"models:/{info.model_id}", run.info.run_id, {"data_version": data_version}, settings
    )
    version = int(registered["model_version"])
    if champion:
        client(settings).set_registered_model_alias(cfg.serving.model_name, CHAMPION, str(version))
    return version
