"""The Kafka source's deferred ``_stream_meta.source`` envelope (translator/source_meta.py):
which pipelines defer it, and that documents, DLQ entries and window results are those
of the reference path (``fastPaths: false``, the envelope built per message) on the real
broker."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import bson
import pytest
from bytewax.testing import TestingSink, run_main

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.append(str(Path(__file__).resolve().parents[1]))

from confluent_kafka import Message
from kafka_flows import CONN, Until, new_topic, produce, registry

from flows.processor import INPUT_SIZE_COUNTS, input_size
from service.channel import bson_size
from sources.base import DeferredMetaBatch
from sources.kafka import SOURCE_DLQ_KEY, _batch_decoder
from translator.compile import build_flow, compile_pipeline, make_source
from translator.options import ProcessorOptions
from translator.parse import parse_pipeline
from translator.source_meta import defers_source_meta

TS = 1_700_000_000_123
T0 = datetime(2024, 8, 8, 23, 8, 0, tzinfo=UTC)
SRC = {"$source": {"connectionName": CONN, "topic": "t", "timeField": {"$dateFromString": {"dateString": "$ts"}}}}


def _window(*inner: dict[str, Any], boundary: str = "eventTime") -> dict[str, Any]:
    return {"$tumblingWindow": {"interval": {"size": 3, "unit": "second"}, "boundary": boundary, "pipeline": list(inner)}}


GROUP = {"$group": {"_id": "$g", "n": {"$sum": 1}, "t": {"$avg": "$v"}}}


@pytest.mark.parametrize(
    ("stages", "defers"),
    [
        ([_window(GROUP)], True),
        # $meta after the $group reads the window's bounds, not a source document.
        ([_window(GROUP, {"$project": {"n": 1, "start": {"$meta": "stream.window.start"}}})], True),
        ([{"$match": {"v": {"$gt": 0}}}, {"$addFields": {"w": {"$multiply": ["$v", 2]}}}, _window(GROUP)], True),
        ([], False),  # no window: every document is an output
        ([{"$match": {"v": 1}}], False),
        ([_window(GROUP, boundary="processingTime")], False),
        ([{"$sessionWindow": {"partitionBy": "$g", "gap": {"size": 1, "unit": "second"}, "pipeline": [GROUP]}}], False),
        ([_window({"$group": {"_id": "$_stream_meta.source.partition", "n": {"$sum": 1}}})], False),
        ([_window({"$group": {"_id": "$g", "docs": {"$push": "$$ROOT"}}})], False),
        ([_window({"$match": {"$expr": {"$eq": [{"$meta": "stream.source.topic"}, "t"]}}}, GROUP)], False),
        ([{"$addFields": {"p": {"$meta": "stream.source.partition"}}}, _window(GROUP)], False),
        ([{"$match": {"$jsonSchema": {"required": ["g"]}}}, _window(GROUP)], False),
        ([{"$addFields": {"m": {"$getField": "_stream_meta"}}}, _window(GROUP)], False),
        ([{"$validate": {"validator": {"g": {"$exists": True}}}}, _window(GROUP)], False),
    ],
)
def test_defers_only_where_no_stage_before_the_group_can_read_the_envelope(stages: list[dict[str, Any]], defers: bool) -> None:
    assert defers_source_meta(parse_pipeline([SRC, *stages])) is defers


def test_time_field_reading_the_envelope_builds_it() -> None:
    src = {"$source": {**SRC["$source"], "timeField": {"$toDate": "$_stream_meta.source.ts"}}}
    assert defers_source_meta(parse_pipeline([src, _window(GROUP)])) is False


def test_settings_defer_only_with_fast_paths() -> None:
    reg = registry("127.0.0.1:1")  # compiling does not connect
    for fast, want in ((True, True), (False, False)):
        p = compile_pipeline([SRC, _window(GROUP)], reg, ProcessorOptions(name="m", fast_paths=fast))
        assert p.source_settings.defer_meta is want
    p = compile_pipeline([SRC], reg, ProcessorOptions(name="m"))
    assert p.source_settings.defer_meta is False


# ---- against the broker ---------------------------------------------------------------------


def _read(bootstrap: str, topic: str, fast: bool, counts: dict[int, int]) -> list[list[tuple[str, Any]]]:
    """Every item of each partition, polled until it returned ``counts[p]`` records."""
    options = ProcessorOptions(name="meta", fast_paths=fast)
    reg = registry(bootstrap)
    pipeline = [{"$source": {"connectionName": CONN, "topic": topic, "config": {"auto_offset_reset": "earliest"},
                             "timeField": {"$toDate": "$i"}}}, _window(GROUP)]
    p = compile_pipeline(pipeline, reg, options)
    assert p.source_settings.defer_meta is fast
    src = make_source(p)
    out = []
    for n, want in counts.items():
        part = src.build_part("in", f"{topic}-{n}", None)
        items: list[tuple[str, Any]] = []
        try:
            while sum(len(b) for _, b in items) < want:
                items.extend(part.next_batch())
        finally:
            part.close()
        out.append(items)
    return out


@pytest.mark.kafka
def test_deferred_envelopes_equal_the_reference_records(kafka_bootstrap: str) -> None:
    """Partition 0: a plain batch whose common run ends at a refused value, then NaN, a
    tombstone, keys and headers, one at a time; partition 1: Extended JSON (the
    per-message decoder). With deferral, the run's documents have no envelope until the
    batch is completed, and then every record equals the reference's, types and shared
    timestamps included."""
    topic = new_topic(kafka_bootstrap, 2)
    plain = [{"partition": p, "value": f'{{"i": {i}, "f": {i / 7}, "s": "é{i}"}}'.encode(), "timestamp": TS + i // 5,
              **({"headers": [("h", b"3")]} if i == 3 else {})}
             for p in (0, 1) for i in range(30)]
    odd0 = [{"partition": 0, "value": b"[1]", "timestamp": TS},
            {"partition": 0, "value": b'{"nan": NaN}', "timestamp": TS},
            {"partition": 0, "value": None, "key": b"k0", "timestamp": TS + 1},
            {"partition": 0, "value": b'{"keyed": 1}', "key": b"k1", "headers": [("h", b"v")], "timestamp": TS + 2},
            {"partition": 0, "value": b'{"after": 2}', "timestamp": TS + 2}]
    odd1 = [{"partition": 1, "value": b'{"d": {"$date": "2024-01-01T00:00:00Z"}}', "timestamp": TS + 3}]
    produce(kafka_bootstrap, topic, plain + odd0 + odd1)
    counts = {0: 30 + len(odd0), 1: 30 + len(odd1)}

    fast = _read(kafka_bootstrap, topic, True, counts)
    bare: list[Any] = []
    for items in fast:
        for _, batch in items:
            assert type(batch) is DeferredMetaBatch
            bare.extend(d.get("i", d.get("after", d.get("d"))) for d, _ in batch if "_stream_meta" not in d and SOURCE_DLQ_KEY not in d)
            batch.complete()
            batch.complete()  # once only
    # The common run: every plain message and the Extended JSON one (partition 1); after
    # the refused "[1]" partition 0's messages got theirs at once (unless a new poll
    # started a new run at "after").
    assert sorted(map(str, bare)) in (sorted(map(str, [*range(30), *range(30), T0.replace(2024, 1, 1, 0, 0)])),
                                      sorted(map(str, [*range(30), *range(30), T0.replace(2024, 1, 1, 0, 0), 2])))
    reference = _read(kafka_bootstrap, topic, False, counts)
    assert repr(fast) == repr(reference)
    [*_, keyed, after] = [d for _, b in fast[0] for d, _ in b]
    assert keyed["_stream_meta"]["source"]["key"] == b"k1"
    assert after["_stream_meta"]["source"] == {
        "type": "kafka", "ts": datetime.fromtimestamp((TS + 2) / 1000, UTC), "topic": topic, "partition": 0,
        "offset": 34, "key": None, "headers": []}
    [third] = [d for _, b in fast[1] for d, _ in b if d.get("i") == 3]
    assert third["_stream_meta"]["source"]["headers"] == [{"k": "h", "v": b"3"}]


def _run(bootstrap: str, topic: str, fast: bool) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    options = ProcessorOptions(name="metaflow", fast_paths=fast)
    reg = registry(bootstrap)
    pipeline = [
        {"$source": {"connectionName": CONN, "topic": topic, "config": {"auto_offset_reset": "earliest"},
                     "timeField": {"$dateFromString": {"dateString": "$ts"}}}},
        {"$tumblingWindow": {"interval": {"size": 1, "unit": "second"}, "allowedLateness": 0,
                             "pipeline": [{"$group": {"_id": "$g", "n": {"$sum": 1}, "v": {"$max": "$v"}}}]}},
    ]
    p = compile_pipeline(pipeline, reg, options)
    out: list[list[dict[str, Any]]] = []
    dlq: list[list[dict[str, Any]]] = []

    def done() -> bool:
        return sum(map(len, out)) >= 2 and sum(map(len, dlq)) >= 2

    src = Until(make_source(p), done, 30)
    run_main(build_flow(p, options, source=src, output_sink=TestingSink(out), dlq_sink=TestingSink(dlq)))
    assert not src.timed_out
    dead = [d for b in dlq for d in b]
    for d in dead:
        d.pop("dlqTime")
    return sorted((d for b in out for d in b), key=lambda d: d["_id"]), sorted(dead, key=lambda d: d["errInfo"]["reason"])


@pytest.mark.kafka
def test_window_results_and_dlq_entries_equal_the_reference(kafka_bootstrap: str) -> None:
    """Partition 1's batch takes the window's fast path (its envelopes are never built);
    partition 0's has a late document and an unparsable value, so it takes the general
    path, which completes the batch: the late document's DLQ entry carries its exact
    envelope. Results and DLQ entries equal the reference's (``fastPaths: false``)."""
    topic = new_topic(kafka_bootstrap, 2)

    def at(ms: int) -> str:
        return (T0 + timedelta(milliseconds=ms)).isoformat().replace("+00:00", "Z")

    produce(kafka_bootstrap, topic, [
        {"partition": 0, "value": {"g": "a", "v": 1, "ts": at(100)}, "timestamp": TS},
        {"partition": 0, "value": {"g": "z", "v": 2, "ts": at(5000)}, "timestamp": TS},
        {"partition": 0, "value": {"g": "a", "v": 3, "ts": at(200)}, "timestamp": TS + 1},  # late
        {"partition": 0, "value": b"\x00bad", "timestamp": TS + 1},
        {"partition": 1, "value": {"g": "b", "v": 4, "ts": at(300)}, "timestamp": TS},
        {"partition": 1, "value": {"g": "a", "v": 5, "ts": at(400)}, "timestamp": TS},
        {"partition": 1, "value": {"g": "z", "v": 6, "ts": at(5000)}, "timestamp": TS},
    ])
    fast_out, fast_dlq = _run(kafka_bootstrap, topic, True)
    ref_out, ref_dlq = _run(kafka_bootstrap, topic, False)
    assert fast_out == ref_out
    assert fast_dlq == ref_dlq
    assert [(d["_id"], d["n"], d["v"]) for d in fast_out] == [("a", 2, 5), ("b", 1, 4)]
    bad, late = fast_dlq
    assert late["errInfo"] == {"reason": "Input document arrived late."}
    assert late["doc"] == {
        "g": "a", "v": 3, "ts": at(200), "_ts": T0 + timedelta(milliseconds=200),
        "_stream_meta": {"source": {"type": "kafka", "ts": datetime.fromtimestamp((TS + 1) / 1000, UTC), "topic": topic,
                                    "partition": 0, "offset": 2, "key": None, "headers": []}},
    }
    assert list(late["doc"]) == ["g", "v", "ts", "_ts", "_stream_meta"]
    assert bad["errInfo"]["reason"].startswith("Failed to parse the Kafka message as JSON or Extended JSON: ")
    assert bad["doc"]["_stream_meta"]["source"]["offset"] == 3


# ---- stats() inputMessageSize without the envelope --------------------------------------------


def _sized(batch: Any) -> tuple[int, str | None]:
    """``input_size`` of a batch (what the service's stats observer counts) and which way
    it went: ``arithmetic``, ``completed`` or None (no deferred envelope)."""
    before = dict(INPUT_SIZE_COUNTS)
    got = input_size(batch)
    moved = [k for k in before if INPUT_SIZE_COUNTS[k] != before[k]]
    assert len(moved) <= 1
    return got, moved[0] if moved else None


def _headers(n: int) -> list[tuple[str, bytes | None]]:
    return [(f"h{i}" if i % 3 else f"ключ-{i}", None if i % 4 == 1 else b"" if i % 4 == 2 else f"v{i}é".encode() * i)
            for i in range(n)]


@pytest.mark.kafka
def test_input_size_from_the_envelope_parts_equals_the_completed_batch(kafka_bootstrap: str) -> None:
    """``stats()`` ``inputMessageSize`` of a deferred batch, counted from the envelope's
    parts, equals the BSON size of the completed batch's documents, batch by batch, and
    in total the reference path's (``fastPaths: false``, envelopes built per message).
    Partition 0: headers of every kind (none, empty, null and binary values, Cyrillic
    keys, more than 10 and 100 of them); 1: documents with their own ``_stream_meta``
    (the envelope replaces it: the batch is completed); 2: an integer BSON cannot encode
    (completed; the figure leaves that document out, as before); 3: a keyed message, a
    tombstone and an unparsable value after the run; 4: Extended JSON."""
    topic = new_topic(kafka_bootstrap, 5)
    recs: list[dict[str, Any]] = []
    for i in range(40):
        recs.append({"partition": 0, "value": f'{{"i": {i}, "s": "é{i}", "a": [{i}, {{"x": null}}]}}'.encode(),
                     "timestamp": TS + i, **({"headers": _headers((0, 1, 2, 5, 11, 120)[i % 6])} if i % 2 else {})})
    recs += [{"partition": 1, "value": f'{{"i": {i}, "_stream_meta": {{"mine": {"[1, 2]" if i else "1"}}}}}'.encode(),
              "timestamp": TS} for i in range(3)]
    recs += [{"partition": 2, "value": b'{"i": 0, "big": 18446744073709551615}', "timestamp": TS},
             {"partition": 2, "value": b'{"i": 1}', "timestamp": TS}]
    recs += [{"partition": 3, "value": b'{"i": 0}', "headers": [("h", b"v")], "timestamp": TS},
             {"partition": 3, "value": b'{"i": 1}', "key": b"k", "headers": [("h", None)], "timestamp": TS},
             {"partition": 3, "value": None, "key": b"k2", "timestamp": TS},
             {"partition": 3, "value": b"{bad", "timestamp": TS},
             {"partition": 3, "value": b'{"i": 4}', "timestamp": TS}]
    recs += [{"partition": 4, "value": b'{"d": {"$date": "2024-01-01T00:00:00Z"}, "n": {"$numberLong": "7"}}',
              "timestamp": TS, "headers": [("é", b"\x00")]}]
    produce(kafka_bootstrap, topic, recs)
    counts = {0: 40, 1: 3, 2: 2, 3: 5, 4: 1}

    fast = _read(kafka_bootstrap, topic, True, counts)
    ways: dict[int, set[str | None]] = {}
    totals = []
    for p, items in enumerate(fast):
        total = 0
        for _, batch in items:
            got, way = _sized(batch)
            batch.complete()
            assert got == bson_size([d for d, _ in batch]), (p, way)
            ways.setdefault(p, set()).add(way)
            total += got
        totals.append(total)
    assert ways[0] == ways[4] == {"arithmetic"}
    assert ways[1] == ways[2] == {"completed"}
    assert "arithmetic" in ways[3]  # a batch starting at the keyed message has no deferred run
    reference = _read(kafka_bootstrap, topic, False, counts)
    assert totals == [sum(bson_size([d for d, _ in b]) for _, b in items) for items in reference]
    assert totals[2] == len(bson.encode({"i": 1, "_stream_meta": fast[2][-1][1][-1][0]["_stream_meta"]}))


@pytest.mark.kafka
def test_input_size_arithmetic_at_the_edges(kafka_bootstrap: str) -> None:
    """What a broker here will not produce, through the source's own record and envelope
    code on ``confluent_kafka.Message`` objects: a non-ASCII topic name, offsets on both
    sides of the int32 limit, a header whose key is not a string (completed instead)."""
    topic = new_topic(kafka_bootstrap, 1)
    p = compile_pipeline([{"$source": {"connectionName": CONN, "topic": topic}}, _window(GROUP)],
                         registry(kafka_bootstrap), ProcessorOptions(name="edges"))
    part = make_source(p).build_part("in", f"{topic}-0", None)
    try:
        for name in ("тема-é-🙂", topic, ""):
            part.topic = name
            for first in (0, 2**31 - 2, 2**40):
                msgs = [Message(topic=name, partition=0, offset=first + i, value=b'{"v": %d}' % i,
                                headers=_headers(i * 7) or None, timestamp=(1, TS + i)) for i in range(4)]
                batch = part._records(msgs, _batch_decoder(msgs))
                assert type(batch) is DeferredMetaBatch and batch.attach is not None
                got, way = _sized(batch)
                assert way == "arithmetic"
                batch.complete()
                assert got == bson_size([d for d, _ in batch])
                assert batch[-1][0]["_stream_meta"]["source"]["topic"] == name
        odd = [Message(topic=topic, partition=0, offset=0, value=b"{}", headers=[(b"k", b"v")], timestamp=(1, TS))]
        batch = part._records(odd, _batch_decoder(odd))
        assert _sized(batch)[1] == "completed"
        assert batch.attach is None
    finally:
        part.close()
