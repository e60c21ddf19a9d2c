"""Ingest from real sources: files, globs, S3 (moto's server), SQLite and PostgreSQL, in chunks;
and ``mlplatform data checkout`` restoring any past batch byte for byte from DVC."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from urllib.parse import quote

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy

from mlplatform import datagen
from mlplatform.config import load_pipeline
from mlplatform.settings import get_settings
from mlplatform.sources import merge_types
from mlplatform.stages.ingest import ingest, parse_timestamps
from mlplatform.storage import stage_dir, to_path
from tests.conftest import REPO

END = pd.Timestamp("2026-06-01", tz="UTC").to_pydatetime()


@pytest.fixture
def cfg():
    return load_pipeline(REPO / "pipelines" / "demo.yaml")


def _ingest(cfg, uri: str, run: str = "r1") -> dict:
    settings = get_settings()
    return ingest(cfg, uri, stage_dir(settings.storage, cfg.name, run, "ingest"), settings)


def _output(result: dict) -> pd.DataFrame:
    return pd.read_parquet(to_path(result["data_uri"]))


def _expected(frame: pd.DataFrame) -> pd.DataFrame:
    """What a whole-batch read gives: event times parsed to UTC, exact duplicates dropped, and
    nullable integers as NumPy types (int64, float64 with gaps), as a CSV read gives them."""
    out = frame.copy()
    out["event_time"] = parse_timestamps(out["event_time"])
    for name in out.columns:
        if isinstance(out[name].dtype, pd.Int64Dtype):
            has_gaps = out[name].isna().any()
            out[name] = out[name].astype("float64" if has_gaps else "int64")
    return out.drop_duplicates(ignore_index=True)


def _md5(path) -> str:
    return hashlib.md5(to_path(path).read_bytes()).hexdigest()


@pytest.mark.parametrize("chunk_rows", [37, 1_000_000])
def test_chunked_csv_equals_a_whole_read(mlp_home, tmp_path, cfg, monkeypatch, chunk_rows):
    # gaps in customer_id in some chunks only: int64 in one chunk, float64 in another
    batch = datagen.generate(300, seed=1, end=END, bad_fraction=0.05)
    batch = pd.concat([batch, batch.head(10)], ignore_index=True)  # copies across chunks
    path = tmp_path / "batch.csv"
    batch.to_csv(path, index=False)
    monkeypatch.setenv("MLP_INGEST_CHUNK_ROWS", str(chunk_rows))
    result = _ingest(cfg, str(path))
    assert result["chunks"] == (9 if chunk_rows == 37 else 1)
    assert result["rows"] == 300 and result["duplicates_dropped"] == 10
    pd.testing.assert_frame_equal(_output(result), _expected(pd.read_csv(path)))
    assert result["data_version"] == _md5(path), "DVC versions the file as read"


def test_chunked_parquet_source_equals_its_input(mlp_home, tmp_path, cfg, monkeypatch):
    batch = datagen.generate(250, seed=2, end=END)
    batch = pd.concat([batch, batch.head(5)], ignore_index=True)  # same types in every chunk
    path = tmp_path / "batch.parquet"
    pq.write_table(pa.Table.from_pandas(batch, preserve_index=False), path, row_group_size=60)
    monkeypatch.setenv("MLP_INGEST_CHUNK_ROWS", "40")
    result = _ingest(cfg, path.as_uri())
    assert result["chunks"] >= 5 and result["rows"] == 250 and result["duplicates_dropped"] == 5
    pd.testing.assert_frame_equal(_output(result), _expected(batch))


def test_merge_types_reproduces_a_whole_read():
    assert merge_types([pa.int64(), pa.null(), pa.int64()]) == pa.int64()
    assert merge_types([pa.int64(), pa.float64()]) == pa.float64()
    assert merge_types([pa.int64(), pa.string()]) == pa.string()
    assert merge_types([pa.timestamp("us", "UTC"), pa.timestamp("ns", "UTC")]) == pa.timestamp(
        "ns", "UTC"
    )
    assert merge_types([pa.null()]) == pa.null()


def test_a_column_numeric_in_one_chunk_and_text_in_another_stays_text(
    mlp_home, tmp_path, cfg, monkeypatch
):
    path = tmp_path / "mixed.csv"
    path.write_text(
        "customer_id,event_time,code\n"
        + "".join(f"{i},2026-01-01T00:00:0{i % 10}Z,{i}\n" for i in range(1, 6))
        + "9,2026-01-02T00:00:00Z,A7\n"
    )
    monkeypatch.setenv("MLP_INGEST_CHUNK_ROWS", "2")
    out = _output(_ingest(cfg, str(path)))
    assert out["code"].tolist() == ["1", "2", "3", "4", "5", "A7"]


def test_glob_and_directory_make_one_batch_versioned_as_parquet(mlp_home, tmp_path, cfg):
    data = tmp_path / "data"
    data.mkdir()
    first = datagen.generate(120, seed=3, end=END)
    second = datagen.generate(80, seed=4, end=END)
    first.to_csv(data / "part-1.csv", index=False)
    second[list(reversed(second.columns))].to_csv(data / "part-2.csv", index=False)
    (data / "notes.txt").write_text("not data")
    result = _ingest(cfg, str(data / "part-*.csv"))
    assert result["files"] == 2 and result["rows"] == 200
    expected = _expected(pd.concat([first, second], ignore_index=True))
    pd.testing.assert_frame_equal(_output(result), expected)
    repo = get_settings().dvc_repo_dir
    assert (repo / "demo" / "batch.parquet.dvc").exists()
    assert result["data_version"] == _md5(result["data_uri"]), (
        "several files: DVC versions the batch"
    )
    by_dir = _ingest(cfg, str(data), run="r2")  # a directory: its .csv/.parquet files
    assert by_dir["rows"] == 200 and by_dir["data_version"] == result["data_version"]


def test_s3_object_and_prefix(mlp_home, tmp_path, cfg, s3):
    first = datagen.generate(150, seed=5, end=END)
    second = datagen.generate(50, seed=6, end=END)
    local = tmp_path / "first.csv"
    first.to_csv(local, index=False)
    uri = s3.put("raw/2026/first.csv", local)
    one = _ingest(cfg, uri)
    assert one["rows"] == 150 and one["source_uri"] == uri
    assert one["data_version"] == _md5(local), "one object: DVC versions its bytes"
    assert (get_settings().dvc_repo_dir / "demo" / "batch.csv.dvc").exists()
    pd.testing.assert_frame_equal(_output(one), _expected(pd.read_csv(local)))

    s3.put("raw/2026/second.parquet", second.to_parquet(index=False))
    s3.put("raw/2026/_SUCCESS", b"")
    both = _ingest(cfg, f"s3://{s3.name}/raw/2026/", run="r2")
    assert both["files"] == 2 and both["rows"] == 200
    expected = _expected(pd.concat([first, second], ignore_index=True))
    pd.testing.assert_frame_equal(_output(both), expected)
    globbed = _ingest(cfg, f"s3://{s3.name}/raw/*/*.csv", run="r3")
    assert globbed["files"] == 1 and globbed["rows"] == 150


def test_s3_problems_are_one_line_each(mlp_home, cfg, s3, monkeypatch):
    """Through s3fs on moto's server: a missing object is "no batch", a missing bucket says
    which, the ingest cache key lists size and ETag without downloading, and an endpoint that
    does not answer is transient (retried)."""
    from mlplatform.errors import is_transient
    from mlplatform.sources import NoBatch, SourceError, fingerprint

    s3.put("raw/a.csv", b"x,y\n1,2\n")
    with pytest.raises(NoBatch, match=rf"^ingest: s3://{s3.name}/raw/b.csv: no such object$"):
        _ingest(cfg, f"s3://{s3.name}/raw/b.csv")
    with pytest.raises(SourceError, match=r"^ingest: s3://no-such-bucket-x/k.csv: no such bucket$"):
        _ingest(cfg, "s3://no-such-bucket-x/k.csv")
    with pytest.raises(NoBatch, match="no object matches"):
        _ingest(cfg, f"s3://{s3.name}/raw/*.parquet")
    ((name, size, etag),) = fingerprint(f"s3://{s3.name}/raw/", cfg, get_settings())
    assert (name, size) == (f"s3://{s3.name}/raw/a.csv", 8) and etag
    from tests.services import free_port

    monkeypatch.setenv("MLP_S3_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(SourceError, match="cannot reach the S3 endpoint") as down:
        _ingest(cfg, f"s3://{s3.name}/raw/a.csv")
    assert is_transient(down.value)


def test_dvc_push_and_pull_on_an_s3_remote(mlp_home, tmp_path, cfg, s3, monkeypatch):
    """The DVC remote on s3:// (dvc-s3, the endpoint from MLP_S3_ENDPOINT_URL): ingest pushes
    the batch there, and a data repo whose local cache is gone restores it from the bucket."""
    from mlplatform.data_versions import checkout_version

    monkeypatch.setenv("MLP_DVC_REMOTE", f"s3://{s3.name}/dvc")
    batch = tmp_path / "batch.csv"
    datagen.generate(120, seed=9, end=END).to_csv(batch, index=False)
    result = _ingest(cfg, str(batch))
    md5 = result["data_version"]
    listed = s3.client.list_objects_v2(Bucket=s3.name, Prefix="dvc/")["Contents"]
    assert [o["Key"] for o in listed] == [f"dvc/files/md5/{md5[:2]}/{md5[2:]}"]
    settings = get_settings()
    shutil.rmtree(settings.dvc_repo_dir / ".dvc" / "cache")
    _, restored = checkout_version(settings, "demo", md5, tmp_path / "restored.csv")
    assert restored.read_bytes() == batch.read_bytes()


def _sql_batch(seed: int = 7) -> pd.DataFrame:
    return datagen.generate(230, seed=seed, end=END, bad_fraction=0.05)


def test_sqlite_query_in_chunks(mlp_home, tmp_path, cfg, monkeypatch):
    batch = _sql_batch()
    db = tmp_path / "app.db"
    engine = sqlalchemy.create_engine(f"sqlite:///{db}")
    stored = batch.assign(event_time=batch["event_time"].map(lambda t: t.isoformat()))
    stored.to_sql("activity", engine, index=False)
    engine.dispose()
    monkeypatch.setenv("MLP_INGEST_CHUNK_ROWS", "50")
    query = "SELECT * FROM activity ORDER BY rowid"
    result = _ingest(cfg, f"sql+sqlite:///{db}?query={quote(query)}")
    assert result["chunks"] == 5 and result["rows"] == 230
    pd.testing.assert_frame_equal(_output(result), _expected(batch))
    assert result["data_version"] == _md5(result["data_uri"]), "a query: DVC versions the batch"
    # the query from the pipeline (source.query); the URI alone names the database
    with_query = cfg.model_copy(update={"source": cfg.source.model_copy(update={"query": query})})
    again = _ingest(with_query, f"sql+sqlite:///{db}", run="r2")
    assert again["data_version"] == result["data_version"]


def test_postgresql_query_in_chunks(mlp_home, cfg, monkeypatch, postgres_url):
    batch = _sql_batch(seed=8)
    engine = sqlalchemy.create_engine(postgres_url)
    batch.to_sql("activity_pg", engine, index=False, if_exists="replace")
    engine.dispose()
    monkeypatch.setenv("MLP_INGEST_CHUNK_ROWS", "64")
    query = "SELECT * FROM activity_pg"
    result = _ingest(cfg, f"sql+{postgres_url}?query={quote(query)}")
    assert result["chunks"] == 4 and result["rows"] == 230
    assert "query 'SELECT * FROM activity_pg'" in result["source_uri"]
    pd.testing.assert_frame_equal(_output(result), _expected(batch))


def test_passwords_are_hidden_in_outputs_and_errors(mlp_home, cfg):
    from mlplatform.stages import StageError

    with pytest.raises(StageError) as err:
        _ingest(cfg, "sql+postgresql+psycopg://reader:s3cret@127.0.0.1:1/app?query=SELECT%201")
    assert "s3cret" not in str(err.value) and "reader:***@" in str(err.value)
    assert "\n" not in str(err.value)


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "mlplatform.cli", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def test_data_checkout_restores_any_version_byte_for_byte(mlp_home, tmp_path, cfg):
    first = datagen.write(datagen.generate(120, seed=11, end=END), tmp_path / "b1.csv")
    second = datagen.write(datagen.generate(90, seed=12, end=END), tmp_path / "b2.csv")
    r1 = _ingest(cfg, str(first))
    r2 = _ingest(cfg, str(tmp_path / "b*.csv"), run="r2")  # two files: a Parquet batch
    settings = get_settings()
    shutil.rmtree(settings.dvc_repo_dir / ".dvc" / "cache")  # only the DVC remote has them now
    listed = _cli("data", "versions", "demo")
    assert listed.returncode == 0, listed.stderr
    assert r1["data_version"] in listed.stdout and r2["data_version"] in listed.stdout

    out1 = tmp_path / "restored" / "v1.csv"
    done = _cli("data", "checkout", "demo", "--version", r1["data_version"], "--out", str(out1))
    assert done.returncode == 0, done.stderr
    assert out1.read_bytes() == first.read_bytes()
    out2 = tmp_path / "restored" / "v2.parquet"
    done = _cli("data", "checkout", "demo", "--version", r2["data_commit"][:9], "--out", str(out2))
    assert done.returncode == 0, done.stderr
    assert out2.read_bytes() == to_path(r2["data_uri"]).read_bytes()
    assert second.exists()

    missing = _cli("data", "checkout", "demo", "--version", "0" * 32)
    assert missing.returncode == 1
    assert "has no data version" in missing.stderr and len(missing.stderr.strip().splitlines()) == 1
