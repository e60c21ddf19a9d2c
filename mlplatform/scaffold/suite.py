"""Draft a Great Expectations suite (GX 1.x JSON, as ``great_expectations/expectations/*.json``)
from a table's profile.

Contract: :func:`draft_suite` returns the suite as a dict for the columns the pipeline uses
(platform names, after ``source.rename``):

* the table's columns (``expect_table_columns_to_match_set``, extra columns allowed) and a row
  count of at least ``min(MIN_ROWS, sampled rows)``;
* per column: not null; with ``mostly`` (the sample's non-null share less ``NULL_SLACK``,
  rounded down to a hundredth) where the sample has gaps;
* types: numbers for numeric columns (the types ingest hands on);
* ranges for numeric features: the sample's minimum and maximum widened by ``RANGE_SLACK`` of
  their span on each side (never below 0 for a column without negative values);
* value sets for columns with at most ``MAX_VALUE_SET`` distinct values (text and boolean
  features, a classifier's label).

Every drafted expectation has ``meta.notes`` saying what in the sample it comes from, so a
reviewer knows what to tighten. The sample is a draft's only evidence: a wider range, a new
category or more gaps in a later batch fail validation until the suite is edited.
"""

from __future__ import annotations

import math

from mlplatform.scaffold.profile import ColumnProfile, TableProfile
from mlplatform.stages.validate import NUMERIC_TYPES

#: drafted row-count floor (or the sample's rows when fewer)
MIN_ROWS = 100
#: a column with a gap in the sample may have this much larger a share of nulls in a batch
NULL_SLACK = 0.05
#: ranges are widened by this share of the sampled span on each side
RANGE_SLACK = 0.1
#: columns with at most this many distinct values get a value set
MAX_VALUE_SET = 20


def _expectation(kind: str, notes: str, **kwargs: object) -> dict:
    return {"type": f"expect_{kind}", "kwargs": kwargs, "meta": {"notes": notes}}


def _not_null(col: ColumnProfile) -> dict:
    if not col.nulls:
        return _expectation(
            "column_values_to_not_be_null", "no value missing in the sample", column=col.name
        )
    present = 1.0 - col.null_share
    mostly = max(0.0, math.floor((present - NULL_SLACK) * 100) / 100)
    return _expectation(
        "column_values_to_not_be_null",
        f"{col.nulls} of {col.rows} sampled values missing ({col.null_share:.1%})",
        column=col.name,
        mostly=mostly,
    )


def _number(value: float, integer: bool) -> float | int:
    return int(math.floor(value)) if integer else round(value, 6)


def _range(col: ColumnProfile) -> dict:
    assert col.minimum is not None and col.maximum is not None
    span = col.maximum - col.minimum or abs(col.maximum) or 1.0
    low = col.minimum - RANGE_SLACK * span
    high = col.maximum + RANGE_SLACK * span
    if col.minimum >= 0:
        low = max(0.0, low)
    integer = col.kind == "integer"
    return _expectation(
        "column_values_to_be_between",
        f"sampled {col.minimum:g} .. {col.maximum:g}, widened by {RANGE_SLACK:.0%} of the span",
        column=col.name,
        min_value=_number(low, integer),
        max_value=-_number(-high, integer) if integer else round(high, 6),
    )


def _value_set(col: ColumnProfile) -> dict:
    assert col.values is not None
    values = [bool(v) if col.kind == "boolean" else v for v in col.values]
    return _expectation(
        "column_values_to_be_in_set",
        f"the {len(values)} distinct values of the sample",
        column=col.name,
        value_set=values,
    )


def draft_suite(
    name: str,
    profile: TableProfile,
    *,
    entity: str,
    timestamp: str,
    label: str,
    numeric: list[str],
    categorical: list[str],
    kind: str,
) -> dict:
    """The drafted suite ``name`` (see the module doc)."""
    rows = "the whole table" if profile.complete else f"a sample of {profile.rows} rows"
    expectations = [
        _expectation(
            "table_columns_to_match_set",
            "the columns the pipeline uses; other columns may come and go",
            column_set=[entity, timestamp, *numeric, *categorical, label],
            exact_match=False,
        ),
        _expectation(
            "table_row_count_to_be_between",
            f"{profile.rows} rows sampled",
            min_value=min(MIN_ROWS, profile.rows),
        ),
    ]
    for column in (entity, timestamp, *numeric, *categorical, label):
        col = profile.column(column)
        expectations.append(_not_null(col))
        if col.numeric and column != entity:
            expectations.append(
                _expectation(
                    "column_values_to_be_in_type_list",
                    f"{col.kind} in the sample",
                    column=column,
                    type_list=list(NUMERIC_TYPES),
                )
            )
        if column in numeric and col.minimum is not None:
            expectations.append(_range(col))
        few = col.values is not None and len(col.values) <= MAX_VALUE_SET
        is_class_label = column == label and kind == "tabular_classifier"
        if few and (column in categorical or is_class_label):
            expectations.append(_value_set(col))
        if column == label and kind == "tabular_regressor" and col.minimum is not None:
            expectations.append(_range(col))
    return {
        "name": name,
        "meta": {
            "notes": f"Drafted by `mlplatform init` from {rows} of {profile.source}; review the "
            "ranges and value sets: a later batch outside them fails validation (blocking)."
        },
        "expectations": expectations,
    }
