"""What every mqlflow source emits into the dataflow.

A source partition emits one item per poll: ``(partition_key, batch)`` where ``batch``
is a list of ``(document, source_time_ms)``. The document already carries its
``_stream_meta.source`` envelope; ``source_time_ms`` is the source's own timestamp
(ingestion time, Kafka message time...), the event time when no ``timeField`` is set
(docs/semantics.md#sources). Emitting whole batches keeps Bytewax's per-item cost (and its
pickling between processes) per batch, not per document.
"""

from __future__ import annotations

import time
from typing import Any

RawRecord = tuple[dict[str, Any], int]
RawBatch = list[RawRecord]
SourceItem = tuple[str, RawBatch]


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


def now_ms() -> int:
    return time.time_ns() // 1_000_000
