"""Comparison expression operators: documented examples and BSON cross-type order."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from bson import Decimal128, Int64, MaxKey, MinKey, ObjectId

from translator.errors import TranslateError
from translator.mql.expr import EMPTY_VARS, Ctx, compile_expr, is_const

NAN = float("nan")
DATE = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)


def run(spec: Any, doc: dict[str, Any] | None = None) -> Any:
    return compile_expr(spec, Ctx("t"))({} if doc is None else doc, EMPTY_VARS)


# The inventory example used by every comparison page of the MongoDB docs.
INVENTORY = [{"qty": 300}, {"qty": 250}, {"qty": 200}, {"qty": 300}, {"qty": 250}]


@pytest.mark.parametrize(
    ("op", "expected"),
    [
        ("$eq", [False, True, False, False, True]),
        ("$ne", [True, False, True, True, False]),
        ("$gt", [True, False, False, True, False]),
        ("$gte", [True, True, False, True, True]),
        ("$lt", [False, False, True, False, False]),
        ("$lte", [False, True, True, False, True]),
        ("$cmp", [1, 0, -1, 1, 0]),
    ],
)
def test_documented_inventory_example(op: str, expected: list[Any]) -> None:
    fn = compile_expr({op: ["$qty", 250]}, Ctx("t"))
    got = [fn(doc, EMPTY_VARS) for doc in INVENTORY]
    assert got == expected
    assert all(type(g) is type(e) for g, e in zip(got, expected, strict=True))


@pytest.mark.parametrize(
    ("a", "b", "cmp"),
    [
        # numbers compare by value across int / long / double / decimal
        (1, 1.0, 0),
        (1, Int64(1), 0),
        (1, Decimal128("1.0"), 0),
        (Int64(2), 1.5, 1),
        (Decimal128("0.1"), 0.2, -1),
        (NAN, NAN, 0),
        (NAN, -1e308, -1),
        (NAN, 0, -1),
        (2**53 + 1, float(2**53), 1),  # exact int/double comparison, no rounding
        (1, 1.5, -1),
        # different types: MinKey < null < numbers < string < object < array < binData
        # < objectId < bool < date < MaxKey
        ("a", 5, 1),
        (None, 0, -1),
        ({"a": 1}, "zzz", 1),
        ([1], {"a": 1}, 1),
        (True, ObjectId("5ab9c3da31c2ab715d421285"), 1),
        (DATE, True, 1),
        (MaxKey(), DATE, 1),
        (MinKey(), None, -1),
        (True, 1, 1),
        (False, 0, 1),
        # same type
        ("abc", "abd", -1),
        ("B", "a", -1),
        ([1, 2], [1, 3], -1),
        ([1, 2], [1, 2, 0], -1),
        ({"a": 1}, {"a": 2}, -1),
        ({"a": 1}, {"b": 0}, -1),
        (False, True, -1),
        (DATE, DATE + dt.timedelta(milliseconds=1), -1),
    ],
)
def test_bson_order(a: Any, b: Any, cmp: int) -> None:
    doc = {"a": a, "b": b}
    assert run({"$cmp": ["$a", "$b"]}, doc) == cmp
    assert run({"$cmp": ["$b", "$a"]}, doc) == -cmp
    assert run({"$eq": ["$a", "$b"]}, doc) is (cmp == 0)
    assert run({"$ne": ["$a", "$b"]}, doc) is (cmp != 0)
    assert run({"$gt": ["$a", "$b"]}, doc) is (cmp > 0)
    assert run({"$gte": ["$a", "$b"]}, doc) is (cmp >= 0)
    assert run({"$lt": ["$a", "$b"]}, doc) is (cmp < 0)
    assert run({"$lte": ["$a", "$b"]}, doc) is (cmp <= 0)


def test_missing_sorts_below_null_in_expressions() -> None:
    """{$eq: ["$absent", null]} is false in aggregation (unlike the query $eq)."""
    assert run({"$eq": ["$absent", None]}) is False
    assert run({"$lt": ["$absent", None]}) is True
    assert run({"$cmp": ["$absent", None]}) == -1
    assert run({"$cmp": [None, "$absent"]}) == 1
    assert run({"$eq": ["$absent", "$alsoAbsent"]}) is True
    assert run({"$gt": ["$absent", {"$literal": MinKey()}]}) is True
    assert run({"$eq": ["$present", None]}, {"present": None}) is True


def test_cmp_returns_int_and_folds_constants() -> None:
    fn = compile_expr({"$cmp": [2, 1]}, Ctx("t"))
    assert is_const(fn)
    r = fn(None, EMPTY_VARS)
    assert r == 1 and type(r) is int


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"$eq": [1]}, "t.$eq: Expression $eq takes exactly 2 arguments. 1 were passed in."),
        ({"$gt": [1, 2, 3]}, "t.$gt: Expression $gt takes exactly 2 arguments. 3 were passed in."),
        ({"$cmp": 1}, "t.$cmp: Expression $cmp takes exactly 2 arguments. 1 were passed in."),
        ({"$lte": []}, "t.$lte: Expression $lte takes exactly 2 arguments. 0 were passed in."),
    ],
)
def test_arity_is_a_compile_error(spec: Any, message: str) -> None:
    with pytest.raises(TranslateError) as ei:
        compile_expr(spec, Ctx("t"))
    assert str(ei.value) == message
