"""translator.codegen: the generated loop of a $match + $addFields/$project span gives
exactly what the closures give one stage at a time (values, BSON types, key order, DLQ
reasons), falls back to the closures for other shapes, and never puts a user string in
its source unescaped."""

from __future__ import annotations

import itertools
from collections import OrderedDict
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from bson import Decimal128, Int64

from translator.compile import compile_pipeline
from translator.mql.expr import ExprError
from translator.options import ProcessorOptions
from translator.stages import Step, compile_steps, run_chain, run_chain_docs

NAN = float("nan")
ABSENT = object()  # the field is not in the document
TS = datetime(2024, 7, 26, 13, 20, tzinfo=UTC)
EDGE: list[Any] = [
    0,
    1,
    -3,
    2**31 - 1,
    2**31,
    2**53 + 1,
    1.5,
    0.0,
    -0.0,
    NAN,
    float("inf"),
    Int64(7),
    Int64(0),
    Decimal128("2.5"),
    Decimal128("0"),
    True,
    False,
    None,
    "s",
    "",
    [1, 2],
    [{"x": 1}, {"y": 2}],
    {"x": 2},
    {"x": {"y": 3}},
    TS,
    ABSENT,
]


def steps_of(stages: list[dict[str, Any]], variables: frozenset[str] = frozenset()) -> tuple[Step, ...]:
    p = compile_pipeline([{"$source": {"documents": []}}, *stages], options=ProcessorOptions(name="t"), check_sink_connection=False)
    return compile_steps(p.stages, variables)


def docs_ab(extra: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    out = []
    for i, (a, b) in enumerate(itertools.product(EDGE, EDGE)):
        d: dict[str, Any] = {"_id": i}
        if a is not ABSENT:
            d["a"] = a
        if b is not ABSENT:
            d["b"] = b
        d.update(extra or {})
        out.append(d)
    return out


def show(x: Any) -> Any:
    """``x`` with every value's exact type, dict key order kept (repr(Int64(5)) is "5")."""
    if isinstance(x, dict):
        return [type(x).__name__, [(k, show(v)) for k, v in x.items()]]
    if isinstance(x, (list, tuple)):
        return [type(x).__name__, [show(v) for v in x]]
    return (type(x).__name__, repr(x))


def one_by_one(steps: tuple[Step, ...], recs: list[Any], vars_: dict[str, Any]) -> tuple[list[Any], list[Any]]:
    """The closures alone, one stage at a time (the reference)."""
    dlq: list[Any] = []
    for st in steps:
        plain = replace(st, chain=None, fused_next=None)
        recs = run_chain((plain,), recs, lambda r, d: dlq.append((r, d)), vars_)
    return recs, dlq


def check_same(stages: list[dict[str, Any]], docs: list[dict[str, Any]], vars_: dict[str, Any] | None = None) -> list[Any]:
    v = vars_ or {}
    steps = steps_of(stages, frozenset(v))
    assert steps[0].chain is not None, "the span must have generated code"
    recs = [(d, i) for i, d in enumerate(docs)]
    dlq: list[Any] = []
    got = run_chain(steps, recs, lambda r, d: dlq.append((r, d)), v)
    want, want_dlq = one_by_one(steps, recs, v)
    chain = steps[0].chain
    assert chain is not None
    if steps[0].chain_len == len(steps):
        # The generated code itself (not the runner's fallback) gives each document's
        # result, and raises only for the documents the closures send to the DLQ.
        for use_strict in (True, False):
            for rec in recs:
                chain.use_strict = use_strict
                one, one_dlq = one_by_one(steps, [rec], v)
                try:
                    direct = chain([rec], v)
                except ExprError:
                    assert one_dlq, rec
                else:
                    assert not one_dlq, rec
                    assert show(direct) == show(one), rec
        chain.use_strict = True
    assert show(got) == show(want)
    assert show(dlq) == show(want_dlq)
    dlq2: list[Any] = []
    docs_only = run_chain_docs(steps, recs, lambda r, d: dlq2.append((r, d)), v)
    assert show(docs_only) == show([d for d, _ in want])
    assert show(dlq2) == show(want_dlq)
    return got


def test_workload_c_span_is_generated_and_agrees() -> None:
    stages = [
        {"$match": {"event_type": 0, "obs.temp": {"$gte": 12}}},
        {"$addFields": {"wattsPct": {"$divide": ["$obs.watts", "$max_watts"]}, "hot": {"$gte": ["$obs.temp", 20]}}},
        {"$project": {"_id": 0, "device_id": 1, "group_id": 1, "ts": "$_ts", "temp": "$obs.temp", "wattsPct": 1, "hot": 1}},
    ]
    docs = [
        {"device_id": "d", "group_id": i, "_ts": TS, "event_type": e, "max_watts": m, "obs": {"watts": w, "temp": t}}
        for i, (e, m, w, t) in enumerate(itertools.product([0, 1, Int64(0), False, None], EDGE[:20], [100, 2.5, None], [12, 11, 25.5, NAN, Int64(30), "x"]))
    ]
    docs += [{"event_type": 0, "obs": t} for t in EDGE] + [{"event_type": 0, "obs": {"temp": t}} for t in EDGE]
    got = check_same(stages, docs)
    assert len(got) > 100
    steps = steps_of(stages)
    assert steps[0].chain is not None and steps[0].chain_len == 3
    src = steps[0].chain.source
    assert "doc['obs']" in src and src.count("doc['obs']") == 2  # read once per body (strict, then in its fallback)
    assert "o = {'device_id': " in src  # one dict display


@pytest.mark.parametrize("op", ["$add", "$subtract", "$multiply", "$divide"])
def test_arithmetic_on_every_pair_of_edge_values(op: str) -> None:
    check_same([{"$addFields": {"r": {op: ["$a", "$b"]}, "k": {op: ["$a", 2]}, "j": {op: [-3, "$b"]}}}], docs_ab())


@pytest.mark.parametrize("op", ["$eq", "$ne", "$gt", "$gte", "$lt", "$lte"])
def test_comparisons_on_every_pair_of_edge_values(op: str) -> None:
    check_same(
        [
            {"$addFields": {"r": {op: ["$a", "$b"]}, "n": {op: ["$a", 2]}, "f": {op: ["$b", 2.5]}, "s": {op: ["$a", "s"]}}},
            {"$project": {"_id": 0, "r": 1, "n": 1, "f": 1, "s": 1, "x": {op: ["$b.x", 2]}}},
        ],
        docs_ab(),
    )


@pytest.mark.parametrize(
    "query",
    [
        {"a": 1, "b": {"$gte": 0}},
        {"a": {"$ne": 0}, "b": "s"},
        {"a.x": {"$lt": 3}},
        {"a": {"$gt": 0, "$lt": 2**40}},
        {"$or": [{"a": 1}, {"b": None}]},  # not a fused query: one call of its predicate
        {"a": {"$in": [1, "s"]}, "b": {"$exists": True}},
    ],
)
def test_match_then_map_on_every_pair_of_edge_values(query: dict[str, Any]) -> None:
    check_same([{"$match": query}, {"$project": {"a": 1, "bx": "$b.x", "bxy": "$b.x.y"}}], docs_ab())


def test_add_fields_chain_overwrites_and_removes_in_order() -> None:
    got = check_same(
        [
            {"$addFields": {"a": {"$add": ["$a", 1]}, "z": "$$REMOVE", "n": 1}},
            {"$addFields": {"b": "$a", "a": "$n", "c": "$a.x"}},
            {"$project": {"a": 1, "b": 1, "c": 1, "z": 1, "q": {"$multiply": ["$b", 2]}}},
        ],
        docs_ab({"z": 9}),
    )
    assert [list(d) for d, _ in got[:2]] == [["_id", "a", "b", "q"]] * 2


def test_project_then_add_fields_and_project_then_project() -> None:
    check_same([{"$project": {"x": "$a", "y": {"$add": ["$a", 1]}}}, {"$addFields": {"z": {"$multiply": ["$x", "$y"]}, "x": "$y"}}], docs_ab())
    check_same([{"$project": {"_id": 0, "x": "$a", "k": {"$literal": 5}}}, {"$project": {"x": 1, "kx": "$k.x", "k": 1}}], docs_ab())
    # An add_fields at the end keeps the input's key order and appends new keys.
    got = check_same([{"$addFields": {"b": 1, "new": "$a"}}], [{"b": 0, "a": 2, "c": 3}, {"c": 1}])
    assert [list(d.items()) for d, _ in got] == [[("b", 1), ("a", 2), ("c", 3), ("new", 2)], [("c", 1), ("b", 1)]]


def test_unknown_expressions_in_the_first_map_stage_are_called() -> None:
    check_same(
        [
            {"$addFields": {"u": {"$toUpper": "$b"}, "w": {"$add": [{"$let": {"vars": {"v": 3}, "in": "$$v"}}, "$b"]}}},
            {"$project": {"u": 1, "w": 1}},
        ],
        [{"b": "x"}, {"b": None}, {}, {"b": 2.5}],
    )
    # The window's variables reach the called closures.
    got = check_same(
        [{"$addFields": {"t": {"$meta": "stream.source.topic"}, "n": {"$add": ["$b", 1]}}}],
        [{"b": 1}],
        {"__meta__": {"source": {"topic": "solar"}}},
    )
    assert got == [({"b": 1, "t": "solar", "n": 2}, 0)]


def test_divide_errors_name_the_stage() -> None:
    stages = [{"$addFields": {"q": {"$divide": ["$a", "$b"]}}}, {"$project": {"q": 1, "r": {"$add": ["$a", "$b"]}}}]
    docs = [{"a": 1, "b": 0}, {"a": 1, "b": 2}, {"a": 1, "b": "x"}, {"a": True, "b": 1}]
    steps = steps_of(stages)
    dlq: list[tuple[str, Any]] = []
    out = run_chain(steps, [(d, 0) for d in docs], lambda r, d: dlq.append((r, d)))
    assert out == [({"q": 0.5, "r": 3}, 0)]
    prefix = "Failed to process input document in $addFields stage (pipeline[1].$addFields): "
    assert dlq == [
        (prefix + "$divide: can't $divide by zero", {"a": 1, "b": 0}),
        (prefix + "$divide only supports numeric types, not int and string", {"a": 1, "b": "x"}),
        (prefix + "$divide only supports numeric types, not bool and int", {"a": True, "b": 1}),
    ]


def test_documents_that_are_not_plain_dicts_take_the_closures() -> None:
    stages = [{"$match": {"a": {"$gt": 0}}}, {"$addFields": {"b": {"$multiply": ["$a", 2]}}}]
    steps = steps_of(stages)
    assert steps[0].chain is not None
    docs: list[Any] = [OrderedDict(a=1), {"a": 2}, OrderedDict(a=0)]
    out = run_chain(steps, [(d, 0) for d in docs], lambda r, d: None)
    assert [list(d.items()) for d, _ in out] == [[("a", 1), ("b", 2)], [("a", 2), ("b", 4)]]


def test_missing_fields_use_the_lenient_body_then_the_lenient_loop() -> None:
    stages = [{"$addFields": {"s": {"$add": ["$a", "$b"]}}}]
    steps = steps_of(stages)
    chain = steps[0].chain
    assert chain is not None
    # One miss in 16: still the strict loop.
    few = [({"a": 1, "b": 2} if i else {"a": 1}, i) for i in range(16)]
    out = run_chain(steps, few, lambda r, d: None)
    assert [d["s"] for d, _ in out] == [None] + [3] * 15
    assert chain.use_strict
    many = [({"a": i} if i % 2 else {"a": i, "b": 1}, i) for i in range(8)]
    out = run_chain(steps, many, lambda r, d: None)
    assert [d["s"] for d, _ in out] == [1, None, 3, None, 5, None, 7, None]
    assert not chain.use_strict
    out = run_chain(steps, few, lambda r, d: None)
    assert [d["s"] for d, _ in out] == [None] + [3] * 15


@pytest.mark.parametrize(
    "name",
    ["it's", 'a"b', "back\\slash", "new\nline", "'); import os; ('", "\u00e9t\u00e9", "x\x00y", "{o}", "\ud800"],
)
def test_field_names_are_escaped(name: str) -> None:
    stages = [
        {"$match": {name: {"$gt": 0}}},
        {"$addFields": {"out": {"$add": [f"${name}", 1]}}},
        {"$project": {"_id": 0, name: 1, "out": 1, "copy": f"${name}"}},
    ]
    steps = steps_of(stages)
    assert steps[0].chain is not None
    assert "import os" not in steps[0].chain.source.replace(repr("'); import os; ('"), "")
    out = run_chain(steps, [({name: 5}, 0), ({name: 0}, 1), ({}, 2)], lambda r, d: None)
    assert [list(d.items()) for d, _ in out] == [[(name, 5), ("out", 6), ("copy", 5)]]


def test_constants_that_are_not_str_or_int_are_bound_not_written() -> None:
    check_same(
        [{"$addFields": {"x": {"$add": ["$a", 1.5]}, "c": {"$literal": [1, "'"]}, "d": {"$gt": ["$a", 2**70]}}}],
        [{"a": 1}, {"a": 2.5}, {"a": 2**71}],
    )
    src = (steps_of([{"$addFields": {"x": {"$add": ["$a", 1.5]}}}])[0].chain).source  # type: ignore[union-attr]
    assert "1.5" not in src
    big = 10**5000  # str() of this int raises: the constant is bound by name too
    steps = steps_of([{"$addFields": {"b": {"$literal": big}, "d": {"$gt": ["$a", big]}}}])
    assert steps[0].chain is not None
    out = run_chain(steps, [({"a": 1}, 0)], lambda r, d: None)
    assert out == [({"a": 1, "b": big, "d": False}, 0)]


@pytest.mark.parametrize(
    "stages",
    [
        [{"$addFields": {"a.b": 1}}],  # a dotted $addFields path
        [{"$project": {"a": 0}}],  # exclusion
        [{"$project": {"a": {"b": 1}}}],  # nested inclusion
        [{"$addFields": {"x": 1}}, {"$addFields": {"y": {"$toUpper": "$x"}}}],  # needs the intermediate document
        [{"$match": {"a": 1}}],  # a $match alone keeps its comprehension
        [{"$unwind": "$a"}],
    ],
)
def test_other_shapes_keep_the_closures(stages: list[dict[str, Any]]) -> None:
    steps = steps_of(stages)
    assert all(st.chain is None for st in steps)


def test_chains_follow_the_runner_spans() -> None:
    steps = steps_of(
        [
            {"$match": {"a": 1}},
            {"$addFields": {"b": 1}},
            {"$addFields": {"c": 1}},
            {"$addFields": {"d": 1}},
            {"$addFields": {"e": 1}},  # a fourth map starts a new span
            {"$unwind": "$x"},
            {"$set": {"f": 1}},
        ]
    )
    assert [(st.chain is not None, st.chain_len) for st in steps] == [
        (True, 4),
        (False, 0),
        (False, 0),
        (False, 0),
        (True, 1),
        (False, 0),
        (True, 1),
    ]
    out = run_chain(steps, [({"a": 1, "x": [1, 2]}, 0), ({"a": 2}, 1)], lambda r, d: None)
    assert [d for d, _ in out] == [
        {"a": 1, "x": 1, "b": 1, "c": 1, "d": 1, "e": 1, "f": 1},
        {"a": 1, "x": 2, "b": 1, "c": 1, "d": 1, "e": 1, "f": 1},
    ]


# ---- typed expression nodes ---------------------------------------------------------------


def test_compiled_expressions_are_typed_frozen_nodes() -> None:
    from translator.mql.expr import (
        Array,
        Binary,
        Call,
        Const,
        Ctx,
        Field,
        Object,
        Variable,
        compile_node,
    )

    add = compile_node({"$add": ["$a.b", 1]}, Ctx("t"))
    assert isinstance(add, Binary) and add.op == "$add" and add.general is not None
    assert isinstance(add.left, Field) and add.left.parts == ("a", "b")
    assert isinstance(add.right, Const) and add.right.value == 1
    assert add({"a": {"b": 2}}, {}) == 3 == add.fn({"a": {"b": 2}}, {})
    folded = compile_node({"$add": [1, 2]}, Ctx("t"))
    assert isinstance(folded, Const) and folded.value == 3
    root = compile_node("$$ROOT.x", Ctx("t"))
    assert isinstance(root, Variable) and (root.name, root.parts) == ("ROOT", ("x",))
    concat = compile_node({"$concat": ["$s", "!"]}, Ctx("t"))
    assert isinstance(concat, Call) and concat.op == "$concat"
    assert isinstance(compile_node({"x": "$a"}, Ctx("t")), Object)
    assert isinstance(compile_node(["$a", 1], Ctx("t")), Array)
    assert isinstance(compile_node([1, 2], Ctx("t")), Const)
    with pytest.raises(AttributeError, match="frozen"):
        add.op = "$subtract"  # type: ignore[misc]


def test_an_operator_returning_a_plain_closure_still_compiles_and_generates(monkeypatch: pytest.MonkeyPatch) -> None:
    """The @operator contract: a compile function may return a bare closure; it is
    wrapped in a Call node, and generated code calls it like any other."""
    from translator.mql.expr import OPERATORS, Call, Ctx, compile_expr, compile_node

    def _twice(args: Any, ctx: Any) -> Any:
        inner = compile_expr(args, ctx)
        return lambda doc, v: None if (x := inner(doc, v)) is None else x * 2

    monkeypatch.setitem(OPERATORS, "$testTwice", _twice)
    node = compile_node({"$testTwice": "$a"}, Ctx("t"))
    assert isinstance(node, Call) and node.op == "$testTwice"
    docs = [{"_id": i, "a": i, "b": 2} for i in range(5)]
    check_same([{"$addFields": {"t": {"$testTwice": "$a"}, "u": {"$multiply": ["$a", "$b"]}}}, {"$project": {"t": 1, "u": 1}}], docs)


def test_generated_code_fallbacks_are_counted_per_stage() -> None:
    """A batch the generated code hands back to the closures is counted, with the reason,
    under the stage's path (verbose operatorStats)."""
    from translator import metrics

    steps = steps_of([{"$addFields": {"q": {"$divide": ["$a", "$b"]}}}])
    assert steps[0].chain is not None and steps[0].chain_len == 1
    dlq: list[Any] = []
    metrics.reset()
    metrics.enable()
    try:
        good = run_chain(steps, [({"a": 1, "b": 2}, 0)], lambda r, d: dlq.append(r))
        bad = run_chain(steps, [({"a": 1, "b": 0}, 0), ({"a": 3, "b": 2}, 1)], lambda r, d: dlq.append(r))
        fell_back = metrics.fallbacks()
    finally:
        metrics.disable()
        metrics.reset()
    assert [d for d, _ in good] == [{"a": 1, "b": 2, "q": 0.5}]
    assert [d for d, _ in bad] == [{"a": 3, "b": 2, "q": 1.5}]
    assert dlq == ["Failed to process input document in $addFields stage (pipeline[1].$addFields): $divide: can't $divide by zero"]
    assert fell_back == {"pipeline[1].$addFields": {"generated code: ExprError": 1}}


def test_operator_closures_call_closures_not_nodes() -> None:
    """Per document, an operator calls its operands' closures (no node call layer);
    the node keeps its typed operands for compile-time readers."""
    from translator.mql.expr import Binary, Ctx, Field, Node, compile_node

    def cell_values(fn: Any) -> list[Any]:
        out = []
        for cell in fn.__closure__ or ():
            x = cell.cell_contents
            out.extend(x if isinstance(x, (list, tuple)) else [x])
        return out

    for spec in ({"$add": ["$a", "$b", "$c"]}, {"$cond": [{"$gt": ["$a", 1]}, "$b", "$c"]}, {"$multiply": ["$a", "$b"]}):
        node = compile_node(spec, Ctx("t"))
        assert not any(isinstance(x, Node) for x in cell_values(node.fn)), spec
        assert node({"a": 2, "b": 3, "c": 4}, {}) in (9, 3, 6)
    mul = compile_node({"$multiply": ["$a", "$b"]}, Ctx("t"))
    assert isinstance(mul, Binary) and isinstance(mul.left, Field)
