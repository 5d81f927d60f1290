"""Step compilers of the enrichment stages, registered into
:data:`translator.stages.STEP_COMPILERS` on import, and the connections the I/O stages
(``$lookup``, ``$cachedLookup``, ``$https``) get.

``Plan.compile`` has no connections argument; :mod:`translator.compile` binds a
:class:`translator.compiled.Resolver` around it with :func:`bound`: each I/O stage's
connection is resolved once, at create time, recorded in the compiled pipeline, and
handed to the stage compiler as a resolved ``Connection`` (the running flow gets a
client for that connection). A bare registry may be bound too (tests that compile steps alone).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from translator import stages
from translator.connections import Connection, ConnectionRegistry
from translator.enrich.spec import HttpsStage, LookupStage, SetStreamMetaStage, ThrottleStage
from translator.enrich.streammeta import compile_set_stream_meta
from translator.enrich.throttle import compile_throttle

_bound = threading.local()


@contextmanager
def bound(resolver: Any) -> Iterator[list[Callable[[], None]]]:
    """Make ``resolver`` (a :class:`~translator.compiled.Resolver`, the
    :class:`~translator.compiled.ResolvedConnections` of a compiled pipeline, or a
    registry) the one enrichment stages compiled in this block get connections from.

    Yields the list the I/O stages compiled in the block add their close hooks to
    (``build_flow`` calls them when the dataflow ends)."""
    prev = getattr(_bound, "registry", None), getattr(_bound, "closers", None)
    closers: list[Callable[[], None]] = []
    _bound.registry, _bound.closers = resolver, closers
    try:
        yield closers
    finally:
        _bound.registry, _bound.closers = prev


def current_registry() -> Any:
    return getattr(_bound, "registry", None)


def _connection(name: Any, where: str, stage_path: str, *, mongodb: bool = False) -> Connection | None:
    resolver = current_registry()
    if resolver is None:
        return None
    if isinstance(resolver, ConnectionRegistry):
        from translator.compiled import Resolver

        resolver = Resolver(resolver)
    conn: Connection = resolver.stage_connection(name, where, stage_path, mongodb=mongodb)
    return conn


def _lookup_connection(s: LookupStage) -> Connection | None:
    return _connection(s.connection_name, f"{s.path}.from.connectionName", s.path, mongodb=True)


def _lookup_step(s: LookupStage) -> stages.Step:
    # Imported here: pymongo's client and aiohttp cost every processor's start-up a
    # noticeable share when the pipeline has no $lookup or $https.
    from translator.enrich.lookup import compile_lookup

    op = compile_lookup(s, _lookup_connection(s))
    _on_close(op.close)
    return op.step()


def _on_close(close: Callable[[], None]) -> None:
    """Add an I/O stage's close hook to the block's (see :func:`bound`)."""
    closers = getattr(_bound, "closers", None)
    if closers is not None:
        closers.append(close)


def _https_connection(s: HttpsStage) -> Connection | None:
    return _connection(s.connection_name, f"{s.path}.connectionName", s.path)


def _https_step(s: HttpsStage) -> stages.Step:
    from translator.enrich.https import compile_https

    op = compile_https(s, _https_connection(s))
    _on_close(op.close)
    return op.step()


stages.STEP_COMPILERS.update(
    {
        SetStreamMetaStage: lambda s, v: compile_set_stream_meta(s, v),
        LookupStage: lambda s, v: _lookup_step(s),
        ThrottleStage: lambda s, v: compile_throttle(s),
        HttpsStage: lambda s, v: _https_step(s),
    }
)
