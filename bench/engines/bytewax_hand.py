"""(c) Idiomatic hand-written Bytewax, the way its docs teach windowing.

One document per item, ``key_on`` the group, ``EventClock`` on the parsed ``timestamp``
waiting ``allowedLateness`` (3 s), ``TumblingWindower`` / ``SlidingWindower`` aligned to the
epoch, ``fold_window`` into ``[n, sum, sum of squares, min, max]``. Workload C is
``filter`` + ``map``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.operators.windowing import EventClock, SlidingWindower, TumblingWindower, fold_window
from bytewax.testing import run_main

from bench.engines.bytewax_io import BatchesSource, Collector, CollectSink, plain_shape
from bench.workloads import C_HOT_TEMP, C_MIN_TEMP, LATENESS_MS, Workload

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _ts(doc: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(doc["timestamp"])


def _build() -> list[float]:
    return [0, 0, 0, math.inf, -math.inf]


def _fold(acc: list[float], doc: dict[str, Any]) -> list[float]:
    t = doc["obs"]["temp"]
    acc[0] += 1
    acc[1] += t
    acc[2] += t * t
    if t < acc[3]:
        acc[3] = t
    if t > acc[4]:
        acc[4] = t
    return acc


def _merge(a: list[float], b: list[float]) -> list[float]:
    return [a[0] + b[0], a[1] + b[1], a[2] + b[2], min(a[3], b[3]), max(a[4], b[4])]


def _keep(doc: dict[str, Any]) -> bool:
    return doc["event_type"] == 0 and doc["obs"]["temp"] >= C_MIN_TEMP


def _shape(doc: dict[str, Any]) -> dict[str, Any]:
    temp = doc["obs"]["temp"]
    return {
        "device_id": doc["device_id"],
        "group_id": doc["group_id"],
        "ts": _ts(doc),
        "temp": temp,
        "wattsPct": doc["obs"]["watts"] / doc["max_watts"],
        "hot": temp >= C_HOT_TEMP,
    }


def _stats(kv: tuple[str, tuple[int, list[float]]], step_ms: int) -> tuple[int, int | str, int, int, float, float]:
    key, (wid, (n, s, sq, mn, mx)) = kv
    n, s, sq = int(n), int(s), int(sq)
    return (wid * step_ms, key, int(mn), int(mx), s / n, math.sqrt((n * sq - s * s) / (n * n)))


def make_flow(wl: Workload, batches: Iterator[list[dict[str, Any]]], col: Collector, late: Collector) -> Dataflow:
    flow = Dataflow("bench_bytewax")
    docs = op.input("in", flow, BatchesSource(["p0"], lambda i: batches, plain_shape))
    if not wl.windowed:
        out = op.map("shape", op.filter("match", docs, _keep), _shape)
        op.output("out", out, CollectSink(col, flatten=False))
        return flow
    add_windows(wl, docs, col, late)
    return flow


def add_windows(wl: Workload, docs: op.Stream[dict[str, Any]], col: Collector, late: Collector) -> None:
    """The windowed part of (c), from a stream of documents (also (kb)'s, from Kafka)."""
    if wl.shape == "offpath":
        raise RuntimeError("workload E is not written for hand-written Bytewax")
    field = wl.key
    keyed = op.key_on("key", docs, lambda d: str(d[field]))
    clock = EventClock(_ts, wait_for_system_duration=timedelta(milliseconds=LATENESS_MS))
    windower: TumblingWindower | SlidingWindower
    if wl.kind == "tumbling":
        windower = TumblingWindower(length=timedelta(milliseconds=wl.size_ms), align_to=EPOCH)
    else:
        windower = SlidingWindower(
            length=timedelta(milliseconds=wl.size_ms), offset=timedelta(milliseconds=wl.hop_ms), align_to=EPOCH
        )
    wo = fold_window("fold", keyed, clock, windower, _build, _fold, _merge)
    step = wl.step_ms
    op.output("out", op.map("stats", wo.down, lambda kv: _stats(kv, step)), CollectSink(col, flatten=False))
    op.output("late", wo.late, CollectSink(late, flatten=False))


def run(wl: Workload, batches: Iterator[list[dict[str, Any]]]) -> tuple[list[Any], float | None]:
    col, late = Collector(), Collector()
    run_main(make_flow(wl, batches, col, late))
    if late.items:
        raise RuntimeError(f"Bytewax reported {len(late.items)} late items")
    return col.items, col.first


def to_rows(wl: Workload, out: list[Any]) -> list[Any]:
    if not wl.windowed:
        return [(d["device_id"], d["group_id"], _ms(d["ts"]), d["temp"], d["hot"], d["wattsPct"]) for d in out]
    return out


def _ms(dt: datetime) -> int:
    return int(dt.timestamp()) * 1000 + dt.microsecond // 1000
