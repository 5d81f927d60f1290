"""The Kafka source's fast JSON decoder (orjson) against the reference decoder
(``json`` / ``bson.json_util``): the same documents, with the same types, and the same
errors, on messages with and without Extended JSON, big integers, floats, unicode and
nesting. Types count: ``repr`` tells ``1`` from ``1.0`` and ``Int64(1)`` from ``1``.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import sources.kafka as kafka_mod
from bench.gen import GenSpec, iter_docs
from sources.kafka import is_plain_json, parse_plain, parse_value, parse_value_reference

HANDPICKED: list[bytes] = [
    b'{"a": 1, "s": "x", "f": 1.5, "l": [1, {"b": null}], "t": true, "n": false}',
    b'{"z": -0, "nz": -0.0, "e": 1e3, "E": 2.5E-7, "big": 1.7976931348623157e308, "tiny": 5e-324}',
    b'{"i63": 9223372036854775807, "neg63": -9223372036854775808}',
    b'{"u64": 18446744073709551615, "over": 18446744073709551616, "neg": -9223372036854775809}',
    b'{"huge": 123456789012345678901234567890, "f": 0.1234567890123456789012}',
    b'{"inf": 1e400}',
    b'{"nan": NaN}',
    b'{"inf": Infinity, "ninf": -Infinity}',
    '{"name": "caf\u00e9", "emoji": "\U0001f600", "cjk": "\u6f22\u5b57"}'.encode(),
    b'{"esc": "caf\\u00e9", "sur": "\\ud83d\\ude00"}',
    b'{"lone": "\\ud83d"}',
    b'{"k\\u0024": 1, "\\u0024date": "2024-01-01T00:00:00Z"}',
    b'{"d": {"$date": "2024-01-01T00:00:00Z"}, "n": {"$numberLong": "5"}, "i": {"$numberInt": "3"}}',
    b'{"d": {"$date": {"$numberLong": "1700000000000"}}, "o": {"$oid": "671a8ce1497407eff0e17cba"}}',
    b'{"dec": {"$numberDecimal": "1.10"}, "dbl": {"$numberDouble": "NaN"}}',
    b'{"price": "$5", "path": "$a.b"}',
    b'{"dup": 1, "dup": 2}',
    b'{"deep": {"a": {"b": {"c": [[[{"d": [1, 2.0, "3"]}]]]}}}}',
    b'  {"ws": 1}  \n',
    b'{}',
    b'{"ctl": "a\tb"}',
    b'{"quote": "a\\"b", "bs": "a\\\\b", "slash": "a\\/b", "nl": "a\\nb"}',
    b"\xef\xbb\xbf{\"bom\": 1}",
    b"\xff\xfe{",
    b'{"bad": "\xed\xa0\x80"}',
    b"not json",
    b"[1, 2]",
    b'"a string"',
    b"42",
    b"null",
    b'{"a": ',
    b'{"a": 1} trailing',
    b'{"a": 01}',
    b'{"d": {"$date": "garbage"}}',
    b"",
    b"[" * 2000 + b"]" * 2000,
]


def outcome(fn: Any, raw: bytes) -> tuple[str, str]:
    try:
        return "doc", repr(fn(raw))
    except ValueError as exc:
        return "error", str(exc)


def random_value(rng: random.Random, depth: int) -> Any:
    kind = rng.randrange(9 if depth < 4 else 6)
    if kind == 0:
        return rng.randrange(-(2**70), 2**70) >> rng.randrange(0, 70)
    if kind == 1:
        return rng.uniform(-1e6, 1e6) * 10 ** rng.randrange(-300, 300)
    if kind == 2:
        return "".join(rng.choice("ab$\\\"é漢\U0001f600 \n0") for _ in range(rng.randrange(6)))
    if kind == 3:
        return rng.choice([True, False, None])
    if kind == 4:
        return rng.randrange(-1000, 1000)
    if kind == 5:
        return rng.random()
    if kind == 6:
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(["a", "b", "$x", "é", "k1"]) + str(i): random_value(rng, depth + 1) for i in range(rng.randrange(4))}


def test_handpicked_messages_decode_like_the_reference() -> None:
    for raw in HANDPICKED:
        assert outcome(parse_value, raw) == outcome(parse_value_reference, raw), raw
        assert outcome(parse_plain, raw) == outcome(parse_value_reference, raw) or not is_plain_json(raw), raw


def test_random_documents_decode_like_the_reference() -> None:
    rng = random.Random(7)
    fast = 0
    for _ in range(3000):
        doc = {f"f{i}": random_value(rng, 0) for i in range(rng.randrange(1, 6))}
        for raw in (json.dumps(doc).encode(), json.dumps(doc, ensure_ascii=False).encode()):
            assert outcome(parse_value, raw) == outcome(parse_value_reference, raw), raw
            fast += is_plain_json(raw)
    assert fast > 1000  # the fast decoder was exercised, not only the fallback


def test_seed_shaped_messages_take_the_fast_decoder(monkeypatch: pytest.MonkeyPatch) -> None:
    raws = [json.dumps(d).encode() for d in iter_docs(GenSpec(n=2000, seed=3))]
    expected = [parse_value_reference(r) for r in raws]
    assert all(is_plain_json(r) for r in raws)
    assert is_plain_json(b"\n".join(raws))

    def refuse(raw: bytes) -> dict[str, Any]:
        raise AssertionError(f"reference decoder used for {raw!r}")

    monkeypatch.setattr(kafka_mod, "parse_value_reference", refuse)
    got = [parse_value(r) for r in raws]
    assert repr(got) == repr(expected)


def test_markers_send_a_message_to_the_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    used: list[bytes] = []
    real = parse_value_reference

    def spy(raw: bytes) -> dict[str, Any]:
        used.append(raw)
        return real(raw)

    monkeypatch.setattr(kafka_mod, "parse_value_reference", spy)
    marked = [b'{"d": {"$date": "2024-01-01T00:00:00Z"}}', b'{"e": "caf\\u00e9"}', b'{"n": 1234567890123456789}']
    for raw in marked:
        parse_value(raw)
    assert used == marked
    # Joined into one batch, a marker in any message makes the batch not plain.
    assert not is_plain_json(b"\n".join([b'{"a": 1}', marked[0]]))
    assert not is_plain_json(b"\n".join([b'{"a": 1}', marked[2]]))


def test_switch_off_uses_only_the_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kafka_mod, "FAST_JSON", False)
    called: list[bytes] = []
    monkeypatch.setattr(kafka_mod, "orjson", type("NoOrjson", (), {"loads": staticmethod(lambda raw: called.append(raw))}))
    raw = b'{"a": 1, "b": [1.5, "x"]}'
    assert parse_value(raw) == {"a": 1, "b": [1.5, "x"]}
    assert called == []


def test_fast_paths_false_selects_the_reference_decoder() -> None:
    """The processor option ``fastPaths: false`` reaches the Kafka source's settings and
    turns the orjson decoder off for that pipeline."""
    from translator import ir
    from translator.connections import Connection
    from translator.loader import options_from_mapping
    from translator.parse import parse_pipeline

    class Msg:
        def value(self) -> bytes:
            return b'{"a": 1}'

    conn = Connection(name="k", type="kafka", bootstrap_servers="127.0.0.1:9")
    pipeline = parse_pipeline([{"$source": {"connectionName": "k", "topic": "t"}}])
    assert isinstance(pipeline.source, ir.SourceStage)
    for fast, want in ((True, parse_plain), (False, parse_value_reference)):
        opts = options_from_mapping({"fastPaths": fast}, name="p")
        settings = kafka_mod.KafkaSourceSettings.from_stage(pipeline.source, conn, opts)
        assert settings.fast_json is fast
        assert kafka_mod._batch_decoder([Msg()], settings.fast_json) is want  # type: ignore[list-item]
