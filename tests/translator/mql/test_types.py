"""Type operators: $type, $isNumber, $convert and $toX, from MongoDB's $convert tables."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
from bson import Decimal128, Int64, MaxKey, MinKey, ObjectId, Regex, Timestamp

from tests.translator.mql.mqlhelpers import run, same
from translator.errors import TranslateError
from translator.mql.expr import EMPTY_VARS, Ctx, ExprError, compile_expr
from translator.mql.operators.types import ConvertError, convert

UTC = dt.UTC
DATE = dt.datetime(2018, 3, 26, 4, 38, 28, 44000, tzinfo=UTC)  # 1522039108044 ms
OID = ObjectId("5ab9c3da31c2ab715d421285")


ERROR = object()  # marker: the conversion fails

# (input, to, expected) straight from the $convert documentation's example tables.
CONVERT_TABLE: list[tuple[Any, str, Any]] = [
    # to bool
    (True, "bool", True),
    (False, "bool", False),
    (1.99999, "bool", True),
    (Decimal128("5"), "bool", True),
    (Decimal128("0"), "bool", False),
    (100, "bool", True),
    (DATE, "bool", True),
    ("hello", "bool", True),
    ("false", "bool", True),
    ("", "bool", True),
    (0, "bool", False),
    (Int64(0), "bool", False),
    (0.0, "bool", False),
    (OID, "bool", True),
    # to int
    (True, "int", 1),
    (False, "int", 0),
    (1.99999, "int", 1),
    (-1.99999, "int", -1),
    (Decimal128("5.5000"), "int", 5),
    (Decimal128("9223372036000.000"), "int", ERROR),
    (Int64(5000), "int", 5000),
    (Int64(922337203600), "int", ERROR),
    ("-2", "int", -2),
    ("2.5", "int", ERROR),
    ("0x6400", "int", ERROR),
    ("2147483648", "int", ERROR),
    (DATE, "int", ERROR),
    # to decimal
    (True, "decimal", Decimal128("1")),
    (False, "decimal", Decimal128("0")),
    (2.5, "decimal", Decimal128("2.50000000000000")),
    (5, "decimal", Decimal128("5")),
    (Int64(10000), "decimal", Decimal128("10000")),
    ("-5.5", "decimal", Decimal128("-5.5")),
    (DATE, "decimal", Decimal128("1522039108044")),
    ("0x6400", "decimal", ERROR),
    # to double
    (True, "double", 1.0),
    (False, "double", 0.0),
    (2.5, "double", 2.5),
    (5, "double", 5.0),
    (Int64(10000), "double", 10000.0),
    ("-5.5", "double", -5.5),
    ("5e10", "double", 50000000000.0),
    (DATE, "double", 1522039108044.0),
    ("0x6400", "double", ERROR),
    ("1e400", "double", ERROR),
    (Decimal128("1.5"), "double", 1.5),
    # to long
    (True, "long", Int64(1)),
    (False, "long", Int64(0)),
    (2.5, "long", Int64(2)),
    (Decimal128("5.5000"), "long", Int64(5)),
    (Decimal128("9223372036854775808.0"), "long", ERROR),
    (8, "long", Int64(8)),
    (DATE, "long", Int64(1522039108044)),
    ("-2", "long", Int64(-2)),
    ("2.5", "long", ERROR),
    (float("nan"), "long", ERROR),
    # to date
    (120000000000.5, "date", dt.datetime(1973, 10, 20, 21, 20, tzinfo=UTC)),
    (Decimal128("1253372036000.50"), "date", dt.datetime(2009, 9, 19, 14, 53, 56, tzinfo=UTC)),
    (Int64(1100000000000), "date", dt.datetime(2004, 11, 9, 11, 33, 20, tzinfo=UTC)),
    (Int64(-1100000000000), "date", dt.datetime(1935, 2, 22, 12, 26, 40, tzinfo=UTC)),
    (OID, "date", dt.datetime(2018, 3, 27, 4, 8, 58, tzinfo=UTC)),
    ("2018-03-03", "date", dt.datetime(2018, 3, 3, tzinfo=UTC)),
    ("2018-03-03T12:00:00Z", "date", dt.datetime(2018, 3, 3, 12, tzinfo=UTC)),
    ("2018-03-03T12:00:00+0500", "date", dt.datetime(2018, 3, 3, 7, tzinfo=UTC)),
    ("2018-03-20 11:00:06 +0500", "date", dt.datetime(2018, 3, 20, 6, 0, 6, tzinfo=UTC)),
    ("2018-03-27T16:58:51.538Z", "date", dt.datetime(2018, 3, 27, 16, 58, 51, 538000, tzinfo=UTC)),
    ("Friday", "date", ERROR),
    ("2018-02-30", "date", ERROR),
    (Timestamp(1637688118, 1), "date", dt.datetime(2021, 11, 23, 17, 21, 58, tzinfo=UTC)),
    (5, "date", ERROR),  # int -> date is unsupported, long -> date is allowed
    (True, "date", ERROR),
    # to objectId
    ("5ab9cbfa31c2ab715d42129e", "objectId", ObjectId("5ab9cbfa31c2ab715d42129e")),
    ("5ab9cbfa31c2ab715d42129", "objectId", ERROR),
    ("5ab9cbfa31c2ab715d42129z", "objectId", ERROR),
    (5, "objectId", ERROR),
    # to string
    (True, "string", "true"),
    (False, "string", "false"),
    (2.5, "string", "2.5"),
    (2, "string", "2"),
    (Int64(1000), "string", "1000"),
    (OID, "string", "5ab9c3da31c2ab715d421285"),
    (dt.datetime(2018, 3, 27, 16, 58, 51, 538000, tzinfo=UTC), "string", "2018-03-27T16:58:51.538Z"),
    (Decimal128("1.50"), "string", "1.50"),
    (10.0, "string", "10"),
    ([1], "string", ERROR),
    ({"a": 1}, "string", ERROR),
]


@pytest.mark.parametrize(("value", "to", "expected"), CONVERT_TABLE)
def test_convert_documented_table(value: Any, to: str, expected: Any) -> None:
    spec = {"$convert": {"input": "$v", "to": to, "onError": "ERR"}}
    got = run(spec, {"v": value})
    if expected is ERROR:
        assert got == "ERR"
        with pytest.raises(ConvertError):
            convert(value, to)
    else:
        same(got, expected)
        same(convert(value, to), expected)


SHORTHANDS = {
    "int": "$toInt",
    "long": "$toLong",
    "double": "$toDouble",
    "decimal": "$toDecimal",
    "string": "$toString",
    "bool": "$toBool",
    "date": "$toDate",
}


@pytest.mark.parametrize(
    ("value", "to", "expected"), [row for row in CONVERT_TABLE if row[1] in SHORTHANDS]
)
def test_to_shorthands_match_convert(value: Any, to: str, expected: Any) -> None:
    op = SHORTHANDS[to]
    spec = {op: {"$literal": value}}
    if expected is ERROR:
        with pytest.raises(ExprError) as ei:
            run(spec)
        assert ei.value.op == op
        assert "in $convert with no onError value" in ei.value.message
    else:
        same(run(spec), expected)


@pytest.mark.parametrize("op", sorted(SHORTHANDS.values()))
def test_to_shorthands_pass_null_through(op: str) -> None:
    assert run({op: "$absent"}) is None
    assert run({op: None}) is None


@pytest.mark.parametrize(
    ("spec", "op", "message"),
    [
        (
            {"$toInt": "abc"},
            "$toInt",
            "Failed to parse number 'abc' in $convert with no onError value: Did not consume any digits",
        ),
        (
            {"$toInt": "2.5"},
            "$toInt",
            "Failed to parse number '2.5' in $convert with no onError value: Did not consume whole string.",
        ),
        (
            {"$toLong": ""},
            "$toLong",
            "Failed to parse number '' in $convert with no onError value: No digits",
        ),
        (
            {"$toInt": "99999999999"},
            "$toInt",
            "Failed to parse number '99999999999' in $convert with no onError value: Overflow",
        ),
        (
            {"$toInt": Int64(922337203600)},
            "$toInt",
            "Conversion would overflow target type in $convert with no onError value",
        ),
        (
            {"$toInt": float("nan")},
            "$toInt",
            "Attempt to convert NaN value to integer type in $convert with no onError value",
        ),
        (
            {"$toLong": float("-inf")},
            "$toLong",
            "Attempt to convert infinity value to integer type in $convert with no onError value",
        ),
        (
            {"$toDate": 5},
            "$toDate",
            "Unsupported conversion from int to date in $convert with no onError value",
        ),
        (
            {"$toString": [[1, 2]]},
            "$toString",
            "Unsupported conversion from array to string in $convert with no onError value",
        ),
        (
            {"$convert": {"input": "x", "to": "int"}},
            "$convert",
            "Failed to parse number 'x' in $convert with no onError value: Did not consume any digits",
        ),
        (
            {"$convert": {"input": 1, "to": "array"}},
            "$convert",
            "Unsupported conversion from int to array in $convert with no onError value",
        ),
    ],
)
def test_conversion_error_messages(spec: Any, op: str, message: str) -> None:
    with pytest.raises(ExprError) as ei:
        run(spec)
    assert (ei.value.op, ei.value.message) == (op, message)


def test_convert_documented_orders_example() -> None:
    """The $convert page's orders example: convert price/qty, then price * qty."""
    spec = {
        "$let": {
            "vars": {
                "price": {
                    "$convert": {
                        "input": "$price",
                        "to": "decimal",
                        "onError": "Error",
                        "onNull": Decimal128("0"),
                    }
                },
                "qty": {
                    "$convert": {
                        "input": "$qty",
                        "to": "int",
                        "onError": {
                            "$concat": ["Could not convert ", {"$toString": "$qty"}, " to type integer."]
                        },
                        "onNull": 0,
                    }
                },
            },
            "in": {
                "$switch": {
                    "branches": [
                        {"case": {"$eq": [{"$type": "$$price"}, "string"]}, "then": "NaN"},
                        {"case": {"$eq": [{"$type": "$$qty"}, "string"]}, "then": "NaN"},
                    ],
                    "default": {"$multiply": ["$$price", "$$qty"]},
                }
            },
        }
    }
    orders = [
        ({"item": "apple", "qty": 5, "price": 10}, Decimal128("50")),
        ({"item": "pie", "qty": 10, "price": Decimal128("20.0")}, Decimal128("200.0")),
        ({"item": "ice cream", "qty": 2, "price": "4.99"}, Decimal128("9.98")),
        ({"item": "almonds"}, Decimal128("0")),
        ({"item": "bananas", "qty": 5000000000, "price": Decimal128("1.25")}, "NaN"),
    ]
    fn = compile_expr(spec, Ctx("t"))
    for doc, expected in orders:
        same(fn(doc, EMPTY_VARS), expected)
    on_error = compile_expr(spec["$let"]["vars"]["qty"], Ctx("t"))  # type: ignore[index]
    assert on_error({"qty": 5000000000}, EMPTY_VARS) == "Could not convert 5000000000 to type integer."


@pytest.mark.parametrize(
    ("to", "expected"),
    [
        (16, 7),
        (18, Int64(7)),
        (1, 7.0),
        (2, "7"),
        (8, True),
        (19, Decimal128("7")),
        (16.0, 7),
        (Int64(18), Int64(7)),
        ({"type": "long"}, Int64(7)),
    ],
)
def test_convert_numeric_and_object_to(to: Any, expected: Any) -> None:
    same(run({"$convert": {"input": 7, "to": {"$literal": to}}}), expected)
    same(run({"$convert": {"input": 7, "to": "$to"}}, {"to": to}), expected)


def test_convert_null_handling() -> None:
    assert run({"$convert": {"input": "$absent", "to": "int"}}) is None
    assert run({"$convert": {"input": None, "to": "int", "onNull": "none"}}) == "none"
    assert run({"$convert": {"input": None, "to": "int", "onError": "e"}}) is None
    # a null `to` gives null; onNull still wins for a null input
    assert run({"$convert": {"input": 1, "to": "$absent"}}) is None
    assert run({"$convert": {"input": None, "to": "$absent", "onNull": 0}}) == 0
    # onError / onNull are lazy
    boom = {"$divide": [1, 0]}
    assert run({"$convert": {"input": 1, "to": "int", "onError": boom, "onNull": boom}}) == 1


def test_bad_to_is_not_hidden_by_on_error() -> None:
    with pytest.raises(ExprError) as ei:
        run({"$convert": {"input": 1, "to": "$t", "onError": 0}}, {"t": "integer"})
    assert ei.value.message == "Unknown type name: integer"
    with pytest.raises(ExprError) as ei:
        run({"$convert": {"input": 1, "to": "$t", "onError": 0}}, {"t": 100})
    assert ei.value.message == (
        "In $convert, numeric value for 'to' does not correspond to a BSON type: 100"
    )
    with pytest.raises(ExprError) as ei:
        run({"$convert": {"input": 1, "to": "$t", "onError": 0}}, {"t": True})
    assert ei.value.message == "$convert's 'to' argument must be a string or number, but is bool"


def test_on_error_does_not_hide_input_errors() -> None:
    with pytest.raises(ExprError) as ei:
        run({"$convert": {"input": {"$divide": [1, 0]}, "to": "int", "onError": 0}})
    assert ei.value.op == "$divide"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"$convert": {"to": "int"}}, "t.$convert: Missing 'input' parameter to $convert"),
        ({"$convert": {"input": 1}}, "t.$convert: Missing 'to' parameter to $convert"),
        ({"$convert": {"input": 1, "to": "int", "x": 1}}, "t.$convert.x: $convert found an unknown argument: x"),
        ({"$convert": {"input": 1, "to": "integer"}}, "t.$convert.to: Unknown type name: integer"),
        (
            {"$convert": {"input": 1, "to": 100}},
            "t.$convert.to: In $convert, numeric value for 'to' does not correspond to a BSON type: 100",
        ),
        ({"$convert": [1, "int"]}, "t.$convert: $convert expects an object of named arguments but found: array"),
        ({"$toInt": [1, 2]}, "t.$toInt: Expression $toInt takes exactly 1 arguments. 2 were passed in."),
    ],
)
def test_convert_compile_errors(spec: Any, message: str) -> None:
    with pytest.raises(TranslateError) as ei:
        compile_expr(spec, Ctx("t"))
    assert str(ei.value) == message


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (8.5, "double"),
        (8, "int"),
        (Int64(8), "long"),
        (3_000_000_000, "long"),
        (Decimal128("1"), "decimal"),
        ("a", "string"),
        ({"a": 1}, "object"),
        ([[20]], "array"),
        (None, "null"),
        ("$absent", "missing"),
        (True, "bool"),
        (DATE, "date"),
        (OID, "objectId"),
        (Regex("a"), "regex"),
        (re.compile("a"), "regex"),
        (Timestamp(1, 1), "timestamp"),
        (b"\x00", "binData"),
        (MinKey(), "minKey"),
        (MaxKey(), "maxKey"),
    ],
)
def test_type_documented_aliases(value: Any, expected: str) -> None:
    spec = {"$type": value if isinstance(value, (str, list)) else {"$literal": value}}
    assert run(spec) == expected
    assert run({"$type": "$v"}, {"v": value[0] if isinstance(value, list) else value}) == (
        expected if value != "$absent" else "string"
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1, True),
        (Int64(1), True),
        (1.5, True),
        (Decimal128("1"), True),
        (True, False),
        ("1", False),
        (None, False),
        ([1], False),
    ],
)
def test_is_number(value: Any, expected: bool) -> None:
    assert run({"$isNumber": "$v"}, {"v": value}) is expected
    assert run({"$isNumber": "$absent"}) is False
