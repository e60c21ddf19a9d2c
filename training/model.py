"""Keras model builder and serving export for the tabular trainer.

Contract:

- ``build_model`` returns a Keras 3 functional model with one ``keras.Input(shape=(1,), name=F)``
  per raw feature ``F`` (float32 for numeric features, string for categorical ones). All
  preprocessing lives inside the model: ``Normalization`` adapted on the training rows' present
  values for numeric features, ``StringLookup(output_mode="one_hot")`` with the training
  vocabulary (sorted, plus one OOV bucket) for categorical features; then ``Concatenate ->
  Dense(u, relu) for u in hidden_units -> Dense(1)`` with a sigmoid for ``tabular_classifier``;
  for ``tabular_regressor`` linear, on the standardized label, then ``Rescaling`` by the
  training labels' standard deviation and mean (answers in the label's units).
  Build it after ``keras.utils.set_random_seed`` for repeatable weights.
- Missing values, the same in training and serving: a numeric NaN is imputed with the training
  mean (0 after normalization, :class:`ImputeMissing`), and for every numeric feature that had
  missing training values a 0/1 "was missing" column enters the network beside it (a feature
  never missing in training gets none: its weight could not be learned). A categorical value
  ``MISSING_CATEGORY`` ("", what a missing category is fed as) is never in a vocabulary, so it
  falls into the OOV bucket like an unseen category.
- ``ServingModule`` wraps a trained model in a ``tf.Module`` whose ``serve`` function is the
  SavedModel's ``serving_default`` signature: raw features BY NAME, each a rank-1 tensor of shape
  ``[None]`` (float32 / tf.string; NaN / ``""`` for a missing value), returning ``{"score": float32 [None]}`` (classifier: the
  probability of label 1) or ``{"prediction": float32 [None]}`` (regressor). That is what
  TF-Serving's ``predict`` API (and the platform's own server) call.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from training.spec import CLASSIFIER, MISSING_CATEGORY, MODEL_KINDS, REGRESSOR, output_name

__all__ = [
    "CLASSIFIER",
    "MISSING_CATEGORY",
    "MODEL_KINDS",
    "REGRESSOR",
    "ServingModule",
    "build_model",
    "export_saved_model",
    "missing_indicators",
    "output_name",
]

SIGNATURE_KEY = "serving_default"


class ImputeMissing(keras.layers.Layer):
    """``[raw, normalized] -> normalized`` with NaN replaced by 0 (the training mean after
    normalization), plus a 0/1 was-missing column when ``indicator`` (shape ``(n, 1)`` or
    ``(n, 2)``)."""

    def __init__(self, indicator: bool, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.indicator = bool(indicator)

    def call(self, inputs: list[keras.KerasTensor]) -> keras.KerasTensor:
        raw, normalized = inputs
        missing = keras.ops.isnan(raw)
        filled = keras.ops.where(missing, keras.ops.zeros_like(normalized), normalized)
        if not self.indicator:
            return filled
        return keras.ops.concatenate([filled, keras.ops.cast(missing, filled.dtype)], axis=-1)

    def get_config(self) -> dict[str, object]:
        return {**super().get_config(), "indicator": self.indicator}


def _numeric_input(name: str, column: np.ndarray) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    """The input of numeric feature ``name`` and its encoding (see the module docstring)."""
    values = np.asarray(column, dtype=np.float32).reshape(-1, 1)
    missing = np.isnan(values)
    if missing.all():
        raise ValueError(f"numeric feature {name!r} has no value in the training rows")
    inp = keras.Input(shape=(1,), name=name, dtype="float32")
    norm = keras.layers.Normalization(axis=-1, name=f"normalize_{name}")
    norm.adapt(values[~missing].reshape(-1, 1))
    impute = ImputeMissing(indicator=bool(missing.any()), name=f"impute_{name}")
    return inp, impute([inp, norm(inp)])


def _categorical_input(
    name: str, column: np.ndarray
) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    """The input of categorical feature ``name`` and its one-hot encoding (OOV bucket first)."""
    vocabulary = sorted({str(v) for v in np.asarray(column).ravel()} - {MISSING_CATEGORY})
    if not vocabulary:
        raise ValueError(f"categorical feature {name!r} has no value in the training rows")
    inp = keras.Input(shape=(1,), name=name, dtype="string")
    lookup = keras.layers.StringLookup(
        vocabulary=vocabulary, num_oov_indices=1, output_mode="one_hot", name=f"lookup_{name}"
    )
    return inp, lookup(inp)


def missing_indicators(model: keras.Model) -> list[str]:
    """The numeric features whose was-missing column enters the network."""
    return [
        layer.name.removeprefix("impute_")
        for layer in model.layers
        if isinstance(layer, ImputeMissing) and layer.indicator
    ]


def build_model(
    kind: str,
    hidden_units: Sequence[int],
    numeric_features: Sequence[str],
    categorical_features: Sequence[str],
    train_features: Mapping[str, np.ndarray],
    output_bias: float = 0.0,
    output_scale: float = 1.0,
) -> keras.Model:
    """Build the (uncompiled) model; ``train_features[F]`` is the column of training rows for
    feature ``F`` with shape ``(n, 1)`` (float32 with NaN for missing values for numeric, str
    objects with ``MISSING_CATEGORY`` for missing values for categorical). Raises ``ValueError``
    for a feature without any value.

    ``output_bias`` initialises a classifier's output bias. A regressor's output unit learns
    the standardized label: a ``Rescaling`` layer turns it into the label's units (times
    ``output_scale``, plus ``output_bias``: pass the training labels' standard deviation and
    mean), so a label in the thousands trains as fast as one near 1 and training starts at the
    mean.
    """
    if kind not in MODEL_KINDS:
        raise ValueError(f"model.kind must be one of {MODEL_KINDS}, got {kind!r}")
    inputs: dict[str, keras.KerasTensor] = {}
    encoded: list[keras.KerasTensor] = []
    for name in numeric_features:
        inputs[name], encoding = _numeric_input(name, train_features[name])
        encoded.append(encoding)
    for name in categorical_features:
        inputs[name], encoding = _categorical_input(name, train_features[name])
        encoded.append(encoding)
    if not encoded:
        raise ValueError("the model needs at least one feature")
    x = encoded[0] if len(encoded) == 1 else keras.layers.Concatenate(name="features")(encoded)
    for i, units in enumerate(hidden_units):
        x = keras.layers.Dense(int(units), activation="relu", name=f"hidden_{i}")(x)
    if kind == CLASSIFIER:
        output = keras.layers.Dense(
            1,
            activation="sigmoid",
            bias_initializer=keras.initializers.Constant(float(output_bias)),
            name=output_name(kind),
        )(x)
    else:  # the unit learns the standardized label; the model answers in the label's units
        unit = keras.layers.Dense(1, name="standardized_prediction")(x)
        output = keras.layers.Rescaling(
            scale=float(output_scale) or 1.0, offset=float(output_bias), name=output_name(kind)
        )(unit)
    return keras.Model(inputs=inputs, outputs=output, name=kind)


def input_signature(
    numeric_features: Sequence[str], categorical_features: Sequence[str]
) -> dict[str, tf.TensorSpec]:
    """The serving signature's inputs: one rank-1 ``[None]`` tensor per raw feature, by name."""
    spec = {name: tf.TensorSpec([None], tf.float32, name=name) for name in numeric_features}
    spec.update(
        {name: tf.TensorSpec([None], tf.string, name=name) for name in categorical_features}
    )
    return spec


class ServingModule(tf.Module):
    """``tf.Module`` exposing ``serve`` (the ``serving_default`` signature) over a Keras model."""

    def __init__(
        self,
        model: keras.Model,
        kind: str,
        numeric_features: Sequence[str],
        categorical_features: Sequence[str],
    ) -> None:
        super().__init__(name="serving")
        self.model = model
        self._output = output_name(kind)
        self.serve = tf.function(
            self._serve,
            input_signature=[input_signature(numeric_features, categorical_features)],
        )

    def _serve(self, features: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        batch = {name: tf.reshape(value, [-1, 1]) for name, value in features.items()}
        out = self.model(batch, training=False)
        return {self._output: tf.reshape(tf.cast(out, tf.float32), [-1])}

    def signature_functions(self) -> dict[str, tf.types.experimental.ConcreteFunction]:
        """What ``tf.saved_model.save(..., signatures=...)`` needs."""
        return {SIGNATURE_KEY: self.serve.get_concrete_function()}

    def predict(self, features: Mapping[str, np.ndarray], batch_size: int = 8192) -> np.ndarray:
        """Run ``serve`` on rank-1 numpy columns in batches; returns a float32 ``[n]`` array."""
        n = len(next(iter(features.values())))
        parts: list[np.ndarray] = []
        for start in range(0, n, batch_size):
            chunk = {k: tf.constant(v[start : start + batch_size]) for k, v in features.items()}
            parts.append(self.serve(chunk)[self._output].numpy())
        return np.concatenate(parts) if parts else np.zeros([0], np.float32)


def export_saved_model(module: ServingModule, path: str | Path) -> Path:
    """Write ``module`` as a SavedModel with the ``serving_default`` signature; returns the dir."""
    path = Path(path)
    tf.saved_model.save(module, str(path), signatures=module.signature_functions())
    return path
