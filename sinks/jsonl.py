"""Write batches as relaxed Extended JSON lines, one file per worker.

Used for ``flows.pipeline:from_file(..., output_dir=...)``: several Bytewax workers or
processes can write at once without interleaving lines.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bytewax.outputs import DynamicSink, StatelessSinkPartition

from sinks.console import to_json


class _JsonlPartition(StatelessSinkPartition[list[dict[str, Any]]]):
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.f = path.open("a", encoding="utf-8")

    def write_batch(self, items: list[list[dict[str, Any]]]) -> None:
        lines = [to_json(d) for batch in items for d in batch]
        if lines:
            self.f.write("\n".join(lines) + "\n")
            self.f.flush()

    def close(self) -> None:
        self.f.close()


class JsonlDirSink(DynamicSink[list[dict[str, Any]]]):
    def __init__(self, directory: str | Path, prefix: str = "output") -> None:
        self.directory = Path(directory)
        self.prefix = prefix

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _JsonlPartition:
        return _JsonlPartition(self.directory / f"{self.prefix}-{worker_index}.jsonl")
