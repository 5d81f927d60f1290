"""The operators added for MQL parity: argument forms, null rules, result types, errors.

Expected values are the MongoDB 8.0 manual's (reference pages of each operator).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from bson import Binary, Decimal128, Int64, Timestamp

from tests.translator.mql.mqlhelpers import compile_error, ev, expr_error, same

UTC = dt.UTC

VALUE_CASES: list[tuple[Any, Any, Any]] = [
    # expression accumulators: one array operand folds its elements, several do not descend
    ({"$sum": "$a"}, {"a": [1, 2, 3, 4.5]}, 10.5),
    ({"$sum": ["$a", 1]}, {"a": [1, 2]}, 1),
    ({"$sum": "$missing"}, {}, 0),
    ({"$sum": [Int64(1), 2]}, {}, Int64(3)),
    ({"$avg": [10, 20, "x"]}, {}, 15.0),
    ({"$avg": "$a"}, {"a": []}, None),
    ({"$max": [1, 5, "x"]}, {}, "x"),
    ({"$min": "$a"}, {"a": [None, 4, 2]}, 2),
    ({"$min": []}, {}, None),
    ({"$stdDevPop": [1, 2, 3, 4]}, {}, 1.118033988749895),
    ({"$stdDevSamp": "$a"}, {"a": [1]}, None),
    ({"$median": {"input": "$a", "method": "approximate"}}, {"a": [1, 2, 3, 4.5]}, 2.0),
    ({"$percentile": {"input": "$a", "p": [0.5, 0.9], "method": "approximate"}}, {"a": [1, 2, 3, 4.5]}, [2.0, 4.5]),
    ({"$firstN": {"n": 2, "input": [1, 2, 3]}}, {}, [1, 2]),
    ({"$lastN": {"n": 2, "input": [1, 2, 3]}}, {}, [2, 3]),
    ({"$firstN": {"n": 2, "input": "$nope"}}, {}, None),
    ({"$maxN": {"n": 2, "input": [3, None, 1, 7]}}, {}, [7, 3]),
    ({"$minN": {"n": 2, "input": [3, None, 1, 7]}}, {}, [1, 3]),
    # strings by bytes and code points
    ({"$substrBytes": ["éa", 0, 2]}, {}, "é"),
    ({"$substr": ["abcde", 1, 2]}, {}, "bc"),
    ({"$substrBytes": ["abc", 5, 2]}, {}, ""),
    ({"$substrBytes": [None, 0, 2]}, {}, ""),
    ({"$strLenBytes": "cafétéria"}, {}, 11),
    ({"$indexOfBytes": ["cafétéria", "t"]}, {}, 5),
    ({"$indexOfCP": ["cafétéria", "t"]}, {}, 4),
    ({"$indexOfCP": ["abc", "c", 0, 2]}, {}, -1),
    ({"$indexOfCP": [None, "c"]}, {}, None),
    ({"$strcasecmp": ["ABC", "abd"]}, {}, -1),
    ({"$strcasecmp": ["abc", "ABC"]}, {}, 0),
    ({"$replaceAll": {"input": "aaa", "find": "a", "replacement": "b"}}, {}, "bbb"),
    ({"$replaceOne": {"input": "aaa", "find": "a", "replacement": "b"}}, {}, "baa"),
    ({"$replaceOne": {"input": None, "find": "a", "replacement": "b"}}, {}, None),
    # sets
    ({"$setUnion": [[1, 2], [2, 3.0, 3]]}, {}, [1, 2, 3.0]),
    ({"$setIntersection": [[1, 2], [2.0]]}, {}, [2]),
    ({"$setIntersection": [[1], "$nope"]}, {}, None),
    ({"$setEquals": [[1, 2], [2, 1, 1]]}, {}, True),
    ({"$setDifference": [[1, 2, [2]], [2]]}, {}, [1, [2]]),
    ({"$setIsSubset": [[1], [1, 2]]}, {}, True),
    ({"$allElementsTrue": [[1, 0]]}, {}, False),
    ({"$allElementsTrue": [[]]}, {}, True),
    ({"$anyElementTrue": [[None, False, 0]]}, {}, False),
    # trigonometry: double, or Decimal128 for Decimal128 input
    ({"$sin": 0}, {}, 0.0),
    ({"$cos": {"$literal": Decimal128("0")}}, {}, Decimal128("1.000000000000000000000000000000000")),
    ({"$atan2": [1, 1]}, {}, 0.7853981633974483),
    ({"$degreesToRadians": 180}, {}, 3.141592653589793),
    ({"$radiansToDegrees": None}, {}, None),
    # bits
    ({"$bitAnd": [12, 10]}, {}, 8),
    ({"$bitOr": [12, Int64(10)]}, {}, Int64(14)),
    ({"$bitNot": 0}, {}, -1),
    ({"$bitNot": Int64(0)}, {}, Int64(-1)),
    ({"$bitXor": [5, 3]}, {}, 6),
    ({"$bitAnd": [1, None]}, {}, None),
    # sizes, timestamps, hashing
    ({"$binarySize": "héllo"}, {}, 6),
    ({"$bsonSize": {"a": 1}}, {}, 12),
    ({"$bsonSize": None}, {}, None),
    ({"$tsSecond": {"$literal": Timestamp(5, 7)}}, {}, Int64(5)),
    ({"$tsIncrement": {"$literal": Timestamp(5, 7)}}, {}, Int64(7)),
    ({"$toHashedIndexKey": "string to hash"}, {}, Int64(763543691661428748)),
    # dates from and to parts
    ({"$dateFromParts": {"year": 2017, "month": 14, "day": 1, "hour": 12}}, {}, dt.datetime(2018, 2, 1, 12, tzinfo=UTC)),
    ({"$dateFromParts": {"year": 2017, "month": 0, "day": 0}}, {}, dt.datetime(2016, 11, 30, tzinfo=UTC)),
    ({"$dateFromParts": {"isoWeekYear": 2017, "isoWeek": 6, "isoDayOfWeek": 3}}, {}, dt.datetime(2017, 2, 8, tzinfo=UTC)),
    (
        {"$dateFromParts": {"year": 2016, "month": 12, "day": 31, "hour": 23, "minute": 46, "second": 12, "timezone": "America/New_York"}},
        {},
        dt.datetime(2017, 1, 1, 4, 46, 12, tzinfo=UTC),
    ),
    ({"$dateFromParts": {"year": 2017, "month": None}}, {}, None),
    (
        {"$dateToParts": {"date": "$d", "timezone": "America/New_York"}},
        {"d": dt.datetime(2017, 1, 1, 1, 29, 9, 123000, tzinfo=UTC)},
        {"year": 2016, "month": 12, "day": 31, "hour": 20, "minute": 29, "second": 9, "millisecond": 123},
    ),
    (
        {"$dateToParts": {"date": "$d", "iso8601": True}},
        {"d": dt.datetime(2017, 1, 1, 1, 29, 9, 123000, tzinfo=UTC)},
        {"isoWeekYear": 2016, "isoWeek": 52, "isoDayOfWeek": 7, "hour": 1, "minute": 29, "second": 9, "millisecond": 123},
    ),
]


@pytest.mark.parametrize(("spec", "doc", "expected"), VALUE_CASES, ids=[str(c[0])[:60] for c in VALUE_CASES])
def test_value(spec: Any, doc: Any, expected: Any) -> None:
    got = ev(spec, doc)
    if isinstance(expected, (list, dict)):
        assert got == expected
        assert [type(x) for x in (got.values() if isinstance(got, dict) else got)] == [
            type(x) for x in (expected.values() if isinstance(expected, dict) else expected)
        ]
    else:
        same(got, expected)


def test_to_uuid_is_a_standard_uuid_binary() -> None:
    got = ev({"$toUUID": "123e4567-e89b-12d3-a456-426614174000"})
    assert got == Binary(bytes.fromhex("123e4567e89b12d3a456426614174000"), 4)


ERROR_CASES: list[tuple[Any, str]] = [
    ({"$acos": 2}, "$acos: cannot apply $acos to 2, value must be in [-1,1]"),
    ({"$sin": float("inf")}, "$sin: cannot apply $sin to inf, value must be in (-inf,inf)"),
    ({"$acosh": 0}, "$acosh: cannot apply $acosh to 0, value must be in [1,inf)"),
    ({"$sin": "x"}, "$sin only supports numeric types, not string"),
    ({"$substrBytes": ["éa", 1, 1]}, "$substrBytes:  Invalid range, starting index is a UTF-8 continuation byte."),
    ({"$substrBytes": ["éa", 0, 1]}, "$substrBytes:  Invalid range, ending index is in the middle of a UTF-8 character."),
    ({"$strLenBytes": 1}, "$strLenBytes requires a string argument, found: int"),
    ({"$bitAnd": [1.0]}, "$bitAnd only supports int and long operands."),
    ({"$setUnion": [[1], 2]}, "$setUnion: All operands of $setUnion must be arrays. One argument is of type: int"),
    ({"$setIsSubset": [None, [1]]}, "$setIsSubset: both operands of $setIsSubset must be arrays. First argument is of type: null"),
    ({"$firstN": {"n": 0, "input": [1]}}, "$firstN: 'n' must be greater than 0, found 0"),
    ({"$replaceAll": {"input": 1, "find": "a", "replacement": "b"}}, "$replaceAll requires that 'input' be a string, found: int"),
    ({"$dateFromParts": {"year": 0}}, "$dateFromParts: 'year' must evaluate to an integer in the range 1 to 9999, found 0"),
    ({"$dateFromParts": {"year": 2017, "month": 2.5}}, "$dateFromParts: 'month' must evaluate to an integer, found double with value 2.5"),
    ({"$tsSecond": 1}, "$tsSecond expects argument of type timestamp but received int"),
    ({"$bsonSize": "x"}, "$bsonSize requires a document input, found: string"),
]


@pytest.mark.parametrize(("spec", "message"), ERROR_CASES, ids=[str(c[0])[:60] for c in ERROR_CASES])
def test_error(spec: Any, message: str) -> None:
    assert str(expr_error(spec)) == message


@pytest.mark.parametrize("op", ["$function", "$accumulator"])
def test_javascript_operators_are_rejected_in_their_own_words(op: str) -> None:
    assert compile_error({op: {}}) == f"t.{op}: {op}: JavaScript is not supported by stream processors"


def test_date_from_parts_rejects_mixed_forms() -> None:
    assert compile_error({"$dateFromParts": {"year": 2017, "isoWeek": 3}}) == (
        "t.$dateFromParts: $dateFromParts: pass either the calendar fields or the ISO week-date fields, not both"
    )
