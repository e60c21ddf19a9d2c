"""``mlplatform check`` catches before a run what can be known before a run (issue 13, item 2).

One test per rule, each through the command line in-process (``mlplatform.cli.main.main``):
the exit code and the ``file:line: field: problem`` lines it prints.
"""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from mlplatform import datagen
from mlplatform.cli.main import main
from tests.conftest import REPO

SUITE = REPO / "great_expectations" / "expectations" / "demo_raw.json"


@pytest.fixture
def env(mlp_home, pipelines_dir, tmp_path, monkeypatch):
    """The demo pipeline in an editable copy, its suite in an editable copy, and a clean batch."""
    suite = tmp_path / "suites" / "demo_raw.json"
    suite.parent.mkdir()
    shutil.copy(SUITE, suite)
    monkeypatch.setattr(
        "mlplatform.stages.validate.suite_path",
        lambda _settings, name: suite.parent / f"{name}.json",
    )
    batch = datagen.write(datagen.generate(300, seed=3), tmp_path / "batch.csv")
    return pipelines_dir / "demo.yaml", suite, batch


def check(capsys, *args: str) -> tuple[int, str, list[str]]:
    """Run ``mlplatform check`` in-process: (exit code, stdout, error lines without prefix)."""
    code = main(["check", *args])
    out, err = capsys.readouterr()
    lines = err.strip().removeprefix("mlplatform: error: ").splitlines() if err.strip() else []
    return code, out, lines


def edit(path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new))


def write_batch(path, frame: pd.DataFrame):
    frame.to_csv(path, index=False)
    return path


def test_a_good_pipeline_and_batch_pass_and_the_gate_is_spelled_out(env, capsys):
    config, _, batch = env
    code, out, errors = check(capsys, "demo", "--data", str(batch))
    assert (code, errors) == (0, [])
    assert "gate: auc >= 0.7 (a floor: higher is better)" in out
    assert f"300 sampled rows of {batch} have every column" in out


def test_every_field_is_checked_with_its_line(env, capsys):
    config, _, _ = env
    edit(config, "epochs: 4", "epochs: 0")
    code, _, errors = check(capsys, "demo")
    assert code == 2
    assert errors == [
        f"{config}:21: model.epochs: Input should be greater than or equal to 1 (got 0)"
    ]


def test_a_feature_missing_from_the_data_names_the_nearest_column(env, capsys, tmp_path):
    config, suite, _ = env
    frame = datagen.generate(200, seed=4).rename(columns={"monthly_charges": "Monthly Charges"})
    batch = write_batch(tmp_path / "renamed.csv", frame)
    code, _, errors = check(capsys, "demo", "--data", str(batch))
    assert code == 2
    # once, at the config line (the suite's table column set names it too)
    assert errors == [
        f"{config}:15: features.numeric.1: 'monthly_charges' is not a column of {batch} "
        "(did you mean 'Monthly Charges'?)"
    ]


def test_a_suite_table_column_the_data_lacks_points_into_the_suite(env, capsys):
    config, suite, batch = env
    edit(suite, '"region", "churned"]', '"region", "churned", "signup_channel"]')
    code, _, errors = check(capsys, "demo", "--data", str(batch))
    assert code == 2
    assert errors == [
        f"{suite}:5: expectations[0].kwargs.column_set: 'signup_channel' is not a column of the "
        "data sample"
    ]


def test_the_data_sample_comes_from_source_uri_when_it_is_not_a_template(env, capsys, tmp_path):
    config, _, _ = env
    frame = datagen.generate(200, seed=5).drop(columns=["region"])
    batch = write_batch(tmp_path / "no_region.csv", frame)
    edit(
        config,
        '"{{ mlp_home }}/landing/demo/{{ data_interval_start | ds }}/*.csv"',
        json.dumps(str(batch)),
    )
    code, _, errors = check(capsys, "demo")
    assert code == 2
    assert errors == [f"{config}:16: features.categorical.1: 'region' is not a column of {batch}"]


def test_a_suite_column_the_pipeline_does_not_declare_is_refused(env, capsys):
    config, suite, batch = env
    edit(suite, '"column": "region"', '"column": "regoin"')
    code, _, errors = check(capsys, "demo", "--data", str(batch))
    assert code == 2
    line = next(n for n, text in enumerate(suite.read_text().splitlines(), 1) if '"regoin"' in text)
    assert errors == [
        f"{suite}:{line}: expectations[9].kwargs.column: expect_column_values_to_be_in_set: "
        "'regoin' is not a column the pipeline declares (entity, timestamp, label, features) "
        "nor a column of the data sample (did you mean 'region'?)"
    ]


def test_the_suite_table_columns_must_list_every_feature(env, capsys):
    config, suite, _ = env
    edit(suite, '"usage_minutes", "contract_type"', '"contract_type"')
    code, _, errors = check(capsys, "demo")
    assert code == 2
    assert errors == [
        f"{config}:15: features.numeric.3: 'usage_minutes' is missing from the column_set of "
        f"suite 'demo_raw''s expect_table_columns_to_match_set ({suite}:5)"
    ]


def test_a_numeric_feature_held_to_text_values_disagrees(env, capsys, tmp_path):
    config, suite, _ = env
    edit(config, "numeric: [tenure_months,", "numeric: [region, tenure_months,")
    edit(config, "categorical: [contract_type, region]", "categorical: [contract_type]")
    code, _, errors = check(capsys, "demo")
    assert code == 2
    assert any(
        e.startswith(f"{suite}:")
        and "expectations[9].kwargs.value_set: 'region' is a numeric feature" in e
        for e in errors
    ), errors


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "categorical: [contract_type, region]",
            "categorical: [contract_type, region, score]",
            ":16: features.categorical.2: 'score' is the name of a layer of the trained model",
        ),
        (
            "categorical: [contract_type, region]",
            "categorical: [contract_type, region, lookup_region]",
            ":16: features.categorical.2: 'lookup_region' is the name the model gives its "
            "lookup layer of feature 'region'",
        ),
        (
            "categorical: [contract_type, region]",
            "categorical: [contract_type, region, monthly charges]",
            ":16: features.categorical: column name(s) 'monthly charges' cannot be used",
        ),
    ],
)
def test_names_the_model_cannot_take(env, capsys, old, new, expected):
    config, _, _ = env
    edit(config, old, new)
    code, _, errors = check(capsys, "demo")
    assert code == 2
    assert len(errors) == 1 and errors[0].startswith(f"{config}{expected}"), errors


def test_the_gate_metric_must_fit_the_model_kind(env, capsys):
    config, _, _ = env
    edit(config, "kind: tabular_classifier", "kind: tabular_regressor")
    code, _, errors = check(capsys, "demo")
    assert code == 2
    assert errors == [
        f"{config}:31: gate.metric: gate.metric 'auc' does not fit model.kind "
        "'tabular_regressor': a tabular_regressor is gated on rmse or mae"
    ]


def test_an_error_metric_threshold_is_a_ceiling_not_a_floor(env, capsys, tmp_path):
    config, _, _ = env
    edit(config, "kind: tabular_classifier", "kind: tabular_regressor")
    edit(config, "metric: auc\n  min: 0.70", "metric: rmse\n  min: 0.70")
    code, _, errors = check(capsys, "demo")
    assert code == 2
    assert errors == [
        f"{config}:32: gate.min: rmse is an error metric (lower is better): its threshold is a "
        "ceiling, not a floor; write gate.max: 0.7 (the worst rmse to promote)"
    ]
    edit(config, "min: 0.70", "max: 0.70")
    # a regressor on a real-valued label: the ceiling is spelled out
    frame = datagen.generate(200, seed=6)
    frame["churned"] = frame["monthly_charges"] / 100
    batch = write_batch(tmp_path / "reg.csv", frame)
    code, out, errors = check(capsys, "demo", "--data", str(batch))
    assert (code, errors) == (0, [])
    assert "gate: rmse <= 0.7 (a ceiling: lower is better)" in out


@pytest.mark.parametrize(
    ("resources", "expected"),
    [
        (
            "{cpu: '2', memory: lots}",
            ":30: training.resources.memory: not a Kubernetes quantity: 'lots'",
        ),
        (
            "{cpu: '0', memory: 2Gi}",
            ":30: training.resources.cpu: a quantity must be positive: '0'",
        ),
    ],
)
def test_kubernetes_quantities(env, capsys, resources, expected):
    config, _, _ = env
    edit(config, "  image: mlplatform/trainer:latest", f"  image: x\n  resources: {resources}")
    code, _, errors = check(capsys, "demo")
    assert code == 2
    assert len(errors) == 1 and errors[0].startswith(f"{config}{expected}"), errors


def test_good_kubernetes_quantities_pass(env, capsys):
    config, _, _ = env
    edit(
        config,
        "  image: mlplatform/trainer:latest",
        "  image: x\n  resources: {cpu: 500m, memory: 1.5Gi}",
    )
    assert check(capsys, "demo")[0] == 0


@pytest.mark.parametrize(
    ("label", "kind", "expected"),
    [
        ([0, 1, 2, 3] * 50, "tabular_classifier", "has 4 distinct values in the sample"),
        ([0] * 200, "tabular_classifier", "has one class only ([0]) in 200 sampled rows"),
        (["yes", "no"] * 100, "tabular_classifier", "holds text (['no', 'yes'])"),
        (
            [1, 2] * 100,
            "tabular_classifier",
            "has values [1, 2]: a tabular_classifier takes 0 and 1",
        ),
        (
            [0, 1] * 100,
            "tabular_regressor",
            "has only 2 distinct value(s) [0, 1] in 200 sampled rows",
        ),
    ],
)
def test_label_cardinality_fits_the_model_kind(env, capsys, tmp_path, label, kind, expected):
    config, _, _ = env
    if kind == "tabular_regressor":
        edit(config, "kind: tabular_classifier", "kind: tabular_regressor")
        edit(config, "metric: auc\n  min: 0.70", "metric: rmse\n  max: 0.5")
    frame = datagen.generate(200, seed=7)
    frame["churned"] = label
    batch = write_batch(tmp_path / "label.csv", frame)
    code, _, errors = check(capsys, "demo", "--data", str(batch))
    assert code == 2
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"{config}:14: features.label: 'churned' {expected}"), errors


def test_text_in_a_numeric_feature_and_bad_event_times(env, capsys, tmp_path):
    config, _, _ = env
    frame = datagen.generate(200, seed=8)
    frame["tenure_months"] = frame["tenure_months"].astype(object)
    frame.loc[:2, "tenure_months"] = "unknown"
    frame["event_time"] = frame["event_time"].astype(str)
    frame.loc[5, "event_time"] = "yesterday"
    batch = write_batch(tmp_path / "text.csv", frame)
    code, _, errors = check(capsys, "demo", "--data", str(batch))
    assert code == 2
    assert errors == [
        f"{config}:15: features.numeric.0: 'tenure_months' holds text in the data sample (3 of "
        "200 rows, e.g. ['unknown']): declare it under features.categorical, or clean the column",
        f"{config}:7: source.timestamp: 'event_time' has values that are not times (1 of 200 "
        "rows, e.g. ['yesterday'])",
    ]


def test_an_unreadable_batch_is_one_line(env, capsys, tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    code, _, errors = check(capsys, "demo", "--data", str(empty))
    assert code == 2
    assert len(errors) == 1 and errors[0].startswith(f"--data: ingest: {empty}"), errors


@pytest.mark.integration  # builds the trainer's Keras model: a TensorFlow import
def test_model_layer_names_match_the_trainer():
    """Every layer the trainer builds (both kinds; TensorFlow) has a name ``check`` refuses as a
    feature name: a rename in ``training/model.py`` that the reserved names miss fails here."""
    import numpy as np

    from mlplatform.config import model_name_clash
    from training.model import build_model

    features = {"num": np.array([[1.0], [np.nan], [3.0]], dtype="float32"),
                "cat": np.array([["a"], [""], ["b"]], dtype=object)}  # fmt: skip
    for kind in ("tabular_classifier", "tabular_regressor"):
        model = build_model(kind, [4, 2], ["num"], ["cat"], features, 0.5, 2.0)
        layers = {layer.name for layer in model.layers} | {model.name}
        own = layers - {"num", "cat"}  # the inputs carry the feature names themselves
        assert own and all(model_name_clash(n, ["num", "cat"]) for n in own), sorted(
            n for n in own if not model_name_clash(n, ["num", "cat"])
        )


def test_a_model_served_by_two_pipelines_is_refused(env, capsys):
    config, _, _ = env
    twin = config.parent / "twin.yaml"
    twin.write_text(config.read_text().replace("name: demo\n", "name: twin\n", 1))
    code, _, errors = check(capsys, "demo")
    assert code == 2
    assert errors == [
        f"{config}:35: serving.model_name: model 'demo' is also served by pipeline twin ({twin}): "
        "their runs would register, gate and promote over each other's versions; give each "
        "pipeline its own model name"
    ]
    twin.write_text(twin.read_text().replace("model_name: demo", "model_name: twin"))
    assert check(capsys, "demo")[0] == 0
