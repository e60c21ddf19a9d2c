"""The JSON body parser: orjson first, the standard library's parser deciding every refusal.

Each body is parsed with orjson on and off; the documents, or the one-line errors, must be the
same (the one documented difference, an integer beyond 64 bits, is checked on its own).
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from serving.api.errors import ApiError
from serving.codec import json_body

LIMITS = {"max_depth": 8, "max_elements": 50}

BODIES = [
    b'{"instances": [{"x": 1.5, "c": "a"}, {"x": 2, "c": null}]}',
    b'{"inputs": {"x": [1.0, 2.0]}}',
    b'{"a": 1, "a": 2}',
    b"  [1, 2]  ",
    b"",
    b"   ",
    b"{not json",
    b'{"x": 1} trailing',
    b'{"x": NaN}',
    b'{"x": [Infinity, -Infinity]}',
    b'{"x": 1e999}',
    b'{"x": "\\ud800"}',
    b'{"\\udc00": 1}',
    b'{"x": "\\ud83d\\ude00"}',
    b"\xef\xbb\xbf[1]",
    '{"x": [1]}'.encode("utf-16"),
    b'{"x": "\xff"}',
    b"[" * 9 + b"]" * 9,
    b"[" * 8 + b"]" * 8,
    b"[" * 5000 + b"]" * 5000,
    b"[" + b",".join([b"1"] * 51) + b"]",
    b"[" + b",".join([b"1"] * 50) + b"]",
]


def _parse(body: bytes, fast: bool, allow: bool, monkeypatch: pytest.MonkeyPatch) -> Any:
    if not fast:
        monkeypatch.setattr(json_body, "_FAST", None)
    try:
        return ("ok", json_body.parse_json(body, allow_non_finite=allow, **LIMITS))
    except ApiError as exc:
        return ("error", exc.status_code, exc.message)
    finally:
        monkeypatch.undo()


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


@pytest.mark.skipif(json_body.JSON_PARSER != "orjson", reason="orjson is not installed")
@pytest.mark.parametrize("allow", [False, True])
@pytest.mark.parametrize("body", BODIES)
def test_orjson_and_stdlib_agree(body: bytes, allow: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    fast = _parse(body, True, allow, monkeypatch)
    slow = _parse(body, False, allow, monkeypatch)
    assert _same(fast, slow), (fast, slow)
    if fast[0] == "error":
        assert fast[1] == 400 and "\n" not in fast[2]


def test_limits_are_enforced_whatever_the_size_bound() -> None:
    # 26 scalars in 51 bytes: the byte bound (2 * 50 + 1) skips the count; 51 scalars need it
    assert json_body.parse_json(b"[" + b",".join([b"1"] * 26) + b"]", **LIMITS)
    with pytest.raises(ApiError, match="more than 50 values"):
        json_body.parse_json(b"[" + b",".join([b"1"] * 51) + b"]", **LIMITS)
    with pytest.raises(ApiError, match="nesting deeper than 8"):
        json_body.parse_json(b"[" * 9 + b"]" * 9, **LIMITS)


@pytest.mark.skipif(json_body.JSON_PARSER != "orjson", reason="orjson is not installed")
def test_an_integer_beyond_64_bits_is_a_float_with_orjson() -> None:
    assert json_body.parse_json(b"[18446744073709551616]", **LIMITS) == [2.0**64]
