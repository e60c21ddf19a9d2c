"""The server's request log off the hot path (:class:`serving.request_log.QueuedRequestLog`):
bounded queue and background writer, sampling, size cap with rotation, redaction."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from serving.request_log import REDACTED, QueuedRequestLog

TIME = "2026-11-28T10:00:00+00:00"


def _record(i: int, **extra: Any) -> dict[str, Any]:
    return {
        "time": TIME,
        "model": "demo",
        "version": 1,
        "protocol": "rest",
        "method": "predict",
        "format": "instances",
        "inputs": [{"customer_email": f"u{i}@example.com", "tenure": i}],
        "outputs": [0.5],
        "latency_ms": 1.0,
        **extra,
    }


def _lines(log_dir: Path, pattern: str = "*.jsonl") -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for path in sorted((log_dir / "demo").glob(pattern))
        for line in path.read_text().splitlines()
    ]


def test_records_are_written_by_the_background_thread(tmp_path: Path) -> None:
    log = QueuedRequestLog(tmp_path)
    for i in range(50):
        log.log(_record(i))
    assert log.flush()
    assert [r["inputs"][0]["tenure"] for r in _lines(tmp_path)] == list(range(50))
    assert log.written == 50 and log.dropped == 0
    log.close()


def test_a_full_queue_drops_and_counts_instead_of_waiting(tmp_path: Path) -> None:
    log = QueuedRequestLog(tmp_path, queue_size=3)
    release = threading.Event()
    original = log._write

    def slow_write(record: Any) -> None:
        release.wait(10)
        original(record)

    log._write = slow_write  # type: ignore[method-assign]  # a writer stuck on a slow disk
    for i in range(10):
        log.log(_record(i))  # returns at once even though nothing is written
    release.set()
    assert log.flush()
    written = _lines(tmp_path)
    assert log.dropped == 10 - len(written) and 3 <= len(written) <= 4
    log.close()


def test_sampling_keeps_the_configured_share(tmp_path: Path) -> None:
    none = QueuedRequestLog(tmp_path / "none", sample_rate=0.0)
    every = QueuedRequestLog(tmp_path / "every", sample_rate=1.0)
    half = QueuedRequestLog(tmp_path / "half", sample_rate=0.5)
    assert not any(none.sampled() for _ in range(1000))
    assert all(every.sampled() for _ in range(1000))
    assert 350 < sum(half.sampled() for _ in range(1000)) < 650
    with pytest.raises(ValueError, match="sample_rate"):
        QueuedRequestLog(tmp_path, sample_rate=1.5)
    for log in (none, every, half):
        log.close()


def test_size_cap_rotates_and_keeps_the_newest_files(tmp_path: Path) -> None:
    from mlplatform.monitoring.requests import log_files
    from mlplatform.monitoring.state import Window

    log = QueuedRequestLog(tmp_path, max_file_bytes=1000, keep_files=2)
    for i in range(40):
        log.log(_record(i))
    assert log.flush()
    names = sorted(p.name for p in (tmp_path / "demo").iterdir())
    assert names == ["2026-11-28.1.jsonl", "2026-11-28.2.jsonl", "2026-11-28.jsonl"]
    assert all(p.stat().st_size <= 1000 for p in (tmp_path / "demo").iterdir())
    kept = [r["inputs"][0]["tenure"] for r in _lines(tmp_path)]
    assert 39 in kept and 0 not in kept  # the oldest lines went with the oldest file
    # the drift check reads every kept file of the day, oldest first
    end = datetime(2026, 11, 29, tzinfo=UTC)
    files = log_files(tmp_path, "demo", Window(end - timedelta(days=2), end))
    assert [f.name for f in files] == [
        "2026-11-28.2.jsonl",
        "2026-11-28.1.jsonl",
        "2026-11-28.jsonl",
    ]
    log.close()


def test_named_fields_are_redacted_at_any_depth(tmp_path: Path) -> None:
    log = QueuedRequestLog(tmp_path, redact_fields=["customer_email", "entities"])
    log.log(_record(1, entities=["c-1"]))
    columns = _record(2)
    columns["format"], columns["inputs"] = "inputs", {"customer_email": ["a@b.c"], "tenure": [2]}
    log.log(columns)
    assert log.flush()
    rows, cols = _lines(tmp_path)
    assert rows["inputs"] == [{"customer_email": REDACTED, "tenure": 1}]
    assert rows["entities"] == REDACTED
    assert cols["inputs"] == {"customer_email": REDACTED, "tenure": [2]}
    assert "a@b.c" not in (tmp_path / "demo" / "2026-11-28.jsonl").read_text()
    log.close()


def test_close_writes_what_is_queued(tmp_path: Path) -> None:
    log = QueuedRequestLog(tmp_path)
    for i in range(5):
        log.log(_record(i))
    log.close()
    assert len(_lines(tmp_path)) == 5
    assert not log._thread.is_alive()


def test_fast_encoding_writes_the_same_values(tmp_path: Path) -> None:
    import math

    import numpy as np

    from serving.request_log import encode, encode_line

    plain = _record(1, outputs=np.asarray([0.25, 0.5], np.float32), entities=[b"c-1"])
    missing = _record(2, inputs=[{"tenure": None}])
    not_finite = _record(3, inputs=[{"tenure": math.nan}], outputs=np.asarray([math.inf]))
    for record in (plain, missing, not_finite):
        line = encode_line(record)
        assert line.endswith(b"\n") and line.count(b"\n") == 1
        ours, reference = json.loads(line), json.loads(encode(record))
        assert ours.keys() == reference.keys()
        for key, value in reference.items():
            if key == "outputs":
                np.testing.assert_allclose(ours[key], value)
            elif key != "inputs" or record is not not_finite:
                assert ours[key] == value
    assert json.loads(encode_line(missing))["inputs"] == [{"tenure": None}]
    assert math.isnan(json.loads(encode_line(not_finite))["inputs"][0]["tenure"])
    assert json.loads(encode_line(not_finite))["outputs"] == [math.inf]
    assert json.loads(encode_line(plain))["entities"] == ["c-1"]
