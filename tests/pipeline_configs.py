"""Edits of a test's copy of a pipeline YAML (the ``pipelines_dir`` fixture's files)."""

from __future__ import annotations

from pathlib import Path

#: each cron section of ``pipelines/demo.yaml`` and its schedule there
DEMO_CRONS = {"source": "'@daily'", "monitoring": '"@daily"', "retrain": '"@weekly"'}


def drop_crons(pipelines_dir: Path, *sections: str, pipeline: str = "demo") -> None:
    """Set ``<section>.schedule`` to null for each of ``sections`` (keys of :data:`DEMO_CRONS`)
    in ``pipelines_dir/<pipeline>.yaml``.

    On a fresh home Airflow's scheduler starts the latest interval's run of every DAG with a cron
    at once: a scheduled train run (and the train DAG runs one at a time, so a run the test
    triggers waits behind it), a drift check, an ingest of an empty landing interval. A test
    whose runs are all triggered or asset-driven drops the crons it does not exercise (a null
    ``monitoring.schedule`` means no monitor DAG at all; a null ``source.schedule`` an ingest
    DAG without data intervals, run by hand). Raises
    AssertionError when the YAML no longer has the schedule where this expects it."""
    path = pipelines_dir / f"{pipeline}.yaml"
    text = path.read_text()
    for section in sections:
        cron = DEMO_CRONS[section]
        lines = text.splitlines()
        start = lines.index(f"{section}:")
        for i in range(start + 1, len(lines)):
            if not lines[i].startswith("  "):
                raise AssertionError(f"{path}: no {section}.schedule {cron}")
            if lines[i].startswith(f"  schedule: {cron}"):
                lines[i] = "  schedule: null" + lines[i][len(f"  schedule: {cron}") :]
                break
        else:
            raise AssertionError(f"{path}: no {section}.schedule {cron}")
        text = "\n".join(lines) + "\n"
    path.write_text(text)
