"""``mlplatform demo-drift``: the continuous-training loop on Airflow's real scheduler.

Not ``dags test``: Airflow's scheduler, dag-processor, triggerer and API server run on the
embedded home (:class:`mlplatform.airflow_services.AirflowServices`), and every DAG run below is
started by the scheduler, from a schedule stand-in (a trigger, as the UI's button does) or from an
asset event. The command prints the chain as it happens, with times since its start:

1. a champion exists (else the demo trains one: a manual run of ``mlp_demo_train``);
2. the world drifts: a drifted, labelled batch lands in the landing directory and the ingest DAG
   (triggered, standing in for its schedule) validates it -> the data asset;
3. drifted traffic reaches the served model (the request log);
4. the monitor DAG (triggered, standing in for ``monitoring.schedule``) finds drift -> the drift
   asset -> the scheduler starts ``mlp_demo_train`` on that event -> ``decide`` (the reason) ->
   gate -> a new served version, which the running server answers with;
5. a second drift inside ``monitoring.cooldown_hours``: the monitor fires again, the train run it
   starts is skipped by ``decide`` (cool-down): no retrain storm.

Stopping (end, error, Ctrl-C, SIGTERM) stops the server and every Airflow process it started.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlplatform import processes
from mlplatform.cli.common import OutcomeError, say
from mlplatform.settings import Settings

PIPELINE = "demo"
TERMINAL = ("success", "failed")


class Chain:
    """Prints each step of the loop with the time since the start (``[+mm:ss]``)."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.started = datetime.now(UTC)

    def __call__(self, message: str) -> None:
        elapsed = int(time.monotonic() - self.t0)
        say(f"[+{elapsed // 60:02d}:{elapsed % 60:02d}] {message}")


def _summary(settings: Settings, run_id: str, stage: str) -> dict[str, Any]:
    """A stage's ``summary.json`` outputs in run ``run_id`` ({} when it has none)."""
    from mlplatform.storage import local_root, run_key

    path = local_root(settings) / PIPELINE / run_key(run_id) / stage / "summary.json"
    try:
        return dict(json.loads(path.read_text()).get("outputs") or {})
    except (OSError, ValueError):
        return {}


def _wait_run(services: Any, dag_id: str, run_id: str, timeout_s: float) -> dict[str, Any]:
    from mlplatform import airflow_db
    from mlplatform.airflow_services import wait_for

    def finished() -> dict[str, Any] | None:
        run = airflow_db.dag_run(dag_id, run_id)
        return run if run and run["state"] in TERMINAL else None

    return wait_for(finished, timeout_s, f"run {run_id} of {dag_id}", services)


def _next_asset_run(
    services: Any, dag_id: str, after: datetime, timeout_s: float
) -> dict[str, Any]:
    """The first run of ``dag_id`` that an asset event started after ``after``."""
    from mlplatform import airflow_db
    from mlplatform.airflow_services import wait_for

    def started() -> list[dict[str, Any]]:
        runs = airflow_db.dag_runs(dag_id, since=after)
        return [r for r in runs if r["run_type"] == "asset_triggered"]

    runs = wait_for(started, timeout_s, f"an asset-triggered run of {dag_id}", services)
    return runs[0]


def _stage_states(run: dict[str, Any]) -> str:
    return ", ".join(f"{task}={state}" for task, state in sorted(run["tasks"].items()))


def _serve(settings: Settings, port: int) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "serving.server", "--model-base", str(settings.models_dir),
           "--host", "127.0.0.1", "--port", str(port), "--log-dir", str(settings.request_log_dir),
           "--pipelines", str(settings.pipelines_dir)]  # fmt: skip
    log_path = settings.home_dir / "logs" / "serving-loop.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log_file:
        return subprocess.Popen(
            cmd, stdout=log_file, stderr=subprocess.STDOUT, cwd=settings.repo_root
        )


def _send_traffic(url: str, rows: int, drift: float, seed: int) -> int:
    """Send ``rows`` drifted rows (features and the entity key) to the served demo model in
    requests of 100; returns the model version that answered the last one."""
    from mlplatform import datagen
    from serving.client import PredictionClient

    frame = datagen.generate(rows, seed=seed, drift=drift).drop(columns=["churned", "event_time"])
    records = json.loads(frame.to_json(orient="records"))
    client = PredictionClient(url)
    version = 0
    for start in range(0, len(records), 100):
        answer = client.predict(PIPELINE, records[start : start + 100])
        version = int(answer.model_version or version)
    return version


def cmd_demo_drift(args: argparse.Namespace, settings: Settings) -> int:
    """See the module docstring."""
    from mlplatform import airflow_db, datagen
    from mlplatform.airflow_runner import ensure_ui_login
    from mlplatform.airflow_services import AirflowServices, wait_for
    from mlplatform.assets import drift_asset_name
    from mlplatform.cli.run import _free_port
    from mlplatform.config import find_pipeline, load_pipeline
    from mlplatform.stages.registry import alias_version
    from serving.client import PredictionClient

    cfg = load_pipeline(find_pipeline(PIPELINE, settings.pipelines_dir))
    train, ingest, monitor = (f"mlp_{PIPELINE}_{kind}" for kind in ("train", "ingest", "monitor"))
    chain = Chain()
    timeout = float(args.timeout)
    say(
        "starting Airflow's scheduler, dag-processor, triggerer and API server on the embedded home"
    )
    champion = alias_version(settings, cfg.serving.model_name, "champion")
    services = AirflowServices(settings)
    server: subprocess.Popen[bytes] | None = None
    try:
        services.start()
        services.wait_ready()
        login = ensure_ui_login(settings)
        chain(
            f"Airflow up: UI {services.url} (user {login.user}, password in {login.password_file})"
        )
        for dag_id in (train, ingest, monitor):
            wait_for(
                lambda d=dag_id: airflow_db.dag_parsed(d), 180, f"DAG {dag_id} parsed", services
            )
        chain(f"DAGs parsed: {train}, {ingest}, {monitor}")

        # 1. a champion
        if champion is None:
            batch = datagen.write(
                datagen.generate(args.rows, seed=1), settings.home_dir / "demo-data" / "loop-0.csv"
            )
            run_id = airflow_db.trigger(
                train, {"data_uri": str(batch)}, note="demo-drift: first champion"
            )
            chain(f"no champion yet: {train} run {run_id} (manual) on {batch.name}")
            run = _wait_run(services, train, run_id, timeout)
            champion = alias_version(settings, cfg.serving.model_name, "champion")
            chain(f"{train} {run['state']}: champion v{champion}")
            if champion is None:
                gate = _summary(settings, run_id, "gate")
                why = gate.get("skipped") or gate.get("failed") or _stage_states(run)
                raise OutcomeError(f"the first training run did not promote: {why}")
        else:
            chain(f"champion: {cfg.serving.model_name} v{champion}")

        cooling = _cooldown_until(cfg, settings)
        if cooling is not None:
            chain(
                f"note: the last automatic retrain of {PIPELINE} was less than "
                f"monitoring.cooldown_hours={cfg.monitoring.cooldown_hours} ago (until "
                f"{cooling:%Y-%m-%d %H:%M} UTC): the drift below is deferred, not retrained; a "
                "fresh MLP_HOME shows the whole loop"
            )

        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        server = _serve(settings, port)
        served = PredictionClient(url).wait_until_available(PIPELINE, timeout_s=120)
        chain(f"server up on {url}, serving v{served}")

        # 2. + 3. the world drifts: a labelled batch lands, and the traffic shifts
        when = datetime.now(UTC)
        landing = _landing_dir(cfg, when)
        landed = len(list(landing.glob("*.csv"))) if landing.is_dir() else 0
        # a fixed seed per landed batch (the same demo every time), twice the first batch's rows:
        # the model retrained on the new world alone must hold its own against the champion on
        # that world's hold-out (the gate)
        batch = datagen.write(
            datagen.generate(2 * args.rows, seed=7 + landed, drift=args.drift),
            landing / f"batch-{when:%H%M%S}.csv",
        )
        run_id = airflow_db.trigger(
            ingest, logical_date=when, note="demo-drift: stands in for source.schedule"
        )
        chain(f"a drifted labelled batch landed ({batch}); {ingest} run {run_id}")
        run = _wait_run(services, ingest, run_id, timeout)
        chain(f"{ingest} {run['state']} ({_stage_states(run)})")
        answered = _send_traffic(url, args.traffic, args.drift, seed=11)
        chain(f"{args.traffic} drifted requests sent to the server (answered by v{answered})")

        # 4. the monitor finds drift -> the drift asset -> a retrain
        retrained = _monitor_to_train(services, chain, settings, monitor, train, timeout)
        if retrained is None and cooling is None:
            raise OutcomeError("the drift did not lead to a new served version (see above)")
        if retrained is not None:
            client = PredictionClient(url)

            def serving_new() -> bool:
                try:
                    return client.wait_until_available(PIPELINE, timeout_s=5) == retrained
                except TimeoutError:  # busy: not yet
                    return False

            wait_for(
                serving_new,
                120,
                f"the server to serve v{retrained}",
                services,
                poll_s=1.0,
            )
            answered = _send_traffic(url, 100, args.drift, seed=13)
            chain(f"the server answers with v{answered} (was v{served})")

        # 5. a second drift inside the cool-down: the world moves back, away from what v2
        # learnt; the monitor fires again, and no second retrain starts
        _send_traffic(url, args.traffic, 0.0, seed=12)
        chain(
            f"{args.traffic} requests from the old world sent (drift again, inside the cool-down)"
        )
        second = _monitor_to_train(services, chain, settings, monitor, train, timeout)
        if second is not None:
            raise OutcomeError("a second retrain started inside the cool-down")
        if len(airflow_db.asset_events(drift_asset_name(PIPELINE), chain.started)) < 2:
            raise OutcomeError("the second wave of traffic raised no drift event (see above)")
        say(
            f"drift events: {len(airflow_db.asset_events(drift_asset_name(PIPELINE), chain.started))}"
        )
        return 0
    finally:
        if server is not None:
            processes.stop(server)
        ended = services.stop()
        say(f"stopped the server and Airflow ({ended} processes); nothing left running")


def _cooldown_until(cfg: Any, settings: Settings) -> datetime | None:
    """When the cooldown of the pipeline's last automatic retrain ends, if it has not yet."""
    from datetime import timedelta

    from mlplatform import decisions

    last = decisions.last_retrain(decisions.read(settings, PIPELINE))
    if last is None:
        return None
    until = datetime.fromisoformat(last.time) + timedelta(hours=cfg.monitoring.cooldown_hours)
    return until if until > datetime.now(UTC) else None


def _landing_dir(cfg: Any, when: datetime) -> Path:
    """The directory of ``cfg.source.uri`` (the ingest DAG's landing source) for the data
    interval that a run of the ingest DAG triggered at ``when`` covers, rendered by Airflow's own
    template environment as the task will render it."""
    from airflow.timetables.interval import CronDataIntervalTimetable

    from mlplatform.dag_factory import build_ingest_dag

    dag = build_ingest_dag(cfg)
    # the scheduler's (core) timetable infers a manual run's interval; the SDK's cannot
    timetable = CronDataIntervalTimetable(cfg.source.schedule or "@daily", timezone="UTC")
    interval = timetable.infer_manual_data_interval(run_after=when)
    rendered = (
        dag.get_template_env()
        .from_string(cfg.source.uri)
        .render(
            data_interval_start=interval.start,
            data_interval_end=interval.end,
            ds=interval.start.strftime("%Y-%m-%d"),
            ds_nodash=interval.start.strftime("%Y%m%d"),
            **(dag.user_defined_macros or {}),
        )
    )
    path = Path(rendered)
    while any(c in path.name for c in "*?["):
        path = path.parent
    return path


def _monitor_to_train(
    services: Any,
    chain: Chain,
    settings: Settings,
    monitor: str,
    train: str,
    timeout: float,
) -> int | None:
    """Trigger the monitor, follow its drift event to the train run it starts. Returns the new
    served version, or None when no retrain happened (the monitor found no drift, or the train
    run's ``decide`` skipped: its reason is printed)."""
    from mlplatform import airflow_db, decisions
    from mlplatform.assets import drift_asset_name
    from mlplatform.stages.registry import alias_version

    since = datetime.now(UTC)
    run_id = airflow_db.trigger(monitor, note="demo-drift: stands in for monitoring.schedule")
    chain(f"{monitor} run {run_id} (stands in for monitoring.schedule)")
    run = _wait_run(services, monitor, run_id, timeout)
    events = airflow_db.asset_events(drift_asset_name(PIPELINE), since)
    if not events:
        chain(f"{monitor} {run['state']}: no drift event ({_stage_states(run)})")
        return None
    extra = events[-1]["extra"]
    chain(
        f"{monitor} {run['state']}: drift asset {drift_asset_name(PIPELINE)} updated: "
        f"{extra.get('reason')} (report {extra.get('report')})"
    )
    train_run = _next_asset_run(services, train, since, timeout)
    chain(f"the scheduler started {train} run {train_run['run_id']} ({train_run['run_type']})")
    done = _wait_run(services, train, train_run["run_id"], timeout)
    decision = decisions.find(settings, PIPELINE, train_run["run_id"])
    line = decision.summary() if decision else "(no decision recorded)"
    chain(f"decide: {line}")
    if done["tasks"].get("decide") != "success":
        chain(f"{train} {done['state']}: no retrain")
        return None
    gate = _summary(settings, train_run["run_id"], "gate")
    if done["tasks"].get("gate") == "success":
        chain(
            f"gate: {gate.get('metric')} challenger={gate.get('challenger')} "
            f"champion={gate.get('champion')}: passed"
        )
    else:
        chain(f"gate: {done['tasks'].get('gate')}: {gate.get('skipped') or gate.get('failed')}")
    promoted = _summary(settings, train_run["run_id"], "promote").get("served_version")
    chain(
        f"{train} {done['state']}: served version {promoted}, champion "
        f"v{alias_version(settings, PIPELINE, 'champion')}"
    )
    return int(promoted) if promoted is not None and done["state"] == "success" else None
