"""Which source partition the running thread is ingesting, for stages that keep state
per source partition (``$cachedLookup``'s cache, docs/semantics.md#enrichment-stages).

The ingest step runs the stateless stages inside each source partition
(:class:`translator.runtime.IngestSource`); it names the partition here for the length
of a batch. Anywhere else (a window's close step, ``run_chain`` called directly) the
name is ``None``.
"""

from __future__ import annotations

import threading

_local = threading.local()


def current() -> str | None:
    """The source partition whose batch this thread is running, or ``None``."""
    part: str | None = getattr(_local, "part", None)
    return part


def enter(part: str | None) -> None:
    """Name the partition whose batch this thread runs now (``None``: no partition)."""
    _local.part = part
