"""(a) mqlflow compiled, one Bytewax worker; also the flow each process of (b) runs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from bytewax.dataflow import Dataflow
from bytewax.testing import run_main

from bench.engines.bytewax_io import BatchesSource, Collector, CollectSink, mqlflow_shape
from bench.workloads import Workload
from flows.pipeline import tune_gc
from translator.compile import build_flow, compile_pipeline
from translator.options import ProcessorOptions


def make_flow(
    wl: Workload, parts: list[str], provider: Callable[[int], Iterator[list[dict[str, Any]]]], col: Collector, dlq: Collector
) -> Dataflow:
    # As shipped: every mqlflow flow process (flows/) tunes the collector this way.
    tune_gc()
    opts = ProcessorOptions(name="bench")
    pipeline = compile_pipeline(wl.pipeline(), options=opts, check_sink_connection=False)
    return build_flow(
        pipeline,
        opts,
        source=BatchesSource(parts, provider, mqlflow_shape),
        output_sink=CollectSink(col, flatten=True),
        dlq_sink=CollectSink(dlq, flatten=True),
        flow_id="bench_mqlflow",
    )


def run(wl: Workload, batches: Iterator[list[dict[str, Any]]]) -> tuple[list[Any], float | None]:
    col, dlq = Collector(), Collector()
    flow = make_flow(wl, ["p0"], lambda i: batches, col, dlq)
    run_main(flow)
    if dlq.items:
        raise RuntimeError(f"mqlflow sent {len(dlq.items)} documents to the DLQ: {dlq.items[0]!r}")
    return col.items, col.first


def to_rows(wl: Workload, out: list[dict[str, Any]]) -> list[Any]:
    if wl.shape == "offpath":
        return [
            (_ms(d["_stream_meta"]["window"]["start"]), d["_id"], d["n"], d["maxPct"], d["temps"], d["watts"])
            for d in out
        ]
    if wl.windowed:
        return [
            (_ms(d["_stream_meta"]["window"]["start"]), d["_id"], d["minTemp"], d["maxTemp"], d["avgTemp"], d["stdevPTemp"])
            for d in out
        ]
    return [(d["device_id"], d["group_id"], _ms(d["ts"]), d["temp"], d["hot"], d["wattsPct"]) for d in out]


def _ms(dt: datetime) -> int:
    return int(dt.timestamp()) * 1000 + dt.microsecond // 1000
