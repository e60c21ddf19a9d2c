"""Orchestration overhead of ``mlplatform run`` (issue 15, item 6): wall time minus the stages'
own seconds, for the demo's train DAG on a fresh platform home and again on the warm home.

Usage::

    .venv/bin/python benchmarks/bench_orchestration.py [--rows 4000] [--repo DIR]
        [--workdir DIR] [--label NAME] [--schema-cache DIR]

Writes ``--rows`` rows of ``mlplatform.datagen`` demo data (batch 1, then batch 2: what two
``mlplatform demo`` calls write), and runs ``python -m mlplatform.cli run demo --data BATCH`` of
the checkout ``--repo`` (default: this one; another checkout measures the code before a change
on the same machine in the same sitting) on a fresh ``MLP_HOME`` under ``--workdir``, then on
the same, now warm, home with batch 2. For each run it prints: the command's wall seconds, the
stages' own seconds (the sum of the run's ``summary.json`` ``seconds``), the overhead (wall minus
stages) in seconds and percent, and where the overhead went, from the runner log's timestamps:

* runner start: command start -> the first task starts (``[DAG TEST] starting``): the command's
  checks, the runner's interpreter and imports, the home's databases, the DagBag, writing the
  DAGs and the run to the metadata DB (and, where the runner logs it, the Execution API build);
* first-task start: the first task starts -> Airflow says "Task started" (the in-process
  Execution API answering its first request);
* task gaps: the rest of the run between the first "Task started" and the last task's end
  that is not a stage's own seconds (every task's start and end, XComs, the gaps between tasks);
* exit: the last task's end -> the command returns.

Nothing is patched or skipped: the runs are the real command. ``--schema-cache`` points the
schema templates (``MLP_SCHEMA_CACHE``) somewhere; an empty directory measures a cold cache.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

#: ``2026-11-28 16:34:38,208`` (stdlib logging, local time) or ``2026-11-28T16:34:43.887176Z``
_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d[,.]\d+)(Z?)")
#: runner log lines (by their text) that end a start-up phase, in order; older code lacks some
PHASES = (
    ("runner process up", "runner started"),
    ("home's DBs ready", "Airflow metadata DB:"),
    ("Airflow imported", "runner: Airflow imported"),
    ("DagBag parsed", "runner: DagBag parsed"),
    ("Execution API built", "in-process Execution API:"),
    ("run requested", "runner: running "),
    ("run created", "Created dag run."),
)


def _stamp(line: str) -> float | None:
    m = _STAMP.match(line)
    if not m:
        return None
    text = m.group(1).replace(",", ".").replace(" ", "T")
    moment = datetime.fromisoformat(text)
    return (moment.replace(tzinfo=UTC) if m.group(2) else moment).timestamp()


def parse_log(path: Path) -> dict:
    """Timestamps of the runner log's landmarks (seconds since the epoch)."""
    marks: dict = {"task_start": [], "task_end": [], "task_started": []}
    for line in path.read_text(errors="replace").splitlines():
        at = _stamp(line)
        if at is None:
            continue
        for name, text in PHASES:
            if text in line and name not in marks:
                marks[name] = at
        if "[DAG TEST] starting task_id=" in line:
            marks["task_start"].append(at)
        elif "[DAG TEST] end task" in line:
            marks["task_end"].append(at)
        elif "Task started" in line:
            marks["task_started"].append(at)
    return marks


def stage_seconds(home: Path, run_id: str) -> dict[str, float]:
    """The run's stages and their own seconds (``summary.json``)."""
    from mlplatform.storage import run_key

    run_dir = home / "storage" / "demo" / run_key(run_id)
    return {
        p.parent.name: float(json.loads(p.read_text())["seconds"])
        for p in run_dir.glob("*/summary.json")
    }


def one_run(repo: Path, home: Path, data: Path, env: dict[str, str]) -> dict:
    """Run ``mlplatform run demo --data data`` of ``repo`` on ``home``; its numbers."""
    load = os.getloadavg()[0]
    started = time.time()
    done = subprocess.run(
        [sys.executable, "-m", "mlplatform.cli", "run", "demo", "--data", str(data)],
        cwd=repo,
        env={**env, "MLP_HOME": str(home), "PYTHONPATH": str(repo)},
        capture_output=True,
        text=True,
        timeout=1800,
    )
    ended = time.time()
    if done.returncode != 0:
        raise SystemExit(f"the run failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    run_id = re.search(r"^run (\S+): success", done.stdout, re.M).group(1)
    log = Path(re.search(r"\(Airflow log: (\S+)\)", done.stdout).group(1))
    stages = stage_seconds(home, run_id)
    marks = parse_log(log)
    wall, total = ended - started, sum(stages.values())
    first_start, first_started = marks["task_start"][0], marks["task_started"][0]
    last_end = marks["task_end"][-1]
    phases, previous = [], started
    for name, _ in PHASES:
        if name in marks:
            phases.append((name, marks[name] - previous))
            previous = marks[name]
    phases.append(("first task starts", first_start - previous))
    return {
        "wall": wall,
        "stages": total,
        "overhead": wall - total,
        "runner_start": first_start - started,
        "first_task": first_started - first_start,
        "task_gaps": (last_end - first_started) - total,
        "exit": ended - last_end,
        "tasks": len(marks["task_end"]),
        "load": load,
        "phases": phases,
        "log": str(log),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the fresh-home and warm-home measurements; print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4000)
    parser.add_argument("--repo", type=Path, default=REPO, help="checkout to measure")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--label", default=None, help="name of this variant in the table")
    parser.add_argument("--schema-cache", type=Path, default=None, help="MLP_SCHEMA_CACHE")
    args = parser.parse_args(argv)

    from mlplatform import datagen

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-orch-"))
    home = workdir / "home"
    if home.exists():
        raise SystemExit(f"{home} exists: give a fresh --workdir")
    data = [
        datagen.write(datagen.generate(args.rows, seed=n), workdir / "data" / f"batch-{n}.csv")
        for n in (1, 2)
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLP_"))}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    if args.schema_cache is not None:
        env["MLP_SCHEMA_CACHE"] = str(args.schema_cache)
    label = args.label or str(args.repo)
    results = [
        (label, "fresh home", one_run(args.repo.resolve(), home, data[0], env)),
        (label, "warm home", one_run(args.repo.resolve(), home, data[1], env)),
    ]
    print(
        "| variant | home | run wall s | stages s | overhead s | overhead % | runner start s "
        "| first-task start s | task gaps s (tasks) | exit s | load |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for variant, kind, r in results:
        print(
            f"| {variant} | {kind} | {r['wall']:.1f} | {r['stages']:.1f} | {r['overhead']:.1f} "
            f"| {100 * r['overhead'] / r['wall']:.0f} % | {r['runner_start']:.1f} "
            f"| {r['first_task']:.1f} | {r['task_gaps']:.1f} ({r['tasks']}) | {r['exit']:.1f} "
            f"| {r['load']:.1f} |"
        )
    print()
    print("runner start, phase by phase (seconds since the previous landmark the log has):")
    for variant, kind, r in results:
        print(f"  {variant}, {kind}: " + ", ".join(f"{n} {s:.1f}" for n, s in r["phases"]))
    print(f"(logs: {', '.join(r['log'] for _, _, r in results)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
