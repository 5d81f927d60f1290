"""Hopping windows folded by pane (docs/windows.md): each document is folded once into
its pane (gcd(interval, hop) wide) and windows are merged from panes when they close.
Lateness stays per document and per window (docs/windows.md): the outputs and DLQ
documents must be those of folding every document into each of its windows."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.testing import (
    AbortExecution,  # type: ignore[attr-defined]
    TestingSink,
    TestingSource,
    run_main,
)

from sinks.dlq import LATE_REASON
from translator import metrics
from translator.compile import build_flow, compile_pipeline
from translator.options import ProcessorOptions
from translator.runtime import Plan
from translator.testing import run_pipeline
from translator.windows import ACTIVE, DLQ, IDLE, OUT, CloseLogic, WindowPlan

T0 = datetime(2024, 8, 8, 23, 8, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(milliseconds=round(seconds * 1000))


def ms(seconds: float) -> int:
    return int(at(seconds).timestamp() * 1000)


GROUP = {"$group": {"_id": "$g", "n": {"$count": {}}, "sum": {"$sum": "$x"}, "lo": {"$min": "$x"}, "hi": {"$max": "$x"}}}
SOURCE = {"$source": {"documents": [], "timeField": {"$toDate": "$t"}}}


def hopping(size_s: int, hop_s: int, lateness_s: int | None = None, pipeline: list[Any] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "interval": {"size": size_s, "unit": "second"},
        "hopSize": {"size": hop_s, "unit": "second"},
        "pipeline": pipeline or [GROUP],
    }
    if lateness_s is not None:
        spec["allowedLateness"] = {"size": lateness_s, "unit": "second"}
    return {"$hoppingWindow": spec}


def doc(g: str, x: int, s: float) -> tuple[dict[str, Any], int]:
    return ({"g": g, "x": x, "t": at(s)}, 0)


def row(d: dict[str, Any]) -> tuple[Any, ...]:
    """(window start s, window end s, group, n, sum, min, max) of a result document."""
    w = d["_stream_meta"]["window"]
    return ((w["start"] - T0).total_seconds(), (w["end"] - T0).total_seconds(), d["_id"], d["n"], d["sum"], d["lo"], d["hi"])


def late_row(d: dict[str, Any]) -> tuple[Any, ...]:
    assert d["errInfo"] == {"reason": LATE_REASON}
    return (d["doc"]["x"], [(m - T0).total_seconds() for m in d["missedWindowStartTimes"]])


# ---- a scripted multi-partition source ---------------------------------------------


class _Scripted(FixedPartitionedSource[Any, None]):
    """Partitions replaying scripted batches, then ending (``eof``) or aborting."""

    def __init__(self, script: dict[str, list[Any]], eof: bool) -> None:
        self.script = script
        self.eof = eof

    def list_parts(self) -> list[str]:
        return list(self.script)

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> StatefulSourcePartition[Any, None]:
        script = list(self.script[for_part])
        eof = self.eof

        class Part(StatefulSourcePartition[Any, None]):
            def next_batch(self) -> list[Any]:
                if not script:
                    if eof:
                        raise StopIteration()
                    raise AbortExecution()
                return [(for_part, script.pop(0))]

            def snapshot(self) -> None:
                return None

        return Part()


def run_scripted(
    window: dict[str, Any], script: dict[str, list[Any]], eof: bool = True
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    options = ProcessorOptions(name="t")
    p = compile_pipeline([SOURCE, window], options=options, check_sink_connection=False)
    out: list[list[dict[str, Any]]] = []
    dlq: list[list[dict[str, Any]]] = []
    flow = build_flow(p, options, source=_Scripted(script, eof), output_sink=TestingSink(out), dlq_sink=TestingSink(dlq))
    run_main(flow)
    return [d for b in out for d in b], [d for b in dlq for d in b]


# ---- an independent reference: every document into each of its windows ------------


def reference(
    size: float, hop: float, lateness: float, script: dict[str, list[list[tuple[dict[str, Any], int]]]]
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """ASP's rules spelled out per document and window, in seconds (all on a 1 ms grid):
    each partition's watermark is the largest event time it has seen."""
    items: list[tuple[str, int, float, float]] = []
    for batches in script.values():
        wm = float("-inf")
        for batch in batches:
            for d, _ in batch:
                t = (d["t"] - T0).total_seconds()
                items.append((d["g"], d["x"], t, wm))
                wm = max(wm, t)
    return reference_items(size, hop, lateness, items)


def reference_items(
    size: float, hop: float, lateness: float, items: list[tuple[str, int, float, float]]
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """``items``: (group, x, event time, watermark before it). Every document goes into
    each of its windows that is still open for it; the others are listed as missed."""
    windows: dict[tuple[float, str], list[int]] = {}
    late: list[tuple[Any, ...]] = []
    for g, x, t, wm in items:
        k = int(t // hop)
        starts = []
        while k * hop + size > t:
            starts.append(float(k * hop))
            k -= 1
        starts.reverse()
        missed = [s for s in starts if s + size + lateness <= wm]
        if missed:
            late.append((x, missed))
        for s in starts:
            if s not in missed:
                windows.setdefault((s, g), []).append(x)
    rows = [(s, s + size, g, len(xs), sum(xs), min(xs), max(xs)) for (s, g), xs in windows.items()]
    return sorted(rows), sorted(late)


# ---- the plan: panes, pane_start, earliest_start -------------------------------------


def window_plan(window: dict[str, Any]) -> WindowPlan:
    plan = Plan.compile(compile_pipeline([SOURCE, window], check_sink_connection=False), ProcessorOptions(name="t"))
    assert plan.window is not None
    return plan.window


def test_pane_is_gcd_of_interval_and_hop_and_earliest_start_is_the_oldest_window() -> None:
    p = window_plan(hopping(10, 4))
    assert p.panes and p.pane_ms == 2000
    assert p.pane_start(ms(5.5)) == ms(4) and p.pane_start(ms(4)) == ms(4) and p.pane_start(ms(3.999)) == ms(2)
    # Windows of 10 s every 4 s containing t = 5.5 s start at -4, 0, 4.
    assert p.earliest_start(ms(5.5)) == ms(-4)
    assert p.earliest_start(ms(5.999)) == ms(-4) and p.earliest_start(ms(6)) == ms(0)  # [-4, 6) ends at 6
    b = window_plan(hopping(10, 2))
    assert b.pane_ms == 2000 and b.earliest_start(ms(9.999)) == ms(0) and b.earliest_start(ms(10)) == ms(2)
    # hop > interval: 1 s windows every 3 s; t = 1.5 s is in none (earliest start > t).
    g = window_plan(hopping(1, 3))
    assert g.pane_ms == 1000 and g.earliest_start(ms(0.5)) == ms(0) and g.earliest_start(ms(1.5)) > ms(1.5)
    t = window_plan({"$tumblingWindow": {"interval": {"size": 3, "unit": "second"}, "pipeline": [GROUP]}})
    assert t.panes and t.pane_ms == 3000 and t.pane_start(ms(5)) == ms(3) == t.earliest_start(ms(5))


def test_order_sensitive_accumulators_and_window_meta_keep_per_window_partials() -> None:
    push = window_plan(hopping(4, 2, pipeline=[{"$group": {"_id": "$g", "xs": {"$push": "$x"}}}]))
    assert not push.panes and not hasattr(push, "pane_ms")
    meta = window_plan(hopping(4, 2, pipeline=[{"$group": {"_id": {"$meta": "stream.window.start"}, "n": {"$sum": 1}}}]))
    assert not meta.panes
    pre = window_plan(hopping(4, 2, pipeline=[{"$addFields": {"w": {"$meta": "stream.window.end"}}}, GROUP]))
    assert not pre.panes
    assert not window_plan(hopping(4, 2, pipeline=[{"$project": {"x": 1}}])).panes  # no $group
    assert window_plan(hopping(4, 2)).panes


def test_fold_gives_one_partial_per_pane_and_late_documents_a_from_start() -> None:
    p = window_plan(hopping(10, 2, lateness_s=1))
    late: list[tuple[Any, ...]] = []
    recs: list[Any] = [
        ({"g": "a", "x": 1}, (ms(12.5), ms(12))),  # windows 4..12, all open
        ({"g": "a", "x": 2}, (ms(13.0), ms(12.5))),  # same pane [12, 14)
        ({"g": "a", "x": 3}, (ms(5.0), ms(13.0))),  # windows -4..4: all but 4 closed (s + 11 <= 13)
        ({"g": "a", "x": 4}, (ms(0.5), ms(13.0))),  # windows -8..0: all closed
    ]
    parts = p.fold(recs, lambda r, d, **kw: late.append((d["x"], [(m - T0).total_seconds() for m in kw["missedWindowStartTimes"]])))
    assert late == [(3, [-4.0, -2.0, 0.0, 2.0]), (4, [-8.0, -6.0, -4.0, -2.0, 0.0])]
    (tables,) = parts.values()
    # Pane [12,14) for every window containing it; pane [4,6) only from window 4 on.
    assert list(tables) == [ms(12), (ms(4), ms(4))]
    assert [e[1] for e in tables[ms(12)].values()] == [2]  # $count of the two documents, once
    assert [e[1] for e in tables[(ms(4), ms(4))].values()] == [1]


# ---- end to end: two partitions, out of order, partially late ----------------------


SCRIPT: dict[str, list[Any]] = {
    "p0": [
        [doc("a", 1, 0.5), doc("b", 2, 3.0)],
        [doc("a", 3, 7.5), doc("b", 4, 6.1)],  # out of order within the batch
        [doc("a", 5, 2.5), doc("b", 6, 4.5)],  # 2.5: late for [0,4) and [2,6); 4.5: late for [2,6) only
        [doc("a", 7, 9.0)],
    ],
    "p1": [
        [doc("b", 10, 1.0)],
        [doc("a", 20, 5.9)],
        [doc("b", 30, 0.2), doc("a", 40, 2.1)],  # 0.2: late for [-2,2), [0,4); 2.1: late for [0,4) only
        [doc("b", 50, 3.9), doc("a", 60, 8.0)],  # 3.9 at watermark 5.9: [0,4) (5 <= 5.9) late, [2,6) open
    ],
}


def test_two_partitions_out_of_order_and_partially_late_documents() -> None:
    out, dlq = run_scripted(hopping(4, 2, lateness_s=1), SCRIPT)
    expected_rows = [
        (-2.0, 2.0, "a", 1, 1, 1, 1),
        (-2.0, 2.0, "b", 1, 10, 10, 10),
        (0.0, 4.0, "a", 1, 1, 1, 1),
        (0.0, 4.0, "b", 2, 12, 2, 10),
        (2.0, 6.0, "a", 2, 60, 20, 40),
        (2.0, 6.0, "b", 2, 52, 2, 50),
        (4.0, 8.0, "a", 2, 23, 3, 20),
        (4.0, 8.0, "b", 2, 10, 4, 6),
        (6.0, 10.0, "a", 3, 70, 3, 60),
        (6.0, 10.0, "b", 1, 4, 4, 4),
        (8.0, 12.0, "a", 2, 67, 7, 60),
    ]
    expected_late = [(5, [0.0, 2.0]), (6, [2.0]), (30, [-2.0, 0.0]), (40, [0.0]), (50, [0.0])]
    assert reference(4, 2, 1, SCRIPT) == (expected_rows, expected_late)
    assert sorted(row(d) for d in out) == expected_rows
    assert sorted(late_row(d) for d in dlq) == expected_late
    # Each group's windows leave in start order (a group lives in one bucket).
    for g in "ab":
        starts = [row(d)[0] for d in out if d["_id"] == g]
        assert starts == sorted(starts)


def test_hop_that_does_not_divide_the_interval() -> None:
    """10 s windows every 4 s: 2 s panes, a window is 5 panes, a pane is in 2 or 3 windows."""
    script: dict[str, list[Any]] = {
        "p0": [[doc("a", i, i * 0.7) for i in range(0, 15)], [doc("a", 100, 3.3)], [doc("b", 7, 21.0)],
               [doc("a", 101, 13.9), doc("a", 102, 14.0)]],
        "p1": [[doc("b", i, 20 - i * 1.3) for i in range(0, 12)]],
    }
    out, dlq = run_scripted(hopping(10, 4, lateness_s=2), script)
    rows, late = reference(10, 4, 2, script)
    assert sorted(row(d) for d in out) == rows
    assert sorted(late_row(d) for d in dlq) == late
    assert len(late) == 13
    # At p0's watermark 21 s, 13.9 s is late for [4,14) and [8,18) (end + 2 <= 21) but
    # counts in [12,22); 14.0 s is only in [8,18) (late) and [12,22).
    assert (101, [4.0, 8.0]) in late and (102, [8.0]) in late
    assert (8.0, 18.0, "a", 3, 39, 12, 14) in rows and (12.0, 22.0, "a", 2, 203, 101, 102) in rows
    # p1 runs backwards from 20 s: 11.0 s is late for three windows, 17.4 s for one.
    assert (11, [-4.0, 0.0, 4.0]) in late and (2, [8.0]) in late


def test_hopping_without_end_of_input_closes_by_the_minimum_watermark() -> None:
    script: dict[str, list[Any]] = {
        # A poll with no documents ends each script: a quiet source, so the partition
        # sends what it holds (see runtime._IngestPartition) before the run aborts.
        "p0": [[doc("a", 1, 1.0)], [doc("a", 2, 9.0)], [doc("a", 3, 30.0)], [], [], []],
        "p1": [[doc("b", 5, 2.0)], [doc("b", 6, 9.5)], [], [], []],  # p1's watermark 9.5 holds windows back
    }
    out, dlq = run_scripted(hopping(4, 2, lateness_s=1), script, eof=False)
    assert dlq == []
    # Closed: windows with end + 1 <= 9.5, i.e. starts -2, 0, 2 (4 + 4 + 1 = 9 <= 9.5).
    assert sorted(row(d) for d in out) == [
        (-2.0, 2.0, "a", 1, 1, 1, 1),
        (0.0, 4.0, "a", 1, 1, 1, 1),
        (0.0, 4.0, "b", 1, 5, 5, 5),
        (2.0, 6.0, "b", 1, 5, 5, 5),
    ]


def test_run_pipeline_hopping_matches_reference_with_late_data() -> None:
    docs = [{"g": "ab"[i % 2], "x": i, "t": at((i * 7919) % 50 / 2)} for i in range(120)]
    result = run_pipeline([{"$source": {"documents": docs, "timeField": {"$toDate": "$t"}}}, hopping(6, 2, lateness_s=3)])
    script = {"p": [[({**d}, 0) for d in docs]]}
    rows, late = reference(6, 2, 3, script)
    assert late and rows
    assert sorted(row(d) for d in result.output) == rows
    assert sorted(late_row(d) for d in result.dlq) == late


# ---- CloseLogic: panes, resume, late partials, state figures ------------------------


def close_logic(window: dict[str, Any], partitions: list[str], resume: bytes | None = None) -> tuple[WindowPlan, CloseLogic, Plan]:
    plan = Plan.compile(compile_pipeline([SOURCE, window], check_sink_connection=False), ProcessorOptions(name="t"))
    assert plan.window is not None
    return plan.window, CloseLogic(plan.window, partitions, plan.dlq_doc, resume, plan.after), plan


def feed(wp: WindowPlan, logic: CloseLogic, part: str, wm: float, docs: list[tuple[str, int, float, float]]) -> list[Any]:
    """Fold (group, x, t, watermark before) records and hand every bucket's partial over."""
    recs: list[Any] = [({"g": g, "x": x}, (ms(t), ms(w))) for g, x, t, w in docs]
    partials = wp.fold(recs, lambda *a, **k: None)
    msgs: list[Any] = [(part, ms(wm), p, ACTIVE) for p in partials.values()] or [(part, ms(wm), None, ACTIVE)]
    res, _ = logic.on_batch(msgs)
    return res


def outs(res: list[Any]) -> list[tuple[Any, ...]]:
    return [row(d) for tag, docs in res if tag == OUT for d in docs]


BATCHES: list[tuple[str, float, list[tuple[str, int, float, float]]]] = [
    ("p0", 3.0, [("a", 1, 0.5, -9), ("b", 2, 3.0, 0.5)]),
    ("p1", 2.5, [("a", 10, 2.5, -9)]),
    ("p0", 7.0, [("a", 3, 7.0, 3.0), ("b", 4, 5.5, 7.0)]),
    ("p1", 6.5, [("b", 20, 6.5, 2.5), ("a", 30, 3.5, 6.5)]),
    ("p0", 12.0, [("a", 5, 12.0, 7.0)]),
    ("p1", 11.0, [("a", 40, 11.0, 6.5)]),
]


def test_resume_from_a_snapshot_mid_window_gives_the_same_windows() -> None:
    window = hopping(4, 2, lateness_s=0)
    wp, whole, _ = close_logic(window, ["p0", "p1"])
    straight = [r for part, wm, docs in BATCHES for r in outs(feed(wp, whole, part, wm, docs))]
    straight += outs(whole.on_eof()[0])

    wp, first, _ = close_logic(window, ["p0", "p1"])
    got = [r for part, wm, docs in BATCHES[:3] for r in outs(feed(wp, first, part, wm, docs))]
    assert first.windows  # panes are open mid-window
    state = first.snapshot()
    closed = first.closed_upto
    wp2, resumed, _ = close_logic(window, ["p0", "p1"], pickle.loads(pickle.dumps(state)))
    assert resumed.closed_upto == closed and resumed.windows == pickle.loads(state)[1]
    got += [r for part, wm, docs in BATCHES[3:] for r in outs(feed(wp2, resumed, part, wm, docs))]
    got += outs(resumed.on_eof()[0])
    assert got == straight
    assert [r[0] for r in got] == sorted(r[0] for r in got)  # start order
    # 3.5 s at watermark 6.5 s misses [0,4) and [2,6); 5.5 s at 7 s misses [2,6) only.
    expected = [
        (-2.0, 2.0, "a", 1, 1, 1, 1),
        (0.0, 4.0, "a", 2, 11, 1, 10),
        (0.0, 4.0, "b", 1, 2, 2, 2),
        (2.0, 6.0, "a", 1, 10, 10, 10),
        (2.0, 6.0, "b", 1, 2, 2, 2),
        (4.0, 8.0, "a", 1, 3, 3, 3),
        (4.0, 8.0, "b", 2, 24, 4, 20),
        (6.0, 10.0, "a", 1, 3, 3, 3),
        (6.0, 10.0, "b", 1, 20, 20, 20),
        (8.0, 12.0, "a", 1, 40, 40, 40),
        (10.0, 14.0, "a", 2, 45, 5, 40),
        (12.0, 16.0, "a", 1, 5, 5, 5),
    ]
    items = [i for _, _, docs in BATCHES for i in docs]
    assert reference_items(4, 2, 0, items) == (expected, [(4, [2.0]), (30, [0.0, 2.0])])
    assert sorted(got) == expected
    assert whole.windows == {} and resumed.windows == {}


def test_panes_are_dropped_after_their_last_window_and_shared_panes_are_not_mutated() -> None:
    wp, logic, _ = close_logic(hopping(6, 2, lateness_s=0), ["p0"])
    res = feed(wp, logic, "p0", 5.0, [("a", 1, 0.5, -9), ("a", 2, 2.5, 0.5), ("a", 3, 5.0, 2.5)])
    assert outs(res) == [(-4.0, 2.0, "a", 1, 1, 1, 1), (-2.0, 4.0, "a", 2, 3, 1, 2)]
    assert sorted(logic.windows) == [ms(0), ms(2), ms(4)]
    # Watermark 6: window [0,6) closes; pane [0,2) was in its last window, [2,4) and [4,6) stay.
    res = feed(wp, logic, "p0", 6.0, [])
    assert outs(res) == [(0.0, 6.0, "a", 3, 6, 1, 3)]
    assert sorted(logic.windows) == [ms(2), ms(4)]
    assert logic.closed_upto == ms(0)
    res = feed(wp, logic, "p0", 8.0, [])
    # [2,8) holds the same pane states again: the merge into [0,6) did not change them.
    assert outs(res) == [(2.0, 8.0, "a", 2, 5, 2, 3)]
    assert sorted(logic.windows) == [ms(4)]
    assert outs(logic.on_eof()[0]) == [(4.0, 10.0, "a", 1, 3, 3, 3)]
    assert logic.windows == {}


def test_partial_for_a_pane_whose_windows_partly_closed_goes_to_dlq_per_closed_window() -> None:
    """p1 goes idle; p0's watermark closes windows; p1 resumes with an old document."""
    wp, logic, _ = close_logic(hopping(4, 2, lateness_s=0), ["p0", "p1"])
    feed(wp, logic, "p1", 1.0, [("b", 1, 1.0, -9)])
    logic.on_batch([("p1", ms(1.0), None, IDLE)])
    res = feed(wp, logic, "p0", 6.0, [("a", 2, 5.0, -9), ("a", 3, 6.0, 5.0)])
    assert outs(res) == [(-2.0, 2.0, "b", 1, 1, 1, 1), (0.0, 4.0, "b", 1, 1, 1, 1), (2.0, 6.0, "a", 1, 2, 2, 2)]
    assert logic.closed_upto == ms(2)
    # t = 3.5 s (watermark of p1 1 s: on time there) is in [0,4) and [2,6), both closed,
    # and t = 4.5 s in [2,6) (closed) and [4,8) (open): it still counts in [4,8).
    res = feed(wp, logic, "p1", 4.5, [("b", 7, 3.5, 1.0), ("b", 8, 4.5, 3.5), ("c", 9, 4.6, 4.5)])
    late = [(d["doc"]["_id"], d["doc"]["n"], d["doc"]["sum"], [(m - T0).total_seconds() for m in d["missedWindowStartTimes"]])
            for tag, docs in res if tag == DLQ for d in docs]
    assert sorted(late) == sorted([("b", 1, 7, [0.0]), ("b", 2, 15, [2.0]), ("c", 1, 9, [2.0])])
    assert all(d["errInfo"] == {"reason": LATE_REASON} for tag, docs in res if tag == DLQ for d in docs)
    assert outs(res) == []
    assert outs(logic.on_eof()[0]) == [
        (4.0, 8.0, "a", 2, 5, 2, 3), (4.0, 8.0, "b", 1, 8, 8, 8), (4.0, 8.0, "c", 1, 9, 9, 9), (6.0, 10.0, "a", 1, 3, 3, 3)
    ]


@pytest.fixture
def enabled() -> Iterator[None]:
    metrics.reset()
    metrics.enable()
    yield
    metrics.disable()
    metrics.reset()


def test_state_figures_count_open_windows_and_pane_entries(enabled: None) -> None:
    wp, logic, _ = close_logic(hopping(10, 2, lateness_s=0), ["p0"])
    feed(wp, logic, "p0", 3.0, [("a", 1, 0.5, -9), ("b", 2, 3.0, 0.5)])
    # Panes [0,2) {a} and [2,4) {b}; [-8,2) closed at watermark 3 s: open windows start
    # at -6 .. 2 (5 windows), 2 (pane, group) entries.
    assert metrics.window_state() == {wp.stage.path: (5, 2, ms(-6), ms(2))}
    feed(wp, logic, "p0", 11.0, [])  # windows -6 .. 0 close (end <= 11)
    assert metrics.window_state() == {wp.stage.path: (1, 1, ms(2), ms(2))}
    logic.on_eof()
    assert metrics.window_state() == {}


def test_idle_timeout_closes_a_paused_sources_hopping_windows() -> None:
    """ASP idleTimeout (docs/windows.md) with panes: no end of input, no watermark move."""
    window = hopping(4, 2)
    window["$hoppingWindow"]["idleTimeout"] = {"size": 300, "unit": "ms"}
    options = ProcessorOptions(name="t")
    p = compile_pipeline([SOURCE, window], options=options, check_sink_connection=False)
    part = TestingSource([]).list_parts()[0]
    items: list[Any] = [(part, [doc("a", 1, 1.0), doc("a", 2, 2.5)]), TestingSource.PAUSE(timedelta(seconds=1.5)), TestingSource.ABORT()]
    out: list[list[dict[str, Any]]] = []
    flow = build_flow(p, options, source=TestingSource(items), output_sink=TestingSink(out), dlq_sink=TestingSink([]))
    run_main(flow)
    assert [row(d) for b in out for d in b] == [
        (-2.0, 2.0, "a", 1, 1, 1, 1), (0.0, 4.0, "a", 2, 3, 1, 2), (2.0, 6.0, "a", 1, 2, 2, 2)
    ]


def test_a_document_whose_group_key_fails_goes_to_the_dlq_once_not_once_per_window() -> None:
    pipeline = [{"$group": {"_id": {"$divide": [1, "$z"]}, "n": {"$count": {}}, "sum": {"$sum": "$x"},
                            "lo": {"$min": "$x"}, "hi": {"$max": "$x"}}}]
    docs = [{"z": 1, "x": 5, "t": at(1.0)}, {"z": 0, "x": 6, "t": at(1.5)}]
    result = run_pipeline([{"$source": {"documents": docs, "timeField": {"$toDate": "$t"}}}, hopping(4, 2, pipeline=pipeline)])
    assert [(d["doc"]["x"], d["errInfo"]["reason"].split(":")[0]) for d in result.dlq] == [
        (6, "Failed to process input document in $group stage (pipeline[1].$hoppingWindow)")
    ]
    assert sorted((row(d)[0], d["_id"], d["sum"]) for d in result.output) == [(-2.0, 1.0, 5), (0.0, 1.0, 5)]
