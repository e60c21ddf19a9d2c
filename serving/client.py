"""Small REST client for TF Serving's API (this package's server or a real TF Serving).

Contract:

* ``PredictionClient(base_url).predict(model, instances)`` POSTs the row format to
  ``/v1/models/<model>[/versions/<v>|/labels/<l>]:predict`` and returns a
  :class:`PredictResult`. ``model_version`` comes from the ``X-Model-Version`` response
  header (set by :mod:`serving.server`); against a real TF Serving, which does not send
  it, it is the explicitly requested ``version`` or None.
* Any non-200 answer, unreadable answer or transport failure raises :class:`ServingError`
  whose message is one line (the server's ``error`` text when it sent one).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import requests

__all__ = ["PredictResult", "PredictionClient", "ServingError"]

VERSION_HEADER = "X-Model-Version"


class ServingError(RuntimeError):
    """A failed serving request; ``status_code`` is None for transport errors."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(" ".join(str(message).split()))
        self.status_code = status_code


@dataclass(frozen=True)
class PredictResult:
    """Predictions (one per instance) and the model version that produced them, if known."""

    predictions: list[Any]
    model_version: int | None


class PredictionClient:
    """Client for ``base_url`` (e.g. ``http://127.0.0.1:8501``); usable as a context manager."""

    def __init__(self, base_url: str, timeout: float = 10) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._session = requests.Session()

    def close(self) -> None:
        """Close pooled connections."""
        self._session.close()

    def __enter__(self) -> PredictionClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ helpers

    def _model_url(self, model_name: str, version: int | None, label: str | None) -> str:
        if version is not None and label is not None:
            raise ValueError("pass either version or label, not both")
        url = f"{self.base_url}/v1/models/{quote(model_name, safe='')}"
        if version is not None:
            if isinstance(version, bool) or not isinstance(version, int) or version < 0:
                raise ValueError(f"invalid version {version!r}: must be a non-negative int")
            url += f"/versions/{version}"
        elif label is not None:
            url += f"/labels/{quote(label, safe='')}"
        return url

    def _request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        try:
            response = self._session.request(method, url, timeout=self.timeout, **kwargs)
        except requests.RequestException as exc:
            raise ServingError(f"{method} {url} failed: {type(exc).__name__}: {exc}") from exc
        if response.status_code != 200:
            raise ServingError(
                f"{method} {url} returned HTTP {response.status_code}: {_error_text(response)}",
                response.status_code,
            )
        return response

    @staticmethod
    def _json(response: requests.Response) -> Any:
        try:
            return response.json()
        except ValueError as exc:
            raise ServingError(
                f"{response.url} returned a non-JSON body: {response.text[:200]}",
                response.status_code,
            ) from exc

    # ------------------------------------------------------------------ API

    def predict(
        self,
        model_name: str,
        instances: list[dict[str, Any]],
        version: int | None = None,
        label: str | None = None,
        *,
        signature_name: str | None = None,
    ) -> PredictResult:
        """Predict ``instances`` (row format) with the default, a specific, or a labelled version."""
        body: dict[str, Any] = {"instances": instances}
        if signature_name:
            body["signature_name"] = signature_name
        url = self._model_url(model_name, version, label) + ":predict"
        response = self._request("POST", url, json=body)
        payload = self._json(response)
        if not isinstance(payload, dict) or "predictions" not in payload:
            raise ServingError(f"{url} answered without 'predictions'", response.status_code)
        header = response.headers.get(VERSION_HEADER)
        model_version = int(header) if header and header.strip().isdigit() else version
        return PredictResult(predictions=payload["predictions"], model_version=model_version)

    def model_status(self, model_name: str) -> list[dict[str, Any]]:
        """The ``model_version_status`` list of ``GET /v1/models/<model_name>``."""
        url = self._model_url(model_name, None, None)
        payload = self._json(self._request("GET", url))
        status = payload.get("model_version_status") if isinstance(payload, dict) else None
        if not isinstance(status, list):
            raise ServingError(f"{url} answered without 'model_version_status'")
        return status

    def model_metadata(
        self, model_name: str, version: int | None = None, label: str | None = None
    ) -> dict[str, Any]:
        """The JSON of ``GET /v1/models/<model_name>[/versions/<v>|/labels/<l>]/metadata``."""
        url = self._model_url(model_name, version, label) + "/metadata"
        payload = self._json(self._request("GET", url))
        if not isinstance(payload, dict):
            raise ServingError(f"{url} answered with a non-object")
        return payload

    def wait_until_available(self, model_name: str, timeout_s: float, poll_s: float = 0.5) -> int:
        """Poll until ``model_name`` has an AVAILABLE version; return the default-served one.

        The version is the ``model_spec.version`` of the metadata route (what an
        unversioned predict uses), falling back to the highest AVAILABLE version. 404s
        and connection errors count as "not yet". Raises TimeoutError after ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        last_error = "no answer yet"
        while True:
            try:
                available = [
                    int(s["version"])
                    for s in self.model_status(model_name)
                    if s.get("state") == "AVAILABLE"
                ]
                if available:
                    try:
                        spec = self.model_metadata(model_name).get("model_spec", {})
                        return int(spec["version"])
                    except (ServingError, KeyError, TypeError, ValueError):
                        return max(available)
                last_error = "no AVAILABLE version"
            except ServingError as exc:
                if exc.status_code not in (None, 404, 503):
                    raise
                last_error = str(exc)
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"model {model_name!r} not available at {self.base_url} after "
                    f"{timeout_s:g}s: {last_error}"
                )
            time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))


def _error_text(response: requests.Response) -> str:
    try:
        payload = response.json()
    except ValueError:
        payload = None
    if isinstance(payload, dict) and "error" in payload:
        text = str(payload["error"])
    else:
        text = response.text.strip() or response.reason or "no body"
    return " ".join(text.split())[:1000]
