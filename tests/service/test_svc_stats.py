"""``stats()`` through the service with the real child flow (``flows.processor``):
``stateSize`` and, with ``verbose``, ``operatorStats`` per stage (docs/semantics.md#stats)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bson
import pymongo
import pytest
from svc_helpers import Service, start_service, wait_until

pytestmark = [pytest.mark.mongodb, pytest.mark.slow]

T0_MS = 1_700_000_000_000  # 2023-11-14T22:13:20.000Z


@pytest.fixture
def svc(tmp_path: Path, mongodb_uri: str) -> Iterator[Service]:
    conns = tmp_path / "real-connections.toml"
    conns.write_text(f'[connections.mongo1]\ntype = "mongodb"\nuri = "{mongodb_uri}"\n')
    s = start_service(tmp_path, "--connections", str(conns))
    yield s
    s.stop()


def wait_for(fn: Any, timeout: float = 60.0) -> Any:
    return wait_until(fn, timeout, "a truthy value", every=0.3)


def counts(e: dict[str, Any]) -> tuple[str, int, int, int]:
    return e["name"], e["inputMessageCount"], e["outputMessageCount"], e["dlqMessageCount"]


def test_finite_processor_reports_exact_operator_stats(svc: Service, mongo_db: Any) -> None:
    coll = f"stats_{time.monotonic_ns()}"
    pipeline = [
        {"$source": {"connectionName": "sample_stream_solar", "config": {
            "seed": 1, "maxEvents": 1000, "rate": 1000, "startTime": T0_MS, "faultRate": 0.0, "batchSize": 100}}},
        # The first 100 documents (timestamps .000 to .099) fail: not a document.
        {"$replaceRoot": {"newRoot": {"$cond": [
            {"$lt": ["$timestamp", "2023-11-14T22:13:20.100"]}, 1, "$$ROOT"]}}},
        {"$match": {"timestamp": {"$lt": "2023-11-14T22:13:20.600"}}},
        {"$tumblingWindow": {"interval": {"size": 100, "unit": "ms"},
                             "pipeline": [{"$group": {"_id": None, "n": {"$sum": 1}}}]}},
        {"$addFields": {"_id": "$_stream_meta.window.start"}},  # $merge needs a non-null _id
        {"$merge": {"into": {"connectionName": "mongo1", "db": mongo_db.name, "coll": coll}}},
    ]
    client: pymongo.MongoClient[dict[str, Any]] = svc.client()
    client.admin.command({"createStreamProcessor": "fin", "pipeline": pipeline})
    client.admin.command({"startStreamProcessor": "fin"})

    def done() -> dict[str, Any] | None:
        st = client.admin.command({"getStreamProcessorStats": "fin", "options": {"verbose": True}})["stats"]
        return st if st["status"] == "stopped" else None

    st = wait_for(done, 90)
    assert (st["inputMessageCount"], st["outputMessageCount"], st["dlqMessageCount"]) == (1000, 5, 100)
    # Sizes are BSON bytes, as inputMessageSize: the 5 window documents are exactly what
    # $merge wrote; each DLQ entry holds its input document plus the reason.
    written = list(mongo_db[coll].find())
    assert st["outputMessageSize"] == sum(len(bson.encode(d)) for d in written)
    assert 100 * 250 < st["dlqMessageSize"] < 100 * 1000
    assert 1000 * 150 < st["inputMessageSize"] < 1000 * 300
    ops = st["operatorStats"]
    assert [counts(e) for e in ops] == [
        ("$replaceRoot", 1000, 900, 100),
        ("$match", 900, 500, 0),
        ("$tumblingWindow", 500, 5, 0),
        ("$addFields", 5, 5, 0),
    ]  # $source and the sink are covered by the top-level counters
    win = ops[2]
    assert (win["openWindowCount"], win["stateSize"]) == (0, 0)
    assert win["minOpenWindowStartTime"] is None and win["maxOpenWindowStartTime"] is None
    assert all(isinstance(e["executionTimeMillis"], int) for e in ops)
    got = sorted((d["_id"], d["n"]) for d in mongo_db[coll].find())
    assert got == [(datetime.fromtimestamp((T0_MS + 100 * i) / 1000, UTC).replace(tzinfo=None), 100) for i in range(1, 6)]
    # Without verbose there are no operator figures.
    assert "operatorStats" not in client.admin.command({"getStreamProcessorStats": "fin"})["stats"]
    client.close()


def test_running_window_reports_state_size_and_open_window_range(svc: Service, mongo_db: Any) -> None:
    coll = f"live_{time.monotonic_ns()}"
    pipeline = [
        {"$source": {"connectionName": "sample_stream_solar", "config": {"seed": 2, "rate": 400, "faultRate": 0.0}}},
        {"$match": {"obs.watts": {"$gte": 0}}},
        {"$tumblingWindow": {"interval": {"size": 1, "unit": "day"},
                             "pipeline": [{"$group": {"_id": "$group_id", "n": {"$sum": 1}}}]}},
        {"$merge": {"into": {"connectionName": "mongo1", "db": mongo_db.name, "coll": coll}}},
    ]
    client: pymongo.MongoClient[dict[str, Any]] = svc.client()
    client.admin.command({"createStreamProcessor": "live", "pipeline": pipeline})
    client.admin.command({"startStreamProcessor": "live"})
    try:
        def settled() -> dict[str, Any] | None:
            st = client.admin.command({"getStreamProcessorStats": "live", "verbose": True})["stats"]
            ops = st.get("operatorStats") or []
            return st if st["inputMessageCount"] >= 600 and len(ops) == 2 and ops[1]["stateSize"] == 10 else None

        st = wait_for(settled, 60)
        # All 10 solar groups sit in the one open (daily) window: 10 (window, group) entries.
        assert st["stateSize"] == 10
        m, win = st["operatorStats"]
        assert m["name"] == "$match" and m["inputMessageCount"] == m["outputMessageCount"] > 0
        assert m["dlqMessageCount"] == 0
        assert win["name"] == "$tumblingWindow" and win["openWindowCount"] == 1
        assert win["outputMessageCount"] == 0  # nothing has closed yet
        assert win["inputMessageCount"] <= m["outputMessageCount"]
        assert win["minOpenWindowStartTime"] == win["maxOpenWindowStartTime"]
        wm = st["watermark"]
        assert isinstance(wm, datetime)
        day = datetime(wm.year, wm.month, wm.day)
        start = win["minOpenWindowStartTime"].replace(tzinfo=None)
        assert start == day or (wm - day).total_seconds() < 5  # unless midnight just passed
        assert datetime.now(UTC).replace(tzinfo=None) - start < (datetime(2000, 1, 2) - datetime(2000, 1, 1))
    finally:
        client.admin.command({"stopStreamProcessor": "live"})
        client.close()


def test_counters_survive_a_kill_9_of_the_service(tmp_path: Path, mongodb_uri: str, mongo_db: Any) -> None:
    """The service persists the totals at every report: after kill -9 of the service (its
    children die with it) and a restart, stats() resumes from them instead of zero."""
    conns = tmp_path / "real-connections.toml"
    conns.write_text(f'[connections.mongo1]\ntype = "mongodb"\nuri = "{mongodb_uri}"\n')
    pipeline = [
        {"$source": {"connectionName": "sample_stream_solar", "config": {"rate": 50, "faultRate": 0.0}}},
        {"$tumblingWindow": {"interval": {"size": 1, "unit": "day"},
                             "pipeline": [{"$group": {"_id": "$group_id", "n": {"$sum": 1}}}]}},
        {"$merge": {"into": {"connectionName": "mongo1", "db": mongo_db.name, "coll": "k"}}},
    ]
    svc = start_service(tmp_path, "--connections", str(conns))
    try:
        client: pymongo.MongoClient[dict[str, Any]] = svc.client()
        client.admin.command({"createStreamProcessor": "durable", "pipeline": pipeline})
        client.admin.command({"startStreamProcessor": "durable"})

        def stats() -> dict[str, Any]:
            st: dict[str, Any] = client.admin.command({"getStreamProcessorStats": "durable"})["stats"]
            return st

        def enough() -> dict[str, Any] | None:
            st = stats()
            return st if st["inputMessageCount"] >= 150 else None

        before = wait_for(enough, 60)
        time.sleep(1.5)  # at least one more report, persisted
        kids = [int(p) for p in subprocess.run(["pgrep", "-P", str(svc.proc.pid)], capture_output=True, text=True).stdout.split()]
        assert kids, "the processor child is not running"
        for pid in [svc.proc.pid, *kids]:
            with contextlib.suppress(ProcessLookupError):  # a child may end with its parent
                os.kill(pid, signal.SIGKILL)
        svc.proc.wait()
        client.close()
        svc = start_service(tmp_path, "--connections", str(conns), port=svc.port)
        client = svc.client()
        # At 50 events/s the resumed child cannot have made up 150 events yet.
        after = stats()
        assert after["status"] == "running"
        assert after["inputMessageCount"] >= before["inputMessageCount"]
        assert after["inputMessageSize"] >= before["inputMessageSize"]
        # and the resumed child adds to them
        wait_for(lambda: stats()["inputMessageCount"] > after["inputMessageCount"], 60)
        client.admin.command({"stopStreamProcessor": "durable"})
        client.close()
    finally:
        svc.stop()
