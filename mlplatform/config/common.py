"""Shared pieces of the pipeline config: limits, reserved and usable names, the error types,
schedule and quantity checks, and the strict base model of every section."""

from __future__ import annotations

import re
import reprlib
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

#: a pipeline config larger than this is refused before it is parsed
MAX_CONFIG_BYTES = 256 * 1024
#: YAML nesting depth (the schema needs 3)
MAX_DEPTH = 20
#: alias uses (``*name``) in one file
MAX_ALIASES = 32
#: YAML nodes with every alias expanded (the demo has about 100)
MAX_NODES = 10_000
#: echoed input in an error message is cut to this many characters
ECHO_CHARS = 80
#: field errors listed for one file; the rest are counted
MAX_ERROR_LINES = 10

#: the offline feature store's ingestion (Feast "created") timestamp column; no pipeline may use it
INGESTED_AT_COLUMN = "mlp_ingested_at"

#: schedule strings Airflow takes besides cron expressions
AIRFLOW_SCHEDULE_PRESETS = (
    "@once",
    "@continuous",
    "@hourly",
    "@daily",
    "@weekly",
    "@monthly",
    "@quarterly",
    "@yearly",
)


#: a column name that Feast (field names), TensorFlow (SavedModel input names) and GX all take
COLUMN_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
COLUMN_NAME_RULE = "Feast and TensorFlow take letters, digits and _, not a digit first"


def unusable_column_names(names: Iterable[object]) -> list[str]:
    """The names among ``names`` that are not usable as feature names (``COLUMN_NAME``)."""
    return [str(n) for n in names if not COLUMN_NAME.fullmatch(str(n))]


#: names of the trained model's own layers (``training/model.py``: ``build_model``): every feature
#: is a Keras ``Input`` named after it, and Keras refuses two layers of one name
MODEL_LAYER_NAMES = (
    "features",
    "score",
    "prediction",
    "standardized_prediction",
    "tabular_classifier",
    "tabular_regressor",
)
#: per-feature layers of ``training/model.py``: ``normalize_F``, ``impute_F`` (numeric),
#: ``lookup_F`` (categorical)
MODEL_LAYER_PREFIXES = ("normalize_", "impute_", "lookup_")
_HIDDEN_LAYER = re.compile(r"^hidden_[0-9]+$")


def model_name_clash(name: str, features: Iterable[str]) -> str | None:
    """Why the model cannot take a feature called ``name`` beside ``features`` (a layer of the
    model would have the same name), or None."""
    if name in MODEL_LAYER_NAMES or _HIDDEN_LAYER.match(name):
        return (
            f"{name!r} is the name of a layer of the trained model (reserved: "
            f"{', '.join(MODEL_LAYER_NAMES)}, hidden_<n>); rename the column at the source"
        )
    for prefix in MODEL_LAYER_PREFIXES:
        if name.startswith(prefix) and name.removeprefix(prefix) in features:
            return (
                f"{name!r} is the name the model gives its {prefix.rstrip('_')} layer of feature "
                f"{name.removeprefix(prefix)!r}; rename one of the columns at the source"
            )
    return None


def suggest_name(name: str) -> str:
    """A usable column name (``COLUMN_NAME``) for ``name``: every run of other characters
    becomes ``_``, a leading digit gets a ``c_`` prefix (``"monthly spend"`` ->
    ``monthly_spend``, ``"2nd.value"`` -> ``c_2nd_value``)."""
    text = re.sub(r"[^A-Za-z0-9_]+", "_", str(name)).strip("_") or "column"
    return f"c_{text}" if text[0].isdigit() else text


def _usable_names(value: Any) -> Any:
    """Field validator: a column name, or a list of them, must match ``COLUMN_NAME``."""
    bad = unusable_column_names(value if isinstance(value, list) else [value])
    if bad:
        raise ValueError(
            f"column name(s) {', '.join(map(repr, bad))} cannot be used: {COLUMN_NAME_RULE}; "
            "rename the column(s) at the source"
        )
    return value


class ConfigError(ValueError):
    """A pipeline config is malformed; ``str()`` is one readable line (or one line per field)."""


class FieldProblem(ValueError):
    """Raised by a validator about a field below the one it validates (a model validator about
    ``gate.metric``, a dict validator about one key): ``loc`` is that field's path relative to
    the validated model or field, so that the error names its line and dotted field."""

    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc


_ECHO = reprlib.Repr()
_ECHO.maxlevel, _ECHO.maxlist, _ECHO.maxtuple, _ECHO.maxdict = 2, 5, 5, 4
_ECHO.maxstring, _ECHO.maxother, _ECHO.maxlong = ECHO_CHARS, ECHO_CHARS, ECHO_CHARS


def echo(value: Any) -> str:
    """``repr(value)`` cut to at most ``ECHO_CHARS`` characters, in time independent of its size
    (``reprlib`` stops at a few items and levels, even on a structure of shared references)."""
    text = _ECHO.repr(value)
    return text if len(text) <= ECHO_CHARS else text[: ECHO_CHARS - 3] + "..."


def one_line(text: object, limit: int = ECHO_CHARS) -> str:
    """Free text (a YAML problem, a library message) squeezed onto one line of at most
    ``limit`` characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def check_schedule(value: str | None) -> str | None:
    """Return ``value`` if Airflow can schedule it: null, a preset of
    ``AIRFLOW_SCHEDULE_PRESETS`` or a cron expression (5 to 7 fields) that croniter parses and
    that has a next fire time (``0 0 31 2 *`` never fires); else raise ``ValueError``.

    croniter comes with Airflow and is imported here, lazily, so that this module stays
    importable without Airflow; without croniter only the cron syntax check is skipped.
    """
    if value is None or value in AIRFLOW_SCHEDULE_PRESETS:
        return value
    hint = "use null, an Airflow preset (" + ", ".join(AIRFLOW_SCHEDULE_PRESETS) + ") or cron"
    if value.startswith("@") or not 5 <= len(value.split()) <= 7:
        raise ValueError(f"not a schedule: {hint} like '0 3 * * *'")
    try:
        from croniter import croniter
    except ImportError:  # pragma: no cover - croniter is installed with Airflow
        return value
    try:
        croniter(value).get_next(datetime)
    except Exception as exc:  # noqa: BLE001 - croniter raises ValueError, KeyError, ...
        raise ValueError(f"not a valid cron expression ({one_line(exc)}); {hint}") from None
    return value


def quantity_problem(value: object) -> str | None:
    """Why ``value`` is not a positive Kubernetes resource quantity (``500m``, ``16Gi``), or None.

    Parsed by the Kubernetes client's own ``kubernetes.utils.parse_quantity`` (imported here,
    lazily: the client costs seconds to import, and only configs with quantities pay it)."""
    from kubernetes.utils import parse_quantity

    try:
        amount = parse_quantity(value)
    except (ValueError, TypeError, ArithmeticError):
        return (
            f"not a Kubernetes quantity: {echo(value)} (e.g. cpu: '4', '500m'; memory: 16Gi, 512Mi)"
        )
    if amount <= 0:
        return f"a quantity must be positive: {echo(value)}"
    return None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")
