"""Migrated-schema templates for the embedded SQLite databases (Airflow's metadata DB, MLflow's
tracking DB): migrate once per library version, copy into every fresh platform home.

A fresh home used to pay for the full schema migration of both databases on its first run
(``airflow db migrate`` ≈ 6 s, MLflow's table creation and alembic upgrades ≈ 1.5-4 s), and so
did every test with a fresh home. Here the library's *own* migration runs once into a scratch
directory and the result is kept as a template; a fresh home gets a copy.

Contract:

* A template is made only by the library's own migration (:class:`Schema.build`), never by hand,
  and holds nothing home-specific: the migration of an empty DB writes only the schema, its
  alembic revision and rows that the key covers (Airflow: the default pool and the log-name
  templates from configuration; MLflow: none; its default experiment, whose artifact location is
  home-specific, is created by MLflow on first use of the copy).
* Templates live in ``<cache>/<schema>-<key>/`` (``Settings.schema_cache``: default
  ``$XDG_CACHE_HOME/mlplatform/schemas``, else ``~/.cache/mlplatform/schemas``), private
  (``0700``/``0600``). The key hashes the library's version, the names of its migration scripts
  and the settings that become rows, so a library upgrade or a new migration gets a new template.
* Building is serialised per key by a file lock; a template directory appears by ``rename`` only
  when complete (``meta.json`` records the alembic revision the migration left).
* :func:`seed` copies a valid template (its revision equals the recorded one and SQLite's
  ``quick_check`` passes) with SQLite's online backup into a temporary file, then links it into
  place, which fails if the target exists: a database that is already there is never replaced.
  It returns False (the caller then migrates as before) on any failure: no template can be made,
  the copy fails, templates are off (``MLP_SCHEMA_TEMPLATES=false``).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata, util
from pathlib import Path

from mlplatform.permissions import PRIVATE_FILE, private_dir

log = logging.getLogger("mlplatform.schema_templates")

META = "meta.json"
DB_NAME = "template.db"


@dataclass(frozen=True)
class Schema:
    """One database schema that can be templated.

    ``name`` names the cache entry; ``key_parts`` are what the template depends on (library
    version, migration script names, settings that become rows); ``build(db_path)`` migrates an
    empty SQLite database at ``db_path`` with the library's own migration (a subprocess)."""

    name: str
    key_parts: tuple[str, ...]
    build: Callable[[Path], None]

    @property
    def key(self) -> str:
        return hashlib.sha256("\0".join((self.name, *self.key_parts)).encode()).hexdigest()[:16]


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/mlplatform/schemas``, else ``~/.cache/mlplatform/schemas``.

    (The XDG rule in two lines rather than platformdirs, which the project does not depend on.)"""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mlplatform" / "schemas"


def package_migrations(distribution: str, package: str, *parts: str) -> tuple[str, str]:
    """``(version, digest of the migration script names)`` of the installed ``distribution``
    whose package ``package`` keeps its scripts in ``<package dir>/<parts...>``; found without
    importing the package."""
    spec = util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise LookupError(f"{package} is not installed")
    folder = Path(next(iter(spec.submodule_search_locations)), *parts)
    names = sorted(p.name for p in folder.glob("*.py"))
    if not names:
        raise LookupError(f"no migration scripts in {folder}")
    digest = hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]
    return metadata.version(distribution), digest


def alembic_revision(db_path: Path) -> str | None:
    """The alembic revision stamped in the SQLite DB at ``db_path`` (None without one)."""
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as conn:
        try:
            rows = conn.execute("SELECT version_num FROM alembic_version").fetchall()
        except sqlite3.OperationalError:
            return None
    return rows[0][0] if len(rows) == 1 else None


def _backup(source: Path, target: Path) -> None:
    """A consistent copy of the SQLite DB ``source`` (WAL content included) at ``target``."""
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)
        finally:
            dst.close()
    finally:
        src.close()


def _valid(entry: Path) -> bool:
    """The template in ``entry`` is complete, stamped with its recorded revision and intact."""
    try:
        meta = json.loads((entry / META).read_text())
        db = entry / DB_NAME
        if not meta.get("revision") or alembic_revision(db) != meta["revision"]:
            return False
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            return conn.execute("PRAGMA quick_check").fetchone()[0] == "ok"
    except (OSError, ValueError, sqlite3.Error):
        return False


def building(schema: Schema, cache_dir: Path) -> bool:
    """Whether another process is building ``schema``'s template right now (holds its lock)."""
    private_dir(cache_dir)
    with open(cache_dir / f"{schema.name}-{schema.key}.lock", "a+") as lock:
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
    return False


def template(schema: Schema, cache_dir: Path, build: bool = True) -> Path | None:
    """The template DB of ``schema``, built first if the cache has none (``build=False``: None
    then); None if it cannot be made."""
    private_dir(cache_dir)
    entry = cache_dir / f"{schema.name}-{schema.key}"
    if _valid(entry):
        return entry / DB_NAME
    if not build:
        return None
    with open(cache_dir / f"{schema.name}-{schema.key}.lock", "a+") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        if _valid(entry):  # another process built it while we waited
            return entry / DB_NAME
        shutil.rmtree(entry, ignore_errors=True)  # an invalid or half-removed entry
        scratch = Path(tempfile.mkdtemp(prefix=f".build-{schema.name}-", dir=cache_dir))
        try:
            started = time.monotonic()
            migrated = scratch / "work" / "migrated.db"
            private_dir(migrated.parent)
            schema.build(migrated)
            revision = alembic_revision(migrated)
            if revision is None:
                raise RuntimeError(f"the {schema.name} migration left no alembic revision")
            _backup(migrated, scratch / DB_NAME)
            shutil.rmtree(scratch / "work")
            (scratch / DB_NAME).chmod(PRIVATE_FILE)
            meta = {
                "schema": schema.name,
                "key_parts": list(schema.key_parts),
                "revision": revision,
            }
            (scratch / META).write_text(json.dumps(meta, indent=1) + "\n")
            scratch.rename(entry)
            log.info("built the %s schema template %s in %.1fs", schema.name, entry,
                     time.monotonic() - started)  # fmt: skip
        except Exception as exc:  # the caller migrates the home itself
            log.warning("no %s schema template (%s: %s)", schema.name, type(exc).__name__, exc)
            return None
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return entry / DB_NAME if _valid(entry) else None


def seed(db_path: Path, schema: Schema, cache_dir: Path, build: bool = True) -> bool:
    """Copy ``schema``'s template to ``db_path`` (``0600``) if nothing is there yet, building
    the template first if the cache has none (``build=False``: then return False); True if the
    copy is in place, False if the caller must migrate (see the module doc)."""
    if db_path.exists():
        return False
    source = template(schema, cache_dir, build=build)
    if source is None:
        return False
    tmp = db_path.with_name(f".{db_path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
        os.close(fd)
        _backup(source, tmp)
        os.link(tmp, db_path)  # fails if the DB appeared meanwhile: never replace one
        return True
    except FileExistsError:
        return False
    except (OSError, sqlite3.Error) as exc:
        log.warning("could not copy the %s schema template: %s", schema.name, exc)
        return False
    finally:
        tmp.unlink(missing_ok=True)
