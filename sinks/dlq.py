"""The dead-letter document shape (reference §5) shared by every producer of DLQ entries."""

from __future__ import annotations

import datetime as _dt
from typing import Any

from bson import ObjectId

LATE_REASON = "Input document arrived late."
VALIDATE_REASON = "Input document found to be invalid in $validate stage"


def dlq_document(reason: str, doc: Any, processor_name: str, **extra: Any) -> dict[str, Any]:
    """Build ``{_id, errInfo: {reason}, doc, processorName, dlqTime, ...extra}``.

    ASP puts the offending document, envelope included, under ``doc``; late data adds
    ``missedWindowStartTimes``. ``_id`` is a fresh ObjectId: DLQ delivery is best
    effort and not deduplicated (reference §5).
    """
    out: dict[str, Any] = {
        "_id": ObjectId(),
        "errInfo": {"reason": reason},
        "doc": doc,
        "processorName": processor_name,
        "dlqTime": _dt.datetime.now(_dt.UTC).replace(microsecond=(_dt.datetime.now().microsecond // 1000) * 1000),
    }
    out.update(extra)
    return out
