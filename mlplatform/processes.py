"""Ending process trees: the trainer's ranks, a run's children. One place, so every stop behaves
the same way: SIGTERM to all, then SIGKILL to whatever is still alive after a grace period."""

from __future__ import annotations

import contextlib
import subprocess

import psutil


def tree(pid: int) -> list[psutil.Process]:
    """The process ``pid`` and all its descendants ([] if it is gone)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def terminate(processes: list[psutil.Process], grace_s: float = 10.0) -> int:
    """SIGTERM ``processes``, SIGKILL those alive after ``grace_s``; returns how many there were."""
    for proc in processes:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, alive = psutil.wait_procs(processes, timeout=grace_s)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    return len(processes)


def stop(proc: subprocess.Popen, grace_s: float = 20.0) -> int | None:
    """Stop a child started with Popen: SIGTERM, wait ``grace_s``, then SIGKILL; returns its
    exit code (None only if it could not be reaped)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=grace_s)
    return proc.returncode
