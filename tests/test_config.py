"""The pipeline config: the demo validates; bad configs are rejected naming file, line and field."""

from __future__ import annotations

import pytest

from mlplatform.config import ConfigError, load_pipeline, parse_pipeline
from tests.cli_inprocess import run_cli
from tests.conftest import REPO

DEMO = (REPO / "pipelines" / "demo.yaml").read_text()


def test_demo_pipeline_is_valid():
    cfg = load_pipeline(REPO / "pipelines" / "demo.yaml")
    assert cfg.name == "demo"
    assert cfg.features.all == [
        "tenure_months",
        "monthly_charges",
        "support_calls",
        "usage_minutes",
        "contract_type",
        "region",
    ]
    assert cfg.training.processes_per_worker == "auto"
    assert cfg.training.world_size(train_rows=3200, cores=2) == 1
    assert len(cfg.config_hash()) == 16


def test_config_hash_changes_with_config():
    a = parse_pipeline(DEMO)
    b = parse_pipeline(DEMO.replace("epochs: 4", "epochs: 5"))
    assert a.config_hash() != b.config_hash()


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "epochs: 4",
            "epochs: 0",
            "bad.yaml:21: model.epochs: Input should be greater than or equal to 1",
        ),
        ("min: 0.70", "min: high", "bad.yaml:32: gate.min: Input should be a valid number"),
        (
            "  suite: demo_raw",
            "  suit: demo_raw",
            "bad.yaml:10: validation.suit: Extra inputs are not permitted",
        ),
        (
            "kind: tabular_classifier",
            "kind: tabular_regressor",
            "gate.metric 'auc' does not fit model.kind",
        ),
        (
            "  model_name: demo",
            "  model_name: de mo",
            "serving.model_name: String should match pattern",
        ),
        (
            "categorical: [contract_type, region]",
            "categorical: [contract_type, churned]",
            "label 'churned' must not also be a feature",
        ),
    ],
)
def test_bad_config_names_the_field(old, new, expected):
    assert old in DEMO
    with pytest.raises(ConfigError) as err:
        parse_pipeline(DEMO.replace(old, new), where="bad.yaml")
    assert expected in str(err.value)


def test_missing_section_and_bad_yaml():
    with pytest.raises(ConfigError, match=r"x.yaml: features: Field required"):
        parse_pipeline(
            "name: a\nsource: {timestamp: t, entity: e}\nvalidation: {suite: s}\nserving: {model_name: a}\n",
            "x.yaml",
        )
    with pytest.raises(ConfigError, match=r"y.yaml:1: not valid YAML"):
        parse_pipeline("name: [a", "y.yaml")
    with pytest.raises(ConfigError, match="expected a mapping"):
        parse_pipeline("- a\n- b\n", "z.yaml")


def test_cli_check_exit_codes(tmp_path, mlp_home):
    ok = run_cli("check", "demo", cwd=REPO)
    assert ok.returncode == 0, ok.stderr
    assert "demo: config ok" in ok.stdout
    bad = tmp_path / "broken.yaml"
    bad.write_text(DEMO.replace("epochs: 4", "epochs: -3"))
    res = run_cli("check", str(bad), cwd=REPO)
    assert res.returncode == 2
    assert (
        res.stderr.strip()
        == f"mlplatform: error: {bad}:21: model.epochs: Input should be greater than or equal to 1 (got -3)"
    )
