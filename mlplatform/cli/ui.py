"""``mlplatform ui`` (what ``make ui`` runs): the Airflow UI with the platform view, on the
embedded home, in the foreground.

Starts Airflow's API server, dag-processor, scheduler and triggerer as children
(:class:`mlplatform.airflow_services.AirflowServices`: triggered runs and rollbacks from the
platform view do run), prints the URL, the login and the platform view's address once the API
server answers, and stays until Ctrl-C or SIGTERM, which stop every process it started (each
service's whole tree). A service that dies ends the command with its log's tail (exit 1).
Replaces ``airflow standalone``, which left its scheduler and API server running on SIGTERM.
"""

from __future__ import annotations

import argparse
import time

from mlplatform.cli.common import OutcomeError, UsageError, say
from mlplatform.settings import Settings


def cmd_ui(args: argparse.Namespace, settings: Settings) -> int:
    from mlplatform.airflow_runner import prepare_airflow, ui_banner
    from mlplatform.airflow_services import AirflowServices, ServicesError

    services = AirflowServices(settings, port=args.port)
    env = prepare_airflow()
    try:
        banner = ui_banner(settings, env, services.url)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    say(f"starting Airflow (api-server, dag-processor, scheduler, triggerer) on {services.url} ...")
    services.start()  # from here on SIGTERM/SIGINT stop every service (KeyboardInterrupt)
    try:
        services.wait_ready(timeout_s=args.timeout_s)
        for line in banner:
            say(line)
        say(f"  platform view: {services.url}/plugin/mlplatform  (or {services.url}/mlplatform/)")
        say(f"  logs: {services.log_dir}; Ctrl-C or SIGTERM stops everything")
        while True:
            services.check_alive()
            time.sleep(2.0)
    except KeyboardInterrupt:
        pass
    except ServicesError as exc:
        raise OutcomeError(str(exc)) from None
    finally:
        ended = services.stop()
        say(f"stopped {ended} Airflow process(es)")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``mlplatform ui``."""
    p = sub.add_parser(
        "ui",
        help="the Airflow UI with the platform view on the embedded home (scheduler included); "
        "prints URL and login; Ctrl-C or SIGTERM stops all it started",
    )
    p.add_argument("--port", type=int, default=8080, help="API server port (8080; 0: a free one)")
    p.add_argument(
        "--timeout-s", type=float, default=300.0, help="how long to wait for the UI to answer"
    )
    p.set_defaults(func=cmd_ui)
