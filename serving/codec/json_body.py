"""Parse a JSON request body under the server's limits (see :class:`serving.api.Limits`).

One pass of a C parser, then checks that cost little on ordinary bodies:

* The parser is orjson when it is installed (≈3x faster than the standard library's on a
  64-row body; strict RFC 8259, so a body it accepts holds no ``NaN``/``Infinity`` and no lone
  surrogate). Any body orjson refuses is parsed again by the standard library's parser, which
  decides and words the error (or accepts what TF Serving's JSON accepts: ``NaN``, ``Infinity``,
  a byte-order mark, UTF-16/32): the two parsers give the same documents and the same refusals
  (one difference: an integer literal beyond 64 bits becomes a float in orjson, an int in the
  standard library; either is refused for an integer input and is the same number for a float
  input). ``MLP_SERVING_JSON=stdlib`` turns orjson off.

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
import os
import re
from typing import Any

from serving.api.errors import ApiError

try:  # orjson is optional (a dependency of other packages in the lock), never required
    import orjson as _orjson
except ImportError:  # pragma: no cover - depends on the environment
    _orjson = None  # type: ignore[assignment]

__all__ = ["JSON_PARSER", "parse_json"]

#: which parser takes a body first: ``"orjson"`` or ``"stdlib"``
JSON_PARSER = (
    "orjson" if _orjson is not None and os.environ.get("MLP_SERVING_JSON") != "stdlib" else "stdlib"
)
_FAST = _orjson.loads if JSON_PARSER == "orjson" else None
_FAST_ERROR: type[Exception] = _orjson.JSONDecodeError if JSON_PARSER == "orjson" else ValueError
_CONTAINERS = (dict, list)

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
    if _FAST is not None:
        try:
            doc = _FAST(body)
        except _FAST_ERROR:
            pass  # the standard library's parser decides (see the module doc)
        else:
            # strict JSON: no NaN/Infinity literal, no lone surrogate to look for
            check_document(doc, max_depth=max_depth, max_elements=max_elements, size=len(body))
            return doc
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
    check_document(doc, max_depth=max_depth, max_elements=max_elements, size=len(body))
    if _SURROGATE_ESCAPE.search(body):
        _check_strings(doc)
    return doc


def check_document(doc: Any, *, max_depth: int, max_elements: int, size: int | None = None) -> None:
    """ApiError(400) if ``doc`` (as a JSON parser builds it: dicts and lists) nests deeper than
    ``max_depth`` or holds more than ``max_elements`` scalars. Iterative, level by level: any
    depth is safe to check.

    ``size``: the length of the JSON text ``doc`` was parsed from, when known. ``n`` scalars
    take at least ``2n - 1`` bytes (a byte each and a separator between them), so a text of at
    most ``2 * max_elements + 1`` bytes cannot hold too many and they are not counted.
    """
    count = size is None or size > 2 * max_elements + 1
    level = [doc] if type(doc) in _CONTAINERS else []
    depth = scalars = 0
    while level:
        depth += 1
        if depth > max_depth:
            raise ApiError(400, f"JSON Parse error: nesting deeper than {max_depth}")
        below: list[Any] = []
        for node in level:
            items = node.values() if type(node) is dict else node
            inner = [item for item in items if type(item) in _CONTAINERS]
            below += inner
            if count:
                scalars += len(items) - len(inner)
        if count and scalars > max_elements:
            raise ApiError(
                400, f"Request holds more than {max_elements} values (the server's limit)"
            )
        level = below


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
