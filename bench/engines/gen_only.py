"""Generator only: reads every batch and does nothing, the floor under ``stream`` runs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from bench.workloads import Workload


def run(wl: Workload, batches: Iterator[list[dict[str, Any]]]) -> tuple[list[Any], float | None]:
    n = 0
    for b in batches:
        n += len(b)
    return [], None


def to_rows(wl: Workload, out: list[Any]) -> list[Any]:
    return out
