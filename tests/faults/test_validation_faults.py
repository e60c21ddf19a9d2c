"""Validation protects the label and the keys by default, whatever the suite forgot.

Each batch here passed the demo suite before (GX's ``in_set`` ignores nulls, nothing checked the
keys): a NaN label then became the "last validated" batch and failed training twice.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from mlplatform import datagen
from mlplatform.config import load_pipeline
from mlplatform.settings import get_settings
from mlplatform.stages import ValidationFailed
from mlplatform.stages.ingest import ingest
from mlplatform.stages.validate import validate
from mlplatform.storage import stage_dir, to_path
from tests.conftest import REPO

END = pd.Timestamp("2026-06-01", tz="UTC").to_pydatetime()


@pytest.fixture
def cfg():
    return load_pipeline(REPO / "pipelines" / "demo.yaml")


def _ingest_and_validate(cfg, df: pd.DataFrame, tmp_path, run: str):
    settings = get_settings()
    path = tmp_path / f"{run}.csv"
    df.to_csv(path, index=False)
    ingested = ingest(cfg, str(path), stage_dir(settings.storage, "demo", run, "ingest"), settings)
    out = stage_dir(settings.storage, "demo", run, "validate")
    return ingested, lambda: validate(
        cfg, ingested["data_uri"], ingested["data_version"], out, settings
    )


def _marker(settings):
    path = to_path(settings.storage) / "demo" / "last_validated.json"
    return json.loads(path.read_text()) if path.exists() else None


def _nan_label(df):
    df.loc[[3, 9], "churned"] = np.nan
    return df


def _null_entity(df):
    df["customer_id"] = df["customer_id"].astype("Int64")
    df.loc[[5], "customer_id"] = pd.NA
    return df


def _conflicting_duplicate(df):
    dup = df.iloc[[7]].copy()
    dup["churned"] = 1 - dup["churned"]
    return pd.concat([df, dup], ignore_index=True)


def _future_time(df):
    df["event_time"] = pd.to_datetime(df["event_time"], utc=True)
    df.loc[[2], "event_time"] = datetime.now(UTC) + timedelta(days=3)
    return df


@pytest.mark.parametrize(
    ("corrupt", "expected"),
    [
        (_nan_label, "expect_column_values_to_not_be_null(churned): 2 unexpected"),
        (_null_entity, "expect_column_values_to_not_be_null(customer_id): 1 unexpected"),
        (
            _conflicting_duplicate,
            "expect_compound_columns_to_be_unique(customer_id, event_time): 2 unexpected",
        ),
        (_future_time, "expect_column_values_to_be_between(event_time): 1 unexpected"),
    ],
    ids=["nan-label", "null-entity", "conflicting-duplicate-key", "future-timestamp"],
)
def test_bad_keys_and_labels_are_refused_and_the_marker_stays(
    mlp_home, tmp_path, cfg, corrupt, expected
):
    settings = get_settings()
    good, run_good = _ingest_and_validate(
        cfg, datagen.generate(300, seed=1, end=END), tmp_path, "good"
    )
    run_good()
    before = _marker(settings)
    assert before["data_version"] == good["data_version"]

    bad = corrupt(datagen.generate(300, seed=2, end=END))
    ingested, run_bad = _ingest_and_validate(cfg, bad, tmp_path, "bad")
    with pytest.raises(ValidationFailed) as err:
        run_bad()
    message = str(err.value)
    assert expected in message and "\n" not in message
    assert _marker(settings) == before, "the last-validated marker moved onto a failed batch"
    assert (settings.home_dir / "quarantine" / "demo" / ingested["data_version"]).is_dir()


def test_exact_duplicate_rows_are_kept_once_and_counted(mlp_home, tmp_path, cfg):
    df = datagen.generate(300, seed=3, end=END)
    doubled = pd.concat([df, df.iloc[:12]], ignore_index=True)
    ingested, run = _ingest_and_validate(cfg, doubled, tmp_path, "dups")
    assert ingested["duplicates_dropped"] == 12 and ingested["rows"] == 300
    assert run()["validation"] == "passed"


def test_the_future_horizon_is_configurable(mlp_home, tmp_path, cfg):
    cfg = cfg.model_copy(
        update={"validation": cfg.validation.model_copy(update={"future_horizon_hours": 24 * 7})}
    )
    _, run = _ingest_and_validate(
        cfg, _future_time(datagen.generate(300, seed=4, end=END)), tmp_path, "ahead"
    )
    assert run()["validation"] == "passed"
