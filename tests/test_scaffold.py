"""`mlplatform init`: profiling, guessing, suite drafting and writing (fast: no Airflow run,
no TensorFlow). The DagBag sees a scaffolded pipeline's DAGs; a drafted suite passes GX on its
own table and fails a bad batch. The whole path to a served model: test_init_end_to_end.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from mlplatform.config import ConfigError, load_pipeline, parse_pipeline
from mlplatform.scaffold import guess, pipeline
from mlplatform.scaffold.profile import profile_frame, profile_table
from mlplatform.scaffold.suite import draft_suite
from mlplatform.settings import Settings
from tests import scaffold_tables
from tests.cli_inprocess import CliResult, run_cli
from tests.conftest import REPO


@pytest.fixture
def scaffold_env(mlp_home, pipelines_dir, tmp_path, monkeypatch) -> Settings:
    """A home, a copy of pipelines/ and an empty suites directory (MLP_EXPECTATIONS_PATH)."""
    suites = tmp_path / "expectations"
    suites.mkdir()
    for suite in (REPO / "great_expectations" / "expectations").glob("*.json"):
        (suites / suite.name).write_text(suite.read_text())
    monkeypatch.setenv("MLP_EXPECTATIONS_PATH", str(suites))
    return Settings()


def _cli(*args: str) -> CliResult:
    return run_cli(*args, cwd=REPO)


# --------------------------------------------------------------------------- profile


def test_profile_reads_csv_and_parquet_alike(scaffold_env, tmp_path):
    table = scaffold_tables.rents(300)
    table.to_csv(tmp_path / "r.csv", index=False)
    table.to_parquet(tmp_path / "r.parquet", index=False)
    for name in ("r.csv", "r.parquet"):
        prof = profile_table(str(tmp_path / name), scaffold_env, sample_rows=200)
        assert prof.rows == 200 and not prof.complete
        district = prof.column("district")
        assert district.kind == "text" and district.nulls > 0
        assert district.values == sorted(v for v in set(table["district"][:200]) if v)
        assert prof.column("rooms").kind == "integer"
        assert prof.column("floor area").kind == "float"
        assert prof.column("listed_at").timestamp_share == 1.0
        assert prof.column("listing_id").timestamp_share == 0.0


def test_profile_reads_a_sql_source(scaffold_env, tmp_path):
    import sqlite3

    db = tmp_path / "app.db"
    with sqlite3.connect(db) as conn:
        scaffold_tables.churn(50).to_sql("activity", conn, index=False)
    prof = profile_table(f"sql+sqlite:///{db}?query=SELECT%20*%20FROM%20activity", scaffold_env)
    assert prof.rows == 50 and prof.complete
    assert prof.column("churned").values == [0, 1]


def test_profile_integers_with_gaps_stay_integers():
    prof = profile_frame(pd.DataFrame({"n": [1, None, 3, 4], "x": [0.5, 1.5, None, 2.0]}))
    assert prof.column("n").kind == "integer" and prof.column("n").nulls == 1
    assert prof.column("x").kind == "float"
    assert prof.column("n").values == [1, 3, 4]


# --------------------------------------------------------------------------- guesses


def test_guesses_roles_by_name_and_says_why():
    prof = profile_frame(scaffold_tables.churn())
    ts = guess.guess_timestamp(prof)
    assert ts.column == "event_time" and "signup_date" in ts.reason and not ts.given
    ent = guess.guess_entity(prof, {ts.column})
    assert ent.column == "customer_id" and "id" in ent.reason
    lab = guess.guess_label(prof, {ts.column, ent.column})
    assert lab.column == "churned" and "target" in lab.reason
    numeric, categorical, skipped = guess.split_features(
        prof, {"event_time", "customer_id", "churned"}
    )
    assert numeric == ["usage"] and categorical == ["plan"]
    assert dict(skipped).keys() == {"signup_date", "comment"}
    assert "free text" in dict(skipped)["comment"]


def test_guess_falls_back_to_the_last_numeric_column_and_most_distinct_key():
    frame = pd.DataFrame(
        {
            "when": pd.date_range("2026-01-01", periods=6, freq="h", tz="UTC"),
            "who": ["a", "b", "c", "d", "e", "f"],
            "group": ["x", "x", "y", "y", "x", "y"],
            "a": [1.0, 2, 3, 4, 5, 6],
            "b": [0.1, 0.2, 0.3, 0.1, 0.2, 0.5],
        }
    )
    prof = profile_frame(frame)
    assert guess.guess_timestamp(prof).column == "when"
    ent = guess.guess_entity(prof, {"when"})
    assert ent.column == "who" and "most distinct" in ent.reason
    lab = guess.guess_label(prof, {"when", "who"})
    assert lab.column == "b" and "last numeric" in lab.reason


def test_an_id_like_name_beats_more_distinct_values():
    frame = pd.DataFrame({"paid": [10, 20, 30, 40], "accountId": ["a", "a", "b", "b"]})
    ent = guess.guess_entity(profile_frame(frame), set())
    assert ent.column == "accountId" and "looks like an id" in ent.reason


def test_given_flags_win_and_unknown_columns_are_named():
    prof = profile_frame(scaffold_tables.churn(20))
    assert guess.guess_label(prof, set(), "usage").given
    with pytest.raises(guess.GuessError, match=r"--label nope: no such column \(has: customer_id"):
        guess.guess_label(prof, set(), "nope")


def test_no_timestamp_column_asks_for_the_flag():
    prof = profile_frame(pd.DataFrame({"id": [1, 2], "y": [0, 1]}))
    with pytest.raises(guess.GuessError, match="pass --timestamp COL"):
        guess.guess_timestamp(prof)


@pytest.mark.parametrize(
    ("values", "kind"),
    [
        ([0, 1, 1, 0], "tabular_classifier"),
        ([True, False, True, True], "tabular_classifier"),
        ([1.5, 2.0, 7.25, 3.0], "tabular_regressor"),
        ([1, 2, 3, 4], "tabular_regressor"),
    ],
)
def test_model_kind_follows_the_label(values, kind):
    assert guess.model_kind(profile_frame(pd.DataFrame({"y": values})).column("y"))[0] == kind


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        (["yes", "no", "yes", "no"], "holds text"),
        ([1, 2, 1, 2], "must be 0/1"),
        ([0.5, None, 1.0, 2.0], "is missing in 1 of 4"),
        ([1, 1, 1, 1], "single value"),
    ],
)
def test_model_kind_refuses_labels_the_models_cannot_take(values, problem):
    with pytest.raises(guess.GuessError, match=problem):
        guess.model_kind(profile_frame(pd.DataFrame({"y": values})).column("y"))


# --------------------------------------------------------------------------- suite


def _by(suite: dict, kind: str, column: str) -> dict:
    (found,) = [
        e["kwargs"]
        for e in suite["expectations"]
        if e["type"] == f"expect_{kind}" and e["kwargs"].get("column") == column
    ]
    return found


def test_drafted_suite_has_types_nulls_ranges_value_sets_and_row_count():
    table = scaffold_tables.rents(1000).rename(
        columns={"floor area": "floor_area", "building age": "building_age"}
    )
    prof = profile_frame(table, "rents.csv")
    suite = draft_suite(
        "rents_raw", prof, entity="listing_id", timestamp="listed_at", label="monthly_rent",
        numeric=["floor_area", "rooms", "building_age"], categorical=["district"],
        kind="tabular_regressor",
    )  # fmt: skip
    assert suite["name"] == "rents_raw"
    gaps = table["district"].isna().mean()
    assert 0 < _by(suite, "column_values_to_not_be_null", "district")["mostly"] <= 1 - gaps
    assert "mostly" not in _by(suite, "column_values_to_not_be_null", "rooms")
    assert _by(suite, "column_values_to_be_in_set", "district")["value_set"] == sorted(
        scaffold_tables.DISTRICTS
    )
    area = _by(suite, "column_values_to_be_between", "floor_area")
    assert 0 <= area["min_value"] <= table["floor_area"].min()
    assert area["max_value"] >= table["floor_area"].max()
    rooms = _by(suite, "column_values_to_be_between", "rooms")
    assert isinstance(rooms["min_value"], int) and isinstance(rooms["max_value"], int)
    assert "int64" in _by(suite, "column_values_to_be_in_type_list", "rooms")["type_list"]
    assert _by(suite, "table_row_count_to_be_between", None)["min_value"] == 100
    columns = _by(suite, "table_columns_to_match_set", None)["column_set"]
    assert set(columns) == set(table.columns)


# --------------------------------------------------------------------------- plan and write


def test_plan_renames_unusable_names_and_drafts_a_regressor(scaffold_env, tmp_path):
    data = tmp_path / "rents.csv"
    scaffold_tables.rents(500).to_csv(data, index=False)
    plan = pipeline.plan("rents", str(data), scaffold_env)
    cfg = parse_pipeline(plan.yaml_text)
    assert cfg.source.rename == {"floor area": "floor_area", "building age": "building_age"}
    assert (cfg.source.entity, cfg.source.timestamp) == ("listing_id", "listed_at")
    assert cfg.features.label == "monthly_rent"
    assert cfg.model.kind == "tabular_regressor" and cfg.gate.metric == "rmse"
    std = scaffold_tables.rents(500)["monthly_rent"].std(ddof=0)
    assert std <= cfg.gate.max <= std * 1.01  # a ceiling: the rmse of predicting the mean
    assert cfg.features.numeric == ["floor_area", "rooms", "building_age"]
    assert cfg.features.categorical == ["district"]
    assert cfg.source.uri == str(data)
    assert set(plan.example) == {"floor_area", "rooms", "building_age", "district"}
    assert any(n.startswith("label: monthly_rent (guessed: the last numeric") for n in plan.notes)


def test_plan_takes_flags_by_source_or_platform_name(scaffold_env, tmp_path):
    data = tmp_path / "rents.parquet"
    scaffold_tables.rents(300).to_parquet(data, index=False)
    plan = pipeline.plan("r2", str(data), scaffold_env, label="floor area", entity="listing_id")
    cfg = parse_pipeline(plan.yaml_text)
    assert cfg.features.label == "floor_area" and cfg.source.format == "parquet"
    assert "monthly_rent" in cfg.features.numeric
    assert any(n.startswith("label: floor_area (given") for n in plan.notes)


def test_classifier_plan_gets_an_auc_floor(scaffold_env, tmp_path):
    data = tmp_path / "churn.csv"
    scaffold_tables.churn().to_csv(data, index=False)
    cfg = parse_pipeline(pipeline.plan("churn_x", str(data), scaffold_env).yaml_text)
    assert cfg.model.kind == "tabular_classifier"
    assert (cfg.gate.metric, cfg.gate.min) == ("auc", pipeline.CLASSIFIER_AUC_FLOOR)


def test_bad_names_are_refused(scaffold_env, tmp_path):
    data = tmp_path / "churn.csv"
    scaffold_tables.churn(20).to_csv(data, index=False)
    with pytest.raises(pipeline.ScaffoldError, match="not a pipeline name"):
        pipeline.plan("Churn-1", str(data), scaffold_env)


def test_write_refuses_to_overwrite_without_force(scaffold_env, tmp_path):
    data = tmp_path / "churn.csv"
    scaffold_tables.churn().to_csv(data, index=False)
    plan = pipeline.plan("churn_w", str(data), scaffold_env)
    yaml_path, suite_path = pipeline.write(plan, scaffold_env)
    assert load_pipeline(yaml_path).validation.suite == "churn_w_raw"
    assert json.loads(suite_path.read_text())["name"] == "churn_w_raw"
    yaml_path.write_text(yaml_path.read_text() + "# my edit\n")
    with pytest.raises(pipeline.ScaffoldError, match="already exist.*--force"):
        pipeline.write(plan, scaffold_env)
    assert yaml_path.read_text().endswith("# my edit\n")
    pipeline.write(plan, scaffold_env, force=True)
    assert not yaml_path.read_text().endswith("# my edit\n")


def test_cli_init_then_check(scaffold_env, tmp_path):
    data = tmp_path / "rents.csv"
    scaffold_tables.rents(400).to_csv(data, index=False)
    out = _cli("init", "flats", "--data", str(data))
    assert out.returncode == 0, out.stderr
    assert "rename: 'floor area' -> 'floor_area'" in out.stdout
    assert "entity: listing_id (guessed:" in out.stdout
    assert "mlplatform run flats" in out.stdout and "mlplatform predict flats --json" in out.stdout
    check = _cli("check", "flats")
    assert check.returncode == 0, check.stderr
    assert "flats: config ok" in check.stdout
    again = _cli("init", "flats", "--data", str(data))
    assert again.returncode == 2 and "--force" in again.stderr
    assert again.stderr.count("\n") == 1


def test_cli_init_errors_are_one_line(scaffold_env, tmp_path):
    missing = _cli("init", "x", "--data", str(tmp_path / "nope.csv"))
    assert missing.returncode == 2 and "no such file" in missing.stderr
    text = tmp_path / "t.csv"
    pd.DataFrame(
        {"id": [1, 2, 3], "t": ["2026-01-01"] * 3, "f": [1.0, 2, 3], "y": ["a", "b", "a"]}
    ).to_csv(text, index=False)
    out = _cli("init", "x", "--data", str(text), "--label", "y")
    assert out.returncode == 2, out.stdout
    assert out.stderr.strip() == (
        "mlplatform: error: init x: label 'y' holds text (['a', 'b']): the platform trains a "
        "binary classifier (label 0/1) or a regressor (a number); map it to 0/1 or a number "
        "at the source"
    )
    assert not (Settings().pipelines_dir / "x.yaml").exists()


# --------------------------------------------------------------------------- rename at read


def test_source_rename_applies_when_a_batch_is_read(scaffold_env, tmp_path):
    from mlplatform import sources

    data = tmp_path / "rents.csv"
    scaffold_tables.rents(50).to_csv(data, index=False)
    cfg = parse_pipeline(pipeline.plan("rr", str(data), scaffold_env).yaml_text)
    source = sources.resolve(str(data), cfg, scaffold_env, tmp_path / "staging")
    (chunk,) = list(sources.read_chunks(source, 1000))
    assert {"floor_area", "building_age"} <= set(chunk.frame.columns)
    assert "floor area" not in chunk.frame.columns


def test_rename_targets_must_be_usable_and_distinct():
    base = (REPO / "pipelines" / "demo.yaml").read_text()
    bad = base.replace("  format: csv\n", '  format: csv\n  rename: {"a b": "c d"}\n')
    with pytest.raises(ConfigError, match=r"source\.rename: .*'c d' cannot be used"):
        parse_pipeline(bad)
    twice = base.replace("  format: csv\n", '  format: csv\n  rename: {"a b": x, "a.b": x}\n')
    with pytest.raises(ConfigError, match="same name"):
        parse_pipeline(twice)


# --------------------------------------------------------------------------- Airflow and GX


def test_scaffolded_pipeline_dags_appear_in_the_dagbag(scaffold_env, tmp_path):
    data = tmp_path / "rents.csv"
    scaffold_tables.rents(300).to_csv(data, index=False)
    pipeline.write(pipeline.plan("flats", str(data), scaffold_env), scaffold_env)
    probe = (
        "import json, sys\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        "bag = DagBag(dag_folder=sys.argv[1])\n"
        "print(json.dumps({'errors': list(bag.import_errors), 'ids': sorted(bag.dag_ids)}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, str(REPO / "dags")],
        capture_output=True, text=True, cwd=REPO, timeout=300,
        env={**os.environ, "AIRFLOW__CORE__LOAD_EXAMPLES": "False"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["errors"] == []
    for dag in ("train", "rollback", "score", "monitor", "ingest"):
        assert f"mlp_flats_{dag}" in result["ids"]
    assert "mlp_flats_invalid" not in result["ids"]


def test_drafted_suite_passes_its_table_and_fails_a_bad_batch(scaffold_env, tmp_path):
    from mlplatform.stages import ValidationFailed
    from mlplatform.stages.ingest import ingest
    from mlplatform.stages.validate import validate

    data = tmp_path / "rents.csv"
    table = scaffold_tables.rents(400)
    table.to_csv(data, index=False)
    yaml_path, _ = pipeline.write(pipeline.plan("flats", str(data), scaffold_env), scaffold_env)
    cfg = load_pipeline(yaml_path)
    (Path(scaffold_env.storage) / "flats").mkdir(parents=True)  # a run's start makes it
    good = ingest(cfg, str(data), tmp_path / "in1", scaffold_env)
    passed = validate(cfg, good["data_uri"], good["data_version"], tmp_path / "v1", scaffold_env)
    assert passed["validation"] == "passed"

    bad = table.copy()
    bad.loc[:5, "district"] = "atlantis"
    bad.loc[6:9, "floor area"] = -500.0
    bad["listed_at"] = pd.to_datetime(bad["listed_at"]) + pd.Timedelta(seconds=1)
    bad.to_csv(tmp_path / "bad.csv", index=False)
    out = ingest(cfg, str(tmp_path / "bad.csv"), tmp_path / "in2", scaffold_env)
    with pytest.raises(ValidationFailed) as failed:
        validate(cfg, out["data_uri"], out["data_version"], tmp_path / "v2", scaffold_env)
    assert "expect_column_values_to_be_in_set(district)" in str(failed.value)
    assert "expect_column_values_to_be_between(floor_area)" in str(failed.value)
