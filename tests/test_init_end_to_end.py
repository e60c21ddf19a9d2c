"""A second shape of problem, onboarded purely through `mlplatform init` and YAML (issue 13,
item 6): a regression table with string entity ids, a categorical with gaps and column names
with a space trains, passes its gate, is served and answers a request with nulls in it.

Slow (a real Airflow run with TensorFlow/Horovod training, ≈ 2.5 min on 2 cores).
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import time

import pytest

from tests import scaffold_tables
from tests.conftest import REPO

pytestmark = pytest.mark.slow


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mlplatform.cli", *args],
        capture_output=True, text=True, cwd=REPO, env=dict(os.environ), timeout=900,
    )  # fmt: skip


def _rent(area: float, rooms: int, age: float, district: str | None) -> float:
    """The table's rule without noise (see scaffold_tables.rents); a missing district is 15."""
    effect = {"north": 40, "south": 10, "east": 25, "west": 0}.get(district or "", 15)
    return 200 + 6 * area + 30 * rooms + effect - 0.8 * age


def test_regression_table_from_init_to_a_served_answer_with_nulls(
    mlp_home, pipelines_dir, tmp_path, monkeypatch
):
    from mlflow import MlflowClient

    from mlplatform.cli.run import serve_and_predict
    from mlplatform.settings import Settings

    suites = tmp_path / "expectations"
    monkeypatch.setenv("MLP_EXPECTATIONS_PATH", str(suites))
    data = tmp_path / "rents.csv"
    scaffold_tables.rents(2000).to_csv(data, index=False)
    started = time.monotonic()

    init = _cli("init", "rents", "--data", str(data))
    assert init.returncode == 0, init.stderr
    for line in (
        "rename: 'floor area' -> 'floor_area'",
        "timestamp: listed_at (guessed:",
        "entity: listing_id (guessed:",
        "label: monthly_rent (guessed:",
        "model: tabular_regressor",
    ):
        assert line in init.stdout, init.stdout
    assert (suites / "rents_raw.json").exists() and (pipelines_dir / "rents.yaml").exists()

    check = _cli("check", "rents")
    assert check.returncode == 0, check.stdout + check.stderr

    run = _cli("run", "rents")  # source.uri is the table init read: no --data, no edits
    assert run.returncode == 0, run.stdout + run.stderr
    assert re.search(r"^  gate\s+ok\s.*rmse: challenger=", run.stdout, re.M), run.stdout
    assert re.search(r"^  promote\s+ok\s.*served_version=1", run.stdout, re.M), run.stdout

    rows = [
        {"floor_area": 120.0, "rooms": 3, "building_age": 20.0, "district": None},
        {"floor_area": 60.0, "rooms": 2, "building_age": None, "district": "north"},
        {"floor_area": 150.0, "rooms": 4, "building_age": 5.0, "district": "east"},
    ]
    answer = serve_and_predict(Settings(), "rents", rows)
    elapsed = time.monotonic() - started
    assert answer["model_version"] == 1
    predictions = [float(p) for p in answer["predictions"]]
    assert all(math.isfinite(p) for p in predictions)
    # a missing building_age is imputed with the training mean (about 40 years)
    expected = [_rent(120, 3, 20, None), _rent(60, 2, 40, "north"), _rent(150, 4, 5, "east")]
    for got, want in zip(predictions, expected, strict=True):
        assert abs(got - want) < 100, (predictions, expected)

    uri = f"sqlite:///{mlp_home / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    champion = client.get_model_version_by_alias("rents", "champion")
    assert int(champion.version) == 1
    print(f"init -> served prediction: {elapsed:.0f} s")
