"""Public entry points: pipeline (list of stage documents) -> IR -> Bytewax ``Dataflow``.

``compile_pipeline`` does all create-time checking (placement, types, connections,
every expression compiled once); ``build_flow`` wires the compiled plan into Bytewax.
"""

from __future__ import annotations

from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource, Source
from bytewax.outputs import Sink

from translator import ir
from translator.connections import MONGODB_KINDS, ConnectionRegistry
from translator.enrich import steps as enrich_steps
from translator.errors import TranslateError
from translator.options import ProcessorOptions
from translator.parse import parse_pipeline
from translator.runtime import IngestSource, Observer, Plan
from translator.windows import DLQ, OUT, WIN, CloseLogic


def compile_pipeline(
    stages: Any,
    registry: ConnectionRegistry | None = None,
    options: ProcessorOptions | None = None,
    *,
    require_sink: bool = False,
    check_sink_connection: bool = True,
) -> ir.Pipeline:
    """Parse, validate and compile a pipeline; raise :class:`TranslateError` on any problem.

    ``require_sink`` is for ``createStreamProcessor``: a processor needs a sink, and a
    ``validationAction: "dlq"`` needs a configured DLQ (docs/semantics.md#dlq).
    """
    registry = registry or ConnectionRegistry()
    options = options or ProcessorOptions()
    pipeline = parse_pipeline(stages, require_sink=require_sink)
    src = pipeline.source
    if src.connection_name is not None:
        registry.get(src.connection_name, f"{src.path}.connectionName")
    if pipeline.sink is not None and check_sink_connection:
        sink = pipeline.sink
        where = f"{sink.path}.into.connectionName" if isinstance(sink, ir.MergeStage) else f"{sink.path}.connectionName"
        registry.get(sink.connection_name, where)
    if options.dlq is not None:
        registry.get_mongodb(options.dlq.connection_name, "options.dlq.connectionName")
    if require_sink and options.dlq is None:
        for path in _dlq_users(pipeline.stages):
            raise TranslateError(
                path,
                "validationAction 'dlq' needs a dead letter queue: pass {dlq: {connectionName, db, coll}} in the processor options",
            )
    _check_kafka(pipeline, registry, options)
    with enrich_steps.bound(registry):
        Plan.compile(pipeline, options)  # compiles every expression: errors surface now
    return pipeline


def _check_kafka(pipeline: ir.Pipeline, registry: ConnectionRegistry, options: ProcessorOptions) -> None:
    """Kafka and change-stream settings are checked at create time too (no network involved)."""
    src = pipeline.source
    if src.connection_name is not None and src.connection_name in registry:
        conn = registry.get(src.connection_name, f"{src.path}.connectionName")
        if conn.type == "kafka":
            from sources.kafka import KafkaSourceSettings

            KafkaSourceSettings.from_stage(src, conn, options)
        elif conn.type in MONGODB_KINDS:
            from sources.changestream import ChangeStreamSettings

            ChangeStreamSettings.from_stage(src, conn, options, windowed=pipeline.window is not None)
    if isinstance(pipeline.sink, ir.EmitStage) and pipeline.sink.connection_name in registry:
        from sinks.kafka import KafkaEmitSink

        KafkaEmitSink(pipeline.sink, registry, options.name)


def _dlq_users(stages: tuple[ir.Stage, ...]) -> list[str]:
    out = []
    for s in stages:
        if isinstance(s, ir.ValidateStage) and s.action == "dlq":
            out.append(f"{s.path}.validationAction")
        elif isinstance(s, ir.WindowStage):
            out.extend(_dlq_users(s.pipeline))
    return out


def make_source(pipeline: ir.Pipeline, registry: ConnectionRegistry, options: ProcessorOptions) -> Source[Any]:
    """Pick the Bytewax source for ``$source`` (table by connection kind)."""
    src = pipeline.source
    if src.documents is not None:
        from sources.documents import DocumentsSource

        return DocumentsSource(src.documents, options.batch_size)
    assert src.connection_name is not None
    conn = registry.get(src.connection_name, f"{src.path}.connectionName")
    builder = SOURCE_BUILDERS.get(conn.type)
    if builder is None:
        raise TranslateError(f"{src.path}.connectionName", f"connections of type '{conn.type}' cannot be used as a $source yet")
    return builder(pipeline, conn, options)


def _sample_source(pipeline: ir.Pipeline, conn: Any, options: ProcessorOptions) -> Source[Any]:
    from sources.solar import SolarConfig, SolarSource

    settings = dict(getattr(conn, "model_extra", None) or {})
    settings.update(pipeline.source.config)
    return SolarSource(SolarConfig.from_mapping(settings, f"{pipeline.source.path}.config"))


def _kafka_source(pipeline: ir.Pipeline, conn: Any, options: ProcessorOptions) -> Source[Any]:
    from sources.kafka import build_kafka_source

    return build_kafka_source(pipeline, conn, options)


def _change_stream_source(pipeline: ir.Pipeline, conn: Any, options: ProcessorOptions) -> Source[Any]:
    from sources.changestream import build_change_stream_source

    return build_change_stream_source(pipeline, conn, options)


SOURCE_BUILDERS: dict[str, Any] = {
    "sample": _sample_source,
    "kafka": _kafka_source,
    "mongodb": _change_stream_source,
    "atlas": _change_stream_source,
}


def make_sinks(
    pipeline: ir.Pipeline, registry: ConnectionRegistry, options: ProcessorOptions
) -> tuple[Sink[Any], Sink[Any]]:
    """The output sink ($merge, $emit, or the console) and the DLQ sink."""
    from sinks.console import ConsoleSink

    dlq_sink: Sink[Any]
    dlq_factory = None
    if options.dlq is not None:
        from sinks.mongo_dlq import DlqWriter, MongoDlqSink

        target = options.dlq
        dlq_sink = MongoDlqSink(target, registry, options.name)
        dlq_factory = lambda: DlqWriter(target, registry, options.name)  # noqa: E731
    else:
        import sys

        dlq_sink = ConsoleSink(dlq=True, stream=sys.stderr if pipeline.sink is not None else None)
    sink = pipeline.sink
    if sink is None:
        return ConsoleSink(), dlq_sink
    if isinstance(sink, ir.MergeStage):
        from sinks.mongo import MergeSink

        return (
            MergeSink(sink, registry, options.name, dlq_factory, options.sink_batch_size, options.sink_flush_interval_s),
            dlq_sink,
        )
    from sinks.kafka import KafkaEmitSink

    return KafkaEmitSink(sink, registry, options.name, dlq_factory), dlq_sink


def build_flow(
    pipeline: ir.Pipeline,
    options: ProcessorOptions | None = None,
    registry: ConnectionRegistry | None = None,
    *,
    source: Source[Any] | None = None,
    output_sink: Sink[Any] | None = None,
    dlq_sink: Sink[Any] | None = None,
    flow_id: str = "mqlflow",
    taps: tuple[Sink[Any], Sink[Any]] | None = None,
    observer: Observer | None = None,
) -> Dataflow:
    """Wire the plan: source -> ingest (per partition) [-> close (per group bucket)] -> sinks.

    Both sinks receive *batches* (lists of documents). ``taps`` are extra (output, DLQ)
    sinks fed the same batches (the service's ``sample()`` and stats side channel);
    ``observer(raw_batch, watermark_ms)`` sees every ingested batch (for stats).
    """
    options = options or ProcessorOptions()
    registry = registry or ConnectionRegistry()
    with enrich_steps.bound(registry):
        plan = Plan.compile(pipeline, options)
    plan.observer = observer
    source = source or make_source(pipeline, registry, options)
    if output_sink is None or dlq_sink is None:
        default_out, default_dlq = make_sinks(pipeline, registry, options)
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
    return flow


def _payload(tag: int) -> Any:
    def pick(kv: tuple[Any, Any]) -> Any:
        value = kv if isinstance(kv[0], int) else kv[1]  # emissions, or keyed close output
        return value[1] if value[0] == tag else None

    return pick

