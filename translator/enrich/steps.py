"""Step compilers of the enrichment stages, registered into
:data:`translator.stages.STEP_COMPILERS` on import, and the connection registry the
I/O stages resolve ``connectionName`` from.

``Plan.compile`` has no registry argument; :mod:`translator.compile` binds one around
it with :func:`bound`, so ``$lookup`` checks its connection at create time and the
running flow gets a client for the same connection.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from translator import stages
from translator.enrich.https import compile_https
from translator.enrich.lookup import compile_lookup
from translator.enrich.spec import HttpsStage, LookupStage, SetStreamMetaStage, ThrottleStage
from translator.enrich.streammeta import compile_set_stream_meta
from translator.enrich.throttle import compile_throttle

_bound = threading.local()


@contextmanager
def bound(registry: Any) -> Iterator[None]:
    """Make ``registry`` the one enrichment stages compiled in this block connect through."""
    prev = getattr(_bound, "registry", None)
    _bound.registry = registry
    try:
        yield
    finally:
        _bound.registry = prev


def current_registry() -> Any:
    return getattr(_bound, "registry", None)


stages.STEP_COMPILERS.update(
    {
        SetStreamMetaStage: lambda s, v: compile_set_stream_meta(s, v),
        LookupStage: lambda s, v: compile_lookup(s, current_registry()),
        ThrottleStage: lambda s, v: compile_throttle(s),
        HttpsStage: lambda s, v: compile_https(s, current_registry()),
    }
)
