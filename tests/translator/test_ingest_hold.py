"""A source partition holds window partials and sends its watermark with the due ones
(translator/runtime.py ``_IngestPartition``): when a poll brings no documents and at the
latest every ``HOLD_MS``; a window's partials go out with the first watermark of the
partition that closes it, or (the reference policy, ``fastPaths: false``) with every
message; all go out before an idle marker and at end of input. Held partials are part of
the partition's snapshot, so a resume neither loses nor repeats them.
tests/translator/test_hold_policy.py compares the two policies' windows."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from sources.base import IdleBatch
from translator import runtime
from translator.compile import compile_pipeline
from translator.options import ProcessorOptions
from translator.runtime import BUSY, IngestSource, Plan
from translator.window_state import (
    ERRORS,
    HeldPartials,
    IngestSnapshot,
    PaneKey,
    SessionDoc,
    SnapshotError,
    WindowMsg,
    load_ingest,
    load_ingest_late,
)
from translator.windows import ACTIVE, DLQ, IDLE, WIN

T0 = datetime(2024, 8, 8, 23, 8, 0, tzinfo=UTC)
PIPELINE: list[dict[str, Any]] = [
    {"$source": {"documents": [], "timeField": {"$dateFromString": {"dateString": "$ts"}}}},
    {
        "$tumblingWindow": {
            "interval": {"size": 3, "unit": "second"},
            "pipeline": [{"$group": {"_id": "$g", "n": {"$count": {}}, "s": {"$sum": "$x"}}}],
        }
    },
]


@pytest.fixture(autouse=True)
def one_poll_per_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests step the partition poll by poll (see the multi-poll tests at the end)."""
    monkeypatch.setattr(runtime, "POLLS_PER_STEP", 1)


def doc(g: str, x: int, s: float) -> tuple[dict[str, Any], int]:
    ts = (T0 + timedelta(seconds=s)).isoformat(timespec="milliseconds")
    return ({"g": g, "x": x, "ts": ts}, 0)


class Script(FixedPartitionedSource[Any, int]):
    """One partition replaying polls; its state is how many polls were consumed."""

    def __init__(self, polls: list[Any]) -> None:
        self.polls = polls

    def list_parts(self) -> list[str]:
        return ["p"]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> StatefulSourcePartition[Any, int]:
        polls = self.polls

        class Part(StatefulSourcePartition[Any, int]):
            i = resume_state or 0

            def next_batch(self) -> list[Any]:
                if self.i >= len(polls):
                    raise StopIteration()
                self.i += 1
                return [("p", polls[self.i - 1])]

            def snapshot(self) -> int:
                return self.i

        return Part()


def ingest(polls: list[Any], resume: Any = None, fast_paths: bool = True, pipeline: list[dict[str, Any]] = PIPELINE) -> Any:
    opts = ProcessorOptions(name="t", fast_paths=fast_paths)
    plan = Plan.compile(compile_pipeline(pipeline, options=opts), opts)
    return IngestSource(Script(polls), plan).build_part("s", "p", resume)


def sent(emissions: list[Any]) -> list[tuple[int, Any, int]]:
    """(watermark, {pane: {group: [id, count, ...]}} of bucket 0, activity) per WIN message
    to bucket 0 (every message goes to every bucket)."""
    out = []
    for tag, payload in emissions:
        if tag == WIN and payload[0] == "0":
            _part, wm, partials, activity = payload[1][:4]
            out.append((wm, partials, activity))
    return out


def totals(emissions: list[Any]) -> dict[tuple[Any, str], int]:
    """``$count`` per (pane, group) over every bucket's message."""
    out: dict[tuple[Any, str], int] = {}
    for tag, payload in emissions:
        if tag == WIN:
            for pane, table in (payload[1][2] or {}).items():
                for g, e in table.items():
                    out[(pane, g)] = out.get((pane, g), 0) + e[1]
    return out


def ms(s: float) -> int:
    return int((T0 + timedelta(seconds=s)).timestamp() * 1000)


def test_a_window_is_held_until_the_partitions_watermark_closes_it() -> None:
    part = ingest([[doc("a", 1, 0.1)], [doc("a", 2, 0.2), doc("b", 3, 0.3)], [], [doc("a", 4, 5.9)], [],
                   [doc("c", 5, 6.0)], []])
    assert part.next_batch() == [BUSY]
    assert part.next_batch() == [BUSY]
    out = part.next_batch()  # no documents in this poll: the watermark goes out alone
    assert [(wm, partials, activity) for wm, partials, activity in sent(out)] == [(ms(0.3), None, ACTIVE)]
    assert part.next_batch() == [BUSY]
    assert sent(part.next_batch()) == [(ms(5.9), None, ACTIVE)]  # [0, 3) closes at 6 s
    assert part.next_batch() == [BUSY]
    out = part.next_batch()
    assert sent(out)[0][0] == ms(6.0)
    assert totals(out) == {(ms(0), "a"): 2, (ms(0), "b"): 1}
    assert sorted(k for tables in part.logic.held.values() for k in tables) == [ms(3), ms(6)]
    state = part.snapshot()  # no new documents, but held partials: in the snapshot
    assert state.held is not None and not part.logic.active
    # End of input sends them, and ends on the next call.
    assert totals(part.next_batch()) == {(ms(3), "a"): 1, (ms(6), "c"): 1}
    with pytest.raises(StopIteration):
        part.next_batch()


def test_a_hopping_pane_goes_out_with_its_first_window_and_later_documents_follow() -> None:
    """Pane [0, 1) s of a 2 s window hopping by 1 s (no lateness) is in windows -1 s and
    0 s: it goes out when -1 s closes; a later document of the pane counts in window 0 s
    only, under a PaneKey held until that window closes."""
    opts = ProcessorOptions(name="t")
    window = {"interval": {"size": 2, "unit": "second"}, "hopSize": {"size": 1, "unit": "second"},
              "allowedLateness": {"size": 0, "unit": "second"}, "pipeline": PIPELINE[1]["$tumblingWindow"]["pipeline"]}
    plan = Plan.compile(compile_pipeline([PIPELINE[0], {"$hoppingWindow": window}], options=opts), opts)
    polls = [[doc("a", 1, 0.5)], [], [doc("a", 2, 1.0)], [], [doc("a", 3, 0.7)], [], [doc("a", 4, 2.0)], []]
    part = IngestSource(Script(polls), plan).build_part("s", "p", None)
    part.next_batch()
    assert sent(part.next_batch()) == [(ms(0.5), None, ACTIVE)]
    part.next_batch()
    assert totals(part.next_batch()) == {(ms(0), "a"): 1}  # window -1 s closes at 1 s
    part.next_batch()
    assert sent(part.next_batch()) == [(ms(1.0), None, ACTIVE)]
    assert [k for tables in part.logic.held.values() for k in tables] == [ms(1), PaneKey(ms(0), ms(0))]
    part.next_batch()
    # Window 0 s closes at 2 s: both panes go out (pane [1, 2) s is in windows 0 s and 1 s).
    assert totals(part.next_batch()) == {(ms(1), "a"): 1, (PaneKey(ms(0), ms(0)), "a"): 1}


def test_held_entries_past_the_cap_all_go_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "HOLD_ENTRIES", 1)
    part = ingest([[doc("a", 1, 0.1)], [], [doc("b", 2, 0.2)], []])
    part.next_batch()
    assert totals(part.next_batch()) == {}  # one entry: held
    part.next_batch()
    assert totals(part.next_batch()) == {(ms(0), "a"): 1, (ms(0), "b"): 1}
    assert part.logic.held == {}


def test_busy_polls_hold_and_a_quiet_poll_sends_everything_on_the_reference_path() -> None:
    part = ingest([[doc("a", 1, 0.1)], [doc("a", 2, 0.2), doc("b", 3, 0.3)], []], fast_paths=False)
    assert part.next_batch() == [BUSY]
    assert part.next_batch() == [BUSY]
    out = part.next_batch()  # no documents in this poll: send
    [(wm, _partials, activity)] = sent(out)
    assert (wm, activity) == (ms(0.3), ACTIVE)
    # Each group reaches one bucket, with all its held documents in the pane.
    assert totals(out) == {(ms(0), "a"): 2, (ms(0), "b"): 1}
    with pytest.raises(StopIteration):
        part.next_batch()


def test_hold_is_bounded_in_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "HOLD_MS", 0)
    part = ingest([[doc("a", 1, 0.1)], [doc("a", 2, 0.2)]], fast_paths=False)
    first = part.next_batch()
    assert sent(first)[0][0] == ms(0.1) and totals(first) == {(ms(0), "a"): 1}
    second = part.next_batch()
    assert sent(second)[0][0] == ms(0.2) and totals(second) == {(ms(0), "a"): 1}
    # Holding until the window closes: the watermark still goes out every HOLD_MS.
    part = ingest([[doc("a", 1, 0.1)], [doc("a", 2, 0.2)]])
    assert sent(part.next_batch()) == [(ms(0.1), None, ACTIVE)]
    assert sent(part.next_batch()) == [(ms(0.2), None, ACTIVE)]


def test_end_of_input_and_idle_marker_send_held_partials() -> None:
    part = ingest([[doc("a", 1, 0.1)], IdleBatch()])
    assert part.next_batch() == [BUSY]
    out = part.next_batch()
    msgs = sent(out)
    assert [m[2] for m in msgs] == [ACTIVE, IDLE]  # the held partials go first
    assert msgs[0][0] == ms(0.1) and totals(out) == {(ms(0), "a"): 1}

    part = ingest([[doc("a", 1, 0.1)]])
    assert part.next_batch() == [BUSY]
    out = part.next_batch()  # the source ended: held partials still go out
    assert [m[2] for m in sent(out)] == [ACTIVE] and totals(out) == {(ms(0), "a"): 1}
    with pytest.raises(StopIteration):
        part.next_batch()


def test_snapshot_carries_held_partials_and_resume_sends_them_once() -> None:
    polls = [[doc("a", 1, 0.1)], [doc("b", 5, 0.2)]]
    part = ingest(polls)
    assert part.next_batch() == [BUSY]
    state = part.snapshot()
    inner, wm, held, _, _ = state
    assert (inner, wm) == (1, ms(0.1)) and held
    # The run goes on after the snapshot (Bytewax may serialise it later): the
    # snapshot must not see what the partition folds afterwards.
    assert part.next_batch() == [BUSY]
    # A crash now, then a resume from that snapshot: the first document is not re-read
    # (the source resumes after it) and its held contribution is sent with the rest.
    resumed = ingest(polls, state)
    assert resumed.next_batch() == [BUSY]
    assert totals(resumed.next_batch()) == {(ms(0), "a"): 1, (ms(0), "b"): 1}


def test_snapshot_from_before_holding_existed_resumes() -> None:
    part = ingest([[doc("a", 1, 5.0)], []], resume=(0, ms(1.0)))
    assert part.logic.wm == ms(1.0)
    part.next_batch()
    assert sent(part.next_batch())[0][0] == ms(5.0)


def test_hold_stays_well_within_an_idle_timeout() -> None:
    opts = ProcessorOptions(name="t")
    window = dict(PIPELINE[1]["$tumblingWindow"], idleTimeout={"size": 200, "unit": "ms"})
    plan = Plan.compile(compile_pipeline([PIPELINE[0], {"$tumblingWindow": window}], options=opts), opts)
    part = IngestSource(Script([]), plan).build_part("s", "p", None)
    assert part.logic.hold_s == 0.05
    assert ingest([]).logic.hold_s == runtime.HOLD_MS / 1000


class Boom(Exception):
    pass


def test_a_busy_source_is_polled_several_times_per_step(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "POLLS_PER_STEP", 3)
    polls = [[doc("a", i, 0.1 * i)] for i in range(1, 5)] + [[doc("a", 5, 6.0)], []]
    part = ingest(polls)
    assert part.next_batch() == [BUSY]
    assert part.inner.snapshot() == 3  # three polls in one step
    out = part.next_batch()  # two more polls, then one without documents: send
    assert part.inner.snapshot() == 6
    assert totals(out) == {(ms(0), "a"): 4}  # [0, 3) closes at 6 s; [6, 9) is held


def test_an_error_after_a_poll_keeps_that_polls_results(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "POLLS_PER_STEP", 4)
    opts = ProcessorOptions(name="t")
    plan = Plan.compile(compile_pipeline(PIPELINE, options=opts), opts)
    ref = ProcessorOptions(name="t", fast_paths=False)
    reference = Plan.compile(compile_pipeline(PIPELINE, options=ref), ref)

    class Failing(Script):
        def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> StatefulSourcePartition[Any, int]:
            inner = super().build_part(step_id, for_part, resume_state)
            real = inner.next_batch

            def next_batch() -> list[Any]:
                if inner.snapshot() == 2:
                    raise Boom("broker gone")
                return list(real())

            inner.next_batch = next_batch  # type: ignore[method-assign]
            return inner

    part = IngestSource(Failing([[doc("a", 1, 0.1)], [doc("a", 2, 0.2)], []]), plan).build_part("s", "p", None)
    out = part.next_batch()
    assert sent(out) == [(ms(0.2), None, ACTIVE)]  # sent: the step ended on the error
    assert totals(IngestSource(Failing([[doc("a", 1, 0.1)], [doc("a", 2, 0.2)], []]), reference).build_part(
        "s", "p", None).next_batch()) == {(ms(0), "a"): 2}  # the reference policy sends everything
    with pytest.raises(Boom, match="broker gone"):
        part.next_batch()


def test_end_of_input_in_the_middle_of_a_step(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "POLLS_PER_STEP", 8)
    part = ingest([[doc("a", 1, 0.1)], [doc("b", 2, 0.2)]])
    out = part.next_batch()
    assert totals(out) == {(ms(0), "a"): 1, (ms(0), "b"): 1}
    with pytest.raises(StopIteration):
        part.next_batch()


# ---- typed messages, versioned snapshots (docs/windows.md) -------------------------------


def test_ingest_sends_named_window_messages() -> None:
    part = ingest([[doc("a", 1, 0.1)], []])
    assert part.next_batch() == [BUSY]
    msgs = [p[1] for tag, p in part.next_batch() if tag == WIN]
    assert msgs and all(type(m) is WindowMsg for m in msgs)
    assert {(m.partition, m.watermark, m.activity) for m in msgs} == {("p", ms(0.1), ACTIVE)}


def test_ingest_snapshot_is_named_and_holds_versioned_partials() -> None:
    part = ingest([[doc("a", 1, 0.1)], [doc("a", 2, 0.2)]])
    part.next_batch()
    snap = part.snapshot()
    assert type(snap) is IngestSnapshot and (snap.inner, snap.watermark) == (1, ms(0.1))
    assert snap.held is not None
    held = pickle.loads(snap.held)
    assert type(held) is HeldPartials and held.version == 2
    assert {(pane, g): e[1] for table in held.partials.values() for pane, t in table.items() for g, e in t.items()} == {
        (ms(0), "a"): 1
    }


def test_ingest_snapshots_of_every_version_resume() -> None:
    partials = {0: {ms(0): {"a": ["a", 1, 1]}}}
    # (inner, wm): from before partials were held.
    assert load_ingest((4, ms(1))) == (4, ms(1), None)
    # Version 1 held partials: the pickled dict itself (pane keys as plain tuples).
    v1 = {0: {ms(0): {"a": ["a", 1, 1]}, (ms(2), ms(4)): {"b": ["b", 1, 2]}}}
    inner, wm, held = load_ingest((4, ms(1), pickle.dumps(v1)))
    assert (inner, wm, held) == (4, ms(1), v1) and held is not None
    assert [type(k) for k in held[0]] == [int, PaneKey]
    part = ingest([], (0, ms(0), pickle.dumps(partials)))
    assert part.logic.held == partials and part.logic.active
    # Version 2.
    assert load_ingest(IngestSnapshot(4, ms(1), pickle.dumps(HeldPartials(partials)))) == (4, ms(1), partials)
    assert load_ingest((4, ms(1), None)) == (4, ms(1), None)


def test_an_ingest_snapshot_of_a_newer_version_fails_clearly() -> None:
    with pytest.raises(SnapshotError, match=r"^held window partials snapshot version 7 is not one this mqlflow reads"):
        load_ingest((4, ms(1), pickle.dumps(HeldPartials({}, version=7))))
    with pytest.raises(SnapshotError, match=r"^held window partials of unknown format \(list\)"):
        load_ingest((4, ms(1), pickle.dumps([1, 2])))


def test_held_partials_count_in_the_windows_state_figures() -> None:
    """``operatorStats`` stateSize and open windows include what partitions hold: those
    windows are open, the close step just does not have them yet."""
    from translator import metrics

    metrics.reset()
    metrics.enable()
    try:
        part = ingest([[doc("a", 1, 0.1), doc("b", 2, 0.2), doc("a", 3, 3.5)], [], [doc("c", 4, 6.5)], []])
        path = part.logic.plan.window.stage.path
        part.next_batch()
        part.next_batch()
        assert metrics.window_state() == {path: (2, 3, ms(0), ms(3))}
        part.next_batch()
        part.next_batch()  # [0, 3) went out (6.5 s closes it): [3, 6) and [6, 9) are held
        assert metrics.window_state() == {path: (2, 2, ms(3), ms(6))}
        part.next_batch()  # end of input: everything went out
        assert metrics.window_state() == {}
        # Hopping panes count in every window that contains them.
        opts = ProcessorOptions(name="t")
        window = {"interval": {"size": 3, "unit": "second"}, "hopSize": {"size": 1, "unit": "second"},
                  "pipeline": PIPELINE[1]["$tumblingWindow"]["pipeline"]}
        plan = Plan.compile(compile_pipeline([PIPELINE[0], {"$hoppingWindow": window}], options=opts), opts)
        hop = IngestSource(Script([[doc("a", 1, 0.5)], []]), plan).build_part("s", "p", None)
        hop.next_batch()
        hop.next_batch()
        assert metrics.window_state() == {plan.window.stage.path: (3, 1, ms(-2), ms(0))}
    finally:
        metrics.disable()
        metrics.reset()


# ---- documents kept beside partials after an idle marker (docs/windows.md) ---------------


def late_of(emissions: list[Any]) -> dict[int, dict[Any, list[tuple[str, int]]]]:
    """Every bucket's ``WindowMsg.late``: ``{bucket: {key: [(g, x), ...]}}``."""
    out: dict[int, dict[Any, list[tuple[str, int]]]] = {}
    for tag, payload in emissions:
        if tag == WIN and payload[1].late:
            out[int(payload[0])] = {k: [(d["g"], d["x"]) for d in docs] for k, docs in payload[1].late.items()}
    return out


def bucket_of_group(g: str) -> int:
    from translator.contracts import bucket_of

    return bucket_of(g, 4)


@pytest.mark.parametrize("fast", [True, False])
def test_after_an_idle_marker_documents_go_with_their_partials_and_into_the_snapshot(fast: bool) -> None:
    from translator import metrics
    from translator.fastpath import FALLBACK_KEEP_DOCS

    polls = [[doc("a", 1, 0.1)], IdleBatch(), [doc("a", 2, 0.2), doc("b", 3, 0.3)], [doc("a", 4, 0.4)], []]
    part = ingest(polls, fast_paths=fast)
    assert late_of(part.next_batch()) == {}  # before the idle marker: partials only
    part.next_batch()  # the idle marker
    assert part.logic.keep_docs == runtime.KEEP_DOCS
    metrics.reset()
    metrics.enable()
    try:
        part.next_batch()
        fallbacks = metrics.fallbacks()
    finally:
        metrics.disable()
        metrics.reset()
    if fast:  # the fast fold hands the batch to the general path, counted
        assert fallbacks == {"pipeline[1].$tumblingWindow": {FALLBACK_KEEP_DOCS: 1}}
    assert part.logic.keep_docs == runtime.KEEP_DOCS - 2
    snap = part.snapshot()
    assert type(snap) is IngestSnapshot and snap.keep_docs == runtime.KEEP_DOCS - 2
    held = pickle.loads(snap.held)
    assert held.version == 2 and {b: {k: [(d["g"], d["x"], d["_ts"]) for d in ds] for k, ds in keyed.items()}
                                  for b, keyed in held.late.items()} == {
        bucket_of_group("a"): {ms(0): [("a", 2, T0 + timedelta(seconds=0.2))]},
        bucket_of_group("b"): {ms(0): [("b", 3, T0 + timedelta(seconds=0.3))]},
    }
    expected = {bucket_of_group("a"): {ms(0): [("a", 2), ("a", 4)]}, bucket_of_group("b"): {ms(0): [("b", 3)]}}
    out = part.next_batch() + part.next_batch()
    assert late_of(out) == expected and totals(out) == {(ms(0), "a"): 2, (ms(0), "b"): 1}
    # A crash after the snapshot: the resumed partition sends the kept documents once.
    resumed = ingest(polls, snap, fast_paths=fast)
    assert resumed.logic.keep_docs == runtime.KEEP_DOCS - 2 and resumed.logic.after_idle
    out = resumed.next_batch() + resumed.next_batch()
    assert late_of(out) == expected and totals(out) == {(ms(0), "a"): 2, (ms(0), "b"): 1}


def test_documents_are_kept_for_keep_docs_documents_after_the_idle_marker(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bound: after ``KEEP_DOCS`` documents (whole batches) and the message that
    sends them, partials go alone again, through the fast fold."""
    monkeypatch.setattr(runtime, "KEEP_DOCS", 2)
    part = ingest([IdleBatch(), [doc("a", 1, 0.1)], [doc("a", 2, 0.2), doc("a", 3, 0.3)], [], [doc("a", 4, 0.4)], []])
    part.next_batch()
    part.next_batch()
    assert part.logic.keep_docs == 1
    part.next_batch()
    assert part.logic.keep_docs == 0 and part.logic.kept  # kept until the next message
    out = part.next_batch()
    assert late_of(out) == {bucket_of_group("a"): {ms(0): [("a", 1), ("a", 2), ("a", 3)]}} and not part.logic.kept
    part.next_batch()
    out = part.next_batch()
    assert late_of(out) == {} and totals(out) == {(ms(0), "a"): 1}


def test_ingest_snapshots_from_before_kept_documents_resume_without_them() -> None:
    partials = {0: {ms(0): {"a": ["a", 1, 1]}}}
    old = HeldPartials(partials)
    del old.late  # a HeldPartials pickled before the field existed
    state = IngestSnapshot(4, ms(1), pickle.dumps(old), True)  # and an IngestSnapshot without keep_docs
    assert load_ingest_late(state) == (4, ms(1), partials, None)
    part = ingest([], state)
    assert part.logic.held == partials and part.logic.kept == {} and part.logic.keep_docs == 0


@pytest.mark.parametrize("fast", [True, False])
def test_after_an_idle_marker_a_session_window_sends_its_documents_and_its_stage_errors(fast: bool) -> None:
    """Sessions keep their documents too, keyed by partition and event time (SessionDoc);
    the errors of the window's stages for kept documents travel with them (ERRORS) for
    the close step to send or, for a late document, drop. Before the marker they go
    straight to the DLQ."""
    fails_for_3 = {"$set": {"r": {"$divide": [1, {"$subtract": ["$x", 3]}]}}}
    pipeline = [PIPELINE[0], {"$sessionWindow": {"partitionBy": "$g", "gap": {"size": 1, "unit": "second"},
                                                 "pipeline": [fails_for_3, {"$group": {"_id": "$g", "n": {"$count": {}}}}]}}]
    polls = [[doc("a", 1, 0.1), doc("b", 3, 0.15)], IdleBatch(), [doc("a", 2, 0.2), doc("b", 3, 0.3), doc("a", 4, 5)], []]
    part = ingest(polls, fast_paths=fast, pipeline=pipeline)
    first = part.next_batch()
    assert late_of(first) == {} and [d["doc"]["x"] for tag, b in first if tag == DLQ for d in b] == [3]
    part.next_batch()  # the idle marker
    out = part.next_batch()
    assert [tag for tag, _ in out] == [WIN]  # the error waits for the close step
    late = out[0][1][1].late
    assert {k: [(d["g"], d["x"]) for d in v] for k, v in late.items() if k != ERRORS} == {
        SessionDoc("a", ms(0.2)): [("a", 2)], SessionDoc("b", ms(0.3)): [("b", 3)], SessionDoc("a", ms(5)): [("a", 4)],
    }
    assert [(e["key"], e["doc"]["x"], e["reason"].split(":")[0]) for e in late[ERRORS]] == [
        (SessionDoc("b", ms(0.3)), 3,
         "Failed to process input document in $set stage (pipeline[1].$sessionWindow.pipeline[0].$set)"),
    ]
