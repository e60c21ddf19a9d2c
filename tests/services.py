"""Real servers for tests, each on a free loopback port, always stopped: Redis, PostgreSQL, S3.

``scripts/install_services.sh`` (run by ``make env``) installs redis-server and PostgreSQL from the
Debian packages; moto's S3 server comes with the Python environment. A server whose binary is
missing makes its tests skip, saying which binary and how to install it.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlplatform import processes

INSTALL_HINT = "run scripts/install_services.sh (make env does)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, proc: subprocess.Popen | None, what: str, timeout_s: float = 30):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before listening on {port}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {timeout_s:.0f}s")


def _stop(proc: subprocess.Popen) -> None:
    processes.stop(proc, grace_s=15)


def require_binary(name: str, *candidates: str) -> str:
    """The path of ``name`` (on PATH or one of the glob ``candidates``), or skip saying why."""
    found = shutil.which(name) or next(
        (p for pattern in candidates for p in sorted(glob.glob(pattern))), None
    )
    if not found:
        pytest.skip(f"{name} is not installed: {INSTALL_HINT}")
    return found


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """``redis-server`` without persistence on a free loopback port; yields ``127.0.0.1:PORT``."""
    binary = require_binary("redis-server")
    port = free_port()
    cmd = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
           "--daemonize", "no", "--loglevel", "warning"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_port(port, proc, "redis-server")
        yield f"127.0.0.1:{port}"
    finally:
        _stop(proc)


def _as_user(user: str | None, cmd: list[str]) -> list[str]:
    return ["runuser", "-u", user, "--", *cmd] if user else cmd


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """A throw-away PostgreSQL cluster (Debian binaries) on a free loopback port, data and socket
    in a temp dir; yields ``postgresql+psycopg://mlp@127.0.0.1:PORT/postgres`` (trust auth).

    ``initdb`` refuses root, so as root the cluster runs as ``postgres`` (or ``nobody``)."""
    initdb = require_binary("initdb", "/usr/lib/postgresql/*/bin/initdb")
    bin_dir = Path(initdb).parent
    user = None
    if os.geteuid() == 0:
        names = {p.pw_name for p in pwd.getpwall()}
        user = "postgres" if "postgres" in names else "nobody"
    data = Path(tempfile.mkdtemp(prefix="mlp-pg-"))
    if user:
        entry = pwd.getpwnam(user)
        os.chown(data, entry.pw_uid, entry.pw_gid)
    port = free_port()
    run = {"check": True, "capture_output": True, "text": True, "timeout": 120}
    pg_ctl = str(bin_dir / "pg_ctl")
    try:
        subprocess.run(_as_user(user, [initdb, "-D", str(data / "db"), "-U", "mlp", "--auth=trust",
                                       "--no-sync", "-E", "UTF8"]), **run)  # fmt: skip
        options = f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run(_as_user(user, [pg_ctl, "-D", str(data / "db"), "-l", str(data / "log"),
                                       "-o", options, "-w", "-t", "60", "start"]), **run)  # fmt: skip
        yield f"postgresql+psycopg://mlp@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(_as_user(user, [pg_ctl, "-D", str(data / "db"), "-m", "immediate", "-w",
                                       "stop"]), capture_output=True, timeout=60)  # fmt: skip
        shutil.rmtree(data, ignore_errors=True)


@contextlib.contextmanager
def moto_s3_server() -> Iterator[str]:
    """moto's S3 server (the real S3 protocol over HTTP) on a free loopback port; yields its URL."""
    binary = Path(sys.executable).parent / "moto_server"
    if not binary.exists():
        pytest.skip(f"moto_server is not installed in {binary.parent}: moto[server] is locked")
    port = free_port()
    proc = subprocess.Popen([str(binary), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for_port(port, proc, "moto_server")
        urllib.request.urlopen(url, timeout=10).read()  # answers once its routes are loaded
        yield url
    finally:
        _stop(proc)
