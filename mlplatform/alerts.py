"""Alerts: Slack-compatible JSON posted to a webhook, for the events people must hear about.

Events (``EVENTS``): ``failure`` (a task failed), ``gate_refused``, ``drift`` (the monitor crossed a
threshold) and ``retrain_decision`` (the train DAG decided to retrain or not, and why).

The webhook is ``alerts.webhook_url`` of the pipeline config, else ``MLP_ALERT_WEBHOOK_URL``; with
neither set, :func:`send` makes no network call. ``alerts.events`` limits which events are sent.
The body is Slack's incoming-webhook shape (``text`` plus ``blocks``), which Slack, Mattermost,
Teams' Slack-compatible connectors and most chat bridges accept; ``mlplatform`` adds the raw facts
under ``mlplatform`` (event, pipeline, fields) for machines.

:func:`send` never raises: an alert that cannot be delivered is logged (warning), it never fails
the task that raised it. The stdlib's ``urllib`` posts it (one small JSON POST with a timeout does
not justify a dependency).
"""

from __future__ import annotations

import json
import logging
import urllib.request
from collections.abc import Mapping
from typing import Any

log = logging.getLogger(__name__)

EVENTS = ("failure", "gate_refused", "drift", "retrain_decision")
TIMEOUT_S = 10.0


def webhook_url(alerts_cfg: Any, env_default: str | None) -> str | None:
    """The webhook an alert goes to: the pipeline's ``alerts.webhook_url``, else the setting."""
    return (getattr(alerts_cfg, "webhook_url", None) or env_default) or None


def payload(event: str, pipeline: str, summary: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    """The Slack-compatible body of one alert."""
    facts = "\n".join(f"*{k}*: {v}" for k, v in fields.items() if v not in (None, ""))
    text = f"[mlplatform] {pipeline}: {event}: {summary}"
    blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]
    if facts:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": facts}})
    return {
        "text": text,
        "blocks": blocks,
        "mlplatform": {"event": event, "pipeline": pipeline, "summary": summary, **fields},
    }


def post(url: str, body: Mapping[str, Any], timeout_s: float = TIMEOUT_S) -> None:
    """POST ``body`` as JSON to ``url``; raises on a network error or a non-2xx answer."""
    data = json.dumps(body, default=str).encode()
    request = urllib.request.Request(
        url, data=data, headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310 - configured URL
        if not 200 <= response.status < 300:
            raise OSError(f"webhook answered HTTP {response.status}")


def send(cfg: Any, event: str, summary: str, **fields: Any) -> bool:
    """Send one alert for pipeline ``cfg`` (a PipelineConfig); True if it was delivered.

    No webhook configured, or ``event`` not among ``alerts.events``: nothing is sent (False).
    """
    from mlplatform.settings import get_settings

    if event not in EVENTS:
        raise ValueError(f"unknown alert event {event!r}; one of {EVENTS}")
    alerts_cfg = getattr(cfg, "alerts", None)
    url = webhook_url(alerts_cfg, get_settings().alert_webhook_url)
    if not url:
        return False
    wanted = getattr(alerts_cfg, "events", None)
    if wanted is not None and event not in wanted:
        return False
    try:
        post(url, payload(event, cfg.name, summary, fields))
    except Exception as exc:  # noqa: BLE001 - an alert must never fail the task that sends it
        log.warning("alert %s for %s not delivered to the webhook: %s", event, cfg.name, exc)
        return False
    log.info("alert %s for %s sent", event, cfg.name)
    return True
