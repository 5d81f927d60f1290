"""Kafka ``$source`` against the real broker (docs/semantics.md#sources, docs/semantics.md#time-and-windows): parsing and envelope,
unparsable messages to the DLQ with their raw bytes, keyFormat, offsets in the
snapshot, auto_offset_reset, partitionIdleTimeout, and per-partition watermarks."""

from __future__ import annotations

import base64
import struct
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from bson import ObjectId
from bson.int64 import Int64
from bytewax.testing import TestingSink, run_main

# The project root must be on sys.path before tests/ (tests/translator, tests/sources
# would otherwise shadow the editable-installed packages as namespace packages).
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.append(str(Path(__file__).resolve().parents[1]))

from kafka_flows import CONN, Until, new_topic, produce, registry

from sources.base import IdleBatch
from sources.kafka import SOURCE_DLQ_KEY, KafkaSource
from translator.compile import build_flow, compile_pipeline, make_source
from translator.contracts import LATE_REASON, dlq_document
from translator.errors import TranslateError
from translator.options import ProcessorOptions

pytestmark = pytest.mark.kafka

TS = 1_700_000_000_123  # a Kafka message timestamp (ms)
T0 = datetime(2024, 8, 8, 23, 8, 0, tzinfo=UTC)


def source_for(bootstrap: str, topic: str, batch_size: int = 1024, **stage: Any) -> KafkaSource:
    spec = {"connectionName": CONN, "topic": topic, **stage}
    options = ProcessorOptions(name="srctest", batch_size=batch_size)
    src = make_source(compile_pipeline([{"$source": spec}], registry(bootstrap), options))
    assert isinstance(src, KafkaSource)
    return src


def poll(part: Any, n: int, timeout_s: float = 20.0) -> list[tuple[str, list[Any]]]:
    """Poll a partition until it returned ``n`` records (not counting idle markers)."""
    items: list[tuple[str, list[Any]]] = []
    got = 0
    deadline = time.monotonic() + timeout_s
    while got < n and time.monotonic() < deadline:
        for item in part.next_batch():
            items.append(item)
            got += len(item[1])
        time.sleep(0.01)
    assert got == n, f"expected {n} records, got {got}"
    return items


def records(part: Any, n: int) -> list[tuple[dict[str, Any], int]]:
    return [r for _, batch in poll(part, n) for r in batch]


def test_list_parts_one_per_kafka_partition(kafka_bootstrap: str) -> None:
    topic = new_topic(kafka_bootstrap, 3)
    other = new_topic(kafka_bootstrap, 2)
    src = source_for(kafka_bootstrap, topic)
    assert src.list_parts() == [f"{topic}-0", f"{topic}-1", f"{topic}-2"]
    both = source_for(kafka_bootstrap, [topic, other])  # type: ignore[arg-type]
    assert both.list_parts() == [f"{topic}-0", f"{topic}-1", f"{topic}-2", f"{other}-0", f"{other}-1"]
    missing = source_for(kafka_bootstrap, "mqlflow-no-such-topic-x1")
    with pytest.raises(RuntimeError, match=r"^Kafka \$source: topic 'mqlflow-no-such-topic-x1' does not exist on 127\.0\.0\.1:"):
        missing.list_parts()


def test_json_and_extended_json_with_envelope(kafka_bootstrap: str) -> None:
    topic = new_topic(kafka_bootstrap, 3)
    oid = "671a8ce1497407eff0e17cba"
    produce(
        kafka_bootstrap,
        topic,
        [
            {"partition": 1, "key": b"k1", "value": b'{"a": 1, "s": "x", "f": 1.5, "l": [1, {"b": null}]}',
             "headers": [("h1", b"v1"), ("h2", None)], "timestamp": TS},
            {"partition": 1, "value": b'{"d": {"$date": {"$numberLong": "1700000000000"}}, "n": {"$numberLong": "5"}, "i": {"$numberInt": "3"}}',
             "timestamp": TS + 1},
            {"partition": 1, "value": '{"d": {"$date": "2024-01-01T00:00:00Z"}, "o": {"$oid": "' + oid + '"}, "u": "caf\\u00e9"}',
             "timestamp": TS + 2},
        ],
    )
    src = source_for(kafka_bootstrap, topic, config={"auto_offset_reset": "earliest"})
    part = src.build_part("in", f"{topic}-1", None)
    items = poll(part, 3)
    assert {k for k, _ in items} == {f"{topic}-1"}
    recs = [r for _, b in items for r in b]
    assert [t for _, t in recs] == [TS, TS + 1, TS + 2]  # event time = message timestamp
    d0, d1, d2 = (d for d, _ in recs)
    assert d0 == {
        "a": 1, "s": "x", "f": 1.5, "l": [1, {"b": None}],
        "_stream_meta": {"source": {
            "type": "kafka", "ts": datetime.fromtimestamp(TS / 1000, UTC), "topic": topic, "partition": 1,
            "offset": 0, "key": b"k1", "headers": [{"k": "h1", "v": b"v1"}, {"k": "h2", "v": None}],
        }},
    }
    assert d1["d"] == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    assert type(d1["n"]) is Int64 and d1["n"] == 5
    assert type(d1["i"]) is int and d1["i"] == 3
    assert d1["_stream_meta"]["source"]["offset"] == 1
    assert d1["_stream_meta"]["source"]["key"] is None
    assert d1["_stream_meta"]["source"]["headers"] == []
    assert d2["d"] == datetime(2024, 1, 1, tzinfo=UTC)
    assert d2["o"] == ObjectId(oid)
    assert d2["u"] == "café"
    assert part.snapshot() == 3


def test_unparsable_messages_become_dlq_records_with_raw_bytes(kafka_bootstrap: str) -> None:
    topic = new_topic(kafka_bootstrap, 3)
    bad = [b"\xff\xfe{", b"not json", b"[1, 2]", b'{"a": ', b'{"d": {"$date": "garbage"}}']
    produce(kafka_bootstrap, topic, [{"partition": 0, "key": b"kk", "value": v, "timestamp": TS} for v in bad])
    produce(kafka_bootstrap, topic, [{"partition": 0, "key": b"tomb", "value": None, "timestamp": TS}])
    src = source_for(kafka_bootstrap, topic, config={"auto_offset_reset": "smallest"})
    recs = records(src.build_part("in", f"{topic}-0", None), len(bad) + 1)
    ts = datetime.fromtimestamp(TS / 1000, UTC)
    for i, (marker, t) in enumerate(recs):
        assert t == TS
        assert list(marker) == [SOURCE_DLQ_KEY]
        entry = marker[SOURCE_DLQ_KEY]
        assert set(entry) == {"reason", "doc"}
        raw = bad[i] if i < len(bad) else None
        assert entry["doc"] == {
            "rawValue": None if raw is None else base64.b64encode(raw).decode(),
            "_ts": ts,
            "_stream_meta": {"source": {"type": "kafka", "ts": ts, "topic": topic, "partition": 0, "offset": i,
                                        "key": b"tomb" if raw is None else b"kk", "headers": []}},
        }
    reasons = [m[SOURCE_DLQ_KEY]["reason"] for m, _ in recs]
    assert reasons[0].startswith("Failed to parse the Kafka message as JSON or Extended JSON: message value is not valid UTF-8: ")
    assert reasons[1].startswith("Failed to parse the Kafka message as JSON or Extended JSON: message value is not valid JSON or Extended JSON: Expecting value")
    assert reasons[2] == "Failed to parse the Kafka message as JSON or Extended JSON: message value is JSON but not an object (got list)"
    assert reasons[3].startswith("Failed to parse the Kafka message as JSON or Extended JSON: message value is not valid JSON or Extended JSON: ")
    assert reasons[4].startswith("Failed to parse the Kafka message as JSON or Extended JSON: message value is not valid JSON or Extended JSON: ")
    assert reasons[5] == "Kafka message has no value (a tombstone), not a JSON document"


@pytest.mark.parametrize(
    ("fmt", "raw", "expected"),
    [
        ("binData", b"\x00\x01\xff", b"\x00\x01\xff"),
        ("string", "clé".encode(), "clé"),
        ("json", b'{"id": 7, "d": {"$date": "2024-01-01T00:00:00Z"}}', {"id": 7, "d": datetime(2024, 1, 1, tzinfo=UTC)}),
        ("json", b'"just a string"', "just a string"),
        ("int", struct.pack(">i", -5), -5),
        ("long", struct.pack(">q", 2**40), Int64(2**40)),
    ],
)
def test_key_formats(kafka_bootstrap: str, fmt: str, raw: bytes, expected: Any) -> None:
    topic = new_topic(kafka_bootstrap, 1)
    produce(kafka_bootstrap, topic, [{"key": raw, "value": b'{"x": 1}'}])
    src = source_for(kafka_bootstrap, topic, config={"auto_offset_reset": "earliest", "keyFormat": fmt})
    [(doc, _)] = records(src.build_part("in", f"{topic}-0", None), 1)
    key = doc["_stream_meta"]["source"]["key"]
    assert key == expected and type(key) is type(expected)


def test_key_format_errors_dlq_or_pass_through(kafka_bootstrap: str) -> None:
    topic = new_topic(kafka_bootstrap, 1)
    produce(kafka_bootstrap, topic, [{"key": b"\x01\x02\x03", "value": b'{"x": 1}', "timestamp": TS}])
    dlq_src = source_for(kafka_bootstrap, topic, config={"auto_offset_reset": "earliest", "keyFormat": "int"})
    [(marker, _)] = records(dlq_src.build_part("in", f"{topic}-0", None), 1)
    ts = datetime.fromtimestamp(TS / 1000, UTC)
    assert marker == {SOURCE_DLQ_KEY: {
        "reason": "Failed to deserialize the Kafka message key as int: an int key is 4 bytes (big-endian), got 3",
        "doc": {"x": 1, "_ts": ts, "_stream_meta": {"source": {
            "type": "kafka", "ts": ts, "topic": topic, "partition": 0, "offset": 0, "key": b"\x01\x02\x03", "headers": []}}},
    }}
    pass_src = source_for(
        kafka_bootstrap, topic, config={"auto_offset_reset": "earliest", "keyFormat": "long", "keyFormatError": "passThrough"}
    )
    [(doc, _)] = records(pass_src.build_part("in", f"{topic}-0", None), 1)
    assert doc == {"x": 1, "_stream_meta": {"source": {
        "type": "kafka", "ts": ts, "topic": topic, "partition": 0, "offset": 0, "headers": []}}}


def test_resume_exactly_from_snapshot_offset(kafka_bootstrap: str) -> None:
    topic = new_topic(kafka_bootstrap, 1)
    produce(kafka_bootstrap, topic, [{"value": {"i": i}} for i in range(5)])
    src = source_for(kafka_bootstrap, topic, batch_size=3, config={"auto_offset_reset": "earliest"})
    part = src.build_part("in", f"{topic}-0", None)
    first = records(part, 3)
    assert [d["i"] for d, _ in first] == [0, 1, 2]
    state = part.snapshot()
    assert state == 3
    part.close()
    resumed = src.build_part("in", f"{topic}-0", state)
    assert [(d["i"], d["_stream_meta"]["source"]["offset"]) for d, _ in records(resumed, 2)] == [(3, 3), (4, 4)]
    time.sleep(0.3)
    assert resumed.next_batch() == []
    assert resumed.snapshot() == 5


@pytest.mark.parametrize(("reset", "earliest"), [(None, False), ("latest", False), ("end", False), ("largest", False),
                                                  ("earliest", True), ("beginning", True), ("smallest", True)])
def test_auto_offset_reset(kafka_bootstrap: str, reset: str | None, earliest: bool) -> None:
    topic = new_topic(kafka_bootstrap, 1)
    produce(kafka_bootstrap, topic, [{"value": {"old": i}} for i in range(2)])
    config = {} if reset is None else {"auto_offset_reset": reset}
    src = source_for(kafka_bootstrap, topic, config=config)
    part = src.build_part("in", f"{topic}-0", None)
    # "latest" is resolved to a concrete offset when the partition starts: a snapshot
    # taken before any message still resumes exactly there.
    assert part.snapshot() == (0 if earliest else 2)
    produce(kafka_bootstrap, topic, [{"value": {"new": 1}}])
    got = [d for d, _ in records(part, 3 if earliest else 1)]
    assert [{k: v for k, v in d.items() if k != "_stream_meta"} for d in got] == (
        [{"old": 0}, {"old": 1}, {"new": 1}] if earliest else [{"new": 1}]
    )


def test_group_id_commits_offsets_and_a_new_run_resumes_from_them(kafka_bootstrap: str) -> None:
    """With an explicit ``group_id`` offsets are committed at each checkpoint; a run
    without Bytewax state then starts at the group's committed offset (Kafka semantics)."""
    topic = new_topic(kafka_bootstrap, 1)
    group = f"grp-{topic}"
    produce(kafka_bootstrap, topic, [{"value": {"i": i}} for i in range(4)])
    cfg = {"auto_offset_reset": "earliest", "group_id": group}
    part = source_for(kafka_bootstrap, topic, batch_size=2, config=cfg).build_part("in", f"{topic}-0", None)
    assert [d["i"] for d, _ in records(part, 2)] == [0, 1]
    assert part.snapshot() == 2  # commits offset 2 to the group
    part.consumer.poll(0.5)  # let the asynchronous commit complete
    part.close()
    again = source_for(kafka_bootstrap, topic, config=cfg).build_part("in", f"{topic}-0", None)
    assert [d["i"] for d, _ in records(again, 2)] == [2, 3]


def test_partition_idle_timeout_emits_one_idle_marker_until_data(kafka_bootstrap: str) -> None:
    topic = new_topic(kafka_bootstrap, 1)
    src = source_for(kafka_bootstrap, topic, partitionIdleTimeout={"size": 300, "unit": "ms"})
    part = src.build_part("in", f"{topic}-0", None)
    assert part.next_batch() == []
    awake = part.next_awake()
    assert awake is not None and awake <= datetime.now(UTC) + timedelta(milliseconds=20)  # no busy loop
    time.sleep(0.35)
    out = part.next_batch()
    assert out == [(f"{topic}-0", IdleBatch())] and type(out[0][1]) is IdleBatch
    assert part.next_batch() == []  # once, not on every poll
    produce(kafka_bootstrap, topic, [{"value": {"a": 1}}])
    assert [d["a"] for d, _ in records(part, 1)] == [1]
    time.sleep(0.35)
    deadline = time.monotonic() + 5
    out = []
    while not out and time.monotonic() < deadline:
        out = part.next_batch()
        time.sleep(0.01)
    assert out == [(f"{topic}-0", IdleBatch())]  # idle again after new silence


def test_source_config_errors(kafka_bootstrap: str) -> None:
    topic = "whatever"
    cases: list[tuple[dict[str, Any], str]] = [
        ({"config": {"auto_offset_reset": "middle"}},
         "pipeline[0].$source.config.auto_offset_reset: must be one of earliest, beginning, smallest, latest, end, largest; got 'middle'"),
        ({"config": {"keyFormat": "avro"}},
         "pipeline[0].$source.config.keyFormat: must be one of binData, string, json, int, long; got 'avro'"),
        ({"config": {"keyFormatError": "drop"}},
         "pipeline[0].$source.config.keyFormatError: must be 'dlq' or 'passThrough'; got 'drop'"),
        ({"config": {"colour": 1}},
         "pipeline[0].$source.config.colour: unknown Kafka $source option 'colour'; allowed: auto_offset_reset, enable_auto_commit, group_id, keyFormat, keyFormatError"),
    ]
    for stage, message in cases:
        with pytest.raises(TranslateError) as exc:
            source_for(kafka_bootstrap, topic, **stage)
        assert str(exc.value) == message


# ---- through the dataflow: per-partition watermarks ------------------------------------------


def _window_pipeline(topic: str, idle: dict[str, Any] | None) -> list[dict[str, Any]]:
    src: dict[str, Any] = {"connectionName": CONN, "topic": topic, "timeField": {"$toDate": "$t"},
                           "config": {"auto_offset_reset": "earliest"}}
    if idle is not None:
        src["partitionIdleTimeout"] = idle
    return [
        {"$source": src},
        {"$tumblingWindow": {"interval": {"size": 1, "unit": "second"}, "allowedLateness": 0,
                             "pipeline": [{"$group": {"_id": "$g", "n": {"$sum": 1}}}]}},
    ]


def _run_window(bootstrap: str, topic: str, idle: dict[str, Any] | None, during: Any = None,
                 timeout_s: float = 20.0, dlq: list[list[dict[str, Any]]] | None = None,
                 fast: bool = True) -> tuple[list[dict[str, Any]], Until]:
    """Run until a result comes out (with ``dlq``: until a DLQ document does)."""
    options = ProcessorOptions(name="wmtest", fast_paths=fast)
    p = compile_pipeline(_window_pipeline(topic, idle), registry(bootstrap), options)
    out: list[list[dict[str, Any]]] = []
    src = Until(make_source(p), (lambda: bool(dlq)) if dlq is not None else (lambda: bool(out)), timeout_s)
    flow = build_flow(p, source=src, output_sink=TestingSink(out), dlq_sink=TestingSink(dlq if dlq is not None else []))
    if during is not None:
        threading.Thread(target=during, args=(out,), daemon=True).start()
    run_main(flow)
    return [d for b in out for d in b], src


def _two_busy_partitions(bootstrap: str, topic: str) -> None:
    # Partitions 0 and 1 get window [T0, T0+1s) and then move their watermark to T0+5s;
    # partition 2 stays silent.
    produce(bootstrap, topic, [
        {"partition": 0, "value": {"g": "a", "t": T0 + timedelta(milliseconds=100)}},
        {"partition": 0, "value": {"g": "a", "t": T0 + timedelta(milliseconds=200)}},
        {"partition": 1, "value": {"g": "b", "t": T0 + timedelta(milliseconds=300)}},
        {"partition": 0, "value": {"g": "z", "t": T0 + timedelta(seconds=5)}},
        {"partition": 1, "value": {"g": "z", "t": T0 + timedelta(seconds=5)}},
    ])


def test_window_stays_open_while_a_partition_is_silent_then_closes_when_it_speaks(kafka_bootstrap: str) -> None:
    topic = new_topic(kafka_bootstrap, 3)
    _two_busy_partitions(kafka_bootstrap, topic)
    seen_before: list[int] = []

    def later(out: list[Any]) -> None:
        time.sleep(4.0)
        seen_before.append(len(out))  # nothing may have closed while partition 2 was silent
        produce(kafka_bootstrap, topic, [{"partition": 2, "value": {"g": "c", "t": T0 + timedelta(seconds=5)}}])

    docs, src = _run_window(kafka_bootstrap, topic, None, during=later)
    assert seen_before == [0]
    assert not src.timed_out
    first = sorted((d["_id"], d["n"]) for d in docs if d["_stream_meta"]["window"]["start"] == T0)
    assert first == [("a", 2), ("b", 1)]
    assert {d["_stream_meta"]["window"]["start"] for d in docs} == {T0}  # [T0+5s, ..) is still open


def test_window_closes_when_the_silent_partition_times_out(kafka_bootstrap: str) -> None:
    topic = new_topic(kafka_bootstrap, 3)
    _two_busy_partitions(kafka_bootstrap, topic)
    start = time.monotonic()
    docs, src = _run_window(kafka_bootstrap, topic, {"size": 1, "unit": "second"})
    assert not src.timed_out
    assert time.monotonic() - start < 15
    assert sorted((d["_id"], d["n"], d["_stream_meta"]["window"]["start"]) for d in docs) == [("a", 2, T0), ("b", 1, T0)]


@pytest.mark.parametrize("fast", [True, False])
def test_a_timed_out_partition_that_resumes_with_old_data_sends_each_late_document_to_the_dlq(
        kafka_bootstrap: str, fast: bool) -> None:
    """Partition 2 is idle while the others close [T0, T0+1s); it then sends a document
    of that window (late: its own entry in the DLQ, as at ingest, with the same
    offset-derived ``_id``) and one of the open window [T0+5s, T0+6s) (not late)."""
    topic = new_topic(kafka_bootstrap, 3)
    _two_busy_partitions(kafka_bootstrap, topic)
    dlq: list[list[dict[str, Any]]] = []
    closed: list[bool] = []

    def later(out: list[Any]) -> None:
        # Partitions 0 and 1 stay busy in the open window [T0+5s, T0+6s): were all three
        # idle at once, the processor watermark would be partition 2's (none yet).
        deadline = time.monotonic() + 15
        busy = [{"partition": p, "value": {"g": "z", "t": T0 + timedelta(seconds=5)}} for p in (0, 1)]
        while not out and time.monotonic() < deadline:
            produce(kafka_bootstrap, topic, busy)
            time.sleep(0.3)
        closed.append(bool(out))  # [T0, T0+1s) is out before partition 2 speaks
        produce(kafka_bootstrap, topic, [
            {"partition": 2, "value": {"g": "c", "t": T0 + timedelta(milliseconds=500)}},
            {"partition": 2, "value": {"g": "c", "t": T0 + timedelta(milliseconds=5200)}},
        ])
        while not dlq and time.monotonic() < deadline:
            produce(kafka_bootstrap, topic, busy)
            time.sleep(0.3)

    docs, src = _run_window(kafka_bootstrap, topic, {"size": 1, "unit": "second"}, during=later, dlq=dlq, fast=fast)
    assert not src.timed_out and closed == [True]
    assert sorted((d["_id"], d["n"], d["_stream_meta"]["window"]["start"]) for d in docs) == [("a", 2, T0), ("b", 1, T0)]
    [late] = [d for b in dlq for d in b]
    assert list(late) == ["_id", "errInfo", "doc", "processorName", "dlqTime", "missedWindowStartTimes"]
    assert late["_id"] == dlq_document(LATE_REASON, late["doc"], "wmtest")["_id"]  # as a late document at ingest
    assert (late["errInfo"], late["processorName"], late["missedWindowStartTimes"]) == (
        {"reason": LATE_REASON}, "wmtest", [T0])
    assert {k: v for k, v in late["doc"].items() if k != "_stream_meta"} == {
        "g": "c", "t": T0 + timedelta(milliseconds=500), "_ts": T0 + timedelta(milliseconds=500)}
    source = late["doc"]["_stream_meta"]["source"]
    assert (source["type"], source["topic"], source["partition"], source["offset"]) == ("kafka", topic, 2, 0)


def test_without_idle_timeout_a_silent_partition_holds_the_window_until_timeout(kafka_bootstrap: str) -> None:
    topic = new_topic(kafka_bootstrap, 3)
    _two_busy_partitions(kafka_bootstrap, topic)
    docs, src = _run_window(kafka_bootstrap, topic, None, timeout_s=5.0)
    assert src.timed_out
    assert docs == []


def test_unparsable_messages_reach_the_dlq_through_the_flow(kafka_bootstrap: str) -> None:
    """Needs IngestLogic to route source DLQ markers (see sources/kafka.py SOURCE_DLQ_KEY)."""
    topic = new_topic(kafka_bootstrap, 3)
    produce(kafka_bootstrap, topic, [
        {"partition": 0, "value": b"\x00garbage", "timestamp": TS},
        {"partition": 1, "value": {"ok": 1}, "timestamp": TS},
    ])
    options = ProcessorOptions(name="dlqflow")
    p = compile_pipeline([{"$source": {"connectionName": CONN, "topic": topic, "config": {"auto_offset_reset": "earliest"}}}],
                         registry(kafka_bootstrap), options)
    out: list[list[dict[str, Any]]] = []
    dlq: list[list[dict[str, Any]]] = []
    src = Until(make_source(p), lambda: bool(out) and bool(dlq), 20)
    run_main(build_flow(p, source=src, output_sink=TestingSink(out), dlq_sink=TestingSink(dlq)))
    ts = datetime.fromtimestamp(TS / 1000, UTC)
    [good] = [d for b in out for d in b]
    assert good["ok"] == 1 and good["_ts"] == ts
    [bad] = [d for b in dlq for d in b]
    assert bad["errInfo"] == {"reason": "Failed to parse the Kafka message as JSON or Extended JSON: "
                                        "message value is not valid JSON or Extended JSON: Expecting value: line 1 column 1 (char 0)"}
    assert bad["processorName"] == "dlqflow"
    assert bad["doc"]["rawValue"] == base64.b64encode(b"\x00garbage").decode()
    assert bad["doc"]["_ts"] == ts
    assert bad["doc"]["_stream_meta"]["source"]["partition"] == 0


def test_fast_decoder_and_reference_give_the_same_records(kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """One plain batch (orjson for all), then a batch mixing Extended JSON, a big int,
    escapes and broken values (per-message choice): records equal those read with the
    fast decoder switched off, types included."""
    import sources.kafka as kafka_mod

    topic = new_topic(kafka_bootstrap, 1)
    plain = [{"partition": 0, "value": f'{{"i": {i}, "f": {i / 7}, "s": "é{i}", "o": {{"l": [1, null]}}}}'.encode(), "timestamp": TS}
             for i in range(50)]
    mixed = [b'{"d": {"$date": "2024-01-01T00:00:00Z"}}', b'{"big": 123456789012345678901234}', b'{"e": "\\u00e9"}',
             b"not json", b"[1]", b'{"ok": 1.0}']
    produce(kafka_bootstrap, topic, plain)
    produce(kafka_bootstrap, topic, [{"partition": 0, "value": v, "timestamp": TS + 1} for v in mixed])
    n = len(plain) + len(mixed)

    def read() -> str:
        src = source_for(kafka_bootstrap, topic, batch_size=len(plain), config={"auto_offset_reset": "earliest"})
        part = src.build_part("in", f"{topic}-0", None)
        try:
            return repr(records(part, n))
        finally:
            part.close()

    fast = read()
    monkeypatch.setattr(kafka_mod, "FAST_JSON", False)
    assert fast == read()
    assert "Int64" not in fast and "123456789012345678901234" in fast and "'ok': 1.0" in fast


def test_fast_paths_false_gives_the_same_documents_and_stream_meta(kafka_bootstrap: str) -> None:
    """The processor option ``fastPaths`` both ways on the same two partitions: every
    record (document, ``_stream_meta.source`` with its shared timestamps, keys, headers,
    DLQ records) is identical, types included, and the decoder counters show which path
    ran: with the fast path only the messages orjson cannot decode like the reference
    fall back; with ``fastPaths: false`` orjson decodes nothing."""
    import sources.kafka as kafka_mod

    topic = new_topic(kafka_bootstrap, 2)
    plain = [{"partition": p, "value": f'{{"i": {i}, "f": {i / 7}, "s": "é{i}", "o": {{"l": [1, null]}}}}'.encode(),
              "timestamp": TS + i // 5} for p in (0, 1) for i in range(40)]
    # Partition 0 stays a plain batch (no marker): these go through the inline orjson
    # path and its fallbacks (orjson refuses NaN; a list is not a document).
    odd0 = [{"partition": 0, "value": b'{"nan": NaN}', "timestamp": TS},
            {"partition": 0, "value": b"[1]", "timestamp": TS},
            {"partition": 0, "value": b"not json", "timestamp": TS + 1},
            {"partition": 0, "value": None, "key": b"k0", "timestamp": TS + 1},
            {"partition": 0, "value": b'{"keyed": 1}', "key": b"k1", "headers": [("h", b"v")], "timestamp": TS + 2},
            {"partition": 0, "value": b'{"hdr": 2}', "headers": [("a", b"1"), ("b", None)], "timestamp": TS + 2}]
    # Partition 1 has markers: the per-message choice.
    odd1 = [{"partition": 1, "value": b'{"big": 1234567890123456789012}', "timestamp": TS},
            {"partition": 1, "value": b'{"d": {"$date": "2024-01-01T00:00:00Z"}}', "timestamp": TS + 3}]
    produce(kafka_bootstrap, topic, plain + odd0 + odd1)
    counts = {0: 40 + len(odd0), 1: 40 + len(odd1)}

    def read(fast: bool) -> tuple[str, dict[str, int]]:
        options = ProcessorOptions(name="fastpaths", fast_paths=fast)
        p = compile_pipeline([{"$source": {"connectionName": CONN, "topic": topic,
                                           "config": {"auto_offset_reset": "earliest"}}}], registry(kafka_bootstrap), options)
        src = make_source(p)
        before = dict(kafka_mod.DECODE_COUNTS)
        out = []
        for n in (0, 1):
            part = src.build_part("in", f"{topic}-{n}", None)
            try:
                out.append(records(part, counts[n]))
            finally:
                part.close()
        return repr(out), {k: kafka_mod.DECODE_COUNTS[k] - before[k] for k in before}

    fast, fast_counts = read(True)
    slow, slow_counts = read(False)
    assert fast == slow
    assert "'nan': nan" in fast and "'big': 1234567890123456789012" in fast and "'keyed': 1" in fast
    assert fast.count(SOURCE_DLQ_KEY) == 3  # [1], not json, the tombstone
    decoded = 80 + len(odd0) - 1 + len(odd1)  # every message with a value
    # Fallbacks: NaN, [1], not json (partition 0); the big int and $date (partition 1).
    assert fast_counts == {"fast": decoded - 5, "reference": 5}
    assert slow_counts == {"fast": 0, "reference": decoded}
