"""Bytewax source and sink shared by the Bytewax-based engines (a), (b), (c)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition


class _Part(StatefulSourcePartition[Any, None]):
    def __init__(self, key: str, batches: Iterator[list[dict[str, Any]]], shape: Callable[[str, list[dict[str, Any]]], list[Any]]) -> None:
        self._key = key
        self._it = batches
        self._shape = shape

    def next_batch(self) -> list[Any]:
        batch = next(self._it)  # StopIteration ends the partition
        return self._shape(self._key, batch)

    def snapshot(self) -> None:
        return None


def mqlflow_shape(key: str, batch: list[dict[str, Any]]) -> list[Any]:
    """mqlflow's source contract: one item per poll, ``(partition, [(doc, source_ms)])``."""
    return [(key, [(d, 0) for d in batch])]


def plain_shape(key: str, batch: list[dict[str, Any]]) -> list[Any]:
    """The usual Bytewax contract: each document is one item."""
    return batch


class BatchesSource(FixedPartitionedSource[Any, None]):
    """Partition ``parts[i]`` reads ``provider(i)``, a generator of document batches."""

    def __init__(
        self,
        parts: list[str],
        provider: Callable[[int], Iterator[list[dict[str, Any]]]],
        shape: Callable[[str, list[dict[str, Any]]], list[Any]],
    ) -> None:
        self.parts = parts
        self.provider = provider
        self.shape = shape

    def list_parts(self) -> list[str]:
        return list(self.parts)

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _Part:
        return _Part(for_part, self.provider(self.parts.index(for_part)), self.shape)


class Collector:
    """Where a sink puts what it receives, and when the first item came."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self.first: float | None = None


class _SinkPart(StatelessSinkPartition[Any]):
    def __init__(self, col: Collector, flatten: bool) -> None:
        self.col = col
        self.flatten = flatten

    def write_batch(self, items: list[Any]) -> None:
        col = self.col
        if col.first is None and items:
            col.first = time.perf_counter()
        if self.flatten:
            for it in items:
                col.items.extend(it)
        else:
            col.items.extend(items)


class CollectSink(DynamicSink[Any]):
    """Keeps results for the check after the timed run; ``flatten`` for mqlflow's batches."""

    def __init__(self, col: Collector, flatten: bool) -> None:
        self.col = col
        self.flatten = flatten

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _SinkPart:
        return _SinkPart(self.col, self.flatten)
