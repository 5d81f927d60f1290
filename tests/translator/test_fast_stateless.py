"""Stateless pipelines without the ``_ts`` stamp (translator/fast_stateless.py) give
exactly the general path's output and DLQ: the generated span reads ``$_ts`` from the
record's time, and any batch it cannot take (a bad timestamp, a source error, a stage
that raises) is stamped and run by the closures as before."""

from __future__ import annotations

import copy
import itertools
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from bson import Decimal128, Int64

from bench.workloads import C_STAGES
from translator import metrics
from translator.codegen import compile_unstamped
from translator.compile import compile_pipeline
from translator.contracts import SOURCE_DLQ_KEY
from translator.fast_stateless import FastStateless
from translator.mql.expr import EMPTY_VARS
from translator.options import ProcessorOptions
from translator.runtime import Plan
from translator.stages import FILTER, Step, compile_steps, run_chain
from translator.testing import RunResult, run_pipeline, run_pipeline_with_stats

T0 = datetime(2024, 7, 26, 13, 20, 0, tzinfo=UTC)
NAN = float("nan")


def iso(ms: int) -> str:
    dt = T0 + timedelta(milliseconds=ms)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}+00:00"


def source(docs: list[dict[str, Any]], time_field: bool = True) -> dict[str, Any]:
    spec: dict[str, Any] = {"documents": docs}
    if time_field:
        spec["timeField"] = {"$dateFromString": {"dateString": "$timestamp"}}
    return {"$source": spec}


def solar(rng: random.Random, n: int, spoiled: bool, repeat: int = 1) -> list[dict[str, Any]]:
    """``repeat``: that many documents in a row share a timestamp (a busy stream)."""
    odd: list[Any] = [None, "x", [1, 2], Int64(7), Decimal128("2.5"), 1.5, True, NAN, 2**40, {"temp": 3}]
    docs: list[dict[str, Any]] = []
    for i in range(n):
        d: dict[str, Any] = {
            "device_id": f"device_{i % 7}",
            "group_id": i % 5,
            "timestamp": iso(i // repeat * 3),
            "max_watts": rng.choice([250, 450]),
            "event_type": 0 if rng.random() < 0.9 else 1,
            "obs": {"watts": rng.randrange(500), "temp": rng.randrange(0, 40)},
        }
        if i % 11 == 0:
            d["_ts"] = "the document's own"  # the stamp overwrites it
        if i % 13 == 0:
            d["_stream_meta"] = {"source": {"type": "x"}}  # the stamp moves it after _ts
        docs.append(d)
    if spoiled:
        for d in rng.sample(docs, k=n // 15):
            kind = rng.randrange(6)
            if kind == 0:
                d["max_watts"] = 0  # $divide by zero: the DLQ
            elif kind == 1:
                d["obs"]["temp"] = rng.choice(odd)
            elif kind == 2:
                d["timestamp"] = rng.choice(["not a date", 5, None])  # a timeField error: the DLQ
            elif kind == 3:
                del d["obs"]
            elif kind == 4:
                d["obs"] = [d["obs"]]
            else:
                d["event_type"] = rng.choice(odd)
    return docs


# Pipelines whose stages are one generated span ending with a new document.
TAKEN: dict[str, list[dict[str, Any]]] = {
    "workload-C": C_STAGES,
    "ts-paths": [
        {"$addFields": {"r": {"$divide": ["$obs.watts", "$max_watts"]}}},
        {"$project": {"_ts": 1, "t": "$_ts", "tx": "$_ts.x", "r": 1, "_stream_meta": 1}},
    ],
    "project-then-add": [
        {"$match": {"obs.temp": {"$gte": 5}}},
        {"$project": {"_id": 0, "d": "$device_id", "ts": "$_ts"}},
        {"$addFields": {"again": "$ts", "later": {"$gt": ["$ts", "$d"]}}},
    ],
    "ts-overwritten-first": [
        {"$addFields": {"_ts": "$group_id", "w": "$obs.watts"}},
        {"$project": {"t": "$_ts", "w": 1}},
    ],
    "no-ts": [{"$project": {"device_id": 1, "w": {"$multiply": ["$obs.watts", 2]}}}],
    "arithmetic-and-comparisons": [
        {"$match": {"event_type": 0, "obs.temp": {"$lt": 35}}},
        {
            "$project": {
                "_id": 0,
                "s": {"$add": ["$obs.watts", "$max_watts"]},
                "d": {"$subtract": ["$obs.temp", "$obs.watts"]},
                "m": {"$multiply": ["$obs.temp", "$max_watts"]},
                "q": {"$divide": ["$obs.temp", "$max_watts"]},
                "lt": {"$lt": ["$obs.watts", "$max_watts"]},
                "ne": {"$ne": ["$device_id", "device_3"]},
                "le": {"$lte": ["$obs.temp", 20.5]},
                "ts": "$_ts",
            }
        },
    ],
}
# Shapes that keep the stamp (the general path): the output keeps the input document,
# or a closure, or a query clause, reads the whole document or `_ts`.
REFUSED: dict[str, list[dict[str, Any]]] = {
    "add-fields-only": [{"$addFields": {"t": "$_ts"}}],
    "query-on-ts": [{"$match": {"_ts": {"$gte": T0}}}, {"$project": {"device_id": 1}}],
    "query-closure": [{"$match": {"$or": [{"group_id": 1}, {"event_type": 1}]}}, {"$project": {"device_id": 1}}],
    "root": [{"$project": {"r": "$$ROOT"}}],
    "closure-expression": [{"$project": {"u": {"$toUpper": "$device_id"}}}],
}


def _opts(batch_size: int, fast_paths: bool = True) -> ProcessorOptions:
    return ProcessorOptions(name="run_pipeline", batch_size=batch_size, fast_paths=fast_paths)


def plan_of(pipeline: list[dict[str, Any]]) -> Plan:
    opts = ProcessorOptions(name="p")
    return Plan.compile(compile_pipeline(copy.deepcopy(pipeline), options=opts, check_sink_connection=False), opts)


def run_both(pipeline: list[dict[str, Any]], batch_size: int, monkeypatch: pytest.MonkeyPatch) -> tuple[RunResult, RunResult, int]:
    taken = [0]
    real_run = FastStateless.run

    def counting(self: FastStateless, batch: Any, wm: int) -> Any:
        res = real_run(self, batch, wm)
        taken[0] += res is not None
        return res

    with monkeypatch.context() as m:
        m.setattr(FastStateless, "run", counting)
        fast = run_pipeline(copy.deepcopy(pipeline), _opts(batch_size))
    slow = run_pipeline(copy.deepcopy(pipeline), _opts(batch_size, fast_paths=False))  # no accelerator at all
    return fast, slow, taken[0]


def _same(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> bool:
    """Equal with key order and exact types (NaN != NaN: compare reprs; a DLQ entry's
    own ``_id`` and ``dlqTime`` differ per run)."""

    def strip(d: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in d.items() if k != "dlqTime" and not (k == "_id" and "errInfo" in d)}

    return repr([strip(d) for d in a]) == repr([strip(d) for d in b])


@pytest.mark.parametrize("spoiled", [False, True])
@pytest.mark.parametrize("shape", list(TAKEN))
def test_unstamped_and_stamped_runs_agree(shape: str, spoiled: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    docs = solar(random.Random(len(shape) * 3 + spoiled), 1500, spoiled)
    pipeline = [source(docs), *TAKEN[shape]]
    assert plan_of(pipeline).fast_stateless is not None
    fast, slow, taken = run_both(pipeline, 16, monkeypatch)
    assert _same(fast.output, slow.output)
    assert _same(fast.dlq, slow.dlq)
    assert fast.output and taken > 0
    if spoiled and shape == "workload-C":
        reasons = [d["errInfo"]["reason"] for d in fast.dlq]
        assert any("$divide" in r for r in reasons) and any("timeField" in r for r in reasons)


@pytest.mark.parametrize("repeat", [1, 5, 40])
@pytest.mark.parametrize("shape", ["workload-C", "no-ts", "project-then-add"])
def test_busy_streams_with_repeated_timestamps_agree(shape: str, repeat: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Repeated timestamps take the per-distinct-string dates (IsoMillis.distinct); a
    stream that changes between repeated and distinct ones switches between the two."""
    rng = random.Random(repeat)
    docs = solar(rng, 900, True, repeat) + solar(rng, 300, False, 1) + solar(rng, 600, True, repeat)
    pipeline = [source(docs), *TAKEN[shape]]
    fast, slow, taken = run_both(pipeline, 64, monkeypatch)
    assert _same(fast.output, slow.output)
    assert _same(fast.dlq, slow.dlq)
    assert fast.output and fast.dlq and taken > 0


def test_dates_are_exact_for_any_millisecond() -> None:
    """DateCache builds a date from its second's date and a millisecond offset: the same
    datetime (and tzinfo) as EPOCH + ms, before and after the epoch."""
    from translator.fastpath import DateCache
    from translator.mql.values import EPOCH

    cache = DateCache()
    rng = random.Random(9)
    for _ in range(50):
        ms = [rng.randrange(-(10**13), 10**13) for _ in range(40)] + [rng.randrange(-3000, 3000) for _ in range(40)]
        ms += [1_722_000_000_000 + rng.randrange(10**5) for _ in range(40)]
        got = cache.dates(ms)
        want = [EPOCH + timedelta(milliseconds=t) for t in ms]
        assert got == want
        assert all(g.tzinfo is w.tzinfo for g, w in zip(got, want, strict=True))


@pytest.mark.parametrize("time_field", [True, False])
@pytest.mark.parametrize("shape", list(TAKEN))
def test_ingest_emits_the_same_with_and_without_the_stamp(shape: str, time_field: bool) -> None:
    """The ingest operator itself, fed the same records (with source times, as a Kafka
    source gives them) with fast paths on and off: the same output and DLQ batches, and
    the same watermark."""
    from translator.runtime import IngestLogic
    from translator.windows import DLQ

    docs = solar(random.Random(len(shape)), 600, True)
    pipeline = [source(docs, time_field), *TAKEN[shape]]
    got = []
    for on in (True, False):
        opts = ProcessorOptions(name="p", fast_paths=on)
        plan = Plan.compile(compile_pipeline(copy.deepcopy(pipeline), options=opts, check_sink_connection=False), opts)
        assert (plan.fast_stateless is not None) == on
        logic = IngestLogic(plan, "p0", None)
        recs = [(d, 1_722_000_000_000 + 7 * i) for i, d in enumerate(copy.deepcopy(docs))]
        out = []
        for k in range(0, len(recs), 50):
            for tag, payload in logic.process(recs[k : k + 50]):
                out.append((tag, [{x: v for x, v in d.items() if x not in ("dlqTime", "_id")} if tag == DLQ else d for d in payload]))
        got.append((repr(out), logic.wm))
    assert got[0] == got[1]


@pytest.mark.parametrize("shape", list(REFUSED))
def test_shapes_that_read_the_stamped_document_keep_the_stamp(shape: str) -> None:
    assert plan_of([source([]), *REFUSED[shape]]).fast_stateless is None


def test_fast_paths_off_means_no_unstamped_path() -> None:
    opts = ProcessorOptions(name="p", fast_paths=False)
    pipeline = compile_pipeline([source([]), *C_STAGES], options=opts, check_sink_connection=False)
    assert Plan.compile(pipeline, opts).fast_stateless is None


def test_the_input_documents_are_not_stamped() -> None:
    plan = plan_of([source([]), *C_STAGES])
    fast = plan.fast_stateless
    assert fast is not None and fast.reads_ts
    docs = solar(random.Random(2), 64, False)
    before = copy.deepcopy(docs)
    got = fast.run([(d, 0) for d in docs], -1)
    assert got is not None
    out, wm = got
    assert docs == before and wm == 63 * 3 + int(T0.timestamp() * 1000)
    # `ts: "$_ts"` is the timeField's value, also where a document brought its own `_ts`.
    kept = [i for i, d in enumerate(docs) if d["event_type"] == 0 and d["obs"]["temp"] >= 12]
    assert any("_ts" in docs[i] for i in kept)
    assert [d["ts"] for d in out] == [T0 + timedelta(milliseconds=i * 3) for i in kept]
    # The stamped span's loops (the general path's) are compiled only if that path runs.
    chain = plan.pre[0].chain
    assert chain is not None and chain.ns is not None
    chain([(dict(docs[0], _ts=T0), 0)], EMPTY_VARS)
    assert chain.ns is None


def test_batches_it_cannot_take_are_counted_and_left_untouched() -> None:
    plan = plan_of([source([]), *C_STAGES])
    fast = plan.fast_stateless
    assert fast is not None
    good = solar(random.Random(3), 32, False)
    bad_time = copy.deepcopy(good)
    bad_time[5]["timestamp"] = "not a date"
    bad_stage = copy.deepcopy(good)
    bad_stage[7].update(event_type=0, max_watts=0, obs={"watts": 1, "temp": 30})
    marker = [*copy.deepcopy(good), {SOURCE_DLQ_KEY: {"reason": "bad json", "doc": "{"}}]
    metrics.reset()
    metrics.enable()
    try:
        for docs in (bad_time, bad_stage, marker):
            before = copy.deepcopy(docs)
            assert fast.run([(d, 0) for d in docs], -1) is None
            assert docs == before
        assert fast.run([(d, 0) for d in good], -1) is not None
        fallbacks = metrics.fallbacks()[fast.path]
    finally:
        metrics.disable()
        metrics.reset()
    assert fallbacks == {
        "timeField not an ISO date string": 1,
        "generated code: ExprError": 1,
        "undecodable source record": 1,
    }


def test_operator_stats_are_the_general_paths() -> None:
    docs = solar(random.Random(5), 500, True)
    pipeline = [source(docs), *C_STAGES]
    stats = [run_pipeline_with_stats(copy.deepcopy(pipeline), _opts(64, fast_paths=on))[1] for on in (True, False)]
    keys = ("name", "inputMessageCount", "outputMessageCount", "dlqMessageCount")
    fast, slow = ([{k: e.get(k) for k in keys} for e in s] for s in stats)
    assert fast == slow
    assert sum(e["dlqMessageCount"] for e in fast) > 0


# ---- the generated span alone, against the closures on stamped documents ----------------

EDGE: list[Any] = [0, 1, 2**31, 1.5, NAN, Int64(7), Decimal128("2.5"), True, None, "s", [1, 2], {"x": 2}, T0]


def _steps(stages: list[dict[str, Any]]) -> tuple[Step, ...]:
    p = compile_pipeline([{"$source": {"documents": []}}, *stages], options=ProcessorOptions(name="t"), check_sink_connection=False)
    return compile_steps(p.stages)


@pytest.mark.parametrize("shape", list(TAKEN))
def test_generated_unstamped_span_equals_the_closures_per_document(shape: str) -> None:
    """Per document: the unstamped span's output equals the closures' on the stamped
    document, and it raises exactly for the documents the closures send to the DLQ."""
    steps = _steps(TAKEN[shape])
    span = _unstamped_span(steps)
    docs = []
    for i, (w, m, t, ts) in enumerate(itertools.product(EDGE, [250, 0, None], EDGE, [None, "own", {"x": 1}])):
        d: dict[str, Any] = {"device_id": f"d{i % 3}", "group_id": i, "max_watts": m, "obs": {"watts": w, "temp": t}, "event_type": 0}
        if ts is not None:
            d["_ts"] = ts
        docs.append(d)
    for i, d in enumerate(docs):
        when = T0 + timedelta(milliseconds=i)
        stamped = dict(d, _ts=when)  # as the stamp writes it (no _stream_meta to move here)
        dlq: list[Any] = []
        want = run_chain(tuple(_plain(st) for st in steps), [(stamped, i)], lambda r, x, _d=dlq: _d.append(r), {})
        for strict in (True, False):
            span.use_strict = strict
            try:
                out = span([d], [when])
            except Exception:
                assert dlq, d
            else:
                assert not dlq, d
                assert repr(out) == repr([o for o, _ in want]), d


def _unstamped_span(steps: tuple[Step, ...]) -> Any:
    """The generated unstamped span of ``steps`` (a leading filter becomes its query)."""
    query = steps[0].query if steps[0].kind == FILTER else None
    got = compile_unstamped(query, [st.spec for st in (steps[1:] if query is not None else steps)], "_ts")
    assert got is not None
    return got[0]


def _plain(st: Step) -> Step:
    from dataclasses import replace

    return replace(st, chain=None, chain_len=0, fused_next=None, fuse=False)


# ---- the typed loop (codegen.Switch): written for the types the first batch shows -------

PROFILES: dict[str, dict[str, Any]] = {
    "ints": {"w": 120, "m": 250, "t": 17, "e": 0},
    "floats": {"w": 120.5, "m": 250.0, "t": 17.25, "e": 0.0},
    "strings": {"w": "120", "m": "250", "t": "17", "e": "0"},
    "objects": {"w": {"x": 1}, "m": {"x": 2}, "t": {"x": 3}, "e": {"x": 0}},
    "mixed": {"w": 120, "m": 250.0, "t": "17", "e": 0},
}


def _typed_for(shape: str, profile: str) -> tuple[Any, Any, Any]:
    """The span, its typed loop written for ``profile``'s types, and the closures."""
    steps = _steps(TAKEN[shape])
    span = _unstamped_span(steps)
    p = PROFILES[profile]
    sample = [
        {"device_id": f"d{i}", "group_id": i, "max_watts": p["m"], "event_type": p["e"], "obs": {"watts": p["w"], "temp": p["t"]}}
        for i in range(8)
    ]
    assert span.specialise is not None
    typed = span.specialise(sample)
    return span, typed, steps


@pytest.mark.parametrize("profile", list(PROFILES))
@pytest.mark.parametrize("shape", list(TAKEN))
def test_typed_loop_equals_the_closures_per_document(shape: str, profile: str) -> None:
    """Whatever types the loop was written for, each document of any type gives the
    closures' output on the stamped document, or raises where they DLQ it."""
    _span, typed, steps = _typed_for(shape, profile)
    assert typed is not None
    fn, source = typed
    assert "raise Retyped" in source

    docs = []
    for i, (w, m, t, e) in enumerate(itertools.product(EDGE, [250, 250.0, 0, None, "x"], EDGE, [0, 0.0, True, "0"])):
        docs.append({"device_id": f"device_{i % 5}", "group_id": i, "max_watts": m, "obs": {"watts": w, "temp": t}, "event_type": e})
    docs += [{"device_id": 3, "obs": 5}, {"event_type": 0, "obs": [{"temp": 1, "watts": 2}]}, {"event_type": [0], "obs": {}}]
    for i, d in enumerate(docs):
        when = T0 + timedelta(milliseconds=i)
        dlq: list[Any] = []
        want = run_chain(tuple(_plain(st) for st in steps), [(dict(d, _ts=when), i)], lambda r, x, _d=dlq: _d.append(r), {})
        try:
            out, _misses = fn([d], [when], EMPTY_VARS)
        except Exception:
            assert dlq, d
        else:
            assert not dlq, d
            assert repr(out) == repr([o for o, _ in want]), d


def test_typed_loop_checks_each_value_once() -> None:
    """Workload C on integer data: one exact-type check per value read, no type tests
    left in the operators."""
    _span, typed, _ = _typed_for("workload-C", "ints")
    assert typed is not None
    body = typed[1].split("except (KeyError, Retyped):")[0]
    assert body.count("raise Retyped") == 5  # event_type, obs, obs.temp, obs.watts, max_watts
    assert " = type(" not in body and " is float" not in body


def test_first_batch_without_one_type_per_path_writes_no_typed_loop() -> None:
    span, _, _ = _typed_for("workload-C", "ints")
    assert span.specialise is not None
    assert span.specialise([{"event_type": x, "obs": x, "max_watts": x} for x in (1, 1.5, "a", None)]) is None


@pytest.mark.parametrize("profile", ["ints", "floats"])
def test_a_stream_whose_types_change_drops_the_typed_loop_and_counts_it(profile: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches of one type, then of mixed types: the same output and DLQ as with fast
    paths off; the typed loop ran, then was dropped once (a counted fallback)."""
    rng = random.Random(11)
    ints, floats = solar(rng, 640, False, 4), solar(rng, 640, False, 4)
    for d in floats:
        d["obs"] = {"watts": d["obs"]["watts"] + 0.5, "temp": d["obs"]["temp"] + 0.25}
        d["max_watts"] = float(d["max_watts"])
    first, then = (ints, floats) if profile == "ints" else (floats, ints)
    docs = first + then + solar(rng, 640, True, 4)
    pipeline = [source(docs), *C_STAGES]
    built: list[Any] = []
    from translator.codegen import Switch

    real_call = Switch.__call__

    def watching(self: Switch, batch: Any, times: Any) -> Any:
        out = real_call(self, batch, times)
        built.append(self.typed is not None)
        return out

    metrics.reset()
    metrics.enable()
    try:
        with monkeypatch.context() as m:
            m.setattr(Switch, "__call__", watching)
            fast = run_pipeline(copy.deepcopy(pipeline), _opts(64))
        counted = metrics.fallbacks()
    finally:
        metrics.disable()
        metrics.reset()
    slow = run_pipeline(copy.deepcopy(pipeline), _opts(64, fast_paths=False))
    assert _same(fast.output, slow.output)
    assert _same(fast.dlq, slow.dlq)
    assert built[0] and any(built) and not built[-1]
    from translator.fast_stateless import FALLBACK_RETYPED

    assert sum(r.get(FALLBACK_RETYPED, 0) for r in counted.values()) == 1
