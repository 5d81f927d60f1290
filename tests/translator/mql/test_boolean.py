"""Boolean expression operators: aggregation truthiness, short-circuit, arity."""

from __future__ import annotations

from typing import Any

import pytest
from bson import Decimal128, Int64

from translator.errors import TranslateError
from translator.mql.expr import EMPTY_VARS, Ctx, ExprError, compile_expr, const_value


def run(spec: Any, doc: dict[str, Any] | None = None) -> Any:
    return compile_expr(spec, Ctx("t"))({} if doc is None else doc, EMPTY_VARS)


INVENTORY = [{"qty": 300}, {"qty": 200}, {"qty": 150}, {"qty": 250}, {"qty": 50}]


def test_and_documented_example() -> None:
    # {$and: [{$gt: ["$qty", 100]}, {$lt: ["$qty", 250]}]}
    fn = compile_expr({"$and": [{"$gt": ["$qty", 100]}, {"$lt": ["$qty", 250]}]}, Ctx("t"))
    assert [fn(d, EMPTY_VARS) for d in INVENTORY] == [False, True, True, False, False]


def test_or_documented_example() -> None:
    # {$or: [{$gt: ["$qty", 250]}, {$lt: ["$qty", 200]}]}
    fn = compile_expr({"$or": [{"$gt": ["$qty", 250]}, {"$lt": ["$qty", 200]}]}, Ctx("t"))
    assert [fn(d, EMPTY_VARS) for d in INVENTORY] == [True, False, True, False, True]


def test_not_documented_example() -> None:
    # {$not: [{$gt: ["$qty", 250]}]}
    fn = compile_expr({"$not": [{"$gt": ["$qty", 250]}]}, Ctx("t"))
    assert [fn(d, EMPTY_VARS) for d in INVENTORY] == [False, True, True, True, True]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        # $and docs table
        ({"$and": [1, "green"]}, True),
        ({"$and": []}, True),
        ({"$and": [[None], [False], [0]]}, True),
        ({"$and": [None, True]}, False),
        ({"$and": [0, True]}, False),
        # $or docs table
        ({"$or": [True, False]}, True),
        ({"$or": [[False], False]}, True),
        ({"$or": [None, 0, None]}, False),
        ({"$or": []}, False),
        # $not docs table
        ({"$not": [True]}, False),
        ({"$not": [[False]]}, False),
        ({"$not": [False]}, True),
        ({"$not": [None]}, True),
        ({"$not": [0]}, True),
        ({"$not": ["$absent"]}, True),
        ({"$not": 0.0}, True),
        ({"$not": [Int64(0)]}, True),
        ({"$not": [Decimal128("0")]}, True),
        ({"$not": [Decimal128("0.1")]}, False),
        ({"$not": [""]}, False),
        ({"$not": [{}]}, False),
        ({"$and": "$absent"}, False),
        ({"$or": [1, 2, 3]}, True),
        ({"$and": [1, 2, 0]}, False),
    ],
)
def test_truthiness(spec: Any, expected: bool) -> None:
    assert run(spec) is expected


def test_short_circuit_skips_failing_operands() -> None:
    boom = {"$divide": [1, 0]}
    assert run({"$and": [False, boom]}) is False
    assert run({"$or": [True, boom]}) is True
    assert run({"$and": ["$f", boom, boom]}, {"f": 0}) is False
    assert run({"$or": ["$t", boom, boom]}, {"t": 1}) is True
    with pytest.raises(ExprError):
        run({"$and": [True, boom]})


def test_constant_operands_fold() -> None:
    assert const_value(compile_expr({"$and": [1, {"$not": [0]}]}, Ctx("t"))) is True
    assert const_value(compile_expr({"$or": []}, Ctx("t"))) is False


def test_not_arity_is_a_compile_error() -> None:
    with pytest.raises(TranslateError) as ei:
        compile_expr({"$not": [1, 2]}, Ctx("t"))
    assert str(ei.value) == "t.$not: Expression $not takes exactly 1 arguments. 2 were passed in."
