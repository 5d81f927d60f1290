"""Object expression operators: MongoDB's documented examples, null/missing and errors."""

from __future__ import annotations

from typing import Any

import pytest

from tests.translator.mql.mqlhelpers import compile_error, ev, expr_error
from translator.mql.values import MISSING

# ---- $mergeObjects ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([{"a": 1}, None], {"a": 1}),
        ([None, None], {}),
        ([{"a": 1}, {"a": 2, "b": 2}, {"a": 3, "c": 3}], {"a": 3, "b": 2, "c": 3}),
        ([{"a": 1}, {"a": 2, "b": 2}, {"a": 3, "b": None, "c": 3}], {"a": 3, "b": None, "c": 3}),
        ([], {}),
        (["$nope", {"x": 1}], {"x": 1}),
    ],
)
def test_merge_objects_docs_behaviour(args: list[Any], expected: dict[str, Any]) -> None:
    result = ev({"$mergeObjects": args})
    assert result == expected
    assert list(result) == list(expected)


def test_merge_objects_docs_example_with_root() -> None:
    doc = {
        "_id": 1,
        "item": "abc",
        "price": 12,
        "ordered": 2,
        "fromItems": [{"_id": 1, "item": "abc", "description": "product 1", "instock": 120}],
    }
    spec = {"$mergeObjects": [{"$arrayElemAt": ["$fromItems", 0]}, "$$ROOT"]}
    result = ev(spec, doc)
    assert list(result) == ["_id", "item", "description", "instock", "price", "ordered", "fromItems"]
    assert result["description"] == "product 1" and result["price"] == 12
    assert "description" not in doc  # the input document is untouched


def test_merge_objects_single_expression_operand() -> None:
    assert ev({"$mergeObjects": "$q"}, {"q": {"a": 1}}) == {"a": 1}
    assert ev({"$mergeObjects": "$q"}) == {}


def test_merge_objects_non_object_is_an_error() -> None:
    e = expr_error({"$mergeObjects": [{"a": 1}, "$x"]}, {"x": 5})
    assert (e.op, e.message) == ("$mergeObjects", "$mergeObjects requires object inputs, but input 5 is of type int")
    e = expr_error({"$mergeObjects": ["$x"]}, {"x": "s"})
    assert e.message == '$mergeObjects requires object inputs, but input "s" is of type string'


# ---- $getField ----------------------------------------------------------------------

INVENTORY = [
    {"_id": 1, "item": "sweatshirt", "price.usd": 45.99, "qty": 300},
    {"_id": 2, "item": "winter coat", "price.usd": 499.99, "qty": 200},
]


def test_get_field_docs_example_dotted_name() -> None:
    assert [ev({"$getField": "price.usd"}, d) for d in INVENTORY] == [45.99, 499.99]
    assert ev({"$getField": {"field": "price.usd"}}, INVENTORY[1]) == 499.99


def test_get_field_docs_example_dollar_name() -> None:
    doc = {"_id": 2, "item": "winter coat", "$price": 499.99, "qty": 200}
    assert ev({"$getField": {"$literal": "$price"}}, doc) == 499.99


def test_get_field_docs_example_subdocument() -> None:
    doc = {"_id": 3, "quantity": {"$large": 45, "$medium": 40, "$small": 5}}
    spec = {"$getField": {"field": {"$literal": "$small"}, "input": "$quantity"}}
    assert ev(spec, doc) == 5


@pytest.mark.parametrize(
    ("input_expr", "doc", "expected"),
    [
        ("$$ROOT", {"a": {"b": 1}}, MISSING),  # "a.b" is a literal name: no traversal
        ("$x", {"x": None}, None),
        ("$x", {}, None),
    ],
)
def test_get_field_null_missing(input_expr: str, doc: dict[str, Any], expected: Any) -> None:
    assert ev({"$getField": {"field": "a.b", "input": input_expr}}, doc) is expected


def test_get_field_errors() -> None:
    e = expr_error({"$getField": {"field": "a", "input": "$x"}}, {"x": [1]})
    assert (e.op, e.message) == ("$getField", "$getField requires 'input' to evaluate to type Object, but got array")
    e = expr_error({"$getField": {"field": "$f", "input": {}}}, {"f": 1})
    assert e.message == "$getField requires 'field' to evaluate to type String, but got int"
    assert compile_error({"$getField": 5}) == (
        "t.$getField: $getField requires 'field' to evaluate to type String, but got int"
    )
    assert compile_error({"$getField": {"input": {}}}) == "t.$getField: missing 'field' parameter to $getField"


# ---- $setField / $unsetField --------------------------------------------------------


def test_set_field_docs_example_add_dotted_field() -> None:
    doc = {"_id": 1, "item": "sweatshirt", "qty": 300, "price": 45.99}
    spec = {"$setField": {"field": "price.usd", "input": "$$ROOT", "value": "$price"}}
    result = ev(spec, doc)
    assert result == {"_id": 1, "item": "sweatshirt", "qty": 300, "price": 45.99, "price.usd": 45.99}
    assert "price.usd" not in doc


def test_set_field_docs_example_dollar_field_update_keeps_position() -> None:
    doc = {"_id": 1, "item": "sweatshirt", "$price": 45.99, "qty": 300}
    spec = {"$setField": {"field": {"$literal": "$price"}, "input": "$$ROOT", "value": 49.99}}
    result = ev(spec, doc)
    assert list(result.items()) == [("_id", 1), ("item", "sweatshirt"), ("$price", 49.99), ("qty", 300)]


def test_set_field_docs_example_remove() -> None:
    doc = {"_id": 1, "item": "sweatshirt", "qty": 300, "price.usd": 45.99}
    spec = {"$setField": {"field": "price.usd", "input": "$$ROOT", "value": "$$REMOVE"}}
    assert ev(spec, doc) == {"_id": 1, "item": "sweatshirt", "qty": 300}
    # Removing an absent field is a no-op copy.
    assert ev(spec, {"a": 1}) == {"a": 1}


def test_unset_field_docs_examples() -> None:
    doc = {"_id": 1, "item": "sweatshirt", "qty": 300, "$price": 45.99}
    spec = {"$unsetField": {"field": {"$literal": "$price"}, "input": "$$ROOT"}}
    assert ev(spec, doc) == {"_id": 1, "item": "sweatshirt", "qty": 300}
    nested = {"_id": 1, "price": {"usd": 45.99, "euro": 38.77}}
    spec2 = {"$unsetField": {"field": "euro", "input": "$price"}}
    assert ev(spec2, nested) == {"usd": 45.99}


def test_set_field_null_missing_and_errors() -> None:
    spec = {"$setField": {"field": "a", "input": "$x", "value": 1}}
    assert ev(spec, {"x": None}) is None
    assert ev(spec, {}) is None
    e = expr_error(spec, {"x": 3})
    assert (e.op, e.message) == ("$setField", "$setField requires 'input' to evaluate to type Object, but got int")
    assert compile_error({"$setField": {"field": "$f", "input": {}, "value": 1}}) == (
        "t.$setField.field: $setField requires 'field' to evaluate to a constant string "
        "(use $literal for names starting with '$')"
    )
    assert compile_error({"$setField": {"field": "a", "input": {}}}) == (
        "t.$setField: missing 'value' parameter to $setField"
    )


# ---- $objectToArray / $arrayToObject ------------------------------------------------


def test_object_to_array_docs_example() -> None:
    doc = {"_id": 1, "item": "ABC1", "dimensions": {"l": 25, "w": 10, "uom": "cm"}}
    assert ev({"$objectToArray": "$dimensions"}, doc) == [
        {"k": "l", "v": 25},
        {"k": "w", "v": 10},
        {"k": "uom", "v": "cm"},
    ]


def test_object_to_array_is_not_recursive_and_null_rules() -> None:
    assert ev({"$objectToArray": {"$literal": {"a": {"b": 1}}}}) == [{"k": "a", "v": {"b": 1}}]
    assert ev({"$objectToArray": "$nope"}) is None
    assert ev({"$objectToArray": [None]}) is None
    e = expr_error({"$objectToArray": "$x"}, {"x": [1]})
    assert (e.op, e.message) == ("$objectToArray", "$objectToArray requires a document input, found: array")


@pytest.mark.parametrize(
    ("spec", "doc", "expected"),
    [
        (
            {"$arrayToObject": [[{"k": "item", "v": "abc123"}, {"k": "qty", "v": "$qty"}]]},
            {"qty": 25},
            {"item": "abc123", "qty": 25},
        ),
        ({"$arrayToObject": {"$literal": [["item", "abc123"], ["qty", 25]]}}, {}, {"item": "abc123", "qty": 25}),
        (
            {"$arrayToObject": {"$literal": [{"k": "item", "v": "123abc"}, {"k": "item", "v": "abc123"}]}},
            {},
            {"item": "abc123"},
        ),
        ({"$arrayToObject": [[]]}, {}, {}),
    ],
)
def test_array_to_object_docs_behaviour(spec: Any, doc: dict[str, Any], expected: dict[str, Any]) -> None:
    assert ev(spec, doc) == expected


@pytest.mark.parametrize(
    ("dimensions", "expected"),
    [
        ([{"k": "l", "v": 25}, {"k": "w", "v": 10}, {"k": "uom", "v": "cm"}], {"l": 25, "w": 10, "uom": "cm"}),
        ([["l", 50], ["w", 25], ["uom", "cm"]], {"l": 50, "w": 25, "uom": "cm"}),
        ([["l", 25], ["l", "cm"], ["l", 50]], {"l": 50}),
    ],
)
def test_array_to_object_docs_inventory_example(dimensions: list[Any], expected: dict[str, Any]) -> None:
    assert ev({"$arrayToObject": "$dimensions"}, {"dimensions": dimensions}) == expected


def test_object_to_array_round_trip() -> None:
    doc = {"a": 1, "b": {"c": [1]}}
    assert ev({"$arrayToObject": {"$objectToArray": "$$ROOT"}}, doc) == doc


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("x", "$arrayToObject requires an array input, found: string"),
        ([[1, 2]], "$arrayToObject requires an array of key-value pairs, where the key must be of type string. Found key type: int"),
        ([["a", 1, 2]], "$arrayToObject requires an array of size 2 arrays,found array of size: 3"),
        ([{"k": "a"}], "$arrayToObject requires an object keys of 'k' and 'v'. Found incorrect number of keys:1"),
        ([{"k": "a", "x": 1}], "$arrayToObject requires an object with keys 'k' and 'v'. Missing either or both keys from: {'k': 'a', 'x': 1}"),
        ([["a", 1], {"k": "b", "v": 2}], "$arrayToObject requires a consistent input format. Elements must all be arrays or all be objects. Array was detected, now found: object"),
        ([5], "Unrecognised input type format for $arrayToObject: int"),
    ],
)  # fmt: skip
def test_array_to_object_errors(value: Any, message: str) -> None:
    e = expr_error({"$arrayToObject": "$a"}, {"a": value})
    assert (e.op, e.message) == ("$arrayToObject", message)


def test_array_to_object_null_missing() -> None:
    assert ev({"$arrayToObject": "$a"}, {"a": None}) is None
    assert ev({"$arrayToObject": "$a"}) is None
