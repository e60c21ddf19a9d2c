"""Shared fixtures: an isolated platform home per test (MLP_HOME), the repo root, small data."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


@pytest.fixture
def mlp_home(tmp_path, monkeypatch) -> Path:
    """A fresh embedded platform home; every setting derives from it."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("MLP_HOME", str(home))
    for key in list(os.environ):
        if key.startswith("AIRFLOW__") or key == "AIRFLOW_HOME":
            monkeypatch.delenv(key)
    monkeypatch.setenv("AIRFLOW_HOME", str(home / "airflow"))
    return home


@pytest.fixture
def pipelines_dir(tmp_path, monkeypatch) -> Path:
    """A copy of pipelines/ that a test may edit (MLP_PIPELINES_PATH points at it)."""
    target = tmp_path / "pipelines"
    shutil.copytree(REPO / "pipelines", target)
    monkeypatch.setenv("MLP_PIPELINES_PATH", str(target))
    return target
