"""The trainer's contract: its input spec and its result, with no TensorFlow.

The platform builds a :class:`TrainSpec` (``mlplatform/stages/train.py`` locally,
``mlplatform/k8s/`` for pods and MPIJobs), the trainer (``python -m training.train``) validates
the same model from ``--spec PATH`` / ``--spec-json TEXT``, and hands back a :class:`TrainResult`
(``result.json``, the ``MLPLATFORM_RESULT`` line, the pod's XCom file). When it fails it writes a
:class:`TrainError` (``error-rank<r>.json`` in ``output_dir``) and prints one
``training.train: error: ...`` line, so that the stage can say why (:func:`read_error`).

The spec as JSON::

    {"pipeline": "demo", "label": "churned",
     "numeric_features": [...], "categorical_features": [...],
     "model": {"kind": "tabular_classifier" | "tabular_regressor", "hidden_units": [64, 32],
               "epochs": 5, "batch_size": 256, "learning_rate": 0.001, "seed": 42},
     "train_uri": "/abs/train.parquet", "holdout_uri": "/abs/holdout.parquet",
     "output_dir": "/abs/train_out",
     "checkpoint_dir": "/abs/train_out/checkpoints",   # optional; this is the default
     "mlflow": {"tracking_uri": ..., "experiment": ..., "run_name": ..., "tags": {...},
                "artifact_location": ...}   # optional; "artifact_location" only used to create
    }                                       # a missing experiment

Unknown keys are refused (a misspelt key is an error, not a silent default). ``batch_size`` is
per rank. ``mlflow.tracking_uri`` may be left out (a Kubernetes pod gets it from a Secret): the
trainer then takes ``MLFLOW_TRACKING_URI`` from its environment (:meth:`MlflowSpec.resolved`).
URIs stay as given in the model (``s3://`` in a production spec). The trainer works on local
paths (:meth:`TrainSpec.paths`): an ``s3://`` input is fetched to a local working directory
(``MLP_TRAINER_WORKDIR``, default the system temp dir), and an ``s3://`` ``output_dir`` or
``checkpoint_dir`` is a local directory that rank 0 publishes there (:mod:`training.remote_io`:
checkpoints after every epoch, the outputs with the exported SavedModel at the end); any other
scheme is a :class:`SpecError` naming the key.

This module also builds the one ``horovodrun`` command line (:func:`horovodrun_command`) that
the local stage, the Kubernetes pod and the MPI launcher run.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlparse

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

PROG = "training.train"
#: the prefix of the trainer's one error line (stderr), also inside horovodrun's rank prefixes
ERROR_PREFIX = f"{PROG}: error: "
#: the last stdout line of rank 0: ``MLPLATFORM_RESULT {"mlflow_run_id": ...}`` (one line of JSON)
RESULT_MARKER = "MLPLATFORM_RESULT"
RESULT_FILE = "result.json"
CLASSIFIER = "tabular_classifier"
REGRESSOR = "tabular_regressor"
MODEL_KINDS = (CLASSIFIER, REGRESSOR)
#: how a missing categorical value is fed to the model (never part of a vocabulary: OOV)
MISSING_CATEGORY = ""


def output_name(kind: str) -> str:
    """The serving signature's single output: ``score`` (classifier) or ``prediction``."""
    return "score" if kind == CLASSIFIER else "prediction"


class SpecError(Exception):
    """A bad spec, bad input data or an unusable environment: one line, exit code 2."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


PositiveInt = Annotated[int, Field(gt=0, strict=True)]
NonEmpty = Annotated[str, Field(min_length=1)]


class ModelParams(_Strict):
    """``model``: what to build and how to train it (the pipeline's ``model:`` section)."""

    kind: Literal["tabular_classifier", "tabular_regressor"] = CLASSIFIER
    hidden_units: Annotated[list[PositiveInt], Field(min_length=1)] = [64, 32]
    epochs: PositiveInt = 5
    batch_size: PositiveInt = 256
    learning_rate: Annotated[float, Field(gt=0)] = 1e-3
    seed: int = 42


class MlflowSpec(_Strict):
    """``mlflow``: the run to log to; ``tracking_uri`` None: ``MLFLOW_TRACKING_URI`` (env)."""

    experiment: NonEmpty
    tracking_uri: NonEmpty | None = None
    run_name: str | None = None
    tags: dict[str, str] = {}
    artifact_location: str | None = None

    def resolved(self) -> MlflowSpec:
        """This spec with ``tracking_uri`` set, from the environment if the spec has none;
        raises :class:`SpecError` when neither has one."""
        if self.tracking_uri:
            return self
        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            raise SpecError(
                "spec: mlflow.tracking_uri is missing and MLFLOW_TRACKING_URI is not set"
            )
        return self.model_copy(update={"tracking_uri": uri})


@dataclass(frozen=True)
class LocalPaths:
    """The spec's URIs as absolute local paths (what the trainer reads and writes); ``remote``
    maps a field name (``train``, ``holdout``, ``output_dir``, ``checkpoint_dir``) whose URI is
    remote to that URI (its local path is a working copy, :mod:`training.remote_io`)."""

    train: Path
    holdout: Path
    output_dir: Path
    checkpoint_dir: Path
    remote: dict[str, str] = field(default_factory=dict)


class TrainSpec(_Strict):
    """The trainer's input (see the module docstring for the JSON)."""

    pipeline: str = "default"
    label: NonEmpty
    numeric_features: list[NonEmpty]
    categorical_features: list[NonEmpty]
    model: ModelParams
    train_uri: NonEmpty
    holdout_uri: NonEmpty
    output_dir: NonEmpty
    checkpoint_dir: NonEmpty | None = None
    mlflow: MlflowSpec | None = None

    @model_validator(mode="after")
    def _features(self) -> TrainSpec:
        names = [*self.numeric_features, *self.categorical_features]
        if not names:
            raise ValueError("no features (numeric_features and categorical_features are empty)")
        if len(set(names)) != len(names):
            raise ValueError("a feature is listed twice")
        if self.label in names:
            raise ValueError(f"the label {self.label!r} is also listed as a feature")
        return self

    @property
    def features(self) -> list[str]:
        return [*self.numeric_features, *self.categorical_features]

    def paths(self) -> LocalPaths:
        """The local paths of the URIs (working copies for ``s3://`` ones, the same for every
        rank on a machine); :class:`SpecError` naming the key for another scheme."""
        remote: dict[str, str] = {}

        def place(name: str, uri: str, key: str) -> Path:
            if is_remote_uri(uri, key):
                remote[name] = uri
                return working_copy(uri)
            return local_path(uri, key)

        output_dir = place("output_dir", self.output_dir, "output_dir")
        checkpoint_dir = (
            place("checkpoint_dir", self.checkpoint_dir, "checkpoint_dir")
            if self.checkpoint_dir
            else output_dir / "checkpoints"
        )
        if not self.checkpoint_dir and "output_dir" in remote:
            remote["checkpoint_dir"] = remote["output_dir"].rstrip("/") + "/checkpoints"
        return LocalPaths(
            train=place("train", self.train_uri, "train_uri"),
            holdout=place("holdout", self.holdout_uri, "holdout_uri"),
            output_dir=output_dir,
            checkpoint_dir=checkpoint_dir,
            remote=remote,
        )

    def resolve(self) -> Job:
        """This spec ready to run here: local paths and a tracking URI (:class:`SpecError`)."""
        return Job(self, self.paths(), self.mlflow.resolved() if self.mlflow else None)

    def to_json(self, **kwargs: Any) -> str:
        """The spec as JSON without unset optional keys (None), as the trainer reads it."""
        return self.model_dump_json(exclude_none=True, **kwargs)

    def compact_json(self) -> str:
        """One compact JSON argument with sorted keys (``--spec-json`` in a pod's command)."""
        return json.dumps(self.model_dump(exclude_none=True), separators=(",", ":"), sort_keys=True)


@dataclass(frozen=True)
class Job:
    """A validated spec resolved for this process: its local paths and MLflow settings (with a
    tracking URI, from the environment if the spec has none)."""

    spec: TrainSpec
    paths: LocalPaths
    mlflow: MlflowSpec | None


class TrainResult(BaseModel):
    """What rank 0 hands back (``result.json``, the ``MLPLATFORM_RESULT`` line, the pod XCom)."""

    model_config = ConfigDict(extra="ignore")

    mlflow_run_id: str | None = None
    mlflow_experiment_id: str | None = None
    model_uri: str | None = None
    mlflow_model_id: str | None = None
    saved_model_dir: str | None = None
    metrics: dict[str, float | None]
    world_size: int
    samples_per_sec: float | None = None


class TrainError(BaseModel):
    """A failed rank's last word: ``error-rank<r>.json`` in the spec's ``output_dir``."""

    rank: int
    error: str
    time: float


#: object-store schemes the trainer reads and writes through fsspec (s3fs)
REMOTE_SCHEMES = ("s3", "s3a")
#: where the trainer keeps working copies of remote inputs and outputs (default: the temp dir)
WORKDIR_ENV = "MLP_TRAINER_WORKDIR"


def is_remote_uri(uri: str, key: str) -> bool:
    """True for an ``s3://`` URI; False for a local path or ``file://`` URI (:func:`local_path`
    refuses other schemes)."""
    return urlparse(uri).scheme in REMOTE_SCHEMES


def working_root() -> Path:
    """``<MLP_TRAINER_WORKDIR or the temp dir>/mlp-trainer``: the working copies' root."""
    return Path(os.environ.get(WORKDIR_ENV) or tempfile.gettempdir()) / "mlp-trainer"


def working_copy(uri: str) -> Path:
    """The local working path of a remote URI: ``<MLP_TRAINER_WORKDIR or temp>/mlp-trainer/
    <hash>/<name>``, the same for every rank and every try on this machine."""
    root = working_root()
    digest = hashlib.sha256(uri.rstrip("/").encode()).hexdigest()[:16]
    return (root / digest / (uri.rstrip("/").rsplit("/", 1)[-1] or "root")).resolve()


def local_path(uri: str, key: str) -> Path:
    """A plain path or a ``file://`` URI -> an absolute local path; any other scheme (remote
    ones are :func:`is_remote_uri`, not paths) raises :class:`SpecError` naming ``key``."""
    # Hand-written rather than fsspec's url_to_fs: the point is to refuse, in one line, schemes
    # the trainer has no credentials or client for (fsspec would accept http://, gs:// ...).
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path)).resolve()
    if parsed.scheme and len(parsed.scheme) > 1:  # one letter: a Windows drive, not a scheme
        raise SpecError(
            f"spec: {key}: unsupported URI scheme {parsed.scheme + '://'!r} in {uri!r} "
            "(local paths, file:// and s3:// URIs are supported)"
        )
    return Path(uri).resolve()


def _one_line(exc: ValidationError) -> str:
    """The first error of ``exc`` as ``spec: <dotted.field>: <message> (got <value>)``."""
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    value = "" if err["type"] == "missing" else f" (got {repr(err.get('input'))[:80]})"
    message = err["msg"].removeprefix("Value error, ")
    return f"spec: {where + ': ' if where else ''}{message}{value}"


def parse_spec(raw: Any) -> TrainSpec:
    """Validate a decoded JSON spec; raises :class:`SpecError` naming the first problem."""
    if not isinstance(raw, dict):
        raise SpecError("spec: the top level must be a JSON object")
    try:
        return TrainSpec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(_one_line(exc)) from None


def load_spec_json(text: str, source: str = "--spec-json") -> TrainSpec:
    """Validate the spec given as JSON text (``source`` names it in errors)."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SpecError(f"{source} is not valid JSON: {exc}") from exc
    return parse_spec(raw)


def load_spec(path: str | Path) -> TrainSpec:
    """Read and validate the spec file at ``path``."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError as exc:
        raise SpecError(f"spec file not found: {path}") from exc
    return load_spec_json(text, f"spec file {path}")


def redact_uri(uri: str) -> str:
    """``uri`` with any userinfo (``user:password@``) replaced by ``***@``."""
    scheme, sep, rest = uri.partition("://")
    if not sep:
        return uri
    authority, slash, path = rest.partition("/")
    if "@" not in authority:
        return uri
    return f"{scheme}://***@{authority.rpartition('@')[2]}{slash}{path}"


# -------------------------------------------------------------------------- errors handed back


def error_path(output_dir: Path, rank: int) -> Path:
    return output_dir / f"error-rank{rank}.json"


def write_error(output_dir: Path, rank: int, message: str) -> None:
    """Record ``message`` (one line) as rank ``rank``'s error; never raises (best effort: the
    ``training.train: error:`` line on stderr says the same)."""
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        record = TrainError(rank=rank, error=" ".join(message.split()), time=time.time())
        error_path(output_dir, rank).write_text(record.model_dump_json())
    except OSError:
        pass


def clear_errors(output_dir: Path) -> None:
    """Remove the error records of an earlier attempt (before a launch)."""
    for path in output_dir.glob("error-rank*.json"):
        path.unlink(missing_ok=True)


def read_error(output_dir: Path, log_lines: Sequence[str] = ()) -> str | None:
    """The trainer's own error: the earliest rank's record in ``output_dir`` (the first rank to
    fail has the cause; the others often fail because it left), else the last
    ``training.train: error:`` line of ``log_lines`` (horovodrun's ``[1,0]<stderr>:`` prefixes
    allowed), else None."""
    records = []
    for path in output_dir.glob("error-rank*.json"):
        try:
            records.append(TrainError.model_validate_json(path.read_text()))
        except (OSError, ValueError):
            continue
    if records:
        return min(records, key=lambda r: (r.time, r.rank)).error
    for line in reversed(list(log_lines)):
        if (error := read_error_line(line)) is not None:
            return error
    return None


def read_error_line(line: str) -> str | None:
    """The message of a ``training.train: error: ...`` line (after any launcher prefix such as
    horovodrun's ``[1,0]<stderr>:``), or None for any other line."""
    index = line.find(ERROR_PREFIX)
    return line[index + len(ERROR_PREFIX) :].strip() if index >= 0 else None


# --------------------------------------------------------------------------------- the command


def spec_args(*, path: str | None = None, spec: TrainSpec | None = None) -> list[str]:
    """The trainer's spec argument: ``--spec PATH`` or ``--spec-json <compact JSON>``."""
    if (path is None) == (spec is None):
        raise ValueError("give exactly one of path and spec")
    return ["--spec", path] if path is not None else ["--spec-json", spec.compact_json()]  # type: ignore[union-attr]


def trainer_command(args: list[str], python: str = "python") -> list[str]:
    """The trainer in one process, no launcher: ``python -m training.train ARGS``."""
    return [python, "-m", PROG, *args]


def horovodrun_command(
    np: int,
    args: list[str],
    *,
    gloo: bool = False,
    hostfile: str | None = None,
    python: str = "python",
    launcher: Sequence[str] = ("horovodrun",),
) -> list[str]:
    """``horovodrun -np N [--gloo] (-H localhost:N | --hostfile F) python -m training.train ARGS``:
    ``np`` local slots, or the hosts of an MPI hostfile (the MPIJob launcher). ``launcher``
    replaces ``horovodrun`` (``python -m training.launch``: the same without its TensorFlow
    import, for Gloo on this machine)."""
    hosts = ["--hostfile", hostfile] if hostfile else ["-H", f"localhost:{np}"]
    return [
        *launcher, "-np", str(np), *(["--gloo"] if gloo else []), *hosts,
        *trainer_command(args, python),
    ]  # fmt: skip
