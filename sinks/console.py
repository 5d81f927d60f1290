"""Console output for pipelines without a sink (``sp.process``): one relaxed Extended
JSON document per line. DLQ documents are printed with a ``[dlq] `` prefix so they are
visible but never mistaken for output (docs/semantics.md#sinks)."""

from __future__ import annotations

import sys
from typing import Any, TextIO

from bson import json_util
from bytewax.outputs import DynamicSink, StatelessSinkPartition

RELAXED = json_util.JSONOptions(json_mode=json_util.JSONMode.RELAXED, tz_aware=True)


def to_json(doc: Any) -> str:
    return json_util.dumps(doc, json_options=RELAXED)


class _ConsolePartition(StatelessSinkPartition[list[dict[str, Any]]]):
    def __init__(self, stream: TextIO, prefix: str) -> None:
        self.stream = stream
        self.prefix = prefix

    def write_batch(self, items: list[list[dict[str, Any]]]) -> None:
        prefix = self.prefix
        lines = [prefix + to_json(d) for batch in items for d in batch]
        if lines:
            self.stream.write("\n".join(lines) + "\n")
            self.stream.flush()


class ConsoleSink(DynamicSink[list[dict[str, Any]]]):
    def __init__(self, dlq: bool = False, stream: TextIO | None = None) -> None:
        self.dlq = dlq
        self.stream = stream

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _ConsolePartition:
        return _ConsolePartition(self.stream or sys.stdout, "[dlq] " if self.dlq else "")
