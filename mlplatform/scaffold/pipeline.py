"""Write a new pipeline: its YAML under the pipelines directory and its drafted suite.

Contract: :func:`plan` profiles the table, guesses what the flags leave open and returns a
:class:`Scaffold` (the YAML text, the suite, and one line per decision with its reason);
:func:`write` writes both files, refusing to replace either unless ``force``. The YAML is
validated with :func:`mlplatform.config.parse_pipeline` before anything is written, so what
init writes is what the DAG factory accepts. Errors are :class:`ScaffoldError`, one line.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from mlplatform.config import (
    COLUMN_NAME_RULE,
    ConfigError,
    parse_pipeline,
    suggest_name,
    unusable_column_names,
)
from mlplatform.scaffold import guess
from mlplatform.scaffold.profile import SAMPLE_ROWS, TableProfile, profile_frame, read_sample
from mlplatform.scaffold.suite import draft_suite
from mlplatform.settings import Settings
from mlplatform.sources import file_format, is_sql

NAME = re.compile(r"^[a-z][a-z0-9_]*$")
#: the floor of a classifier's drafted gate: clearly better than chance (AUC 0.5)
CLASSIFIER_AUC_FLOOR = 0.55


class ScaffoldError(ValueError):
    """The table or the arguments do not make a pipeline; ``str()`` is one line."""


@dataclass
class Scaffold:
    """What :func:`write` writes, and the decisions behind it (``notes``, one line each)."""

    name: str
    yaml_text: str
    suite: dict
    notes: list[str] = field(default_factory=list)
    example: dict = field(default_factory=dict)  # one sampled row of raw features, for predict


def _rename_map(columns: list[str]) -> dict[str, str]:
    """Source name -> usable name for every column Feast/TensorFlow cannot take; a suggestion
    that clashes with another column gets a numeric suffix."""
    taken = {c for c in columns if c not in unusable_column_names([c])}
    mapping = {}
    for col in unusable_column_names(columns):
        base = candidate = suggest_name(col)
        n = 2
        while candidate in taken:
            candidate, n = f"{base}_{n}", n + 1
        taken.add(candidate)
        mapping[col] = candidate
    return mapping


def _flag(value: str | None, rename: dict[str, str]) -> str | None:
    """A column flag may name the source column or its platform name."""
    return rename.get(value, value) if value else value


def _significant(value: float, digits: int = 3, up: bool = True) -> float:
    """``value`` rounded to ``digits`` significant digits, up (or down)."""
    if value <= 0:
        return 0.0
    scale = 10 ** (digits - 1 - math.floor(math.log10(value)))
    rounded = (math.ceil if up else math.floor)(value * scale) / scale
    return float(f"{rounded:.{digits}g}")


def _gate(kind: str, label_std: float | None) -> tuple[dict, str]:
    if kind == "tabular_classifier":
        gate = {"metric": "auc", "min": CLASSIFIER_AUC_FLOOR, "max_regression": 0.02}
        return gate, f"auc of at least {CLASSIFIER_AUC_FLOOR} (better than chance)"
    std = label_std or 0.0
    ceiling = _significant(std) or 1.0
    gate = {"metric": "rmse", "max": ceiling, "max_regression": _significant(0.05 * std) or 0.01}
    return gate, (
        f"rmse at most {ceiling:g}, a ceiling: the label's standard deviation, the rmse of "
        "always predicting the mean"
    )


def _threshold(gate: dict) -> str:
    """The gate's bound as a YAML line: ``min`` (a floor) for auc, ``max`` (a ceiling) for rmse."""
    if "max" in gate:
        return f"max: {gate['max']}  # a ceiling: lower {gate['metric']} is better"
    return f"min: {gate['min']}  # a floor: higher {gate['metric']} is better"


def _model(kind: str, rows: int) -> dict:
    small = rows < 10_000
    return {
        "kind": kind,
        "hidden_units": [64, 32],
        "epochs": 10 if small else 5,
        "batch_size": 128 if small else 256,
        "learning_rate": 0.002,
        "seed": 42,
    }


def _flow(value: object) -> str:
    """A value as YAML flow text (JSON is valid YAML flow syntax)."""
    return json.dumps(value, ensure_ascii=False)


def _yaml(
    name: str, uri: str, fmt: str, rename: dict[str, str], roles: dict, notes: list[str]
) -> str:
    rename_line = (
        f"  rename: {_flow(rename)}  # names Feast/TensorFlow cannot take -> platform names\n"
        if rename
        else ""
    )
    header = "".join(f"# {line}\n" for line in notes)
    model, gate = roles["model"], roles["gate"]
    return f"""# Scaffolded by `mlplatform init {name}`; every field is described in README.md
# ("Onboard a model"). What init decided, and why:
{header}name: {name}
description: {_flow(f"{name}: {model['kind']} of {roles['label']} (scaffolded by mlplatform init)")}
source:
  uri: {_flow(uri)}  # `mlplatform run {name}` ingests it; --data names another batch
  schedule: null  # the ingest DAG mlp_{name}_ingest runs when triggered; a cron reads a landing source
  format: {fmt}
{rename_line}  timestamp: {roles["timestamp"]}
  entity: {roles["entity"]}
validation:
  suite: {roles["suite"]}  # drafted from the data: review ranges and value sets
features:
  view: {name}_features
  ttl_days: 30
  label: {roles["label"]}
  numeric: {_flow(roles["numeric"])}
  categorical: {_flow(roles["categorical"])}
  holdout_fraction: 0.2
  min_rows: {roles["min_rows"]}
model:
  kind: {model["kind"]}
  hidden_units: {_flow(model["hidden_units"])}
  epochs: {model["epochs"]}
  batch_size: {model["batch_size"]}
  learning_rate: {model["learning_rate"]}
  seed: {model["seed"]}
training:
  workers: 1
  processes_per_worker: 2
  gpus_per_worker: 0
gate:
  metric: {gate["metric"]}
  {_threshold(gate)}
  max_regression: {gate["max_regression"]}  # allowed loss against the champion
serving:
  model_name: {name}
monitoring:
  schedule: "@daily"
  drift_share: 0.3
  min_rows: 500
  cooldown_hours: 24
retrain:
  schedule: "@weekly"
  on_new_data: true
  on_drift: true
"""


def plan(
    name: str,
    uri: str,
    settings: Settings,
    *,
    label: str | None = None,
    entity: str | None = None,
    timestamp: str | None = None,
    sample_rows: int = SAMPLE_ROWS,
) -> Scaffold:
    """Profile ``uri`` and decide the pipeline (see the module doc)."""
    if not NAME.fullmatch(name) or len(name) > 64:
        raise ScaffoldError(
            f"{name!r} is not a pipeline name: lowercase letters, digits and _, a letter first "
            "(DAG ids and Kubernetes names derive from it)"
        )
    fmt = "csv" if is_sql(uri) else file_format(uri, "csv")
    frame, display, complete = read_sample(uri, settings, fmt, None, sample_rows)
    if len(frame) < 2:
        raise ScaffoldError(f"{display}: {len(frame)} row(s): too few to draft a pipeline from")
    rename = _rename_map([str(c) for c in frame.columns])
    frame = frame.rename(columns=rename)
    profile: TableProfile = profile_frame(frame, display, complete)
    notes = [
        f"table: {display}, {'all ' if complete else 'a sample of '}{len(frame)} rows, "
        f"{len(frame.columns)} columns"
    ]
    for old, new in rename.items():
        notes.append(f"rename: {old!r} -> {new!r} ({COLUMN_NAME_RULE}; source.rename)")
    ts = guess.guess_timestamp(profile, _flag(timestamp, rename))
    ent = guess.guess_entity(profile, {ts.column}, _flag(entity, rename))
    lab = guess.guess_label(profile, {ts.column, ent.column}, _flag(label, rename))
    for role, g in (("timestamp", ts), ("entity", ent), ("label", lab)):
        notes.append(f"{role}: {g.column} ({'given' if g.given else 'guessed'}: {g.reason})")
    if len({ts.column, ent.column, lab.column}) < 3:
        raise ScaffoldError(
            f"timestamp, entity and label must be three different columns, got {ts.column}, "
            f"{ent.column}, {lab.column}"
        )
    label_col = profile.column(lab.column)
    kind, why = guess.model_kind(label_col)
    notes.append(f"model: {kind} ({why})")
    numeric, categorical, skipped = guess.split_features(
        profile, {ts.column, ent.column, lab.column}
    )
    if not numeric and not categorical:
        raise ScaffoldError(
            f"{display}: no column is left to be a feature "
            f"({'; '.join(f'{c}: {r}' for c, r in skipped) or 'only the three key columns'})"
        )
    notes.append(f"features: numeric {numeric or 'none'}, categorical {categorical or 'none'}")
    for column, reason in skipped:
        notes.append(f"not a feature: {column} ({reason})")
    gate, gate_why = _gate(kind, label_col.std)
    notes.append(f"gate: {gate_why}")
    suite_name = f"{name}_raw"
    roles = {
        "timestamp": ts.column,
        "entity": ent.column,
        "label": lab.column,
        "numeric": numeric,
        "categorical": categorical,
        "suite": suite_name,
        "min_rows": max(2, min(100, len(frame) // 2)),
        "model": _model(kind, len(frame)),
        "gate": gate,
    }
    text = _yaml(name, uri, fmt, rename, roles, notes)
    try:
        parse_pipeline(text, where=f"{name}.yaml")
    except ConfigError as exc:  # a bug here, not the user's: say so with the field
        raise ScaffoldError(f"init drafted a config that does not validate: {exc}") from None
    suite = draft_suite(
        suite_name, profile, entity=ent.column, timestamp=ts.column, label=lab.column,
        numeric=numeric, categorical=categorical, kind=kind,
    )  # fmt: skip
    example = json.loads(frame[[*numeric, *categorical]].head(1).to_json(orient="records"))[0]
    return Scaffold(name, text, suite, notes, example)


def targets(name: str, settings: Settings) -> tuple[Path, Path]:
    """``(pipeline YAML, suite JSON)`` paths of pipeline ``name``."""
    from mlplatform.stages.validate import suite_path

    return settings.pipelines_dir / f"{name}.yaml", suite_path(settings, f"{name}_raw")


def write(scaffold: Scaffold, settings: Settings, force: bool = False) -> tuple[Path, Path]:
    """Write the YAML and the suite; refuse (``ScaffoldError``, nothing written) when either
    exists and not ``force``."""
    yaml_path, suite_file = targets(scaffold.name, settings)
    existing = [str(p) for p in (yaml_path, suite_file) if p.exists()]
    if existing and not force:
        raise ScaffoldError(
            f"{' and '.join(existing)} already exist(s): nothing written; pass --force to "
            "replace, or choose another name"
        )
    for path, text in (
        (yaml_path, scaffold.yaml_text),
        (suite_file, json.dumps(scaffold.suite, indent=2) + "\n"),
    ):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return yaml_path, suite_file
