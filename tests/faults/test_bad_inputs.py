"""A catalogue of bad inputs: each is refused with one readable line, versions nothing, and loses
nothing earlier (the previous data version commit, the DVC remote, ``last_validated.json``).

Every case starts from a platform home where one good batch was ingested and validated. The stage
functions are called directly (fast); only ``mlplatform check`` goes through the CLI.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import pandas as pd
import pytest

from mlplatform import datagen
from mlplatform.config import load_pipeline
from mlplatform.settings import get_settings
from mlplatform.stages import StageError, ValidationFailed
from mlplatform.stages.ingest import ingest
from mlplatform.stages.validate import validate
from mlplatform.storage import stage_dir
from tests.cli_inprocess import run_cli
from tests.conftest import REPO

END = pd.Timestamp("2026-06-01", tz="UTC").to_pydatetime()
CFG = load_pipeline(REPO / "pipelines" / "demo.yaml")


def _good_frame(rows: int = 200, seed: int = 1) -> pd.DataFrame:
    return datagen.generate(rows, seed=seed, end=END)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> Path:
    """A platform home after one good batch was ingested and validated."""
    home = tmp_path_factory.mktemp("baseline") / "home"
    home.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLP_HOME", str(home))
        settings = get_settings()
        good = datagen.write(_good_frame(), home.parent / "good.csv")
        out = stage_dir(settings.storage, "demo", "good", "ingest")
        result = ingest(CFG, str(good), out, settings)
        out = stage_dir(settings.storage, "demo", "good", "validate")
        validate(CFG, result["data_uri"], result["data_version"], out, settings)
    return home


@pytest.fixture
def home(baseline, tmp_path, mlp_home) -> Path:
    """A copy of the baseline home as this test's ``MLP_HOME``."""
    shutil.rmtree(mlp_home)
    shutil.copytree(baseline, mlp_home, symlinks=True)
    return mlp_home


def _state(home: Path) -> dict[str, object]:
    """What must survive a refused batch."""
    repo = home / "data-repo"

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                              check=True).stdout  # fmt: skip

    remote = home / "dvc-remote"
    return {
        "head": git("rev-parse", "HEAD").strip(),
        "status": git("status", "--porcelain"),
        "remote": sorted(str(p.relative_to(remote)) for p in remote.rglob("*") if p.is_file()),
        "last_validated": (home / "storage" / "demo" / "last_validated.json").read_text(),
    }


def _write(name: str, data: bytes | str) -> Callable[[Path], str]:
    def make(tmp: Path) -> str:
        path = tmp / name
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        return str(path)

    return make


def _csv_text(frame: pd.DataFrame) -> str:
    return frame.to_csv(index=False)


def _truncated_mid_row(tmp: Path) -> str:
    text = _csv_text(_good_frame())
    cut = text.rindex("\n", 0, len(text) - 1) + 12  # 12 characters into the last row
    return _write("cut.csv", text[:cut])(tmp)


def _corrupt_parquet(tmp: Path) -> str:
    data = _good_frame().to_parquet(index=False)
    return _write("corrupt.parquet", data[: len(data) // 2])(tmp)


def _not_utf8(tmp: Path) -> str:
    frame = _good_frame(5)
    frame.loc[1, "region"] = "w\xe9st"  # line 3 of the file, saved as Latin-1
    return _write("latin1.csv", _csv_text(frame).encode("latin-1"))(tmp)


def _missing_column(tmp: Path) -> str:
    return _write("nots.csv", _csv_text(_good_frame().drop(columns=["event_time"])))(tmp)


def _bad_column_names(tmp: Path) -> str:
    frame = _good_frame().rename(
        columns={"region": "region name", "usage_minutes": "usage/minutes", "churned": "y.label"}
    )
    return _write("names.csv", _csv_text(frame))(tmp)


def _sql_error(tmp: Path) -> str:
    db = tmp / "app.db"
    sqlite3.connect(db).close()
    return f"sql+sqlite:///{db}?query={quote('SELECT * FROM activity')}"


def _sql_without_query(tmp: Path) -> str:
    return f"sql+sqlite:///{tmp / 'app.db'}"


def _glob_without_match(tmp: Path) -> str:
    return str(tmp / "exports" / "2026-*.csv")


def _second_file_other_columns(tmp: Path) -> str:
    (tmp / "parts").mkdir()
    _good_frame().to_csv(tmp / "parts" / "a.csv", index=False)
    _good_frame().drop(columns=["region"]).to_csv(tmp / "parts" / "b.csv", index=False)
    return str(tmp / "parts" / "*.csv")


CASES = {
    "missing file": (lambda tmp: str(tmp / "nope.csv"), "no such file"),
    "empty file": (_write("empty.csv", b""), "the file is empty"),
    "header only": (
        _write("header.csv", "customer_id,event_time,churned\n"),
        "the batch has no rows",
    ),
    "truncated mid-row": (_truncated_mid_row, "truncated: the last line has 2 of 9 fields"),
    "truncated in a quoted field": (
        _write("quote.csv", 'customer_id,event_time\n1,"2026-01-01\n'),
        "cannot parse as csv: Error tokenizing data",
    ),
    "corrupt parquet": (_corrupt_parquet, "cannot parse as parquet"),
    "missing column": (_missing_column, "missing column(s) event_time (has: customer_id, "),
    "not UTF-8": (_not_utf8, "not UTF-8 text: byte 0xe9 on line 3"),
    "column names Feast/TF cannot take": (
        _bad_column_names,
        "column name(s) 'usage/minutes', 'region name', 'y.label' cannot be used",
    ),
    "SQL error": (_sql_error, "query failed: no such table: activity"),
    "SQL without a query": (_sql_without_query, "no query: add ?query="),
    "glob without a match": (_glob_without_match, "no file matches"),
    "files with other columns": (
        _second_file_other_columns,
        "columns differ from the batch's first",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_refused_in_one_line_and_loses_nothing(home, tmp_path, case):
    make, expected = CASES[case]
    uri = make(tmp_path)
    before = _state(home)
    settings = get_settings()
    out = stage_dir(settings.storage, "demo", "bad", "ingest")
    with pytest.raises(StageError) as err:
        ingest(CFG, uri, out, settings)
    message = str(err.value)
    assert "\n" not in message and message.startswith("ingest: ")
    assert expected in message, message
    assert _state(home) == before, "a refused batch changed the data repo, remote or last validated"
    assert not list(out.iterdir()), "a refused batch left files in the stage directory"


@pytest.mark.parametrize(
    ("key", "expected"),
    [("missing.csv", "no such object"), (None, "no such bucket")],
)
def test_missing_s3_object_or_bucket(home, s3, key, expected):
    before = _state(home)
    uri = f"s3://{s3.name}/exports/{key}" if key else "s3://no-such-bucket-mlp/exports/a.csv"
    settings = get_settings()
    with pytest.raises(StageError) as err:
        ingest(CFG, uri, stage_dir(settings.storage, "demo", "bad", "ingest"), settings)
    assert str(err.value) == f"ingest: {uri}: {expected}"
    assert _state(home) == before


def test_text_in_a_numeric_column_fails_validation_naming_column_and_values(home, tmp_path):
    frame = _good_frame()
    frame["monthly_charges"] = frame["monthly_charges"].astype(object)
    frame.loc[4, "monthly_charges"] = "12,50"
    frame.loc[7, "monthly_charges"] = "unknown"
    path = datagen.write(frame, tmp_path / "typed.csv")
    settings = get_settings()
    before = _state(home)
    ingested = ingest(
        CFG, str(path), stage_dir(settings.storage, "demo", "bad", "ingest"), settings
    )
    out = stage_dir(settings.storage, "demo", "bad", "validate")
    with pytest.raises(ValidationFailed) as err:
        validate(CFG, ingested["data_uri"], ingested["data_version"], out, settings)
    message = str(err.value)
    assert "\n" not in message
    assert (
        "expect_column_values_to_be_in_type_list(monthly_charges): 2 value(s) are not numbers, "
        "e.g. ['12,50', 'unknown']" in message
    )
    assert "expect_column_values_to_be_between(monthly_charges)" not in message  # a consequence
    after = _state(home)
    assert after["last_validated"] == before["last_validated"], "the last good version was lost"
    # ingest versions every batch it can read (the quarantine is keyed by that version); the
    # previous version stays in the history and in the remote
    repo = str(home / "data-repo")
    ancestor = ["git", "-C", repo, "merge-base", "--is-ancestor", before["head"], after["head"]]
    assert subprocess.run(ancestor).returncode == 0
    assert set(before["remote"]) <= set(after["remote"])
    assert (home / "quarantine" / "demo" / ingested["data_version"] / "raw.parquet").exists()


def test_check_refuses_column_names_feast_and_tensorflow_cannot_take(pipelines_dir, mlp_home):
    text = (pipelines_dir / "demo.yaml").read_text()
    text = text.replace(
        "numeric: [tenure_months, monthly_charges,", "numeric: [tenure months, monthly/charges,"
    )
    text = text.replace(
        "categorical: [contract_type, region]", "categorical: [contract.type, region]"
    )
    (pipelines_dir / "demo.yaml").write_text(text)
    done = run_cli("check", "demo", cwd=REPO)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    numeric = next(line for line in lines if "features.numeric" in line)
    categorical = next(line for line in lines if "features.categorical" in line)
    assert (
        "demo.yaml:15: features.numeric: column name(s) 'tenure months', 'monthly/charges' cannot be used"
        in numeric
    )
    assert "'contract.type' cannot be used" in categorical
