"""Processor-level options (``createStreamProcessor(name, pipeline, options)``)."""

from __future__ import annotations

from dataclasses import dataclass

from translator.ir import DlqTarget


@dataclass(frozen=True)
class ProcessorOptions:
    """What a pipeline needs besides its stages.

    ``batch_size`` bounds how many documents a source partition hands to the
    dataflow at once; every operator works per batch.
    """

    name: str = "mqlflow"
    dlq: DlqTarget | None = None
    batch_size: int = 1024
    sink_batch_size: int = 1000
    # 0: a sink writes each batch Bytewax hands it before returning (no loss on a crash);
    # > 0: partial batches wait up to this long (faster, may lose that much on a crash).
    sink_flush_interval_s: float = 0.0
    window_buckets: int = 4  # group buckets that window state is spread over (workers)
