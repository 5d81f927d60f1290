"""translator.metrics: per-stage figures (``operatorStats``) and window state
(``stateSize``, open-window range) recorded by the run_chain / window hooks."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from translator import metrics
from translator.compile import compile_pipeline
from translator.runtime import Plan
from translator.testing import run_pipeline
from translator.windows import ACTIVE, OUT, CloseLogic

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def at(s: float) -> datetime:
    return T0 + timedelta(seconds=s)


def ms(s: float) -> int:
    return int(at(s).timestamp() * 1000)


@pytest.fixture
def enabled() -> Iterator[None]:
    metrics.reset()
    metrics.enable()
    yield
    metrics.disable()
    metrics.reset()


PIPELINE: list[dict[str, Any]] = [
    {"$source": {"documents": [{"v": v, "t": at(v)} for v in range(10)], "timeField": {"$toDate": "$t"}}},
    # v = 0, 1 make $replaceRoot fail: two documents to the DLQ.
    {"$replaceRoot": {"newRoot": {"$cond": [{"$lt": ["$v", 2]}, 1, "$$ROOT"]}}},
    {"$match": {"v": {"$lt": 7}}},
    {"$tumblingWindow": {
        "interval": {"size": 5, "unit": "second"},
        "pipeline": [{"$match": {"v": {"$ne": 3}}}, {"$group": {"_id": None, "n": {"$sum": 1}}}],
    }},
    {"$project": {"n": 1}},
]


def counts(e: dict[str, Any]) -> tuple[str, int, int, int]:
    return e["name"], e["inputMessageCount"], e["outputMessageCount"], e["dlqMessageCount"]


def test_operator_stats_count_every_stage_in_pipeline_order(enabled: None) -> None:
    result = run_pipeline(PIPELINE)
    assert [d["n"] for d in result.output] == [2, 2]  # v=2,4 | v=5,6
    assert len(result.dlq) == 2
    assert result.pipeline is not None
    ops = metrics.operator_stats(result.pipeline)
    assert [counts(e) for e in ops] == [
        ("$replaceRoot", 10, 8, 2),
        ("$match", 8, 5, 0),
        ("$tumblingWindow", 5, 2, 0),  # v=2..6 in, one result per window out
        ("$match", 5, 4, 0),  # the window's inner $match (v=3 dropped)
        ("$project", 2, 2, 0),
    ]
    for e in ops:
        assert isinstance(e["executionTimeMillis"], int) and e["executionTimeMillis"] >= 0
    win = ops[2]
    # End of input closed every window: nothing open, nothing held.
    assert (win["openWindowCount"], win["stateSize"]) == (0, 0)
    assert win["minOpenWindowStartTime"] is None and win["maxOpenWindowStartTime"] is None
    assert metrics.state_size() == 0


def test_disabled_hooks_record_nothing() -> None:
    metrics.reset()
    assert not metrics.ENABLED
    result = run_pipeline(PIPELINE)
    assert [d["n"] for d in result.output] == [2, 2]
    assert metrics.stage_figures() == {}
    assert result.pipeline is not None
    ops = metrics.operator_stats(result.pipeline)
    # Top-level stages are still listed, with zeros.
    assert [counts(e) for e in ops] == [
        ("$replaceRoot", 0, 0, 0), ("$match", 0, 0, 0), ("$tumblingWindow", 0, 0, 0), ("$project", 0, 0, 0)
    ]


def _window_logic(pipeline: list[dict[str, Any]]) -> tuple[Plan, CloseLogic]:
    ir_p = compile_pipeline(pipeline, None, None, check_sink_connection=False)
    from translator.options import ProcessorOptions

    plan = Plan.compile(ir_p, ProcessorOptions(name="m"))
    assert plan.window is not None
    logic = CloseLogic(plan.window, ["p0"], plan.dlq_doc, None, plan.after)
    return plan, logic


def test_open_windows_range_and_state_size_follow_each_batch(enabled: None) -> None:
    plan, logic = _window_logic([
        {"$source": {"documents": [], "timeField": {"$toDate": "$t"}}},
        {"$tumblingWindow": {"interval": {"size": 10, "unit": "second"},
                             "pipeline": [{"$group": {"_id": "$g", "n": {"$sum": 1}}}]}},
    ])
    assert plan.window is not None
    # Windows [0,10) with groups a,b; [10,20) with a; [20,30) with c,d,e.
    docs = [("a", 1), ("b", 2), ("a", 11), ("c", 21), ("d", 22), ("e", 23)]
    recs: list[Any] = [({"g": g}, (ms(s), -(2**62))) for g, s in docs]
    partials = plan.window.fold(recs, lambda *a, **k: None)
    # Group buckets are separate operator instances in a flow; here one takes them all.
    res, _ = logic.on_batch([("p0", ms(9), p, ACTIVE) for p in partials.values()])
    assert res == []  # watermark 9 s closes nothing (the first window ends at 10 s)
    ws = metrics.window_state()
    path = plan.window.stage.path
    assert ws == {path: (3, 6, ms(0), ms(20))}
    assert metrics.state_size() == 6
    e = metrics.operator_stats(plan.pipeline)[0]
    assert e["minOpenWindowStartTime"] == at(0) and e["maxOpenWindowStartTime"] == at(20)
    assert (e["openWindowCount"], e["stateSize"], e["inputMessageCount"]) == (3, 6, 6)

    # The watermark passes 20 s: windows [0,10) and [10,20) close (3 group results).
    res, _ = logic.on_batch([("p0", ms(20), None, ACTIVE), ("p0", ms(25), None, ACTIVE)])
    assert [(tag, sorted(d["_id"] for d in docs_)) for tag, docs_ in res] == [(OUT, ["a", "a", "b"])]
    assert metrics.window_state() == {path: (1, 3, ms(20), ms(20))}
    assert metrics.state_size() == 3
    e = metrics.operator_stats(plan.pipeline)[0]
    assert counts(e) == ("$tumblingWindow", 6, 3, 0)
    assert e["minOpenWindowStartTime"] == at(20) == e["maxOpenWindowStartTime"]

    res, _ = logic.on_eof()
    assert [len(d) for _, d in res] == [3]
    assert metrics.window_state() == {} and metrics.state_size() == 0


def test_late_documents_count_as_window_dlq(enabled: None) -> None:
    plan, _ = _window_logic([
        {"$source": {"documents": [], "timeField": {"$toDate": "$t"}}},
        {"$tumblingWindow": {"interval": {"size": 10, "unit": "second"},
                             "pipeline": [{"$group": {"_id": None, "n": {"$sum": 1}}}]}},
    ])
    assert plan.window is not None
    late: list[Any] = []
    recs: list[Any] = [({"x": 1}, (ms(1), ms(30))), ({"x": 2}, (ms(35), ms(30)))]
    plan.window.fold(recs, lambda r, d, **k: late.append(d))
    assert late == [{"x": 1}]
    assert counts(metrics.operator_stats(plan.pipeline)[0]) == ("$tumblingWindow", 2, 0, 1)
