"""``$emit`` to Kafka against the real broker (docs/semantics.md#sinks; ASP ``sp-agg-emit``):
output formats, dynamic topics, keys, headers, tombstones, acks/compression, and
delivery failures that fail the processor instead of losing data."""

from __future__ import annotations

import json
import re
import socket
import struct
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from bson import Binary, Decimal128, ObjectId, Regex, Timestamp
from bson.int64 import Int64
from bytewax.testing import TestingSink, run_main

# The project root must be on sys.path before tests/ (tests/translator, tests/sources
# would otherwise shadow the editable-installed packages as namespace packages).
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.append(str(Path(__file__).resolve().parents[1]))

from kafka_flows import CONN, consume_all, new_topic, registry

from sinks.kafka import EmitSettings, KafkaEmitSink
from translator.compile import build_flow, compile_pipeline
from translator.errors import TranslateError
from translator.options import ProcessorOptions

pytestmark = pytest.mark.kafka

D = datetime(2024, 10, 24, 18, 7, 29, 636000, tzinfo=UTC)


class ListDlq:
    """The DLQ writer interface the sink expects: ``write(docs)``."""

    def __init__(self) -> None:
        self.docs: list[dict[str, Any]] = []

    def write(self, docs: list[dict[str, Any]]) -> None:
        self.docs.extend(docs)


def emit_settings(bootstrap: str, topic: Any, **config: Any) -> EmitSettings:
    """The typed settings ``compile_pipeline`` makes of an ``$emit`` stage (its errors raised there)."""
    spec: dict[str, Any] = {"connectionName": CONN, "topic": topic}
    if config:
        spec["config"] = config
    p = compile_pipeline([{"$source": {"documents": []}}, {"$emit": spec}], registry(bootstrap))
    assert isinstance(p.sink_settings, EmitSettings)
    return p.sink_settings


def write(bootstrap: str, docs: list[dict[str, Any]], topic: Any, dlq: ListDlq | None = None,
          sink_kw: dict[str, Any] | None = None, **config: Any) -> None:
    sink = KafkaEmitSink(emit_settings(bootstrap, topic, **config), "emittest", (lambda: dlq) if dlq else None,
                         **(sink_kw or {}))
    part = sink.build("out", 0, 1)
    part.write_batch([docs])
    part.close()


def values(bootstrap: str, topic: str, n: int) -> list[Any]:
    msgs = consume_all(bootstrap, topic, n)
    assert len(msgs) == n
    return [None if m.value() is None else json.loads(m.value()) for m in msgs]  # type: ignore[arg-type]


def test_relaxed_json_is_the_default(kafka_bootstrap: str) -> None:
    topic = new_topic(kafka_bootstrap, 1)
    doc = {"_id": ObjectId("671a8ce1497407eff0e17cba"), "d": D, "n": Int64(5), "i": 3, "f": 1.5,
           "dec": Decimal128("9.9"), "s": "x", "a": [1, None], "_stream_meta": {"source": {"type": "kafka"}}}
    write(kafka_bootstrap, [doc], topic)
    [msg] = consume_all(kafka_bootstrap, topic, 1)
    assert json.loads(msg.value()) == {  # type: ignore[arg-type]
        "_id": {"$oid": "671a8ce1497407eff0e17cba"}, "d": {"$date": "2024-10-24T18:07:29.636Z"}, "n": 5, "i": 3,
        "f": 1.5, "dec": {"$numberDecimal": "9.9"}, "s": "x", "a": [1, None], "_stream_meta": {"source": {"type": "kafka"}},
    }
    assert msg.key() is None and msg.headers() is None


def test_canonical_json(kafka_bootstrap: str) -> None:
    topic = new_topic(kafka_bootstrap, 1)
    write(kafka_bootstrap, [{"d": D, "n": Int64(5), "i": 3, "f": 1.5}], topic, outputFormat="canonicalJson")
    assert values(kafka_bootstrap, topic, 1) == [{
        "d": {"$date": {"$numberLong": "1729793249636"}}, "n": {"$numberLong": "5"}, "i": {"$numberInt": "3"},
        "f": {"$numberDouble": "1.5"},
    }]


def test_basic_json_follows_the_asp_mapping(kafka_bootstrap: str) -> None:
    topic = new_topic(kafka_bootstrap, 1)
    u = uuid.UUID("420b7ade-811a-4698-aa64-c8347c719cf1")
    doc = {
        "binary": Binary(base64_decode("gf1UcxdHTJ2HQ/EGQrO7mQ=="), 0),
        "date": D,
        "decimal": Decimal128("9.9"),
        "timestamp": Timestamp(1729793249, 1),
        "_id": ObjectId("6717fcbba18c8a8f74b6d977"),
        "negInf": float("-inf"),
        "posInf": float("inf"),
        "regex": Regex("ab+c", "i"),
        "native_regex": re.compile("x.y", re.IGNORECASE | re.MULTILINE),
        "uuid": Binary.from_uuid(u),
        "long": Int64(7),
        "nested": [{"d": D}],
    }
    write(kafka_bootstrap, [doc], topic, outputFormat="basicJson")
    assert values(kafka_bootstrap, topic, 1) == [{
        "binary": "gf1UcxdHTJ2HQ/EGQrO7mQ==",
        "date": 1729793249636,
        "decimal": "9.9",
        "timestamp": 1729793249000,
        "_id": "6717fcbba18c8a8f74b6d977",
        "negInf": "-Infinity",
        "posInf": "Infinity",
        "regex": {"pattern": "ab+c", "options": "i"},
        "native_regex": {"pattern": "x.y", "options": "imu"},  # Python str patterns carry re.UNICODE
        "uuid": "420b7ade-811a-4698-aa64-c8347c719cf1",
        "long": 7,
        "nested": [{"d": 1729793249636}],
    }]


def base64_decode(s: str) -> bytes:
    import base64

    return base64.b64decode(s)


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [("relaxedJson", "2024-10-24T18:07:29.636Z"), ("canonicalJson", "2024-10-24T18:07:29.636Z"), ("basicJson", "2024-10-24T18:07:29.636Z")],
)
def test_date_format_iso8601(kafka_bootstrap: str, fmt: str, expected: str) -> None:
    topic = new_topic(kafka_bootstrap, 1)
    write(kafka_bootstrap, [{"flightTime": D}], topic, outputFormat=fmt, dateFormat="ISO8601")
    assert values(kafka_bootstrap, topic, 1) == [{"flightTime": expected}]


def test_dynamic_topic_and_non_string_topic_to_dlq(kafka_bootstrap: str) -> None:
    vip = new_topic(kafka_bootstrap, 1, prefix="vip")
    emp = new_topic(kafka_bootstrap, 1, prefix="emp")
    dlq = ListDlq()
    docs: list[dict[str, Any]] = [{"c": "A", "to": vip}, {"c": "B", "to": emp}, {"c": "C", "to": vip}, {"c": "D", "to": 42}, {"c": "E"}]
    write(kafka_bootstrap, docs, "$to", dlq)
    assert [v["c"] for v in values(kafka_bootstrap, vip, 2)] == ["A", "C"]
    assert [v["c"] for v in values(kafka_bootstrap, emp, 1)] == ["B"]
    assert [(d["doc"]["c"], d["errInfo"]["reason"], d["processorName"]) for d in dlq.docs] == [
        ("D", "Failed to process input document in $emit stage: pipeline[1].$emit.topic must evaluate to a non-empty string, got int", "emittest"),
        ("E", "Failed to process input document in $emit stage: pipeline[1].$emit.topic must evaluate to a non-empty string, got missing", "emittest"),
    ]


@pytest.mark.parametrize(
    ("fmt", "key", "raw"),
    [
        ("string", "dev-1", b"dev-1"),
        ("int", 7, struct.pack(">i", 7)),
        ("long", Int64(-2), struct.pack(">q", -2)),
        ("long", 2**40, struct.pack(">q", 2**40)),
        ("json", {"id": 7}, b'{"id": 7}'),
        ("binData", b"\x00\xff", b"\x00\xff"),
    ],
)
def test_key_formats(kafka_bootstrap: str, fmt: str, key: Any, raw: bytes) -> None:
    topic = new_topic(kafka_bootstrap, 1)
    write(kafka_bootstrap, [{"k": key, "v": 1}], topic, key="$k", keyFormat=fmt)
    [msg] = consume_all(kafka_bootstrap, topic, 1)
    assert msg.key() == raw


def test_key_that_does_not_serialize_goes_to_dlq(kafka_bootstrap: str) -> None:
    topic = new_topic(kafka_bootstrap, 1)
    dlq = ListDlq()
    docs: list[dict[str, Any]] = [{"k": "x", "n": 0}, {"k": 2**31, "n": 1}, {"k": 5, "n": 2}, {"n": 3}]
    write(kafka_bootstrap, docs, topic, dlq, key="$k", keyFormat="int")
    [msg] = consume_all(kafka_bootstrap, topic, 1)
    assert msg.key() == struct.pack(">i", 5)
    prefix = "Failed to process input document in $emit stage: "
    assert [(d["doc"]["n"], d["errInfo"]["reason"]) for d in dlq.docs] == [
        (0, prefix + "Failed to serialize config.key as int: expected an integer, got string"),
        (1, prefix + "Failed to serialize config.key as int: 2147483648 does not fit in 32 bits"),
        (3, prefix + "config.key evaluated to a missing value"),
    ]


def test_headers_from_object_and_array(kafka_bootstrap: str) -> None:
    topic = new_topic(kafka_bootstrap, 1)
    dlq = ListDlq()
    docs = [
        {"n": 0, "h": {"s": "v", "i": 1, "l": Int64(2), "d": 0.5, "b": b"\x01", "o": {"x": 1}, "z": None}},
        {"n": 1, "h": [{"k": "a", "v": "1"}, {"k": "a", "v": "2"}]},
        {"n": 2, "h": {"bad": True}},
        {"n": 3, "h": "nope"},
    ]
    write(kafka_bootstrap, docs, topic, dlq, headers="$h")
    m0, m1 = consume_all(kafka_bootstrap, topic, 2)
    assert m0.headers() == [("s", b"v"), ("i", struct.pack(">i", 1)), ("l", struct.pack(">q", 2)),
                            ("d", struct.pack(">d", 0.5)), ("b", b"\x01"), ("o", b'{"x": 1}'), ("z", None)]
    assert m1.headers() == [("a", b"1"), ("a", b"2")]
    prefix = "Failed to process input document in $emit stage: "
    assert [(d["doc"]["n"], d["errInfo"]["reason"]) for d in dlq.docs] == [
        (2, prefix + "header 'bad' has a value of type bool; supported: binData, string, object, int, long, double, null"),
        (3, prefix + "headers must evaluate to an object or an array, got string"),
    ]


def test_tombstone_when(kafka_bootstrap: str) -> None:
    topic = new_topic(kafka_bootstrap, 1)
    dlq = ListDlq()
    docs: list[dict[str, Any]] = [{"_id": "a", "gone": False}, {"_id": "b", "gone": True}, {"_id": "c", "gone": "yes"}]
    write(kafka_bootstrap, docs, topic, dlq, key="$_id", keyFormat="string", tombstoneWhen="$gone")
    m0, m1 = consume_all(kafka_bootstrap, topic, 2)
    assert (m0.key(), json.loads(m0.value())) == (b"a", {"_id": "a", "gone": False})  # type: ignore[arg-type]
    assert (m1.key(), m1.value()) == (b"b", None)
    assert [(d["doc"]["_id"], d["errInfo"]["reason"]) for d in dlq.docs] == [
        ("c", "Failed to process input document in $emit stage: config.tombstoneWhen must evaluate to a boolean, got string")
    ]


@pytest.mark.parametrize("compression", ["none", "gzip", "snappy", "lz4", "zstd"])
@pytest.mark.parametrize("acks", [1, "all"])
def test_acks_and_compression(kafka_bootstrap: str, compression: str, acks: Any) -> None:
    topic = new_topic(kafka_bootstrap, 3)
    docs = [{"i": i, "pad": "x" * 100} for i in range(300)]
    write(kafka_bootstrap, docs, topic, key="$i", keyFormat="int", acks=acks, compression_type=compression)
    got = values(kafka_bootstrap, topic, 300)
    assert sorted(v["i"] for v in got) == list(range(300))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LateProxy:
    """A TCP forwarder to the real broker that only starts listening after ``delay_s``:
    until then the bootstrap address refuses connections, as a broker that is down."""

    def __init__(self, target: str, delay_s: float) -> None:
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self.port = _free_port()
        self.timer = threading.Timer(delay_s, self._serve)
        self.timer.daemon = True
        self.timer.start()

    def _serve(self) -> None:
        srv = socket.create_server(("127.0.0.1", self.port))

        def pump(a: socket.socket, b: socket.socket) -> None:
            try:
                while data := a.recv(65536):
                    b.sendall(data)
            except OSError:
                pass
            finally:
                b.close()

        def accept() -> None:
            while True:
                c, _ = srv.accept()
                u = socket.create_connection(self.target)
                threading.Thread(target=pump, args=(c, u), daemon=True).start()
                threading.Thread(target=pump, args=(u, c), daemon=True).start()

        threading.Thread(target=accept, daemon=True).start()


def test_failed_delivery_is_retried_then_fails_the_processor(kafka_bootstrap: str) -> None:
    """The broker is unreachable: every delivery times out. The sink retries a bounded
    number of times, then raises (the processor fails); nothing is dropped silently."""
    down = f"127.0.0.1:{_free_port()}"
    kw = {"delivery_timeout_ms": 800, "max_retries": 2, "retry_backoff_s": 0.1}
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match=r"^\$emit: 2 message\(s\) could not be delivered to Kafka after 2 retries: .*(_MSG_TIMED_OUT|_TRANSPORT)"):
        write(down, [{"i": 1}, {"i": 2}], "sometopic", sink_kw=kw)
    assert time.monotonic() - t0 >= 3 * 0.8  # three attempts, each waiting for its delivery timeout


def test_failed_delivery_is_retried_until_the_broker_is_back(kafka_bootstrap: str) -> None:
    topic = new_topic(kafka_bootstrap, 1)
    proxy = LateProxy(kafka_bootstrap, delay_s=1.0)
    kw = {"delivery_timeout_ms": 1500, "max_retries": 5, "retry_backoff_s": 0.2,
          "producer_config": {"reconnect.backoff.max.ms": 200}}
    t0 = time.monotonic()
    write(f"127.0.0.1:{proxy.port}", [{"i": i} for i in range(5)], topic, sink_kw=kw)
    assert time.monotonic() - t0 >= 1.5  # the first attempt failed
    assert sorted(v["i"] for v in values(kafka_bootstrap, topic, 5)) == [0, 1, 2, 3, 4]
    assert len(consume_all(kafka_bootstrap, topic, 6, timeout_s=2)) == 5  # each exactly once


def test_message_too_large_goes_to_dlq(kafka_bootstrap: str) -> None:
    topic = new_topic(kafka_bootstrap, 1)
    dlq = ListDlq()
    docs: list[dict[str, Any]] = [{"n": 0, "big": "x" * 5000}, {"n": 1}]
    write(kafka_bootstrap, docs, topic, dlq, sink_kw={"producer_config": {"message.max.bytes": 2000}})
    assert values(kafka_bootstrap, topic, 1) == [{"n": 1}]
    [d] = dlq.docs
    assert d["doc"]["n"] == 0
    assert d["errInfo"]["reason"].startswith("Kafka rejected the message in $emit stage: ")
    assert "MSG_SIZE_TOO_LARGE" in d["errInfo"]["reason"]


def test_emit_through_the_dataflow(kafka_bootstrap: str) -> None:
    topic = new_topic(kafka_bootstrap, 3)
    docs = [{"t": datetime(2024, 1, 1, 0, 0, s, tzinfo=UTC), "g": s % 2, "v": s} for s in range(10)]
    pipeline = [
        {"$source": {"documents": docs, "timeField": {"$toDate": "$t"}}},
        {"$tumblingWindow": {"interval": {"size": 5, "unit": "second"},
                             "pipeline": [{"$group": {"_id": "$g", "total": {"$sum": "$v"}}}]}},
        {"$project": {"_id": 0, "g": "$_id", "total": 1, "start": {"$meta": "stream.window.start"}}},
        {"$emit": {"connectionName": CONN, "topic": topic,
                   "config": {"key": {"g": "$g", "start": "$start"}, "keyFormat": "json", "outputFormat": "basicJson"}}},
    ]
    p = compile_pipeline(pipeline, registry(kafka_bootstrap), ProcessorOptions(name="emitflow"))
    dlq: list[list[dict[str, Any]]] = []
    run_main(build_flow(p, dlq_sink=TestingSink(dlq)))  # the $emit sink build_flow makes
    got = values(kafka_bootstrap, topic, 4)
    w0, w1 = 1704067200000, 1704067205000
    assert sorted((v["start"], v["g"], v["total"]) for v in got) == [(w0, 0, 6), (w0, 1, 4), (w1, 0, 14), (w1, 1, 21)]
    assert dlq == []


def test_emit_config_errors(kafka_bootstrap: str) -> None:
    cases: list[tuple[dict[str, Any], str | None]] = [
        ({"colour": 1}, "pipeline[1].$emit.config.colour: unknown $emit option 'colour'; allowed: acks, compression_type, dateFormat, headers, key, keyFormat, outputFormat, tombstoneWhen"),
        ({"outputFormat": "xml"}, "pipeline[1].$emit.config.outputFormat: must be relaxedJson, canonicalJson or basicJson; got 'xml'"),
        ({"dateFormat": "unix"}, "pipeline[1].$emit.config.dateFormat: must be 'default' or 'ISO8601'; got 'unix'"),
        ({"acks": 2}, "pipeline[1].$emit.config.acks: must be one of -1, 0, 1, 'all'; got 2"),
        ({"compression_type": "brotli"}, "pipeline[1].$emit.config.compression_type: must be one of none, gzip, snappy, lz4, zstd; got 'brotli'"),
        ({"keyFormat": "avro"}, "pipeline[1].$emit.config.keyFormat: must be one of binData, string, json, int, long; got 'avro'"),
        ({"key": {"$nope": 1}}, None),
    ]
    for config, message in cases:
        with pytest.raises(TranslateError) as exc:
            emit_settings(kafka_bootstrap, "t", **config)
        if message is not None:
            assert str(exc.value) == message
        else:
            assert str(exc.value).startswith("pipeline[1].$emit.config.key.$nope: unknown expression operator '$nope'")
