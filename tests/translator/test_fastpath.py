"""The batch fast paths (translator/fastpath.py) give exactly the general path's results.

Each fast step is all-or-nothing per batch: any unusual document sends the batch to the
general path. So the tests run the same pipelines and documents with the fast paths on
and off and require identical outputs and DLQ documents (content and order), over
documents built to hit every fallback: missing fields, arrays and scalars along paths,
non-string or unparsable timestamps, late documents, group ids that need MongoDB's
number/bool rules, values accumulators treat specially.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from bson import Decimal128, Int64

from bench.workloads import E_GROUP, E_PRE
from translator import fastpath
from translator.fastpath import FastGroupFold, IsoMillis, field_getter
from translator.mql.operators.dates import parse_date_string
from translator.mql.values import datetime_to_ms
from translator.runtime import Plan
from translator.testing import RunResult, run_pipeline, run_pipeline_with_stats

T0 = datetime(2024, 7, 26, 13, 20, 0, tzinfo=UTC)


def iso(ms: int, suffix: str = "+00:00") -> str:
    dt = T0 + timedelta(milliseconds=ms)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}" + suffix


# ---- IsoMillis -----------------------------------------------------------------------

GOOD = [
    "2024-07-26T13:20:00.881+00:00",
    "2024-07-26T13:20:00.881Z",
    "2024-07-26T13:20:00Z",
    "2024-07-26T13:20:00",
    "2024-07-26T13:20:00.8Z",
    "2024-07-26T13:20:00.123456Z",  # microseconds truncate to the millisecond
    "2024-07-26T13:20:00.999999-08:00",
    "2024-07-26T23:59:59.500+05:30",  # the offset moves it to the previous... day boundary
    "2024-12-31T23:59:59.999-00:30",
    "2024-02-29T00:00:00.000+00:00",
    "1969-12-31T23:59:59.999Z",  # before the epoch
]


def test_iso_millis_equals_the_engines_parser() -> None:
    m = IsoMillis(parse_date_string)
    got = m.millis(GOOD)
    assert got == [datetime_to_ms(parse_date_string(s)) for s in GOOD]
    m.dedupe = False
    assert m.millis(GOOD) == got


@pytest.mark.parametrize(
    "bad",
    [
        "2024-02-30T00:00:00Z",  # no such day
        "2024-07-26 13:20:00Z",  # parseable by the general path, but not vouched for here
        "2024-07-26T13:20:00.881+0000x",
        "July 26 2024",
        "",
        17,
        None,
        ["2024-07-26T13:20:00Z"],
    ],
)
def test_iso_millis_refuses_what_it_cannot_vouch_for(bad: Any) -> None:
    m = IsoMillis(parse_date_string)
    assert m.millis(["2024-07-26T13:20:00Z", bad]) is None
    m.dedupe = False
    assert m.millis(["2024-07-26T13:20:00Z", bad]) is None
    assert m.millis(["2024-07-26T13:20:00Z"]) == [datetime_to_ms(parse_date_string("2024-07-26T13:20:00Z"))]


def test_field_getter_only_follows_plain_dicts() -> None:
    get = field_getter("$obs.temp")
    assert get is not None
    assert get([{"obs": {"temp": 3}}, {"obs": {"temp": [1, 2]}}]) == [3, [1, 2]]
    with pytest.raises(TypeError):
        get([{"obs": [{"temp": 1}]}])  # an array along the path: MQL semantics differ
    with pytest.raises(KeyError):
        get([{"obs": {}}])
    assert field_getter("$$ROOT") is None
    assert field_getter("plain") is None


# ---- the fast paths against the general path ----------------------------------------

SEED_GROUP = {
    "$group": {
        "_id": "$group_id",
        "minTemp": {"$min": "$obs.temp"},
        "maxTemp": {"$max": "$obs.temp"},
        "avgTemp": {"$avg": "$obs.temp"},
        "stdevPTemp": {"$stdDevPop": "$obs.temp"},
        "n": {"$count": {}},
        "ones": {"$sum": 1},
        "sumWatts": {"$sum": "$obs.watts"},
    }
}


def source(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return {"$source": {"documents": docs, "timeField": {"$dateFromString": {"dateString": "$timestamp"}}}}


def tumbling(group: dict[str, Any], lateness: int | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"interval": {"size": 3, "unit": "second"}, "pipeline": [group]}
    if lateness is not None:
        spec["allowedLateness"] = {"size": lateness, "unit": "second"}
    return {"$tumblingWindow": spec}


def hopping(group: dict[str, Any], hop: int = 2) -> dict[str, Any]:
    return {
        "$hoppingWindow": {
            "interval": {"size": 10, "unit": "second"},
            "hopSize": {"size": hop, "unit": "second"},
            "pipeline": [group],
        }
    }


WINDOWS = {
    "tumbling": lambda g: tumbling(g),
    "hopping": lambda g: hopping(g),
    # panes of gcd(10 s, 4 s) = 2 s; windows aligned to a 1 s offset
    "hopping-10s-4s": lambda g: hopping(g, hop=4),
    "tumbling-offset": lambda g: {
        "$tumblingWindow": dict(tumbling(g)["$tumblingWindow"], offset={"offsetFromUtc": 1, "unit": "second"})
    },
}


def clean_docs(rng: random.Random, n: int, groups: list[Any]) -> list[dict[str, Any]]:
    docs = []
    for i in range(n):
        t = i * 2 - (rng.randrange(1000) if rng.random() < 0.05 else 0)
        docs.append(
            {
                "device_id": f"device_{i % 5}",
                "group_id": groups[i % len(groups)],
                "timestamp": iso(t),
                "obs": {"temp": rng.randrange(-5, 40), "watts": rng.choice([rng.randrange(500), rng.random() * 500])},
            }
        )
    return docs


ODD_VALUES: list[Any] = [
    None,
    "hot",
    [1, 2],
    Int64(7),
    Decimal128("2.5"),
    1.5,
    True,
    float("nan"),
    2**40,
]


def spoil(rng: random.Random, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Sprinkle documents that each defeat one fast step."""
    out = [dict(d, obs=dict(d["obs"])) for d in docs]
    for d in rng.sample(out, k=max(1, len(out) // 15)):
        kind = rng.randrange(9)
        if kind == 0:
            del d["obs"]["temp"]
        elif kind == 1:
            d["obs"] = [d["obs"]]
        elif kind == 2:
            d["obs"]["temp"] = rng.choice(ODD_VALUES)
        elif kind == 3:
            d["timestamp"] = rng.choice(["not a date", 12345, None, "2024-07-26 13:20:01Z"])
        elif kind == 4:
            d["group_id"] = rng.choice([1, 1.0, Int64(1), True, None, {"a": 1}, [1]])
        elif kind == 5:
            del d["group_id"]
        elif kind == 6:
            d["timestamp"] = iso(-20_000)  # far behind: late
        elif kind == 7:
            d["obs"] = "scalar"
        else:
            d["timestamp"] = iso(int(d["timestamp"][17:19]) * 1000, "+05:30")
    return out


def run_both(pipeline: list[dict[str, Any]], batch_size: int, monkeypatch: pytest.MonkeyPatch) -> tuple[RunResult, RunResult, int]:
    opts = {"batchSize": batch_size} if batch_size else None
    taken = [0]
    real_run = FastGroupFold.run

    def counting(self: FastGroupFold, batch: Any, wm: int, into: dict[int, Any]) -> Any:
        res = real_run(self, batch, wm, into)
        taken[0] += res is not None
        return res

    with monkeypatch.context() as m:
        m.setattr(FastGroupFold, "run", counting)
        fast = run_pipeline(_copy(pipeline), _opts(opts))
    slow = run_pipeline(_copy(pipeline), _opts(opts, fast_paths=False))  # no accelerator at all
    return fast, slow, taken[0]


def _opts(opts: dict[str, Any] | None, fast_paths: bool = True) -> Any:
    from translator.options import ProcessorOptions

    return ProcessorOptions(name="run_pipeline", batch_size=(opts or {}).get("batchSize", 1024), fast_paths=fast_paths)


def _copy(pipeline: list[dict[str, Any]]) -> list[dict[str, Any]]:
    import copy

    return copy.deepcopy(pipeline)


def by_window(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(docs, key=lambda d: (d["_stream_meta"]["window"]["start"], repr(d["_id"])))


def _nan_safe(docs: list[dict[str, Any]]) -> str:
    """NaN != NaN, so compare reprs; a DLQ entry's own ``_id`` and ``dlqTime`` differ per run."""
    return repr([{k: v for k, v in d.items() if k not in ("dlqTime",) and not (k == "_id" and "errInfo" in d)} for d in docs])


@pytest.mark.parametrize("batch_size", [1, 7, 64, 1024])
@pytest.mark.parametrize("window", list(WINDOWS))
@pytest.mark.parametrize("spoiled", [False, True])
def test_fast_and_general_paths_agree(batch_size: int, window: str, spoiled: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(batch_size * 31 + len(window) + spoiled)
    docs = clean_docs(rng, 6000, ["g1", "g2", "g3", 4, None])
    if spoiled:
        docs = spoil(rng, docs)
    stage = WINDOWS[window](SEED_GROUP)
    fast, slow, taken = run_both([source(docs), stage], batch_size, monkeypatch)
    # $group's output order is unspecified in MongoDB; windows stay in start order.
    assert _nan_safe(by_window(fast.output)) == _nan_safe(by_window(slow.output))
    assert _nan_safe(fast.dlq) == _nan_safe(slow.dlq)
    assert fast.output, "the pipeline produced windows"
    if spoiled:
        assert fast.dlq, "the spoiled documents reached the DLQ"
    if not spoiled or batch_size <= 7:  # big spoiled batches all hold a bad document
        assert taken > 0, "the fast path ran on some batches"


def test_constant_id_and_source_time(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(5)
    docs = clean_docs(rng, 800, ["a"])
    group: dict[str, Any] = {"$group": {"_id": None, "n": {"$count": {}}, "t": {"$sum": "$obs.temp"}}}
    fast, slow, taken = run_both([source(docs), tumbling(group, lateness=0)], 64, monkeypatch)
    assert fast.output == slow.output and _nan_safe(fast.dlq) == _nan_safe(slow.dlq)
    assert taken > 0
    assert sum(d["n"] for d in fast.output) + len(fast.dlq) == 800


def test_the_seed_shape_takes_the_fast_path() -> None:
    from translator.compile import compile_pipeline
    from translator.options import ProcessorOptions

    opts = ProcessorOptions(name="p")
    plan = Plan.compile(compile_pipeline([source([]), tumbling(SEED_GROUP)], options=opts), opts)
    assert plan.fast_fold is not None and plan.fast_time is not None
    # Shapes outside the fast path's exact cover keep the general path.
    for group in (
        {"$group": {"_id": {"g": "$group_id"}, "n": {"$count": {}}}},  # compound _id
        {"$group": {"_id": "$group_id", "v": {"$push": "$obs.temp"}}},  # fine: order kept
        {"$group": {"_id": "$group_id", "v": {"$sum": {"$multiply": ["$obs.temp", 2]}}}},  # computed argument
    ):
        p = Plan.compile(compile_pipeline([source([]), tumbling(group)], options=opts), opts)
        expect_fast = group["$group"]["_id"] == "$group_id" and "$push" in str(group)
        assert (p.fast_fold is not None) == expect_fast, group


def test_date_cache_matches_ms_to_datetime() -> None:
    from translator.mql.values import ms_to_datetime

    cache = fastpath.DateCache()
    ms = [0, -1, 1_722_000_000_881, 1_722_000_000_881, 253402300799999, -62135596800000]
    rng = random.Random(1)
    ms += [rng.randrange(-62135596800000, 253402300800000) for _ in range(2000)]
    got = cache.dates(ms)
    assert got == [ms_to_datetime(t) for t in ms]
    assert {d.tzinfo for d in got} == {UTC}


INT_GROUP = {"$group": {k: v for k, v in SEED_GROUP["$group"].items() if k != "sumWatts"}}  # int arguments only
TEMP_GROUP = {"$group": {k: v for k, v in SEED_GROUP["$group"].items() if k not in ("sumWatts", "n", "ones")}}


@pytest.mark.parametrize("group", [SEED_GROUP, INT_GROUP, TEMP_GROUP], ids=["mixed", "ints", "one-argument"])
@pytest.mark.parametrize("groups", [5, 1000])
@pytest.mark.parametrize("spoiled", [False, True])
def test_many_groups_one_document_each_per_batch(
    spoiled: bool, groups: int, group: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With many groups most groups of a batch hold one document (the from_int path),
    and entries held from earlier batches are added to in place; batches of int
    arguments only take the one-pass fold (_apply_ints)."""
    rng = random.Random(77 + spoiled + groups)
    docs = clean_docs(rng, 4000, [f"g{i}" for i in range(groups * 7 // 10)] + list(range(groups * 3 // 10)))
    if spoiled:
        docs = spoil(rng, docs)
    fast, slow, taken = run_both([source(docs), tumbling(group)], 16, monkeypatch)
    assert _nan_safe(by_window(fast.output)) == _nan_safe(by_window(slow.output))
    assert _nan_safe(fast.dlq) == _nan_safe(slow.dlq)
    assert taken > 0 and len(fast.output) > (1000 if groups > 5 else 5)


def test_group_with_only_an_id(monkeypatch: pytest.MonkeyPatch) -> None:
    docs = clean_docs(random.Random(3), 500, ["a", "b", 7])
    fast, slow, taken = run_both([source(docs), tumbling({"$group": {"_id": "$group_id"}})], 32, monkeypatch)
    assert by_window(fast.output) == by_window(slow.output) and taken > 0
    assert {d["_id"] for d in fast.output} == {"a", "b", 7}


def test_a_group_reading_the_envelope_keeps_the_general_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """`_ts` is the timeField's value even when a document brings its own `_ts`."""
    docs = [dict(d, _ts="the document's own") for d in clean_docs(random.Random(9), 300, ["a"])]
    group = {"$group": {"_id": "$group_id", "last": {"$max": "$_ts"}, "src": {"$first": "$_stream_meta.source.type"}}}
    fast, slow, taken = run_both([source(docs), tumbling(group)], 32, monkeypatch)
    assert taken == 0
    assert fast.output == slow.output
    assert all(isinstance(d["last"], datetime) and d["src"] == "documents" for d in fast.output)


# ---- the accelerator switch, fallback counters, accumulator hooks ------------------------


def test_fast_paths_off_compiles_no_accelerator() -> None:
    from translator.compile import compile_pipeline
    from translator.loader import options_from_mapping

    on = options_from_mapping({}, name="p")
    off = options_from_mapping({"fastPaths": False}, name="p")
    assert on.fast_paths and not off.fast_paths
    stateless = [
        source([]),
        {"$match": {"obs.temp": {"$gte": 1}}},
        {"$addFields": {"t": {"$multiply": ["$obs.temp", 2]}}},
        {"$project": {"t": 1, "group_id": 1}},
    ]
    for pipeline, windowed in ((stateless, False), ([source([]), tumbling(SEED_GROUP)], True)):
        fast = Plan.compile(compile_pipeline(_copy(pipeline), options=on), on)
        slow = Plan.compile(compile_pipeline(_copy(pipeline), options=off), off)
        assert fast.fast_time is not None and slow.fast_time is None
        assert (fast.fast_fold is not None) == windowed and slow.fast_fold is None
        if not windowed:
            assert fast.pre[0].chain is not None and fast.pre[1].fused_next is not None
            assert all(st.chain is None and st.fused_next is None and not st.fuse for st in slow.pre)


def test_fast_paths_option_must_be_a_bool() -> None:
    from translator.errors import TranslateError
    from translator.loader import options_from_mapping

    with pytest.raises(TranslateError, match=r"options.fastPaths: expected bool, got int"):
        options_from_mapping({"fastPaths": 0})


def test_group_fast_path_fallbacks_are_counted_with_their_reason() -> None:
    """Batches the fast path hands to the general path show in verbose operatorStats."""
    from translator import metrics

    docs = clean_docs(random.Random(1), 64, ["a", "b"])  # batches of 16
    docs[20] = dict(docs[20], timestamp="not a date")  # batch 2: timeField
    docs[40] = dict(docs[40], obs={})  # batch 3: a missing field
    docs[60] = dict(docs[60], group_id=1.5)  # batch 4: a group id the fast path leaves
    metrics.reset()
    metrics.enable()
    try:
        result = run_pipeline([source(docs), tumbling(SEED_GROUP)], _opts({"batchSize": 16}))
        stats = metrics.operator_stats(result.pipeline)
    finally:
        metrics.disable()
        metrics.reset()
    window = next(e for e in stats if e["name"] == "$tumblingWindow")
    assert window["fastPathFallbacks"] == {
        fastpath.FALLBACK_TIME: 1,
        fastpath.FALLBACK_FIELD: 1,
        fastpath.FALLBACK_GROUP_ID: 1,
    }
    assert window["inputMessageCount"] == 63  # the bad timeField went to the DLQ before it
    assert len(result.dlq) == 1


def test_clean_batches_count_no_fallback() -> None:
    from translator import metrics

    metrics.reset()
    metrics.enable()
    try:
        result = run_pipeline([source(clean_docs(random.Random(2), 200, ["a"])), tumbling(SEED_GROUP, lateness=10)], _opts({"batchSize": 50}))
        stats = metrics.operator_stats(result.pipeline)
    finally:
        metrics.disable()
        metrics.reset()
    assert all("fastPathFallbacks" not in e for e in stats)


INT_SAMPLES: list[list[int]] = [
    [0],
    [1, 2, 3],
    [-5, 7, 7, -5, 0],
    [2**31 - 1, 1],  # int32 overflow into a long
    [-(2**31), -1],
    [2**40, -(2**40), 3],
    [2**63 - 1, 1],  # beyond int64: a double in MongoDB
    [-(2**63), -1],
    list(range(-50, 50, 3)),
]


def _acc_specs() -> list[tuple[str, Any]]:
    from translator.accumulators import ACCUMULATORS, compile_accumulator
    from translator.errors import TranslateError
    from translator.mql.expr import Ctx

    out = []
    for op in sorted(ACCUMULATORS):
        for arg in ("$v", {}):  # a field, or $count's empty object
            try:
                spec = compile_accumulator(op, arg, Ctx(f"g.{op}"))
            except TranslateError:
                continue
            if spec.add_ints is not None or spec.from_int is not None:
                out.append((op, spec))
            break
    return out


ACC_SPECS = _acc_specs()


def test_int_hooks_exist() -> None:
    names = {op for op, _ in ACC_SPECS}
    assert names == {"$sum", "$avg", "$min", "$max", "$count", "$stdDevPop", "$stdDevSamp"}


@pytest.mark.parametrize(("op", "spec"), ACC_SPECS, ids=[op for op, _ in ACC_SPECS])
@pytest.mark.parametrize("values", INT_SAMPLES, ids=range(len(INT_SAMPLES)))
def test_accumulator_int_hooks_equal_add(op: str, spec: Any, values: list[int]) -> None:
    """``add_ints`` and ``from_int`` give the same state as ``add`` on the same values,
    from a fresh state and from one that already holds values."""
    from translator.accumulators import IntColumn

    def by_add(state: Any, xs: list[Any]) -> Any:
        for x in xs:
            state = spec.add(state, x)
        return state

    for prefix in ([], [3], [Decimal128("1.5")], [2.25]):
        expected = by_add(by_add(spec.init(), prefix), values)
        if spec.add_ints is not None:
            got = spec.add_ints(by_add(spec.init(), prefix), IntColumn.of(list(values)))
            assert repr(got) == repr(expected), (prefix, values)
            assert repr(spec.final(got)) == repr(spec.final(expected))
    if spec.from_int is not None:
        for x in values:
            assert repr(spec.from_int(x)) == repr(spec.add(spec.init(), x)), x
            assert repr(spec.final(spec.from_int(x))) == repr(spec.final(spec.add(spec.init(), x)))


# ---- the row-wise fold (many groups, float/string/array accumulators) --------------------

ROW_OPS = ["$min", "$max", "$sum", "$avg", "$count", "$stdDevPop", "$stdDevSamp", "$push", "$addToSet", "$first", "$last"]
ROW_SAMPLES: dict[str, list[Any]] = {
    fastpath.INT: [0, 5, -3, 2**31, -(2**31) - 1, 7, 5],
    fastpath.FLOAT: [0.5, -1.25, 3.0, 1e300, -0.0, 0.0, 2.5],
    fastpath.STR: ["b", "a", "", "zz", "a"],
}
ROW_PREFIXES: list[list[Any]] = [[], [3], [2.5], [Decimal128("1.5")], [Int64(4)], [float("nan")], ["s"], [None]]


@pytest.mark.parametrize("op", ROW_OPS)
@pytest.mark.parametrize("cls", list(ROW_SAMPLES))
def test_row_fold_templates_equal_add(op: str, cls: str) -> None:
    """Each inline template (new state and add) gives the state the accumulator's own
    ``add`` gives, from a fresh group and from groups whose state other types built."""
    from translator.accumulators import compile_accumulator
    from translator.mql.expr import Ctx

    spec = compile_accumulator(op, {} if op == "$count" else "$v", Ctx(f"g.{op}"))
    rows = fastpath.RowFold((spec,), [0], [None], 1)
    fn = rows.get((cls,))
    assert fn is not None
    values = ROW_SAMPLES[cls]
    for prefix in ROW_PREFIXES:
        expected: dict[Any, Any] = {}
        into: dict[int, Any] = {}
        for key, pre in (("old", prefix), ("new", None)):
            if pre is not None:
                state = spec.init()
                for x in pre:
                    state = spec.add(state, x)
                into.setdefault(0, {}).setdefault(7, {})[key] = [key, state]
        gids = [("old" if i % 2 else "new") for i in range(len(values))]
        for g, x in zip(gids, values, strict=True):
            entry = expected.get(g)
            if entry is None:
                base = into.get(0, {}).get(7, {}).get(g)
                state = spec.init() if base is None else _replay(spec, prefix)
                entry = expected[g] = [g, state]
            entry[1] = spec.add(entry[1], x)
        fn(gids, values, into, 7, {}, None, 1)
        got = into[0][7]
        assert repr({g: got[g] for g in sorted(got)}) == repr({g: expected[g] for g in sorted(expected)}), prefix


def _replay(spec: Any, xs: list[Any]) -> Any:
    state = spec.init()
    for x in xs:
        state = spec.add(state, x)
    return state


def test_row_fold_refuses_unsafe_accumulators() -> None:
    from translator.accumulators import compile_accumulator
    from translator.mql.expr import Ctx

    spec = compile_accumulator("$mergeObjects", "$v", Ctx("g.m"))
    assert fastpath.RowFold((spec,), [0], [None], 1).get((fastpath.INT,)) is None


def test_column_class() -> None:
    cc = fastpath.column_class
    assert cc([1, 2]) == fastpath.INT and cc([1.5]) == fastpath.FLOAT and cc(["a"]) == fastpath.STR
    assert cc([1, 1.5]) is None and cc([True]) is None and cc([float("nan"), 1.0]) is None and cc([Int64(1)]) is None


ARRAY_GROUP = {
    "$group": {
        "_id": "$group_id",
        "n": {"$sum": 1},
        "maxW": {"$max": "$obs.watts"},
        "minW": {"$min": "$obs.watts"},
        "sumW": {"$sum": "$obs.watts"},
        "temps": {"$addToSet": "$obs.temp"},
        "watts": {"$push": "$obs.watts"},
        "firstDev": {"$first": "$device_id"},
        "lastDev": {"$last": "$device_id"},
        "maxDev": {"$max": "$device_id"},
        "sd": {"$stdDevSamp": "$obs.temp"},
    }
}


ORDER_FREE_GROUP = {"$group": {k: v for k, v in ARRAY_GROUP["$group"].items() if k in ("_id", "n", "maxW", "minW", "sumW", "maxDev", "sd")}}


def _float_watts(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [dict(d, obs=dict(d["obs"], watts=float(d["obs"]["watts"]) + 0.25)) for d in docs]


def _count_rows(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    used = [0]
    real = FastGroupFold._rows

    def counting(self: FastGroupFold, *a: Any) -> bool:
        got = real(self, *a)
        used[0] += got
        return got

    monkeypatch.setattr(FastGroupFold, "_rows", counting)
    return used


@pytest.mark.parametrize("groups", [3, 400])
@pytest.mark.parametrize("spoiled", [False, True])
@pytest.mark.parametrize("window", ["tumbling", "hopping"])
def test_row_fold_agrees_with_the_general_path(groups: int, spoiled: bool, window: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Float, string and array accumulators fold row by row; $push keeps arrival order."""
    rng = random.Random(groups + spoiled * 7 + len(window))
    docs = _float_watts(clean_docs(rng, 3000, [f"g{i}" for i in range(groups)] + list(range(groups))))
    if spoiled:
        docs = spoil(rng, docs)
    used = _count_rows(monkeypatch)
    # Hopping windows fold by panes only for an order-free $group.
    group = ARRAY_GROUP if window == "tumbling" else ORDER_FREE_GROUP
    fast, slow, taken = run_both([source(docs), WINDOWS[window](group)], 16 if spoiled else 64, monkeypatch)
    assert _nan_safe(by_window(fast.output)) == _nan_safe(by_window(slow.output))
    assert _nan_safe(fast.dlq) == _nan_safe(slow.dlq)
    assert taken > 0 and used[0] > 0


def test_many_int_groups_fold_row_by_row(monkeypatch: pytest.MonkeyPatch) -> None:
    docs = clean_docs(random.Random(4), 3000, list(range(2000)))
    docs = [dict(d, obs=dict(d["obs"], watts=int(d["obs"]["watts"]))) for d in docs]
    used = _count_rows(monkeypatch)
    fast, slow, taken = run_both([source(docs), tumbling(SEED_GROUP)], 256, monkeypatch)
    assert by_window(fast.output) == by_window(slow.output) and len(fast.output) > 1500
    assert used[0] == taken > 0


# ---- stages before the window and a computed _id (benchmark workload E's shape) ------------

OFFPATH_PRE = E_PRE  # the benchmark's workload E, so the test covers exactly its shape
OFFPATH_GROUP = E_GROUP


def offpath_docs(rng: random.Random, n: int, spoiled: bool) -> list[dict[str, Any]]:
    docs = clean_docs(rng, n, list(range(7)))
    for d in docs:
        d["obs"]["watts"] = int(d["obs"]["watts"])
        d["max_watts"] = rng.choice([250, 450])
        d["event_type"] = 1 if rng.random() < 0.1 else 0
    if spoiled:
        for d in rng.sample(docs, k=n // 20):
            kind = rng.randrange(5)
            if kind == 0:
                d["max_watts"] = 0  # $divide by zero: the $addFields DLQs it
            elif kind == 1:
                d["group_id"] = rng.choice([1.5, None, "x", Int64(2)])  # $toString rules, a null _id
            elif kind == 2:
                del d["device_id"]  # $concat of a missing field: null
            elif kind == 3:
                d["device_id"] = 5  # $concat of a number: an error, the DLQ
            else:
                d["obs"]["watts"] = rng.choice([1.5, None, "w"])
    return docs


@pytest.mark.parametrize("spoiled", [False, True])
@pytest.mark.parametrize("batch_size", [16, 256])
def test_stages_before_the_window_and_computed_id_agree(spoiled: bool, batch_size: int, monkeypatch: pytest.MonkeyPatch) -> None:
    docs = offpath_docs(random.Random(batch_size + spoiled), 4000, spoiled)
    fast, slow, taken = run_both([source(docs), *OFFPATH_PRE, tumbling(OFFPATH_GROUP)], batch_size, monkeypatch)
    assert _nan_safe(by_window(fast.output)) == _nan_safe(by_window(slow.output))
    assert _nan_safe(fast.dlq) == _nan_safe(slow.dlq)
    assert fast.output
    if not spoiled or batch_size < 64:  # big spoiled batches all hold a bad document
        assert taken > 0
    if spoiled:
        assert any("$divide" in d["errInfo"]["reason"] for d in fast.dlq)


def test_stages_before_the_window_reading_ts_keep_the_general_path() -> None:
    from translator.compile import compile_pipeline
    from translator.options import ProcessorOptions

    opts = ProcessorOptions(name="p")

    def fast_fold(pre: list[dict[str, Any]], group: dict[str, Any] = OFFPATH_GROUP) -> Any:
        pipeline = compile_pipeline([source([]), *_copy(pre), tumbling(group)], options=opts)
        return Plan.compile(pipeline, opts).fast_fold

    assert fast_fold(OFFPATH_PRE) is not None
    assert fast_fold([{"$addFields": {"t": "$_ts"}}]) is None
    assert fast_fold([{"$addFields": {"r": "$$ROOT"}}]) is None
    assert fast_fold([*OFFPATH_PRE, {"$match": {"n": 1}}]) is None  # a $match after a map stage
    assert fast_fold(OFFPATH_PRE, {"$group": {"_id": {"$toUpper": "$device_id"}}}) is None


def test_stages_before_the_window_count_as_on_the_general_path() -> None:
    """operatorStats of the stages before the window are the same on both paths; a
    batch whose $addFields raises is counted as a fallback of the window."""

    docs = offpath_docs(random.Random(11), 256, False)
    docs[100]["max_watts"] = 0
    docs[100]["event_type"] = 0
    stats = stats_both_ways([source(docs), *OFFPATH_PRE, tumbling(OFFPATH_GROUP, lateness=10)])
    window = next(e for e in stats if e["name"] == "$tumblingWindow")
    assert window["fastPathFallbacks"] == {fastpath.FALLBACK_PRE: 1}


def stats_both_ways(pipeline: list[dict[str, Any]], batch_size: int = 64) -> list[dict[str, Any]]:
    """operatorStats with the fast paths on; their counts must equal those without."""
    stats = [run_pipeline_with_stats(_copy(pipeline), _opts({"batchSize": batch_size}, fast_paths=on))[1] for on in (True, False)]
    keys = ("name", "inputMessageCount", "outputMessageCount", "dlqMessageCount")
    fast, slow = ([{k: e.get(k) for k in keys} for e in s] for s in stats)
    assert fast == slow
    return stats[0]


# ---- stages before the window read as columns (codegen.compile_columns) --------------

# Stage shapes whose output the fold reads: fields the stages add, keep, rename or remove,
# paths below an added field, and a literal where the fold expects a document.
COLUMN_SHAPES: dict[str, tuple[list[dict[str, Any]], dict[str, Any]]] = {
    "added-subdocument": (
        [{"$addFields": {"sub": "$obs", "g": "$group_id"}}],
        {"$group": {"_id": "$g", "hi": {"$max": "$sub.temp"}, "w": {"$push": "$sub.watts"}, "n": {"$count": {}}}},
    ),
    "match-project": (
        [{"$match": {"event_type": 0}}, {"$project": {"device_id": 1, "group_id": 1, "w": "$obs.watts", "obs": 1}}],
        {"$group": {"_id": {"$concat": ["$device_id", "/", {"$toString": "$group_id"}]}, "w": {"$sum": "$w"}, "t": {"$addToSet": "$obs.temp"}}},
    ),
    "project-drops-a-field": (
        [{"$project": {"group_id": 1, "w": "$obs.watts"}}],
        {"$group": {"_id": "$group_id", "t": {"$min": "$obs.temp"}}},  # obs is gone: every batch falls back
    ),
    "overwritten-and-removed": (
        [{"$addFields": {"group_id": "$device_id", "obs": {"$literal": 5}, "device_id": "$$REMOVE"}}],
        {"$group": {"_id": "$group_id", "t": {"$max": "$obs.temp"}, "d": {"$first": "$device_id"}}},
    ),
    "string-constant": (
        [{"$match": {"event_type": 0}}, {"$addFields": {"k": "all", "r": {"$divide": ["$obs.watts", "$max_watts"]}}}],
        {"$group": {"_id": "$k", "r": {"$max": "$r"}, "w": {"$push": "$obs.watts"}}},
    ),
}


def column_docs(rng: random.Random, n: int, spoiled: bool) -> list[dict[str, Any]]:
    docs = offpath_docs(rng, n, spoiled)
    if spoiled:
        for d in rng.sample(docs, k=n // 40):
            kind = rng.randrange(4)
            if kind == 0:
                d["obs"] = [d["obs"]]  # an array along the path: MQL's rules, the general path's
            elif kind == 1:
                d["obs"] = "scalar"
            elif kind == 2:
                del d["obs"]["temp"]
            else:
                d["timestamp"] = iso(-20_000)  # late
    return docs


@pytest.mark.parametrize("spoiled", [False, True])
@pytest.mark.parametrize("shape", list(COLUMN_SHAPES))
def test_stage_outputs_read_as_columns_agree(shape: str, spoiled: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    pre, group = COLUMN_SHAPES[shape]
    docs = column_docs(random.Random(len(shape) + spoiled), 3000, spoiled)
    fast, slow, taken = run_both([source(docs), *pre, tumbling(group)], 32, monkeypatch)
    assert _nan_safe(by_window(fast.output)) == _nan_safe(by_window(slow.output))
    assert _nan_safe(fast.dlq) == _nan_safe(slow.dlq)
    assert fast.output
    if shape in ("project-drops-a-field", "overwritten-and-removed"):
        assert taken == 0  # a field the fold reads is never there, or under a literal
    elif not spoiled:
        assert taken > 0
    if spoiled:
        assert fast.dlq


def _fast_fold(pipeline: list[dict[str, Any]]) -> FastGroupFold:
    from translator.compile import compile_pipeline
    from translator.options import ProcessorOptions

    opts = ProcessorOptions(name="p")
    fold = Plan.compile(compile_pipeline(_copy(pipeline), options=opts), opts).fast_fold
    assert fold is not None
    return fold


def test_stage_outputs_are_read_without_copying_the_documents() -> None:
    """The fold reads the stages' output fields straight from the input documents and
    the added values: nothing is copied, the input documents are left as they were."""
    import copy

    from translator.windows import NEG_INF

    fold = _fast_fold([source([]), *OFFPATH_PRE, tumbling(OFFPATH_GROUP)])
    assert fold.cols is not None and "dict(doc)" not in fold.cols.source
    docs = offpath_docs(random.Random(4), 200, False)
    before = copy.deepcopy(docs)
    into: dict[int, Any] = {}
    wm = fold.run([(d, 0) for d in docs], NEG_INF, into)
    assert wm is not None and into
    assert docs == before
    entries = [e for panes in into.values() for table in panes.values() for e in table.values()]
    assert sum(e[1][7] for e in entries) == sum(d["event_type"] == 0 for d in docs)  # $sum: 1 counts


def test_stage_outputs_read_as_columns_fall_back_for_the_same_reasons() -> None:
    """A batch goes to the general path for the reason the copying chain and the field
    getters gave: a raising stage first, then a late document, then a missing field."""
    from translator import metrics
    from translator.contracts import source_dlq

    fold = _fast_fold([source([]), *OFFPATH_PRE, tumbling(OFFPATH_GROUP)])

    def reason(edit: Any) -> Any:
        docs = offpath_docs(random.Random(8), 64, False)
        for d in docs:
            d["event_type"] = 0
        edit(docs)
        metrics.reset()
        metrics.enable()
        try:
            into: dict[int, Any] = {}
            got = fold.run([(d, 0) for d in docs], 10_000, into)
            assert got is None and not into
            return metrics.fallbacks()[fold.path]
        finally:
            metrics.disable()
            metrics.reset()

    def missing(docs: list[dict[str, Any]]) -> None:
        del docs[40]["obs"]["temp"]

    def divide_by_zero(docs: list[dict[str, Any]]) -> None:
        missing(docs)
        docs[50]["max_watts"] = 0

    def late(docs: list[dict[str, Any]]) -> None:
        missing(docs)
        docs[60]["timestamp"] = iso(-20_000)

    def undecodable(docs: list[dict[str, Any]]) -> None:
        docs[30] = source_dlq("bad json", "{")

    assert reason(missing) == {fastpath.FALLBACK_FIELD: 1}
    assert reason(divide_by_zero) == {fastpath.FALLBACK_PRE: 1}
    assert reason(late) == {fastpath.FALLBACK_LATE: 1}
    assert reason(undecodable) == {fastpath.FALLBACK_SOURCE_ERROR: 1}
    # Without a timeField (the record's time), the $match would drop it: looked for first.
    fold = _fast_fold([{"$source": {"documents": []}}, *OFFPATH_PRE, tumbling(OFFPATH_GROUP)])
    assert fold.times is None and fold.check_markers
    assert reason(undecodable) == {fastpath.FALLBACK_SOURCE_ERROR: 1}


def test_stages_before_the_window_count_once_when_the_batch_falls_back() -> None:
    """A batch the fast path hands over after running the stages (a late document) is
    counted by the general path only."""

    docs = offpath_docs(random.Random(12), 256, False)
    docs[200]["timestamp"] = iso(-20_000)
    docs[200]["event_type"] = 0
    stats = stats_both_ways([source(docs), *OFFPATH_PRE, tumbling(OFFPATH_GROUP)])
    window = next(e for e in stats if e["name"] == "$tumblingWindow")
    assert window["fastPathFallbacks"] == {fastpath.FALLBACK_LATE: 1}
