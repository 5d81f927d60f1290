"""What every mqlflow source emits into the dataflow, defined in :mod:`translator.contracts`
(the translator consumes it) and re-exported here for the sources.

A source partition emits one item per poll: ``(partition_key, batch)`` where ``batch``
is a list of ``(document, source_time_ms)``. The document already carries its
``_stream_meta.source`` envelope (or gets it when the ingest step completes a
:class:`DeferredMetaBatch`); ``source_time_ms`` is the source's own timestamp
(ingestion time, Kafka message time...), the event time when no ``timeField`` is set
(docs/semantics.md#sources). Emitting whole batches keeps Bytewax's per-item cost (and its
pickling between processes) per batch, not per document.
"""

from translator.contracts import (
    SOURCE_DLQ_KEY,
    DeferredMetaBatch,
    IdleBatch,
    ProgressBatch,
    RawBatch,
    RawRecord,
    SourceItem,
    now_ms,
    source_dlq,
)

__all__ = ["SOURCE_DLQ_KEY", "DeferredMetaBatch", "IdleBatch", "ProgressBatch", "RawBatch", "RawRecord", "SourceItem", "now_ms", "source_dlq"]
