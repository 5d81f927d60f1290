"""$throttle: ASP's error text, the rate it holds (measured), bytesPerSec, stats."""

from __future__ import annotations

import time
from typing import Any

import bson
import pytest

from translator import metrics
from translator.errors import TranslateError
from translator.testing import run_pipeline


def _src(n: int, size: int = 10) -> dict[str, Any]:
    return {"$source": {"documents": [{"_id": i, "pad": "x" * size} for i in range(n)]}}


def test_both_limits_missing_is_asps_error() -> None:
    with pytest.raises(TranslateError) as e:
        run_pipeline([_src(1), {"$throttle": {}}])
    assert str(e.value) == "pipeline[1].$throttle: $throttle requires at least one of 'bytesPerSec' or 'messagesPerSec'"


@pytest.mark.parametrize(
    ("spec", "path", "message"),
    [
        ({"messagesPerSec": 0}, "pipeline[1].$throttle.messagesPerSec", "must be greater than 0, got 0"),
        ({"bytesPerSec": "10"}, "pipeline[1].$throttle.bytesPerSec", "expected a positive number, got string"),
        ({"messagesPerSec": 5, "burst": 1}, "pipeline[1].$throttle.burst",
         "unknown field 'burst'; allowed: bytesPerSec, messagesPerSec"),
    ],
)
def test_throttle_errors(spec: Any, path: str, message: str) -> None:
    with pytest.raises(TranslateError) as e:
        run_pipeline([_src(1), {"$throttle": spec}])
    assert (e.value.path, e.value.message) == (path, message)


def test_messages_per_sec_holds_the_rate() -> None:
    # 150 documents at 50/s: the first second's budget (50) passes at once, the other
    # 100 take two seconds.
    metrics.reset()
    metrics.enable()
    try:
        t0 = time.monotonic()
        r = run_pipeline([_src(150), {"$throttle": {"messagesPerSec": 50}}])
        elapsed = time.monotonic() - t0
        ops = metrics.operator_stats(r.pipeline)
    finally:
        metrics.disable()
        metrics.reset()
    assert [d["_id"] for d in r.output] == list(range(150))  # order kept, nothing dropped
    assert 1.9 <= elapsed < 4.0, elapsed
    thr = ops[0]["throttle"]
    assert thr["throttleEvents"] >= 1
    assert 1400 <= thr["throttledTimeMs"] <= 2200  # less when processing itself took time


def test_bytes_per_sec_and_a_document_larger_than_the_budget() -> None:
    size = len(bson.encode({"_id": 0, "pad": "x" * 1000, "_ts": 0}))  # about 1 kB each
    t0 = time.monotonic()
    r = run_pipeline([_src(6, 1000), {"$throttle": {"bytesPerSec": 3 * size}}])
    elapsed = time.monotonic() - t0
    assert len(r.output) == 6
    assert 0.9 <= elapsed < 3.0, elapsed  # 3 pass on the first second's budget, 3 wait ~1 s
    t0 = time.monotonic()
    r = run_pipeline([_src(2, 5000), {"$throttle": {"bytesPerSec": 1000}}])  # each over the budget
    assert len(r.output) == 2
    assert 1.9 <= time.monotonic() - t0 < 4.0  # passes, then waits 1 s, each time
