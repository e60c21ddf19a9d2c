"""Stage directories and URIs on both profiles: local storage (the directory is the storage,
nothing copied) and ``s3://`` storage on moto's S3 server (a local working root published per
stage, ``_SUCCESS`` last; URIs of other workers' outputs fetched back)."""

from __future__ import annotations

import time

import pytest

from mlplatform import object_store
from mlplatform.settings import get_settings
from mlplatform.storage import (
    client_environment,
    local_root,
    publish_stage,
    run_key,
    stage_dir,
    to_path,
    to_uri,
)


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
    with pytest.raises(ValueError, match="unsupported storage URI scheme 'nosuch'"):
        to_path("nosuch://bucket/key")


def test_local_storage_copies_nothing(mlp_home, monkeypatch):
    """The embedded profile: the stage directory is the storage, URIs are file://, publishing
    is a no-op and no S3 variable is set for the clients."""
    monkeypatch.delenv("MLP_S3_ENDPOINT_URL", raising=False)
    settings = get_settings()
    out = stage_dir(settings.storage, "demo", "r1", "ingest")
    assert (
        out
        == local_root(settings) / "demo" / "r1" / "ingest"
        == mlp_home.resolve() / "storage" / "demo" / "r1" / "ingest"
    )
    (out / "batch.parquet").write_bytes(b"x")
    assert to_uri(out / "batch.parquet") == (out / "batch.parquet").as_uri()
    assert publish_stage(settings, out, "demo", "r1", "ingest") is None
    assert client_environment(settings) == {}


def test_s3_storage_publishes_stages_and_fetches_them_back(mlp_home, s3, monkeypatch):
    storage = f"s3://{s3.name}/mlp"
    monkeypatch.setenv("MLP_STORAGE_URI", storage)
    settings = get_settings()
    out = stage_dir(settings.storage, "demo", "r1", "features")
    assert out == mlp_home.resolve() / "storage" / "demo" / "r1" / "features"
    (out / "offline").mkdir()
    (out / "offline" / "v1.parquet").write_bytes(b"parquet bytes")
    (out / "summary.json").write_text("{}")
    uri = to_uri(out / "offline" / "v1.parquet")
    assert uri == f"{storage}/demo/r1/features/offline/v1.parquet"

    # an earlier try's object is replaced, not kept beside the new ones
    s3.put("mlp/demo/r1/features/stale.txt", b"from an earlier try")
    assert publish_stage(settings, out, "demo", "r1", "features") == f"{storage}/demo/r1/features"
    keys = sorted(
        o["Key"] for o in s3.client.list_objects_v2(Bucket=s3.name, Prefix="mlp/")["Contents"]
    )
    assert keys == [
        "mlp/demo/r1/features/_SUCCESS",
        "mlp/demo/r1/features/offline/v1.parquet",
        "mlp/demo/r1/features/summary.json",
    ]
    body = s3.client.get_object(Bucket=s3.name, Key="mlp/demo/r1/features/offline/v1.parquet")
    assert body["Body"].read() == b"parquet bytes"

    # another worker (no local copy) reads the URI: the object, or the whole stage prefix
    import shutil

    shutil.rmtree(local_root(settings) / "demo")
    assert to_path(uri).read_bytes() == b"parquet bytes"
    shutil.rmtree(local_root(settings) / "demo")
    folder = to_path(f"{storage}/demo/r1/features")
    assert (folder / "offline" / "v1.parquet").read_bytes() == b"parquet bytes"
    assert (folder / "summary.json").read_text() == "{}"
    # a URI nothing was written to yet is the path a writer will fill (as for local storage)
    assert not to_path(f"{storage}/demo/r2/train").exists()
    assert client_environment(settings)["MLFLOW_S3_ENDPOINT_URL"] == settings.s3_endpoint_url


def test_objects_outside_the_storage_are_fetched_once_per_version(mlp_home, s3):
    uri = s3.put("landing/table.csv", b"a,b\n1,2\n")
    local = to_path(uri)
    assert local.read_bytes() == b"a,b\n1,2\n"
    assert local.is_relative_to(mlp_home.resolve() / "cache")
    first = local.stat().st_mtime_ns
    time.sleep(0.01)
    assert to_path(uri).stat().st_mtime_ns == first  # same size and ETag: not downloaded again
    s3.put("landing/table.csv", b"a,b\n3,4\n")
    assert to_path(uri).read_bytes() == b"a,b\n3,4\n"
    with pytest.raises(FileNotFoundError):
        object_store.fetch(
            f"s3://{s3.name}/nothing/here", mlp_home / "x", get_settings().s3_endpoint_url
        )


def test_feast_offline_files_are_published_and_restored(mlp_home, s3, monkeypatch, tmp_path):
    """Feast reads local offline files; on s3:// storage the features stage publishes them and a
    worker without a copy restores them (local storage: neither copies anything)."""
    from mlplatform.stages import offline_sync

    local = tmp_path / "offline"
    local.mkdir()
    (local / "v1.parquet").write_bytes(b"rows")
    assert offline_sync.publish("demo", local, get_settings()) is None  # local storage

    monkeypatch.setenv("MLP_STORAGE_URI", f"s3://{s3.name}/mlp")
    settings = get_settings()
    assert offline_sync.publish("demo", local, settings) == f"s3://{s3.name}/mlp/demo/feast/offline"
    elsewhere = tmp_path / "other-worker" / "offline"
    assert offline_sync.restore("demo", elsewhere, settings)
    assert sorted(p.name for p in elsewhere.iterdir()) == ["v1.parquet"]
    (local / "v2.parquet").write_bytes(b"more rows")
    assert not offline_sync.restore("demo", local, settings)  # a local copy is never replaced
    assert not offline_sync.restore("other", tmp_path / "none", settings)  # nothing published


def test_the_report_server_fetches_a_report_another_worker_published(mlp_home, s3, monkeypatch):
    """Data Docs written by a worker on another host are fetched from the bucket on first view."""
    import shutil
    import sys

    from tests.conftest import REPO

    monkeypatch.syspath_prepend(str(REPO / "plugins"))  # as Airflow loads plugins
    sys.modules.pop("mlplatform_plugin", None)
    from mlplatform_plugin import fetch_remote_report, report_target

    monkeypatch.setenv("MLP_STORAGE_URI", f"s3://{s3.name}/mlp")
    settings = get_settings()
    out = stage_dir(settings.storage, "demo", "r1", "validate")
    (out / "data_docs").mkdir()
    (out / "data_docs" / "index.html").write_text("<html>suite demo_raw</html>")
    publish_stage(settings, out, "demo", "r1", "validate")
    shutil.rmtree(local_root(settings) / "demo")  # this host never ran the stage

    target, pipeline = report_target("demo/r1/validate/data_docs/index.html")
    assert pipeline == "demo" and not target.exists()
    fetch_remote_report(("demo", "r1", "validate", "data_docs", "index.html"))
    assert target.read_text() == "<html>suite demo_raw</html>"
