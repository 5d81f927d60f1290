"""Differential tests of the ingest's hold policies (translator/runtime.py, docs/windows.md
"Two steps"): a partition holds a window's partials until its own watermark closes the
window, or (the reference policy: ``fastPaths: false``, and a partition after an idle
marker) sends every held partial with every message. Both must give the close step the
same windows at the same step: the same result and DLQ documents, after the same poll.

The harness drives the real ingest partitions (:class:`IngestSource`) and close steps
(:class:`CloseLogic`, one per bucket) directly, so the interleaving of partitions, the
flush points and the close step's clock are scripted and identical for every policy.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from bson import json_util
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from tests.translator.test_ingest_hold import Script as OnePartition
from translator import runtime, windows
from translator.compile import compile_pipeline
from translator.contracts import IdleBatch, ProgressBatch
from translator.options import ProcessorOptions
from translator.runtime import IngestSource, Plan
from translator.window_state import IngestSnapshot
from translator.windows import DLQ, OUT, WIN, CloseLogic

T0 = datetime(2024, 8, 8, 23, 8, 0, tzinfo=UTC)
T0_MS = int(T0.timestamp() * 1000)
TS_SOURCE = {"$source": {"documents": [], "timeField": {"$dateFromString": {"dateString": "$ts"}}}}
SRC_TIME = {"$source": {"documents": []}}  # the event time is the source time (ProgressBatch moves it)
ORDER_FREE = {"$group": {"_id": "$g", "n": {"$count": {}}, "s": {"$sum": "$x"}, "lo": {"$min": "$x"},
                         "hi": {"$max": "$x"}, "avg": {"$avg": "$x"}}}
PUSH = {"$group": {"_id": "$g", "n": {"$sum": 1}, "xs": {"$push": "$x"}}}


def sec(n: float) -> dict[str, Any]:
    return {"size": int(n * 1000), "unit": "ms"}


def tumbling(size: float, group: dict[str, Any], **kw: Any) -> dict[str, Any]:
    return {"$tumblingWindow": {"interval": sec(size), "pipeline": [group], **kw}}


def hopping(size: float, hop: float, group: dict[str, Any], **kw: Any) -> dict[str, Any]:
    return {"$hoppingWindow": {"interval": sec(size), "hopSize": sec(hop), "pipeline": [group], **kw}}


# name -> (pipeline, partitions); $push keeps one partition: across partitions its order is
# the order partials reach the close step, which differs between policies (and runs).
CASES: dict[str, tuple[list[dict[str, Any]], int]] = {
    "tumbling": ([TS_SOURCE, tumbling(3, ORDER_FREE)], 3),
    "tumbling-lateness-0": ([TS_SOURCE, tumbling(2, ORDER_FREE, allowedLateness=sec(0))], 2),
    "tumbling-lateness-1.5-push": ([TS_SOURCE, tumbling(2, PUSH, allowedLateness=sec(1.5))], 1),
    "hopping-panes": ([TS_SOURCE, hopping(3, 1, ORDER_FREE)], 3),
    "hopping-panes-gcd": ([TS_SOURCE, hopping(3, 2, ORDER_FREE, allowedLateness=sec(0.5))], 2),
    "hopping-gaps": ([TS_SOURCE, hopping(2, 3, ORDER_FREE, allowedLateness=sec(0))], 2),
    "hopping-by-window-push": ([TS_SOURCE, hopping(3, 1, PUSH, allowedLateness=sec(1))], 1),
    "idle-timeout": ([TS_SOURCE, tumbling(2, ORDER_FREE, idleTimeout=sec(0.3))], 2),
    "source-time-progress": ([SRC_TIME, tumbling(2, ORDER_FREE, allowedLateness=sec(0.5))], 2),
}


class Script(FixedPartitionedSource[Any, int]):
    """Partitions replaying scripted polls (test_ingest_hold's one-partition script each)."""

    def __init__(self, polls: dict[str, list[Any]]) -> None:
        self.polls = polls

    def list_parts(self) -> list[str]:
        return list(self.polls)

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> StatefulSourcePartition[Any, int]:
        return OnePartition(self.polls[for_part]).build_part(step_id, for_part, resume_state)


def make_doc(rng: random.Random, t: int, source_time: bool) -> tuple[dict[str, Any], int]:
    d = {"g": f"g{rng.randrange(6)}", "x": rng.randrange(-50, 100)}
    if source_time:
        return d, t
    d["ts"] = datetime.fromtimestamp(t / 1000, UTC).isoformat(timespec="milliseconds")
    return d, 0


def script(rng: random.Random, parts: int, source_time: bool, idle: bool = True) -> dict[str, list[Any]]:
    """Per partition: polls of 0-6 documents around an advancing clock, some out of order
    by up to 5 s (late for some windows), source-time progress, and with ``idle`` idle
    markers in the second half (a partition keeps the reference policy after one)."""
    out: dict[str, list[Any]] = {}
    for p in range(parts):
        clock = T0_MS + rng.randrange(0, 2000)
        polls: list[Any] = []
        n = rng.randrange(20, 45)
        for k in range(n):
            r = rng.random()
            if r < 0.06 and idle and k > n // 2:
                polls.append(IdleBatch())
                continue
            if r < 0.12 and source_time:
                clock += rng.randrange(0, 1500)
                polls.append(ProgressBatch(clock))
                continue
            if r < 0.2:
                polls.append([])
                continue
            batch = []
            for _ in range(rng.randrange(1, 7)):
                clock += rng.randrange(0, 450)
                t = clock - (rng.randrange(0, 5000) if rng.random() < 0.25 else 0)
                batch.append(make_doc(rng, t, source_time))
            polls.append(batch)
        out[f"p{p}"] = polls
    return out


def canon(docs: list[Any]) -> list[str]:
    """Sorted canonical JSON; a DLQ document's own ``_id`` and ``dlqTime`` are left out."""
    return sorted(json_util.dumps({k: v for k, v in d.items() if k not in ("dlqTime", "processorName") and not (
        k == "_id" and "errInfo" in d)}, sort_keys=True) for d in docs)


class Clock:
    """The close step's wall clock (idleTimeout), advanced by the schedule."""

    def __init__(self) -> None:
        self.now = T0_MS

    def __call__(self) -> int:
        return self.now


def drive(pipeline: list[dict[str, Any]], polls: dict[str, list[Any]], schedule: list[Any], policy: str,
          buckets: int, clock: Clock, snapshot_at: int | None = None,
          entries: list[int] | None = None) -> list[tuple[int, list[str], list[str]]]:
    """Run the schedule (``("poll", partition)`` or ``("pause", ms)``); return per schedule
    step the results and DLQ documents that came out, canonical and sorted.

    ``policy``: "window" (hold until closable), "every-message" (the same plan with the
    reference policy forced), "reference" (``fastPaths: false``). With ``snapshot_at``,
    every ingest partition and close step is snapshotted after that step and rebuilt
    from the snapshots (a crash and resume; the sources resume at their positions).
    ``entries`` gets the number of group entries each message carried."""
    clock.now = T0_MS
    opts = ProcessorOptions(name="d", window_buckets=buckets, fast_paths=policy != "reference")
    compiled = compile_pipeline(pipeline, options=opts)
    plan = Plan.compile(compiled, opts)
    assert plan.window is not None
    source = IngestSource(Script(polls), plan)
    names = source.list_parts()

    def build(states: dict[str, Any] | None, closes: list[bytes] | None) -> tuple[dict[str, Any], list[CloseLogic]]:
        ingest = {p: source.build_part("s", p, None if states is None else states[p]) for p in names}
        if policy == "every-message":
            for part in ingest.values():
                part.logic.until_closable = False
        assert plan.window is not None
        nb = plan.window.buckets
        closers = [CloseLogic(plan.window, names, plan.dlq_doc, None if closes is None else closes[b]) for b in range(nb)]
        return ingest, closers

    ingest, closers = build(None, None)
    done: set[str] = set()
    steps: list[tuple[int, list[str], list[str]]] = []
    for i, action in enumerate(schedule):
        out: list[Any] = []
        dlq: list[Any] = []
        if action[0] == "pause":
            clock.now += action[1]
            for c in closers:
                at = c.notify_at()
                if at is not None and at <= datetime.fromtimestamp(clock.now / 1000, UTC):
                    collect(c.on_notify()[0], out, dlq)
        elif action[1] not in done:
            part = ingest[action[1]]
            try:
                emitted = part.next_batch()
            except StopIteration:
                done.add(action[1])
                emitted = []
            if part.finished:
                # The source ended and the partition sent what it held: Bytewax calls
                # it again at once, which ends it (one event here).
                done.add(action[1])
            msgs: dict[int, list[Any]] = {}
            for tag, payload in emitted:
                if tag == WIN:
                    msgs.setdefault(int(payload[0]), []).append(payload[1])
                    if entries is not None:
                        entries.append(sum(map(len, (payload[1].partials or {}).values())))
                elif tag == DLQ:
                    dlq.extend(payload)
                else:
                    assert tag == -1 or tag == OUT
            for b, values in sorted(msgs.items()):
                collect(closers[b].on_batch(values)[0], out, dlq)
        if snapshot_at == i:
            states = {p: ingest[p].snapshot() for p in names}
            closes = [c.snapshot() for c in closers]
            ingest, closers = build(states, closes)
        if len(done) == len(names):
            for c in closers:
                collect(c.on_eof()[0], out, dlq)
            steps.append((i, canon(out), canon(dlq)))
            break
        if out or dlq:
            steps.append((i, canon(out), canon(dlq)))
    else:
        raise AssertionError("the schedule ended before every partition did")
    return steps


def collect(emitted: list[tuple[int, list[Any]]], out: list[Any], dlq: list[Any]) -> None:
    for tag, docs in emitted:
        (out if tag == OUT else dlq).extend(docs)


def schedule_for(rng: random.Random, polls: dict[str, list[Any]]) -> list[Any]:
    """Random interleaving of the partitions' polls (and pauses), then polls until every
    partition has ended (on the poll after its last, or the one after that when it
    sends held partials at the end)."""
    left = {p: len(v) + 2 for p, v in polls.items()}
    sched: list[Any] = []
    while any(left.values()):
        if rng.random() < 0.1:
            sched.append(("pause", rng.randrange(50, 500)))
            continue
        p = rng.choice([p for p, n in left.items() if n])
        left[p] -= 1
        sched.append(("poll", p))
    return sched


@pytest.fixture(autouse=True)
def scripted_time(monkeypatch: pytest.MonkeyPatch) -> Iterator[Clock]:
    """Every step with documents is a flush point (HOLD_MS = 0), a step is one poll, and
    the close step's clock is the schedule's: flush points are the same for each policy."""
    monkeypatch.setattr(runtime, "HOLD_MS", 0)
    monkeypatch.setattr(runtime, "POLLS_PER_STEP", 1)
    clock = Clock()
    monkeypatch.setattr(windows, "_now_ms", clock)
    # Ingest's quiet-partition check (idleTimeout) reads the same schedule, not the real
    # clock: under load a real 150 ms gap between two polls armed it in one run only.
    monkeypatch.setattr(runtime, "_quiet_clock", lambda: clock.now / 1000)
    yield clock


def count(steps: list[tuple[int, list[str], list[str]]]) -> tuple[int, int]:
    return sum(len(s[1]) for s in steps), sum(len(s[2]) for s in steps)


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("seed", range(6))
def test_holding_until_closable_gives_the_same_windows_at_the_same_step(case: str, seed: int, scripted_time: Clock) -> None:
    pipeline, parts = CASES[case]
    rng = random.Random(f"{case}-{seed}")
    polls = script(rng, parts, source_time=pipeline[0] is SRC_TIME, idle=seed % 3 == 0)
    sched = schedule_for(rng, polls)
    buckets = 1 + 3 * (seed % 2)
    held: list[int] = []
    every: list[int] = []
    got = drive(pipeline, polls, sched, "window", buckets, scripted_time, entries=held)
    assert got == drive(pipeline, polls, sched, "every-message", buckets, scripted_time, entries=every)
    assert got == drive(pipeline, polls, sched, "reference", buckets, scripted_time)
    n_out, _ = count(got)
    assert n_out > 0
    # The same flush points (plus, holding, one last message per partition and bucket at
    # the end of input), but holding sends fewer group entries (an idleTimeout keeps
    # the reference policy).
    assert 0 <= len(held) - len(every) <= parts * buckets
    if case != "idle-timeout":
        assert sum(held) < sum(every)


def test_the_random_cases_reach_lateness_idleness_and_early_closes(scripted_time: Clock) -> None:
    """The scripts above are not vacuous: over the seeds they produce late documents,
    results before the end of input, and (idleTimeout) closes on the wall clock."""
    late = early = 0
    for seed in range(6):
        pipeline, parts = CASES["idle-timeout"]
        rng = random.Random(f"idle-timeout-{seed}")
        polls = script(rng, parts, source_time=False)
        sched = schedule_for(rng, polls)
        steps = drive(pipeline, polls, sched, "window", 4, scripted_time)
        late += sum(len(s[2]) for s in steps)
        early += sum(len(s[1]) for s in steps[:-1])
    assert late > 0 and early > 0


@pytest.mark.parametrize("case", ["tumbling", "hopping-panes", "hopping-by-window-push", "source-time-progress"])
def test_a_resume_from_snapshots_gives_the_same_windows(case: str, scripted_time: Clock) -> None:
    """Held partials of whole windows are in the ingest snapshot: a crash after any
    step, resumed from the snapshots, gives what the uninterrupted run gives."""
    pipeline, parts = CASES[case]
    rng = random.Random(f"resume-{case}")
    polls = script(rng, parts, source_time=pipeline[0] is SRC_TIME)
    sched = schedule_for(rng, polls)
    whole = drive(pipeline, polls, sched, "window", 4, scripted_time)
    for at in range(0, len(sched) - 1, 7):
        assert drive(pipeline, polls, sched, "window", 4, scripted_time, snapshot_at=at) == whole


def test_a_partition_keeps_the_reference_policy_after_an_idle_marker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "HOLD_MS", 10**6)
    pipeline, _ = CASES["tumbling"]
    opts = ProcessorOptions(name="d")
    plan = Plan.compile(compile_pipeline(pipeline, options=opts), opts)
    rng = random.Random(1)
    polls = {"p0": [[make_doc(rng, T0_MS + 100, False)], IdleBatch(), [make_doc(rng, T0_MS + 200, False)], []]}
    part = IngestSource(Script(polls), plan).build_part("s", "p0", None)
    assert part.logic.until_closable
    part.next_batch()
    part.next_batch()  # the idle marker
    assert not part.logic.until_closable
    part.next_batch()
    snap = part.snapshot()
    assert type(snap) is IngestSnapshot and snap.after_idle and snap.held
    resumed = IngestSource(Script(polls), plan).build_part("s", "p0", snap)
    assert not resumed.logic.until_closable
    # The quiet poll sends the held partial at once (window [0, 3) is far from closing).
    out = resumed.next_batch()
    sent = [m[1].partials for tag, m in out if tag == WIN and m[1].partials]
    assert [k for table in sent for k in table] == [T0_MS] and not resumed.logic.held
    # A snapshot from before this field existed reads as False.
    fresh = IngestSource(Script(polls), plan).build_part("s", "p0", (0, T0_MS, None))
    assert fresh.logic.until_closable


def test_fast_paths_false_is_the_reference_policy() -> None:
    pipeline, _ = CASES["tumbling"]
    for fast, expected in ((True, True), (False, False)):
        opts = ProcessorOptions(name="d", fast_paths=fast)
        plan = Plan.compile(compile_pipeline(pipeline, options=opts), opts)
        assert IngestSource(Script({"p": []}), plan).build_part("s", "p", None).logic.until_closable is expected


def test_sessions_and_processing_time_are_not_held() -> None:
    session = {"$sessionWindow": {"partitionBy": "$g", "gap": sec(1), "pipeline": [ORDER_FREE]}}
    processing = tumbling(1, ORDER_FREE, boundary="processingTime")
    for stage in (session, processing):
        opts = ProcessorOptions(name="d")
        plan = Plan.compile(compile_pipeline([TS_SOURCE, stage], options=opts), opts)
        logic = IngestSource(Script({"p": []}), plan).build_part("s", "p", None).logic
        assert not logic.hold and not logic.until_closable



@pytest.mark.parametrize("case", ["tumbling", "hopping-panes", "hopping-gaps"])
def test_two_worker_threads_give_the_same_windows_with_either_policy(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Through real Bytewax: three partitions on two worker threads, four buckets, late
    documents and no idle markers (so nothing depends on timing): holding
    (``fastPaths: true``) and the reference policy (``false``) give the same documents."""
    from bytewax.testing import TestingSink, cluster_main

    from translator.compile import build_flow

    monkeypatch.setattr(runtime, "HOLD_MS", 100)  # as shipped: holding spans many polls
    pipeline, _ = CASES[case]
    polls = script(random.Random(f"threads-{case}"), 3, source_time=False, idle=False)
    runs = []
    for fast in (True, False):
        opts = ProcessorOptions(name="d", window_buckets=4, fast_paths=fast)
        out: list[list[dict[str, Any]]] = []
        dlq: list[list[dict[str, Any]]] = []
        flow = build_flow(compile_pipeline(pipeline, options=opts), opts, source=Script(polls),
                          output_sink=TestingSink(out), dlq_sink=TestingSink(dlq))
        cluster_main(flow, [], 0, worker_count_per_proc=2)
        runs.append((canon([d for b in out for d in b]), canon([d for b in dlq for d in b])))
    assert runs[0] == runs[1]
    assert len(runs[0][0]) > 20 and runs[0][1]


@pytest.mark.parametrize("case", ["tumbling", "tumbling-lateness-0"])
@pytest.mark.parametrize("seed", range(6))
def test_with_idle_markers_every_document_counts_once_or_goes_to_the_dlq_alone(case: str, seed: int,
                                                                               scripted_time: Clock) -> None:
    """Idle markers let the close step close windows past a partition's watermark; the
    documents that partition sends for them later go to the DLQ one by one, as late
    documents at ingest do (docs/windows.md, "Late data after an idle partition"). So
    every document either counts in its window's ``$count`` or is one DLQ entry of its
    own, on both policies and across a resume from snapshots."""
    pipeline, parts = CASES[case]
    rng = random.Random(f"conserve-{case}-{seed}")
    polls = script(rng, parts, source_time=False, idle=True)
    sched = schedule_for(rng, polls)
    total = sum(len(b) for p in polls.values() for b in p)
    runs = [drive(pipeline, polls, sched, policy, 4, scripted_time) for policy in ("window", "reference")]
    runs.append(drive(pipeline, polls, sched, "window", 4, scripted_time, snapshot_at=len(sched) // 2))
    for steps in runs:
        outs = [json_util.loads(x) for s in steps for x in s[1]]
        dlqs = [json_util.loads(x) for s in steps for x in s[2]]
        assert all(d["errInfo"] == {"reason": "Input document arrived late."} and set(d["doc"]) == {"g", "x", "ts", "_ts"}
                   for d in dlqs)
        assert sum(d["n"] for d in outs) + len(dlqs) == total


def test_the_idle_scripts_send_late_documents_from_the_close_step(scripted_time: Clock,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The test above is not vacuous: over its seeds, the close step finds documents of
    windows it had closed while their partition was idle, and never falls back to a
    partial result."""
    found = {"docs": 0, "partials": 0}
    late_docs, late_partial = CloseLogic._late_docs, CloseLogic._late_partial

    def counting_docs(self: CloseLogic, docs: list[Any]) -> None:
        found["docs"] += len(docs)
        late_docs(self, docs)

    def counting_partial(self: CloseLogic, start: int, payload: Any) -> None:
        found["partials"] += 1
        late_partial(self, start, payload)

    monkeypatch.setattr(CloseLogic, "_late_docs", counting_docs)
    monkeypatch.setattr(CloseLogic, "_late_partial", counting_partial)
    for case in ("tumbling", "tumbling-lateness-0"):
        for seed in range(6):
            pipeline, parts = CASES[case]
            rng = random.Random(f"conserve-{case}-{seed}")
            polls = script(rng, parts, source_time=False, idle=True)
            drive(pipeline, polls, schedule_for(rng, polls), "window", 4, scripted_time)
    assert found["docs"] > 10 and found["partials"] == 0
