"""The public test helper: run a pipeline through the real compiled Bytewax dataflow.

```python
from translator.testing import run_pipeline
result = run_pipeline(pipeline)   # $source with `documents`
result.output   # documents that left the last stage (a trailing $merge/$emit is captured)
result.dlq      # DLQ documents in ASP's shape
```
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from bytewax.testing import TestingSink, run_main

from translator import ir
from translator.compile import build_flow, compile_pipeline
from translator.connections import ConnectionRegistry
from translator.options import ProcessorOptions


@dataclass
class RunResult:
    output: list[dict[str, Any]] = field(default_factory=list)
    dlq: list[dict[str, Any]] = field(default_factory=list)
    pipeline: ir.Pipeline | None = None


def run_pipeline(
    pipeline: list[dict[str, Any]],
    options: ProcessorOptions | dict[str, Any] | None = None,
    registry: ConnectionRegistry | None = None,
) -> RunResult:
    """Compile and run ``pipeline`` to completion in this thread (one Bytewax worker).

    A trailing ``$merge``/``$emit`` is not executed: what would reach it is captured in
    ``output``; DLQ documents are captured in ``dlq`` whatever ``options.dlq`` names. So
    neither connection has to exist, and a production pipeline file runs unchanged. The
    source must be finite (``documents`` or a sample source with ``maxEvents``).
    """
    opts = _options(options)
    # No sink runs here, the DLQ's included: check neither connection.
    ir_pipeline = compile_pipeline(pipeline, registry, replace(opts, dlq=None), check_sink_connection=False)
    out_batches: list[list[dict[str, Any]]] = []
    dlq_batches: list[list[dict[str, Any]]] = []
    flow = build_flow(  # the plan compiled above; both sinks are replaced, so no registry
        ir_pipeline,
        output_sink=TestingSink(out_batches),
        dlq_sink=TestingSink(dlq_batches),
        flow_id="run_pipeline",
    )
    run_main(flow)
    return RunResult(
        output=[d for b in out_batches for d in b],
        dlq=[d for b in dlq_batches for d in b],
        pipeline=ir_pipeline,
    )


def run_pipeline_with_stats(
    pipeline: list[dict[str, Any]],
    options: ProcessorOptions | dict[str, Any] | None = None,
    registry: ConnectionRegistry | None = None,
) -> tuple[RunResult, list[dict[str, Any]]]:
    """:func:`run_pipeline` with the operator figures on, and the run's ASP-style
    ``operatorStats`` (the figures are per process: cleared before and after)."""
    from translator import metrics

    metrics.reset()
    metrics.enable()
    try:
        result = run_pipeline(pipeline, options, registry)
        return result, metrics.operator_stats(result.pipeline)
    finally:
        metrics.disable()
        metrics.reset()


def _options(options: ProcessorOptions | dict[str, Any] | None) -> ProcessorOptions:
    if options is None:
        return ProcessorOptions(name="run_pipeline")
    if isinstance(options, ProcessorOptions):
        return options
    from translator.loader import options_from_mapping

    return options_from_mapping(options, name=options.get("name", "run_pipeline"))
