"""Window kinds chosen through the table, typed window state, and versioned snapshots:
a resume from an older snapshot converts it or fails naming the version, never misreads
(docs/windows.md)."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from translator.compile import compile_pipeline
from translator.options import ProcessorOptions
from translator.runtime import Plan
from translator.window_kinds import HoppingPanes, HoppingWindows, SessionWindows, TumblingWindows
from translator.window_state import (
    CLOSE_VERSION,
    CloseSnapshot,
    PaneKey,
    Session,
    SnapshotError,
    WindowMsg,
)
from translator.windows import ACTIVE, OUT, CloseLogic, WindowPlan

T0 = datetime(2024, 8, 8, 23, 8, 0, tzinfo=UTC)
SOURCE = {"$source": {"documents": [], "timeField": {"$toDate": "$t"}}}
GROUP = {"$group": {"_id": "$g", "n": {"$count": {}}, "sum": {"$sum": "$x"}}}


def ms(s: float) -> int:
    return int((T0 + timedelta(seconds=s)).timestamp() * 1000)


def tumbling(size_s: int) -> dict[str, Any]:
    return {"$tumblingWindow": {"interval": {"size": size_s, "unit": "second"}, "allowedLateness": {"size": 0, "unit": "second"},
                                "pipeline": [GROUP]}}


def hopping(size_s: int, hop_s: int, group: dict[str, Any] = GROUP) -> dict[str, Any]:
    return {"$hoppingWindow": {"interval": {"size": size_s, "unit": "second"}, "hopSize": {"size": hop_s, "unit": "second"},
                               "allowedLateness": {"size": 0, "unit": "second"}, "pipeline": [group]}}


def session(gap_s: int) -> dict[str, Any]:
    return {"$sessionWindow": {"partitionBy": "$g", "gap": {"size": gap_s, "unit": "second"},
                               "allowedLateness": {"size": 0, "unit": "second"}, "pipeline": [GROUP]}}


def compiled(window: dict[str, Any]) -> Plan:
    opts = ProcessorOptions(name="t")
    return Plan.compile(compile_pipeline([SOURCE, window], check_sink_connection=False), opts)


def close_logic(window: dict[str, Any], resume: bytes | None = None) -> tuple[WindowPlan, CloseLogic]:
    plan = compiled(window)
    assert plan.window is not None
    return plan.window, CloseLogic(plan.window, ["p0"], plan.dlq_doc, resume, plan.after)


def feed(wp: WindowPlan, logic: CloseLogic, wm: float, docs: list[tuple[str, int, float, float]]) -> list[tuple[Any, ...]]:
    """Fold (group, x, t, watermark before) records, hand them over, return closed rows."""
    recs: list[Any] = [({"g": g, "x": x}, (ms(t), ms(w))) for g, x, t, w in docs]
    partials = wp.fold(recs, lambda *a, **k: None)
    msgs = [WindowMsg("p0", ms(wm), p, ACTIVE) for p in partials.values()] or [WindowMsg("p0", ms(wm), None, ACTIVE)]
    return rows(logic.on_batch(msgs)[0])


def rows(res: list[Any]) -> list[tuple[Any, ...]]:
    out = []
    for tag, docs in res:
        if tag == OUT:
            for d in docs:
                w = d["_stream_meta"]["window"]
                out.append(((w["start"] - T0).total_seconds(), (w["end"] - T0).total_seconds(), d["_id"], d["n"], d["sum"]))
    return out


BATCHES = [
    (2.0, [("a", 1, 0.5, -9), ("b", 2, 2.0, 0.5)]),
    (5.0, [("a", 3, 5.0, 2.0), ("a", 4, 3.0, 5.0)]),
    (9.0, [("b", 5, 9.0, 5.0)]),
    (13.0, [("a", 6, 13.0, 9.0)]),
]


def straight(window: dict[str, Any]) -> list[tuple[Any, ...]]:
    wp, logic = close_logic(window)
    got = [r for wm, docs in BATCHES for r in feed(wp, logic, wm, docs)]
    return got + rows(logic.on_eof()[0])


def resumed_from(window: dict[str, Any], snapshot: Any, first: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    wp, logic = close_logic(window, pickle.dumps(snapshot))
    got = list(first)
    got += [r for wm, docs in BATCHES[2:] for r in feed(wp, logic, wm, docs)]
    return got + rows(logic.on_eof()[0])


def half_run(window: dict[str, Any]) -> tuple[CloseLogic, list[tuple[Any, ...]]]:
    wp, logic = close_logic(window)
    got = [r for wm, docs in BATCHES[:2] for r in feed(wp, logic, wm, docs)]
    return logic, got


def legacy(logic: CloseLogic) -> tuple[Any, ...]:
    """The unversioned (version 1) tuple the close step wrote before snapshots had a version."""
    st = logic.state
    sessions = {hk: [[s.start, s.last, s.partition, s.payload] for s in lst] for hk, lst in st.sessions.items()}
    windows = {tuple(k) if isinstance(k, PaneKey) else k: v for k, v in st.windows.items()}
    return (st.wms, windows, sessions, st.last_activity, st.idle, st.closed_upto)


# ---- the table of window kinds ------------------------------------------------------------


def test_each_window_kind_is_one_class_chosen_through_the_table() -> None:
    def kind(w: dict[str, Any]) -> type:
        plan = compiled(w).window
        assert plan is not None
        return type(plan.kind)

    assert kind(tumbling(3)) is TumblingWindows
    assert kind(hopping(4, 2)) is HoppingPanes
    # $push depends on arrival order: no panes, one partial per window.
    assert kind(hopping(4, 2, {"$group": {"_id": "$g", "xs": {"$push": "$x"}}})) is HoppingWindows
    assert kind(session(3)) is SessionWindows


def test_assign_and_missed_per_kind() -> None:
    def plan(w: dict[str, Any]) -> WindowPlan:
        p = compiled(w).window
        assert p is not None
        return p

    t = plan(tumbling(3)).kind
    assert t.assign(ms(4)) == [ms(3)] and t.missed(ms(4), ms(6)) == [ms(3)] and t.missed(ms(4), ms(5.9)) == []
    h = plan(hopping(4, 2)).kind
    assert h.assign(ms(5)) == [ms(2), ms(4)]
    assert h.missed(ms(5), ms(6)) == [ms(2)]  # [2, 6) closed at 6, [4, 8) open
    s = plan(session(3)).kind
    assert s.assign(ms(5)) == [ms(5)] and s.missed(ms(5), ms(8)) == [ms(5)] and s.missed(ms(5), ms(7.9)) == []
    with pytest.raises(TypeError, match="session windows are not on a fixed grid"):
        s.earliest_start(ms(5))


# ---- typed state ----------------------------------------------------------------------------


def test_sessions_are_typed_and_late_panes_have_a_pane_key() -> None:
    sp = compiled(session(3)).window
    assert sp is not None
    parts = sp.fold([({"g": "a", "x": 1}, (ms(1), ms(0))), ({"g": "a", "x": 2}, (ms(2), ms(1)))], lambda *a, **k: None)
    [(_, [s])] = parts[0].items()
    assert isinstance(s, Session) and (s.start, s.last, s.partition) == (ms(1), ms(2), "a")
    hp = compiled(hopping(4, 2)).window
    assert hp is not None
    late: list[Any] = []
    parts = hp.fold([({"g": "a", "x": 1}, (ms(3), ms(5)))], lambda r, d, **k: late.append(k["missedWindowStartTimes"]))
    [(key, _)] = [kv for table in parts.values() for kv in table.items()]
    assert type(key) is PaneKey and key == PaneKey(start=ms(2), first=ms(2)) and len(late) == 1


# ---- close-step snapshots -------------------------------------------------------------------


@pytest.mark.parametrize("window", [tumbling(3), hopping(4, 2), hopping(4, 2, {"$group": {"_id": "$g", "n": {"$count": {}}, "sum": {"$sum": "$x"}, "f": {"$first": "$x"}}}), session(3)],
                         ids=["tumbling", "hopping-panes", "hopping", "session"])
def test_snapshot_is_versioned_and_resumes_to_the_same_results(window: dict[str, Any]) -> None:
    logic, first = half_run(window)
    snap = pickle.loads(logic.snapshot())
    assert type(snap) is CloseSnapshot and snap.version == CLOSE_VERSION == 2 and snap.layout == logic.kind.layout
    assert resumed_from(window, snap, first) == straight(window)


@pytest.mark.parametrize("window", [tumbling(3), hopping(4, 2, {"$group": {"_id": "$g", "n": {"$count": {}}, "sum": {"$sum": "$x"}, "f": {"$first": "$x"}}}), session(3)],
                         ids=["tumbling", "hopping", "session"])
def test_an_unversioned_snapshot_converts(window: dict[str, Any]) -> None:
    logic, first = half_run(window)
    old = legacy(logic)
    assert type(old) is tuple and len(old) == 6
    if "$sessionWindow" in window:
        assert all(type(s) is list for lst in old[2].values() for s in lst) and old[2]
    assert resumed_from(window, old, first) == straight(window)


def test_unversioned_session_snapshot_gives_typed_sessions() -> None:
    logic, _ = half_run(session(3))
    _, resumed = close_logic(session(3), pickle.dumps(legacy(logic)))
    assert resumed.state.sessions == logic.state.sessions
    assert all(type(s) is Session for lst in resumed.state.sessions.values() for s in lst)


def test_an_unversioned_hopping_snapshot_with_whole_windows_is_not_read_as_panes() -> None:
    """Before hopping windows were folded by pane, the same tuple held whole windows keyed
    by window start; read as panes, each would count in every window of its pane."""
    before_panes: tuple[Any, ...] = ({"p0": ms(5)}, {ms(0): {"a": ["a", 3, 5]}, ms(2): {"a": ["a", 2, 4]}}, {}, 0.0, set(), ms(-2))
    with pytest.raises(SnapshotError) as err:
        close_logic(hopping(4, 2), pickle.dumps(before_panes))
    assert str(err.value) == (
        "pipeline[1].$hoppingWindow: cannot resume this $hoppingWindow from an unversioned (version 1) snapshot: "
        "it may hold whole windows (written before hopping windows were kept as panes) or panes, and they cannot be "
        "told apart; start the processor without its checkpoint (start({resumeFromCheckpoint: false}))"
    )


def test_an_unversioned_hopping_snapshot_that_can_only_be_panes_resumes() -> None:
    # 10 s every 4 s: 2 s panes. A key off the 4 s hop grid is a pane, never a window.
    window = hopping(10, 4)
    logic, first = half_run(window)
    assert any((k - 0) % 4000 for k in logic.windows)
    assert resumed_from(window, legacy(logic), first) == straight(window)
    # A plain-tuple (pane start, first window) key is a pane too; it comes back as a PaneKey.
    tuple_key: tuple[Any, ...] = ({"p0": ms(5)}, {(ms(2), ms(2)): {"a": ["a", 1, 1]}}, {}, 0.0, set(), ms(-2))
    _, resumed = close_logic(hopping(4, 2), pickle.dumps(tuple_key))
    assert [type(k) for k in resumed.windows] == [PaneKey]
    # Nothing stored: nothing to misread.
    _, resumed = close_logic(hopping(4, 2), pickle.dumps(({"p0": ms(5)}, {}, {}, 0.0, set(), ms(-2))))
    assert resumed.windows == {} and resumed.closed_upto == ms(-2)


def test_a_newer_snapshot_version_or_another_window_kind_fails_clearly() -> None:
    logic, _ = half_run(tumbling(3))
    newer = pickle.loads(logic.snapshot())._replace(version=3)
    with pytest.raises(SnapshotError, match=r"^pipeline\[1\]\.\$tumblingWindow: window state snapshot version 3 is not one "
                                            r"this mqlflow reads \(it reads versions 1 to 2\)"):
        close_logic(tumbling(3), pickle.dumps(newer))
    with pytest.raises(SnapshotError, match=r"^pipeline\[1\]\.\$hoppingWindow: window state snapshot \(version 2\) holds "
                                            r"'tumbling' windows, this pipeline has 'hopping-panes'"):
        close_logic(hopping(6, 3), logic.snapshot())
    with pytest.raises(SnapshotError, match=r"window state snapshot of unknown format \(dict\)"):
        close_logic(tumbling(3), pickle.dumps({"windows": {}}))


def test_the_fast_path_takes_windows_whose_kind_covers_every_event_time() -> None:
    """Tumbling and gapless hopping-by-pane windows; not sessions, not per-window hopping,
    not hopping with gaps (hop > interval: a document may be in no window)."""
    src = {"$source": {"documents": [], "timeField": {"$dateFromString": {"dateString": "$t"}}}}
    opts = ProcessorOptions(name="t")

    def fast(window: dict[str, Any]) -> bool:
        return Plan.compile(compile_pipeline([src, window], check_sink_connection=False), opts).fast_fold is not None

    assert fast(tumbling(3)) and fast(hopping(4, 2)) and fast(hopping(10, 4))
    assert not fast(hopping(2, 4)) and not fast(session(3))
    assert not fast(hopping(4, 2, {"$group": {"_id": "$g", "xs": {"$push": "$x"}}}))
