"""Which pipelines can leave a source document's ``_stream_meta.source`` envelope unbuilt.

Every document carries the envelope (docs/semantics.md#sources), and outputs, ``$meta``,
``$$ROOT`` and the DLQ show it. Building it is a good part of a Kafka message's cost, yet
in the common window pipeline nothing reads it: the window's batch fast path
(:class:`translator.fastpath.FastGroupFold`) folds named fields into group partials and
drops the documents. A source may then emit a :class:`~translator.contracts.DeferredMetaBatch`;
the ingest step completes it before the general path (and its DLQ) sees a document, so
what any reader sees is unchanged.

The check is on the stages that see source documents (the ones before the window, and the
window's own stages up to its first ``$group``) and ``timeField``: only stage kinds that
read the fields they name, and no name that can reach the envelope or the whole document.
"""

from __future__ import annotations

from translator import ir

# Stage kinds that read only the fields their expressions name.
FIELD_STAGES = (
    ir.MatchStage,
    ir.ProjectStage,
    ir.AddFieldsStage,
    ir.UnsetStage,
    ir.ReplaceRootStage,
    ir.UnwindStage,
    ir.GroupStage,
    ir.SortStage,
    ir.LimitStage,
    ir.CountStage,
)
# Names through which an expression or a query reaches the envelope or the whole
# document (``$getField``'s short form reads ``$$CURRENT``; ``$jsonSchema`` sees every field).
WHOLE_DOCUMENT_MARKERS = ("_stream_meta", "$meta", "$$ROOT", "$$CURRENT", "$getField", "$jsonSchema")


def defers_source_meta(pipeline: ir.Pipeline) -> bool:
    """True when the source may emit documents without their envelope, to be completed
    by the ingest step on its general path: an event-time tumbling or hopping window
    whose pipeline has a ``$group``, and nothing before it that may read the envelope.
    Without a window every document is an output, so the envelope is built at once."""
    stages = pipeline.stages
    wi = next((i for i, s in enumerate(stages) if isinstance(s, ir.WindowStage)), None)
    if wi is None:
        return False
    window = stages[wi]
    assert isinstance(window, ir.WindowStage)
    if window.boundary != "eventTime" or window.kind == "session":
        return False  # no batch fast path: every batch takes the general path
    inner = window.pipeline
    gi = next((i for i, s in enumerate(inner) if isinstance(s, ir.GroupStage)), None)
    if gi is None:
        return False
    readers = (*stages[:wi], *inner[: gi + 1])
    if not all(type(s) in FIELD_STAGES for s in readers):
        return False
    text = repr((pipeline.source.time_field, readers))
    return not any(m in text for m in WHOLE_DOCUMENT_MARKERS)
