"""The trainer's input tables: Parquet -> numpy columns, checked against the spec (no TensorFlow).

Every problem with the data is a :class:`~training.spec.SpecError` naming the file and column, so
that a bad training set fails in well under a second, before any TensorFlow start-up.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as pads

from training.spec import CLASSIFIER, MISSING_CATEGORY, SpecError, TrainSpec


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


def parquet_rows(path: Path) -> int:
    """The number of rows of a Parquet file (or directory), from the footers alone."""
    return int(pads.dataset(str(path), format="parquet").count_rows())


def read_table(path: Path, spec: TrainSpec, role: str) -> Table:
    """Read ``role`` (train / holdout) Parquet, checking that every spec column is there, that
    numeric columns and the label are numeric, the label has no missing value (0/1 for a
    classifier) and, for the training rows, that every feature has at least one value."""
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
