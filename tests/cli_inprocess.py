"""The ``mlplatform`` command line run in this process: same exit code, stdout and stderr as
``python -m mlplatform.cli ARGS`` for commands whose subject is not the process itself.

A subprocess pays the interpreter start and every import again (3-10 s per call on 2 cores);
in-process, the second call reuses the imports. Use a subprocess where the process is the point
(signals, exit on kill, what is left running, a clean interpreter for Airflow's DB binding).
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CliResult:
    """What one command returned: ``returncode``, ``stdout`` and ``stderr`` (as text)."""

    returncode: int
    stdout: str
    stderr: str


@contextlib.contextmanager
def _environment(env: Mapping[str, str] | None, cwd: Path | None) -> Iterator[None]:
    """``os.environ`` replaced by ``env`` (when given) and the working directory by ``cwd``,
    both restored afterwards."""
    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    try:
        if env is not None:
            os.environ.clear()
            os.environ.update(env)
        if cwd is not None:
            os.chdir(cwd)
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        os.chdir(saved_cwd)


def run_cli(*args: str, env: Mapping[str, str] | None = None, cwd: Path | None = None) -> CliResult:
    """Run ``mlplatform ARGS`` through :func:`mlplatform.cli.main.main` with stdout and stderr
    captured; ``env`` replaces the environment for the call (default: this process's). An
    argparse refusal (``SystemExit``) becomes its exit code, as in a subprocess."""
    from mlplatform.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with _environment(env, cwd), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    return CliResult(int(code or 0), out.getvalue(), err.getvalue())
