"""Ingest (DVC) and validation (GX): real libraries on small data; bad input loses nothing."""

from __future__ import annotations

import json
import subprocess

import pandas as pd
import pytest
import yaml

from mlplatform import datagen
from mlplatform.config import load_pipeline
from mlplatform.settings import get_settings
from mlplatform.stages import StageError, ValidationFailed
from mlplatform.stages.ingest import ingest
from mlplatform.stages.validate import validate
from mlplatform.storage import stage_dir, to_path
from tests.conftest import REPO

END = pd.Timestamp("2026-06-01", tz="UTC").to_pydatetime()


@pytest.fixture
def cfg():
    return load_pipeline(REPO / "pipelines" / "demo.yaml")


def test_generator_is_seeded_and_has_knobs():
    a, b = datagen.generate(300, seed=3, end=END), datagen.generate(300, seed=3, end=END)
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(datagen.generate(300, seed=4, end=END))
    drifted = datagen.generate(3000, seed=3, end=END, drift=1.0)
    assert drifted["support_calls"].mean() > a["support_calls"].mean() + 1.5
    bad = datagen.generate(400, seed=3, end=END, bad_fraction=0.1)
    assert bad["customer_id"].isna().sum() == 10
    assert (bad["contract_type"] == "lifetime").sum() == 10


def test_ingest_versions_each_batch_with_dvc(mlp_home, tmp_path, cfg):
    settings = get_settings()
    first = datagen.write(datagen.generate(200, seed=1, end=END), tmp_path / "b1.csv")
    second = datagen.write(datagen.generate(200, seed=2, end=END), tmp_path / "b2.csv")
    r1 = ingest(cfg, str(first), stage_dir(settings.storage, "demo", "r1", "ingest"), settings)
    r2 = ingest(cfg, str(second), stage_dir(settings.storage, "demo", "r2", "ingest"), settings)
    assert r1["data_version"] != r2["data_version"] and r1["rows"] == 200
    repo = settings.dvc_repo_dir
    # the .dvc file at each commit names that batch's md5, and the DVC remote holds both objects
    for result in (r1, r2):
        dvc_file = subprocess.run(
            ["git", "-C", str(repo), "show", f"{result['data_commit']}:demo/batch.csv.dvc"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        md5 = yaml.safe_load(dvc_file)["outs"][0]["md5"]
        assert md5 == result["data_version"]
        assert (to_path(settings.dvc_remote_url) / "files" / "md5" / md5[:2] / md5[2:]).exists()
    typed = pd.read_parquet(to_path(r2["data_uri"]))
    assert str(typed["event_time"].dtype).startswith("datetime64")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("a,b\n1,2\n", "missing column(s) customer_id, event_time (has: a, b)"),
        ("customer_id,event_time\n1,yesterday\n", "1 value(s) in 'event_time' are not timestamps"),
        ("customer_id,event_time\n", "the batch has no rows"),
        ('customer_id,event_time\n1,"2026-01-01\n', "cannot parse as csv"),
    ],
)
def test_ingest_rejects_malformed_files_in_one_line(mlp_home, tmp_path, cfg, content, message):
    settings = get_settings()
    bad = tmp_path / "bad.csv"
    bad.write_text(content)
    with pytest.raises(StageError) as err:
        ingest(cfg, str(bad), stage_dir(settings.storage, "demo", "r", "ingest"), settings)
    assert message in str(err.value) and str(bad) in str(err.value)
    assert "\n" not in str(err.value)
    assert not (settings.dvc_repo_dir / "demo" / "batch.csv.dvc").exists(), (
        "a malformed batch was versioned"
    )


def test_validation_passes_and_writes_data_docs(mlp_home, tmp_path, cfg):
    settings = get_settings()
    good = tmp_path / "good.parquet"
    datagen.generate(300, seed=1, end=END).to_parquet(good)
    out = stage_dir(settings.storage, "demo", "r1", "validate")
    result = validate(cfg, good.as_uri(), "v-good", out, settings)
    # 11 of the suite + 7 of the platform (label not null, numeric features numeric (4), unique
    # (entity, time), no future times)
    assert result["validation"] == "passed" and result["evaluated"] == 18
    index = to_path(result["data_docs"])
    assert index.exists() and "demo_raw" in index.read_text()
    assert (
        json.loads((to_path(settings.storage) / "demo" / "last_validated.json").read_text())[
            "data_version"
        ]
        == "v-good"
    )


def test_validation_failure_quarantines_and_keeps_last_good(mlp_home, tmp_path, cfg, caplog):
    caplog.set_level("INFO", logger="mlplatform.stages.validate")
    settings = get_settings()
    good, bad = tmp_path / "good.parquet", tmp_path / "bad.parquet"
    datagen.generate(300, seed=1, end=END).to_parquet(good)
    datagen.generate(300, seed=1, end=END, bad_fraction=0.05).to_parquet(bad)
    validate(
        cfg,
        good.as_uri(),
        "v-good",
        stage_dir(settings.storage, "demo", "r1", "validate"),
        settings,
    )
    with pytest.raises(ValidationFailed) as err:
        validate(
            cfg,
            bad.as_uri(),
            "v-bad",
            stage_dir(settings.storage, "demo", "r2", "validate"),
            settings,
        )
    message = str(err.value)
    assert "\n" not in message
    assert "4 of 18 expectations" in message
    # the task log lists each expectation's outcome of each run, one row each
    rows = [r.getMessage() for r in caplog.records if r.getMessage().startswith("  ")]
    assert rows[0].split() == ["outcome", "expectation", "column", "unexpected"]
    bad_rows = rows[len(rows) // 2 :]
    assert len(rows) == 2 * 19 and bad_rows[0].split()[0] == "outcome"
    assert sum(row.split()[0] == "ok" for row in rows[1:19]) == 18
    failed = {tuple(row.split()[1:3]): row.split()[3] for row in bad_rows if "FAILED" in row}
    assert set(failed) == {
        ("expect_column_values_to_not_be_null", "customer_id"),
        ("expect_column_values_to_be_between", "monthly_charges"),
        ("expect_column_values_to_be_between", "tenure_months"),
        ("expect_column_values_to_be_in_set", "contract_type"),
    }
    assert all(int(count) > 0 for count in failed.values())  # the unexpected counts
    for part in (
        "expect_column_values_to_not_be_null(customer_id)",
        "expect_column_values_to_be_between(monthly_charges)",
        "expect_column_values_to_be_between(tenure_months)",
        "expect_column_values_to_be_in_set(contract_type)",
    ):
        assert part in message
    quarantine = mlp_home / "quarantine" / "demo" / "v-bad"
    assert (quarantine / "bad.parquet").exists() and (
        quarantine / "data_docs" / "index.html"
    ).exists()
    assert (
        json.loads((to_path(settings.storage) / "demo" / "last_validated.json").read_text())[
            "data_version"
        ]
        == "v-good"
    )
