"""Run any pipeline file: ``python -m bytewax.run "flows.pipeline:from_file('examples/x.json')"``.

The file is Extended JSON: a stage array, or ``{"name", "pipeline", "options"}``.
Connections come from ``connections`` (a TOML path), else ``MQLFLOW_CONNECTIONS``,
else ``./connections.toml`` if present, else only the built-in sample source.
"""

from __future__ import annotations

import sys
from typing import Any

from bytewax.dataflow import Dataflow

from translator.compile import build_flow, compile_pipeline, make_sinks
from translator.connections import ConnectionRegistry
from translator.errors import TranslateError
from translator.loader import load_pipeline_file, options_from_mapping


def tune_gc() -> None:
    """A flow process is long-lived and allocation-heavy: move everything built so far
    out of the collector's view and collect young objects less often (about 2x
    throughput on batch pipelines; see BENCHMARKS.md)."""
    import gc

    gc.freeze()
    gc.set_threshold(100_000, 50, 1000)


def registry_from(connections: str | None) -> ConnectionRegistry:
    from translator.connections import load_registry

    return load_registry(connections)


def flow_for(
    stages: list[dict[str, Any]],
    options: dict[str, Any] | None = None,
    connections: str | None = None,
    name: str = "mqlflow",
    *,
    require_sink: bool = False,
    output_dir: str | None = None,
) -> Dataflow:
    """Compile and build; a bad pipeline exits with its one-line message, not a traceback."""
    try:
        registry = registry_from(connections)
        opts = options_from_mapping(dict(options or {}), name=(options or {}).get("name", name))
        pipeline = compile_pipeline(stages, registry, opts, require_sink=require_sink)
        sinks: dict[str, Any] = {}
        if output_dir is not None:
            from sinks.jsonl import JsonlDirSink

            sinks = {"output_sink": JsonlDirSink(output_dir), "dlq_sink": JsonlDirSink(output_dir, "dlq")}
        else:
            out_sink, dlq_sink = make_sinks(pipeline)
            _preflight(out_sink)
            sinks = {"output_sink": out_sink, "dlq_sink": dlq_sink}
        flow = build_flow(pipeline, flow_id=_flow_id(opts.name), **sinks)
        tune_gc()
        return flow
    except TranslateError as exc:
        print(f"mqlflow: invalid pipeline: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _preflight(sink: Any) -> None:
    """Fail fast, in one line, when the $merge server does not answer (not from deep
    inside the Bytewax runtime once workers start)."""
    from sinks.mongo import MergeSink, MergeUnreachableError

    if isinstance(sink, MergeSink):
        try:
            sink.connect().close()
        except MergeUnreachableError as exc:
            print(f"mqlflow: {exc}", file=sys.stderr)
            raise SystemExit(2) from None


def from_file(path: str, connections: str | None = None, output_dir: str | None = None) -> Dataflow:
    """Build the flow for a pipeline file; ``output_dir`` writes output and DLQ documents
    as JSON lines there (one file per worker) instead of the console or the sink."""
    try:
        stages, options = load_pipeline_file(path)
    except TranslateError as exc:
        print(f"mqlflow: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    return flow_for(stages, options, connections, name=options.get("name", "mqlflow"), output_dir=output_dir)


def _flow_id(name: str) -> str:
    return "".join(c if c.isalnum() or c in "_-" else "_" for c in name) or "mqlflow"
