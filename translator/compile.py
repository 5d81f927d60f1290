"""Public entry points: pipeline (list of stage documents) -> compiled pipeline -> Bytewax
``Dataflow`` (docs/architecture.md#compile--plan--flow).

``compile_pipeline`` does all create-time checking, once: placement, types, every
connection the pipeline names (resolved into :class:`~translator.compiled.ResolvedConnections`),
the adapters' settings (typed, frozen) and every expression (the :class:`Plan`). It
builds no source or sink. ``build_flow`` wires that compiled pipeline into Bytewax,
building the adapters from their settings through the tables below (lazy imports: the
translator imports no ``sources``/``sinks`` module at import time).
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource, Source
from bytewax.outputs import DynamicSink, Sink, StatelessSinkPartition

from translator import ir
from translator.compiled import CompiledPipeline, ResolvedConnections, Resolver
from translator.connections import Connection, ConnectionRegistry
from translator.enrich import steps as enrich_steps
from translator.errors import TranslateError
from translator.options import ProcessorOptions
from translator.parse import parse_pipeline
from translator.runtime import IngestSource, Observer, Plan
from translator.windows import DLQ, OUT, WIN, CloseLogic

# Plans compiled by this process: a flow built from ``compile_pipeline``'s result adds
# exactly one (tests check that nothing is compiled twice).
PLANS_COMPILED = 0


def compile_pipeline(
    stages: Any,
    registry: ConnectionRegistry | None = None,
    options: ProcessorOptions | None = None,
    *,
    require_sink: bool = False,
    check_sink_connection: bool = True,
) -> CompiledPipeline:
    """Parse, validate and compile a pipeline; raise :class:`TranslateError` on any problem.

    ``require_sink`` is for ``createStreamProcessor``: a processor needs a sink, and a
    ``validationAction: "dlq"`` needs a configured DLQ (docs/semantics.md#dlq).
    ``check_sink_connection=False`` (``run_pipeline``) leaves the sink unresolved.
    """
    pipeline = parse_pipeline(stages, require_sink=require_sink)
    return compile_ir(
        pipeline,
        registry or ConnectionRegistry(),
        options or ProcessorOptions(),
        require_sink=require_sink,
        check_sink_connection=check_sink_connection,
    )


def compile_ir(
    pipeline: ir.Pipeline,
    registry: ConnectionRegistry,
    options: ProcessorOptions,
    *,
    require_sink: bool = False,
    check_sink_connection: bool = True,
) -> CompiledPipeline:
    """:func:`compile_pipeline` for an already parsed pipeline."""
    src = pipeline.source
    source_conn = registry.get(src.connection_name, f"{src.path}.connectionName") if src.connection_name is not None else None
    sink = pipeline.sink
    sink_conn = None
    # An $emit whose connection exists is checked even when the sink is not (as before).
    if sink is not None and (check_sink_connection or (isinstance(sink, ir.EmitStage) and sink.connection_name in registry)):
        sink_conn = _sink_connection(sink, registry)
    dlq_conn = None
    if options.dlq is not None:
        dlq_conn = registry.get_mongodb(options.dlq.connection_name, "options.dlq.connectionName")
    if require_sink and options.dlq is None:
        for path in _dlq_users(pipeline.stages):
            raise TranslateError(
                path,
                "validationAction 'dlq' needs a dead letter queue: pass {dlq: {connectionName, db, coll}} in the processor options",
            )
    source_settings = _source_settings(pipeline, source_conn, options) if source_conn is not None else None
    sink_settings = SINK_SETTINGS[type(sink)](sink, sink_conn, options) if sink is not None and sink_conn is not None else None
    resolver = Resolver(registry)
    plan, closers = _compile_plan(pipeline, options, resolver)  # compiles every expression: errors surface now
    return CompiledPipeline(
        pipeline.source,
        pipeline.stages,
        pipeline.sink,
        pipeline.raw,
        options=options,
        connections=resolver.frozen(source_conn, sink_conn, dlq_conn),
        source_settings=source_settings,
        sink_settings=sink_settings,
        plan=plan,
        closers=closers,
    )


def _compile_plan(
    pipeline: ir.Pipeline, options: ProcessorOptions, connections: Resolver | ResolvedConnections
) -> tuple[Plan, tuple[Callable[[], None], ...]]:
    """The plan, and the close hooks of its I/O stages."""
    global PLANS_COMPILED
    PLANS_COMPILED += 1
    with enrich_steps.bound(connections) as closers:
        plan = Plan.compile(pipeline, options)
    return plan, tuple(closers)


def _dlq_users(stages: tuple[ir.Stage, ...]) -> list[str]:
    out = []
    for s in stages:
        if isinstance(s, ir.ValidateStage) and s.action == "dlq":
            out.append(f"{s.path}.validationAction")
        elif isinstance(s, ir.WindowStage):
            out.extend(_dlq_users(s.pipeline))
    return out


# ---- sources: settings at compile time, the source at build time ------------------------------


def _source_settings(pipeline: ir.Pipeline, conn: Connection, options: ProcessorOptions) -> Any:
    parse = SOURCE_SETTINGS.get(conn.type)
    if parse is None:
        src = pipeline.source
        raise TranslateError(f"{src.path}.connectionName", f"connections of type '{conn.type}' cannot be used as a $source yet")
    return parse(pipeline, conn, options)


def _sample_settings(pipeline: ir.Pipeline, conn: Connection, options: ProcessorOptions) -> Any:
    from sources.solar import SolarConfig

    settings = dict(conn.model_extra or {})
    settings.update(pipeline.source.config)
    return SolarConfig.from_mapping(settings, f"{pipeline.source.path}.config")


def _kafka_settings(pipeline: ir.Pipeline, conn: Connection, options: ProcessorOptions) -> Any:
    from sources.kafka import KafkaSourceSettings
    from translator.source_meta import defers_source_meta

    settings = KafkaSourceSettings.from_stage(pipeline.source, conn, options)
    return replace(settings, defer_meta=options.fast_paths and defers_source_meta(pipeline))


def _change_stream_settings(pipeline: ir.Pipeline, conn: Connection, options: ProcessorOptions) -> Any:
    from sources.changestream import ChangeStreamSettings

    return ChangeStreamSettings.from_stage(pipeline.source, conn, options, windowed=pipeline.window is not None)


def _sample_source(settings: Any) -> Source[Any]:
    from sources.solar import SolarSource

    return SolarSource(settings)


def _kafka_source(settings: Any) -> Source[Any]:
    from sources.kafka import KafkaSource

    return KafkaSource(settings)


def _change_stream_source(settings: Any) -> Source[Any]:
    from sources.changestream import ChangeStreamSource

    return ChangeStreamSource(settings)


SettingsParser = Callable[[ir.Pipeline, Connection, ProcessorOptions], Any]
# By connection kind: the typed settings of the $source (compile time) and its builder.
SOURCE_SETTINGS: dict[str, SettingsParser] = {
    "sample": _sample_settings,
    "kafka": _kafka_settings,
    "mongodb": _change_stream_settings,
    "atlas": _change_stream_settings,
}
SOURCE_BUILDERS: dict[str, Callable[[Any], Source[Any]]] = {
    "sample": _sample_source,
    "kafka": _kafka_source,
    "mongodb": _change_stream_source,
    "atlas": _change_stream_source,
}


def make_source(compiled: CompiledPipeline, options: ProcessorOptions | None = None) -> Source[Any]:
    """The Bytewax source for ``$source``, built from the settings compiled by
    :func:`compile_pipeline` (its connection resolved then)."""
    options = options or compiled.options
    src = compiled.source
    if src.documents is not None:
        from sources.documents import DocumentsSource

        return DocumentsSource(src.documents, options.batch_size)
    conn = compiled.connections.source
    assert conn is not None, "compile_pipeline resolves every $source connection"
    return SOURCE_BUILDERS[conn.type](compiled.source_settings)


# ---- sinks ------------------------------------------------------------------------------------


def _sink_connection(sink: ir.SinkStage, registry: ConnectionRegistry) -> Connection:
    if isinstance(sink, ir.MergeStage):
        return registry.get_mongodb(sink.connection_name, f"{sink.path}.into.connectionName")
    if isinstance(sink, ir.EmitTimeSeriesStage):
        return registry.get_mongodb(sink.connection_name, f"{sink.path}.connectionName")
    return registry.get(sink.connection_name, f"{sink.path}.connectionName")


def _merge_settings(stage: Any, conn: Connection, options: ProcessorOptions) -> Any:
    from sinks.mongo import MergeSettings

    return MergeSettings.from_stage(stage, conn, fast=options.fast_paths)


def _emit_settings(stage: Any, conn: Connection, options: ProcessorOptions) -> Any:
    from sinks.kafka import EmitSettings

    return EmitSettings.from_stage(stage, conn, fast=options.fast_paths)


def _timeseries_settings(stage: Any, conn: Connection, options: ProcessorOptions) -> Any:
    from sinks.timeseries import TimeSeriesSettings

    return TimeSeriesSettings.from_stage(stage, conn)


def _timeseries_sink(settings: Any, options: ProcessorOptions, dlq_factory: Any) -> Sink[Any]:
    from sinks.timeseries import TimeSeriesSink

    return _merge_sink(settings, options, dlq_factory, TimeSeriesSink)


def _merge_sink(settings: Any, options: ProcessorOptions, dlq_factory: Any, cls: Any = None) -> Sink[Any]:
    """``$merge``'s sink, or ``cls``, a sink built on it (the time series ``$emit``)."""
    from sinks.mongo import MergeSink

    return (cls or MergeSink)(
        settings,
        processor_name=options.name,
        dlq=dlq_factory,
        batch_size=options.sink_batch_size,
        flush_interval_s=options.sink_flush_interval_s,
    )


def _emit_sink(settings: Any, options: ProcessorOptions, dlq_factory: Any) -> Sink[Any]:
    from sinks.kafka import KafkaEmitSink

    return KafkaEmitSink(settings, processor_name=options.name, dlq_factory=dlq_factory)


# By sink stage: its typed settings (compile time) and its builder.
SINK_SETTINGS: dict[type, Callable[[Any, Connection, ProcessorOptions], Any]] = {
    ir.MergeStage: _merge_settings,
    ir.EmitStage: _emit_settings,
    ir.EmitTimeSeriesStage: _timeseries_settings,
}
SINK_BUILDERS: dict[type, Callable[[Any, ProcessorOptions, Any], Sink[Any]]] = {
    ir.MergeStage: _merge_sink,
    ir.EmitStage: _emit_sink,
    ir.EmitTimeSeriesStage: _timeseries_sink,
}


def make_sinks(compiled: CompiledPipeline, options: ProcessorOptions | None = None) -> tuple[Sink[Any], Sink[Any]]:
    """The output sink ($merge, $emit, or the console) and the DLQ sink, built from the
    settings and connections compiled by :func:`compile_pipeline`."""
    from sinks.console import ConsoleSink

    options = options or compiled.options
    dlq_sink: Sink[Any]
    dlq_factory = None
    if options.dlq is not None:
        from sinks.mongo_dlq import DlqWriter, MongoDlqSink

        target = options.dlq
        dlq_conn = compiled.connections.dlq
        if dlq_conn is None or dlq_conn.name != target.connection_name:
            raise TranslateError(
                "options.dlq.connectionName",
                f"connection '{target.connection_name}' was not resolved when the pipeline was compiled",
            )
        dlq_sink = MongoDlqSink(target, dlq_conn, options.name)
        dlq_factory = lambda: DlqWriter(target, dlq_conn, options.name)  # noqa: E731
    else:
        import sys

        dlq_sink = ConsoleSink(dlq=True, stream=sys.stderr if compiled.sink is not None else None)
    sink = compiled.sink
    if sink is None:
        return ConsoleSink(), dlq_sink
    if compiled.sink_settings is None:  # compiled with check_sink_connection=False
        raise TranslateError(sink.path, "the sink's connection was not resolved when the pipeline was compiled")
    return SINK_BUILDERS[type(sink)](compiled.sink_settings, options, dlq_factory), dlq_sink


# ---- the dataflow -----------------------------------------------------------------------------


def build_flow(
    compiled: CompiledPipeline,
    options: ProcessorOptions | None = None,
    *,
    source: Source[Any] | None = None,
    output_sink: Sink[Any] | None = None,
    dlq_sink: Sink[Any] | None = None,
    flow_id: str = "mqlflow",
    taps: tuple[Sink[Any], Sink[Any]] | None = None,
    observer: Observer | None = None,
) -> Dataflow:
    """Wire the compiled pipeline: source -> ingest (per partition) [-> close (per group
    bucket)] -> sinks. The plan compiled by :func:`compile_pipeline` is used as is (with
    other ``options`` than it was compiled with, but the DLQ target, it is compiled again).

    Both sinks receive *batches* (lists of documents). ``taps`` are extra (output, DLQ)
    sinks fed the same batches (the service's ``sample()`` and stats side channel);
    ``observer(raw_batch, watermark_ms, missing_stamp)`` sees every ingested batch (for
    stats; ``missing_stamp`` names the ``_ts`` field a fast path's documents do not carry).
    """
    if not isinstance(compiled, CompiledPipeline):
        raise TypeError("build_flow wires what compile_pipeline returns, not a bare IR pipeline")
    options = options or compiled.options
    plan, closers = compiled.plan, compiled.closers
    if plan is None or replace(options, dlq=None) != replace(compiled.options, dlq=None):
        # Other tuning than what was compiled (the DLQ target does not enter the plan).
        plan, closers = _compile_plan(compiled, options, compiled.connections)
    plan = copy.copy(plan)  # the observer is this flow's
    plan.observer = observer
    source = source or make_source(compiled, options)
    if output_sink is None or dlq_sink is None:
        default_out, default_dlq = make_sinks(compiled, options)
        output_sink = output_sink or default_out
        dlq_sink = dlq_sink or default_dlq

    if not isinstance(source, FixedPartitionedSource):
        raise TypeError("mqlflow sources are FixedPartitionedSource (one partition per source partition)")
    flow = Dataflow(flow_id)
    ingested = op.input("source", flow, IngestSource(source, plan))
    dlq = op.filter_map("ingest_dlq", ingested, _payload(DLQ))
    if plan.window is None:
        out = op.filter_map("ingest_out", ingested, _payload(OUT))
    else:
        window = plan.window
        partitions = list(source.list_parts())
        to_close = op.filter_map("to_close", ingested, _payload(WIN))
        closed = op.stateful_batch(
            "close", to_close, lambda resume: CloseLogic(window, partitions, plan.dlq_doc, resume, plan.after)
        )
        out = op.filter_map("close_out", closed, _payload(OUT))
        dlq = op.merge("dlq", dlq, op.filter_map("close_dlq", closed, _payload(DLQ)))
    op.output("sink", out, output_sink)
    op.output("dlq_sink", dlq, dlq_sink)
    if taps is not None:
        op.output("tap_out", out, taps[0])
        op.output("tap_dlq", dlq, taps[1])
    if closers:
        op.output("close_stages", dlq, CloseAtEnd(closers))
    return flow


class CloseAtEnd(DynamicSink[Any]):
    """Calls the I/O stages' close hooks (``$lookup`` clients, ``$https`` sessions) when the dataflow ends.

    Bytewax closes a sink's partitions once everything upstream of it is done (a
    window's close step and the stages after it included), on finite input, and also
    when a step raises and the flow fails (``run_pipeline`` then leaves nothing open); a
    processor that is stopped ends its process instead. With several workers in this process, the
    last partition to close calls the hooks. It writes nothing.
    """

    def __init__(self, closers: tuple[Callable[[], None], ...]) -> None:
        self.closers = closers
        self._open = 0
        self._lock = threading.Lock()

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _CloseAtEndPartition:
        with self._lock:
            self._open += 1
        return _CloseAtEndPartition(self)

    def release(self) -> None:
        with self._lock:
            self._open -= 1
            last = self._open == 0
        if last:
            for close in self.closers:
                close()


class _CloseAtEndPartition(StatelessSinkPartition[Any]):
    def __init__(self, sink: CloseAtEnd) -> None:
        self.sink = sink

    def write_batch(self, items: list[Any]) -> None:
        pass

    def close(self) -> None:
        self.sink.release()


def _payload(tag: int) -> Any:
    def pick(kv: tuple[Any, Any]) -> Any:
        value = kv if isinstance(kv[0], int) else kv[1]  # emissions, or keyed close output
        return value[1] if value[0] == tag else None

    return pick
