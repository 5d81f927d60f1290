"""The per-document fast paths of $divide/$multiply/$add/$subtract, of the comparisons
against a constant, and of the fused $match query: each edge where the fast path must
hand over to the general path (bool, Int64, Decimal128, NaN, null, missing, arrays along
the path, zero divisors) gives exactly the general path's value or error text.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from bson import Decimal128, Int64

from tests.translator.mql.mqlhelpers import ev, expr_error, same
from translator.mql.expr import Ctx, compile_expr, field_parts
from translator.mql.query import HotPred, compile_query

NAN = float("nan")


# ---- $divide -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (7, 2, 3.5),
        (7.0, 2, 3.5),
        (7, 2.0, 3.5),
        (1.5, 0.5, 3.0),
        # A long beyond 2**53 is converted to a double first, as MongoDB does: the exact
        # Python quotient 3002399751580331.0 would be wrong.
        (2**53 + 1, 3, float(2**53) / 3.0),
        (Int64(9), 2, 4.5),
        (9, Int64(2), 4.5),
        (1, Decimal128("4"), Decimal128("0.25")),
        (None, 2, None),
        (2, None, None),
        (NAN, 2, NAN),
        (2, NAN, NAN),
    ],
)
def test_divide_fields(a: Any, b: Any, expected: Any) -> None:
    same(ev({"$divide": ["$a", "$b"]}, {"a": a, "b": b}), expected)


def test_divide_missing_operands_give_null() -> None:
    same(ev({"$divide": ["$a", "$b"]}, {"b": 2}), None)
    same(ev({"$divide": ["$a", "$b"]}, {"a": 2}), None)


@pytest.mark.parametrize("zero", [0, 0.0, -0.0, Int64(0)])
def test_divide_by_zero_error_text(zero: Any) -> None:
    err = expr_error({"$divide": ["$a", "$b"]}, {"a": 5, "b": zero})
    assert str(err) == "$divide: can't $divide by zero"


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"a": True, "b": 1}, "$divide only supports numeric types, not bool and int"),
        ({"a": 1, "b": False}, "$divide only supports numeric types, not int and bool"),
        ({"a": "3", "b": 1.5}, "$divide only supports numeric types, not string and double"),
        ({"a": [{"x": 1}], "b": 1}, "$divide only supports numeric types, not array and int"),
    ],
)
def test_divide_non_numbers_error_text(doc: dict[str, Any], message: str) -> None:
    spec = {"$divide": ["$a.x" if isinstance(doc["a"], list) else "$a", "$b"]}
    assert str(expr_error(spec, doc)) == message


# ---- $multiply / $add / $subtract --------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "a", "b", "expected"),
    [
        ("$multiply", 6, 7, 42),
        ("$multiply", 2.5, 2, 5.0),
        ("$multiply", 2, 2.5, 5.0),
        ("$multiply", 2**16, 2**16, Int64(2**32)),  # int32 overflow widens to long
        ("$multiply", 2**40, 0, Int64(0)),  # a long operand gives a long even for 0
        ("$multiply", Int64(3), 2, Int64(6)),
        ("$multiply", Decimal128("1.5"), 2, Decimal128("3.0")),
        ("$multiply", None, 2, None),
        ("$add", 1, 2.5, 3.5),
        ("$add", 2.5, 1, 3.5),
        ("$add", 2**31 - 1, 1, Int64(2**31)),
        ("$add", Int64(1), 1, Int64(2)),
        ("$add", 1, None, None),
        ("$subtract", 5, 1.5, 3.5),
        ("$subtract", 5.5, 1, 4.5),
        ("$subtract", -(2**31), 1, Int64(-(2**31) - 1)),
        ("$subtract", Int64(5), 1, Int64(4)),
        ("$subtract", None, 1, None),
    ],
)
def test_binary_arithmetic_fields(op: str, a: Any, b: Any, expected: Any) -> None:
    same(ev({op: ["$a", "$b"]}, {"a": a, "b": b}), expected)


@pytest.mark.parametrize(
    ("op", "message"),
    [
        ("$multiply", "$multiply only supports numeric types, not bool"),
        ("$add", "$add only supports numeric or date types, not bool"),
        ("$subtract", "$subtract: can't $subtract bool from int"),
    ],
)
def test_binary_arithmetic_bool_operand(op: str, message: str) -> None:
    assert str(expr_error({op: ["$a", "$b"]}, {"a": 2, "b": True})) == message


# ---- comparisons against a constant ------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "gte", "lt"),
    [
        (25, True, False),
        (20, True, False),
        (19.5, False, True),
        (Int64(21), True, False),
        (Decimal128("19"), False, True),
        (NAN, False, True),  # NaN sorts below every number
        (True, True, False),  # bool sorts after numbers (no numeric bool)
        (None, False, True),  # null and missing sort before numbers
        ("5", True, False),  # strings sort after numbers
    ],
)
def test_compare_path_with_number(value: Any, gte: bool, lt: bool) -> None:
    doc = {"obs": {"temp": value}}
    same(ev({"$gte": ["$obs.temp", 20]}, doc), gte)
    same(ev({"$lt": ["$obs.temp", 20]}, doc), lt)
    same(ev({"$gte": ["$t", 20]}, {"t": value}), gte)
    same(ev({"$lt": [{"$literal": value}, 20]}, {}), lt)  # folded: the general path


def test_compare_missing_and_arrays_along_the_path() -> None:
    same(ev({"$lt": ["$obs.temp", 20]}, {}), True)
    same(ev({"$lt": ["$obs.temp", 20]}, {"obs": 3}), True)  # a scalar along the path: missing
    same(ev({"$eq": ["$obs.temp", None]}, {"obs": {}}), False)  # missing is not null here
    # An array along the path yields the array of values, and arrays sort after numbers.
    same(ev({"$gte": ["$obs.temp", 20]}, {"obs": [{"temp": 5}, {"temp": 7}]}), True)
    same(ev({"$eq": ["$obs.temp", 5]}, {"obs": [{"temp": 5}]}), False)
    same(ev({"$eq": ["$obs.temp", [5]]}, {"obs": [{"temp": 5}]}), True)


@pytest.mark.parametrize(
    ("op", "expected"),
    [("$eq", False), ("$ne", True), ("$gt", True), ("$gte", True), ("$lt", False), ("$lte", False)],
)
def test_compare_with_string_constant(op: str, expected: bool) -> None:
    same(ev({op: ["$s", "abc"]}, {"s": "abd"}), expected)
    same(ev({op: ["$s", "abc"]}, {"s": 5}), op in ("$ne", "$lt", "$lte"))  # numbers < strings


def test_compare_int_and_double_exactly() -> None:
    same(ev({"$eq": ["$a", 1]}, {"a": 1.0}), True)
    same(ev({"$gt": ["$a", 2**53]}, {"a": 2**53 + 1}), True)
    same(ev({"$lte": ["$a", 0.5]}, {"a": 0}), True)


def test_field_parts_marks_plain_paths_only() -> None:
    assert field_parts(compile_expr("$a", Ctx("t"))) == ("a",)
    assert field_parts(compile_expr("$a.b.c", Ctx("t"))) == ("a", "b", "c")
    assert field_parts(compile_expr("$$ROOT.a", Ctx("t"))) is None
    assert field_parts(compile_expr({"$literal": "$a"}, Ctx("t"))) is None


# ---- the fused $match query -------------------------------------------------------------

C_QUERY = {"event_type": 0, "obs.temp": {"$gte": 12}}


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ({"event_type": 0, "obs": {"temp": 12}}, True),
        ({"event_type": 0, "obs": {"temp": 11.5}}, False),
        ({"event_type": 1, "obs": {"temp": 30}}, False),
        ({"event_type": 0.0, "obs": {"temp": 12.0}}, True),
        ({"event_type": Int64(0), "obs": {"temp": Int64(13)}}, True),
        ({"event_type": Decimal128("0"), "obs": {"temp": Decimal128("12.5")}}, True),
        ({"event_type": False, "obs": {"temp": 30}}, False),  # false is not 0
        ({"event_type": 0, "obs": {"temp": True}}, False),  # bool is not a number
        ({"event_type": None, "obs": {"temp": 30}}, False),
        ({"obs": {"temp": 30}}, False),
        ({"event_type": 0, "obs": {"temp": NAN}}, False),
        ({"event_type": 0, "obs": {"temp": "30"}}, False),  # type bracketing
        ({"event_type": 0, "obs": {}}, False),
        ({"event_type": 0, "obs": 7}, False),
        ({"event_type": [1, 0], "obs": {"temp": 30}}, True),  # an element matches
        ({"event_type": 0, "obs": [{"temp": 5}, {"temp": 15}]}, True),  # array along the path
        ({"event_type": 0, "obs": [{"temp": 5}, {"temp": 6}]}, False),
        ({"event_type": 0, "obs": {"temp": [3, 14]}}, True),  # leaf array elements
    ],
)
def test_fused_query(doc: dict[str, Any], expected: bool) -> None:
    q = compile_query(C_QUERY, Ctx("m"))
    assert isinstance(q, HotPred)  # the fused closure is what is tested
    assert q(doc) is expected


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ({"a": 4, "b": "x"}, True),
        ({"a": 5, "b": "x"}, False),
        ({"a": 5.0, "b": "x"}, False),
        ({"a": Int64(5), "b": "x"}, False),
        ({"a": [5, 6], "b": "x"}, False),  # $ne negates "any element equals"
        ({"b": "x"}, False),  # missing is not 5, but not > 1 either
        ({"a": 4, "b": "y"}, False),
        ({"a": 4, "b": ["y", "x"]}, True),
        ({"a": 1, "b": "x"}, False),  # outside the range clause
        ({"a": 6, "b": "x"}, True),
    ],
)
def test_fused_query_negation_and_ranges(doc: dict[str, Any], expected: bool) -> None:
    q = compile_query({"a": {"$ne": 5, "$gt": 1}, "b": "x", "$and": [{"a": {"$lt": 7}}]}, Ctx("m"))
    assert isinstance(q, HotPred)
    assert q(doc) is expected


def test_fused_ne_alone_matches_missing() -> None:
    q = compile_query({"a": {"$ne": 5}, "b": "x"}, Ctx("m"))
    assert q({"b": "x"}) is True
    assert q({"a": None, "b": "x"}) is True
    assert q({"a": 5, "b": "x"}) is False


def test_fused_query_nan_never_matches_ranges() -> None:
    q = compile_query({"a": {"$gte": 0}, "b": {"$lt": 0}}, Ctx("m"))
    assert q({"a": 1, "b": -1}) is True
    assert q({"a": NAN, "b": -1}) is False
    assert q({"a": 1, "b": NAN}) is False
    assert math.isnan(NAN)
