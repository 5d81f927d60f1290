"""$jsonSchema: MongoDB's draft-4 subset, with its documented examples and exact errors."""

from __future__ import annotations

import math
from typing import Any

import pytest
from bson import Decimal128, Int64

from translator.errors import TranslateError
from translator.mql.expr import Ctx
from translator.mql.jsonschema import KEYWORDS, explain_schema
from translator.mql.query import compile_query, describe_failure

CTX = Ctx("pipeline[1].$validate.validator")


def passing(schema: dict[str, Any], values: list[Any], field: str = "v") -> list[Any]:
    """The values of ``field`` that pass ``{properties: {field: schema}}``."""
    pred = compile_query({"$jsonSchema": {"properties": {field: schema}}}, CTX)
    return [v for v in values if pred({field: v})]


def docs_passing(schema: dict[str, Any], docs: list[dict[str, Any]]) -> list[Any]:
    pred = compile_query({"$jsonSchema": schema}, CTX)
    return [d["_id"] for d in docs if pred(d)]


def error(schema: Any) -> str:
    with pytest.raises(TranslateError) as e:
        compile_query({"$jsonSchema": schema}, CTX)
    return str(e.value)


P = "pipeline[1].$validate.validator.$jsonSchema"

# ---- the mqlflow DLQ demo -----------------------------------------------------------


def test_dlq_demo_validator_passes_exactly_x_1_to_4() -> None:
    schema = {"required": ["x"], "properties": {"x": {"bsonType": "int", "minimum": 1, "maximum": 42}}}
    docs: list[dict[str, Any]] = [
        {"x": 0}, {"x": 1}, {"x": 3.14}, {"x": 2}, {"x": "22"}, {"x": 3}, {"text": "yo"}, {"x": 4},
    ]
    pred = compile_query({"$jsonSchema": schema}, CTX)
    assert [d for d in docs if pred(d)] == [{"x": 1}, {"x": 2}, {"x": 3}, {"x": 4}]
    assert [explain_schema(schema, d) for d in docs] == [
        "x: $jsonSchema minimum 1 failed for 0",
        None,
        'x: $jsonSchema bsonType "int" failed for 3.14',
        None,
        'x: $jsonSchema bsonType "int" failed for "22"',
        None,
        "x: $jsonSchema required failed: field is missing",
        None,
    ]


# ---- docs: the students validator ---------------------------------------------------

STUDENTS = {
    "bsonType": "object",
    "required": ["name", "year", "major", "address"],
    "properties": {
        "name": {"bsonType": "string", "description": "must be a string and is required"},
        "year": {
            "bsonType": "int",
            "minimum": 2017,
            "maximum": 3017,
            "description": "must be an integer in [ 2017, 3017 ] and is required",
        },
        "major": {
            "enum": ["Math", "English", "Computer Science", "History", None],
            "description": "can only be one of the enum values and is required",
        },
        "gpa": {"bsonType": ["double"], "description": "must be a double if the field exists"},
        "address": {
            "bsonType": "object",
            "required": ["city"],
            "properties": {
                "street": {"bsonType": "string", "description": "must be a string if the field exists"},
                "city": {"bsonType": "string", "description": "must be a string and is required"},
            },
        },
    },
}


def test_docs_students_validator_int_gpa_fails_double_passes() -> None:
    pred = compile_query({"$jsonSchema": STUDENTS}, CTX)
    alice = {
        "name": "Alice",
        "year": 2019,
        "major": "History",
        "gpa": 3,
        "address": {"city": "NYC", "street": "33rd Street"},
    }
    assert pred(alice) is False
    assert explain_schema(STUDENTS, alice) == 'gpa: $jsonSchema bsonType ["double"] failed for 3'
    assert pred({**alice, "gpa": 3.0}) is True
    assert pred({**alice, "gpa": 3.0, "major": None}) is True
    assert pred({**alice, "gpa": 3.0, "major": "Art"}) is False
    assert explain_schema(STUDENTS, {**alice, "gpa": 3.0, "address": {"street": "x"}}) == (
        "address.city: $jsonSchema required failed: field is missing"
    )
    assert explain_schema(STUDENTS, {**alice, "gpa": 3.0, "year": 2016}) == (
        "year: $jsonSchema minimum 2017 failed for 2016"
    )


# ---- docs: query conditions with myschema -------------------------------------------

INVENTORY = [
    {"_id": "journal", "item": "journal", "qty": 25, "size": {"h": 14.0, "w": 21.0, "uom": "cm"}, "instock": True},
    {"_id": "notebook", "item": "notebook", "qty": 50, "size": {"h": 8.5, "w": 11.0, "uom": "in"}, "instock": True},
    {"_id": "paper", "item": "paper", "qty": 100, "size": {"h": 8.5, "w": 11.0, "uom": "in"}, "instock": 1.0},
    {"_id": "planner", "item": "planner", "qty": 75, "size": {"h": 22.85, "w": 30.0, "uom": "cm"}, "instock": 1.0},
    {"_id": "postcard", "item": "postcard", "qty": 45, "size": {"h": 10.0, "w": 15.25, "uom": "cm"}, "instock": True},
    {"_id": "apple", "item": "apple", "qty": 45, "status": "A", "instock": True},
    {"_id": "pears", "item": "pears", "qty": 50, "status": "A", "instock": True},
]
MYSCHEMA = {
    "required": ["item", "qty", "instock"],
    "properties": {
        "item": {"bsonType": "string"},
        "qty": {"bsonType": "int"},
        "size": {
            "bsonType": "object",
            "required": ["uom"],
            "properties": {
                "uom": {"bsonType": "string"},
                "h": {"bsonType": "double"},
                "w": {"bsonType": "double"},
            },
        },
        "instock": {"bsonType": "bool"},
    },
}


def test_docs_json_schema_in_a_query() -> None:
    assert docs_passing(MYSCHEMA, INVENTORY) == ["journal", "notebook", "postcard", "apple", "pears"]


def test_docs_json_schema_under_nor_finds_the_invalid_documents() -> None:
    pred = compile_query({"$nor": [{"$jsonSchema": MYSCHEMA}]}, CTX)
    assert [d["_id"] for d in INVENTORY if pred(d)] == ["paper", "planner"]
    assert describe_failure({"$jsonSchema": MYSCHEMA}, INVENTORY[2]) == (
        "instock: $jsonSchema bsonType \"bool\" failed for 1.0"
    )


# ---- types --------------------------------------------------------------------------

NUMBERS: list[Any] = [1, 2**40, Int64(1), 1.5, Decimal128("1.5"), True, "1", None]


def test_bson_types_int_long_double_decimal_are_distinct() -> None:
    assert passing({"bsonType": "int"}, NUMBERS) == [1]
    assert passing({"bsonType": "long"}, NUMBERS) == [2**40, Int64(1)]
    assert passing({"bsonType": "double"}, NUMBERS) == [1.5]
    assert passing({"bsonType": "decimal"}, NUMBERS) == [Decimal128("1.5")]
    assert passing({"bsonType": "number"}, NUMBERS) == [1, 2**40, Int64(1), 1.5, Decimal128("1.5")]
    assert passing({"bsonType": "bool"}, NUMBERS) == [True]
    assert passing({"bsonType": ["string", "null"]}, NUMBERS) == ["1", None]


def test_json_types() -> None:
    values: list[Any] = [1, 1.5, Int64(2), True, "s", None, [1], {"a": 1}]
    assert passing({"type": "number"}, values) == [1, 1.5, Int64(2)]
    assert passing({"type": "boolean"}, values) == [True]
    assert passing({"type": "string"}, values) == ["s"]
    assert passing({"type": "null"}, values) == [None]
    assert passing({"type": "array"}, values) == [[1]]
    assert passing({"type": "object"}, values) == [{"a": 1}]
    assert passing({"type": ["string", "array"]}, values) == ["s", [1]]


def test_schemas_apply_to_the_whole_value_without_array_traversal() -> None:
    assert passing({"bsonType": "string"}, [["a"], "a"]) == ["a"]


def test_type_errors() -> None:
    assert error({"properties": {"n": {"type": "integer"}}}) == (
        f"{P}.properties.n.type: MongoDB's $jsonSchema does not support type 'integer'; use bsonType 'int' or 'long'"
    )
    assert error({"properties": {"n": {"type": ["string", "integer"]}}}) == (
        f"{P}.properties.n.type[1]: MongoDB's $jsonSchema does not support type 'integer'; use bsonType 'int' or 'long'"
    )
    assert error({"properties": {"n": {"type": "strin"}}}) == (
        f"{P}.properties.n.type: unknown type 'strin'; did you mean 'string'?"
    )
    assert error({"properties": {"n": {"bsonType": "objectid"}}}) == (
        f"{P}.properties.n.bsonType: unknown bsonType 'objectid'; did you mean 'objectId'?"
    )
    assert error({"properties": {"n": {"bsonType": "int", "type": "number"}}}) == (
        f"{P}.properties.n.bsonType: cannot specify both 'type' and 'bsonType' in one schema"
    )
    assert error({"properties": {"n": {"bsonType": []}}}) == (
        f"{P}.properties.n.bsonType: 'bsonType' must be a string or a non-empty array of strings"
    )


# ---- numbers ------------------------------------------------------------------------


def test_minimum_maximum_ignore_non_numbers() -> None:
    values: list[Any] = [0, 1, 5, 10, 11, 10.5, Decimal128("9.99"), Int64(10), "100", None, True, [100]]
    assert passing({"minimum": 1, "maximum": 10}, values) == [
        1, 5, 10, Decimal128("9.99"), Int64(10), "100", None, True, [100],
    ]


def test_exclusive_bounds_draft4_boolean_form() -> None:
    values = [1, 2, 9, 10]
    assert passing({"minimum": 1, "exclusiveMinimum": True}, values) == [2, 9, 10]
    assert passing({"maximum": 10, "exclusiveMaximum": True}, values) == [1, 2, 9]
    assert passing({"maximum": 10, "exclusiveMaximum": False}, values) == [1, 2, 9, 10]
    schema = {"properties": {"v": {"maximum": 10, "exclusiveMaximum": True}}}
    assert explain_schema(schema, {"v": 10}) == "v: $jsonSchema maximum (exclusive) 10 failed for 10"


def test_nan_fails_numeric_bounds() -> None:
    assert passing({"minimum": 0}, [math.nan, Decimal128("NaN"), 1.0]) == [1.0]
    assert passing({"maximum": 0}, [math.nan, -1]) == [-1]


def test_multiple_of() -> None:
    values: list[Any] = [10, 3.14, 0.3, 7, Decimal128("0.07"), "x", math.inf]
    assert passing({"multipleOf": 0.01}, values) == [10, 3.14, 0.3, 7, Decimal128("0.07"), "x"]
    assert passing({"multipleOf": 5}, values) == [10, "x"]


def test_number_keyword_errors() -> None:
    assert error({"properties": {"n": {"exclusiveMaximum": True}}}) == (
        f"{P}.properties.n.exclusiveMaximum: 'exclusiveMaximum' requires 'maximum' in the same schema"
    )
    assert error({"properties": {"n": {"minimum": "1"}}}) == (
        f"{P}.properties.n.minimum: 'minimum' must be a number, got \"1\""
    )
    assert error({"properties": {"n": {"minimum": 1, "exclusiveMinimum": 1}}}) == (
        f"{P}.properties.n.exclusiveMinimum: 'exclusiveMinimum' must be a boolean, got 1"
    )
    assert error({"properties": {"n": {"multipleOf": 0}}}) == (
        f"{P}.properties.n.multipleOf: 'multipleOf' must be a positive finite number, got 0"
    )


# ---- enum ---------------------------------------------------------------------------


def test_enum_uses_mongodb_equality() -> None:
    values: list[Any] = [1, 1.0, Int64(1), True, "1", None, [1, 2], {"a": 1}, 2]
    assert passing({"enum": [1, "1", None, [1, 2], {"a": 1}]}, values) == [
        1, 1.0, Int64(1), "1", None, [1, 2], {"a": 1},
    ]
    assert error({"properties": {"n": {"enum": []}}}) == (
        f"{P}.properties.n.enum: 'enum' must be an array of at least one element"
    )


# ---- strings ------------------------------------------------------------------------


def test_string_keywords_ignore_other_types() -> None:
    values: list[Any] = ["", "ab", "abc", "日本語", "abcd", 12345, None]
    assert passing({"minLength": 2, "maxLength": 3}, values) == ["ab", "abc", "日本語", 12345, None]
    assert passing({"pattern": "^a.c"}, values) == ["abc", "abcd", 12345, None]
    assert passing({"pattern": "b"}, values) == ["ab", "abc", "abcd", 12345, None]


def test_string_keyword_errors() -> None:
    assert error({"properties": {"s": {"minLength": -1}}}) == (
        f"{P}.properties.s.minLength: 'minLength' must be a non-negative integer, got -1"
    )
    assert error({"properties": {"s": {"maxLength": 1.5}}}) == (
        f"{P}.properties.s.maxLength: 'maxLength' must be a non-negative integer, got 1.5"
    )
    assert error({"properties": {"s": {"pattern": "("}}}).startswith(
        f"{P}.properties.s.pattern: invalid regular expression '(': "
    )
    assert passing({"minLength": 2.0}, ["a", "ab"]) == ["ab"]


# ---- objects ------------------------------------------------------------------------


def test_required_and_nested_properties() -> None:
    schema = {"required": ["a"], "properties": {"a": {"required": ["b"], "properties": {"b": {"minimum": 5}}}}}
    docs = [
        {"_id": 1, "a": {"b": 5}},
        {"_id": 2, "a": {"b": 4}},
        {"_id": 3, "a": {}},
        {"_id": 4},
        {"_id": 5, "a": 7},  # required/properties ignore non-objects
        {"_id": 6, "a": {"b": None}},
    ]
    assert docs_passing(schema, docs) == [1, 5, 6]
    assert explain_schema(schema, {"a": {"b": 4}}) == "a.b: $jsonSchema minimum 5 failed for 4"
    assert explain_schema(schema, {}) == "a: $jsonSchema required failed: field is missing"


def test_additional_properties_false_with_properties_and_pattern_properties() -> None:
    schema = {
        "properties": {"_id": {}, "name": {"bsonType": "string"}},
        "patternProperties": {"^x_": {"bsonType": "int"}},
        "additionalProperties": False,
    }
    docs = [
        {"_id": 1, "name": "a"},
        {"_id": 2, "name": "a", "x_n": 3},
        {"_id": 3, "name": "a", "x_n": "3"},
        {"_id": 4, "name": "a", "other": 1},
    ]
    assert docs_passing(schema, docs) == [1, 2]
    assert explain_schema(schema, docs[2]) == 'x_n: $jsonSchema bsonType "int" failed for "3"'
    assert explain_schema(schema, docs[3]) == "other: $jsonSchema additionalProperties false failed for 1"


def test_additional_properties_schema() -> None:
    schema = {"properties": {"_id": {}}, "additionalProperties": {"bsonType": "string"}}
    docs = [{"_id": 1, "a": "x", "b": "y"}, {"_id": 2, "a": "x", "b": 2}, {"_id": 3}]
    assert docs_passing(schema, docs) == [1, 3]
    assert explain_schema(schema, docs[1]) == 'b: $jsonSchema bsonType "string" failed for 2'


def test_min_max_properties() -> None:
    values: list[Any] = [{}, {"a": 1}, {"a": 1, "b": 2}, {"a": 1, "b": 2, "c": 3}, "not an object"]
    assert passing({"minProperties": 1, "maxProperties": 2}, values) == [
        {"a": 1}, {"a": 1, "b": 2}, "not an object",
    ]


def test_dependencies_property_and_schema_forms() -> None:
    schema = {
        "dependencies": {
            "credit_card": ["billing_address"],
            "name": {"required": ["age"], "properties": {"age": {"minimum": 18}}},
        }
    }
    docs = [
        {"_id": 1, "credit_card": 1, "billing_address": "x"},
        {"_id": 2, "credit_card": 1},
        {"_id": 3, "billing_address": "x"},
        {"_id": 4, "name": "a", "age": 20},
        {"_id": 5, "name": "a", "age": 10},
        {"_id": 6, "name": "a"},
    ]
    assert docs_passing(schema, docs) == [1, 3, 4]
    assert explain_schema(schema, docs[1]) == (
        "billing_address: $jsonSchema dependencies failed: required by 'credit_card', field is missing"
    )
    assert explain_schema(schema, docs[4]) == "age: $jsonSchema minimum 18 failed for 10"


def test_object_keyword_errors() -> None:
    assert error({"required": []}) == f"{P}.required: 'required' must be a non-empty array"
    assert error({"required": ["a", "a"]}) == f"{P}.required: 'required' array must not contain duplicate values"
    assert error({"required": "a"}) == f"{P}.required: 'required' must be an array of strings"
    assert error({"properties": []}) == f"{P}.properties: 'properties' must be an object"
    assert error({"properties": {"a": 5}}) == f"{P}.properties.a: a JSON schema must be an object, got 5"
    assert error({"additionalProperties": 1}) == (
        f"{P}.additionalProperties: 'additionalProperties' must be a boolean or a schema"
    )
    assert error({"dependencies": {"a": "b"}}) == (
        f"{P}.dependencies.a: a dependency must be an array of field names or a schema"
    )


# ---- arrays -------------------------------------------------------------------------


def test_items_schema_applies_to_every_element() -> None:
    values: list[Any] = [[], [1, 2], [1, "x"], "not an array"]
    assert passing({"items": {"bsonType": "int"}}, values) == [[], [1, 2], "not an array"]
    schema = {"properties": {"v": {"items": {"bsonType": "int"}}}}
    assert explain_schema(schema, {"v": [1, "x"]}) == 'v.1: $jsonSchema bsonType "int" failed for "x"'


def test_items_array_and_additional_items() -> None:
    tuple_schema = {"items": [{"bsonType": "string"}, {"bsonType": "int"}]}
    values: list[Any] = [["a", 1], ["a"], ["a", 1, True], [1, "a"], []]
    assert passing(tuple_schema, values) == [["a", 1], ["a"], ["a", 1, True], []]
    assert passing({**tuple_schema, "additionalItems": False}, values) == [["a", 1], ["a"], []]
    assert passing({**tuple_schema, "additionalItems": {"bsonType": "bool"}}, [*values, ["a", 1, 2]]) == [
        ["a", 1], ["a"], ["a", 1, True], [],
    ]
    # additionalItems has no effect without an items array.
    assert passing({"additionalItems": False}, [[1, 2, 3]]) == [[1, 2, 3]]
    assert passing({"items": {}, "additionalItems": False}, [[1, 2, 3]]) == [[1, 2, 3]]


def test_min_max_items_and_unique_items() -> None:
    values: list[Any] = [[], [1], [1, 2], [1, 2, 3], "x"]
    assert passing({"minItems": 1, "maxItems": 2}, values) == [[1], [1, 2], "x"]
    uniq: list[Any] = [[1, 2], [1, 1.0], [1, True], [{"a": 1}, {"a": 1}], [1.5, Decimal128("1.5")], ["a", "b"]]
    assert passing({"uniqueItems": True}, uniq) == [[1, 2], [1, True], ["a", "b"]]
    assert passing({"uniqueItems": False}, uniq) == uniq


# ---- combinators --------------------------------------------------------------------


def test_all_any_one_of_and_not() -> None:
    values: list[Any] = [1, 5, 10, 15, "x"]
    assert passing({"allOf": [{"minimum": 5}, {"maximum": 10}]}, values) == [5, 10, "x"]
    assert passing({"anyOf": [{"bsonType": "string"}, {"minimum": 10}]}, values) == [10, 15, "x"]
    assert passing({"oneOf": [{"minimum": 5}, {"maximum": 10}]}, values) == [1, 15]
    assert passing({"not": {"bsonType": "int"}}, values) == ["x"]
    schema = {"properties": {"v": {"oneOf": [{"minimum": 5}, {"maximum": 10}]}}}
    assert explain_schema(schema, {"v": 7}) == "v: $jsonSchema oneOf failed: 2 schemas matched 7"
    schema = {"properties": {"v": {"anyOf": [{"bsonType": "string"}, {"minimum": 10}]}}}
    assert explain_schema(schema, {"v": 7}) == "v: $jsonSchema anyOf failed: no schema matched 7"
    schema = {"properties": {"v": {"not": {"bsonType": "int"}}}}
    assert explain_schema(schema, {"v": 7}) == "v: $jsonSchema not failed: 7 matched the schema"


def test_combinator_errors() -> None:
    assert error({"anyOf": []}) == f"{P}.anyOf: 'anyOf' must be a non-empty array of schemas"
    assert error({"allOf": [{"minimun": 1}]}) == (
        f"{P}.allOf[0].minimun: unknown $jsonSchema keyword 'minimun'; did you mean 'minimum'?"
    )
    assert error({"not": 5}) == f"{P}.not: a JSON schema must be an object, got 5"


# ---- keywords -----------------------------------------------------------------------


def test_annotations_are_ignored() -> None:
    assert passing({"description": "d", "title": "t"}, [1, "x"]) == [1, "x"]
    assert error({"title": 5}) == f"{P}.title: 'title' must be a string"


def test_unknown_and_unsupported_keywords() -> None:
    assert error({"properties": {"x": {"maximun": 3}}}) == (
        f"{P}.properties.x.maximun: unknown $jsonSchema keyword 'maximun'; did you mean 'maximum'?"
    )
    assert error({"bsontype": "int"}) == (
        f"{P}.bsontype: unknown $jsonSchema keyword 'bsontype'; did you mean 'bsonType'?"
    )
    for kw in ("$ref", "$schema", "default", "definitions", "format", "id"):
        assert error({kw: "x"}) == f"{P}.{kw}: $jsonSchema keyword '{kw}' is not supported by MongoDB"
    assert error(["x"]) == f"{P}: a JSON schema must be an object, got [\"x\"]"


def test_every_documented_keyword_is_registered() -> None:
    documented = {
        "bsonType", "enum", "type", "allOf", "anyOf", "oneOf", "not", "multipleOf", "maximum",
        "exclusiveMaximum", "minimum", "exclusiveMinimum", "maxLength", "minLength", "pattern",
        "maxProperties", "minProperties", "required", "additionalProperties", "properties",
        "patternProperties", "dependencies", "additionalItems", "items", "maxItems", "minItems",
        "uniqueItems", "title", "description",
    }
    assert set(KEYWORDS) == documented
