"""``$emit`` to Kafka (docs/semantics.md#sinks; ASP's ``sp-agg-emit`` page).

Every expression (``topic``, ``config.key``, ``config.headers``, ``config.tombstoneWhen``)
is compiled once when the sink is built; per document only closures run. A document
whose expression fails, or whose key/headers cannot be serialized to the requested
format, goes to the DLQ (ASP: "If the config.key of a document does not serialize
successfully ... sends it to your dead letter queue"), as does a message the broker
rejects for its size or topic name (docs/semantics.md#dlq).

Delivery: a whole Bytewax batch is produced, then flushed, and every delivery report
is checked. Messages whose delivery failed for a transient reason are produced again
up to ``max_retries`` times with backoff; after that the sink raises and the processor
fails. Nothing is dropped silently. Because Bytewax replays from the last checkpoint
after a crash, consumers see at-least-once delivery (docs/semantics.md#checkpoints).
"""

from __future__ import annotations

import base64
import json
import logging
import math
import re
import struct
import sys
import time
import uuid
from _json import make_encoder as c_make_encoder
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii
from typing import Any

from bson import json_util
from bson.binary import Binary
from bson.code import Code
from bson.datetime_ms import DatetimeMS
from bson.decimal128 import Decimal128
from bson.int64 import Int64
from bson.max_key import MaxKey
from bson.min_key import MinKey
from bson.objectid import ObjectId
from bson.regex import Regex
from bson.timestamp import Timestamp
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from sources.kafka import kafka_client_config
from translator import ir, metrics
from translator.connections import Connection
from translator.contracts import dlq_document
from translator.errors import TranslateError
from translator.mql.expr import EMPTY_VARS, Ctx, Expr, ExprError, compile_expr, const_value
from translator.mql.values import MISSING, bson_type, datetime_to_ms

log = logging.getLogger(__name__)
STALL_LOG_S = 10.0  # log an undelivered batch this often while waiting for the broker
# Delivery reports are served every POLL_MASK + 1 produced messages (and all of them by
# the flush that ends each batch): a ``poll(0)`` per message costs about as much as the
# ``produce`` itself.
POLL_MASK = 1023

EMIT_CONFIG_KEYS = frozenset(
    {"key", "keyFormat", "headers", "outputFormat", "dateFormat", "acks", "compression_type", "tombstoneWhen"}
)
ACKS = {-1: "all", 0: "0", 1: "1", "all": "all", "-1": "all", "0": "0", "1": "1"}
COMPRESSION = ("none", "gzip", "snappy", "lz4", "zstd")
KEY_FORMATS = ("binData", "string", "json", "int", "long")

# Delivery errors that are about the message itself, not the cluster: retrying cannot help.
REJECTED = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.INVALID_MSG,
        KafkaError.INVALID_MSG_SIZE,
        KafkaError.TOPIC_EXCEPTION,
        KafkaError.INVALID_RECORD,
        KafkaError.INVALID_TIMESTAMP,
        KafkaError._INVALID_ARG,
    }
)


class EmitError(Exception):
    """A per-document serialization failure (goes to the DLQ)."""


# ---- value formats ---------------------------------------------------------------------------

RELAXED = json_util.JSONOptions(json_mode=json_util.JSONMode.RELAXED, tz_aware=True)
CANONICAL = json_util.JSONOptions(json_mode=json_util.JSONMode.CANONICAL, tz_aware=True)


def iso_date(d: datetime) -> str:
    """``YYYY-MM-DDTHH:mm:ss.sssZ`` (ASP ``dateFormat: "ISO8601"``)."""
    ms = datetime_to_ms(d)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


def _walk(table: dict[type, Callable[[Any], Any]]) -> Callable[[Any], Any]:
    """A recursive converter dispatching on the exact type (no if chains per value)."""

    def conv(v: Any) -> Any:
        f = table.get(type(v))
        return v if f is None else f(v)

    def conv_dict(d: dict[str, Any]) -> dict[str, Any]:
        return {k: conv(x) for k, x in d.items()}

    def conv_list(xs: list[Any]) -> list[Any]:
        return [conv(x) for x in xs]

    table.setdefault(dict, conv_dict)
    table.setdefault(list, conv_list)
    table.setdefault(tuple, conv_list)
    return conv


def _basic_float(f: float) -> Any:
    if math.isfinite(f):
        return f
    return "NaN" if math.isnan(f) else ("Infinity" if f > 0 else "-Infinity")


def _basic_binary(b: Binary) -> Any:
    if b.subtype == 4 and len(b) == 16:
        return str(uuid.UUID(bytes=bytes(b)))
    return base64.b64encode(bytes(b)).decode("ascii")


def _basic_regex(r: Any) -> Any:
    spec = json.loads(json_util.dumps(r, json_options=RELAXED))["$regularExpression"]
    return {"pattern": spec["pattern"], "options": spec["options"]}


BASIC_TYPES: dict[type, Callable[[Any], Any]] = {
    # ASP's basicJson mapping (sp-agg-emit "Basic JSON" table).
    datetime: lambda d: datetime_to_ms(d),
    ObjectId: str,
    Decimal128: str,
    Int64: int,
    float: _basic_float,
    bytes: lambda b: base64.b64encode(b).decode("ascii"),
    Binary: _basic_binary,
    uuid.UUID: str,
    Timestamp: lambda t: t.time * 1000,
    Regex: _basic_regex,
    re.Pattern: _basic_regex,
    Code: str,
    MinKey: lambda _: {"$minKey": 1},
    MaxKey: lambda _: {"$maxKey": 1},
}

_basic = _walk(dict(BASIC_TYPES))
_iso_dates = _walk({datetime: iso_date})
_basic_iso = _walk({**BASIC_TYPES, datetime: iso_date})


def _dump_basic(doc: Any) -> str:
    return json.dumps(_basic(doc), separators=(",", ":"), allow_nan=False)


def _dump_basic_iso(doc: Any) -> str:
    return json.dumps(_basic_iso(doc), separators=(",", ":"), allow_nan=False)


def dump_relaxed_reference(doc: Any) -> str:
    """Relaxed Extended JSON, the reference: ``bson.json_util`` converts the whole
    document (a Python walk over every value), then ``json`` writes it."""
    return json_util.dumps(doc, json_options=RELAXED)


# ---- the fast relaxed writer -----------------------------------------------------------------
#
# ``json_util.dumps`` is ``json.dumps`` (the C encoder) of a copy of the document that
# its Python walk has converted value by value; most of the time goes to the walk. The C
# encoder writes str, int, float, bool, None, dict and list itself and hands every other
# value to a ``default`` hook: with ``json_util.default`` as the hook the output is the
# same, byte for byte, for every document whose values all have one of the exact types
# below (checked first by a walk over the containers' value types, in C per container).
# Not covered, so written by the reference: subclasses the C encoder would write as
# their base type (bson's ``Code`` is a ``str``), containers other than dict and list
# (tuples, SON, RawBSONDocument), ``DBRef``, and non-finite floats (the C encoder then
# raises and the reference writes ``{"$numberDouble": "NaN"}``).
_AS_IS: frozenset[type] = frozenset({str, int, float, bool, type(None), Int64})  # Int64 is written as an int in relaxed mode
_BY_HOOK: frozenset[type] = frozenset({datetime, DatetimeMS, ObjectId, Decimal128, bytes, Binary, uuid.UUID, Regex, re.Pattern, Timestamp, MinKey, MaxKey})
_LEAVES = _AS_IS | _BY_HOOK

# How many documents each relaxed writer wrote in this process (the reference count is
# the fast path's fallbacks), like ``sources.kafka.DECODE_COUNTS``.
ENCODE_COUNTS: dict[str, int] = {"fast": 0, "reference": 0}

_DATE_CACHE: dict[datetime, Any] = {}  # UTC datetime -> its relaxed {"$date": ...}; window bounds repeat
_DATE_CACHE_MAX = 4096


def _relaxed_value(obj: Any) -> Any:
    """The C encoder's hook: ``json_util``'s own conversion of one value."""
    if type(obj) is datetime and obj.tzinfo is UTC:
        out = _DATE_CACHE.get(obj)
        if out is None:
            if len(_DATE_CACHE) >= _DATE_CACHE_MAX:
                _DATE_CACHE.clear()
            out = _DATE_CACHE[obj] = json_util.default(obj, RELAXED)
        return out
    return json_util.default(obj, RELAXED)


# ``json.dumps``'s own encoder and settings (ASCII output, ", " and ": " separators), as
# ``json.JSONEncoder.encode`` builds it for each call; no circular-reference markers (a
# cycle raises RecursionError, and the reference then raises its own error).
_C_RELAXED = c_make_encoder(None, _relaxed_value, encode_basestring_ascii, None, ": ", ", ", False, False, False)


def _ready(node: Any, leaves: frozenset[type] = _LEAVES) -> bool:
    for v in node.values() if type(node) is dict else node:
        t = type(v)
        if t in leaves:
            continue
        if (t is not dict and t is not list) or not _ready(v):
            return False
    return True


def json_ready(doc: Any) -> bool:
    """True when every value in ``doc`` has a type the fast writer covers (a plain
    recursive loop: measured 5x faster than one ``set`` of types per container). Too
    deep, or a cycle: False, and the reference raises its own error."""
    try:
        return _ready(doc)
    except RecursionError:
        return False


def dump_relaxed(doc: Any) -> str:
    """Relaxed Extended JSON, byte for byte :func:`dump_relaxed_reference`'s: the C
    encoder with ``json_util``'s per-value hook when :func:`json_ready`, the reference
    otherwise and whenever the C encoder raises (so errors are the reference's too)."""
    if type(doc) is dict and json_ready(doc):
        try:
            out = "".join(_C_RELAXED(doc, 0))
        except Exception:  # NaN or Infinity, a cycle...: the reference writes it or raises
            pass
        else:
            ENCODE_COUNTS["fast"] += 1
            return out
    ENCODE_COUNTS["reference"] += 1
    return dump_relaxed_reference(doc)


OUTPUT_FORMATS: dict[tuple[str, str], Callable[[Any], str]] = {
    ("relaxedJson", "default"): dump_relaxed_reference,
    ("canonicalJson", "default"): lambda d: json_util.dumps(d, json_options=CANONICAL),
    ("basicJson", "default"): _dump_basic,
    ("relaxedJson", "ISO8601"): lambda d: json_util.dumps(_iso_dates(d), json_options=RELAXED),
    ("canonicalJson", "ISO8601"): lambda d: json_util.dumps(_iso_dates(d), json_options=CANONICAL),
    ("basicJson", "ISO8601"): _dump_basic_iso,
}


# ---- keys and headers ----------------------------------------------------------------------


def _int_of(v: Any, bits: int) -> int:
    if type(v) not in (int, Int64):
        raise EmitError(f"expected an integer, got {bson_type(v)}")
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    if not lo <= v <= hi:
        raise EmitError(f"{v} does not fit in {bits} bits")
    return int(v)


def _ser_bin(v: Any) -> bytes:
    if isinstance(v, (bytes, Binary)):
        return bytes(v)
    raise EmitError(f"expected binData, got {bson_type(v)}")


def _ser_string(v: Any) -> bytes:
    if isinstance(v, str):
        return v.encode("utf-8")
    raise EmitError(f"expected a string, got {bson_type(v)}")


def _ser_json(v: Any) -> bytes:
    return json_util.dumps(v, json_options=RELAXED).encode("utf-8")


KEY_SERIALIZERS: dict[str, Callable[[Any], bytes]] = {
    # Kafka's standard serializers: int/long big-endian (IntegerSerializer/LongSerializer).
    "binData": _ser_bin,
    "string": _ser_string,
    "json": _ser_json,
    "int": lambda v: struct.pack(">i", _int_of(v, 32)),
    "long": lambda v: struct.pack(">q", _int_of(v, 64)),
}


def _header_int(v: int) -> bytes:
    return struct.pack(">i", v) if -(2**31) <= v < 2**31 else struct.pack(">q", _int_of(v, 64))


HEADER_VALUES: dict[type, Callable[[Any], bytes | None]] = {
    # ASP supports header values of type binData, string, object, int, long, double, null.
    bytes: bytes,
    Binary: bytes,
    str: lambda s: s.encode("utf-8"),
    dict: _ser_json,
    int: _header_int,
    Int64: lambda v: struct.pack(">q", int(v)),
    float: lambda f: struct.pack(">d", f),
    type(None): lambda _: None,
}


def _header_value(name: str, v: Any) -> bytes | None:
    f = HEADER_VALUES.get(type(v))
    if f is None:
        raise EmitError(f"header '{name}' has a value of type {bson_type(v)}; supported: binData, string, object, int, long, double, null")
    return f(v)


def headers_of(value: Any) -> list[tuple[str, bytes | None]]:
    """``{name: value}`` or ``[{k, v}, ...]`` -> Kafka headers (ASP ``config.headers``)."""
    if isinstance(value, dict):
        return [(k, _header_value(k, v)) for k, v in value.items()]
    if isinstance(value, list):
        out = []
        for i, h in enumerate(value):
            if not isinstance(h, dict) or set(h) != {"k", "v"} or not isinstance(h["k"], str):
                raise EmitError(f"headers[{i}] must be an object {{k: <string>, v: <value>}}")
            out.append((h["k"], _header_value(h["k"], h["v"])))
        return out
    raise EmitError(f"headers must evaluate to an object or an array, got {bson_type(value)}")


# ---- the sink ------------------------------------------------------------------------------

Record = tuple[str, bytes | None, bytes | None, list[tuple[str, bytes | None]]]  # topic, key, value, headers


@dataclass(frozen=True)
class EmitSettings:
    """``$emit`` checked and compiled once, by the translator at create time: the Kafka
    client settings of the resolved connection and every ``config`` expression."""

    client: dict[str, Any]
    topic_path: str
    topic_fn: Expr
    key_format: str
    key_ser: Callable[[Any], bytes]
    key_fn: Expr | None
    headers_fn: Expr | None
    tomb_fn: Expr | None
    dump: Callable[[Any], str]
    acks: str
    compression: str

    @staticmethod
    def from_stage(stage: ir.EmitStage, conn: Connection, *, fast: bool = True) -> EmitSettings:
        """``conn`` is the stage's connection, already resolved; ``fast`` (the
        ``fastPaths`` option) writes relaxed JSON with :func:`dump_relaxed`."""
        path = stage.path
        client = kafka_client_config(conn)
        cfg = stage.config
        for k in cfg:
            if k not in EMIT_CONFIG_KEYS:
                raise TranslateError(f"{path}.config.{k}", f"unknown $emit option '{k}'; allowed: {', '.join(sorted(EMIT_CONFIG_KEYS))}")

        topic_path = f"{path}.topic"
        topic_fn = compile_expr(stage.topic, Ctx(topic_path))
        const_topic = const_value(topic_fn)
        if const_topic is not MISSING and (not isinstance(const_topic, str) or not const_topic):
            raise TranslateError(topic_path, "must be a non-empty string or an expression")

        key_format = cfg.get("keyFormat", "binData")
        if key_format not in KEY_FORMATS:
            raise TranslateError(f"{path}.config.keyFormat", f"must be one of {', '.join(KEY_FORMATS)}; got {key_format!r}")
        key_fn = compile_expr(cfg["key"], Ctx(f"{path}.config.key")) if "key" in cfg else None
        headers_fn = compile_expr(cfg["headers"], Ctx(f"{path}.config.headers")) if "headers" in cfg else None
        tomb_fn = compile_expr(cfg["tombstoneWhen"], Ctx(f"{path}.config.tombstoneWhen")) if "tombstoneWhen" in cfg else None
        fmt = cfg.get("outputFormat", "relaxedJson")
        date_format = cfg.get("dateFormat", "default")
        if (fmt, "default") not in OUTPUT_FORMATS:
            raise TranslateError(f"{path}.config.outputFormat", f"must be relaxedJson, canonicalJson or basicJson; got {fmt!r}")
        if (fmt, date_format) not in OUTPUT_FORMATS:
            raise TranslateError(f"{path}.config.dateFormat", f"must be 'default' or 'ISO8601'; got {date_format!r}")

        acks = cfg.get("acks", "all")
        if isinstance(acks, bool) or acks not in ACKS:
            raise TranslateError(f"{path}.config.acks", f"must be one of -1, 0, 1, 'all'; got {acks!r}")
        compression = cfg.get("compression_type", "none")
        if compression not in COMPRESSION:
            raise TranslateError(f"{path}.config.compression_type", f"must be one of {', '.join(COMPRESSION)}; got {compression!r}")
        dump = OUTPUT_FORMATS[(fmt, date_format)]
        if fast and dump is dump_relaxed_reference:
            dump = dump_relaxed
        return EmitSettings(
            client, topic_path, topic_fn, key_format, KEY_SERIALIZERS[key_format], key_fn, headers_fn, tomb_fn,
            dump, ACKS[acks], compression,
        )


class KafkaEmitSink(DynamicSink[list[dict[str, Any]]]):
    """``$emit: {connectionName, topic, config}`` to Kafka. Items are batches of documents.

    It gets :class:`EmitSettings`, checked at create time by ``compile_pipeline``.
    ``dlq_factory()`` returns an object with
    ``write(docs: list[dict]) -> None``; without one, DLQ documents are printed to stderr
    with a ``[dlq]`` prefix.
    """

    def __init__(
        self,
        settings: EmitSettings,
        processor_name: str = "",
        dlq_factory: Callable[[], Any] | None = None,
        *,
        max_retries: int = 3,
        retry_backoff_s: float = 1.0,
        delivery_timeout_ms: int = 60_000,
        producer_config: dict[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        self.client = settings.client
        self.processor_name = processor_name
        self.dlq_factory = dlq_factory
        self.max_retries = max_retries
        self.retry_backoff_s = retry_backoff_s
        self.topic_path = settings.topic_path
        self.topic_fn = settings.topic_fn
        self.key_format = settings.key_format
        self.key_ser = settings.key_ser
        self.key_fn = settings.key_fn
        self.headers_fn = settings.headers_fn
        self.tomb_fn = settings.tomb_fn
        self.dump = settings.dump
        acks = settings.acks
        self.producer_config: dict[str, Any] = {
            **self.client,
            "acks": acks,
            "compression.type": settings.compression,
            "linger.ms": 5,
            "delivery.timeout.ms": delivery_timeout_ms,
            **(producer_config or {}),
        }
        if acks != "all":
            # Idempotence needs acks=all; without it librdkafka may reorder on retry.
            self.producer_config.setdefault("enable.idempotence", False)
        else:
            self.producer_config.setdefault("enable.idempotence", True)

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _EmitPartition:
        return _EmitPartition(self, worker_index)


class _EmitPartition(StatelessSinkPartition[list[dict[str, Any]]]):
    def __init__(self, sink: KafkaEmitSink, worker_index: int) -> None:
        self.sink = sink
        self.producer = Producer({**sink.producer_config, "client.id": f"mqlflow-{sink.processor_name}-emit-{worker_index}"})
        self.dlq_writer: Any = sink.dlq_factory() if sink.dlq_factory is not None else None
        self.produced = 0

    # -- per document ------------------------------------------------------------------------

    def _record(self, doc: dict[str, Any]) -> Record:
        s = self.sink
        try:
            topic = s.topic_fn(doc, EMPTY_VARS)
        except ExprError as exc:
            raise EmitError(f"{s.topic_path}: {exc}") from None
        if not isinstance(topic, str) or not topic:
            raise EmitError(f"{s.topic_path} must evaluate to a non-empty string, got {bson_type(topic)}")
        tombstone = False
        if s.tomb_fn is not None:
            t = s.tomb_fn(doc, EMPTY_VARS)
            if not isinstance(t, bool):
                raise EmitError(f"config.tombstoneWhen must evaluate to a boolean, got {bson_type(t)}")
            tombstone = t
        key = None
        if s.key_fn is not None:
            kv = s.key_fn(doc, EMPTY_VARS)
            if kv is MISSING:
                raise EmitError("config.key evaluated to a missing value")
            try:
                key = s.key_ser(kv)
            except EmitError as exc:
                raise EmitError(f"Failed to serialize config.key as {s.key_format}: {exc}") from None
        headers: list[tuple[str, bytes | None]] = []
        if s.headers_fn is not None:
            hv = s.headers_fn(doc, EMPTY_VARS)
            if hv is not MISSING and hv is not None:
                headers = headers_of(hv)
        value = None if tombstone else s.dump(doc).encode("utf-8")
        return topic, key, value, headers

    # -- Bytewax callback ----------------------------------------------------------------------

    def write_batch(self, items: list[list[dict[str, Any]]]) -> None:
        records: list[Record] = []
        docs: list[dict[str, Any]] = []
        dlq: list[dict[str, Any]] = []
        for batch in items:
            for doc in batch:
                try:
                    records.append(self._record(doc))
                    docs.append(doc)
                except (EmitError, ExprError, ValueError, OverflowError) as exc:
                    dlq.append(dlq_document(f"Failed to process input document in $emit stage: {exc}", doc, self.sink.processor_name))
        attempt = 0
        while records:
            failed, rejected = self._deliver(records, docs)
            for doc, err in rejected:
                dlq.append(dlq_document(f"Kafka rejected the message in $emit stage: {err}", doc, self.sink.processor_name))
            if not failed:
                break
            attempt += 1
            err = failed[0][2]
            if attempt > self.sink.max_retries:
                self._write_dlq(dlq)
                raise RuntimeError(
                    f"$emit: {len(failed)} message(s) could not be delivered to Kafka after "
                    f"{self.sink.max_retries} retries: {err}"
                )
            log.warning("$emit: %d message(s) failed (%s); retry %d/%d", len(failed), err, attempt, self.sink.max_retries)
            time.sleep(self.sink.retry_backoff_s * 2 ** (attempt - 1))
            records = [r for r, _, _ in failed]
            docs = [d for _, d, _ in failed]
        self._write_dlq(dlq)

    def _deliver(
        self, records: list[Record], docs: list[dict[str, Any]]
    ) -> tuple[list[tuple[Record, dict[str, Any], KafkaError]], list[tuple[dict[str, Any], KafkaError]]]:
        """Produce and flush; return (transient failures, per-message rejections)."""
        producer = self.producer
        failed: list[tuple[Record, dict[str, Any], KafkaError]] = []
        rejected: list[tuple[dict[str, Any], KafkaError]] = []

        def report(i: int) -> Callable[[KafkaError | None, Message], None]:
            def cb(err: KafkaError | None, msg: Message) -> None:
                if err is None:
                    return
                if err.code() in REJECTED:
                    rejected.append((docs[i], err))
                else:
                    failed.append((records[i], docs[i], err))

            return cb

        for i, (topic, key, value, headers) in enumerate(records):
            while True:
                try:
                    producer.produce(topic, value=value, key=key, headers=headers or None, on_delivery=report(i))  # type: ignore[arg-type]
                    break
                except BufferError:
                    producer.poll(0.1)  # local queue full: let deliveries drain
                except KafkaException as exc:
                    kerr = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
                    if kerr is not None and kerr.code() in REJECTED:
                        rejected.append((docs[i], kerr))
                        break
                    raise
            if i & POLL_MASK == POLL_MASK:
                producer.poll(0)  # serve delivery reports now and then, not per message
        t0 = time.monotonic()
        deadline = t0 + self.sink.producer_config["delivery.timeout.ms"] / 1000 + 30
        what = f"delivering {len(records)} message(s)"
        wait_key = id(records)
        metrics.sink_wait_begin(wait_key, self.sink.processor_name, "$emit", what)  # stats().sinkStalls
        try:
            next_log = t0 + STALL_LOG_S
            while (left := producer.flush(1.0)) > 0:
                now = time.monotonic()
                if now > deadline:
                    raise RuntimeError("$emit: Kafka producer did not finish delivering within its delivery timeout")
                if now >= next_log:  # no silent wait: the broker may be away
                    log.warning(
                        "processor '%s': $emit: %s made no progress for %.0f s (%d undelivered)",
                        self.sink.processor_name, what, now - t0, left,
                    )
                    next_log = now + STALL_LOG_S
        finally:
            metrics.sink_wait_end(wait_key)
        self.produced += len(records) - len(failed) - len(rejected)
        return failed, rejected

    def _write_dlq(self, dlq: list[dict[str, Any]]) -> None:
        if not dlq:
            return
        if self.dlq_writer is not None:
            self.dlq_writer.write(dlq)
            return
        from sinks.console import to_json

        sys.stderr.write("".join(f"[dlq] {to_json(d)}\n" for d in dlq))
        sys.stderr.flush()

    def close(self) -> None:
        self.producer.flush(30)
