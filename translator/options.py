"""Processor-level options (``createStreamProcessor(name, pipeline, options)``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
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
    # False (``fastPaths: false``): no accelerator at all (group fast path, generated
    # code, fused stages, batch stamping); every document takes the reference path.
    # Results are the same either way; the fixture suite runs both.
    fast_paths: bool = True


_FAST_PATHS: ContextVar[bool] = ContextVar("mqlflow_fast_paths", default=True)


@contextmanager
def fast_paths(enabled: bool) -> Iterator[None]:
    """Compile a plan with or without accelerators: stage compilers nested anywhere in
    the plan (window inner pipelines too) read :func:`fast_paths_enabled`."""
    token = _FAST_PATHS.set(enabled)
    try:
        yield
    finally:
        _FAST_PATHS.reset(token)


def fast_paths_enabled() -> bool:
    return _FAST_PATHS.get()
