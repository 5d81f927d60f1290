"""Crash recovery end to end with MongoDB (docs/semantics.md#checkpoints): Kafka (3 partitions)
-> ``$validate`` (dlq) -> ``$tumblingWindow``/``$group`` -> ``$merge`` into MongoDB, with
the processor option ``dlq`` writing to a MongoDB collection. The processor is the real
entry point (``python -m bytewax.run "flows.pipeline:from_file(...)"``) with a recovery
directory; it is killed with ``kill -9`` mid-stream and restarted from its checkpoint.

What is asserted, precisely:
- the window collection after crash + restart equals the collection of an uninterrupted
  run (every window, no duplicates, the same values) and an independent computation:
  ``$merge`` on ``_id`` makes replayed window results overwrite themselves (ASP's
  at-least-once looks exactly-once in the collection);
- the DLQ collection holds exactly the invalid inputs: a replayed invalid input rewrites
  the same deterministic ``_id`` (topic/partition/offset/reason), so the count equals the
  number of invalid inputs and every ``_id`` is distinct.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient

# The project root must be on sys.path before tests/ (tests/translator, tests/sources
# would otherwise shadow the editable-installed packages as namespace packages).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.append(str(Path(__file__).resolve().parent))

from kafka_flows import RecoveringRun, kill_while_producing, new_topic, produce, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.mongodb, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
T0 = datetime(2024, 8, 8, 23, 8, 0, tzinfo=UTC)
N = 3000  # events 10 ms apart -> 30 one-second windows x KEYS groups
KEYS = 4
STEP_MS = 10
KAFKA = "kafka1"
MONGO = "mongo1"
Key = tuple[Any, datetime]


def is_invalid(i: int) -> bool:
    return i % 50 == 7


def event(i: int) -> dict[str, Any]:
    v: Any = f"bad-{i}" if is_invalid(i) else i % 7
    return {"i": i, "g": i % KEYS, "v": v, "t": T0 + timedelta(milliseconds=i * STEP_MS)}


def records(lo: int, hi: int) -> list[dict[str, Any]]:
    return [{"partition": i % 3, "value": event(i)} for i in range(lo, hi)]


def flush_records() -> list[dict[str, Any]]:
    """One far-future valid event per partition: every partition's watermark passes the
    data, so every data window closes (the flush window itself stays open)."""
    far = T0 + timedelta(hours=1)
    return [{"partition": p, "value": {"i": -1, "g": "flush", "v": 0, "t": far}} for p in range(3)]


def expected() -> dict[Key, dict[str, int]]:
    """An independent computation of the window results."""
    out: dict[Key, dict[str, int]] = {}
    for i in range(N):
        if is_invalid(i):
            continue
        e = event(i)
        start = T0 + timedelta(seconds=(i * STEP_MS) // 1000)
        r = out.setdefault((e["g"], start), {"n": 0, "total": 0})
        r["n"] += 1
        r["total"] += e["v"]
    return out


INVALID = [i for i in range(N) if is_invalid(i)]


def write_files(tmp: Path, name: str, topic: str, bootstrap: str, uri: str, db: str, coll: str, dlq: str) -> tuple[Path, Path]:
    conns = tmp / f"{name}-connections.toml"
    conns.write_text(
        f'[connections.{KAFKA}]\ntype = "kafka"\nbootstrap_servers = "{bootstrap}"\n\n'
        f'[connections.{MONGO}]\ntype = "mongodb"\nuri = "{uri}"\n'
    )
    pipeline: list[dict[str, Any]] = [
        {"$source": {"connectionName": KAFKA, "topic": topic, "timeField": {"$toDate": "$t"},
                     "config": {"auto_offset_reset": "latest"}}},
        {"$validate": {"validator": {"v": {"$type": "int"}}, "validationAction": "dlq"}},
        {"$tumblingWindow": {"interval": {"size": 1, "unit": "second"}, "allowedLateness": 0, "pipeline": [
            {"$group": {"_id": {"g": "$g", "start": {"$meta": "stream.window.start"}},
                        "n": {"$sum": 1}, "total": {"$sum": "$v"}}}]}},
        {"$merge": {"into": {"connectionName": MONGO, "db": db, "coll": coll}}},
    ]
    spec = {"name": name, "pipeline": pipeline, "options": {"dlq": {"connectionName": MONGO, "db": db, "coll": dlq}}}
    path = tmp / f"{name}.json"
    path.write_text(json.dumps(spec))
    return path, conns


def Processor(spec: Path, conns: Path, recovery: Path, log: Path) -> RecoveringRun:
    return RecoveringRun(f"flows.pipeline:from_file('{spec}', connections='{conns}')", recovery, log)


def source_checkpointed(recovery: Path, topic: str) -> bool:
    """True once a committed checkpoint holds the offsets of all 3 partitions: from then
    on, data produced is read whatever ``auto_offset_reset`` says. The source starts at
    ``latest``, so a restart that ignored the checkpoint would skip everything produced
    while the processor was down, and the test would fail."""
    try:
        with sqlite3.connect(f"file:{recovery / 'part-0.sqlite3'}?mode=ro", uri=True, timeout=1) as c:
            commits = c.execute("SELECT count(*) FROM commits").fetchone()[0]
            keys = c.execute("SELECT count(DISTINCT state_key) FROM snaps WHERE state_key LIKE ?", (f"{topic}-%",)).fetchone()[0]
    except sqlite3.OperationalError:
        return False
    return bool(commits) and keys == 3


def windows(coll: Any) -> dict[Key, dict[str, int]]:
    """The window collection keyed by (group, window start); a duplicate fails."""
    out: dict[Key, dict[str, int]] = {}
    for d in coll.find({}):
        key = (d["_id"]["g"], d["_id"]["start"])
        assert key not in out, f"duplicate window document: {key}"
        assert set(d) - {"_stream_meta"} == {"_id", "n", "total"}, d
        out[key] = {"n": d["n"], "total": d["total"]}
    return out


def check_dlq(coll: Any, topic: str) -> None:
    """Exactly the invalid inputs, each once, with the $validate reason."""
    docs = list(coll.find({}))
    assert len({d["_id"] for d in docs}) == len(docs)
    assert len(docs) == len(INVALID), f"DLQ holds {len(docs)} documents, {len(INVALID)} inputs were invalid"
    seen = []
    for d in docs:
        i = d["doc"]["i"]
        assert d["errInfo"]["reason"] == f'Input document found to be invalid in $validate stage: v: $type "int" failed for "bad-{i}"'
        src = d["doc"]["_stream_meta"]["source"]
        assert (src["topic"], src["partition"]) == (topic, i % 3)
        seen.append(i)
    assert sorted(seen) == INVALID


def test_kill9_mid_stream_merge_and_dlq_equal_uninterrupted_run(
    kafka_bootstrap: str, mongodb_uri: str, mongo_db: Any, tmp_path: Path
) -> None:
    client: MongoClient[dict[str, Any]] = MongoClient(mongodb_uri, tz_aware=True, serverSelectionTimeoutMS=5000)
    db = client[mongo_db.name]
    want = expected()
    assert len(want) == 30 * KEYS

    # -- uninterrupted run: everything produced first, one process, no kill -------------------
    topic_a = new_topic(kafka_bootstrap, 3, prefix="mrec-a")
    spec, conns = write_files(tmp_path, "mreca", topic_a, kafka_bootstrap, mongodb_uri, db.name, "win_a", "dlq_a")
    a = Processor(spec, conns, tmp_path / "a-rec", tmp_path / "a.log")
    a.start()
    wait_for(lambda: source_checkpointed(a.recovery, topic_a), 30, a, "the first checkpoint (uninterrupted)")
    produce(kafka_bootstrap, topic_a, records(0, N) + flush_records())
    wait_for(lambda: db.win_a.count_documents({}) >= len(want) and db.dlq_a.count_documents({}) >= len(INVALID),
             60, a, "all windows and DLQ entries (uninterrupted)")
    time.sleep(1.0)  # anything extra (a duplicate, a stray window) would show up now
    a.kill9()
    baseline = windows(db.win_a)
    assert baseline == want
    check_dlq(db.dlq_a, topic_a)

    # -- crash run: start, 40% produced, kill -9 while producing, rest while down, restart ----
    topic_b = new_topic(kafka_bootstrap, 3, prefix="mrec-b")
    spec, conns = write_files(tmp_path, "mrecb", topic_b, kafka_bootstrap, mongodb_uri, db.name, "win_b", "dlq_b")
    b = Processor(spec, conns, tmp_path / "b-rec", tmp_path / "b.log")
    b.start()
    wait_for(lambda: source_checkpointed(b.recovery, topic_b), 30, b, "the first checkpoint")
    produce(kafka_bootstrap, topic_b, records(0, 1200))
    wait_for(lambda: db.win_b.count_documents({}) > 0, 60, b, "first window results")
    time.sleep(3.0)  # several checkpoints (-s 1)
    # Mid-stream: windows closing, offsets advancing, checkpoints being taken.
    kill_while_producing(kafka_bootstrap, topic_b, records, 1200, 2100, 30, b.kill9)
    at_kill = db.win_b.count_documents({})
    assert 0 < at_kill < len(want), f"the kill was not mid-stream: {at_kill} of {len(want)} windows written"
    produce(kafka_bootstrap, topic_b, records(2100, N) + flush_records())
    b.start()
    wait_for(lambda: db.win_b.count_documents({}) >= len(want) and db.dlq_b.count_documents({}) >= len(INVALID),
             60, b, "all windows and DLQ entries after restart")
    time.sleep(1.0)
    b.kill9()
    got = windows(db.win_b)
    assert got == baseline
    assert got == want
    check_dlq(db.dlq_b, topic_b)
    client.close()
