"""End to end through Airflow: demo run -> served answer; bad batch and refused gate lose nothing.

One scenario on one platform home, split into tests that share it (``demo``, module-scoped):
the demo run once, then read-only checks of what it left, then the runs that add to it, in this
order: the same batch again (all cached), a corrupt batch (refused, nothing changes), a gate no
model passes (v2 registered, not promoted). Each of those asserts the state it needs, so a test
run alone (``-k``) still runs the demo first and fails clearly instead of passing on a wrong state.

End-to-end tier (real Airflow ``dag.test`` runs with real TensorFlow training): ``make test-fast``
skips it; ``make test`` (CI) runs it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mlplatform.contracts import TRAIN_STAGES, WORK_STAGES, validate_output
from tests.conftest import REPO, use_home
from tests.run_checks import assert_run_explains_itself, own_lines, task_log

pytestmark = pytest.mark.slow


def _cli(
    *args: str, home: Path, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLP_HOME": str(home), **(extra_env or {})}
    return subprocess.run(
        [sys.executable, "-m", "mlplatform.cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=900,
    )


def _registry(home: Path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{home / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


@dataclass(frozen=True)
class DemoRun:
    """The platform home after ``mlplatform demo --rows 1500`` and what the command printed."""

    home: Path
    stdout: str

    @property
    def run_id(self) -> str:
        return re.search(r"^run (\S+): success", self.stdout, re.M).group(1)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Iterator[DemoRun]:
    """One demo run (a real DAG run through Airflow ending with a prediction from the promoted
    model) on a home that every test of this module shares; the environment points at it."""
    with pytest.MonkeyPatch.context() as mp:
        home = use_home(tmp_path_factory.mktemp("e2e") / "home", mp)
        done = _cli("demo", "--rows", "1500", home=home)
        assert done.returncode == 0, done.stdout + done.stderr
        yield DemoRun(home, done.stdout)


def test_demo_prints_every_stage_and_a_served_answer(demo):
    for stage in WORK_STAGES:
        assert re.search(rf"^  {stage}\s+ok\s+\d+\.\d+s", demo.stdout, re.M), (
            f"no summary line for {stage}:\n{demo.stdout}"
        )
    assert "answered by model demo version 1" in demo.stdout
    predictions = [float(m) for m in re.findall(r"-> \[?([0-9.eE-]+)\]?$", demo.stdout, re.M)]
    assert len(predictions) == 3 and all(0.0 <= p <= 1.0 for p in predictions)


def test_the_run_explains_itself_in_the_ui(demo):
    """Task logs for every stage (no error lines, no TF noise), the validate table, the gate's
    decision as its last line, http links and the run note."""
    assert_run_explains_itself(demo.home, demo.run_id, list(TRAIN_STAGES))


def test_every_stage_output_matches_its_contract_and_lineage_reaches_the_champion(demo):
    from serving import layout

    client = _registry(demo.home)
    v1 = client.get_model_version_by_alias("demo", "champion")
    assert int(v1.version) == 1
    ingest_path = next((demo.home / "storage" / "demo").glob("*/ingest/summary.json"))
    ingest_summary = json.loads(ingest_path.read_text())
    for stage in TRAIN_STAGES:  # every task's real XCom matches its declared contract
        summary = json.loads((ingest_path.parent.parent / stage / "summary.json").read_text())
        validate_output(stage, summary["outputs"])
    assert v1.tags["data_version"] == ingest_summary["outputs"]["data_version"]
    for tag in (
        "data_commit",
        "feature_service",
        "training_set_uri",
        "git_commit",
        "pipeline_config_hash",
        "trainer_code_hash",
        "validation",
    ):
        assert v1.tags.get(tag), f"model version lacks lineage tag {tag}"
    run = client.get_run(v1.run_id)
    assert run.data.tags["data_version"] == v1.tags["data_version"]
    assert "holdout_auc" in run.data.metrics
    assert layout.served_version(demo.home / "serving" / "models", "demo") == 1


def test_audit_trail_names_the_promotion_and_mlflow_links_back_over_http(demo):
    from mlplatform import audit
    from mlplatform.settings import get_settings

    trail = audit.read(get_settings(), "demo")
    assert [e.action for e in trail] == ["retrain_decision", "promote"], trail
    assert trail[1].version == 1 and trail[1].actor.startswith("command line (")
    assert (
        trail[1].reason.startswith("passed the gate (auc 0.")
        and "vs champion None" in trail[1].reason
    )
    v1 = _registry(demo.home).get_model_version_by_alias("demo", "champion")
    assert (
        v1.tags["airflow_run_url"].startswith("http")
        and "/dags/mlp_demo_train/runs/" in v1.tags["airflow_run_url"]
    )
    assert v1.tags["platform_url"].endswith("/mlplatform/models/demo/versions/1")
    assert (
        v1.tags["data_docs_url"].startswith("http")
        and "/mlplatform/reports/demo/" in v1.tags["data_docs_url"]
    )


# ------------------------------------------------- runs that add to the shared home, in order


def test_the_same_batch_again_reuses_every_stage(demo):
    """Step caching: every stage is reused from the demo's run, nothing trains."""
    (batch,) = (demo.home / "demo-data").glob("batch-*.csv")
    again = _cli("run", "demo", "--data", str(batch), home=demo.home)
    assert again.returncode == 0, again.stdout + again.stderr
    for stage in ("ingest", "validate", "features", "training_set", "train", "register", "gate"):
        assert re.search(
            rf"^  {stage}\s+ok\s.*\(cached from run {re.escape(demo.run_id)}\)$",
            again.stdout,
            re.M,
        ), f"{stage} not cached:\n{again.stdout}"
    assert "cache: 9 stage(s) reused earlier outputs" in again.stdout
    client = _registry(demo.home)
    experiment = client.get_experiment_by_name("demo").experiment_id
    assert len(client.search_runs([experiment])) == 1, "the cached run trained again"
    assert len(client.search_model_versions("name='demo'")) == 1


def test_a_corrupt_batch_fails_in_one_line_and_changes_nothing(demo, tmp_path):
    from mlplatform import datagen
    from serving import layout

    bad = datagen.write(datagen.generate(1500, seed=7, bad_fraction=0.05), tmp_path / "bad.csv")
    res = _cli("run", "demo", "--data", str(bad), home=demo.home)
    assert res.returncode == 1, res.stdout + res.stderr
    err = res.stderr.strip()
    assert err.startswith("mlplatform: validation failed:") and "\n" not in err
    assert "expect_column_values_to_be_in_set(contract_type)" in err
    assert len(_registry(demo.home).search_model_versions("name='demo'")) == 1
    assert layout.served_version(demo.home / "serving" / "models", "demo") == 1


def test_a_gate_no_model_passes_skips_with_the_reason_and_the_champion_stays(
    demo, pipelines_dir, tmp_path
):
    from mlplatform import datagen
    from mlplatform.config import load_pipeline
    from mlplatform.platform_view import model_view
    from mlplatform.settings import get_settings
    from serving import layout

    client = _registry(demo.home)
    assert len(client.search_model_versions("name='demo'")) == 1, "needs the demo's state"
    cfg = pipelines_dir / "demo.yaml"
    cfg.write_text(cfg.read_text().replace("min: 0.70", "min: 0.999"))
    good = datagen.write(datagen.generate(1500, seed=8), tmp_path / "good.csv")
    res = _cli(
        "run",
        "demo",
        "--data",
        str(good),
        home=demo.home,
        extra_env={"MLP_PIPELINES_PATH": str(pipelines_dir)},
    )
    assert res.returncode == 1, res.stdout + res.stderr
    assert re.search(r"gate\s+SKIPPED", res.stdout)
    assert "not promoted: gate refused demo v2: auc=" in res.stderr
    refused_run = re.search(r"^run (\S+): ", res.stdout, re.M).group(1)
    gate_log = own_lines(task_log(demo.home, "mlp_demo_train", refused_run, "gate"))
    assert gate_log[-1].startswith("gate decision: refused: gate refused demo v2: auc="), gate_log[
        -3:
    ]
    assert int(client.get_model_version_by_alias("demo", "challenger").version) == 2
    assert int(client.get_model_version_by_alias("demo", "champion").version) == 1
    models = demo.home / "serving" / "models"
    assert layout.served_version(models, "demo") == 1
    assert layout.list_versions(models, "demo") == [1]
    # the platform view shows the refusal on v2 and v1's passed gate
    view = model_view(get_settings(), load_pipeline(cfg))
    gates = {v["version"]: v["gate"] for v in view["versions"]}
    assert gates[2]["decision"] == "refused" and gates[2]["refused"].startswith(
        "gate refused demo v2"
    )
    assert gates[1]["decision"] == "promote" and gates[1]["champion"] is None
    assert (
        view["served_version"] == 1 and [e["action"] for e in view["audit"]].count("promote") == 1
    )
