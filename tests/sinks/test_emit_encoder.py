"""The ``$emit`` sink's fast relaxed Extended JSON writer (sinks/kafka.py ``dump_relaxed``)
against the reference (``bson.json_util.dumps``): byte-identical output, or the same
error, over a corpus of every BSON type and random nested documents built from it; the
values the fast writer leaves to the reference are counted; and through the real broker
the message bytes are the same with ``fastPaths`` on and off."""

from __future__ import annotations

import random
import re
import sys
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from bson import SON, Binary, Code, DBRef, Decimal128, MaxKey, MinKey, ObjectId, Regex, Timestamp
from bson.datetime_ms import DatetimeMS
from bson.int64 import Int64

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.append(str(Path(__file__).resolve().parents[1]))

from kafka_flows import CONN, consume_all, new_topic, registry

import sinks.kafka as emit
from sinks.kafka import EmitSettings, KafkaEmitSink, dump_relaxed, dump_relaxed_reference
from translator import ir
from translator.compile import compile_pipeline
from translator.options import ProcessorOptions

D = datetime(2024, 10, 24, 18, 7, 29, 636000, tzinfo=UTC)

# Values the fast writer writes itself (the C encoder, or json_util's hook per value).
FAST_VALUES: list[Any] = [
    "", "plain", "caf\u00e9 \u6f22 \U0001f600", 'quote " backslash \\ slash /', "ctl \x00\x01\n\t\x7f", "$notakey",
    0, 1, -1, 2**31 - 1, 2**31, -(2**31) - 1, 2**63 - 1, -(2**63), 2**64, -(2**70),
    Int64(0), Int64(5), Int64(2**63 - 1), Int64(-(2**63)),
    0.0, -0.0, 1.5, 0.1, 1e308, 5e-324, -2.5e-10, 1e16, 123456789.125,
    True, False, None,
    D, datetime(1970, 1, 1, tzinfo=UTC), datetime(1969, 12, 31, 23, 59, 59, 999000, tzinfo=UTC),
    datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    datetime(2024, 1, 1, 0, 0, 0, 1, tzinfo=UTC), datetime(2024, 1, 1, 12, tzinfo=timezone(timedelta(hours=2))),
    datetime(2024, 1, 1, 12), DatetimeMS(0), DatetimeMS(1_700_000_000_123), DatetimeMS(-5), DatetimeMS(2**62),
    ObjectId("671a8ce1497407eff0e17cba"), Decimal128("9.9"), Decimal128("-0"), Decimal128("NaN"),
    Decimal128("Infinity"), Decimal128("1E+6144"),
    b"", b"\x00\xffbytes", Binary(b"\x01\x02", 0), Binary(b"\x01" * 16, 4), Binary(b"x", 0x80),
    Regex("^a.*b$", "imsx"), Regex("p", 0), re.compile("x+", re.IGNORECASE | re.MULTILINE),
    Timestamp(1_700_000_000, 7), MinKey(), MaxKey(),
    [], {}, [1, "a", None, [2.5, {}]], {"nested": {"deeper": [D, Int64(1)]}},
]
# Values only the reference writes (the fast writer hands their documents over).
REFERENCE_VALUES: list[Any] = [
    Code("function () {}"), Code("x", {"a": D}), float("nan"), float("inf"), float("-inf"),
    (1, 2), SON([("b", 1), ("a", D)]), DBRef("coll", ObjectId("671a8ce1497407eff0e17cba")),
    [Code("in a list")], {"k": float("nan")},
]


def same(doc: Any) -> str:
    """Both writers' output (equal), or both raise the same error."""
    try:
        want = dump_relaxed_reference(doc)
    except Exception as exc:
        with pytest.raises(type(exc)) as got:
            dump_relaxed(doc)
        assert str(got.value) == str(exc)
        return ""
    assert dump_relaxed(doc) == want
    return want


def test_every_value_alone_and_together() -> None:
    before = dict(emit.ENCODE_COUNTS)
    for i, v in enumerate(FAST_VALUES):
        same({"v": v, "i": i})
    together = {f"f{i}": v for i, v in enumerate(FAST_VALUES)}
    same(together)
    same({"list": FAST_VALUES})
    assert emit.ENCODE_COUNTS["fast"] - before["fast"] == len(FAST_VALUES) + 2
    assert emit.ENCODE_COUNTS["reference"] == before["reference"]
    for v in REFERENCE_VALUES:
        same({"v": v})
        same({"ok": 1, "nested": {"deep": [1, {"v": v}]}})
    assert emit.ENCODE_COUNTS["fast"] - before["fast"] == len(FAST_VALUES) + 2
    # Each reference value sends its documents to the reference (twice: alone and nested).
    assert emit.ENCODE_COUNTS["reference"] - before["reference"] == 2 * len(REFERENCE_VALUES)


def test_exact_text_of_a_window_result() -> None:
    """The seed's window result as ``$emit`` writes it, byte for byte."""
    doc = {"_id": 3, "count": 120, "avg_temp": 21.5, "n": Int64(7),
           "_stream_meta": {"window": {"start": D, "end": D + timedelta(seconds=3)}}}
    assert same(doc) == (
        '{"_id": 3, "count": 120, "avg_temp": 21.5, "n": 7, "_stream_meta": {"window": '
        '{"start": {"$date": "2024-10-24T18:07:29.636Z"}, "end": {"$date": "2024-10-24T18:07:32.636Z"}}}}'
    )


def test_errors_are_the_references() -> None:
    class Opaque:
        pass

    # A native UUID needs a uuidRepresentation (json_util raises for both writers).
    for doc in ({"x": Opaque()}, {"x": {1, 2}}, {("t",): 1}, {"x": [Opaque()]},
                {"u": uuid.UUID("12345678-1234-5678-1234-567812345678")}):
        same(doc)
    cyclic: dict[str, Any] = {"a": 1}
    cyclic["self"] = cyclic
    with pytest.raises(RecursionError):
        dump_relaxed_reference(cyclic)
    with pytest.raises(RecursionError):
        dump_relaxed(cyclic)


def test_random_documents() -> None:
    rnd = random.Random(20261201)
    pool = FAST_VALUES + REFERENCE_VALUES

    def value(depth: int) -> Any:
        r = rnd.random()
        if depth < 4 and r < 0.15:
            return {f"k{j}": value(depth + 1) for j in range(rnd.randint(0, 5))}
        if depth < 4 and r < 0.25:
            return [value(depth + 1) for _ in range(rnd.randint(0, 5))]
        return rnd.choice(FAST_VALUES if r < 0.97 else pool)

    for _ in range(3000):
        same({f"f{j}": value(0) for j in range(rnd.randint(1, 8))})


def test_fast_paths_option_chooses_the_writer() -> None:
    for fast, relaxed in ((True, dump_relaxed), (False, dump_relaxed_reference)):
        opts = ProcessorOptions(name="enc", fast_paths=fast)
        for config, want in (({}, relaxed), ({"outputFormat": "relaxedJson"}, relaxed),
                             ({"outputFormat": "canonicalJson"}, emit.OUTPUT_FORMATS[("canonicalJson", "default")]),
                             ({"dateFormat": "ISO8601"}, emit.OUTPUT_FORMATS[("relaxedJson", "ISO8601")])):
            p = compile_pipeline([{"$source": {"documents": []}},
                                  {"$emit": {"connectionName": CONN, "topic": "t", "config": config}}],
                                 registry("127.0.0.1:1"), opts)
            assert isinstance(p.sink_settings, EmitSettings)
            assert p.sink_settings.dump is want


@pytest.mark.kafka
def test_message_bytes_are_the_same_both_ways(kafka_bootstrap: str) -> None:
    docs = [{"v": v, "i": i} for i, v in enumerate(FAST_VALUES + REFERENCE_VALUES)]
    docs = [d for d in docs if same(d)]  # the ones the reference can write at all
    got = []
    for fast in (True, False):
        topic = new_topic(kafka_bootstrap, 1)
        p = compile_pipeline([{"$source": {"documents": []}}, {"$emit": {"connectionName": CONN, "topic": topic}}],
                             registry(kafka_bootstrap), ProcessorOptions(name="enc", fast_paths=fast))
        assert isinstance(p.sink, ir.EmitStage) and isinstance(p.sink_settings, EmitSettings)
        part = KafkaEmitSink(p.sink_settings, processor_name="enc").build("out", 0, 1)
        part.write_batch([docs])
        part.close()
        got.append([m.value() for m in consume_all(kafka_bootstrap, topic, len(docs))])
    assert got[0] == got[1] == [dump_relaxed_reference(d).encode() for d in docs]
