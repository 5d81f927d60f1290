"""The dead-letter document shape shared by every producer of DLQ entries
(https://www.mongodb.com/docs/atlas/atlas-stream-processing/ops-guide/)."""

from __future__ import annotations

import datetime as _dt
import hashlib
from typing import Any

from bson import ObjectId

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
