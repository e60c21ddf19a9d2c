"""What ``mlplatform check`` knows before a run: the config against its suite and its data.

The config itself is validated by :mod:`mlplatform.config` (every field, the gate metric for the
model kind, a threshold's direction, Kubernetes quantities, names the model cannot take).
:func:`preflight` then checks what needs more than the YAML:

* **the expectation suite** agrees with the features: every column an expectation names is one
  the pipeline declares (entity, timestamp, label, features) or one the data has; the suite's
  ``expect_table_columns_to_match_set`` lists every declared column; a numeric feature is not
  held to a set of text values;
* **a sample of the data** (the first ``SAMPLE_ROWS`` rows of ``--data`` or of a ``source.uri``
  that is not a landing template, read through :mod:`mlplatform.sources` as ingest reads it) has
  every declared column (with the nearest name when one is missing), numbers in the numeric
  features, event times that parse, and a label fit for the model kind: a ``tabular_classifier``
  takes a 0/1 label with both classes; a ``tabular_regressor`` a number with more than two values.

Each problem is a :class:`Problem`, printed ``file:line: field: problem``: the line of the
pipeline YAML for a config field, of the suite JSON for an expectation.
"""

from __future__ import annotations

import difflib
import json
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlplatform.config import PipelineConfig, echo, field_locator, one_line
from mlplatform.settings import Settings

if TYPE_CHECKING:
    import pandas as pd

#: rows of the data read for the checks (the first chunk of the batch)
SAMPLE_ROWS = 5000
#: expectations that hold a column's values to a set
_SET_EXPECTATIONS = (
    "expect_column_values_to_be_in_set",
    "expect_column_distinct_values_to_be_in_set",
)


@dataclass(frozen=True)
class Problem:
    """One thing to fix before a run: ``where`` is ``file:line`` (or ``file``)."""

    where: str
    field: str
    problem: str

    def line(self) -> str:
        field_part = f"{self.field}: " if self.field else ""
        return f"{self.where}: {field_part}{self.problem}"


@dataclass
class Preflight:
    """What :func:`preflight` found: ``problems`` (each stops a run), ``notes`` (worth a look),
    and the data it read (``data``: where, ``sample_rows``: how many rows; None: none read)."""

    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    data: str | None = None
    sample_rows: int | None = None


def declared_columns(cfg: PipelineConfig) -> dict[str, tuple[str | int, ...]]:
    """Every column the pipeline declares -> the config field that declares it."""
    out: dict[str, tuple[str | int, ...]] = {
        cfg.source.entity: ("source", "entity"),
        cfg.source.timestamp: ("source", "timestamp"),
        cfg.features.label: ("features", "label"),
    }
    for section in ("numeric", "categorical"):
        for index, name in enumerate(getattr(cfg.features, section)):
            out[name] = ("features", section, index)
    return out


def _dotted(loc: tuple[str | int, ...]) -> str:
    return ".".join(str(p) for p in loc)


def _nearest(name: str, candidates: list[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest candidate, comparing names the way people
    misspell them (case, spaces and dashes for underscores); empty when none is close."""

    def norm(text: str) -> str:
        return re.sub(r"[\s\-.]+", "_", text.strip().lower())

    by_norm = {norm(c): c for c in candidates}
    if norm(name) in by_norm:
        return f" (did you mean {by_norm[norm(name)]!r}?)"
    close = difflib.get_close_matches(norm(name), list(by_norm), n=1, cutoff=0.75)
    return f" (did you mean {by_norm[close[0]]!r}?)" if close else ""


class _Suite:
    """An expectation suite's JSON with the line of each expectation's column."""

    def __init__(self, path: Path, definition: dict[str, Any]) -> None:
        self.path = path
        self.name = str(definition.get("name", path.stem))
        self.expectations: list[dict[str, Any]] = list(definition.get("expectations", []))
        self._lines = path.read_text().splitlines() if path.exists() else []

    def where(self, *needles: str) -> str:
        """``path:line`` of the first line holding every needle (``path`` if none does)."""
        for number, text in enumerate(self._lines, start=1):
            if all(n in text for n in needles):
                return f"{self.path}:{number}"
        return str(self.path)

    def column_where(self, column: str) -> str:
        return self.where(f'"column": {json.dumps(column)}')


def _suite_problems(
    cfg: PipelineConfig, suite: _Suite, where: Any, sample: pd.DataFrame | None
) -> tuple[list[Problem], list[str]]:
    problems: list[Problem] = []
    declared = declared_columns(cfg)
    in_data = set(map(str, sample.columns)) if sample is not None else set()
    covered: set[str] = set()
    for index, exp in enumerate(suite.expectations):
        kwargs = exp.get("kwargs") or {}
        kind = str(exp.get("type", ""))
        column = kwargs.get("column")
        if isinstance(column, str):
            covered.add(column)
            field_name = f"expectations[{index}].kwargs.column"
            if column not in declared and column not in in_data:
                data_note = (
                    " nor a column of the data sample"
                    if sample is not None
                    else "; pass --data FILE if the data has it"
                )
                problems.append(
                    Problem(
                        suite.column_where(column),
                        field_name,
                        f"{kind}: {column!r} is not a column the pipeline declares (entity, "
                        f"timestamp, label, features){data_note}{_nearest(column, list(declared))}",
                    )
                )
            values = kwargs.get("value_set")
            if (
                column in cfg.features.numeric
                and kind in _SET_EXPECTATIONS
                and isinstance(values, list)
                and any(isinstance(v, str) for v in values)
            ):
                problems.append(
                    Problem(
                        suite.column_where(column),
                        f"expectations[{index}].kwargs.value_set",
                        f"{column!r} is a numeric feature (features.numeric) but the suite holds "
                        f"it to text values {echo(values)}: move it to features.categorical or "
                        "fix the suite",
                    )
                )
        if kind == "expect_table_columns_to_match_set":
            column_set = [str(c) for c in kwargs.get("column_set") or []]
            for name, loc in declared.items():
                if name not in column_set:
                    problems.append(
                        Problem(
                            where(loc),
                            _dotted(loc),
                            f"{name!r} is missing from the column_set of suite {suite.name!r}'s "
                            f"expect_table_columns_to_match_set ({suite.where('column_set')})",
                        )
                    )
            if sample is not None:
                for name in column_set:  # a declared one is reported at its config line
                    if name not in in_data and name not in declared:
                        problems.append(
                            Problem(
                                suite.where("column_set"),
                                f"expectations[{index}].kwargs.column_set",
                                f"{name!r} is not a column of the data sample"
                                f"{_nearest(name, sorted(in_data))}",
                            )
                        )
    unchecked = [c for c in declared if c not in covered]
    notes = [f"no column expectation covers {', '.join(unchecked)}"] if unchecked else []
    return problems, notes


def read_sample(
    uri: str, cfg: PipelineConfig, settings: Settings, rows: int = SAMPLE_ROWS
) -> tuple[str, pd.DataFrame]:
    """``(where, frame)``: the first ``rows`` rows of the batch at ``uri``, read as ingest reads
    it (:mod:`mlplatform.sources`); raises its one-line ``SourceError``."""
    import pandas as pd

    from mlplatform import sources

    with tempfile.TemporaryDirectory(prefix="mlp-check-") as staging:
        source = sources.resolve(uri, cfg, settings, Path(staging))
        for chunk in sources.read_chunks(source, rows):
            return source.display, chunk.frame.head(rows)
    return source.display, pd.DataFrame()


def _data_problems(
    cfg: PipelineConfig, frame: pd.DataFrame, shown: str, where: Any
) -> list[Problem]:
    import pandas as pd

    problems: list[Problem] = []
    columns = [str(c) for c in frame.columns]
    present = set(columns)
    rows = len(frame)

    def problem(loc: tuple[str | int, ...], text: str) -> None:
        problems.append(Problem(where(loc), _dotted(loc), text))

    for name, loc in declared_columns(cfg).items():
        if name not in present:
            problem(loc, f"{name!r} is not a column of {shown}{_nearest(name, columns)}")
    for index, name in enumerate(cfg.features.numeric):
        if name not in present:
            continue
        values = frame[name].dropna()
        numbers = pd.to_numeric(values, errors="coerce")
        text = values[numbers.isna()]
        if len(text):
            problem(
                ("features", "numeric", index),
                f"{name!r} holds text in the data sample ({len(text)} of {rows} rows, e.g. "
                f"{echo(sorted(map(str, text.unique()))[:3])}): declare it under "
                "features.categorical, or clean the column",
            )
    for name, loc in declared_columns(cfg).items():
        if loc[0] == "features" and name in present and rows and frame[name].isna().all():
            if name != cfg.features.label:
                problem(loc, f"{name!r} has no value in the {rows} sampled rows of {shown}")
    ts = cfg.source.timestamp
    if ts in present and rows:
        parsed = pd.to_datetime(frame[ts], errors="coerce", utc=True, format="mixed")
        bad = frame[ts][parsed.isna() & frame[ts].notna()]
        if len(bad):
            problem(
                ("source", "timestamp"),
                f"{ts!r} has values that are not times ({len(bad)} of {rows} rows, e.g. "
                f"{echo(sorted(map(str, bad.unique()))[:3])})",
            )
    if cfg.features.label in present and rows:
        problems += [
            Problem(where(("features", "label")), "features.label", text)
            for text in label_problems(cfg, frame[cfg.features.label])
        ]
    return problems


def label_problems(cfg: PipelineConfig, label: pd.Series) -> list[str]:
    """Why ``label`` (a sample of the label column) does not fit ``model.kind``: its
    cardinality (a classifier: 0/1, both present; a regressor: a number with more than two
    values), text where a number is needed, missing labels."""
    import pandas as pd

    name, kind, rows = cfg.features.label, cfg.model.kind, len(label)
    out: list[str] = []
    missing = int(label.isna().sum())
    if missing:
        out.append(
            f"{name!r} is missing in {missing} of {rows} sampled rows (validation refuses rows "
            "without a label)"
        )
    values = label.dropna()
    numbers = pd.to_numeric(values.astype(object).map(_bool_as_int), errors="coerce")
    text = values[numbers.isna()]
    distinct = sorted(numbers.dropna().unique().tolist())
    shown = echo([_short(v) for v in distinct[:5]])
    if kind == "tabular_classifier":
        if len(text):
            out.append(
                f"{name!r} holds text ({echo(sorted(map(str, text.unique()))[:3])}): a "
                "tabular_classifier takes a 0/1 label; map the classes to 0 and 1 at the source"
            )
        elif len(distinct) > 2:
            out.append(
                f"{name!r} has {len(distinct)} distinct values in the sample (e.g. {shown}): a "
                "tabular_classifier takes a binary 0/1 label; to predict a number use "
                "model.kind: tabular_regressor with gate.metric: rmse or mae"
            )
        elif not set(distinct) <= {0.0, 1.0}:
            out.append(f"{name!r} has values {shown}: a tabular_classifier takes 0 and 1")
        elif len(distinct) == 1:
            out.append(
                f"{name!r} has one class only ({shown}) in {rows} sampled rows: a classifier "
                "needs both 0 and 1"
            )
    elif len(text):
        out.append(
            f"{name!r} holds text ({echo(sorted(map(str, text.unique()))[:3])}): a "
            "tabular_regressor predicts a number"
        )
    elif 0 < len(distinct) <= 2:
        out.append(
            f"{name!r} has only {len(distinct)} distinct value(s) {shown} in {rows} sampled rows: "
            "a class label, not a number to predict; use model.kind: tabular_classifier with "
            "gate.metric: auc"
        )
    return out


def _bool_as_int(value: object) -> object:
    """True/False (Python's or NumPy's) as 1/0; anything else as it is."""
    return int(value) if type(value).__name__ in ("bool", "bool_") else value


def _short(value: float) -> int | float:
    return int(value) if float(value).is_integer() else round(value, 4)


def preflight(
    cfg: PipelineConfig,
    config_path: Path,
    settings: Settings,
    data_uri: str | None = None,
    sample_rows: int = SAMPLE_ROWS,
) -> Preflight:
    """Check ``cfg`` (read from ``config_path``) against its suite and a sample of its data: the
    batch at ``data_uri``, else ``source.uri`` unless it is a landing template; see the module
    doc. Never raises for what it finds: each finding is a :class:`Problem` or a note."""
    from mlplatform.sources import SourceError
    from mlplatform.stages import StageError
    from mlplatform.stages.validate import load_suite_definition, suite_path

    where = field_locator(config_path)
    report = Preflight()
    sample = None
    uri = data_uri or ("" if cfg.source.templated else cfg.source.uri)
    if uri:
        try:
            report.data, sample = read_sample(uri, cfg, settings, sample_rows)
            report.sample_rows = len(sample)
        except SourceError as exc:
            report.problems.append(
                Problem("--data", "", one_line(exc, 300))
                if data_uri
                else Problem(where(("source", "uri")), "source.uri", one_line(exc, 300))
            )
    elif cfg.source.templated:
        report.notes.append(
            "source.uri is a landing template: pass --data FILE to check a sample of the data"
        )
    else:
        report.notes.append("no source.uri: pass --data FILE to check a sample of the data")
    try:
        definition = load_suite_definition(settings, cfg.validation.suite)
    except StageError as exc:
        report.problems.append(
            Problem(where(("validation", "suite")), "validation.suite", one_line(exc, 300))
        )
    else:
        suite = _Suite(suite_path(settings, cfg.validation.suite), definition)
        problems, notes = _suite_problems(cfg, suite, where, sample)
        report.problems += problems
        report.notes += notes
    if sample is not None and report.data is not None:
        report.problems += _data_problems(cfg, sample, report.data, where)
    report.problems += _shared_model_problems(cfg, config_path, settings.pipelines_dir, where)
    return report


def _shared_model_problems(
    cfg: PipelineConfig, config_path: Path, pipelines_dir: Path, where: Any
) -> list[Problem]:
    """A model served by two pipelines: each run's register, gate and promote would move the
    other pipeline's versions, aliases and served model (side by side, pipelines share nothing)."""
    from mlplatform.config import load_pipelines, pipeline_files

    others = [
        f"{item.config.name} ({item.path})"
        for item in load_pipelines(pipeline_files(pipelines_dir))
        if item.config is not None
        and item.config.name != cfg.name
        and item.path.resolve() != config_path.resolve()
        and item.config.serving.model_name == cfg.serving.model_name
    ]
    if not others:
        return []
    return [
        Problem(
            where(("serving", "model_name")),
            "serving.model_name",
            f"model {cfg.serving.model_name!r} is also served by pipeline {', '.join(others)}: "
            "their runs would register, gate and promote over each other's versions; give each "
            "pipeline its own model name",
        )
    ]
