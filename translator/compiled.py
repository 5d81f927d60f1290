"""What ``compile_pipeline`` hands to ``build_flow``: the IR, the compiled plan, every
connection the pipeline names (resolved once) and the adapters' typed settings.

Layering (docs/architecture.md#compile--plan--flow): the translator resolves and
checks everything at create time; the adapters (``sources/``, ``sinks/``) get resolved
:class:`~translator.connections.Connection` objects and frozen settings, never the
registry, and build no client until the dataflow starts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from translator import ir
from translator.connections import Connection, ConnectionRegistry
from translator.errors import TranslateError
from translator.options import ProcessorOptions
from translator.runtime import Plan


@dataclass(frozen=True)
class ResolvedConnections:
    """Every connection the pipeline names, looked up in the registry once at compile time.

    ``stages`` maps the path of each I/O stage (``$lookup``, ``$cachedLookup``, ``$https``)
    to its connection. ``sink``/``dlq`` are None when not checked (``run_pipeline``).
    """

    source: Connection | None = None
    sink: Connection | None = None
    dlq: Connection | None = None
    stages: tuple[tuple[str, Connection], ...] = ()

    def stage_connection(self, name: Any, where: str, stage_path: str, *, mongodb: bool = False) -> Connection:
        """The connection resolved for the stage at ``stage_path`` (see :class:`Resolver`)."""
        for path, conn in self.stages:
            if path == stage_path:
                return conn
        raise TranslateError(where, f"connection '{name}' was not resolved when the pipeline was compiled")


class Resolver:
    """Resolves connections through the registry while a plan compiles, recording each
    one; :meth:`frozen` gives the :class:`ResolvedConnections` the compiled pipeline carries."""

    def __init__(self, registry: ConnectionRegistry) -> None:
        self.registry = registry
        self._stages: dict[str, Connection] = {}

    def get(self, name: Any, where: str, *, mongodb: bool = False) -> Connection:
        return self.registry.get_mongodb(name, where) if mongodb else self.registry.get(name, where)

    def stage_connection(self, name: Any, where: str, stage_path: str, *, mongodb: bool = False) -> Connection:
        conn = self.get(name, where, mongodb=mongodb)
        self._stages[stage_path] = conn
        return conn

    def frozen(self, source: Connection | None, sink: Connection | None, dlq: Connection | None) -> ResolvedConnections:
        return ResolvedConnections(source, sink, dlq, tuple(self._stages.items()))


@dataclass(frozen=True)
class CompiledPipeline(ir.Pipeline):
    """A validated pipeline (it *is* the IR) plus everything compiled from it once.

    ``source_settings``/``sink_settings`` are the adapters' typed settings (for example
    :class:`sources.kafka.KafkaSourceSettings`), None for a ``documents`` source, for no
    sink, or when the sink was not checked. ``closers`` are the plan's I/O stages' close
    hooks (``$lookup`` clients), called by the flow when it ends.
    """

    options: ProcessorOptions = field(default_factory=ProcessorOptions)
    connections: ResolvedConnections = field(default_factory=ResolvedConnections)
    source_settings: Any = None
    sink_settings: Any = None
    plan: Plan | None = field(default=None, compare=False, repr=False)
    closers: tuple[Callable[[], None], ...] = field(default=(), compare=False, repr=False)
