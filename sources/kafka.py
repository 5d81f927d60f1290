"""Kafka ``$source`` (docs/semantics.md#sources): one Bytewax partition per Kafka partition.

Why not ``bytewax.connectors.kafka.KafkaSource``: it emits per message and has no way
to say "this partition is idle", and ASP keeps one watermark per Kafka partition and
ignores a partition idle longer than ``partitionIdleTimeout``. Here every Kafka
partition ``<topic>-<n>`` is its own Bytewax partition with its own ``Consumer``
assigned to it, so :class:`translator.runtime.IngestLogic` (keyed by partition) keeps
that partition's watermark and the window's close step takes the minimum.

Offsets live in Bytewax recovery state (the snapshot is the next offset to read), so a
restart resumes exactly at the last checkpoint: records after it are read again, which
is ASP's at-least-once (docs/semantics.md#checkpoints). ``enable.auto.commit`` is always off; with an
explicit ``config.group_id`` the offsets are also committed to that group (on every
batch with ``enable_auto_commit: true``, else at each checkpoint) so Kafka tooling can
watch lag, as ASP does.

Unparsable messages cannot go to the DLQ from here (a source has one output), so they
are emitted as :func:`sources.base.source_dlq` records ``{SOURCE_DLQ_KEY: {"reason", "doc"}}``
that the ingest step routes to the DLQ; ``doc`` is ``{rawValue: <base64>, _ts, _stream_meta}``
(or the parsed document when only the key failed).
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import os
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from bson import json_util
from bson.int64 import Int64
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from sources.base import (
    SOURCE_DLQ_KEY,
    DeferredMetaBatch,
    IdleBatch,
    RawBatch,
    SourceItem,
    now_ms,
    source_dlq,
)
from translator import ir
from translator.connections import Connection
from translator.errors import TranslateError
from translator.mql.values import ms_to_datetime
from translator.options import ProcessorOptions

log = logging.getLogger(__name__)

EJSON_OPTIONS = json_util.JSONOptions(tz_aware=True)
EPOCH_DT = datetime(1970, 1, 1, tzinfo=UTC)
POLL_INTERVAL_S = 0.01  # wait this long after an empty poll (no busy loop)
METADATA_TIMEOUT_S = 15.0

EARLIEST = frozenset({"earliest", "beginning", "smallest"})
LATEST = frozenset({"latest", "end", "largest"})
KEY_FORMATS = ("binData", "string", "json", "int", "long")
SOURCE_CONFIG_KEYS = frozenset(
    {"auto_offset_reset", "group_id", "enable_auto_commit", "keyFormat", "keyFormatError"}
)

# Reporting hook for ``stats().kafkaPartitions`` (docs/semantics.md#stats): when set (by
# flows/processor.py inside the service), every partition calls it with
# ``{topic, partition, currentOffset, checkpointOffset, isIdle}`` at start, after each
# batch it reads, when it turns idle and at each snapshot. Per batch, not per message.
PARTITION_OBSERVER: Callable[[dict[str, Any]], None] | None = None

# Errors in a consumed message that mean "this partition cannot be read": fail the processor.
_FATAL_CODES = frozenset(
    {
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._UNKNOWN_PARTITION,
        KafkaError._UNKNOWN_TOPIC,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.GROUP_AUTHORIZATION_FAILED,
        KafkaError.SASL_AUTHENTICATION_FAILED,
        KafkaError._AUTHENTICATION,
    }
)


# ---- connection -> librdkafka configuration -----------------------------------------------

_CONN_FIELDS = frozenset({"name", "type", "uri", "bootstrap_servers", "url"})


def kafka_client_config(conn: Connection) -> dict[str, Any]:
    """librdkafka settings for a ``kafka`` connection.

    ``bootstrap_servers`` is required. Other settings of the connection (security:
    ``security_protocol``, ``sasl_mechanism``, ``sasl_username``, ``ssl_ca_location``...)
    are passed through with ``_`` turned into ``.``; a nested ``config`` table is passed
    verbatim (librdkafka names).
    """
    if conn.type != "kafka":
        raise TranslateError(f"connections.{conn.name}", f"connection '{conn.name}' is of type '{conn.type}', not 'kafka'")
    if not conn.bootstrap_servers:
        raise TranslateError(f"connections.{conn.name}.bootstrap_servers", "a kafka connection needs bootstrap_servers")
    cfg: dict[str, Any] = {"bootstrap.servers": conn.bootstrap_servers}
    for k, v in (conn.model_dump(exclude_none=True)).items():
        if k in _CONN_FIELDS or v is None:
            continue
        if k == "config" and isinstance(v, dict):
            cfg.update({str(a): b for a, b in v.items()})
        elif isinstance(v, (str, int, float, bool)):
            cfg[k.replace("_", ".")] = v
    return cfg


# ---- message decoding ------------------------------------------------------------------------


# Switch for the fast decoder (orjson): the processor option ``fastPaths: false`` turns it
# off per pipeline (``KafkaSourceSettings.fast_json``); this flag or ``MQLFLOW_FAST_JSON=0``
# in the environment of the flow process does for every Kafka source of the process.
FAST_JSON: bool = os.environ.get("MQLFLOW_FAST_JSON", "1") != "0"
# Bytes that may start Extended JSON (a ``"$...`` key or string) or hide one behind an
# escape (``"\\u0024date"``): such a value goes to the reference decoder. So does a run
# of 19 or more digits, which may be an integer beyond 64 bits: orjson turns those into
# floats where ``json`` keeps an exact ``int``. Digits are found by mapping every digit
# to ``0`` (``bytes.translate``, in C) and looking for nineteen zeros.
_EJSON_MARK = b'"$'
_ESCAPE_MARK = b"\\u"
_DOLLAR = b"$"
_BACKSLASH = b"\\"
_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_NUMBER = b"0" * 19


def is_plain_json(raw: bytes) -> bool:
    """True if orjson decodes ``raw`` exactly as the reference decoder would (when it
    decodes it at all): no Extended JSON marker, no ``\\u`` escape, no long number.
    Also used on a whole batch joined together, which is as cheap as one message.

    The two-byte markers are looked for only when their rare last byte (``$``, ``\\``)
    occurs at all: a one-byte search is a ``memchr``, while ``"$`` stops at every quote
    of the batch (measured: 0.3 us per seed message, a third of the check)."""
    return (
        (_DOLLAR not in raw or _EJSON_MARK not in raw)
        and (_BACKSLASH not in raw or _ESCAPE_MARK not in raw)
        and _LONG_NUMBER not in raw.translate(_DIGITS_TO_ZERO)
    )


# How many message values each decoder turned into documents in this process (a
# reference call is a fallback when the fast decoder is on): the benchmark prints them and
# the tests check that seed-shaped messages never fall back. Counted per batch on the
# fast path, per call on the reference path.
DECODE_COUNTS: dict[str, int] = {"fast": 0, "reference": 0}


def parse_value(raw: bytes) -> dict[str, Any]:
    """A Kafka value as a document: JSON, or canonical/relaxed Extended JSON (docs/semantics.md#sources).

    Plain JSON (:func:`is_plain_json`) is decoded by orjson, several times faster than
    ``json``; anything orjson refuses (``NaN``, invalid UTF-8, broken JSON) or that is
    not an object is decoded again by :func:`parse_value_reference`, so errors and
    documents are the reference's. Raises ``ValueError`` with the reason.
    """
    if FAST_JSON and is_plain_json(raw):
        return parse_plain(raw)
    return parse_value_reference(raw)


def parse_plain(raw: bytes) -> dict[str, Any]:
    """orjson for a value already known to be plain JSON; the reference for the rest."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return parse_value_reference(raw)
    if type(value) is dict:
        DECODE_COUNTS["fast"] += 1
        return value
    return parse_value_reference(raw)


def parse_value_reference(raw: bytes) -> dict[str, Any]:
    """The reference decoder: ``json`` or ``bson.json_util``; the differential tests
    compare :func:`parse_value` with it."""
    DECODE_COUNTS["reference"] += 1
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"message value is not valid UTF-8: {exc}") from None
    return _parse_json_text(text, "message value", object_only=True)


def _parse_json_text(text: str, what: str, *, object_only: bool) -> Any:
    try:
        if "$" in text or "\\u" in text:
            value = json_util.loads(text, json_options=EJSON_OPTIONS)
        else:
            value = json.loads(text)  # no Extended JSON possible: the fast path
    except Exception as exc:
        raise ValueError(f"{what} is not valid JSON or Extended JSON: {exc}") from None
    if object_only and not isinstance(value, dict):
        raise ValueError(f"{what} is JSON but not an object (got {type(value).__name__})")
    return value


def _key_bin(raw: bytes) -> Any:
    return raw


def _key_string(raw: bytes) -> Any:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not valid UTF-8: {exc}") from None


def _key_json(raw: bytes) -> Any:
    return _parse_json_text(_key_string(raw), "key", object_only=False)


def _key_int(raw: bytes) -> Any:
    if len(raw) != 4:
        raise ValueError(f"an int key is 4 bytes (big-endian), got {len(raw)}")
    return struct.unpack(">i", raw)[0]


def _key_long(raw: bytes) -> Any:
    if len(raw) != 8:
        raise ValueError(f"a long key is 8 bytes (big-endian), got {len(raw)}")
    return Int64(struct.unpack(">q", raw)[0])


KEY_DECODERS = {"binData": _key_bin, "string": _key_string, "json": _key_json, "int": _key_int, "long": _key_long}


def _batch_decoder(msgs: list[Message], fast: bool = True) -> Callable[[bytes], dict[str, Any]]:
    """One :func:`is_plain_json` check for the whole batch (joined, so it costs one C
    scan instead of a Python call per message): orjson for every message of a plain
    batch, the per-message choice otherwise. Joining can only add markers, never hide
    one, so a batch judged plain has only plain messages."""
    if not (FAST_JSON and fast):
        return parse_value_reference
    # A tombstone (or an error event) has no value: it adds nothing to look for.
    joined = b"\n".join([m.value() or b"" for m in msgs])
    return parse_plain if is_plain_json(joined) else parse_value


def _failing(exc: ValueError) -> Callable[[bytes], dict[str, Any]]:
    """A decoder that raises the error already seen: the DLQ record of a message the
    batch loop could not decode is built without decoding it a second time."""

    def decode(raw: bytes) -> dict[str, Any]:
        raise exc

    return decode


# ---- the envelope's BSON size (stats() inputMessageSize) ---------------------------------


def _int_width(v: int) -> int:
    """The BSON bytes of a Python int: an int32 when it fits, else an int64."""
    return 4 if -0x8000_0000 <= v <= 0x7FFF_FFFF else 8


def _headers_size(raw: Any) -> int | None:
    """The BSON bytes ``[{"k": key, "v": value}, ...]`` adds to an empty array: per
    header its type byte and index name, then its document's length and terminator (5),
    "k" as a string (8 + bytes), "v" as binary (8 + bytes) or null (3). None for a
    header that is not ``(str, bytes or None)``."""
    if type(raw) is not list:
        return None
    size = 0
    for i, (k, v) in enumerate(raw):
        if type(k) is not str or (v is not None and type(v) is not bytes):
            return None
        try:
            size += 15 + len(str(i)) + len(k.encode()) + (3 if v is None else 8 + len(v))
        except UnicodeEncodeError:
            return None
    return size


# ---- timestamps -----------------------------------------------------------------------------

# Kafka timestamp (ms) -> ``datetime``, shared by every partition of the process: messages
# produced together share their millisecond across partitions too, so each distinct
# timestamp is converted once. Cleared when it grows past ``_DT_CACHE_MAX`` entries.
_DT_CACHE: dict[int, datetime] = {}
_DT_CACHE_MAX = 1 << 16


def ts_datetime(ms: int) -> datetime:
    dt = _DT_CACHE.get(ms)
    if dt is None:
        if len(_DT_CACHE) >= _DT_CACHE_MAX:
            _DT_CACHE.clear()
        dt = _DT_CACHE[ms] = ms_to_datetime(ms)
    return dt


# ---- settings ------------------------------------------------------------------------------


@dataclass(frozen=True)
class KafkaSourceSettings:
    topics: tuple[str, ...]
    earliest: bool
    group_id: str | None  # explicit config.group_id: commit offsets to it
    consumer_group: str  # the group.id librdkafka is given
    auto_commit: bool
    key_format: str
    key_error_dlq: bool
    idle_timeout_ms: int | None
    ts_field: str
    batch_size: int
    client: dict[str, Any]
    fast_json: bool = True  # the fastPaths option: orjson for plain JSON values, two-pass records
    # Envelopes added when the ingest step asks (translator.source_meta.defers_source_meta).
    defer_meta: bool = False

    @staticmethod
    def from_stage(src: ir.SourceStage, conn: Connection, options: ProcessorOptions) -> KafkaSourceSettings:
        path = f"{src.path}.config"
        if not src.topic:
            raise TranslateError(f"{src.path}.topic", "a Kafka $source needs 'topic' (a string or an array of strings)")
        cfg = src.config
        for k in cfg:
            if k not in SOURCE_CONFIG_KEYS:
                raise TranslateError(f"{path}.{k}", f"unknown Kafka $source option '{k}'; allowed: {', '.join(sorted(SOURCE_CONFIG_KEYS))}")
        reset = cfg.get("auto_offset_reset", "latest")
        if reset not in EARLIEST and reset not in LATEST:
            raise TranslateError(
                f"{path}.auto_offset_reset",
                f"must be one of earliest, beginning, smallest, latest, end, largest; got {reset!r}",
            )
        group = cfg.get("group_id")
        if group is not None and (not isinstance(group, str) or not group):
            raise TranslateError(f"{path}.group_id", "must be a non-empty string")
        auto_commit = cfg.get("enable_auto_commit", False)
        if not isinstance(auto_commit, bool):
            raise TranslateError(f"{path}.enable_auto_commit", "must be a boolean")
        key_format = cfg.get("keyFormat", "binData")
        if key_format not in KEY_FORMATS:
            raise TranslateError(f"{path}.keyFormat", f"must be one of {', '.join(KEY_FORMATS)}; got {key_format!r}")
        key_error = cfg.get("keyFormatError", "dlq")
        if key_error not in ("dlq", "passThrough"):
            raise TranslateError(f"{path}.keyFormatError", f"must be 'dlq' or 'passThrough'; got {key_error!r}")
        return KafkaSourceSettings(
            topics=src.topic,
            earliest=reset in EARLIEST,
            group_id=group,
            consumer_group=group or f"mqlflow-{options.name}-consumer",
            auto_commit=auto_commit,
            key_format=key_format,
            key_error_dlq=key_error == "dlq",
            idle_timeout_ms=src.partition_idle_timeout_ms,
            ts_field=src.ts_field_name,
            batch_size=options.batch_size,
            client=kafka_client_config(conn),
            fast_json=options.fast_paths,
        )


# ---- the source ----------------------------------------------------------------------------


class _KafkaPartition(StatefulSourcePartition[SourceItem, int]):
    """One Kafka partition. Snapshot: the offset of the next message to read."""

    def __init__(self, key: str, topic: str, partition: int, s: KafkaSourceSettings, resume: int | None) -> None:
        self.key = key
        self.topic = topic
        self.partition = partition
        self.s = s
        self.decode_key = KEY_DECODERS[s.key_format]
        self.consumer = Consumer(
            {
                **s.client,
                "group.id": s.consumer_group,
                "client.id": f"mqlflow-{key}",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "enable.partition.eof": False,
                # Used only if a checkpointed offset no longer exists (retention).
                "auto.offset.reset": "earliest" if s.earliest else "latest",
                "queued.max.messages.kbytes": 16384,
            }
        )
        tp = TopicPartition(topic, partition)
        start = resume
        if start is None and s.group_id is not None:
            # Kafka semantics: a group's committed offset wins over auto_offset_reset.
            committed = self.consumer.committed([tp], timeout=METADATA_TIMEOUT_S)[0].offset
            if committed >= 0:
                start = committed
        if start is None:
            # Resolve "earliest"/"latest" to a concrete offset now, so that a snapshot
            # taken before the first message still resumes from here.
            low, high = self.consumer.get_watermark_offsets(tp, timeout=METADATA_TIMEOUT_S, cached=False)
            start = low if s.earliest else high
        self.next_offset: int = start
        self.checkpoint_offset: int | None = resume
        self.consumer.assign([TopicPartition(topic, partition, start)])
        self.last_data = time.monotonic()
        self.idle = False
        self.empty = False
        self._last_t: int | None = None
        self._last_dt = EPOCH_DT
        self._report()

    # -- Bytewax callbacks ---------------------------------------------------------------------

    def next_batch(self) -> list[SourceItem]:
        msgs = self.consumer.consume(self.s.batch_size, timeout=0)
        if not msgs:
            self.empty = True
            idle_ms = self.s.idle_timeout_ms
            if idle_ms is not None and not self.idle and (time.monotonic() - self.last_data) * 1000 >= idle_ms:
                # ASP partitionIdleTimeout: stop holding the processor watermark back.
                self.idle = True
                self._report()
                return [(self.key, IdleBatch())]
            return []
        self.empty = False
        records = self._records if self.s.fast_json else self._records_reference
        batch = records(msgs, _batch_decoder(msgs, self.s.fast_json))
        if not batch:
            return []
        self.last_data = time.monotonic()
        self.idle = False
        if self.s.auto_commit and self.s.group_id is not None:
            self._commit()
        self._report()
        return [(self.key, batch)]

    def next_awake(self) -> datetime | None:
        if not self.empty:
            return None
        delay = POLL_INTERVAL_S
        idle_ms = self.s.idle_timeout_ms
        if idle_ms is not None and not self.idle:
            delay = max(0.0, min(delay, self.last_data + idle_ms / 1000 - time.monotonic()))
        return datetime.now(UTC) + timedelta(seconds=delay)

    def snapshot(self) -> int:
        self.checkpoint_offset = self.next_offset
        if self.s.group_id is not None and not self.s.auto_commit:
            self._commit()
        self._report()
        return self.next_offset

    def close(self) -> None:
        self.consumer.close()

    # -- internals -------------------------------------------------------------------------------

    def _report(self) -> None:
        """Offsets are "the next offset to read", as in the snapshot."""
        hook = PARTITION_OBSERVER
        if hook is not None:
            hook({
                "topic": self.topic,
                "partition": self.partition,
                "currentOffset": self.next_offset,
                "checkpointOffset": self.checkpoint_offset,
                "isIdle": self.idle,
            })

    def _commit(self) -> None:
        try:
            self.consumer.commit(offsets=[TopicPartition(self.topic, self.partition, self.next_offset)], asynchronous=True)
        except KafkaException as exc:  # advisory only: Bytewax recovery holds the truth
            log.warning("kafka source %s: offset commit failed: %s", self.key, exc)

    def _records(self, msgs: list[Message], decode: Callable[[bytes], dict[str, Any]]) -> RawBatch:
        """The batch's records, as :meth:`_records_reference` makes them, in two passes:
        the run of common messages (no error, no key, a value that decodes) at the
        head of the batch becomes ``(document, time)`` records with nothing else per
        message; their envelopes are then added by :meth:`_attach`, at once or, with
        ``defer_meta``, when the ingest step completes the :class:`DeferredMetaBatch`
        (never, when the window's fast path takes the batch). The messages after the
        run, if any, go one by one through :meth:`_record`. Sets ``next_offset``."""
        defer = self.s.defer_meta
        batch: RawBatch = DeferredMetaBatch() if defer else []
        append = batch.append
        plain = decode is parse_plain
        loads = orjson.loads
        json_error = orjson.JSONDecodeError
        first: Callable[[bytes], dict[str, Any]] | None = None  # the decoder for the message that ends the run
        for msg in msgs:
            if msg.error() is not None:
                break
            value = msg.value()
            if value is None or msg.key() is not None:
                break
            if plain:
                try:
                    doc = loads(value)
                except json_error:
                    doc = None
                if type(doc) is not dict:  # refused or not an object: the reference decides
                    first = parse_value_reference
                    break
            else:
                try:
                    doc = decode(value)
                except ValueError as exc:
                    first = _failing(exc)
                    break
            ts_type, src_t = msg.timestamp()
            if ts_type == TIMESTAMP_NOT_AVAILABLE or src_t < 0:
                src_t = now_ms()
            append((doc, src_t))
        run = len(batch)
        if plain:
            DECODE_COUNTS["fast"] += run
        if run < len(msgs):
            self._rest(msgs, run, first, decode, batch)
        if run:
            if type(batch) is DeferredMetaBatch:
                batch.attach = functools.partial(self._attach, msgs, run)
                batch.meta_size = functools.partial(self._meta_size, msgs, run)
            else:
                self._attach(msgs, run, batch)
        for msg in reversed(msgs):
            if msg.error() is None:
                offset = msg.offset()
                if offset is not None:
                    self.next_offset = offset + 1
                break
        return batch

    def _rest(
        self,
        msgs: list[Message],
        start: int,
        first: Callable[[bytes], dict[str, Any]] | None,
        decode: Callable[[bytes], dict[str, Any]],
        batch: RawBatch,
    ) -> None:
        """The messages from ``start`` on, one at a time (``first``: the decoder for the
        one at ``start``, when the run already decoded it)."""
        append = batch.append
        for i in range(start, len(msgs)):
            msg = msgs[i]
            err = msg.error()
            if err is not None:
                self._error(err)
                continue
            append(self._record(msg, first if first is not None and i == start else decode))

    def _attach(self, msgs: list[Message], run: int, batch: RawBatch) -> None:
        """The envelope of each of the first ``run`` records, made from its message."""
        topic, partition = self.topic, self.partition
        last_t, last_dt = None, EPOCH_DT
        for (doc, src_t), msg in zip(batch[:run] if run < len(batch) else batch, msgs, strict=False):
            if src_t != last_t:
                last_t, last_dt = src_t, ts_datetime(src_t)
            raw_headers = msg.headers()
            doc["_stream_meta"] = {"source": {
                "type": "kafka", "ts": last_dt, "topic": topic, "partition": partition, "offset": msg.offset(), "key": None,
                "headers": [{"k": h[0], "v": h[1]} for h in raw_headers] if raw_headers else [],
            }}

    def _meta_size(self, msgs: list[Message], run: int, batch: RawBatch) -> int | None:
        """The bytes :meth:`_attach` will add to the BSON size of the first ``run``
        records, counted from the envelope's parts without building it (``stats()``
        ``inputMessageSize`` under ``mqlflow serve``); None when a document already has
        a ``_stream_meta`` (the envelope replaces it) or a header is not ``(str, bytes
        or None)``, for the caller to complete the batch instead."""
        docs = batch[:run] if run < len(batch) else batch
        for doc, _ in docs:
            if "_stream_meta" in doc:
                return None
        try:
            topic = len(self.topic.encode())
        except UnicodeEncodeError:
            return None
        # {"_stream_meta": {"source": {type: "kafka", ts: <date>, topic, partition, offset,
        # key: null, headers: [...]}}} as an element: its type byte and "_stream_meta\0"
        # (14), the two documents' lengths and terminators (10), the "source" name (8),
        # then per field its type byte, name and value: type 16, ts 12, topic 12 + bytes,
        # partition 11 + 4|8, offset 8 + 4|8, key 5, headers 9 + the array (5 empty).
        fixed = 14 + 10 + 8 + 16 + 12 + 12 + topic + 11 + _int_width(self.partition) + 8 + 5 + 9 + 5
        size = 0
        for msg in msgs[:run]:
            offset = msg.offset()
            if type(offset) is not int:
                return None
            size += fixed + _int_width(offset)
            raw = msg.headers()
            if raw:
                extra = _headers_size(raw)
                if extra is None:
                    return None
                size += extra
        return size

    def _error(self, err: KafkaError) -> None:
        if err.fatal() or err.code() in _FATAL_CODES:
            raise KafkaException(err)
        log.warning("kafka source %s: %s", self.key, err)

    def _records_reference(self, msgs: list[Message], decode: Callable[[bytes], dict[str, Any]]) -> RawBatch:
        """The reference for :meth:`_records` (``fastPaths: false``). The common message (no key, a value that decodes) is
        handled inline with everything looked up once per batch (in a plain batch,
        :func:`parse_plain` inlined: ``orjson.loads``, a dict or the other path); any other goes
        through :meth:`_record`, which builds the same document. Sets ``next_offset``."""
        batch: RawBatch = []
        append = batch.append
        record = self._record
        topic, partition = self.topic, self.partition
        last_t, last_dt = self._last_t, self._last_dt
        plain = decode is parse_plain
        loads = orjson.loads
        json_error = orjson.JSONDecodeError
        offset = None
        slow = 0
        for msg in msgs:
            err = msg.error()
            if err is not None:
                self._error(err)
                continue
            offset = msg.offset()
            value = msg.value()
            if value is None or msg.key() is not None:
                slow += 1
                append(record(msg, decode))
                last_t, last_dt = self._last_t, self._last_dt
                continue
            if plain:
                try:
                    doc = loads(value)
                except json_error:
                    doc = None
                if type(doc) is not dict:  # refused or not an object: the reference decides
                    slow += 1
                    append(record(msg, parse_value_reference))
                    last_t, last_dt = self._last_t, self._last_dt
                    continue
            else:
                try:
                    doc = decode(value)
                except ValueError as exc:
                    append(record(msg, _failing(exc)))
                    last_t, last_dt = self._last_t, self._last_dt
                    continue
            ts_type, src_t = msg.timestamp()
            if ts_type == TIMESTAMP_NOT_AVAILABLE or src_t < 0:
                src_t = now_ms()
            if src_t != last_t:
                last_t, last_dt = src_t, ts_datetime(src_t)
            raw_headers = msg.headers()
            doc["_stream_meta"] = {"source": {
                "type": "kafka", "ts": last_dt, "topic": topic, "partition": partition, "offset": offset, "key": None,
                "headers": [{"k": h[0], "v": h[1]} for h in raw_headers] if raw_headers else [],
            }}
            append((doc, src_t))
        self._last_t, self._last_dt = last_t, last_dt
        if plain:
            DECODE_COUNTS["fast"] += len(batch) - slow
        if offset is not None:
            self.next_offset = offset + 1
        return batch

    def _record(self, msg: Message, decode: Callable[[bytes], dict[str, Any]]) -> tuple[dict[str, Any], int]:
        ts_type, ts = msg.timestamp()
        src_t = now_ms() if ts_type == TIMESTAMP_NOT_AVAILABLE or ts < 0 else ts
        # Once per distinct timestamp: the envelope and the raw document share it, and
        # messages produced together share their millisecond.
        if src_t == self._last_t:
            ts_value = self._last_dt
        else:
            ts_value = self._last_dt = ts_datetime(src_t)
            self._last_t = src_t
        raw_headers = msg.headers()
        meta: dict[str, Any] = {
            "type": "kafka",
            "ts": ts_value,
            "topic": self.topic,
            "partition": self.partition,
            "offset": msg.offset(),
        }
        key_error: str | None = None
        raw_key = msg.key()
        if raw_key is None:
            meta["key"] = None
        else:
            try:
                meta["key"] = self.decode_key(raw_key)
            except ValueError as exc:
                key_error = f"Failed to deserialize the Kafka message key as {self.s.key_format}: {exc}"
        meta["headers"] = [{"k": h[0], "v": h[1]} for h in raw_headers] if raw_headers else []
        value = msg.value()
        if value is None:
            reason = "Kafka message has no value (a tombstone), not a JSON document"
            return source_dlq(reason, self._raw_doc(None, raw_key, meta, ts_value)), src_t
        try:
            doc = decode(value)
        except ValueError as exc:
            reason = f"Failed to parse the Kafka message as JSON or Extended JSON: {exc}"
            return source_dlq(reason, self._raw_doc(value, raw_key, meta, ts_value)), src_t
        if key_error is not None and self.s.key_error_dlq:
            meta["key"] = raw_key  # the raw bytes, for the DLQ reader
            doc[self.s.ts_field] = ts_value
            doc["_stream_meta"] = {"source": meta}
            return source_dlq(key_error, doc), src_t
        # keyFormatError passThrough: "sends the document to the next stage without key data"
        doc["_stream_meta"] = {"source": meta}
        return doc, src_t

    def _raw_doc(self, value: bytes | None, raw_key: Any, meta: dict[str, Any], ts: datetime) -> dict[str, Any]:
        if "key" not in meta:
            meta["key"] = raw_key
        return {
            "rawValue": None if value is None else base64.b64encode(value).decode("ascii"),
            self.s.ts_field: ts,
            "_stream_meta": {"source": meta},
        }


class KafkaSource(FixedPartitionedSource[SourceItem, int]):
    """Every partition of every ``topic``, keyed ``"<topic>-<n>"``."""

    def __init__(self, settings: KafkaSourceSettings) -> None:
        self.settings = settings
        self._parts: list[str] | None = None

    def list_parts(self) -> list[str]:
        if self._parts is None:
            self._parts = list_partitions(self.settings.client, self.settings.topics)
        return list(self._parts)

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _KafkaPartition:
        topic, n = for_part.rsplit("-", 1)
        return _KafkaPartition(for_part, topic, int(n), self.settings, resume_state)


def list_partitions(client: dict[str, Any], topics: tuple[str, ...]) -> list[str]:
    """``["<topic>-<n>", ...]`` from the cluster metadata; a missing topic is an error."""
    admin = AdminClient(client)
    md = admin.list_topics(timeout=METADATA_TIMEOUT_S)
    parts: list[str] = []
    for t in topics:
        tmd = md.topics.get(t)
        if tmd is None or tmd.error is not None:
            why = "does not exist" if tmd is None else str(tmd.error)
            raise RuntimeError(f"Kafka $source: topic '{t}' {why} on {client.get('bootstrap.servers')}")
        parts.extend(f"{t}-{p}" for p in sorted(tmd.partitions))
    return parts


__all__ = [
    "SOURCE_DLQ_KEY",
    "KafkaSource",
    "KafkaSourceSettings",
    "kafka_client_config",
    "list_partitions",
    "parse_value",
    "parse_value_reference",
    "ts_datetime",
]
