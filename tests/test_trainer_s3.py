"""The trainer on ``s3://`` (moto's S3 server, no patching): inputs fetched from the bucket,
per-epoch checkpoints and the exported SavedModel published to it, and a second trainer on a
"new node" (an empty working directory) resuming from the checkpoints in the bucket.

Starts TensorFlow twice in subprocesses (≈ 15 s each): ``slow``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_trainer_horovod import (
    PYTHON,
    check_serving_signature,
    make_spec,
    run_trainer,
    trainer_env,
)

pytestmark = pytest.mark.slow


def _keys(s3, prefix: str) -> set[str]:
    pages = s3.client.get_paginator("list_objects_v2").paginate(Bucket=s3.name, Prefix=prefix)
    return {o["Key"] for page in pages for o in page.get("Contents", [])}


def test_trainer_reads_and_writes_s3(s3, tmp_path: Path, monkeypatch) -> None:
    spec = make_spec(tmp_path, "x")
    spec["model"]["epochs"] = 2
    spec["train_uri"] = s3.put("sets/train.parquet", Path(spec["train_uri"]))
    spec["holdout_uri"] = s3.put("sets/holdout.parquet", Path(spec["holdout_uri"][7:]))
    spec["output_dir"] = f"s3://{s3.name}/runs/r1/train"
    monkeypatch.setenv("MLP_TRAINER_WORKDIR", str(tmp_path / "node1"))
    cmd = [PYTHON, "-m", "training.train", "--spec-json", json.dumps(spec)]
    first = run_trainer(cmd)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert f"published the outputs to {spec['output_dir']}" in first.stdout

    keys = _keys(s3, "runs/r1/train/")
    for key in ("saved_model/saved_model.pb", "result.json", "metrics.json", "_SUCCESS",
                "checkpoints/checkpoint"):  # fmt: skip
        assert f"runs/r1/train/{key}" in keys, sorted(keys)
    assert any(k.startswith("runs/r1/train/saved_model/variables/") for k in keys)
    result = json.loads(
        s3.client.get_object(Bucket=s3.name, Key="runs/r1/train/result.json")["Body"].read()
    )
    assert result["saved_model_dir"] == f"{spec['output_dir']}/saved_model"

    # the SavedModel as published answers on raw features (fetched back through fsspec)
    from mlplatform import object_store

    local = object_store.fetch(
        result["saved_model_dir"], tmp_path / "fetched", trainer_env()["MLP_S3_ENDPOINT_URL"]
    )
    holdout = tmp_path / "data" / "holdout.parquet"
    scores = check_serving_signature(local, holdout.as_uri(), "score")
    assert ((scores >= 0) & (scores <= 1)).all()

    # another node (empty working directory) with one more epoch resumes from the bucket
    spec["model"]["epochs"] = 3
    monkeypatch.setenv("MLP_TRAINER_WORKDIR", str(tmp_path / "node2"))
    again = run_trainer([PYTHON, "-m", "training.train", "--spec-json", json.dumps(spec)])
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "resuming from checkpoint at epoch 2/3" in again.stdout
    assert "epoch 3/3" in again.stdout and "epoch 1/3" not in again.stdout
