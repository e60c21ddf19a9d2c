"""Parse a JSON request body under the server's limits (see :class:`serving.api.Limits`).

One pass of the standard library's C parser, then checks that cost nothing on ordinary bodies:

* ``NaN``, ``Infinity`` and ``-Infinity`` literals (which Python's parser accepts) are refused
  unless ``allow_non_finite`` (a model's ``serving.allow_non_finite``) says otherwise; numbers
  too large for a double (``1e999``) are caught where the floats are converted
  (:func:`serving.codec.json_tensors.to_array`).
* Nesting deeper than ``max_depth`` and more than ``max_elements`` scalar values are refused
  (an iterative walk over containers: no recursion to exhaust).
* A string or key holding a lone UTF-16 surrogate (``"\\ud800"``, valid JSON, not encodable as
  UTF-8) is refused; the walk for it runs only when the raw body holds such an escape.

Every refusal is ``ApiError`` INVALID_ARGUMENT (400) with a one-line reason.
"""

from __future__ import annotations

import json
import re
from typing import Any

from serving.api.errors import ApiError

__all__ = ["parse_json"]

_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def _refuse_constant(name: str) -> float:
    raise ApiError(
        400,
        f"JSON Parse error: {name} is not accepted by this model "
        "(its pipeline config does not set serving.allow_non_finite)",
    )


def _accept_constant(name: str) -> float:
    return float(name)


def parse_json(
    body: bytes, *, max_depth: int, max_elements: int, allow_non_finite: bool = False
) -> Any:
    """The document in ``body``; ApiError(400) for anything malformed or over the limits."""
    if not body.strip():
        raise ApiError(400, "JSON Parse error: The document is empty")
    try:
        doc = json.loads(
            body, parse_constant=_accept_constant if allow_non_finite else _refuse_constant
        )
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"JSON Parse error: {exc}") from exc
    except RecursionError as exc:
        raise ApiError(400, f"JSON Parse error: nesting deeper than {max_depth}") from exc
    check_document(doc, max_depth=max_depth, max_elements=max_elements)
    if _SURROGATE_ESCAPE.search(body):
        _check_strings(doc)
    return doc


def check_document(doc: Any, *, max_depth: int, max_elements: int) -> None:
    """ApiError(400) if ``doc`` nests deeper than ``max_depth`` or holds more than
    ``max_elements`` scalars (iterative: any depth is safe to check)."""
    stack: list[tuple[Any, int]] = [(doc, 1)] if isinstance(doc, list | dict) else []
    scalars = 0
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            raise ApiError(400, f"JSON Parse error: nesting deeper than {max_depth}")
        items = node.values() if isinstance(node, dict) else node
        for item in items:
            if isinstance(item, list | dict):
                stack.append((item, depth + 1))
            else:
                scalars += 1
        if scalars > max_elements:
            raise ApiError(
                400, f"Request holds more than {max_elements} values (the server's limit)"
            )


def _check_strings(doc: Any) -> None:
    stack = [doc]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            _encodable(node)
        elif isinstance(node, dict):
            for key, value in node.items():
                _encodable(key)
                stack.append(value)
        elif isinstance(node, list):
            stack.extend(node)


def _encodable(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ApiError(
            400, "JSON Parse error: a string holds a lone UTF-16 surrogate (not valid Unicode)"
        ) from exc
