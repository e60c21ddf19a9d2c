"""Step caching (mlplatform/cache.py, mlplatform/cache_keys.py, the PlatformOperator hook).

Fast tests drive a real :class:`~operators.base.PlatformOperator` (a toy stage, and the real
ingest stage with DVC) through ``execute`` with a minimal task context; the key tests call the
real key functions on the real config, suite, feature definitions and trainer code. One slow
test runs ``mlplatform run demo`` twice on the same file through Airflow.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from mlplatform import cache, cache_keys
from mlplatform.config import load_pipeline
from mlplatform.settings import get_settings
from mlplatform.storage import to_path, to_uri
from operators.base import PlatformOperator
from tests.conftest import REPO

RUN_1, RUN_2, RUN_3 = (f"manual__2026-11-28T0{i}:00:00+00:00" for i in (1, 2, 3))


class FakeTI:
    """What a stage needs of a task instance: XCom pushes (links)."""

    def __init__(self) -> None:
        self.xcom: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = value


def context(run_id: str, **params: Any) -> dict[str, Any]:
    return {"run_id": run_id, "ti": FakeTI(), "params": {"cache": True, **params}}


class ToyOperator(PlatformOperator):
    """A cacheable stage that writes one file; counts how often it really runs."""

    stage = "toy"

    def __init__(
        self, *, parts: dict | None, state: dict | None = None, check: str | None = None, **kw
    ) -> None:
        super().__init__(**kw)
        self.parts, self.state, self.check, self.calls = parts, state, check, 0

    def run_stage(self, cfg, out_dir, settings, context):
        self.calls += 1
        out = out_dir / "out.txt"
        out.write_text(context["run_id"])
        return {"out_uri": to_uri(out), "produced_by": context["run_id"]}

    def cache_parts(self, cfg, settings, context):
        if isinstance(self.parts, Exception):
            raise self.parts
        return self.parts

    def cache_state(self, cfg, settings, result):
        return self.state

    def cache_check(self, cfg, settings, result):
        return self.check


@pytest.fixture
def demo(mlp_home, pipelines_dir):
    """The demo pipeline in a fresh home (its config read from a copy a test may edit)."""
    return pipelines_dir / "demo.yaml"


def twin_pipeline(pipelines_dir: Path, name: str = "twin") -> Path:
    """A pipeline identical to demo in every section but its name."""
    path = pipelines_dir / f"{name}.yaml"
    path.write_text(re.sub(r"^name: demo$", f"name: {name}", (pipelines_dir / "demo.yaml").read_text(), flags=re.M))  # fmt: skip
    return path


def logged(capfd) -> str:
    """What the task logged (Airflow's task logger writes to the process's stdout/stderr)."""
    out, err = capfd.readouterr()
    return out + err


def summary(run_id: str, stage: str = "toy", pipeline: str = "demo") -> dict:
    from mlplatform.storage import run_key

    root = to_path(get_settings().storage) / pipeline / run_key(run_id) / stage
    return json.loads((root / "summary.json").read_text())["outputs"]


# ------------------------------------------------------------------------------ the hook


def test_hit_reuses_the_output_and_says_so(demo, capfd):
    op = ToyOperator(pipeline="demo", parts={"data_version": "abc"})
    first = op.execute(context(RUN_1))
    assert op.calls == 1 and "cached_from" not in first and first["cache_key"]
    second = op.execute(context(RUN_2))
    assert op.calls == 1, "a hit must not run the stage"
    assert second["cached_from"] == RUN_1 and second["cache_key"] == first["cache_key"]
    assert second["out_uri"] == first["out_uri"] and second["produced_by"] == RUN_1
    assert summary(RUN_2)["cached_from"] == RUN_1
    assert f"toy cached from run {RUN_1}" in logged(capfd)


def test_a_changed_part_is_a_miss(demo):
    op = ToyOperator(pipeline="demo", parts={"data_version": "abc"})
    op.execute(context(RUN_1))
    op.parts = {"data_version": "abd"}
    result = op.execute(context(RUN_2))
    assert op.calls == 2 and "cached_from" not in result
    op.parts = {"data_version": "abc"}  # the first key still holds run 1's output
    assert op.execute(context(RUN_3))["cached_from"] == RUN_1


def test_deleted_outputs_are_a_miss_that_says_why(demo, capfd):
    op = ToyOperator(pipeline="demo", parts={"v": 1})
    first = op.execute(context(RUN_1))
    to_path(first["out_uri"]).unlink()
    second = op.execute(context(RUN_2))
    assert op.calls == 2 and "cached_from" not in second
    text = logged(capfd)
    assert f"the output of run {RUN_1} cannot be reused" in text and "no longer exists" in text
    assert op.execute(context(RUN_3))["cached_from"] == RUN_2  # the fresh output was recorded


def test_a_failed_check_or_changed_state_is_a_miss(demo):
    op = ToyOperator(pipeline="demo", parts={"v": 1}, state={"files": ["a"]})
    op.execute(context(RUN_1))
    op.state = {"files": ["a", "b"]}  # e.g. another batch landed in the offline store
    assert "cached_from" not in op.execute(context(RUN_2))
    op.check = "MLflow run r1 no longer exists"
    assert "cached_from" not in op.execute(context(RUN_3))
    assert op.calls == 3


def test_failed_stage_records_nothing(demo):
    from mlplatform.stages import StageError

    class Failing(ToyOperator):
        def run_stage(self, cfg, out_dir, settings, context):
            raise StageError("toy: broken")

    with pytest.raises(Exception, match="toy: broken"):
        Failing(pipeline="demo", parts={"v": 1}).execute(context(RUN_1))
    assert not cache.cache_dir(get_settings(), "demo", "toy").exists()


def test_config_cache_false_turns_it_off(demo):
    demo.write_text(demo.read_text() + "cache: false\n")
    op = ToyOperator(pipeline="demo", parts={"v": 1})
    first, second = op.execute(context(RUN_1)), op.execute(context(RUN_2))
    assert op.calls == 2 and "cache_key" not in first and "cached_from" not in second
    assert not cache.cache_dir(get_settings(), "demo", "toy").exists(), "nothing is recorded"
    assert (
        load_pipeline(demo).config_hash()
        == load_pipeline(REPO / "pipelines" / "demo.yaml").config_hash()
    ), "cache: false changes how outputs are got, not the config hash"


def test_param_cache_false_runs_afresh_and_records(demo):
    op = ToyOperator(pipeline="demo", parts={"v": 1})
    op.execute(context(RUN_1))
    fresh = op.execute(context(RUN_2, cache=False))
    assert op.calls == 2 and "cached_from" not in fresh
    assert op.execute(context(RUN_3))["cached_from"] == RUN_2


def test_never_reused_across_pipelines(demo, pipelines_dir):
    twin_pipeline(pipelines_dir)
    parts = {"data_version": "abc", "features": {"view": "same"}}
    ToyOperator(pipeline="demo", parts=parts).execute(context(RUN_1))
    twin = ToyOperator(pipeline="twin", parts=parts)
    result = twin.execute(context(RUN_2))
    assert twin.calls == 1 and "cached_from" not in result
    assert cache.stage_key("demo", "toy", parts) != cache.stage_key("twin", "toy", parts)
    settings = get_settings()
    assert cache.lookup(settings, "twin", "toy", cache.stage_key("demo", "toy", parts)) is None


def test_uncacheable_stage_and_key_errors_just_run(demo, capfd):
    op = ToyOperator(pipeline="demo", parts=None)
    assert "cache_key" not in op.execute(context(RUN_1))
    op.parts = RuntimeError("S3 is down")
    assert "cache_key" not in op.execute(context(RUN_2))
    assert op.calls == 2 and "its key cannot be computed: S3 is down" in logged(capfd)


def test_torn_entry_is_a_miss(demo):
    op = ToyOperator(pipeline="demo", parts={"v": 1})
    key = op.execute(context(RUN_1))["cache_key"]
    cache.entry_path(get_settings(), "demo", "toy", key).write_text('{"key": ')
    assert "cached_from" not in op.execute(context(RUN_2))


# ------------------------------------------------------------------------------ keys


def test_stage_key_is_canonical():
    a = cache.stage_key("demo", "train", {"a": 1, "b": [1, 2], "c": {"x": None, "y": 2}})
    b = cache.stage_key("demo", "train", {"c": {"y": 2, "x": None}, "b": [1, 2], "a": 1})
    assert a == b and len(a) == 64
    assert a != cache.stage_key("demo", "register", {"a": 1, "b": [1, 2], "c": {"x": None, "y": 2}})


def test_validate_key_changes_with_data_section_and_suite(demo, tmp_path, monkeypatch):
    settings, cfg = get_settings(), load_pipeline(demo)
    data = {"data_version": "v1", "data_uri": "file:///x.parquet"}
    base = cache_keys.validate_parts(cfg, data, settings)
    assert base == cache_keys.validate_parts(cfg, dict(data), settings)
    assert base != cache_keys.validate_parts(cfg, {**data, "data_version": "v2"}, settings)
    stricter = cfg.model_copy(
        update={"validation": cfg.validation.model_copy(update={"future_horizon_hours": 1.0})}
    )
    assert base != cache_keys.validate_parts(stricter, data, settings)
    # the suite file's content is in the key
    repo = tmp_path / "repo"
    shutil.copytree(REPO / "great_expectations", repo / "great_expectations")
    shutil.copytree(REPO / "mlplatform", repo / "mlplatform")
    monkeypatch.setenv("MLP_REPO_ROOT", str(repo))
    same = cache_keys.validate_parts(cfg, data, get_settings())
    assert same == base
    suite = repo / "great_expectations" / "expectations" / "demo_raw.json"
    body = json.loads(suite.read_text())
    body["expectations"] = body["expectations"][:-1]
    suite.write_text(json.dumps(body))
    assert cache_keys.validate_parts(cfg, data, get_settings()) != base


def _repo_copy(tmp_path: Path, name: str, edit: str | None = None) -> Path:
    """A copy of the code the keys hash, with ``edit`` (a relative file) changed."""
    repo = tmp_path / name
    for entry in ("mlplatform", "training", "feature_repo", "serving"):
        shutil.copytree(REPO / entry, repo / entry, ignore=shutil.ignore_patterns("__pycache__"))
    if edit:
        with open(repo / edit, "a") as fh:
            fh.write("\n# changed\n")
    return repo


def test_feature_definitions_change_is_a_miss(demo, tmp_path, monkeypatch):
    cfg, data = load_pipeline(demo), {"data_version": "v1"}
    keys = {}
    for name, edit in (("a", None), ("b", None), ("c", "feature_repo/definitions.py")):
        monkeypatch.setenv("MLP_REPO_ROOT", str(_repo_copy(tmp_path, name, edit)))
        settings = get_settings()
        keys[name] = (
            cache_keys.features_parts(cfg, data, settings),
            cache_keys.training_set_parts(cfg, data, settings),
        )
    assert keys["a"] == keys["b"], "a copy of the same code is the same key"
    assert keys["c"][0] != keys["a"][0] and keys["c"][1] != keys["a"][1]
    changed = cfg.model_copy(
        update={"features": cfg.features.model_copy(update={"holdout_fraction": 0.3})}
    )
    assert cache_keys.features_parts(changed, data, settings) != keys["c"][0]


def test_training_set_key_follows_the_offline_store(demo):
    from mlplatform.stages.features import offline_dir

    settings, cfg, data = get_settings(), load_pipeline(demo), {"data_version": "v1"}
    before = cache_keys.training_set_parts(cfg, data, settings)
    assert before == cache_keys.training_set_parts(cfg, data, settings)
    offline_dir(cfg, settings).mkdir(parents=True)
    (offline_dir(cfg, settings) / "other.parquet").write_bytes(b"another batch")
    assert cache_keys.training_set_parts(cfg, data, settings) != before
    wider = cfg.model_copy(update={"retrain": cfg.retrain.model_copy(update={"window_days": 30})})
    assert cache_keys.training_set_parts(wider, data, settings) != cache_keys.training_set_parts(
        cfg, data, settings
    )


def training_set_files(directory: Path, train: bytes = b"train rows") -> dict[str, str]:
    """A training set's XCom whose train/hold-out files hold ``train`` and fixed bytes."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "train.parquet").write_bytes(train)
    (directory / "holdout.parquet").write_bytes(b"holdout rows")
    return {
        "train_uri": to_uri(directory / "train.parquet"),
        "holdout_uri": to_uri(directory / "holdout.parquet"),
        "cache_key": "ts-key",
    }


def test_train_key_trainer_code_model_section_and_upstream(demo, tmp_path, monkeypatch):
    cfg = load_pipeline(demo)
    training_set = training_set_files(tmp_path / "run1")
    monkeypatch.setenv("MLP_REPO_ROOT", str(_repo_copy(tmp_path, "a")))
    base = cache_keys.train_parts(cfg, training_set, get_settings())
    # the same bytes written by another run: the same training; other rows: another one
    rebuilt = training_set_files(tmp_path / "run2")
    assert cache_keys.train_parts(cfg, rebuilt, get_settings()) == base
    other = training_set_files(tmp_path / "run3", b"other rows")
    assert cache_keys.train_parts(cfg, other, get_settings()) != base
    assert cache_keys.train_parts(cfg, {"training_set_uri": "x"}, get_settings()) is None
    more_epochs = cfg.model_copy(update={"model": cfg.model.model_copy(update={"epochs": 9})})
    assert cache_keys.train_parts(more_epochs, training_set, get_settings()) != base
    monkeypatch.setenv("MLP_REPO_ROOT", str(_repo_copy(tmp_path, "b", "training/train.py")))
    changed = cache_keys.train_parts(cfg, training_set, get_settings())
    assert changed != base and changed["trainer_code_hash"] != base["trainer_code_hash"]
    # a stage downstream of train keys on train's key
    assert cache_keys.register_parts(cfg, {"cache_key": "t1"}, get_settings()) != (
        cache_keys.register_parts(cfg, {"cache_key": "t2"}, get_settings())
    )
    assert cache_keys.register_parts(cfg, {}, get_settings()) is None


def test_gate_key_follows_the_champion_and_promote_reuse_follows_the_labels(demo, tmp_path):
    """The gate's key holds the champion version (none when the champion is the challenger
    itself, as gate() judges it); a promotion is reused only while its label and alias stay."""
    from mlflow import MlflowClient

    from serving import layout

    settings, cfg = get_settings(), load_pipeline(demo)
    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    client.create_registered_model("demo")
    run = client.create_run(client.create_experiment("demo")).info.run_id
    for _ in range(2):
        client.create_model_version("demo", source=(tmp_path / "m").as_uri(), run_id=run)
    registered = {"model_version": 1, "cache_key": "r1"}
    training_set = training_set_files(tmp_path / "ts")
    no_champion = cache_keys.gate_parts(cfg, registered, training_set, settings)
    client.set_registered_model_alias("demo", "champion", "1")
    assert cache_keys.gate_parts(cfg, registered, training_set, settings) == no_champion
    client.set_registered_model_alias("demo", "champion", "2")
    assert cache_keys.gate_parts(cfg, registered, training_set, settings) != no_champion
    assert cache_keys.gate_parts(cfg, {"model_version": 1}, training_set, settings) is None

    for version in (1, 2):
        saved = tmp_path / f"saved{version}"
        saved.mkdir()
        (saved / "saved_model.pb").write_bytes(b"model %d" % version)
        layout.publish_version(settings.models_dir, "demo", version, saved)
    layout.set_label(settings.models_dir, "demo", "stable", 2)
    promoted = {"version": 2, "model_name": "demo"}
    assert cache_keys.promote_check(cfg, promoted, settings) is None
    layout.set_label(settings.models_dir, "demo", "stable", 1)  # e.g. a rollback since
    assert "label stable of demo is now on version 1" in cache_keys.promote_check(
        cfg, promoted, settings
    )
    layout.set_label(settings.models_dir, "demo", "stable", 2)
    client.set_registered_model_alias("demo", "champion", "1")
    assert "alias champion of demo is now on version 1" in cache_keys.promote_check(
        cfg, promoted, settings
    )


def test_source_fingerprint(demo, tmp_path):
    from mlplatform import sources

    settings, cfg = get_settings(), load_pipeline(demo)
    batch = tmp_path / "batch.csv"
    batch.write_text("customer_id,event_time\n1,2026-01-01\n")
    first = cache_keys.ingest_parts(cfg, str(batch), settings)
    os.utime(batch, (1, 1))  # touched, same bytes: the same batch
    assert cache_keys.ingest_parts(cfg, str(batch), settings) == first
    batch.write_text("customer_id,event_time\n2,2026-01-01\n")
    assert cache_keys.ingest_parts(cfg, str(batch), settings) != first
    assert sources.fingerprint("sql+sqlite:///x.db?query=SELECT%201", cfg, settings) is None
    assert cache_keys.ingest_parts(cfg, "sql+sqlite:///x.db?query=SELECT%201", settings) is None


def test_source_fingerprint_s3_lists_without_downloading(demo, s3):
    settings, cfg = get_settings(), load_pipeline(demo)
    s3.put("in/a.csv", b"customer_id,event_time\n1,2026-01-01\n")
    s3.put("in/_SUCCESS", b"")
    prefix = f"s3://{s3.name}/in/"
    rows = cache_keys.ingest_parts(cfg, prefix, settings)["files"]
    assert [r[0] for r in rows] == [f"s3://{s3.name}/in/a.csv"] and rows[0][2]
    assert cache_keys.ingest_parts(cfg, f"s3://{s3.name}/in/a.csv", settings)["files"] == rows
    s3.put("in/a.csv", b"customer_id,event_time\n2,2026-01-01\n")
    assert cache_keys.ingest_parts(cfg, prefix, settings)["files"] != rows


# ------------------------------------------------------------------------------ a real stage


def test_ingest_stage_hit_and_miss(demo, tmp_path):
    from mlplatform import datagen
    from operators.ingest import IngestOperator

    batch = datagen.write(datagen.generate(200, seed=3), tmp_path / "batch.csv")
    op = IngestOperator(pipeline="demo", source_uri=str(batch))
    first = op.execute(context(RUN_1))
    second = op.execute(context(RUN_2))
    assert second["cached_from"] == RUN_1 and second["data_version"] == first["data_version"]
    assert second["data_commit"] == first["data_commit"]
    datagen.write(datagen.generate(200, seed=4), batch)
    third = op.execute(context(RUN_3))
    assert "cached_from" not in third and third["data_version"] != first["data_version"]


def test_kubernetes_train_reuses_a_recorded_training_without_a_pod(demo, tmp_path):
    """The Kubernetes backend shares the train stage's cache: a recorded training whose MLflow
    run and logged model exist is the XCom, and no pod or MPIJob is built; once the MLflow run
    is deleted it is a miss."""
    from mlflow import MlflowClient

    from operators.caching import cache_key, reuse
    from operators.kubernetes_training import HorovodKubernetesTrainOperator

    settings = get_settings()
    client = MlflowClient(tracking_uri=settings.tracking_uri)
    experiment = client.create_experiment("demo")
    run = client.create_run(experiment)
    client.set_terminated(run.info.run_id, "FINISHED")
    model = client.create_logged_model(experiment, source_run_id=run.info.run_id)
    trained = {
        "mlflow_run_id": run.info.run_id,
        "model_uri": f"models:/{model.model_id}",
        "metrics": {"auc": 0.8},
        "world_size": 8,
        "samples_per_sec": 1.0,
        "tags": {},
    }

    class NoCluster(HorovodKubernetesTrainOperator):
        def build_trainer_pod(self, *args, **kwargs):
            raise AssertionError("a cached training must not build a pod")

        def execute_mpijob(self, *args, **kwargs):
            raise AssertionError("a cached training must not submit an MPIJob")

    op = NoCluster(pipeline="demo", training_set=training_set_files(tmp_path / "ts"))
    cfg = load_pipeline(demo)
    key = cache_key(op, cfg, settings, context(RUN_1))
    cache.record(settings, "demo", "train", key, RUN_1, trained)
    result = op.execute(context(RUN_2))
    assert result["cached_from"] == RUN_1 and result["mlflow_run_id"] == run.info.run_id
    assert summary(RUN_2, "train")["cached_from"] == RUN_1
    client.delete_run(run.info.run_id)
    assert reuse(op, cfg, settings, context(RUN_3), key) is None


# ------------------------------------------------------------------------------ end to end
