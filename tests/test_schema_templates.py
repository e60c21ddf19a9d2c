"""Migrated-schema templates (``mlplatform.schema_templates``, ``mlplatform.embedded_dbs``): a
fresh home's databases copied from a template are what the libraries' own migrations make, and
the copy never replaces a database or hides a failure."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from mlplatform import schema_templates
from mlplatform.schema_templates import Schema
from tests.conftest import REPO


def _stamped_db(path: Path, revision: str = "r1") -> None:
    """A small SQLite DB stamped like an alembic migration leaves it."""
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
        conn.execute("INSERT INTO alembic_version VALUES (?)", (revision,))
        conn.execute("CREATE TABLE thing (id INTEGER PRIMARY KEY, name TEXT)")
    conn.close()


class CountingBuild:
    """A build step that makes a stamped DB and counts its calls."""

    def __init__(self, revision: str | None = "r1") -> None:
        self.calls = 0
        self.revision = revision

    def __call__(self, db_path: Path) -> None:
        self.calls += 1
        if self.revision is None:
            raise RuntimeError("migration failed: no such table")
        _stamped_db(db_path, self.revision)


def _tables(path: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        rows = conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY type, name"
        ).fetchall()
    return rows


def test_a_template_is_built_once_and_copied_private(tmp_path):
    build = CountingBuild()
    schema = Schema("demo", ("1.0",), build)
    cache = tmp_path / "cache"
    first, second = tmp_path / "a" / "x.db", tmp_path / "b" / "x.db"
    first.parent.mkdir()
    second.parent.mkdir()
    assert schema_templates.seed(first, schema, cache)
    assert schema_templates.seed(second, schema, cache)
    assert build.calls == 1
    assert _tables(first) == _tables(second) != []
    assert schema_templates.alembic_revision(second) == "r1"
    assert stat.S_IMODE(second.stat().st_mode) == 0o600
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    assert not list(second.parent.glob(".*.tmp"))


def test_an_existing_database_is_never_replaced(tmp_path):
    target = tmp_path / "x.db"
    target.write_bytes(b"the user's data")
    assert not schema_templates.seed(target, Schema("demo", ("1",), CountingBuild()), tmp_path)
    assert target.read_bytes() == b"the user's data"


def test_a_failed_build_leaves_no_template_and_the_caller_migrates(tmp_path):
    build = CountingBuild(revision=None)
    schema = Schema("demo", ("1",), build)
    assert not schema_templates.seed(tmp_path / "x.db", schema, tmp_path / "cache")
    assert not (tmp_path / "x.db").exists()
    assert not [p for p in (tmp_path / "cache").iterdir() if p.is_dir()]
    assert not schema_templates.seed(tmp_path / "x.db", schema, tmp_path / "cache")
    assert build.calls == 2  # tried again, not remembered as good


def test_a_damaged_template_is_rebuilt(tmp_path):
    build = CountingBuild()
    schema = Schema("demo", ("1",), build)
    cache = tmp_path / "cache"
    assert schema_templates.seed(tmp_path / "a.db", schema, cache)
    stored = schema_templates.template(schema, cache)
    with sqlite3.connect(stored) as conn:  # a revision other than the one the build recorded
        conn.execute("UPDATE alembic_version SET version_num = 'other'")
    conn.close()
    assert schema_templates.seed(tmp_path / "b.db", schema, cache)
    assert build.calls == 2
    assert schema_templates.alembic_revision(tmp_path / "b.db") == "r1"


def test_a_build_in_progress_is_seen_and_not_waited_for(tmp_path):
    import fcntl

    schema = Schema("demo", ("1",), CountingBuild())
    cache = tmp_path / "cache"
    assert not schema_templates.building(schema, cache)
    with open(cache / f"demo-{schema.key}.lock", "a+") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # what a building process holds
        assert schema_templates.building(schema, cache)
        assert schema_templates.template(schema, cache, build=False) is None
    assert not schema_templates.building(schema, cache)


def test_the_key_follows_the_library_and_its_migrations():
    build = CountingBuild()
    assert Schema("s", ("1.0", "abc"), build).key != Schema("s", ("1.1", "abc"), build).key
    assert Schema("s", ("1.0", "abc"), build).key != Schema("s", ("1.0", "abd"), build).key
    assert Schema("s", ("1.0", "abc"), build).key == Schema("s", ("1.0", "abc"), build).key


def test_the_airflow_key_covers_row_settings_not_home_paths(tmp_path, monkeypatch):
    from mlplatform.embedded_dbs import airflow_schema
    from mlplatform.settings import Settings

    def key(home: Path, **extra: str) -> str:
        settings = Settings(home=home)
        return airflow_schema(settings, {**settings.airflow_env(), **extra}).key

    assert key(tmp_path / "a") == key(tmp_path / "b")
    assert key(tmp_path / "a") != key(
        tmp_path / "a", AIRFLOW__CORE__DEFAULT_POOL_TASK_SLOT_COUNT="7"
    )


# ------------------------------------------------------------ the real libraries' migrations

COMPARE = r"""
import json, sqlite3, sys
def dump(path):
    c = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    out = {
        "schema": c.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' "
            "ORDER BY type, name").fetchall(),
        # the same, each statement as its sorted lines (see the MLflow comparison below)
        "schema_lines": sorted(
            [kind, name, sorted(line.strip().rstrip(",") for line in (sql or "").splitlines())]
            for kind, name, _, sql in c.execute(
                "SELECT type, name, tbl_name, sql FROM sqlite_master "
                "WHERE name NOT LIKE 'sqlite_%'").fetchall()
        ),
        "journal": c.execute("PRAGMA journal_mode").fetchone()[0],
        "rows": {},
    }
    for (table,) in c.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall():
        cols = [r[1] for r in c.execute(f'PRAGMA table_info("{table}")')]
        keep = [x for x in cols if x not in ("created_at",)]  # the migration's own clock
        if keep:
            q = ", ".join(f'"{x}"' for x in keep)
            out["rows"][table] = sorted(map(list, c.execute(f'SELECT {q} FROM "{table}"')))
    return out
print(json.dumps([dump(p) for p in sys.argv[1:]], default=str))
"""


def _dump(*paths: Path) -> list[dict]:
    import json

    out = subprocess.run(
        [sys.executable, "-c", COMPARE, *map(str, paths)], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _prepare(home: Path, templates: bool) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(MLP_HOME=str(home), MLP_SCHEMA_TEMPLATES=str(templates).lower())
    probe = (
        "import logging; logging.basicConfig(level=logging.INFO)\n"
        "from mlplatform.airflow_runner import prepare_airflow; prepare_airflow()\n"
        "from mlplatform.settings import get_settings\n"
        "from mlflow import MlflowClient\n"
        "s = get_settings()\n"
        "e = MlflowClient(s.tracking_uri).get_experiment('0')\n"
        "print('artifact_location', e.artifact_location)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, env=env
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_template_copies_are_what_the_migrations_make(tmp_path):
    """A home seeded from the templates against one migrated by ``airflow db migrate`` and by
    MLflow itself: the same schema, alembic revision, rows and journal mode; Airflow's own
    ``check-migrations`` accepts the copy; MLflow's default experiment is the home's own."""
    from mlplatform.embedded_dbs import mlflow_schema
    from mlplatform.settings import get_settings

    # a fresh home copies MLflow's template only once it exists (it is built in the background)
    assert schema_templates.template(mlflow_schema(), get_settings().schema_cache_dir)
    migrated, seeded = tmp_path / "migrated", tmp_path / "seeded"
    reference = _prepare(migrated, templates=False)
    assert "migrated it" in reference.stderr
    done = _prepare(seeded, templates=True)
    assert "copied its schema template" in done.stderr
    assert "MLflow tracking DB: copied its schema template" in done.stderr
    # the default experiment is made by MLflow on first use, as in a migrated home: nothing of
    # the template's build (its scratch paths) is in the copy
    location = done.stdout.strip().splitlines()[-1]
    assert location == reference.stdout.strip().splitlines()[-1]
    assert "schemas" not in location and ".build-" not in location

    airflow_m, airflow_s = _dump(
        migrated / "airflow" / "airflow.db", seeded / "airflow" / "airflow.db"
    )
    assert airflow_s == airflow_m
    assert airflow_s["rows"]["alembic_version"]
    mlflow_m, mlflow_s = _dump(migrated / "mlflow.db", seeded / "mlflow.db")
    # MLflow's migrations rebuild some tables in alembic's batch mode, whose CHECK constraints
    # come out in a different order from one process to the next (a set): same schema, other
    # text. Compared statement by statement as sorted lines.
    assert mlflow_s["schema_lines"] == mlflow_m["schema_lines"]
    assert [r[:3] for r in mlflow_s["schema"]] == [r[:3] for r in mlflow_m["schema"]]
    assert mlflow_s["rows"]["alembic_version"] == mlflow_m["rows"]["alembic_version"]

    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(MLP_HOME=str(seeded))
    check = (
        "from mlplatform.airflow_runner import prepare_airflow; prepare_airflow()\n"
        "from airflow.utils.db import _REVISION_HEADS_MAP, check_migrations, _get_current_revision\n"
        "from airflow import settings\n"
        "from importlib.metadata import version\n"
        "check_migrations(timeout=1)\n"
        "print(_get_current_revision(settings.Session()) == _REVISION_HEADS_MAP[version('apache-airflow-core')])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, cwd=REPO, env=env
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "True"


@pytest.mark.parametrize("setting", ["MLP_SCHEMA_TEMPLATES=false", "AIRFLOW_CONFIG=x"])
def test_templates_off_or_a_hand_written_config_migrate_as_before(tmp_path, monkeypatch, setting):
    from mlplatform import embedded_dbs
    from mlplatform.settings import get_settings

    name, value = setting.split("=")
    monkeypatch.setenv("MLP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv(name, value)
    assert not embedded_dbs.seed_airflow_db(get_settings())
    assert not (tmp_path / "home" / "airflow" / "airflow.db").exists()
