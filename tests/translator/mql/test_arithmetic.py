"""Arithmetic expression operators: MongoDB's documented examples, result types, errors."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import pytest
from bson import Decimal128, Int64

from tests.translator.mql.mqlhelpers import run, runtime_error, same
from translator.errors import TranslateError
from translator.mql.expr import EMPTY_VARS, Ctx, ExprError, compile_expr, const_value
from translator.mql.values import MISSING

UTC = dt.UTC
NAN = float("nan")
INF = float("inf")


SALES = {"price": 10, "fee": 2, "discount": 5, "date": dt.datetime(2014, 3, 1, 8, tzinfo=UTC)}


@pytest.mark.parametrize(
    ("spec", "doc", "expected"),
    [
        # $add docs: numbers, a date plus milliseconds, left-associative date rounding.
        ({"$add": ["$price", "$fee"]}, SALES, 12),
        ({"$add": ["$date", 3 * 24 * 60 * 60000]}, SALES, dt.datetime(2014, 3, 4, 8, tzinfo=UTC)),
        (
            {"$add": [1.5, 1.6, "$date", 1.5, 1.5]},
            SALES,
            dt.datetime(2014, 3, 1, 8, 0, 0, 7000, tzinfo=UTC),
        ),
        ({"$add": []}, None, 0),
        ({"$add": [1, 2, 3]}, None, 6),
        ({"$add": [Int64(1), 2]}, None, Int64(3)),
        ({"$add": [2147483647, 1]}, None, Int64(2147483648)),
        ({"$add": [Int64(2**63 - 1), 1]}, None, 9.223372036854776e18),
        ({"$add": [1, 2.5]}, None, 3.5),
        ({"$add": [Decimal128("1.1"), 1]}, None, Decimal128("2.1")),
        ({"$add": [2.5, Decimal128("1")]}, None, Decimal128("3.50000000000000")),
        ({"$add": [1, None]}, None, None),
        ({"$add": [1, "$nope"]}, None, None),
        ({"$add": [None, "a"]}, None, None),
        ({"$add": "$price"}, SALES, 10),
        # $subtract docs.
        ({"$subtract": [{"$add": ["$price", "$fee"]}, "$discount"]}, SALES, 7),
        ({"$subtract": ["$date", 5 * 60 * 1000]}, SALES, dt.datetime(2014, 3, 1, 7, 55, tzinfo=UTC)),
        (
            {"$subtract": ["$date", dt.datetime(2014, 3, 1, 7, tzinfo=UTC)]},
            SALES,
            Int64(3_600_000),
        ),
        ({"$subtract": [-2147483648, 1]}, None, Int64(-2147483649)),
        ({"$subtract": [Int64(5), 2]}, None, Int64(3)),
        ({"$subtract": [5, 2.5]}, None, 2.5),
        ({"$subtract": [Decimal128("5.5"), 2]}, None, Decimal128("3.5")),
        ({"$subtract": [None, "$date"]}, SALES, None),
        ({"$subtract": ["$date", None]}, SALES, None),
        # $multiply docs: price * quantity.
        ({"$multiply": ["$price", "$quantity"]}, {"price": 10, "quantity": 2}, 20),
        ({"$multiply": [2147483647, 2]}, None, Int64(4294967294)),
        ({"$multiply": [Int64(2), 3]}, None, Int64(6)),
        ({"$multiply": [2, 1.5, 2]}, None, 6.0),
        ({"$multiply": [Decimal128("1.5"), 2]}, None, Decimal128("3.0")),
        ({"$multiply": [2, "$missing"]}, None, None),
        ({"$multiply": []}, None, 1),
        # $divide docs: always a double (decimal with a decimal operand).
        ({"$divide": ["$hours", 8]}, {"hours": 80}, 10.0),
        ({"$divide": [1, 4]}, None, 0.25),
        ({"$divide": [Int64(9), 3]}, None, 3.0),
        ({"$divide": [1, Decimal128("4")]}, None, Decimal128("0.25")),
        ({"$divide": [None, 0]}, None, None),
        ({"$divide": [None, "x"]}, None, None),
        # $mod docs: hours mod tasks; remainder takes the dividend's sign.
        ({"$mod": ["$hours", "$tasks"]}, {"hours": 80, "tasks": 7}, 3),
        ({"$mod": [-5, 3]}, None, -2),
        ({"$mod": [5, -3]}, None, 2),
        ({"$mod": [5.5, 2]}, None, 1.5),
        ({"$mod": [-5.5, 2]}, None, -1.5),
        ({"$mod": [5, 2.0]}, None, 1),
        ({"$mod": [Int64(5), 3]}, None, Int64(2)),
        ({"$mod": [Decimal128("5.5"), 2]}, None, Decimal128("1.5")),
        ({"$mod": [None, 2]}, None, None),
        # $abs docs: |startTemp - endTemp|, null in -> null out.
        ({"$abs": {"$subtract": ["$s", "$e"]}}, {"s": 50, "e": 60}, 10),
        ({"$abs": {"$subtract": ["$s", "$e"]}}, {"s": None, "e": 60}, None),
        ({"$abs": -2147483648}, None, Int64(2147483648)),
        ({"$abs": Int64(-5)}, None, Int64(5)),
        ({"$abs": -2.5}, None, 2.5),
        ({"$abs": Decimal128("-2.50")}, None, Decimal128("2.50")),
        ({"$abs": [-1]}, None, 1),
        # $ceil / $floor docs: 1, 7.80, -2.8; integral inputs keep their type.
        ({"$ceil": "$v"}, {"v": 1}, 1),
        ({"$ceil": "$v"}, {"v": 7.80}, 8.0),
        ({"$ceil": "$v"}, {"v": -2.8}, -2.0),
        ({"$ceil": Decimal128("1.2")}, None, Decimal128("2")),
        ({"$floor": "$v"}, {"v": 1}, 1),
        ({"$floor": "$v"}, {"v": 7.80}, 7.0),
        ({"$floor": "$v"}, {"v": -2.8}, -3.0),
        ({"$floor": Int64(7)}, None, Int64(7)),
        ({"$floor": Decimal128("-2.8")}, None, Decimal128("-3")),
        ({"$floor": None}, None, None),
        ({"$ceil": INF}, None, INF),
        # $round docs.
        ({"$round": [1234.5678, 2]}, None, 1234.57),
        ({"$round": [1234.5678, -2]}, None, 1200.0),
        ({"$round": [1234.5678, -4]}, None, 0.0),
        ({"$round": [1234.5678, 0]}, None, 1235.0),
        ({"$round": ["$value", 0]}, {"value": 10.5}, 10.0),
        ({"$round": ["$value", 0]}, {"value": 11.5}, 12.0),
        ({"$round": ["$value", 0]}, {"value": 12.5}, 12.0),
        ({"$round": ["$value", 0]}, {"value": 13.5}, 14.0),
        ({"$round": ["$value", 1]}, {"value": 19.25}, 19.2),
        ({"$round": ["$value", 1]}, {"value": 28.73}, 28.7),
        ({"$round": ["$value", 1]}, {"value": 34.32}, 34.3),
        ({"$round": ["$value", 1]}, {"value": -45.39}, -45.4),
        ({"$round": [NAN, 1]}, None, NAN),
        ({"$round": [None, 1]}, None, None),
        ({"$round": [INF, 1]}, None, INF),
        ({"$round": [-INF, 1]}, None, -INF),
        ({"$round": 2.5}, None, 2.0),
        ({"$round": [1250, -2]}, None, 1200),
        ({"$round": [1350, -2]}, None, 1400),
        ({"$round": [Int64(1250), -2]}, None, Int64(1200)),
        ({"$round": [7, 2]}, None, 7),
        ({"$round": [Decimal128("1.25"), 1]}, None, Decimal128("1.2")),
        ({"$round": [Decimal128("1.35"), 1]}, None, Decimal128("1.4")),
        ({"$round": [1.5, 0.0]}, None, 2.0),
        ({"$round": [2.675, 2]}, None, 2.67),  # the double is just below the tie
        ({"$round": [0.125, 2]}, None, 0.12),  # an exact tie goes to even
        ({"$round": [0.375, 2]}, None, 0.38),
        ({"$round": [-2.5, 0]}, None, -2.0),
        ({"$round": [1e300, -20 + 1]}, None, 1e300),
        # $trunc docs.
        ({"$trunc": ["$value", 1]}, {"value": 19.25}, 19.2),
        ({"$trunc": ["$value", 1]}, {"value": 28.73}, 28.7),
        ({"$trunc": ["$value", 1]}, {"value": 34.32}, 34.3),
        ({"$trunc": ["$value", 1]}, {"value": -45.39}, -45.3),
        ({"$trunc": ["$value", 0]}, {"value": -45.39}, -45.0),
        ({"$trunc": -2.8}, None, -2.0),
        ({"$trunc": [1299, -2]}, None, 1200),
        ({"$trunc": [Decimal128("1.99"), 1]}, None, Decimal128("1.9")),
        # $pow docs: 5^0, 5^2, 5^-2, (-5)^0.5; integers stay integers when exact.
        ({"$pow": [5, 0]}, None, 1),
        ({"$pow": [5, 2]}, None, 25),
        ({"$pow": [5, -2]}, None, 0.04),
        ({"$pow": [-5, 0.5]}, None, NAN),
        ({"$pow": [2, 31]}, None, Int64(2147483648)),
        ({"$pow": [Int64(2), 3]}, None, Int64(8)),
        ({"$pow": [2, 64]}, None, 1.8446744073709552e19),
        ({"$pow": [-1, -3]}, None, -1),
        ({"$pow": [2.0, 3]}, None, 8.0),
        ({"$pow": [Decimal128("2"), 3]}, None, Decimal128("8")),
        ({"$pow": [None, 2]}, None, None),
        # $sqrt docs.
        ({"$sqrt": 25}, None, 5.0),
        ({"$sqrt": 30}, None, 5.477225575051661),
        ({"$sqrt": Decimal128("2.25")}, None, Decimal128("1.5")),
        ({"$sqrt": None}, None, None),
        # $exp docs.
        ({"$exp": 0}, None, 1.0),
        ({"$exp": 2}, None, 7.38905609893065),
        ({"$exp": -2}, None, 0.1353352832366127),
        # $ln docs.
        ({"$ln": 1}, None, 0.0),
        ({"$ln": math.e}, None, 1.0),
        ({"$ln": 10}, None, 2.302585092994046),
        ({"$ln": NAN}, None, NAN),
        # $log docs.
        ({"$log": [100, 10]}, None, 2.0),
        ({"$log": [100, math.e]}, None, 4.605170185988092),
        ({"$log": [8, Decimal128("2")]}, None, Decimal128("3.000000000000000000000000000000000")),
        ({"$log": [None, 10]}, None, None),
        # $log10 docs.
        ({"$log10": 1}, None, 0.0),
        ({"$log10": 10}, None, 1.0),
        ({"$log10": 100}, None, 2.0),
        ({"$log10": 1000}, None, 3.0),
        ({"$log10": Decimal128("1000")}, None, Decimal128("3")),
        ({"$log10": "$nope"}, None, None),
    ],
)
def test_documented_results(spec: Any, doc: dict[str, Any] | None, expected: Any) -> None:
    same(run(spec, doc), expected)


@pytest.mark.parametrize(
    ("spec", "op", "message"),
    [
        ({"$add": ["a", 1]}, "$add", "$add only supports numeric or date types, not string"),
        ({"$add": [1, True]}, "$add", "$add only supports numeric or date types, not bool"),
        ({"$add": [1, "a", None]}, "$add", "$add only supports numeric or date types, not string"),
        (
            {"$add": ["$date", "$date"]},
            "$add",
            "only one date allowed in an $add expression",
        ),
        ({"$subtract": [1, "$date"]}, "$subtract", "can't $subtract date from int"),
        ({"$subtract": ["a", 1]}, "$subtract", "can't $subtract int from string"),
        ({"$subtract": ["$date", "x"]}, "$subtract", "can't $subtract string from date"),
        ({"$multiply": [2, "3"]}, "$multiply", "$multiply only supports numeric types, not string"),
        ({"$divide": [1, 0]}, "$divide", "can't $divide by zero"),
        ({"$divide": [1.5, 0.0]}, "$divide", "can't $divide by zero"),
        ({"$divide": [1, Decimal128("0")]}, "$divide", "can't $divide by zero"),
        (
            {"$divide": ["a", 1]},
            "$divide",
            "$divide only supports numeric types, not string and int",
        ),
        ({"$mod": [5, 0]}, "$mod", "can't $mod by zero"),
        ({"$mod": [5, "a"]}, "$mod", "$mod only supports numeric types, not int and string"),
        ({"$abs": "x"}, "$abs", "$abs only supports numeric types, not string"),
        ({"$abs": Int64(-(2**63))}, "$abs", "can't take $abs of long long min"),
        ({"$ceil": "x"}, "$ceil", "$ceil only supports numeric types, not string"),
        ({"$floor": [[1]]}, "$floor", "$floor only supports numeric types, not array"),
        ({"$round": ["x", 1]}, "$round", "$round only supports numeric types, not string"),
        (
            {"$round": [1.5, 100]},
            "$round",
            '$round requires "place" argument to be an integer between -20 and 100',
        ),
        (
            {"$trunc": [1.5, 1.5]},
            "$trunc",
            '$trunc requires "place" argument to be an integer between -20 and 100',
        ),
        ({"$pow": [0, -1]}, "$pow", "$pow cannot take a base of 0 and a negative exponent"),
        ({"$pow": ["a", 2]}, "$pow", "$pow's base must be numeric, not string"),
        ({"$pow": [2, "a"]}, "$pow", "$pow's exponent must be numeric, not string"),
        ({"$sqrt": -1}, "$sqrt", "$sqrt's argument must be greater than or equal to 0"),
        ({"$sqrt": "x"}, "$sqrt", "$sqrt only supports numeric types, not string"),
        ({"$exp": "x"}, "$exp", "$exp only supports numeric types, not string"),
        ({"$ln": -1}, "$ln", "$ln's argument must be a positive number, but is -1"),
        ({"$ln": 0}, "$ln", "$ln's argument must be a positive number, but is 0"),
        ({"$log10": -2.5}, "$log10", "$log10's argument must be a positive number, but is -2.5"),
        ({"$log": [0, 10]}, "$log", "$log's argument must be a positive number, but is 0"),
        (
            {"$log": [10, 1]},
            "$log",
            "$log's base must be a positive number not equal to 1, but is 1",
        ),
        ({"$log": ["a", 10]}, "$log", "$log's argument must be numeric, not string"),
        ({"$log": [10, "a"]}, "$log", "$log's base must be numeric, not string"),
    ],
)
def test_runtime_errors(spec: Any, op: str, message: str) -> None:
    err = runtime_error(spec, SALES)
    assert (err.op, err.message) == (op, message)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"$subtract": [1]}, "t.$subtract: Expression $subtract takes exactly 2 arguments. 1 were passed in."),
        ({"$divide": [1, 2, 3]}, "t.$divide: Expression $divide takes exactly 2 arguments. 3 were passed in."),
        ({"$mod": 5}, "t.$mod: Expression $mod takes exactly 2 arguments. 1 were passed in."),
        ({"$abs": [1, 2]}, "t.$abs: Expression $abs takes exactly 1 arguments. 2 were passed in."),
        ({"$round": []}, "t.$round: Expression $round takes at least 1 arguments, and 0 were passed in."),
        ({"$trunc": [1, 2, 3]}, "t.$trunc: Expression $trunc takes at most 2 arguments, and 3 were passed in."),
        ({"$add": [1, {"$nope": 1}]}, "t.$add[1].$nope: unknown expression operator '$nope'; did you mean '$ne'?"),
    ],
)
def test_compile_errors(spec: Any, message: str) -> None:
    with pytest.raises(TranslateError) as ei:
        compile_expr(spec, Ctx("t"))
    assert str(ei.value) == message


def test_constant_operands_are_folded_once() -> None:
    fn = compile_expr({"$add": [1, {"$multiply": [2, 3]}]}, Ctx("t"))
    same(const_value(fn), 7)
    # A field operand keeps the expression dynamic.
    assert const_value(compile_expr({"$add": [1, "$x"]}, Ctx("t"))) is MISSING


def test_failing_constant_is_left_to_fail_per_document() -> None:
    fn = compile_expr({"$divide": [1, 0]}, Ctx("t"))  # compiles: the DLQ gets each document
    assert const_value(fn) is MISSING
    with pytest.raises(ExprError):
        fn({}, EMPTY_VARS)


def test_variadic_add_fast_path_types() -> None:
    fn = compile_expr({"$add": ["$a", "$b", "$c"]}, Ctx("t"))
    same(fn({"a": 1, "b": 2, "c": 3}, EMPTY_VARS), 6)
    same(fn({"a": 2147483647, "b": 1, "c": 1}, EMPTY_VARS), Int64(2147483649))
    same(fn({"a": 1, "b": 0.5, "c": 1}, EMPTY_VARS), 2.5)
    same(fn({"a": 1, "b": Int64(1), "c": 1}, EMPTY_VARS), Int64(3))
    same(fn({"a": 1, "b": None, "c": "x"}, EMPTY_VARS), None)
    with pytest.raises(ExprError):
        fn({"a": 1, "b": True, "c": 1}, EMPTY_VARS)


def test_two_argument_fast_paths_match_general_path() -> None:
    fn = compile_expr({"$add": ["$a", "$b"]}, Ctx("t"))
    same(fn({"a": 1, "b": 2}, EMPTY_VARS), 3)
    same(fn({"a": 2147483647, "b": 1}, EMPTY_VARS), Int64(2147483648))
    same(fn({"a": 3000000000, "b": 1}, EMPTY_VARS), Int64(3000000001))  # a long input
    same(fn({"a": 0.5, "b": 0.25}, EMPTY_VARS), 0.75)
    same(fn({"a": Int64(1), "b": 1}, EMPTY_VARS), Int64(2))
    sub = compile_expr({"$subtract": ["$a", "$b"]}, Ctx("t"))
    same(sub({"a": 3000000000, "b": 1}, EMPTY_VARS), Int64(2999999999))
    same(sub({"a": 1.5, "b": 0.25}, EMPTY_VARS), 1.25)
