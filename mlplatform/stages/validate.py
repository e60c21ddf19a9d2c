"""Validate: run the pipeline's Great Expectations suite on the ingested batch (blocking).

Contract: ``validate(cfg, data_uri, data_version, out_dir, settings)`` loads the suite
``great_expectations/expectations/<suite>.json``, runs it through a GX Checkpoint over the batch,
and writes Data Docs to ``out_dir/data_docs`` (``index.html``). On success it returns
``{"validation": "passed", "data_docs": uri, "evaluated": n}`` and records the batch as the last
validated data version. On failure it copies the batch and its Data Docs to
``<home>/quarantine/<pipeline>/<data_version>/`` and raises :class:`ValidationFailed` whose message
says in one line which expectations failed on which columns; the last validated version is kept.

Whatever the suite says, the platform adds its own protections (:func:`platform_expectations`):
the label, the entity key and the event time are never null, every numeric feature holds numbers
(a text value such as ``12,50`` is named with its column), an (entity, event time) key appears
once (ingest has already dropped exact duplicate rows, so a repeated key means conflicting
values), and no event time lies more than ``validation.future_horizon_hours`` ahead of now.
They show in the Data Docs like the suite's own expectations.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

from mlplatform.config import PipelineConfig
from mlplatform.contracts import ValidateOutput
from mlplatform.settings import Settings
from mlplatform.stages import StageError, ValidationFailed
from mlplatform.storage import to_path, to_uri

log = logging.getLogger(__name__)

#: pandas/NumPy type names a numeric feature column may have (a text value makes it ``object``)
NUMERIC_TYPES = (
    "int", "float", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "float32", "float64", "Int8", "Int16", "Int32", "Int64", "Float32", "Float64",
)  # fmt: skip


def suite_path(settings: Settings, suite: str) -> Path:
    """The file of expectation suite ``suite`` (``MLP_EXPECTATIONS_PATH``, default
    ``<repo>/great_expectations/expectations``)."""
    return settings.expectations_dir / f"{suite}.json"


def load_suite_definition(settings: Settings, suite: str) -> dict:
    path = suite_path(settings, suite)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise StageError(
            f"validate: no expectation suite {suite!r} ({path} does not exist)"
        ) from None
    except json.JSONDecodeError as exc:
        raise StageError(f"validate: {path}:{exc.lineno}: not valid JSON: {exc.msg}") from None


def platform_expectations(cfg: PipelineConfig, now: datetime | None = None) -> list[dict]:
    """The checks every batch gets on top of its suite (see the module docstring)."""
    now = now or datetime.now(UTC)
    horizon = now + timedelta(hours=cfg.validation.future_horizon_hours)
    entity, ts, label = cfg.source.entity, cfg.source.timestamp, cfg.features.label
    meta = {"notes": "added by mlplatform to every suite"}
    checks = [
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": c}, "meta": meta}
        for c in (label, entity, ts)
    ]
    checks += [
        {
            "type": "expect_column_values_to_be_in_type_list",
            "kwargs": {"column": c, "type_list": list(NUMERIC_TYPES)},
            "meta": meta,
        }
        for c in cfg.features.numeric
    ]
    checks.append(
        {
            "type": "expect_compound_columns_to_be_unique",
            "kwargs": {"column_list": [entity, ts]},
            "meta": meta,
        }
    )
    checks.append(
        {
            "type": "expect_column_values_to_be_between",
            "kwargs": {"column": ts, "max_value": horizon.isoformat()},
            "meta": meta,
        }
    )
    return checks


def with_platform_expectations(suite_def: dict, cfg: PipelineConfig) -> dict:
    """The suite plus the platform's checks it does not already hold (same type and column)."""

    def key(e: dict) -> tuple:
        kwargs = e.get("kwargs", {})
        return e["type"], kwargs.get("column"), tuple(kwargs.get("column_list") or ())

    have = {key(e) for e in suite_def.get("expectations", [])}
    extra = [e for e in platform_expectations(cfg) if key(e) not in have]
    return {**suite_def, "expectations": [*suite_def.get("expectations", []), *extra]}


def run_checkpoint(df: pd.DataFrame, suite_def: dict, docs_dir: Path):
    """Run GX 1.x on a DataFrame with an ephemeral context; returns the CheckpointResult."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    # GX logs ~200 INFO lines of its own set-up per context: keep the task log readable
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    from great_expectations.data_context.types.base import ProgressBarsConfig

    import great_expectations as gx

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    suite = context.suites.add(gx.ExpectationSuite(**suite_def))
    batch = (
        context.data_sources.add_pandas("raw")
        .add_dataframe_asset("batch")
        .add_batch_definition_whole_dataframe("whole")
    )
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=f"{suite.name}_validation", data=batch, suite=suite)
    )
    context.add_data_docs_site(
        site_name="run",
        site_config={
            "class_name": "SiteBuilder",
            "store_backend": {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": str(docs_dir),
            },
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        },
    )
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(
            name=f"{suite.name}_checkpoint",
            validation_definitions=[definition],
            actions=[gx.checkpoint.UpdateDataDocsAction(name="data_docs", site_names=["run"])],
            result_format={"result_format": "SUMMARY"},
        )
    )
    return checkpoint.run(batch_parameters={"dataframe": df})


def _not_numbers(column: pd.Series) -> str:
    """``: n value(s) are not numbers, e.g. [...]`` for a text column meant to be numeric."""
    bad = column[pd.to_numeric(column, errors="coerce").isna() & column.notna()]
    return f": {len(bad)} value(s) are not numbers, e.g. {sorted({str(v) for v in bad})[:3]}"


def describe_failures(result, df: pd.DataFrame | None = None) -> list[str]:
    """``expect_x(column): n unexpected, e.g. [...]`` for each failed expectation.

    With the batch ``df``, a numeric column holding text is described by the values that are not
    numbers, and the other failures of that column that could not even be evaluated (a range
    check on text) are left out: the type is the one thing to fix."""
    failures: list[tuple[str, str | None, bool]] = []  # (line, column, evaluated)
    for run in result.run_results.values():
        for r in run.results:
            if r.success:
                continue
            cfg = r.expectation_config
            columns = cfg.kwargs.get("column_list") or [cfg.kwargs.get("column")]
            where = f"({', '.join(map(str, columns))})" if columns != [None] else ""
            count = (r.result or {}).get("unexpected_count")
            sample = (r.result or {}).get("partial_unexpected_list") or []
            sample_txt = f", e.g. {sorted({str(s) for s in sample})[:3]}" if sample else ""
            detail = f": {count} unexpected{sample_txt}" if count is not None else ""
            column = cfg.kwargs.get("column")
            typed = cfg.type == "expect_column_values_to_be_in_type_list"
            if typed and df is not None and column in df.columns:
                detail = _not_numbers(df[column])
            failures.append((f"{cfg.type}{where}{detail}", column if typed else None, bool(detail)))
    mistyped = {column for _, column, _ in failures if column}
    return [
        line
        for line, _, evaluated in failures
        if evaluated or not any(f"({c})" in line for c in mistyped)
    ]


def expectation_table(result) -> str:
    """Each expectation's outcome, one row each (``outcome``, ``expectation``, ``column``,
    ``unexpected``: count and percent where GX reports them), as a fixed-width text table for the
    task log."""
    rows = []
    for run in result.run_results.values():
        for r in run.results:
            cfg = r.expectation_config
            columns = cfg.kwargs.get("column_list") or [cfg.kwargs.get("column")]
            stats = r.result or {}
            count = stats.get("unexpected_count")
            percent = stats.get("unexpected_percent")
            unexpected = "" if count is None else str(count)
            if count and percent is not None:
                unexpected += f" ({percent:.2g}%)"
            rows.append(
                {
                    "outcome": "ok" if r.success else "FAILED",
                    "expectation": cfg.type,
                    "column": ", ".join(str(c) for c in columns if c is not None) or "-",
                    "unexpected": unexpected or "-",
                }
            )
    if not rows:
        return "(no expectations)"
    # left-aligned by hand: pandas' to_string right-aligns text cells, which scatters names
    widths = {key: max(len(key), *(len(row[key]) for row in rows)) for key in rows[0]}
    lines = [{key: key for key in widths}, *rows]
    return "\n".join(
        "  ".join(row[key].ljust(width) for key, width in widths.items()).rstrip() for row in lines
    )


def mark_validated(
    cfg: PipelineConfig, settings: Settings, data_version: str, data_uri: str
) -> None:
    """Record ``data_version`` as the pipeline's last validated batch (``last_validated.json``)."""
    marker = to_path(settings.storage) / cfg.name / "last_validated.json"
    marker.write_text(json.dumps({"data_version": data_version, "data_uri": data_uri}))


def validate(
    cfg: PipelineConfig, data_uri: str, data_version: str, out_dir: Path, settings: Settings
) -> ValidateOutput:
    """Run the validation stage (see module docstring)."""
    suite_def = with_platform_expectations(
        load_suite_definition(settings, cfg.validation.suite), cfg
    )
    data_path = to_path(data_uri)
    df = pd.read_parquet(data_path)
    docs_dir = out_dir / "data_docs"
    result = run_checkpoint(df, suite_def, docs_dir)
    docs_uri = to_uri(docs_dir / "index.html")
    stats = next(iter(result.run_results.values())).statistics
    log.info("expectations of suite %r on %d rows:", cfg.validation.suite, len(df))
    for row in expectation_table(result).splitlines():  # one record a row: aligned in the UI
        log.info("  %s", row)
    if result.success:
        mark_validated(cfg, settings, data_version, data_uri)
        log.info(
            "validation passed: %s expectations on %d rows",
            stats["evaluated_expectations"],
            len(df),
        )
        return {
            "validation": "passed",
            "data_docs": docs_uri,
            "evaluated": stats["evaluated_expectations"],
        }

    quarantine = settings.home_dir / "quarantine" / cfg.name / (data_version or "unversioned")
    if quarantine.exists():
        shutil.rmtree(quarantine)
    quarantine.mkdir(parents=True)
    shutil.copyfile(data_path, quarantine / data_path.name)
    shutil.copytree(docs_dir, quarantine / "data_docs")
    failures = describe_failures(result, df)
    failed = stats.get("unsuccessful_expectations", len(failures))
    hidden = (
        f" ({failed - len(failures)} more not evaluable on text)" if failed > len(failures) else ""
    )
    raise ValidationFailed(
        f"validation failed: {failed} of {stats['evaluated_expectations']} expectations in suite "
        f"{cfg.validation.suite!r}: {'; '.join(failures)}{hidden} — batch quarantined at {quarantine}, "
        f"Data Docs {to_uri(quarantine / 'data_docs' / 'index.html')}"
    )
