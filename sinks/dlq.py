"""The dead-letter document shape, defined in :mod:`translator.contracts` (shared by the
translator and every sink); re-exported here for the sinks."""

from translator.contracts import LATE_REASON, VALIDATE_REASON, dlq_document, dlq_id

__all__ = ["LATE_REASON", "VALIDATE_REASON", "dlq_document", "dlq_id"]
