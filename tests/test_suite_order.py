"""The suite's own machinery: the order files go to the xdist workers, and ``tests.dag_runs``'s
runs in one process."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.conftest import heaviest_first
from tests.dag_runs import split_runs


def _item(path: str, name: str) -> SimpleNamespace:
    return SimpleNamespace(path=Path(path), nodeid=f"{path}::{name}")


def test_files_go_heaviest_tier_first_and_keep_their_tests_in_order():
    items = [
        _item("tests/test_a.py", "unit_1"),
        _item("tests/test_b.py", "integration_1"),
        _item("tests/test_c.py", "unit_2"),
        _item("tests/test_c.py", "e2e_step_1"),
        _item("tests/test_c.py", "e2e_step_2"),
        _item("tests/test_d.py", "e2e_1"),
        _item("tests/test_e.py", "integration_2"),
    ]
    tiers = {i.nodeid: i.nodeid.rsplit("::", 1)[1].split("_")[0] for i in items}
    ordered = [i.nodeid.split("::")[1] for i in heaviest_first(items, tiers)]
    # a file with one end-to-end test counts as end-to-end, whole and in its own order
    assert ordered == [
        "unit_2", "e2e_step_1", "e2e_step_2", "e2e_1", "integration_1", "integration_2", "unit_1",
    ]  # fmt: skip


def test_dag_runs_splits_its_arguments_at_then():
    first, second = split_runs(
        ["mlp_demo_ingest", "--logical-date", "2026-03-02", "--then",
         "mlp_demo_train", "--run-type", "asset_triggered", "--consume", "mlp_demo_data"]
    )  # fmt: skip
    assert (first.dag_id, first.run_type, first.logical_date) == ("mlp_demo_ingest", "manual", "2026-03-02")  # fmt: skip
    assert (second.dag_id, second.run_type, second.consume) == ("mlp_demo_train", "asset_triggered", ["mlp_demo_data"])  # fmt: skip
    with pytest.raises(SystemExit):  # a run without its DAG id is argparse's refusal
        split_runs(["mlp_demo_ingest", "--then"])
