"""Array expression operators: MongoDB's documented examples, null/missing and errors."""

from __future__ import annotations

from typing import Any

import pytest
from bson import Decimal128, Int64

from tests.translator.mql.mqlhelpers import compile_error, ev, expr_error
from translator.mql.expr import EMPTY_VARS, Ctx, compile_expr, is_const
from translator.mql.values import MISSING


def same(a: Any, b: Any) -> bool:
    """Equal values *and* equal Python types, recursively (1 is not 1.0, not True)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


# ---- $size -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("colors", "expected"),
    [(["blue", "black", "red"], 3), (["purple"], 1), ([], 0)],
)
def test_size_docs_example(colors: list[str], expected: int) -> None:
    assert same(ev({"$size": "$colors"}, {"colors": colors}), expected)


def test_size_array_argument_form() -> None:
    assert ev({"$size": [[1, 2]]}) == 2


@pytest.mark.parametrize(
    ("doc", "type_name"), [({}, "missing"), ({"colors": None}, "null"), ({"colors": "red"}, "string")]
)
def test_size_of_non_array_is_an_error(doc: dict[str, Any], type_name: str) -> None:
    e = expr_error({"$size": "$colors"}, doc)
    assert e.op == "$size"
    assert e.message == f"The argument to $size must be an array. Type of argument is {type_name}"


def test_size_arity_is_checked_at_compile_time() -> None:
    assert compile_error({"$size": [[1], [2]]}) == (
        "t.$size: Expression $size takes exactly 1 arguments. 2 were passed in."
    )


# ---- $arrayElemAt / $first / $last --------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"$arrayElemAt": [[1, 2, 3], 0]}, 1),
        ({"$arrayElemAt": [[1, 2, 3], -1]}, 3),
        ({"$arrayElemAt": [[1, 2, 3], 15]}, MISSING),
        ({"$arrayElemAt": [[1, 2, 3], -4]}, MISSING),
        ({"$arrayElemAt": [[1, 2, 3], 1.0]}, 2),
        ({"$arrayElemAt": [[1, 2, 3], Int64(2)]}, 3),
        ({"$arrayElemAt": [[1, 2, 3], Decimal128("1")]}, 2),
        ({"$arrayElemAt": [None, 0]}, None),
        ({"$arrayElemAt": ["$nope", 0]}, None),
        ({"$arrayElemAt": [[1], None]}, None),
    ],
)
def test_array_elem_at(spec: Any, expected: Any) -> None:
    assert ev(spec) is expected if expected in (None, MISSING) else same(ev(spec), expected)


def test_array_elem_at_docs_example() -> None:
    doc = {"name": "dave123", "favorites": ["chocolate", "cake", "butter", "apples"]}
    assert ev({"$arrayElemAt": ["$favorites", 0]}, doc) == "chocolate"
    assert ev({"$arrayElemAt": ["$favorites", -1]}, doc) == "apples"
    doc2 = {"name": "ahn", "favorites": ["pears", "pecans", "chocolate", "cherries"]}
    assert ev({"$arrayElemAt": ["$favorites", 0]}, doc2) == "pears"
    doc3 = {"name": "bob", "favorites": ["ice cream"]}
    assert ev({"$arrayElemAt": ["$favorites", -1]}, doc3) == "ice cream"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"$arrayElemAt": ["abc", 0]}, "$arrayElemAt's first argument must be an array, but is string"),
        ({"$arrayElemAt": [[1], "0"]}, "$arrayElemAt's second argument must be a numeric value, but is string"),
        (
            {"$arrayElemAt": [[1], 1.5]},
            "$arrayElemAt's second argument must be representable as a 32-bit integer: 1.5",
        ),
    ],
)
def test_array_elem_at_errors(spec: Any, message: str) -> None:
    e = expr_error(spec)
    assert (e.op, e.message) == ("$arrayElemAt", message)


def test_array_elem_at_arity() -> None:
    assert compile_error({"$arrayElemAt": [[1]]}) == (
        "t.$arrayElemAt: Expression $arrayElemAt takes exactly 2 arguments. 1 were passed in."
    )


# The docs' example1 collection: x -> ($first, $last).
FIRST_LAST = [
    ({"x": [1, 2, 3]}, 1, 3),
    ({"x": [[]]}, [], []),
    ({"x": [None]}, None, None),
    ({"x": []}, MISSING, MISSING),
    ({"x": None}, None, None),
    ({}, None, None),
]


@pytest.mark.parametrize(("doc", "first", "last"), FIRST_LAST)
def test_first_last_docs_example(doc: dict[str, Any], first: Any, last: Any) -> None:
    got_first = ev({"$first": "$x"}, doc)
    got_last = ev({"$last": "$x"}, doc)
    if first is None or first is MISSING:
        assert got_first is first
        assert got_last is last
    else:
        assert same(got_first, first)
        assert same(got_last, last)


@pytest.mark.parametrize("op", ["$first", "$last"])
def test_first_last_non_array_is_an_error(op: str) -> None:
    e = expr_error({op: "$x"}, {"x": 5})
    assert (e.op, e.message) == (op, f"{op}'s argument must be an array, but is int")


# ---- $in ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"$in": [2, [1, 2, 3]]}, True),
        ({"$in": ["abc", ["xyz", "abc"]]}, True),
        ({"$in": ["xy", ["xyz", "abc"]]}, False),
        ({"$in": [["a"], ["a"]]}, False),
        ({"$in": [["a"], [["a"]]]}, True),
        ({"$in": [1, [1.0]]}, True),
        ({"$in": [True, [1]]}, False),
        ({"$in": [None, [None]]}, True),
        ({"$in": ["$nope", [None]]}, False),  # missing is not null
    ],
)
def test_in(spec: Any, expected: bool) -> None:
    assert ev(spec) is expected


def test_in_docs_example() -> None:
    spec = {"$in": ["bananas", "$in_stock"]}
    assert ev(spec, {"location": "24th Street", "in_stock": ["apples", "oranges", "bananas"]}) is True
    assert ev(spec, {"location": "36th Street", "in_stock": ["bananas", "pears", "grapes"]}) is True
    assert ev(spec, {"location": "82nd Street", "in_stock": ["cantaloupes", "watermelons", "apples"]}) is False


def test_in_requires_an_array() -> None:
    e = expr_error({"$in": [1, "$nope"]})
    assert (e.op, e.message) == ("$in", "$in requires an array as a second argument, found: missing")


# ---- $concatArrays / $reverseArray / $isArray ---------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"$concatArrays": [["hello", " "], ["world"]]}, ["hello", " ", "world"]),
        ({"$concatArrays": [["hello", " "], [["world"], "again"]]}, ["hello", " ", ["world"], "again"]),
        ({"$concatArrays": []}, []),
        ({"$concatArrays": [[1], None]}, None),
        ({"$concatArrays": [[1], "$nope"]}, None),
    ],
)
def test_concat_arrays(spec: Any, expected: Any) -> None:
    assert same(ev(spec), expected)


def test_concat_arrays_docs_example() -> None:
    doc = {"instock": ["chocolate"], "ordered": ["butter", "apples"]}
    assert ev({"$concatArrays": ["$instock", "$ordered"]}, doc) == ["chocolate", "butter", "apples"]


def test_concat_arrays_non_array_is_an_error() -> None:
    e = expr_error({"$concatArrays": [[1], "x"]})
    assert (e.op, e.message) == ("$concatArrays", "$concatArrays only supports arrays, not string")


@pytest.mark.parametrize(
    ("value", "expected"),
    [([1, 2, 3], [3, 2, 1]), ([[1, 2, 3], [4, 5, 6]], [[4, 5, 6], [1, 2, 3]]), ([], []), (None, None)],
)
def test_reverse_array(value: Any, expected: Any) -> None:
    assert same(ev({"$reverseArray": "$a"}, {"a": value}), expected)


def test_reverse_array_missing_and_error() -> None:
    assert ev({"$reverseArray": "$a"}) is None
    e = expr_error({"$reverseArray": "$a"}, {"a": 1})
    assert e.message == "The argument to $reverseArray must be an array, but was of type: int"


@pytest.mark.parametrize(
    ("value", "expected"), [([1], True), ([], True), ("a", False), (None, False), (MISSING, False)]
)
def test_is_array(value: Any, expected: bool) -> None:
    doc = {} if value is MISSING else {"a": value}
    assert ev({"$isArray": "$a"}, doc) is expected
    assert ev({"$isArray": ["$a"]}, doc) is expected


def test_is_array_of_a_literal_is_constant_folded() -> None:
    fn = compile_expr({"$isArray": [[1, 2]]}, Ctx("t"))
    assert is_const(fn)
    assert fn(None, EMPTY_VARS) is True


# ---- $slice / $range / $indexOfArray ------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"$slice": [[1, 2, 3], 1, 1]}, [2]),
        ({"$slice": [[1, 2, 3], -2]}, [2, 3]),
        ({"$slice": [[1, 2, 3], 15, 2]}, []),
        ({"$slice": [[1, 2, 3], -15, 2]}, [1, 2]),
        ({"$slice": [[1, 2, 3], 1]}, [1]),
        ({"$slice": [[1, 2, 3], 0]}, []),
        ({"$slice": [[1, 2, 3], -15]}, [1, 2, 3]),
        ({"$slice": [[1, 2, 3], -1, 5]}, [3]),
        ({"$slice": [None, 1]}, None),
        ({"$slice": [[1], "$nope"]}, None),
    ],
)
def test_slice(spec: Any, expected: Any) -> None:
    assert same(ev(spec), expected)


def test_slice_docs_example() -> None:
    spec = {"$slice": ["$favorites", 3]}
    doc = {"name": "dave123", "favorites": ["chocolate", "cake", "butter", "apples"]}
    assert ev(spec, doc) == ["chocolate", "cake", "butter"]
    assert ev(spec, {"name": "bob", "favorites": ["ice cream"]}) == ["ice cream"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"$slice": [[1, 2, 3], 0, 0]}, "Third argument to $slice must be positive: 0"),
        ({"$slice": ["abc", 1]}, "First argument to $slice must be an array, but is of type: string"),
        ({"$slice": [[1], "a"]}, "Second argument to $slice must be a numeric value, but was of type: string"),
        ({"$slice": [[1], 1.5]}, "Second argument to $slice can't be represented as a 32-bit integer: 1.5"),
    ],
)
def test_slice_errors(spec: Any, message: str) -> None:
    e = expr_error(spec)
    assert (e.op, e.message) == ("$slice", message)


def test_slice_arity() -> None:
    assert compile_error({"$slice": [[1]]}) == (
        "t.$slice: Expression $slice takes at least 2 arguments, and at most 3, but 1 were passed in."
    )


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"$range": [0, 10, 2]}, [0, 2, 4, 6, 8]),
        ({"$range": [10, 0, -2]}, [10, 8, 6, 4, 2]),
        ({"$range": [0, 10, -2]}, []),
        ({"$range": [0, 5]}, [0, 1, 2, 3, 4]),
        ({"$range": [0, 2.0]}, [0, 1]),
    ],
)
def test_range(spec: Any, expected: list[int]) -> None:
    assert same(ev(spec), expected)


def test_range_docs_example() -> None:
    spec = {"$range": [0, "$distance", 25]}
    assert ev(spec, {"city": "San Jose, CA", "distance": 42}) == [0, 25]
    assert ev(spec, {"city": "Sacramento, CA", "distance": 88}) == [0, 25, 50, 75]
    assert ev(spec, {"city": "Reno, NV", "distance": 218})[-1] == 200


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"$range": [0, 5, 0]}, "$range requires a non-zero step value"),
        ({"$range": ["a", 5]}, "$range requires a numeric starting value, found value of type: string"),
        ({"$range": [0, None]}, "$range requires a numeric ending value, found value of type: null"),
        (
            {"$range": [0, 5, 1.5]},
            "$range requires a step value that can be represented as a 32-bit integer, found value: 1.5",
        ),
    ],
)
def test_range_errors(spec: Any, message: str) -> None:
    e = expr_error(spec)
    assert (e.op, e.message) == ("$range", message)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"$indexOfArray": [["a", "abc"], "a"]}, 0),
        ({"$indexOfArray": [["a", "abc", "de", ["de"]], ["de"]]}, 3),
        ({"$indexOfArray": [[1, 2], 55]}, -1),
        ({"$indexOfArray": [[2, 1.0, 3], 1]}, 1),
        ({"$indexOfArray": [["a", "abc", "b"], "b", 0, 1]}, -1),
        ({"$indexOfArray": [["a", "abc", "b"], "b", 1, 3]}, 2),
        ({"$indexOfArray": [["a", "b", "a"], "a", 1]}, 2),
        ({"$indexOfArray": [["a"], "a", 5]}, -1),
        ({"$indexOfArray": [[None], None]}, 0),
        ({"$indexOfArray": [None, "foo"]}, None),
    ],
)
def test_index_of_array(spec: Any, expected: Any) -> None:
    assert same(ev(spec), expected)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"$indexOfArray": ["abc", "a"]}, "$indexOfArray requires an array as a first argument, found: string"),
        ({"$indexOfArray": [["a"], "a", -1]}, "$indexOfArray requires a nonnegative starting index, found: -1"),
        (
            {"$indexOfArray": [["a"], "a", 0, "x"]},
            "$indexOfArray requires an integral ending index, found a value of type: string",
        ),
    ],
)
def test_index_of_array_errors(spec: Any, message: str) -> None:
    e = expr_error(spec)
    assert (e.op, e.message) == ("$indexOfArray", message)


# ---- $filter / $map / $reduce -------------------------------------------------------

SALES = [
    {
        "_id": 0,
        "items": [
            {"item_id": 43, "quantity": 2, "price": 10, "name": "pen"},
            {"item_id": 2, "quantity": 1, "price": 240, "name": "briefcase"},
        ],
    },
    {
        "_id": 1,
        "items": [
            {"item_id": 23, "quantity": 3, "price": 110, "name": "notebook"},
            {"item_id": 103, "quantity": 4, "price": 5, "name": "pen"},
            {"item_id": 38, "quantity": 1, "price": 300, "name": "printer"},
        ],
    },
    {"_id": 2, "items": [{"item_id": 4, "quantity": 1, "price": 23, "name": "paper"}]},
]


@pytest.mark.parametrize(("doc", "expected_ids"), [(SALES[0], [43]), (SALES[1], [103]), (SALES[2], [])])
def test_filter_docs_example_string_equality(doc: dict[str, Any], expected_ids: list[int]) -> None:
    # The docs use {$eq: ["$$item.name", "pen"]}; $in keeps this test within this family.
    spec = {"$filter": {"input": "$items", "as": "item", "cond": {"$in": ["$$item.name", ["pen"]]}}}
    assert [x["item_id"] for x in ev(spec, doc)] == expected_ids


@pytest.mark.parametrize(
    ("limit", "expected"), [(1, ["pen"]), (5, ["pen", "printer"]), (None, ["pen", "printer"])]
)
def test_filter_limit(limit: Any, expected: list[str]) -> None:
    spec = {
        "$filter": {
            "input": "$items",
            "as": "item",
            "cond": {"$in": ["$$item.name", ["pen", "printer"]]},
            "limit": limit,
        }
    }
    assert [x["name"] for x in ev(spec, SALES[1])] == expected


def test_filter_default_variable_is_this_and_truthiness() -> None:
    spec: dict[str, Any] = {"$filter": {"input": [1, 0, None, "a", [], False, 2.5], "cond": "$$this"}}
    assert same(ev(spec), [1, "a", [], 2.5])


def test_filter_null_missing_and_errors() -> None:
    spec = {"$filter": {"input": "$a", "cond": True}}
    assert ev(spec, {"a": None}) is None
    assert ev(spec, {}) is None
    e = expr_error(spec, {"a": 3})
    assert (e.op, e.message) == ("$filter", "input to $filter must be an array not int")
    e = expr_error({"$filter": {"input": [1], "cond": True, "limit": "$n"}}, {"n": 0})
    assert e.message == "$filter: limit must be greater than 0: 0"


def test_filter_compile_errors() -> None:
    assert compile_error({"$filter": {"input": [1], "cond": True, "limit": 0}}) == (
        "t.$filter.limit: $filter: limit must be a positive integer"
    )
    assert compile_error({"$filter": {"input": [1]}}) == "t.$filter: missing 'cond' parameter to $filter"
    assert compile_error({"$filter": {"input": [1], "cond": "$$x"}}).startswith(
        "t.$filter.cond: use of undefined variable '$$x'"
    )
    assert compile_error({"$filter": {"input": [1], "cond": True, "bogus": 1}}) == (
        "t.$filter.bogus: unrecognized parameter to $filter: 'bogus'"
    )


def test_filter_variable_does_not_leak_outside() -> None:
    assert compile_error({"$filter": {"input": "$$item", "as": "item", "cond": True}}).startswith(
        "t.$filter.input: use of undefined variable '$$item'"
    )


def test_map() -> None:
    spec = {"$map": {"input": "$items", "as": "it", "in": "$$it.name"}}
    assert ev(spec, SALES[1]) == ["notebook", "pen", "printer"]
    # A missing result becomes null: arrays cannot hold "missing".
    assert ev({"$map": {"input": [{"a": 1}, {}], "in": "$$this.a"}}) == [1, None]
    assert ev({"$map": {"input": "$nope", "in": 1}}) is None
    e = expr_error({"$map": {"input": "x", "in": 1}})
    assert (e.op, e.message) == ("$map", "input to $map must be an array not string")


def test_map_nested_variables_and_outer_doc() -> None:
    spec = {
        "$map": {
            "input": [[1, 2], [3]],
            "as": "row",
            "in": {"$map": {"input": "$$row", "as": "x", "in": ["$$x", "$$row", "$tag"]}},
        }
    }
    assert ev(spec, {"tag": "t"}) == [[[1, [1, 2], "t"], [2, [1, 2], "t"]], [[3, [3], "t"]]]


def test_reduce_docs_example_concat_arrays() -> None:
    spec = {
        "$reduce": {
            "input": [[3, 4], [5, 6]],
            "initialValue": [1, 2],
            "in": {"$concatArrays": ["$$value", "$$this"]},
        }
    }
    assert ev(spec) == [1, 2, 3, 4, 5, 6]


def test_reduce_merge_objects_and_edge_cases() -> None:
    spec = {"$reduce": {"input": "$a", "initialValue": {}, "in": {"$mergeObjects": ["$$value", "$$this"]}}}
    assert ev(spec, {"a": [{"x": 1}, {"y": 2}, {"x": 3}]}) == {"x": 3, "y": 2}
    assert ev(spec, {"a": []}) == {}
    assert ev(spec, {"a": None}) is None
    assert ev(spec, {}) is None
    e = expr_error(spec, {"a": {"x": 1}})
    assert (e.op, e.message) == ("$reduce", "input to $reduce must be an array not object")


def test_reduce_variables_are_scoped() -> None:
    assert compile_error({"$reduce": {"input": [], "initialValue": "$$value", "in": 1}}).startswith(
        "t.$reduce.initialValue: use of undefined variable '$$value'"
    )


# ---- $sortArray / $zip ----------------------------------------------------------------

TEAM = [
    {"name": "pat", "age": 30, "address": {"street": "12 Baker St", "city": "London"}},
    {"name": "dallas", "age": 36, "address": {"street": "12 Cowper St", "city": "Palo Alto"}},
    {"name": "charlie", "age": 42, "address": {"street": "12 French St", "city": "New Brunswick"}},
]


@pytest.mark.parametrize(
    ("sort_by", "names"),
    [
        ({"name": 1}, ["charlie", "dallas", "pat"]),
        ({"address.city": -1}, ["dallas", "charlie", "pat"]),
        ({"age": -1, "name": 1}, ["charlie", "dallas", "pat"]),
    ],
)
def test_sort_array_docs_examples(sort_by: dict[str, int], names: list[str]) -> None:
    result = ev({"$sortArray": {"input": "$team", "sortBy": sort_by}}, {"team": TEAM})
    assert [p["name"] for p in result] == names


def test_sort_array_by_value() -> None:
    assert ev({"$sortArray": {"input": [1, 4, 1, 6, 12, 5], "sortBy": 1}}) == [1, 1, 4, 5, 6, 12]
    assert ev({"$sortArray": {"input": [1, 4, 1, 6, 12, 5], "sortBy": -1}}) == [12, 6, 5, 4, 1, 1]


def test_sort_array_mixed_types_docs_example() -> None:
    data = [
        20, 4, {"a": "Free"}, 6, 21, 5, "Gratis", {"a": None},
        {"a": {"sale": True, "price": 19}}, Decimal128("10.23"), {"a": "On sale"},
    ]  # fmt: skip
    expected = [
        4, 5, 6, Decimal128("10.23"), 20, 21, "Gratis", {"a": None}, {"a": "Free"},
        {"a": "On sale"}, {"a": {"sale": True, "price": 19}},
    ]  # fmt: skip
    assert ev({"$sortArray": {"input": data, "sortBy": 1}}) == expected


def test_sort_array_compound_key_is_stable_and_does_not_mutate() -> None:
    data = [{"a": 2, "b": 1}, {"a": 1, "b": 2}, {"a": 2, "b": 0}, {"b": 9}]
    doc = {"d": data}
    out = ev({"$sortArray": {"input": "$d", "sortBy": {"a": 1, "b": -1}}}, doc)
    assert out == [{"b": 9}, {"a": 1, "b": 2}, {"a": 2, "b": 1}, {"a": 2, "b": 0}]
    assert doc["d"] is data and data[0] == {"a": 2, "b": 1}


def test_sort_array_null_error_and_compile_errors() -> None:
    assert ev({"$sortArray": {"input": "$nope", "sortBy": 1}}) is None
    e = expr_error({"$sortArray": {"input": "abc", "sortBy": 1}})
    assert e.message == "The input argument to $sortArray must be an array, but was of type: string"
    assert compile_error({"$sortArray": {"input": [], "sortBy": 2}}) == (
        "t.$sortArray.sortBy: $sortArray sort direction must be 1 or -1"
    )


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"inputs": [["a"], ["b"], ["c"]]}, [["a", "b", "c"]]),
        ({"inputs": [["a"], ["b", "c"]]}, [["a", "b"]]),
        ({"inputs": [[1], [2, 3]], "useLongestLength": True}, [[1, 2], [None, 3]]),
        (
            {"inputs": [[1], [2, 3], [4]], "useLongestLength": True, "defaults": ["a", "b", "c"]},
            [[1, 2, 4], ["a", 3, "c"]],
        ),
        ({"inputs": [[1], None]}, None),
    ],
)
def test_zip_docs_examples(spec: dict[str, Any], expected: Any) -> None:
    assert ev({"$zip": spec}) == expected


def test_zip_defaults_need_longest_length() -> None:
    assert compile_error({"$zip": {"inputs": [[1]], "defaults": [0]}}) == (
        "t.$zip.defaults: cannot specify defaults unless useLongestLength is true"
    )
