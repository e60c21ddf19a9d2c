"""REST client for TF Serving's API (this package's server or a real TF Serving)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import urllib3

from serving.api.constants import VERSION_HEADER
from serving.client.common import PredictResult, ServingError, wait_until_available

__all__ = ["PredictionClient"]

_JSON_HEADERS = {"Content-Type": "application/json"}


@dataclass(frozen=True)
class _Reply:
    """One HTTP answer: status, headers, body and the URL asked."""

    status_code: int
    headers: Any
    content: bytes
    url: str
    reason: str

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        import json

        return json.loads(self.content)


class PredictionClient:
    """Client for ``base_url`` (e.g. ``http://127.0.0.1:8501``); usable as a context manager.

    Thread-safe; keeps connections alive in a urllib3 pool (urllib3 directly rather than
    requests: requests re-reads the proxy environment and builds a prepared request on every
    call, which cost about as much as the server's own work for a one-row predict)."""

    def __init__(self, base_url: str, timeout: float = 10) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._pool = urllib3.PoolManager(maxsize=32, block=False, retries=False)

    def close(self) -> None:
        """Close pooled connections."""
        self._pool.clear()

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

    def _request(self, method: str, url: str, json: Any = None) -> _Reply:
        import json as json_module

        try:
            body = (
                None
                if json is None
                else json_module.dumps(json, allow_nan=False, separators=(",", ":")).encode()
            )
        except (TypeError, ValueError) as exc:
            raise ServingError(f"{method} {url} failed: cannot encode the body: {exc}") from exc
        try:
            raw = self._pool.request(
                method,
                url,
                body=body,
                headers=_JSON_HEADERS if body is not None else None,
                timeout=self.timeout,
                retries=False,
            )
        except urllib3.exceptions.HTTPError as exc:
            raise ServingError(f"{method} {url} failed: {type(exc).__name__}: {exc}") from exc
        response = _Reply(raw.status, raw.headers, raw.data, url, raw.reason or "")
        if response.status_code != 200:
            raise ServingError(
                f"{method} {url} returned HTTP {response.status_code}: {_error_text(response)}",
                response.status_code,
            )
        return response

    @staticmethod
    def _json(response: _Reply) -> Any:
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
        return self._post(model_name, version, label, "predict", body, "predictions")

    def _post(
        self,
        model_name: str,
        version: int | None,
        label: str | None,
        method: str,
        body: dict[str, Any],
        result_key: str,
    ) -> PredictResult:
        """POST ``body`` to ``:<method>``; the answer's ``result_key`` and the version that
        answered (the response header; else the one asked for)."""
        url = self._model_url(model_name, version, label) + f":{method}"
        response = self._request("POST", url, json=body)
        payload = self._json(response)
        if not isinstance(payload, dict) or result_key not in payload:
            raise ServingError(f"{url} answered without '{result_key}'", response.status_code)
        header = response.headers.get(VERSION_HEADER)
        model_version = int(header) if header and header.strip().isdigit() else version
        return PredictResult(predictions=payload[result_key], model_version=model_version)

    def _examples_call(
        self,
        method: str,
        model_name: str,
        examples: Sequence[Mapping[str, Any]],
        version: int | None,
        label: str | None,
        context: Mapping[str, Any] | None,
        signature_name: str | None,
    ) -> PredictResult:
        body: dict[str, Any] = {"examples": list(examples)}
        if context is not None:
            body["context"] = dict(context)
        if signature_name:
            body["signature_name"] = signature_name
        return self._post(model_name, version, label, method, body, "results")

    def classify(
        self,
        model_name: str,
        examples: Sequence[Mapping[str, Any]],
        version: int | None = None,
        label: str | None = None,
        *,
        context: Mapping[str, Any] | None = None,
        signature_name: str | None = None,
    ) -> PredictResult:
        """Classify ``examples`` (feature -> value|list); predictions are one
        ``[[label, score], ...]`` list per example."""
        return self._examples_call(
            "classify", model_name, examples, version, label, context, signature_name
        )

    def regress(
        self,
        model_name: str,
        examples: Sequence[Mapping[str, Any]],
        version: int | None = None,
        label: str | None = None,
        *,
        context: Mapping[str, Any] | None = None,
        signature_name: str | None = None,
    ) -> PredictResult:
        """Regress ``examples`` (feature -> value|list); predictions are one float each."""
        return self._examples_call(
            "regress", model_name, examples, version, label, context, signature_name
        )

    def model_status(
        self, model_name: str, version: int | None = None, label: str | None = None
    ) -> list[dict[str, Any]]:
        """The ``model_version_status`` list of ``GET /v1/models/<model_name>[...]``."""
        url = self._model_url(model_name, version, label)
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
        unversioned predict uses), falling back to the highest AVAILABLE version. 404s,
        503s and connection errors count as "not yet". Raises TimeoutError after
        ``timeout_s``.
        """
        return wait_until_available(self, self.base_url, model_name, timeout_s, poll_s)

    def platform_status(self) -> dict[str, Any]:
        """The JSON of ``GET /v1/mlplatform/status`` (:mod:`serving.server` only, not TF Serving).

        ``{"status": "ok" | "degraded", "reason", "mode", "models": {name: {"served_version",
        "labels", "degraded"}}}``. A real TF Serving answers 404 (ServingError).
        """
        url = f"{self.base_url}/v1/mlplatform/status"
        payload = self._json(self._request("GET", url))
        if not isinstance(payload, dict) or not isinstance(payload.get("models"), dict):
            raise ServingError(f"{url} answered without 'models'")
        return payload


def _error_text(response: _Reply) -> str:
    try:
        payload = response.json()
    except ValueError:
        payload = None
    if isinstance(payload, dict) and "error" in payload:
        text = str(payload["error"])
    else:
        text = response.text.strip() or response.reason or "no body"
    return " ".join(text.split())[:1000]
