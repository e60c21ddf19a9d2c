"""Stage directories: fresh per try (idempotent re-runs)."""

from __future__ import annotations

from mlplatform.storage import run_key, stage_dir, to_path, to_uri


def test_stage_dir_is_emptied_on_every_try(tmp_path):
    d = stage_dir(str(tmp_path), "demo", "run1", "train")
    (d / "metrics.json").write_text("{}")
    (d / "saved_model").mkdir()
    (d / "saved_model" / "saved_model.pb").write_text("x")
    again = stage_dir(str(tmp_path), "demo", "run1", "train")
    assert again == d
    assert list(d.iterdir()) == []


def test_run_key_and_uris(tmp_path):
    assert (
        run_key("manual__2026-11-26T07:12:07.071648+00:00")
        == "manual__2026-11-26T07_12_07.071648_00_00"
    )
    assert to_path(to_uri(tmp_path / "a b.parquet")) == tmp_path / "a b.parquet"
    import pytest

    with pytest.raises(ValueError, match="unsupported storage URI scheme 's3'"):
        to_path("s3://bucket/key")
