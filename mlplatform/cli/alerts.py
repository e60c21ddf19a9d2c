"""``mlplatform alerts test NAME``: send one test alert to a pipeline's webhook and say where it
went (or that none is configured), so that an ML engineer can check the webhook."""

from __future__ import annotations

import argparse
import getpass
import socket
from urllib.parse import urlsplit

from mlplatform.cli.common import OutcomeError, say
from mlplatform.config import find_pipeline, load_pipeline, one_line
from mlplatform.settings import Settings


def shown_url(url: str) -> str:
    """``url`` without what may be a secret: a webhook's path is often its token
    (``https://hooks.slack.com/services/T.../B.../X...`` -> ``https://hooks.slack.com/services/…``)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    segments = [s for s in parts.path.split("/") if s]
    path = f"/{segments[0]}" if segments else ""
    more = "/…" if len(segments) > 1 or parts.query else ""
    return f"{parts.scheme}://{host}{path}{more}"


def cmd_alerts_test(args: argparse.Namespace, settings: Settings) -> int:
    from mlplatform import alerts

    path = find_pipeline(args.pipeline, settings.pipelines_dir)
    cfg = load_pipeline(path)
    url = alerts.webhook_url(cfg.alerts, settings.alert_webhook_url)
    if not url:
        raise OutcomeError(
            f"no webhook configured for {cfg.name}: set alerts.webhook_url in {path} or "
            "MLP_ALERT_WEBHOOK_URL; until then no alert leaves this machine"
        )
    source = f"alerts.webhook_url of {path}" if cfg.alerts.webhook_url else "MLP_ALERT_WEBHOOK_URL"
    body = alerts.payload(
        "test",
        cfg.name,
        "test alert: this webhook receives the pipeline's alerts",
        {
            "events": ", ".join(cfg.alerts.events) or "none",
            "sent_by": f"{getpass.getuser()}@{socket.gethostname()}",
        },
    )
    try:
        alerts.post(url, body)
    except Exception as exc:  # noqa: BLE001 - urllib's many errors: one line
        raise OutcomeError(
            f"test alert not delivered to {shown_url(url)} ({source}): {one_line(exc, 200)}"
        ) from None
    say(f"test alert for {cfg.name} sent to {shown_url(url)} ({source})")
    say(f"  events sent for {cfg.name}: {', '.join(cfg.alerts.events) or 'none'}")
    return 0
