"""`$source: {documents: [...]}`: a finite, in-order source (docs/semantics.md#sources)."""

from __future__ import annotations

from typing import Any

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from sources.base import SourceItem, now_ms

PARTITION = "documents"


class _DocumentsPartition(StatefulSourcePartition[SourceItem, int]):
    def __init__(self, docs: tuple[dict[str, Any], ...], batch_size: int, resume: int | None) -> None:
        self._docs = docs
        self._batch = batch_size
        self._pos = resume or 0

    def next_batch(self) -> list[SourceItem]:
        if self._pos >= len(self._docs):
            raise StopIteration
        chunk = self._docs[self._pos : self._pos + self._batch]
        self._pos += len(chunk)
        t = now_ms()
        # A shallow copy is enough: stages never mutate nested values in place (they
        # copy along the paths they change), only the top-level envelope is added.
        return [(PARTITION, [({**d, "_stream_meta": {"source": {"type": "documents"}}}, t) for d in chunk])]

    def snapshot(self) -> int:
        return self._pos


class DocumentsSource(FixedPartitionedSource[SourceItem, int]):
    """One partition; its recovery state is the position in the array."""

    def __init__(self, docs: tuple[dict[str, Any], ...], batch_size: int = 1024) -> None:
        self.docs = docs
        self.batch_size = batch_size

    def list_parts(self) -> list[str]:
        return [PARTITION]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _DocumentsPartition:
        return _DocumentsPartition(self.docs, self.batch_size, resume_state)


