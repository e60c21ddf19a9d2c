"""Config sections of the model: ``model``, ``training``, ``gate``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from mlplatform.config.common import FieldProblem, _Strict, quantity_problem


class ModelConfig(_Strict):
    kind: Literal["tabular_classifier", "tabular_regressor"] = Field(
        default="tabular_classifier",
        description="binary classifier (gate metric auc/accuracy) or regressor (rmse/mae)",
    )
    hidden_units: list[int] = Field(
        default_factory=lambda: [64, 32], description="units of each hidden dense layer"
    )
    epochs: int = Field(default=5, ge=1, le=1000, description="passes over the training rows")
    batch_size: int = Field(default=256, ge=1, description="rows per step on each process")
    learning_rate: float = Field(
        default=1e-3,
        gt=0,
        description="Adam learning rate (times the process count after a one-epoch warm-up)",
    )
    seed: int = Field(
        default=42, description="seed of the weights and of the shuffling (repeatable runs)"
    )

    @field_validator("hidden_units")
    @classmethod
    def _positive_units(cls, v: list[int]) -> list[int]:
        if not v or any(u <= 0 for u in v):
            raise ValueError("hidden_units must be a non-empty list of positive integers")
        return v


#: ``processes_per_worker: auto`` on CPU: each process gets at least this many training rows...
ROWS_PER_CPU_PROCESS = 100_000
#: ...and at least this many cores (TensorFlow already spreads one process over the cores; a
#: second process on the same cores pays its own TF start-up and a Gloo allreduce per step:
#: 0.34-0.85x np=1 on 2 cores, benchmarks/results/training.md)
CORES_PER_CPU_PROCESS = 2


class TrainingConfig(_Strict):
    workers: int = Field(default=1, ge=1, description="pods (Kubernetes) / hosts")
    processes_per_worker: int | Literal["auto"] = Field(
        default="auto",
        description="horovod slots per worker on CPU; auto: fitted to the training rows and cores",
    )
    gpus_per_worker: int = Field(default=0, ge=0, description="GPUs per pod; one process per GPU")
    image: str = Field(
        default="mlplatform/trainer:latest",
        description="trainer image of the Kubernetes backend (MLP_TRAINING_BACKEND=kubernetes)",
    )
    resources: dict[str, str] = Field(
        default_factory=dict,
        description="requests = limits of each trainer pod (Kubernetes quantities: cpu: '4', "
        "memory: 16Gi)",
    )

    @field_validator("resources")
    @classmethod
    def _quantities(cls, value: dict[str, str]) -> dict[str, str]:
        for key, quantity in value.items():
            problem = quantity_problem(quantity)
            if problem:
                raise FieldProblem((key,), problem)
        return value

    @field_validator("processes_per_worker")
    @classmethod
    def _at_least_one(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v < 1:
            raise ValueError("processes_per_worker must be a positive integer or 'auto'")
        return v

    def processes(self, train_rows: int | None, cores: int | None) -> int:
        """Horovod processes per worker: one per GPU; on CPU ``processes_per_worker``, or for
        ``auto`` one per ``ROWS_PER_CPU_PROCESS`` training rows and ``CORES_PER_CPU_PROCESS``
        cores of the worker, at least one (``None``: unknown, counts as none)."""
        if self.gpus_per_worker:
            return self.gpus_per_worker
        if self.processes_per_worker != "auto":
            return self.processes_per_worker
        by_rows = (train_rows or 0) // ROWS_PER_CPU_PROCESS
        by_cores = (cores or 0) // CORES_PER_CPU_PROCESS
        return max(1, min(by_rows, by_cores))

    def world_size(self, train_rows: int | None, cores: int | None) -> int:
        """Total horovod processes: ``workers`` times :meth:`processes`."""
        return self.workers * self.processes(train_rows, cores)


#: gate metrics where higher is better (a threshold is a floor: ``gate.min``), by model kind
CLASSIFIER_METRICS = ("auc", "accuracy")
#: error metrics, lower is better (a threshold is a ceiling: ``gate.max``)
REGRESSOR_METRICS = ("rmse", "mae")


class GateConfig(_Strict):
    metric: Literal["auc", "accuracy", "rmse", "mae"] = Field(
        default="auc",
        description="hold-out metric that the gate compares (auc/accuracy for a classifier, "
        "rmse/mae for a regressor)",
    )
    min: float | None = Field(
        default=None, description="floor of auc/accuracy: a challenger below it is refused"
    )
    max: float | None = Field(
        default=None,
        description="ceiling of rmse/mae (error metrics, lower is better): a challenger above it "
        "is refused",
    )
    max_regression: float = Field(default=0.0, ge=0, description="allowed loss vs champion")
    slices: list[str] = Field(
        default_factory=list, description="categorical features to also gate per value"
    )
    min_slice_rows: int = Field(
        default=30, ge=1, description="smaller slices are reported, not gated"
    )

    @property
    def higher_is_better(self) -> bool:
        return self.metric in CLASSIFIER_METRICS

    @property
    def threshold(self) -> float | None:
        """The absolute bound of the metric: the floor ``min`` (auc, accuracy) or the ceiling
        ``max`` (rmse, mae)."""
        return self.min if self.higher_is_better else self.max

    def describe(self) -> str:
        """The gate in words, its direction spelled out (``rmse <= 0.5 (a ceiling: ...)``)."""
        if self.higher_is_better:
            bound = f" >= {self.min:g} (a floor: higher is better)" if self.min is not None else ""
        else:
            bound = f" <= {self.max:g} (a ceiling: lower is better)" if self.max is not None else ""
        worse = "lower" if self.higher_is_better else "higher"
        return (
            f"{self.metric}{bound or ' (no absolute bound)'}, at most {self.max_regression:g} "
            f"{worse} than the champion's"
        )

    @model_validator(mode="after")
    def _threshold_direction(self) -> GateConfig:
        if not self.higher_is_better and self.min is not None:
            raise FieldProblem(
                ("min",),
                f"{self.metric} is an error metric (lower is better): its threshold is a ceiling, "
                f"not a floor; write gate.max: {self.min:g} (the worst {self.metric} to promote)",
            )
        if self.higher_is_better and self.max is not None:
            raise FieldProblem(
                ("max",),
                f"{self.metric} is higher-is-better: its threshold is a floor, not a ceiling; "
                f"write gate.min: {self.max:g} (the lowest {self.metric} to promote)",
            )
        return self
