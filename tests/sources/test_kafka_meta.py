"""The Kafka source's deferred ``_stream_meta.source`` envelope (translator/source_meta.py):
which pipelines defer it, and that documents, DLQ entries and window results are those
of the reference path (``fastPaths: false``, the envelope built per message) on the real
broker."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from bytewax.testing import TestingSink, run_main

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.append(str(Path(__file__).resolve().parents[1]))

from kafka_flows import CONN, Until, new_topic, produce, registry

from sources.base import DeferredMetaBatch
from sources.kafka import SOURCE_DLQ_KEY
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
