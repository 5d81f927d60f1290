"""The contracts the translator and the adapters (``sources/``, ``sinks/``) share.

They live here so the translator imports no adapter module: sources emit
``(partition_key, batch)`` items of :data:`RawBatch` (``IdleBatch`` for an idle
partition), stages pass :data:`Rec` lists, window state is spread over buckets by
:func:`bucket_of`, ``$merge`` and ``$lookup`` check names alike and retry the same server errors
(:func:`is_transient`), and every producer of dead letters builds them with
:func:`dlq_document` (https://www.mongodb.com/docs/atlas/atlas-stream-processing/ops-guide/).
``sources.base`` and ``sinks.dlq`` re-export their part for the adapters.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import time
import zlib
from collections.abc import Callable
from typing import Any

from bson import ObjectId

# ---- what sources emit (docs/semantics.md#sources) -------------------------------------------

RawRecord = tuple[dict[str, Any], int]  # (document with its envelope, source time ms)
RawBatch = list[RawRecord]
SourceItem = tuple[str, RawBatch]
Rec = tuple[dict[str, Any], Any]  # in the stages: (document, event time ms | (time, watermark))

SOURCE_DLQ_KEY = "__mqlflow_dlq__"


def source_dlq(reason: str, doc: Any) -> dict[str, Any]:
    """A record a source could not turn into a document (bad JSON, bad key...): the
    ingest step sends ``doc`` to the DLQ with ``reason`` instead of processing it."""
    return {SOURCE_DLQ_KEY: {"reason": reason, "doc": doc}}


class IdleBatch(list[RawRecord]):
    """Emitted (empty) by a partition that has had no data for ``partitionIdleTimeout``:
    the processor watermark then ignores that partition until it has data again
    (docs/semantics.md#time-and-windows)."""


class ProgressBatch(list[RawRecord]):
    """Emitted (empty) by a partition that knows every later record's source time is at
    least ``ms`` (a change stream's server clock while it is idle). Where the event time
    is the source time (no ``timeField``), the partition's watermark moves to ``ms``, so
    windows close without a later event (docs/windows.md#change-streams)."""

    def __init__(self, ms: int) -> None:
        super().__init__()
        self.ms = ms


class DeferredMetaBatch(list[RawRecord]):
    """A batch whose documents get their ``_stream_meta.source`` envelope only when
    :meth:`complete` is called. A source emits it when the pipeline's only reader of raw
    documents before the general ingest path is the window's batch fast path, which never
    reads the envelope (:func:`translator.source_meta.defers_source_meta`); the ingest
    step completes the batch before anything else sees its documents, so documents, DLQ
    entries and outputs are those of an eager envelope."""

    __slots__ = ("attach", "meta_size")

    def __init__(self) -> None:
        super().__init__()
        self.attach: Callable[[DeferredMetaBatch], None] | None = None
        # The BSON bytes the envelopes will add to the documents, or None when that is
        # not known without building them: ``stats()`` ``inputMessageSize`` counts them
        # without completing the batch (flows/processor.py).
        self.meta_size: Callable[[DeferredMetaBatch], int | None] | None = None

    def complete(self) -> None:
        """Add the envelopes (once; later calls do nothing)."""
        attach, self.attach = self.attach, None
        if attach is not None:
            attach(self)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def bucket_of(hk: Any, n: int) -> int:
    """A stable (cross-process) bucket for a group key: Python's str hash is salted."""
    return zlib.crc32(repr(hk).encode()) % n


# ---- MongoDB namespaces ----------------------------------------------------------------------

_BAD_DB_CHARS = frozenset('/\\. "$\x00')


def db_name_problem(name: str) -> str | None:
    """Why the server would reject ``name`` as a database name (``$merge``, ``$lookup``), or None."""
    if not name:
        return "is empty"
    if len(name.encode()) >= 64:
        return "is longer than 63 bytes"
    bad = sorted(set(name) & _BAD_DB_CHARS)
    return f"contains {bad[0]!r}" if bad else None


def coll_name_problem(name: str) -> str | None:
    """Why the server would reject ``name`` as a collection name, or None."""
    if not name:
        return "is empty"
    if "$" in name or "\x00" in name:
        return "contains '$'" if "$" in name else "contains a NUL byte"
    if name.startswith("system."):
        return "names a system collection"
    return None


# ---- MongoDB errors worth retrying ($merge, the DLQ, $lookup) ---------------------------------

# Server codes that mean "try again": network, shutdown, stepdown, not primary, timeouts.
TRANSIENT_CODES = frozenset(
    {6, 7, 50, 64, 89, 91, 134, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436}
)


def is_transient(exc: BaseException) -> bool:
    """Network errors, ``AutoReconnect``/``NotPrimaryError``, timeouts and server-restart codes.

    pymongo is imported here, not with the module: a processor without MongoDB I/O does
    not pay for importing its client at start-up."""
    from pymongo.errors import BulkWriteError, ConnectionFailure, OperationFailure

    if isinstance(exc, ConnectionFailure):  # AutoReconnect, NetworkTimeout, NotPrimaryError...
        return True
    if isinstance(exc, OperationFailure) and not isinstance(exc, BulkWriteError):
        return exc.code in TRANSIENT_CODES or exc.has_error_label("RetryableWriteError")
    return False


# ---- dead letters (docs/semantics.md#dlq) ----------------------------------------------------

LATE_REASON = "Input document arrived late."
VALIDATE_REASON = "Input document found to be invalid in $validate stage"


def dlq_id(doc: Any, reason: str, processor_name: str = "") -> ObjectId:
    """Deterministic for a document with a source offset: the same processor, message and
    reason give the same ``_id`` (a replay overwrites); another processor sharing the
    collection gets its own."""
    src = doc.get("_stream_meta", {}).get("source") if isinstance(doc, dict) else None
    if isinstance(src, dict) and "offset" in src and "partition" in src:
        key = f"{len(processor_name)}:{processor_name}/{src.get('topic')}/{src['partition']}/{src['offset']}/{reason}"
        return ObjectId(hashlib.blake2b(key.encode(), digest_size=12).digest())
    return ObjectId()


def dlq_document(reason: str, doc: Any, processor_name: str, **extra: Any) -> dict[str, Any]:
    """Build ``{_id, errInfo: {reason}, doc, processorName, dlqTime, ...extra}``.

    ASP puts the offending document, envelope included, under ``doc``; late data adds
    ``missedWindowStartTimes``. For documents from a source with offsets (Kafka) the
    ``_id`` is derived from the processor name, topic, partition, offset and reason, so a
    replay after a crash rewrites the same DLQ entry instead of adding a duplicate;
    otherwise it is a fresh ObjectId.
    """
    out: dict[str, Any] = {
        "_id": dlq_id(doc, reason, processor_name),
        "errInfo": {"reason": reason},
        "doc": doc,
        "processorName": processor_name,
        "dlqTime": _now_ms_precision(),
    }
    out.update(extra)
    return out


def _now_ms_precision() -> _dt.datetime:
    now = _dt.datetime.now(_dt.UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)
