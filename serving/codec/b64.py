"""The one base64 rule of TF Serving's JSON: ``{"b64": "<standard base64, padded>"}``."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from serving.api.errors import ApiError

__all__ = ["bytes_to_json", "decode_b64", "is_b64"]


def is_b64(value: Any) -> bool:
    """Whether ``value`` is a ``{"b64": str}`` object (exactly that one key)."""
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def decode_b64(value: Any, what: str) -> bytes:
    """The bytes of a ``{"b64": ...}`` object; ApiError(400) naming ``what`` if invalid."""
    if not is_b64(value):
        raise ApiError(400, f'{what}: expected {{"b64": <string>}}')
    try:
        return base64.b64decode(value["b64"], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ApiError(400, f"{what}: invalid base64 value") from exc


def bytes_to_json(value: bytes) -> Any:
    """Bytes as JSON: text when UTF-8, else ``{"b64": ...}`` (as TF Serving answers)."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return {"b64": base64.b64encode(value).decode("ascii")}
