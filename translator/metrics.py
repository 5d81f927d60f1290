"""Optional per-process operator figures for ``stats({verbose: true})``.

ASP reports, per stage, the documents in and out, the DLQ count and the execution
time, and for a window the range of open windows (``operatorStats``, https://www.mongodb.com/docs/atlas/atlas-stream-processing/ops-guide/).
The translator's hot paths call into this module only behind one module-level
boolean check per *batch* (``if metrics.ENABLED:``), so a flow outside the service
pays nothing. The service's child calls :func:`enable` and reads :func:`snapshot`.

Counters are keyed by the stage path (``pipeline[2].$match``); several Bytewax
workers (threads) of one process share them under a lock taken once per batch.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

ENABLED = False

_lock = threading.Lock()
# stage path -> [name, in, out, dlq, seconds]
_stages: dict[str, list[Any]] = {}
# stage path -> extra counters an operator adds to its operatorStats entry (nested
# dicts add up leaf by leaf): $cachedLookup cacheHits/cacheMisses, $throttle's
# throttle.throttledTimeMs / throttle.throttleEvents
_counters: dict[str, dict[str, Any]] = {}
# stage path -> {reason: batches} a fast path handed to the general path
_fallbacks: dict[str, dict[str, int]] = {}
# window-state reporter key (one per close-logic instance) -> (path, open, entries, min, max)
_windows: dict[int, tuple[str, int, int, int | None, int | None]] = {}


def enable() -> None:
    """Turn the hooks on for this process (the service's processor child does)."""
    global ENABLED
    ENABLED = True


def disable() -> None:
    global ENABLED
    ENABLED = False


def reset() -> None:
    with _lock:
        _stages.clear()
        _windows.clear()
        _counters.clear()
        _fallbacks.clear()


def record(stage_path: str, name: str, n_in: int, n_out: int, n_dlq: int, seconds: float) -> None:
    """Add one batch's figures for a stage (cumulative, like ASP's counters)."""
    with _lock:
        st = _stages.get(stage_path)
        if st is None:
            _stages[stage_path] = [name, n_in, n_out, n_dlq, seconds]
        else:
            st[1] += n_in
            st[2] += n_out
            st[3] += n_dlq
            st[4] += seconds


def add_counters(stage_path: str, counts: dict[str, Any]) -> None:
    """Add an operator's own counters (cumulative) to its ``operatorStats`` entry."""
    with _lock:
        _add_into(_counters.setdefault(stage_path, {}), counts)


def _add_into(into: dict[str, Any], counts: dict[str, Any]) -> None:
    for k, v in counts.items():
        if isinstance(v, dict):
            _add_into(into.setdefault(k, {}), v)
        else:
            into[k] = into.get(k, 0) + v


def throttle_totals() -> tuple[int, int]:
    """(``throttledTimeMs``, ``throttleEvents``) summed over the ``$throttle`` stages:
    the processor-level ``stats().throttle``."""
    with _lock:
        ts = [c["throttle"] for c in _counters.values() if isinstance(c.get("throttle"), dict)]
        return sum(int(t.get("throttledTimeMs", 0)) for t in ts), sum(int(t.get("throttleEvents", 0)) for t in ts)


def counters(stage_path: str) -> dict[str, Any]:
    with _lock:
        import copy

        return copy.deepcopy(_counters.get(stage_path, {}))
def fallback(stage_path: str, name: str, reason: str) -> None:
    """Count one batch that an accelerator (group fast path, generated code, fused
    stages) handed to the general path, and why: a bug that sends every batch there
    shows in ``operatorStats``, not only in a benchmark."""
    with _lock:
        if stage_path not in _stages:
            _stages[stage_path] = [name, 0, 0, 0, 0.0]
        reasons = _fallbacks.setdefault(stage_path, {})
        reasons[reason] = reasons.get(reason, 0) + 1


def fallbacks() -> dict[str, dict[str, int]]:
    """Per stage path: {reason: batches handed to the general path}."""
    with _lock:
        return {p: dict(r) for p, r in _fallbacks.items()}


def set_window_state(
    key: int, stage_path: str, open_windows: int, entries: int, min_start: int | None, max_start: int | None
) -> None:
    """Replace one window operator instance's state figures (a gauge, not a counter).

    ``entries`` counts (window, group) entries, or kept documents for a window
    without ``$group``; it is what ``stateSize`` approximates."""
    with _lock:
        if open_windows or entries:
            _windows[key] = (stage_path, open_windows, entries, min_start, max_start)
        else:
            _windows.pop(key, None)


def drop_window_state(key: int) -> None:
    with _lock:
        _windows.pop(key, None)


def state_size() -> int:
    """Approximate state size: (window, group) entries held by all window operators."""
    with _lock:
        return sum(w[2] for w in _windows.values())


def window_state() -> dict[str, tuple[int, int, int | None, int | None]]:
    """Per window stage path: (open windows, entries, min start ms, max start ms).

    Several instances (group buckets, workers) hold the same windows for different
    groups, so the open-window count is the largest instance's, not a sum."""
    out: dict[str, tuple[int, int, int | None, int | None]] = {}
    with _lock:
        for path, n_open, entries, lo, hi in _windows.values():
            cur = out.get(path)
            if cur is None:
                out[path] = (n_open, entries, lo, hi)
                continue
            o, e, clo, chi = cur
            out[path] = (
                max(o, n_open),
                e + entries,
                lo if clo is None else clo if lo is None else min(lo, clo),
                hi if chi is None else chi if hi is None else max(hi, chi),
            )
    return out


def stage_figures() -> dict[str, tuple[str, int, int, int, float]]:
    """Per stage path: (name, in, out, dlq, seconds)."""
    with _lock:
        return {p: (s[0], s[1], s[2], s[3], s[4]) for p, s in _stages.items()}


def measured_chain(
    run: Callable[[tuple[Any, ...], list[Any], Callable[[str, Any], None], Any], list[Any]],
    steps: tuple[Any, ...],
    recs: list[Any],
    dlq: Callable[[str, Any], None],
    vars_: Any,
) -> list[Any]:
    """``run_chain`` with per-step figures: the same runner, one step at a time.

    Only used while enabled; the DLQ callback is wrapped once per step and batch."""
    for st in steps:
        if not recs:
            return recs
        dropped = [0]

        def counting(reason: str, doc: Any, _n: list[int] = dropped) -> None:
            _n[0] += 1
            dlq(reason, doc)

        n_in = len(recs)
        t0 = time.perf_counter()
        recs = run((st,), recs, counting, vars_)
        record(st.path, st.name, n_in, len(recs), dropped[0], time.perf_counter() - t0)
    return recs


def operator_stats(pipeline: Any) -> list[dict[str, Any]]:
    """ASP-style ``operatorStats`` for an :class:`translator.ir.Pipeline`, in pipeline order.

    Top-level stages are always listed; a window's inner stages follow it when they
    have run (``$group``/``$sort`` are part of the window operator and not listed)."""
    from translator.mql.values import ms_to_datetime

    figures = stage_figures()
    windows = window_state()
    fell_back = fallbacks()
    out: list[dict[str, Any]] = []

    def entry(path: str, always: bool) -> None:
        f = figures.get(path)
        if f is None and not always:
            return
        name, n_in, n_out, n_dlq, secs = f if f is not None else (path.rsplit(".", 1)[-1], 0, 0, 0, 0.0)
        e: dict[str, Any] = {
            "name": name,
            "inputMessageCount": n_in,
            "outputMessageCount": n_out,
            "dlqMessageCount": n_dlq,
            "executionTimeMillis": int(secs * 1000),
        }
        e.update(counters(path))
        if path in fell_back:
            e["fastPathFallbacks"] = fell_back[path]
        out.append(e)
        inner = getattr(stage_of.get(path), "pipeline", None)
        if inner is not None:
            n_open, entries, lo, hi = windows.get(path, (0, 0, None, None))
            e["stateSize"] = entries
            e["openWindowCount"] = n_open
            e["minOpenWindowStartTime"] = None if lo is None else ms_to_datetime(lo)
            e["maxOpenWindowStartTime"] = None if hi is None else ms_to_datetime(hi)
            for s in inner:
                entry(s.path, False)

    stage_of = {s.path: s for s in pipeline.stages}
    for s in pipeline.stages:
        entry(s.path, True)
    return out


# ---- sink stalls ----------------------------------------------------------------------------
# Writes in progress, registered by the MongoDB sinks around each logical write (one dict
# operation per bulk write, so always on). A write older than STALL_AFTER_S is a stall.

STALL_AFTER_S = 5.0
# key -> [processor, sink, what, started (monotonic), retries, last error]
_waits: dict[int, list[Any]] = {}


def sink_wait_begin(key: int, processor: str, sink: str, what: str) -> None:
    with _lock:
        _waits[key] = [processor, sink, what, time.monotonic(), 0, None]


def sink_wait_retry(key: int, error: str) -> None:
    with _lock:
        w = _waits.get(key)
        if w is not None:
            w[4] += 1
            w[5] = error


def sink_wait_end(key: int) -> None:
    with _lock:
        _waits.pop(key, None)


def sink_stalls(min_s: float | None = None) -> list[dict[str, Any]]:
    """``stats().sinkStalls``: writes waiting longer than ``min_s`` (default STALL_AFTER_S)."""
    limit = STALL_AFTER_S if min_s is None else min_s
    now = time.monotonic()
    with _lock:
        waits = [list(w) for w in _waits.values()]
    return [
        {
            "processor": p,
            "sink": sink,
            "operation": what,
            "waitingMillis": int((now - t0) * 1000),
            "retries": n,
            "lastError": err,
        }
        for p, sink, what, t0, n, err in sorted(waits, key=lambda w: w[3])
        if now - t0 >= limit
    ]
