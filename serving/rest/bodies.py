"""REST request bodies as pydantic models, validated after :func:`serving.codec.json_body.parse_json`.

Only the envelope is modelled (keys, their presence and ``signature_name``'s type); the values
of ``instances``/``inputs``/``examples`` pass through untouched (``Any``: no copy, no walk) to the
codecs, which check them against the signature. Every validation error becomes one ApiError
(400) with TF Serving's wording.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from serving.api.errors import ApiError

__all__ = ["ExamplesBody", "PredictBody", "examples_body", "predict_body"]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    signature_name: str | None = None

    def present(self) -> dict[str, Any]:
        """The keys the request sent, as a dict (what the codecs take)."""
        return {k: getattr(self, k) for k in self.model_fields_set}


class PredictBody(_Body):
    """``{"signature_name"?, "instances" | "inputs"}``."""

    instances: Any = None
    inputs: Any = None


class ExamplesBody(_Body):
    """``{"signature_name"?, "context"?, "examples"}`` (classify / regress)."""

    context: Any = None
    examples: Any = None


def _one_line(exc: ValidationError, doc: Any) -> str:
    errors = exc.errors()
    extra = sorted(str(e["loc"][0]) for e in errors if e["type"] == "extra_forbidden")
    if extra:
        return f"Unknown request keys: {', '.join(extra)}"
    if any(e["type"] == "model_type" for e in errors) or not isinstance(doc, dict):
        return "Request body must be a JSON object"
    if any(e["loc"][:1] == ("signature_name",) for e in errors):
        return "'signature_name' key must be a string value."
    first = errors[0]
    return f"Malformed request: {'.'.join(map(str, first['loc']))}: {first['msg']}"


def predict_body(doc: Any) -> dict[str, Any]:
    """A predict body's keys (validated envelope); ApiError(400)."""
    try:
        body = PredictBody.model_validate(doc)
    except ValidationError as exc:
        raise ApiError(400, _one_line(exc, doc)) from None
    present = body.present()
    if ("instances" in present) == ("inputs" in present):
        raise ApiError(400, "Request must contain exactly one of 'instances' or 'inputs'")
    return present


def examples_body(doc: Any, method: str) -> dict[str, Any]:
    """A classify/regress body's keys (validated envelope); ApiError(400)."""
    if isinstance(doc, dict) and "examples" not in doc:
        raise ApiError(
            400, f"When method is {method}, key 'examples' is expected and was not found"
        )
    try:
        body = ExamplesBody.model_validate(doc)
    except ValidationError as exc:
        raise ApiError(400, _one_line(exc, doc)) from None
    return body.present()
