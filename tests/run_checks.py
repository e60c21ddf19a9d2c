"""Checks of what a real training run leaves for the Airflow UI (issue 14 items 4 and 5), shared
by the end-to-end tests: every task's log where the UI's log reader looks, no error-level lines
in successful tasks (TensorFlow's start-up noise included), the validate task's expectation
table, the gate's decision as its last line, http links (not ``file://``), and the run's note."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from mlplatform.quiet_tf import is_startup_noise

#: Airflow's own lines after a task's code returned (the task runner's epilogue)
EPILOGUE = ("Done. Returned value was", "::group::Post Execute", "Pushing xcom", "Task instance")


def task_log(home: Path, dag_id: str, run_id: str, task_id: str) -> list[dict[str, Any]]:
    """The JSON records of a task's first attempt, from where Airflow's log reader opens it."""
    path = (
        home / "airflow" / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}"
        / f"task_id={task_id}" / "attempt=1.log"
    )  # fmt: skip
    assert path.exists(), f"no task log where the UI looks: {path}"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def own_lines(records: list[dict[str, Any]]) -> list[str]:
    """The events a task wrote before Airflow's epilogue."""
    events = [str(r.get("event", "")) for r in records]
    end = next((i for i, e in enumerate(events) if e.startswith(EPILOGUE)), len(events))
    return [e.split(" loc=")[0] for e in events[:end]]


def run_note(home: Path, dag_id: str, run_id: str) -> str | None:
    """The run's note as Airflow's UI shows it (the ``dag_run_note`` row)."""
    with sqlite3.connect(home / "airflow" / "airflow.db") as db:
        row = db.execute(
            "SELECT n.content FROM dag_run_note n JOIN dag_run r ON r.id = n.dag_run_id "
            "WHERE r.dag_id = ? AND r.run_id = ?",
            (dag_id, run_id),
        ).fetchone()
    return row[0] if row else None


def assert_run_explains_itself(home: Path, run_id: str, tasks: list[str]) -> None:
    """A successful promoting run of ``mlp_demo_train`` (see the module doc)."""
    dag = "mlp_demo_train"
    for task in tasks:
        records = task_log(home, dag, run_id, task)
        assert records, f"{task}: empty log"
        errors = [r["event"] for r in records if r.get("level") in ("error", "critical")]
        assert not errors, f"{task}: error lines in a successful task: {errors[:3]}"
        noise = [r["event"] for r in records if is_startup_noise(str(r.get("event", "")))]
        assert not noise, f"{task}: TensorFlow start-up lines: {noise[:3]}"
    validate = own_lines(task_log(home, dag, run_id, "validate"))
    header = next(i for i, e in enumerate(validate) if e.split() == ["outcome", "expectation", "column", "unexpected"])  # fmt: skip
    table = validate[header + 1 : header + 19]
    assert len(table) == 18 and all(row.split()[0] == "ok" for row in table), table
    assert any(e.startswith("GX Data Docs: http://") and "/mlplatform/reports/demo/" in e for e in validate)  # fmt: skip
    register = own_lines(task_log(home, dag, run_id, "register"))
    assert any(e.startswith("in the platform view: http://") for e in register), register
    gate = own_lines(task_log(home, dag, run_id, "gate"))
    assert gate[-1].startswith("gate decision: promote v1: auc "), gate[-3:]
    note = run_note(home, dag, run_id)
    assert note is not None, "the run has no note"
    lines = note.splitlines()
    assert lines[0].startswith("retrain: started by hand") and "- outcome: promoted" in lines
    assert any(line.startswith("- data version `") and "rows)" in line for line in lines), note
    assert any(line.startswith("- auc: challenger v1 ") for line in lines), note
    assert "- gate: promote" in lines and "- served version: 1" in lines, note
