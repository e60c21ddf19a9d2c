"""Guess a new table's roles: event time, entity key, label, features and the model kind.

Contract: each ``guess_*`` function takes a :class:`~.profile.TableProfile` (and the columns
already taken) and returns a :class:`Guess`, the column and the reason in words, or raises
:class:`GuessError` (one line saying which flag to pass). :func:`model_kind` decides
classification (a 0/1 or boolean label) or regression (any other numeric label) and refuses a
label the platform's models cannot take. :func:`split_features` sorts the remaining columns
into numeric and categorical features and says why it leaves any out. Column names here are
the platform names (after ``source.rename``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mlplatform.scaffold.profile import ColumnProfile, TableProfile

#: a text column parses as event times when at least this share of its values does
TIMESTAMP_SHARE = 0.99
#: a text column with more distinct values than this share of the rows is not a category
MAX_CATEGORY_SHARE = 0.5
#: nor with more distinct values than this
MAX_CATEGORIES = 1000

_TIME_NAME = re.compile(r"(time|date|_at$|^ts$|timestamp|datetime)", re.I)
_ENTITY_NAME = re.compile(r"(^(id|ID|Id)$|_(id|ID)$|^(id|ID)_|[a-z]Id$|_key$|^key$|uuid|UUID)")
_LABEL_NAME = re.compile(
    r"^(label|target|y|class|outcome|churn(ed)?|is_fraud|fraud|default(ed)?|price|"
    r"sales|revenue|amount|score|rating|response)$|label|target",
    re.I,
)


class GuessError(ValueError):
    """No column fits a role; the message says which flag to pass."""


@dataclass(frozen=True)
class Guess:
    """A proposed column and why; ``given`` when the user named it."""

    column: str
    reason: str
    given: bool = False


def _given(profile: TableProfile, column: str, role: str, flag: str) -> Guess:
    if column not in profile.names:
        raise GuessError(f"{flag} {column}: no such column (has: {', '.join(profile.names)})")
    return Guess(column, f"given by {flag}", given=True)


def guess_timestamp(profile: TableProfile, given: str | None = None) -> Guess:
    """The event-time column: a datetime column or text that parses as timestamps, without
    gaps; among several, the one whose name says time/date."""
    if given:
        return _given(profile, given, "timestamp", "--timestamp")
    candidates = [
        c for c in profile.columns if c.timestamp_share >= TIMESTAMP_SHARE and c.nulls == 0
    ]
    if not candidates:
        raise GuessError(
            "no column holds timestamps without gaps: pass --timestamp COL "
            "(every row needs an event time for point-in-time features)"
        )
    named = [c for c in candidates if _TIME_NAME.search(c.name)]
    pick = (named or candidates)[0]
    why = "its values parse as timestamps, none missing"
    if named:
        why += ", and its name says time"
    if len(candidates) > 1:
        others = ", ".join(c.name for c in candidates if c is not pick)
        why += f" (also timestamps: {others})"
    return Guess(pick.name, why)


def guess_entity(profile: TableProfile, taken: set[str], given: str | None = None) -> Guess:
    """The entity key: an integer or text column without gaps whose name looks like an id;
    else the one with the most distinct values."""
    if given:
        return _given(profile, given, "entity", "--entity")
    candidates = [
        c
        for c in profile.columns
        if c.name not in taken and c.kind in ("integer", "text") and c.nulls == 0
    ]
    named = [c for c in candidates if _ENTITY_NAME.search(c.name)]
    if named:
        pick = max(named, key=lambda c: c.distinct)
        return Guess(
            pick.name,
            f"its name looks like an id, no value missing, {pick.distinct} distinct "
            f"of {pick.rows} rows",
        )
    if not candidates:
        raise GuessError("no integer or text column without gaps to key rows by: pass --entity COL")
    pick = max(candidates, key=lambda c: c.distinct)
    return Guess(
        pick.name,
        f"no column is named like an id; this one has the most distinct values "
        f"({pick.distinct} of {pick.rows} rows) and none missing",
    )


def guess_label(profile: TableProfile, taken: set[str], given: str | None = None) -> Guess:
    """The label: a numeric or boolean column without gaps named like a target (label,
    target, churned, price, ...); else the last such column (tables often end with it)."""
    if given:
        return _given(profile, given, "label", "--label")
    candidates = [
        c
        for c in profile.columns
        if c.name not in taken and c.kind in ("integer", "float", "boolean") and c.nulls == 0
    ]
    if not candidates:
        raise GuessError("no numeric column without gaps could be the label: pass --label COL")
    named = [c for c in candidates if _LABEL_NAME.search(c.name)]
    if named:
        return Guess(named[0].name, "its name says target, numeric, no value missing")
    return Guess(
        candidates[-1].name,
        "the last numeric column without gaps (no column is named like a target: "
        "label, target, churned, price, ...)",
    )


def model_kind(label: ColumnProfile) -> tuple[str, str]:
    """``(model.kind, reason)`` for the label column; :class:`GuessError` for a label the
    platform's models cannot take (text, missing values, two values other than 0/1)."""
    if label.nulls:
        raise GuessError(
            f"label {label.name!r} is missing in {label.nulls} of {label.rows} sampled rows: "
            "every training row needs a label; drop those rows at the source or pick another "
            "column with --label"
        )
    if label.kind == "boolean" or (label.values is not None and set(label.values) <= {0, 1}):
        if label.distinct < 2:
            raise GuessError(
                f"label {label.name!r} has a single value ({label.values}) in the sample: "
                "nothing to learn; pick another column with --label"
            )
        return "tabular_classifier", f"label {label.name!r} holds two classes, 0/1"
    if not label.numeric:
        shown = label.values[:5] if label.values else "many distinct values"
        raise GuessError(
            f"label {label.name!r} holds text ({shown}): the platform trains a binary "
            "classifier (label 0/1) or a regressor (a number); map it to 0/1 or a number "
            "at the source"
        )
    if label.distinct == 2:
        raise GuessError(
            f"label {label.name!r} has two values {label.values}: a classifier's label must "
            "be 0/1; map it at the source"
        )
    return (
        "tabular_regressor",
        f"label {label.name!r} is a number with {label.distinct} distinct values "
        f"({label.minimum:g} .. {label.maximum:g})",
    )


def split_features(
    profile: TableProfile, taken: set[str]
) -> tuple[list[str], list[str], list[tuple[str, str]]]:
    """``(numeric, categorical, skipped)``: integer and float columns are numeric features,
    boolean columns and text with few distinct values categorical; ``skipped`` lists
    ``(column, reason)`` for the rest (free text, timestamps, columns without a value)."""
    numeric: list[str] = []
    categorical: list[str] = []
    skipped: list[tuple[str, str]] = []
    for col in profile.columns:
        if col.name in taken:
            continue
        if col.nulls == col.rows:
            skipped.append((col.name, "no value in the sample"))
        elif col.numeric:
            numeric.append(col.name)
        elif col.kind == "boolean":
            categorical.append(col.name)
        elif col.kind == "datetime" or col.timestamp_share >= TIMESTAMP_SHARE:
            skipped.append(
                (
                    col.name,
                    "a timestamp: the model takes numbers and categories; derive a "
                    "number from it at the source to use it",
                )
            )
        elif col.distinct > MAX_CATEGORIES or col.distinct > MAX_CATEGORY_SHARE * col.rows:
            skipped.append(
                (
                    col.name,
                    f"text with {col.distinct} distinct values in {col.rows} rows: "
                    "an id or free text, not a category",
                )
            )
        else:
            categorical.append(col.name)
    return numeric, categorical, skipped
