"""(d) A plain single-threaded Python loop: the reference every engine is checked against,
and the practical ceiling for Python.

It implements ASP's event-time rules directly (docs/semantics.md#time-and-windows): one watermark (the largest
event time seen, one source partition); a document is late, and dropped, when its window's
``end + allowedLateness`` is already at or below the watermark; a window closes when the
watermark reaches ``end + allowedLateness``; end of input closes every window.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from bench.workloads import C_HOT_TEMP, C_MIN_TEMP, LATENESS_MS, Workload

WindowRow = tuple[int, int, int, int, float, float]


class Stats:
    """Late documents seen by the last run (must be 0 for the comparisons to hold)."""

    late = 0


def _finish(start: int, table: dict[int, list[int]], out: list[WindowRow]) -> None:
    for g, (n, s, sq, mn, mx) in table.items():
        # Exact integer variance, rounded once (what MongoDB's $stdDevPop returns for ints).
        out.append((start, g, mn, mx, s / n, math.sqrt((n * sq - s * s) / (n * n))))


def run_windows(wl: Workload, batches: Iterable[list[dict[str, Any]]]) -> tuple[list[WindowRow], float | None]:
    size, step = wl.size_ms, wl.step_ms
    lateness = LATENESS_MS
    windows: dict[int, dict[int, list[int]]] = {}
    out: list[WindowRow] = []
    first: float | None = None
    wm = -(2**62)
    next_close = 2**62  # smallest open window's end + lateness
    late = 0
    fromiso = datetime.fromisoformat
    key = wl.key
    for batch in batches:
        for doc in batch:
            dt = fromiso(doc["timestamp"])
            t = int(dt.timestamp()) * 1000 + dt.microsecond // 1000
            last = t - t % step
            s = last
            g = doc[key]
            temp = doc["obs"]["temp"]
            # every window [s, s + size) holding t, newest first
            while s + size > t:
                if s + size + lateness <= wm:
                    late += 1
                else:
                    table = windows.get(s)
                    if table is None:
                        table = windows[s] = {}
                        if s + size + lateness < next_close:
                            next_close = s + size + lateness
                    acc = table.get(g)
                    if acc is None:
                        table[g] = [1, temp, temp * temp, temp, temp]
                    else:
                        acc[0] += 1
                        acc[1] += temp
                        acc[2] += temp * temp
                        if temp < acc[3]:
                            acc[3] = temp
                        elif temp > acc[4]:
                            acc[4] = temp
                s -= step
            if t > wm:
                wm = t
                if wm >= next_close:
                    for start in sorted(windows):
                        if start + size + lateness > wm:
                            break
                        _finish(start, windows.pop(start), out)
                        if first is None:
                            first = time.perf_counter()
                    next_close = min(windows) + size + lateness if windows else 2**62
    for start in sorted(windows):
        _finish(start, windows.pop(start), out)
        if first is None:
            first = time.perf_counter()
    Stats.late = late
    return out, first


OffpathRow = tuple[int, str, int, float, list[int], list[int]]


def run_offpath(wl: Workload, batches: Iterable[list[dict[str, Any]]]) -> tuple[list[OffpathRow], float | None]:
    """Workload E: ``$match {event_type: 0}``, ``wattsPct = watts / max_watts``, then per
    3 s window and ``"<device_id>-<group_id>"``: count, max of wattsPct, the set of temps
    and the list of watts in arrival order. The watermark moves with every document,
    matched or not (it comes from the source's timeField, before any stage)."""
    size = wl.size_ms
    lateness = LATENESS_MS
    windows: dict[int, dict[str, list[Any]]] = {}
    out: list[OffpathRow] = []
    first: float | None = None
    wm = -(2**62)
    next_close = 2**62
    late = 0
    fromiso = datetime.fromisoformat
    for batch in batches:
        for doc in batch:
            dt = fromiso(doc["timestamp"])
            t = int(dt.timestamp()) * 1000 + dt.microsecond // 1000
            if doc["event_type"] == 0:
                s = t - t % size
                if s + size + lateness <= wm:
                    late += 1
                else:
                    table = windows.get(s)
                    if table is None:
                        table = windows[s] = {}
                        if s + size + lateness < next_close:
                            next_close = s + size + lateness
                    obs = doc["obs"]
                    pct = obs["watts"] / doc["max_watts"]
                    temp = obs["temp"]
                    k = f"{doc['device_id']}-{doc['group_id']}"
                    acc = table.get(k)
                    if acc is None:
                        table[k] = [1, pct, {temp: None}, [obs["watts"]]]
                    else:
                        acc[0] += 1
                        if pct > acc[1]:
                            acc[1] = pct
                        acc[2][temp] = None
                        acc[3].append(obs["watts"])
            if t > wm:
                wm = t
                if wm >= next_close:
                    for start in sorted(windows):
                        if start + size + lateness > wm:
                            break
                        out.extend((start, k, a[0], a[1], list(a[2]), a[3]) for k, a in windows.pop(start).items())
                        if first is None:
                            first = time.perf_counter()
                    next_close = min(windows) + size + lateness if windows else 2**62
    for start in sorted(windows):
        out.extend((start, k, a[0], a[1], list(a[2]), a[3]) for k, a in windows.pop(start).items())
        if first is None:
            first = time.perf_counter()
    Stats.late = late
    return out, first


StatelessRow = tuple[str, int, int, int, bool, float]


def run_stateless(wl: Workload, batches: Iterable[list[dict[str, Any]]]) -> tuple[list[dict[str, Any]], float | None]:
    out: list[dict[str, Any]] = []
    first: float | None = None
    fromiso = datetime.fromisoformat
    for batch in batches:
        for doc in batch:
            obs = doc["obs"]
            temp = obs["temp"]
            if doc["event_type"] == 0 and temp >= C_MIN_TEMP:
                out.append(
                    {
                        "device_id": doc["device_id"],
                        "group_id": doc["group_id"],
                        "ts": fromiso(doc["timestamp"]),
                        "temp": temp,
                        "wattsPct": obs["watts"] / doc["max_watts"],
                        "hot": temp >= C_HOT_TEMP,
                    }
                )
        if first is None and out:
            first = time.perf_counter()
    return out, first


def run(wl: Workload, batches: Iterable[list[dict[str, Any]]]) -> tuple[list[Any], float | None]:
    if wl.shape == "offpath":
        return run_offpath(wl, batches)
    if wl.windowed:
        return run_windows(wl, batches)
    return run_stateless(wl, batches)


def to_rows(wl: Workload, out: list[Any]) -> list[Any]:
    if wl.windowed:
        return out
    return [
        (d["device_id"], d["group_id"], _ms(d["ts"]), d["temp"], d["hot"], d["wattsPct"]) for d in out
    ]


def _ms(dt: datetime) -> int:
    return int(dt.timestamp()) * 1000 + dt.microsecond // 1000
