"""Crash recovery end to end (docs/semantics.md#checkpoints): Kafka (3 partitions) -> $validate ->
$tumblingWindow/$group -> output, run with ``python -m bytewax.run`` and a recovery
directory, ``kill -9`` mid-stream, restart from the checkpoint.

What is asserted, precisely:
- every window result of an uninterrupted run appears after the crash and restart,
  with the same values; results emitted between the last checkpoint and the crash
  are emitted again (at-least-once), always with identical values, so deduplicating
  by ``(_id, window start)`` (what ``$merge`` on ``_id`` does) gives exactly the
  uninterrupted run's set;
- the DLQ holds every invalid input at least once; an invalid input processed
  after the last checkpoint is written again on replay, with the same deterministic
  DLQ ``_id`` (topic/partition/offset/reason), so deduplicated by ``_id`` the DLQ is
  exactly the invalid inputs;
- with ``$emit``, the topic holds every result at least once; compacted by key
  (the latest value per key) it equals the uninterrupted run.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from bson import json_util

# The project root must be on sys.path before tests/ (tests/translator, tests/sources
# would otherwise shadow the editable-installed packages as namespace packages).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.append(str(Path(__file__).resolve().parent))

from kafka_flows import (
    CONN,
    RecoveringRun,
    consume_all,
    kill_while_producing,
    new_topic,
    produce,
    read_docs,
    wait_for,
    window_results,
    write_spec,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
T0 = datetime(2024, 8, 8, 23, 8, 0, tzinfo=UTC)
N = 3000  # events; 10 ms apart -> 30 one-second windows
KEYS = 4
STEP_MS = 10
JSON_OPTS = json_util.JSONOptions(tz_aware=True)


def event(i: int) -> dict[str, Any]:
    v: Any = f"bad-{i}" if is_invalid(i) else i % 7
    return {"i": i, "k": i % KEYS, "v": v, "t": T0 + timedelta(milliseconds=i * STEP_MS)}


def is_invalid(i: int) -> bool:
    return i % 50 == 7


def records(lo: int, hi: int) -> list[dict[str, Any]]:
    return [{"partition": i % 3, "value": event(i)} for i in range(lo, hi)]


def flush_records() -> list[dict[str, Any]]:
    # Move every partition's watermark far past the data so all its windows close.
    far = T0 + timedelta(hours=1)
    return [{"partition": p, "value": {"i": -1, "k": "flush", "v": 0, "t": far}} for p in range(3)]


def expected() -> dict[tuple[Any, datetime], dict[str, Any]]:
    """An independent computation of the window results."""
    out: dict[tuple[Any, datetime], dict[str, Any]] = {}
    for i in range(N):
        if is_invalid(i):
            continue
        e = event(i)
        start = T0 + timedelta(seconds=(i * STEP_MS) // 1000)
        r = out.setdefault((e["k"], start), {"n": 0, "total": 0})
        r["n"] += 1
        r["total"] += e["v"]
    return out


def pipeline(topic: str, emit_topic: str | None = None) -> list[dict[str, Any]]:
    stages: list[dict[str, Any]] = [
        {"$source": {"connectionName": CONN, "topic": topic, "timeField": {"$toDate": "$t"},
                     "config": {"auto_offset_reset": "earliest"}}},
        {"$validate": {"validator": {"v": {"$type": "int"}}, "validationAction": "dlq"}},
        {"$tumblingWindow": {"interval": {"size": 1, "unit": "second"}, "allowedLateness": 0,
                             "pipeline": [{"$group": {"_id": "$k", "n": {"$sum": 1}, "total": {"$sum": "$v"}}}]}},
    ]
    if emit_topic is not None:
        stages.append({"$emit": {"connectionName": CONN, "topic": emit_topic, "config": {
            "key": {"k": "$_id", "start": {"$meta": "stream.window.start"}}, "keyFormat": "json"}}})
    return stages


# ---- the processor process ------------------------------------------------------------------


def Processor(spec: Path, recovery: Path, log: Path) -> RecoveringRun:
    return RecoveringRun(f"kafka_flows:flow_from_spec('{spec}')", recovery, log)



def results(docs: list[dict[str, Any]]) -> tuple[dict[tuple[Any, Any], dict[str, Any]], int]:
    """Deduplicated by (_id, window start) as ``$merge`` would; replays must be identical."""
    return window_results(docs, ("n", "total"))


def check_dlq(dlq: list[dict[str, Any]]) -> int:
    """Every invalid input, each at least once; replays share the deterministic _id."""
    invalid = {i for i in range(N) if is_invalid(i)}
    by_id: dict[Any, int] = {}
    for d in dlq:
        i = d["doc"]["i"]
        assert d["errInfo"]["reason"] == f'Input document found to be invalid in $validate stage: v: $type "int" failed for "bad-{i}"'
        assert by_id.setdefault(d["_id"], i) == i
    assert sorted(by_id.values()) == sorted(invalid)  # deduplicated by _id: exactly the invalid inputs
    return len(dlq) - len(by_id)


# ---- the runs -------------------------------------------------------------------------------


def uninterrupted(bootstrap: str, tmp: Path) -> dict[tuple[Any, datetime], dict[str, Any]]:
    topic = new_topic(bootstrap, 3, prefix="rec-a")
    produce(bootstrap, topic, records(0, N) + flush_records())
    out = tmp / "a-out"
    proc = Processor(write_spec(tmp / "a.json", bootstrap, pipeline(topic), out, {"name": "reca"}), tmp / "a-rec", tmp / "a.log")
    want = expected()
    proc.start()
    wait_for(lambda: len(results(read_docs(out, "output"))[0]) >= len(want), 90, proc, "all windows (uninterrupted)")
    time.sleep(1.0)
    proc.kill9()
    got, dups = results(read_docs(out, "output"))
    assert dups == 0
    assert check_dlq(read_docs(out, "dlq")) == 0
    return got


def crash_and_resume(bootstrap: str, tmp: Path, topic: str, spec_out: Path, emit_topic: str | None,
                     done: Callable[[], bool]) -> None:
    """Produce 40%, run, produce at a steady rate and kill -9 in the middle of it,
    produce the rest while the processor is down, restart from the checkpoint."""
    name = "recb" if emit_topic is None else "recc"
    spec = write_spec(tmp / f"{name}.json", bootstrap, pipeline(topic, emit_topic), spec_out, {"name": name})
    proc = Processor(spec, tmp / f"{name}-rec", tmp / f"{name}.log")
    produce(bootstrap, topic, records(0, 1200))
    proc.start()
    wait_for(lambda: any(spec_out.glob("output-*.jsonl")) or emit_topic is not None, 60, proc, "first output")
    time.sleep(3.0)  # several checkpoints (-s 1)
    # Mid-stream: windows are closing and offsets advancing right now.
    kill_while_producing(bootstrap, topic, records, 1200, 2100, 30, proc.kill9)
    produce(bootstrap, topic, records(2100, N) + flush_records())
    proc.start()
    wait_for(done, 120, proc, "all windows after restart")
    time.sleep(1.0)
    proc.kill9()


def test_kill9_mid_stream_then_resume_matches_uninterrupted_run(kafka_bootstrap: str, tmp_path: Path) -> None:
    baseline = uninterrupted(kafka_bootstrap, tmp_path)
    assert baseline == expected()

    topic = new_topic(kafka_bootstrap, 3, prefix="rec-b")
    out = tmp_path / "b-out"
    want = expected()
    crash_and_resume(kafka_bootstrap, tmp_path, topic, out, None,
                     lambda: len(results(read_docs(out, "output"))[0]) >= len(want))
    got, dups = results(read_docs(out, "output"))
    assert got == baseline
    dlq_dups = check_dlq(read_docs(out, "dlq"))
    print(f"replayed window results: {dups}; replayed DLQ entries: {dlq_dups}")


def test_kill9_with_emit_is_at_least_once_and_exact_when_compacted(kafka_bootstrap: str, tmp_path: Path) -> None:
    topic = new_topic(kafka_bootstrap, 3, prefix="rec-c")
    out_topic = new_topic(kafka_bootstrap, 3, prefix="rec-c-out")
    out = tmp_path / "c-out"
    want = expected()
    seen: list[Any] = []

    def all_emitted() -> bool:
        seen[:] = consume_all(kafka_bootstrap, out_topic, 100_000, timeout_s=1.0)
        return len({m.key() for m in seen}) >= len(want)

    crash_and_resume(kafka_bootstrap, tmp_path, topic, out, out_topic, all_emitted)
    msgs = consume_all(kafka_bootstrap, out_topic, 100_000, timeout_s=3.0)
    compacted: dict[bytes, dict[str, Any]] = {}
    for m in msgs:
        doc = json_util.loads(m.value(), json_options=JSON_OPTS)  # type: ignore[arg-type]
        key = json.loads(m.key())  # type: ignore[arg-type]
        assert key["k"] == doc["_id"]
        vals = {"n": doc["n"], "total": doc["total"]}
        prev = compacted.get(m.key())  # type: ignore[arg-type]
        assert prev is None or prev == vals, "a replayed message differs"
        compacted[m.key()] = vals  # type: ignore[index]
    got = {(json.loads(k)["k"], json_util.loads(k.decode(), json_options=JSON_OPTS)["start"]): v for k, v in compacted.items()}
    assert got == want
    assert len(msgs) >= len(want)
    check_dlq(read_docs(out, "dlq"))
    print(f"messages: {len(msgs)} for {len(want)} results")
