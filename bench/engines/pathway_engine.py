"""(f) Pathway: ``windowby`` with ``pw.temporal.tumbling`` / ``sliding`` over the same documents.

Runs in its own virtualenv (``.cache/bench-venvs/pathway``, ``pip install pathway``) with
``PATHWAY_THREADS=1``. The JSON-lines file is written before the clock starts and read in
static mode; results arrive through ``pw.io.subscribe``. Standard deviation is not a
built-in reducer, so it is computed from count, sum and sum of squares.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from time import perf_counter
from typing import Any

import pathway as pw

from bench.engines.files import write_jsonl
from bench.workloads import C_HOT_TEMP, C_MIN_TEMP, Workload

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Doc(pw.Schema):
    device_id: str
    group_id: int
    timestamp: str
    max_watts: int
    event_type: int
    obs: pw.Json


def prepare(wl: Workload, batches: Iterator[list[dict[str, Any]]]) -> str:
    return write_jsonl(batches)


def _std(n: int, s: int, sq: int) -> float:
    return math.sqrt((n * sq - s * s) / (n * n))


def run(wl: Workload, path: str) -> tuple[list[Any], float | None]:
    out: list[Any] = []
    first: list[float] = []
    t = pw.io.jsonlines.read(path, schema=Doc, mode="static")
    t = t.select(
        *pw.this,
        ts=pw.this.timestamp.dt.strptime("%Y-%m-%dT%H:%M:%S.%f%z"),
        temp=pw.unwrap(pw.this.obs["temp"].as_int()),
        watts=pw.unwrap(pw.this.obs["watts"].as_int()),
    )
    if wl.windowed:
        if wl.kind == "tumbling":
            window = pw.temporal.tumbling(duration=timedelta(milliseconds=wl.size_ms), origin=EPOCH)
        else:
            window = pw.temporal.sliding(
                hop=timedelta(milliseconds=wl.hop_ms), duration=timedelta(milliseconds=wl.size_ms), origin=EPOCH
            )
        res = t.windowby(t.ts, window=window, instance=t.group_id).reduce(
            start=pw.this._pw_window_start,
            group_id=pw.this._pw_instance,
            mn=pw.reducers.min(pw.this.temp),
            mx=pw.reducers.max(pw.this.temp),
            n=pw.reducers.count(),
            s=pw.reducers.sum(pw.this.temp),
            sq=pw.reducers.sum(pw.this.temp * pw.this.temp),
        )
        res = res.select(
            pw.this.start,
            pw.this.group_id,
            pw.this.mn,
            pw.this.mx,
            avg=pw.this.s / pw.this.n,
            std=pw.apply(_std, pw.this.n, pw.this.s, pw.this.sq),
        )
        cols = ["start", "group_id", "mn", "mx", "avg", "std"]
    else:
        res = t.filter((pw.this.event_type == 0) & (pw.this.temp >= C_MIN_TEMP)).select(
            pw.this.device_id,
            pw.this.group_id,
            pw.this.ts,
            pw.this.temp,
            hot=pw.this.temp >= C_HOT_TEMP,
            pct=pw.this.watts / pw.this.max_watts,
        )
        cols = ["device_id", "group_id", "ts", "temp", "hot", "pct"]

    def on_change(key: Any, row: dict[str, Any], time: int, is_addition: bool) -> None:
        if not first:
            first.append(perf_counter())
        out.append((is_addition, tuple(row[c] for c in cols)))

    pw.io.subscribe(res, on_change=on_change)
    try:
        pw.run(monitoring_level=pw.MonitoringLevel.NONE)
    finally:
        os.unlink(path)
    return out, first[0] if first else None


def _ms(dt: Any) -> int:
    if isinstance(dt, datetime):
        return int(dt.timestamp()) * 1000 + dt.microsecond // 1000
    return int(dt.value // 1_000_000)  # pandas Timestamp


def to_rows(wl: Workload, out: list[Any]) -> list[Any]:
    # Keep the final state: an addition not retracted later.
    live: dict[Any, int] = {}
    for add, row in out:
        live[row] = live.get(row, 0) + (1 if add else -1)
    rows = [r for r, c in live.items() for _ in range(c)]
    if wl.windowed:
        return [(_ms(s), int(g), int(mn), int(mx), float(avg), float(std)) for s, g, mn, mx, avg, std in rows]
    return [(dev, int(g), _ms(ts), int(temp), bool(hot), float(pct)) for dev, g, ts, temp, hot, pct in rows]
