"""`$group` accumulators: MongoDB's values and types, and exact mergeability of partial states."""

from __future__ import annotations

import math
import pickle
import random
from fractions import Fraction
from typing import Any

import pytest
from bson import Decimal128, Int64

from translator.accumulators import ACCUMULATORS, AccSpec, compile_accumulator
from translator.errors import TranslateError
from translator.mql.expr import Ctx, ExprError
from translator.mql.values import MISSING

CTX = Ctx("pipeline[1].$tumblingWindow.pipeline[0].$group.out")


def acc(op: str, arg: Any) -> AccSpec:
    return compile_accumulator(op, arg, CTX)


def docs_of(values: list[Any]) -> list[dict[str, Any]]:
    """One document per value in field ``x``; MISSING makes a document without ``x``."""
    return [{} if v is MISSING else {"x": v} for v in values]


def run(op: str, arg: Any, docs: list[dict[str, Any]]) -> Any:
    spec = acc(op, arg)
    state = spec.init()
    for d in docs:
        state = spec.add(state, spec.extract(d, {}))
    return spec.final(state)


def runx(op: str, values: list[Any]) -> Any:
    """``{op: "$x"}`` over documents holding ``values``."""
    return run(op, "$x", docs_of(values))


def same(a: Any, b: Any) -> bool:
    """Equal values of identical BSON types (NaN equals NaN, -0.0 differs from 0.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        if a != a:
            return b != b
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, Decimal128):
        return str(a) == str(b)
    return bool(a == b)


# ---- registry and compile-time errors -------------------------------------------------

ALL = {
    "$sum", "$avg", "$min", "$max", "$count", "$first", "$last", "$push", "$addToSet",
    "$stdDevPop", "$stdDevSamp", "$median", "$percentile", "$top", "$bottom", "$topN",
    "$bottomN", "$firstN", "$lastN", "$maxN", "$minN", "$mergeObjects",
}


def test_registry_holds_every_asp_accumulator() -> None:
    # $accumulator is registered only to reject its JavaScript by name.
    assert set(ACCUMULATORS) == ALL | {"$accumulator"}


def test_javascript_accumulator_is_rejected_in_its_own_words() -> None:
    with pytest.raises(TranslateError) as e:
        acc("$accumulator", {"init": "function() {}"})
    assert str(e.value) == (
        "pipeline[1].$tumblingWindow.pipeline[0].$group.out: "
        "$accumulator: JavaScript is not supported by stream processors"
    )


def test_unknown_accumulator_suggests_the_closest_name() -> None:
    with pytest.raises(TranslateError) as e:
        acc("$summ", "$x")
    assert str(e.value) == (
        "pipeline[1].$tumblingWindow.pipeline[0].$group.out: "
        "unknown group accumulator '$summ'; did you mean '$sum'?"
    )


@pytest.mark.parametrize(
    ("op", "arg", "path", "message"),
    [
        ("$sum", ["$a", "$b"], "", "The $sum accumulator is a unary operator; pass one expression, not an array"),
        ("$push", ["$a"], "", "The $push accumulator is a unary operator; pass one expression, not an array"),
        ("$count", {"a": 1}, "", "$count takes no arguments, i.e. $count: {}"),
        ("$count", 1, "", "$count takes no arguments, i.e. $count: {}"),
        ("$topN", {"sortBy": {"a": 1}, "output": "$a"}, "", "$topN requires 'n'"),
        ("$topN", {"n": 0, "sortBy": {"a": 1}, "output": "$a"}, ".n", "$topN needs 'n' to be a positive integer, got 0"),
        ("$topN", {"n": -2, "sortBy": {"a": 1}, "output": "$a"}, ".n", "$topN needs 'n' to be a positive integer, got -2"),
        ("$topN", {"n": 2.5, "sortBy": {"a": 1}, "output": "$a"}, ".n", "$topN needs 'n' to be a positive integer, got 2.5"),
        ("$topN", {"n": True, "sortBy": {"a": 1}, "output": "$a"}, ".n", "$topN needs 'n' to be a positive integer, got True"),
        ("$topN", {"n": "3", "sortBy": {"a": 1}, "output": "$a"}, ".n", "$topN needs 'n' to be a positive integer, got '3'"),
        (
            "$firstN", {"n": "$k", "input": "$a"}, ".n",
            "$firstN needs 'n' to be a constant positive integer; expressions are not supported",
        ),
        ("$top", {"n": 1, "sortBy": {"a": 1}, "output": "$a"}, ".n", "unknown argument 'n' to $top"),
        ("$topN", {"n": 2, "sortBy": {}, "output": "$a"}, ".sortBy", "$topN 'sortBy' must be a non-empty object such as {score: -1}"),
        ("$bottom", {"sortBy": "score", "output": "$a"}, ".sortBy", "$bottom 'sortBy' must be a non-empty object such as {score: -1}"),
        ("$bottomN", {"n": 2, "sortBy": {"a": 2}, "output": "$a"}, ".sortBy.a", "$bottomN sort direction must be 1 or -1, got 2"),
        ("$top", {"sortBy": {"$a": 1}, "output": "$a"}, ".sortBy", "$top 'sortBy' has an invalid field name '$a'"),
        ("$top", {"sortBy": {"a": 1}, "outptu": "$a"}, ".outptu", "unknown argument 'outptu' to $top; did you mean 'output'?"),
        ("$maxN", "$a", "", "$maxN takes an object {input, n}, got string"),
        ("$minN", {"input": "$a"}, "", "$minN requires 'n'"),
        ("$median", {"input": "$a"}, "", "$median requires 'method'"),
        ("$median", {"input": "$a", "method": "exact"}, ".method", "$median 'method' must be 'approximate', got 'exact'"),
        ("$percentile", {"input": "$a", "p": [], "method": "approximate"}, ".p", "$percentile 'p' must be a non-empty array of numbers from 0.0 to 1.0"),
        ("$percentile", {"input": "$a", "p": 0.5, "method": "approximate"}, ".p", "$percentile 'p' must be a non-empty array of numbers from 0.0 to 1.0"),
        (
            "$percentile", {"input": "$a", "p": [0.5, 1.5], "method": "approximate"}, ".p[1]",
            "$percentile 'p' must be an array of constant numbers from 0.0 to 1.0, got 1.5",
        ),
        (
            "$percentile", {"input": "$a", "p": ["$q"], "method": "approximate"}, ".p[0]",
            "$percentile 'p' must be an array of constant numbers from 0.0 to 1.0, got '$q'",
        ),
    ],
)
def test_compile_errors_name_the_path_and_the_rule(op: str, arg: Any, path: str, message: str) -> None:
    with pytest.raises(TranslateError) as e:
        acc(op, arg)
    assert str(e.value) == f"{CTX.path}{path}: {message}"


# ---- $sum / $avg ----------------------------------------------------------------------


def test_sum_of_ints_is_int() -> None:
    r = runx("$sum", [1, 2, 3])
    assert r == 6 and type(r) is int


def test_sum_ignores_non_numbers_and_empty_sum_is_int_zero() -> None:
    r = runx("$sum", ["7", None, MISSING, True, [1, 2], {"a": 1}, 4])
    assert r == 4 and type(r) is int
    r0 = runx("$sum", [])
    assert r0 == 0 and type(r0) is int
    r1 = runx("$sum", ["a", None, False])
    assert r1 == 0 and type(r1) is int


def test_sum_leaving_int32_becomes_long() -> None:
    r = runx("$sum", [2**31 - 1, 1])
    assert r == 2**31 and type(r) is Int64


def test_sum_with_a_long_input_is_long() -> None:
    r = runx("$sum", [1, Int64(2)])
    assert r == 3 and type(r) is Int64
    r2 = runx("$sum", [1, 2**40])  # a python int beyond int32 is a BSON long
    assert r2 == 2**40 + 1 and type(r2) is Int64


def test_sum_overflowing_long_becomes_double() -> None:
    r = runx("$sum", [Int64(2**63 - 1), Int64(2**63 - 1)])
    assert r == float(2**64 - 2) and type(r) is float


def test_sum_with_a_double_is_double_and_exact() -> None:
    r = runx("$sum", [1, 2.5])
    assert r == 3.5 and type(r) is float
    assert runx("$sum", [0.1] * 10) == 1.0  # naive float addition gives 0.9999999999999999
    assert runx("$sum", [1e16, 1.0, -1e16]) == 1.0
    assert runx("$sum", [1e300, 5e-324, -1e300]) == 5e-324
    assert runx("$sum", [2.0**-70, 1.0, 2.0**-70]) == 1.0 + 2.0**-69
    r2 = runx("$sum", [1, 2.0])
    assert r2 == 3.0 and type(r2) is float


def test_sum_with_a_decimal_is_decimal() -> None:
    assert same(runx("$sum", [Decimal128("1.10"), 2]), Decimal128("3.10"))
    assert same(runx("$sum", [Decimal128("1"), 0.1]), Decimal128("1.1"))
    assert same(runx("$sum", [Decimal128("0.1"), Decimal128("0.2"), Int64(3)]), Decimal128("3.3"))


def test_sum_of_non_finite_values() -> None:
    assert runx("$sum", [1.0, math.inf]) == math.inf
    assert runx("$sum", [-math.inf, 2]) == -math.inf
    assert math.isnan(runx("$sum", [math.inf, -math.inf]))
    assert math.isnan(runx("$sum", [1, math.nan]))
    assert same(runx("$sum", [Decimal128("NaN"), 1]), Decimal128("NaN"))
    assert same(runx("$sum", [Decimal128("Infinity"), 1.5]), Decimal128("Infinity"))


def test_sum_of_constant_one_counts_documents() -> None:
    r = run("$sum", 1, docs_of([None, "a", MISSING]))
    assert r == 3 and type(r) is int


def test_avg_is_double_and_null_without_numbers() -> None:
    r = runx("$avg", [1, 2])
    assert r == 1.5 and type(r) is float
    r2 = runx("$avg", [2, 4, "x", None, MISSING])
    assert r2 == 3.0 and type(r2) is float
    r3 = runx("$avg", [Int64(4)])
    assert r3 == 4.0 and type(r3) is float
    assert runx("$avg", ["a", None, MISSING, True]) is None
    assert runx("$avg", []) is None
    assert runx("$avg", [0.1, 0.2, 0.3]) == 0.2  # exact mean, rounded once


def test_avg_with_a_decimal_is_decimal() -> None:
    assert same(runx("$avg", [Decimal128("1"), 2]), Decimal128("1.5"))
    assert same(runx("$avg", [Decimal128("1"), Decimal128("2"), 0]), Decimal128("1"))


# ---- $min / $max ----------------------------------------------------------------------


def test_min_max_use_bson_order_and_ignore_null_and_missing() -> None:
    values = [None, 5, "abc", MISSING, 2.5, {"a": 1}]
    assert runx("$max", values) == {"a": 1}  # object > string > number
    r = runx("$min", values)
    assert r == 2.5 and type(r) is float
    assert runx("$max", [3, Int64(10), 7.5]) == Int64(10)
    assert runx("$min", [[2, 1], [1, 5]]) == [1, 5]  # arrays compare as whole values in $group


def test_min_max_all_null_or_missing_is_null() -> None:
    assert runx("$max", [None, MISSING]) is None
    assert runx("$min", []) is None


def test_min_max_ties_keep_the_first_value() -> None:
    r = runx("$max", [1.0, 1, Int64(1)])
    assert r == 1 and type(r) is float
    r2 = runx("$min", [Int64(1), 1.0])
    assert type(r2) is Int64


def test_min_of_nan_is_nan_as_nan_sorts_lowest() -> None:
    assert math.isnan(runx("$min", [3, math.nan, 1]))
    assert runx("$max", [3, math.nan, 1]) == 3


# ---- $count / $first / $last / $push / $addToSet / $mergeObjects ---------------------


def test_count_counts_documents_as_int_and_long_beyond_int32() -> None:
    r = run("$count", {}, docs_of([None, MISSING, 1]))
    assert r == 3 and type(r) is int
    spec = acc("$count", {})
    big = spec.final(2**31)
    assert big == 2**31 and type(big) is Int64
    assert spec.final(spec.init()) == 0


def test_first_last_keep_null_and_turn_missing_into_null() -> None:
    assert runx("$first", [MISSING, 1, 2]) is None
    assert runx("$first", [None, 1]) is None
    assert runx("$first", [7, None]) == 7
    assert runx("$last", [1, 2, MISSING]) is None
    assert runx("$last", [1, None]) is None
    assert runx("$last", [None, 3]) == 3
    assert runx("$first", []) is None
    assert runx("$last", []) is None


def test_push_keeps_nulls_and_skips_missing() -> None:
    assert runx("$push", [1, None, MISSING, "a", [1]]) == [1, None, "a", [1]]
    assert runx("$push", []) == []


def test_add_to_set_uses_mongodb_equality_in_first_seen_order() -> None:
    values = [
        2, 1, 1.0, Int64(1), None, MISSING, None, "a", {"a": 1}, {"a": 1.0}, {"b": 1, "a": 1},
        [1, 2], [1.0, 2], Decimal128("0.5"), 0.5, math.nan, Decimal128("NaN"), True,
    ]
    r = runx("$addToSet", values)
    assert same(
        r,
        [2, 1, None, "a", {"a": 1}, {"b": 1, "a": 1}, [1, 2], Decimal128("0.5"), math.nan, True],
    )


def test_merge_objects_overwrites_in_order_and_ignores_null() -> None:
    r = runx("$mergeObjects", [{"a": 1, "b": 1}, None, MISSING, {"b": 2, "c": {"d": 3}}])
    assert r == {"a": 1, "b": 2, "c": {"d": 3}}
    assert list(r) == ["a", "b", "c"]
    assert runx("$mergeObjects", [None]) == {}


def test_merge_objects_rejects_a_non_object_at_run_time() -> None:
    with pytest.raises(ExprError) as e:
        runx("$mergeObjects", [{"a": 1}, 5])
    assert str(e.value) == "$mergeObjects: requires object inputs, but input is of type int"
    with pytest.raises(ExprError) as e2:
        runx("$mergeObjects", [[{"a": 1}]])
    assert str(e2.value) == "$mergeObjects: requires object inputs, but input is of type array"


# ---- $stdDevPop / $stdDevSamp ---------------------------------------------------------


def exact_std(values: list[float], sample: bool) -> float:
    xs = [Fraction(v) for v in values]
    n = len(xs)
    mean = sum(xs) / n
    var = sum((x - mean) ** 2 for x in xs) / (n - 1 if sample else n)
    return math.sqrt(float(var))


def test_std_dev_pop_and_samp_values() -> None:
    r = runx("$stdDevPop", [2, 4, 4, 4, 5, 5, 7, 9])
    assert r == 2.0 and type(r) is float
    assert runx("$stdDevSamp", [1, 2, 3, 4]) == exact_std([1, 2, 3, 4], True) == 1.2909944487358056
    assert runx("$stdDevPop", [0.1, 0.2, 0.3, "x", None]) == exact_std([0.1, 0.2, 0.3], False)
    assert runx("$stdDevPop", [Int64(3), Decimal128("5")]) == 1.0
    assert runx("$stdDevPop", [1e9 + 0.5, 1e9 + 1.5]) == 0.5  # no cancellation loss


def test_std_dev_nulls() -> None:
    assert runx("$stdDevPop", []) is None
    assert runx("$stdDevPop", ["a", None]) is None
    assert runx("$stdDevSamp", [5]) is None
    r = runx("$stdDevPop", [5])
    assert r == 0.0 and type(r) is float
    assert math.isnan(runx("$stdDevPop", [1, math.inf]))


# ---- $median / $percentile (MongoDB docs' testScores example) -------------------------

SCORES = [
    {"studentId": "2345", "test01": 62, "test02": 81, "test03": 80},
    {"studentId": "2356", "test01": 60, "test02": 83, "test03": 79},
    {"studentId": "2358", "test01": 67, "test02": 82, "test03": 78},
    {"studentId": "2367", "test01": 64, "test02": 72, "test03": 77},
    {"studentId": "2369", "test01": 60, "test02": 53, "test03": 72},
]


def test_median_matches_mongodb_docs_example() -> None:
    r = run("$median", {"input": "$test01", "method": "approximate"}, SCORES)
    assert r == 62.0 and type(r) is float


@pytest.mark.parametrize(
    ("field", "p", "expected"),
    [
        ("$test01", [0.95], [67.0]),
        ("$test01", [0.5, 0.75, 0.9, 0.95], [62.0, 64.0, 67.0, 67.0]),
        ("$test02", [0.5, 0.75, 0.9, 0.95], [81.0, 82.0, 83.0, 83.0]),
        ("$test03", [0.5, 0.75, 0.9, 0.95], [78.0, 79.0, 80.0, 80.0]),
        ("$test03", [0.9, 0.5, 0.75, 0.95], [80.0, 78.0, 79.0, 80.0]),
        ("$test01", [0, 1], [60.0, 67.0]),
    ],
)
def test_percentile_matches_mongodb_docs_examples(field: str, p: list[float], expected: list[float]) -> None:
    r = run("$percentile", {"input": field, "p": p, "method": "approximate"}, SCORES)
    assert same(r, expected)


def test_median_and_percentile_ignore_non_numbers_and_are_null_without_numbers() -> None:
    med = {"input": "$x", "method": "approximate"}
    assert run("$median", med, docs_of([4, 1, "9", None, MISSING, 3, 2, math.nan])) == 2.0
    assert run("$median", med, docs_of(["a", None])) is None
    pct = {"input": "$x", "p": [0.5], "method": "approximate"}
    assert run("$percentile", pct, docs_of([])) is None
    assert same(run("$percentile", pct, docs_of([Int64(10), Decimal128("2.5"), 7.0])), [7.0])


# ---- $top / $bottom / $topN / $bottomN (MongoDB docs' player example) ----------------

PLAYERS = [
    {"playerId": "PlayerA", "gameId": "G1", "score": 1},
    {"playerId": "PlayerB", "gameId": "G1", "score": 2},
    {"playerId": "PlayerC", "gameId": "G1", "score": 3},
    {"playerId": "PlayerD", "gameId": "G1"},
    {"playerId": "PlayerE", "gameId": "G1", "score": None},
]
OUT = ["$playerId", "$score"]


def test_top_n_sorts_nulls_first_ascending() -> None:
    r = run("$topN", {"output": OUT, "sortBy": {"score": 1}, "n": 3}, PLAYERS)
    assert r == [["PlayerD", None], ["PlayerE", None], ["PlayerA", 1]]


def test_bottom_n_returns_picks_in_sort_order() -> None:
    r = run("$bottomN", {"output": OUT, "sortBy": {"score": -1}, "n": 3}, PLAYERS)
    assert r == [["PlayerA", 1], ["PlayerD", None], ["PlayerE", None]]


def test_bottom_tie_keeps_the_first_document() -> None:
    r = run("$bottom", {"output": OUT, "sortBy": {"score": -1}}, PLAYERS)
    assert r == ["PlayerD", None]


def test_top_returns_a_single_value_and_missing_output_is_null() -> None:
    assert run("$top", {"output": "$playerId", "sortBy": {"score": -1}}, PLAYERS) == "PlayerC"
    assert run("$top", {"output": "$nope", "sortBy": {"score": -1}}, PLAYERS) is None
    assert run("$top", {"output": "$playerId", "sortBy": {"score": -1}}, []) is None


def test_top_n_with_fewer_documents_than_n_and_compound_sort() -> None:
    docs = [
        {"g": 1, "s": 5, "id": "a"},
        {"g": 2, "s": 9, "id": "b"},
        {"g": 1, "s": 7, "id": "c"},
        {"g": 2, "s": 1, "id": "d"},
    ]
    assert run("$topN", {"n": 10, "sortBy": {"g": 1, "s": -1}, "output": "$id"}, docs) == ["c", "a", "b", "d"]
    assert run("$bottomN", {"n": 2, "sortBy": {"g": 1, "s": -1}, "output": "$id"}, docs) == ["b", "d"]
    assert run("$topN", {"n": Int64(1), "sortBy": {"g": -1, "s": 1}, "output": "$id"}, docs) == ["d"]


def test_top_n_sorts_strings_after_numbers_and_arrays_by_min_or_max_element() -> None:
    docs = [{"id": "a", "s": 1}, {"id": "b", "s": "2"}, {"id": "c", "s": [0, 10]}, {"id": "d", "s": []}]
    assert run("$topN", {"n": 4, "sortBy": {"s": -1}, "output": "$id"}, docs) == ["b", "c", "a", "d"]
    assert run("$topN", {"n": 4, "sortBy": {"s": 1}, "output": "$id"}, docs) == ["d", "c", "a", "b"]


# ---- $firstN / $lastN / $maxN / $minN -------------------------------------------------


def test_first_n_last_n_keep_nulls_and_turn_missing_into_null() -> None:
    assert run("$firstN", {"input": "$score", "n": 5}, PLAYERS) == [1, 2, 3, None, None]
    assert run("$firstN", {"input": "$score", "n": 2}, PLAYERS) == [1, 2]
    assert run("$lastN", {"input": "$score", "n": 3}, PLAYERS) == [3, None, None]
    assert run("$lastN", {"input": ["$playerId", "$score"], "n": 1}, PLAYERS) == [["PlayerE", None]]
    assert run("$firstN", {"input": "$score", "n": 3}, []) == []


def test_max_n_min_n_ignore_null_and_missing() -> None:
    values = [3, None, 1, "a", 2, MISSING, 2.0]
    assert runx_n("$maxN", values, 2) == ["a", 3]
    assert runx_n("$minN", values, 3) == [1, 2, 2.0]
    assert runx_n("$maxN", [None, MISSING], 2) == []
    r = runx_n("$maxN", [1, 5.0, Int64(5)], 1)
    assert r == [5.0] and type(r[0]) is float


def runx_n(op: str, values: list[Any], n: int) -> Any:
    return run(op, {"input": "$x", "n": n}, docs_of(values))


# ---- batch fold and exact mergeability -------------------------------------------------

MIXED = [1, -7, 2**31 - 1, Int64(5), 2**40, 0.1, 0.2, 0.3, 1e16, -1e16, 3.5, -0.0, "s", None,
         MISSING, True, [1, 2], {"a": 1}, 1.0, 2, 2.0]
INTS = [1, 2**31 - 1, 2**31 - 1, -5, 0, 7, None, "x", MISSING]
DECIMALS = [Decimal128("1.1"), Decimal128("-2.25"), Decimal128("1E-30"), 0.1, 3, Int64(4), None, "z"]
TINY = [1e-30, 3.0, 5e-324, 0.1, 2.5e-310, 1e300, -1e300, 7, 2.0**-70]
SPECIAL = [1.0, math.inf, -math.inf, math.nan, 2, Decimal128("NaN"), None]
OBJECTS = [{"a": 1}, {"b": 2, "a": 3}, None, MISSING, {"c": {"x": 1}}, {"b": None}]
SORTED = [1, 1.0, 2, None, MISSING, "b", [3, 0], [], -1, Int64(2)]

CONFIGS: list[tuple[str, Any, list[Any]]] = [
    (op, "$x", pool)
    for op in ("$sum", "$avg", "$stdDevPop", "$stdDevSamp", "$min", "$max", "$first", "$last", "$push", "$addToSet")
    for pool in (MIXED, INTS, DECIMALS, SPECIAL, TINY)
] + [
    ("$sum", 1, MIXED),
    ("$count", {}, MIXED),
    ("$mergeObjects", "$x", OBJECTS),
    ("$median", {"input": "$x", "method": "approximate"}, MIXED),
    ("$percentile", {"input": "$x", "p": [0, 0.3, 0.5, 0.99, 1], "method": "approximate"}, MIXED + DECIMALS),
    ("$firstN", {"input": "$x", "n": 3}, MIXED),
    ("$lastN", {"input": "$x", "n": 3}, MIXED),
    ("$maxN", {"input": "$x", "n": 3}, SORTED),
    ("$minN", {"input": "$x", "n": 4}, SORTED),
    ("$top", {"sortBy": {"x": 1}, "output": "$i"}, SORTED),
    ("$bottom", {"sortBy": {"x": 1}, "output": "$i"}, SORTED),
    ("$topN", {"n": 3, "sortBy": {"x": -1}, "output": "$i"}, SORTED),
    ("$bottomN", {"n": 3, "sortBy": {"x": -1}, "output": "$i"}, SORTED),
    ("$topN", {"n": 4, "sortBy": {"k": 1, "x": -1}, "output": ["$i", "$x"]}, SORTED),
    ("$bottomN", {"n": 2, "sortBy": {"k": -1, "x": 1}, "output": "$i"}, SORTED),
]


def random_docs(rng: random.Random, pool: list[Any]) -> list[dict[str, Any]]:
    docs = []
    for i in range(rng.randint(0, 24)):
        v = rng.choice(pool)
        d: dict[str, Any] = {"i": i, "k": rng.randint(0, 2)}
        if v is not MISSING:
            d["x"] = v
        docs.append(d)
    return docs


def fold_part(spec: AccSpec, values: list[Any], rng: random.Random) -> Any:
    state = spec.init()
    if rng.random() < 0.5:
        return spec.fold(state, list(values))
    for v in values:
        state = spec.add(state, v)
    return state


def split(rng: random.Random, items: list[Any]) -> list[list[Any]]:
    """Random contiguous parts, empty ones included."""
    cuts = sorted(rng.randint(0, len(items)) for _ in range(rng.randint(0, 4)))
    parts, start = [], 0
    for c in [*cuts, len(items)]:
        parts.append(items[start:c])
        start = c
    return parts


def merge_tree(spec: AccSpec, states: list[Any]) -> Any:
    """Merge adjacent states pairwise (order kept), as partitions' partials may combine."""
    while len(states) > 1:
        nxt = []
        for j in range(0, len(states) - 1, 2):
            nxt.append(spec.merge(states[j], states[j + 1]))
        if len(states) % 2:
            nxt.append(states[-1])
        states = nxt
    return states[0]


@pytest.mark.parametrize(("op", "arg", "pool"), CONFIGS, ids=[f"{c[0]}-{i}" for i, c in enumerate(CONFIGS)])
def test_any_split_merges_to_the_same_result(op: str, arg: Any, pool: list[Any]) -> None:
    spec = acc(op, arg)
    rng = random.Random(f"{op}{arg}{len(pool)}")
    for _ in range(40):
        docs = random_docs(rng, pool)
        values = [spec.extract(d, {}) for d in docs]
        whole = spec.final(fold_part(spec, values, rng))
        parts = split(rng, values)
        # Partial states travel between workers and snapshots: pickle them.
        states = [pickle.loads(pickle.dumps(fold_part(spec, p, rng))) for p in parts]
        left = spec.init()
        for s in pickle.loads(pickle.dumps(states)):
            left = spec.merge(left, s)
        assert same(spec.final(left), whole), (op, docs, parts)
        assert same(spec.final(merge_tree(spec, states)), whole), (op, docs, parts)
        assert same(spec.final(spec.merge(fold_part(spec, values, rng), spec.init())), whole)


def test_merge_of_empty_states_gives_the_empty_result() -> None:
    expected = {
        "$sum": 0, "$avg": None, "$min": None, "$max": None, "$first": None, "$last": None,
        "$push": [], "$addToSet": [], "$stdDevPop": None, "$stdDevSamp": None, "$mergeObjects": {},
    }
    for op, want in expected.items():
        spec = acc(op, "$x")
        assert same(spec.final(spec.merge(spec.init(), spec.init())), want), op


def test_merge_does_not_mutate_the_later_state() -> None:
    spec = acc("$push", "$x")
    a = spec.fold(spec.init(), [1, 2])
    b = spec.fold(spec.init(), [3])
    spec.merge(a, b)
    assert b == [3]


@pytest.mark.parametrize("op", ["$min", "$max", "$stdDevPop", "$stdDevSamp", "$sum", "$avg"])
@pytest.mark.parametrize(
    "values",
    [[3, 1, 4, 1, 5, 9, 2, 6], [7], [], [2, 2.0, Int64(2)], [1, None, "x", 3.5, MISSING, True]],
)
def test_batch_fold_equals_one_by_one(op: str, values: list[Any]) -> None:
    """The batch fast path (add_many) gives exactly what folding one value at a time does."""
    from translator.accumulators import compile_accumulator
    from translator.mql.expr import Ctx

    acc = compile_accumulator(op, "$x", Ctx("t"))
    one = acc.init()
    for v in values:
        one = acc.add(one, v)
    batch = acc.fold(acc.init(), list(values))
    a, b = acc.final(one), acc.final(batch)
    assert type(a) is type(b) and (a == b or (a != a and b != b))
