"""The query engine behind $match / $validate / $expr, against MongoDB's documented semantics.

Examples marked "docs:" are MongoDB's own examples (mongodb/docs,
reference/operator/query/*.txt) with their documented results. Numbers written in the
mongo shell are doubles, so they appear here as Python floats where it matters.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from typing import Any

import pytest
from bson import Binary, Decimal128, Int64, MaxKey, MinKey, Regex

from translator.errors import TranslateError
from translator.mql.expr import OPERATORS, Ctx, ExprError, operator
from translator.mql.query import QUERY_OPERATORS, compile_query, describe_failure

CTX = Ctx("pipeline[1].$match")


def ids(query: dict[str, Any], docs: list[dict[str, Any]]) -> list[Any]:
    pred = compile_query(query, CTX)
    return [d["_id"] for d in docs if pred(d)]


def error(query: Any) -> str:
    with pytest.raises(TranslateError) as e:
        compile_query(query, CTX)
    return str(e.value)


# ---- docs: $eq ----------------------------------------------------------------------

INVENTORY_EQ = [
    {"_id": 1, "item": {"name": "ab", "code": "123"}, "qty": 15, "tags": ["A", "B", "C"]},
    {"_id": 2, "item": {"name": "cd", "code": "123"}, "qty": 20, "tags": ["B"]},
    {"_id": 3, "item": {"name": "ij", "code": "456"}, "qty": 25, "tags": ["A", "B"]},
    {"_id": 4, "item": {"name": "xy", "code": "456"}, "qty": 30, "tags": ["B", "A"]},
    {"_id": 5, "item": {"name": "mn", "code": "000"}, "qty": 20, "tags": [["A", "B"], "C"]},
]


def test_docs_eq_value() -> None:
    assert ids({"qty": {"$eq": 20}}, INVENTORY_EQ) == [2, 5]
    assert ids({"qty": 20}, INVENTORY_EQ) == [2, 5]


def test_docs_eq_embedded_field() -> None:
    assert ids({"item.name": {"$eq": "ab"}}, INVENTORY_EQ) == [1]
    assert ids({"item.name": "ab"}, INVENTORY_EQ) == [1]


def test_docs_eq_array_element() -> None:
    assert ids({"tags": {"$eq": "B"}}, INVENTORY_EQ) == [1, 2, 3, 4]
    assert ids({"tags": "B"}, INVENTORY_EQ) == [1, 2, 3, 4]


def test_docs_eq_array_value_exact_or_contained() -> None:
    assert ids({"tags": {"$eq": ["A", "B"]}}, INVENTORY_EQ) == [3, 5]
    assert ids({"tags": ["A", "B"]}, INVENTORY_EQ) == [3, 5]


def test_docs_eq_regex_explicit_vs_implicit() -> None:
    companies = [{"_id": 1, "company": "MongoDB"}, {"_id": 2, "company": "MongoDB2"}]
    assert ids({"company": "MongoDB"}, companies) == [1]
    assert ids({"company": {"$eq": "MongoDB"}}, companies) == [1]
    assert ids({"company": {"$eq": Regex("MongoDB")}}, companies) == []
    assert ids({"company": re.compile("MongoDB")}, companies) == [1, 2]
    assert ids({"company": {"$regex": Regex("MongoDB")}}, companies) == [1, 2]


def test_eq_regex_matches_a_stored_identical_regex() -> None:
    docs = [{"_id": 1, "r": Regex("^a", "i")}, {"_id": 2, "r": Regex("^a")}, {"_id": 3, "r": "abc"}]
    assert ids({"r": {"$eq": Regex("^a", "i")}}, docs) == [1]


def test_document_equality_is_exact_and_field_order_sensitive() -> None:
    docs = [
        {"_id": 1, "size": {"h": 14, "w": 21, "uom": "cm"}},
        {"_id": 2, "size": {"w": 21, "h": 14, "uom": "cm"}},
        {"_id": 3, "size": [{"h": 14, "w": 21, "uom": "cm"}]},
        {"_id": 4, "size": {"h": 14, "w": 21}},
    ]
    assert ids({"size": {"h": 14, "w": 21, "uom": "cm"}}, docs) == [1, 3]


def test_numbers_of_all_types_are_equal_but_bool_is_not_a_number() -> None:
    docs = [
        {"_id": 1, "n": 1},
        {"_id": 2, "n": 1.0},
        {"_id": 3, "n": Int64(1)},
        {"_id": 4, "n": Decimal128("1.0")},
        {"_id": 5, "n": True},
        {"_id": 6, "n": "1"},
    ]
    assert ids({"n": 1}, docs) == [1, 2, 3, 4]
    assert ids({"n": Decimal128("1")}, docs) == [1, 2, 3, 4]
    assert ids({"n": True}, docs) == [5]


# ---- null and missing ---------------------------------------------------------------

NULLS = [
    {"_id": 1, "a": None},
    {"_id": 2},
    {"_id": 3, "a": 4},
    {"_id": 4, "a": {"b": None}},
    {"_id": 5, "a": {"b": 1}},
    {"_id": 6, "a": [{"c": 1}]},
    {"_id": 7, "a": [1, 2]},
    {"_id": 8, "a": []},
    {"_id": 9, "a": [None, 1]},
]


def test_null_matches_null_and_missing() -> None:
    assert ids({"a": None}, NULLS) == [1, 2, 9]
    assert ids({"a": {"$ne": None}}, NULLS) == [3, 4, 5, 6, 7, 8]


def test_dotted_null_matches_when_the_path_stops_early() -> None:
    # a scalar or a missing parent yields "missing"; scalars inside arrays yield nothing.
    assert ids({"a.b": None}, NULLS) == [1, 2, 3, 4, 6]


def test_gte_lte_null_match_null_and_missing_only() -> None:
    assert ids({"a": {"$gte": None}}, NULLS) == [1, 2, 9]
    assert ids({"a": {"$lte": None}}, NULLS) == [1, 2, 9]
    assert ids({"a": {"$gt": None}}, NULLS) == []
    assert ids({"a": {"$lt": None}}, NULLS) == []


def test_in_null_matches_missing() -> None:
    assert ids({"a": {"$in": [None, 4]}}, NULLS) == [1, 2, 3, 9]
    assert ids({"a": {"$nin": [None, 4]}}, NULLS) == [4, 5, 6, 7, 8]


# ---- docs: $exists ------------------------------------------------------------------

RECORDS = [
    {"_id": 1, "a": 5, "b": 5, "c": None},
    {"_id": 2, "a": 3, "b": None, "c": 8},
    {"_id": 3, "a": None, "b": 3, "c": 9},
    {"_id": 4, "a": 1, "b": 2, "c": 3},
    {"_id": 5, "a": 2, "c": 5},
    {"_id": 6, "a": 3, "b": 2},
    {"_id": 7, "a": 4},
    {"_id": 8, "b": 2, "c": 4},
    {"_id": 9, "b": 2},
    {"_id": 10, "c": 6},
]


def test_docs_exists() -> None:
    assert ids({"a": {"$exists": True}}, RECORDS) == [1, 2, 3, 4, 5, 6, 7]
    assert ids({"b": {"$exists": False}}, RECORDS) == [5, 7, 10]
    assert ids({"c": {"$exists": False}}, RECORDS) == [6, 7, 9]


def test_docs_exists_and_nin() -> None:
    docs = [{"_id": 1, "qty": 5}, {"_id": 2, "qty": 15}, {"_id": 3, "qty": 7}, {"_id": 4}]
    assert ids({"qty": {"$exists": True, "$nin": [5, 15]}}, docs) == [3]


def test_exists_through_arrays_of_documents() -> None:
    docs = [
        {"_id": 1, "a": [{"b": 1}, {}]},
        {"_id": 2, "a": [{}, {}]},
        {"_id": 3, "a": [1, 2]},
        {"_id": 4, "a": {"b": None}},
    ]
    assert ids({"a.b": {"$exists": True}}, docs) == [1, 4]
    assert ids({"a.b": {"$exists": False}}, docs) == [2, 3]
    assert ids({"a.b": {"$exists": 0}}, docs) == [2, 3]


# ---- comparisons and type bracketing ------------------------------------------------

MIXED = [
    {"_id": 1, "a": 6},
    {"_id": 2, "a": 5},
    {"_id": 3, "a": 5.5},
    {"_id": 4, "a": "z"},
    {"_id": 5, "a": True},
    {"_id": 6, "a": [1, 7]},
    {"_id": 7, "a": [1, 2]},
    {"_id": 8, "a": Int64(10)},
    {"_id": 9, "a": Decimal128("5.25")},
    {"_id": 10, "a": None},
    {"_id": 11},
    {"_id": 12, "a": dt.datetime(2024, 1, 1, tzinfo=dt.UTC)},
]


def test_comparisons_only_match_the_same_type_bracket() -> None:
    assert ids({"a": {"$gt": 5}}, MIXED) == [1, 3, 6, 8, 9]
    assert ids({"a": {"$gte": 5}}, MIXED) == [1, 2, 3, 6, 8, 9]
    assert ids({"a": {"$lt": 5}}, MIXED) == [6, 7]
    assert ids({"a": {"$lte": 5.25}}, MIXED) == [2, 6, 7, 9]
    assert ids({"a": {"$gt": "a"}}, MIXED) == [4]
    assert ids({"a": {"$lt": "a"}}, MIXED) == []
    assert ids({"a": {"$gt": dt.datetime(2023, 1, 1, tzinfo=dt.UTC)}}, MIXED) == [12]


def test_range_on_an_array_may_be_satisfied_by_different_elements() -> None:
    docs = [{"_id": 1, "a": [1, 7]}, {"_id": 2, "a": [3]}, {"_id": 3, "a": 9}]
    assert ids({"a": {"$gt": 2, "$lt": 5}}, docs) == [1, 2]
    assert ids({"a": {"$elemMatch": {"$gt": 2, "$lt": 5}}}, docs) == [2]


def test_minkey_maxkey_compare_across_types() -> None:
    docs = [{"_id": 1, "a": 1}, {"_id": 2, "a": "x"}, {"_id": 3, "a": MaxKey()}, {"_id": 4, "a": MinKey()}]
    assert ids({"a": {"$lt": MaxKey()}}, docs) == [1, 2, 4]
    assert ids({"a": {"$gt": MinKey()}}, docs) == [1, 2, 3]


def test_nan_equals_only_nan_and_is_never_greater_or_less() -> None:
    nan = math.nan
    docs = [{"_id": 1, "a": nan}, {"_id": 2, "a": 1.0}, {"_id": 3, "a": Decimal128("NaN")}]
    assert ids({"a": {"$lt": 5}}, docs) == [2]
    assert ids({"a": {"$gt": -math.inf}}, docs) == [2]
    assert ids({"a": nan}, docs) == [1, 3]
    assert ids({"a": {"$gte": nan}}, docs) == [1, 3]
    assert ids({"a": {"$gt": nan}}, docs) == []
    assert ids({"a": {"$in": [nan]}}, docs) == [1, 3]


def test_ne_negates_the_whole_array() -> None:
    docs = [{"_id": 1, "a": 5}, {"_id": 2, "a": [5, 6]}, {"_id": 3}, {"_id": 4, "a": 6}, {"_id": 5, "a": "5"}]
    assert ids({"a": {"$ne": 5}}, docs) == [3, 4, 5]


def test_hot_path_agrees_with_the_general_path() -> None:
    """Single-field scalar queries are specialised; a $comment clause disables that."""
    values: list[Any] = [
        5, 5.0, 4, 6, Int64(5), Decimal128("5"), Decimal128("4.5"), "5", "a", "b",
        True, False, None, [5], [4, 6], [], {"x": 5}, math.nan, 2**40,
    ]
    docs = [{"_id": i, "a": v} for i, v in enumerate(values)] + [{"_id": 99}]
    for op in ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte"):
        for rhs in (5, 5.0, "a", Int64(5), True):
            hot = ids({"a": {op: rhs}}, docs)
            general = ids({"a": {op: rhs}, "$comment": "general path"}, docs)
            assert hot == general, (op, rhs)
    assert ids({"a": {"$gt": 5}}, docs) == [3, 14, 18]
    assert ids({"a": "a"}, docs) == [8]
    assert ids({"a": {"$ne": 5}}, docs) == [2, 3, 6, 7, 8, 9, 10, 11, 12, 14, 15, 16, 17, 18, 99]


# ---- docs: $in / $nin ---------------------------------------------------------------


def test_docs_in_values_and_arrays() -> None:
    docs = [
        {"_id": 1, "qty": 5, "tags": ["school", "clothing"]},
        {"_id": 2, "qty": 15, "tags": ["appliances"]},
        {"_id": 3, "qty": 20, "tags": ["electronics"]},
    ]
    assert ids({"qty": {"$in": [5, 15]}}, docs) == [1, 2]
    assert ids({"tags": {"$in": ["appliances", "school"]}}, docs) == [1, 2]


def test_docs_in_with_regular_expressions() -> None:
    docs = [
        {"_id": 1, "tags": ["bed", "lamp"]},
        {"_id": 2, "tags": ["store", "x"]},
        {"_id": 3, "tags": ["abed"]},
        {"_id": 4, "tags": "stool"},
    ]
    assert ids({"tags": {"$in": [re.compile("^be"), Regex("^st")]}}, docs) == [1, 2, 4]
    assert ids({"tags": {"$nin": [re.compile("^be"), Regex("^st")]}}, docs) == [3]


def test_in_compares_numbers_across_types() -> None:
    docs = [{"_id": 1, "a": 1.5}, {"_id": 2, "a": Decimal128("1.5")}, {"_id": 3, "a": 2}, {"_id": 4, "a": True}]
    assert ids({"a": {"$in": [Decimal128("1.5"), 2.0]}}, docs) == [1, 2, 3]
    assert ids({"a": {"$in": [1.5, Int64(2)]}}, docs) == [1, 2, 3]
    assert ids({"a": {"$in": [1]}}, docs) == []


# ---- docs: $type --------------------------------------------------------------------

ADDRESS_BOOK = [
    {"_id": 1, "address": "2030 Martian Way", "zipCode": "90698345"},
    {"_id": 2, "address": "156 Lunar Place", "zipCode": 43339374.0},
    {"_id": 3, "address": "2324 Pluto Place", "zipCode": Int64(3921412)},
    {"_id": 4, "address": "55 Saturn Ring", "zipCode": 88602117},
    {"_id": 5, "address": "104 Venus Drive", "zipCode": ["834847278", "1893289032"]},
]


def test_docs_type_by_alias_code_and_number() -> None:
    assert ids({"zipCode": {"$type": 2}}, ADDRESS_BOOK) == [1, 5]
    assert ids({"zipCode": {"$type": "string"}}, ADDRESS_BOOK) == [1, 5]
    assert ids({"zipCode": {"$type": 1}}, ADDRESS_BOOK) == [2]
    assert ids({"zipCode": {"$type": "double"}}, ADDRESS_BOOK) == [2]
    assert ids({"zipCode": {"$type": "number"}}, ADDRESS_BOOK) == [2, 3, 4]
    assert ids({"zipCode": {"$type": "long"}}, ADDRESS_BOOK) == [3]
    assert ids({"zipCode": {"$type": 16}}, ADDRESS_BOOK) == [4]
    assert ids({"zipCode": {"$type": "array"}}, ADDRESS_BOOK) == [5]


def test_docs_type_with_an_array_of_types() -> None:
    grades = [
        {"_id": 1, "classAverage": 87.333333333333333},
        {"_id": 2, "classAverage": "83.52"},
        {"_id": 3, "classAverage": "94.06"},
        {"_id": 4, "classAverage": 93},
    ]
    assert ids({"classAverage": {"$type": [2, 1]}}, grades) == [1, 2, 3]
    assert ids({"classAverage": {"$type": ["string", "double"]}}, grades) == [1, 2, 3]


def test_type_minkey_maxkey_null_and_missing() -> None:
    docs = [{"_id": 1, "x": MinKey()}, {"_id": 2, "x": MaxKey()}, {"_id": 3, "x": None}, {"_id": 4}]
    assert ids({"x": {"$type": -1}}, docs) == [1]
    assert ids({"x": {"$type": 127}}, docs) == [2]
    assert ids({"x": {"$type": "null"}}, docs) == [3]


def test_type_array_matches_the_field_itself_and_nested_arrays() -> None:
    docs = [{"_id": 1, "a": []}, {"_id": 2, "a": [[1]]}, {"_id": 3, "a": 1}, {"_id": 4, "a": {"b": []}}]
    assert ids({"a": {"$type": "array"}}, docs) == [1, 2]
    assert ids({"a.b": {"$type": "array"}}, docs) == [4]


# ---- docs: $regex -------------------------------------------------------------------

PRODUCTS = [
    {"_id": 100, "sku": "abc123", "description": "Single line description."},
    {"_id": 101, "sku": "abc789", "description": "First line\nSecond line"},
    {"_id": 102, "sku": "xyz456", "description": "Many spaces before     line"},
    {"_id": 103, "sku": "xyz789", "description": "Multiple\nline description"},
]


def test_docs_regex_like_match() -> None:
    assert ids({"sku": {"$regex": Regex("789$")}}, PRODUCTS) == [101, 103]


def test_docs_regex_case_insensitive() -> None:
    assert ids({"sku": {"$regex": Regex("^ABC", "i")}}, PRODUCTS) == [100, 101]
    assert ids({"sku": {"$regex": re.compile("^ABC", re.IGNORECASE)}}, PRODUCTS) == [100, 101]
    assert ids({"sku": {"$regex": "^ABC", "$options": "i"}}, PRODUCTS) == [100, 101]


def test_docs_regex_multiline() -> None:
    assert ids({"description": {"$regex": Regex("^S"), "$options": "m"}}, PRODUCTS) == [100, 101]
    assert ids({"description": {"$regex": Regex("^S")}}, PRODUCTS) == [100]
    assert ids({"description": {"$regex": Regex("S")}}, PRODUCTS) == [100, 101]


def test_docs_regex_dot_all() -> None:
    assert ids({"description": {"$regex": Regex("m.*line"), "$options": "si"}}, PRODUCTS) == [102, 103]
    assert ids({"description": {"$regex": Regex("m.*line"), "$options": "i"}}, PRODUCTS) == [102]


def test_docs_regex_extended() -> None:
    pattern = "abc #category code\n123 #item number"
    assert ids({"sku": {"$regex": pattern, "$options": "x"}}, PRODUCTS) == [100]


def test_docs_regex_with_nin_on_the_same_field() -> None:
    docs = [{"_id": 1, "name": "acmeblahcorp"}, {"_id": 2, "name": "ACME Corp"}, {"_id": 3, "name": "x"}]
    assert ids({"name": {"$regex": Regex("acme.*corp", "i"), "$nin": ["acmeblahcorp"]}}, docs) == [2]
    assert ids({"name": {"$regex": "acme.*corp", "$options": "i", "$nin": ["acmeblahcorp"]}}, docs) == [2]


def test_regex_ignores_non_strings_and_matches_array_elements() -> None:
    docs = [{"_id": 1, "a": 123}, {"_id": 2, "a": ["x", "abc"]}, {"_id": 3, "a": None}]
    assert ids({"a": {"$regex": "^a"}}, docs) == [2]
    assert ids({"a": {"$regex": "1"}}, docs) == []


# ---- docs: $not / $nor / $or / $and -------------------------------------------------

PRICES = [
    {"_id": 1, "price": 1.99, "sale": True, "qty": 10},
    {"_id": 2, "price": 2.5, "sale": False, "qty": 30},
    {"_id": 3, "price": 0.99, "qty": 5},
    {"_id": 4, "price": "free", "sale": True},
    {"_id": 5, "item": "p-nut"},
]


def test_docs_not_selects_non_matching_missing_and_other_types() -> None:
    assert ids({"price": {"$not": {"$gt": 1.99}}}, PRICES) == [1, 3, 4, 5]
    assert ids({"price": {"$lte": 1.99}}, PRICES) == [1, 3]


def test_docs_not_with_regex() -> None:
    docs = [{"_id": 1, "item": "paper"}, {"_id": 2, "item": "journal"}, {"_id": 3}]
    assert ids({"item": {"$not": re.compile("^p.*")}}, docs) == [2, 3]
    assert ids({"item": {"$not": {"$regex": "^p.*"}}}, docs) == [2, 3]
    assert ids({"item": {"$not": {"$regex": Regex("^p.*")}}}, docs) == [2, 3]


def test_docs_nor() -> None:
    assert ids({"$nor": [{"price": 1.99}, {"sale": True}]}, PRICES) == [2, 3, 5]
    assert ids({"$nor": [{"price": 1.99}, {"price": {"$exists": False}}, {"sale": True}, {"sale": {"$exists": False}}]}, PRICES) == [2]


def test_docs_or_and_and() -> None:
    assert ids({"$or": [{"qty": {"$lt": 20}}, {"price": 2.5}]}, PRICES) == [1, 2, 3]
    assert ids({"$and": [{"price": {"$ne": 1.99}}, {"price": {"$exists": True}}]}, PRICES) == [2, 3, 4]
    assert ids({"$and": [{"$or": [{"qty": {"$lt": 10}}, {"qty": {"$gt": 25}}]}, {"$or": [{"sale": True}, {"price": {"$lt": 1}}]}]}, PRICES) == [3]


def test_empty_query_matches_everything_and_comment_is_ignored() -> None:
    assert ids({}, PRICES) == [1, 2, 3, 4, 5]
    assert ids({"$comment": "all of them"}, PRICES) == [1, 2, 3, 4, 5]


# ---- docs: $elemMatch ---------------------------------------------------------------


def test_docs_elem_match_value_form() -> None:
    scores = [{"_id": 1, "results": [82, 85, 88]}, {"_id": 2, "results": [75, 88, 89]}]
    assert ids({"results": {"$elemMatch": {"$gte": 80, "$lt": 85}}}, scores) == [1]


SURVEY = [
    {"_id": 1, "results": [{"product": "abc", "score": 10}, {"product": "xyz", "score": 5}]},
    {"_id": 2, "results": [{"product": "abc", "score": 8}, {"product": "xyz", "score": 7}]},
    {"_id": 3, "results": [{"product": "abc", "score": 7}, {"product": "xyz", "score": 8}]},
    {"_id": 4, "results": [{"product": "abc", "score": 7}, {"product": "def", "score": 8}]},
]


def test_docs_elem_match_documents() -> None:
    assert ids({"results": {"$elemMatch": {"product": "xyz", "score": {"$gte": 8}}}}, SURVEY) == [3]


def test_docs_elem_match_single_condition_vs_dotted_ne() -> None:
    assert ids({"results": {"$elemMatch": {"product": {"$ne": "xyz"}}}}, SURVEY) == [1, 2, 3, 4]
    assert ids({"results.product": {"$ne": "xyz"}}, SURVEY) == [4]


def test_docs_elem_match_needs_one_element_matching_all_conditions() -> None:
    docs = [
        {"_id": 1, "array": [{"value1": 1, "value2": 0}, {"value1": 2, "value2": 2}]},
        {"_id": 2, "array": [{"value1": 1, "value2": 0}, {"value1": 1, "value2": 2}]},
    ]
    assert ids({"array": {"$elemMatch": {"value1": 1, "value2": {"$gt": 1}}}}, docs) == [2]
    # Without $elemMatch the conditions may be met by different elements.
    assert ids({"array.value1": 1, "array.value2": {"$gt": 1}}, docs) == [1, 2]


def test_elem_match_with_logical_operators_and_on_non_arrays() -> None:
    docs = [{"_id": 1, "a": [{"x": 1}, {"x": 5}]}, {"_id": 2, "a": {"x": 5}}, {"_id": 3, "a": [3, 5]}]
    assert ids({"a": {"$elemMatch": {"$or": [{"x": 5}, {"x": 9}]}}}, docs) == [1]
    assert ids({"a": {"$elemMatch": {"$ne": 3}}}, docs) == [1, 3]
    assert ids({"a": {"$elemMatch": {"$not": {"$gt": 4}}}}, docs) == [1, 3]


# ---- docs: $all ---------------------------------------------------------------------

INVENTORY_ALL = [
    {
        "_id": "xyz",
        "tags": ["school", "book", "bag", "headphone", "appliance"],
        "qty": [
            {"size": "S", "num": 10, "color": "blue"},
            {"size": "M", "num": 45, "color": "blue"},
            {"size": "L", "num": 100, "color": "green"},
        ],
    },
    {
        "_id": "abc",
        "tags": ["appliance", "school", "book"],
        "qty": [
            {"size": "6", "num": 100, "color": "green"},
            {"size": "6", "num": 50, "color": "blue"},
            {"size": "8", "num": 100, "color": "brown"},
        ],
    },
    {
        "_id": "efg",
        "tags": ["school", "book"],
        "qty": [
            {"size": "S", "num": 10, "color": "blue"},
            {"size": "M", "num": 100, "color": "blue"},
            {"size": "L", "num": 100, "color": "green"},
        ],
    },
    {"_id": "ijk", "tags": ["electronics", "school"], "qty": [{"size": "M", "num": 100, "color": "green"}]},
]


def test_docs_all_values() -> None:
    assert ids({"tags": {"$all": ["appliance", "school", "book"]}}, INVENTORY_ALL) == ["xyz", "abc"]


def test_docs_all_with_elem_match() -> None:
    query = {
        "qty": {
            "$all": [
                {"$elemMatch": {"size": "M", "num": {"$gt": 50}}},
                {"$elemMatch": {"num": 100, "color": "green"}},
            ]
        }
    }
    assert ids(query, INVENTORY_ALL) == ["efg", "ijk"]


def test_docs_all_on_a_non_array_field_and_empty_all() -> None:
    docs = [{"_id": 1, "qty": 50}, {"_id": 2, "qty": [50, 1]}, {"_id": 3, "qty": 5}]
    assert ids({"qty": {"$all": [50]}}, docs) == [1, 2]
    assert ids({"qty": 50}, docs) == [1, 2]
    assert ids({"qty": {"$all": []}}, docs) == []


def test_all_with_a_nested_array_and_regexes() -> None:
    docs = [{"_id": 1, "a": [[1, 2], 3]}, {"_id": 2, "a": [1, 2]}, {"_id": 3, "a": ["bed", "stool"]}]
    assert ids({"a": {"$all": [[1, 2]]}}, docs) == [1, 2]
    assert ids({"a": {"$all": [re.compile("^b"), re.compile("^s")]}}, docs) == [3]


# ---- docs: $size / $mod -------------------------------------------------------------


def test_docs_size_applies_to_the_array_itself() -> None:
    docs = [
        {"_id": 1, "field": ["red", "green"]},
        {"_id": 2, "field": ["apple", "lime"]},
        {"_id": 3, "field": "fruit"},
        {"_id": 4, "field": ["orange", "lemon", "grapefruit"]},
        {"_id": 5, "field": [["a", "b"]]},
    ]
    assert ids({"field": {"$size": 2}}, docs) == [1, 2]
    assert ids({"field": {"$size": 1}}, docs) == [5]
    assert ids({"field": {"$size": 2.0}}, docs) == [1, 2]


def test_size_through_arrays_of_documents() -> None:
    docs = [{"_id": 1, "a": [{"b": [1, 2]}, {"b": [1]}]}, {"_id": 2, "a": [{"b": [1, 2, 3]}]}]
    assert ids({"a.b": {"$size": 1}}, docs) == [1]


INVENTORY_MOD = [
    {"_id": 1, "item": "abc123", "qty": 0},
    {"_id": 2, "item": "xyz123", "qty": 5},
    {"_id": 3, "item": "ijk123", "qty": 12},
]


def test_docs_mod() -> None:
    assert ids({"qty": {"$mod": [4, 0]}}, INVENTORY_MOD) == [1, 3]


def test_docs_mod_truncates_float_arguments() -> None:
    assert ids({"qty": {"$mod": [4.0, 0]}}, INVENTORY_MOD) == [1, 3]
    assert ids({"qty": {"$mod": [4.5, 0]}}, INVENTORY_MOD) == [1, 3]
    assert ids({"qty": {"$mod": [4.99, 0]}}, INVENTORY_MOD) == [1, 3]
    assert ids({"qty": {"$mod": [-4, -0]}}, INVENTORY_MOD) == [1, 3]


def test_mod_negative_dividend_nan_and_non_numbers() -> None:
    docs = [
        {"_id": 1, "v": -5},
        {"_id": 2, "v": 5},
        {"_id": 3, "v": math.nan},
        {"_id": 4, "v": math.inf},
        {"_id": 5, "v": "5"},
        {"_id": 6, "v": 5.9},
    ]
    assert ids({"v": {"$mod": [4, -1]}}, docs) == [1]
    assert ids({"v": {"$mod": [4, 1]}}, docs) == [2, 6]


def test_docs_mod_errors() -> None:
    assert error({"qty": {"$mod": [4]}}) == "pipeline[1].$match.qty.$mod: malformed mod, not enough elements"
    assert error({"qty": {"$mod": []}}) == "pipeline[1].$match.qty.$mod: malformed mod, not enough elements"
    assert error({"qty": {"$mod": [4, 1, 2, 3]}}) == "pipeline[1].$match.qty.$mod: malformed mod, too many elements"
    assert error({"qty": {"$mod": [0, 1]}}) == "pipeline[1].$match.qty.$mod: divisor cannot be 0"
    assert error({"qty": {"$mod": [math.nan, 1]}}) == (
        "pipeline[1].$match.qty.$mod: malformed mod, divisor cannot be NaN or infinite"
    )


# ---- bitwise ------------------------------------------------------------------------


def test_bitwise_operators() -> None:
    docs = [
        {"_id": 1, "a": 54},  # 0b110110
        {"_id": 2, "a": 20},  # 0b010100
        {"_id": 3, "a": 20.0},
        {"_id": 4, "a": Binary(b"\x14")},  # 20
        {"_id": 5, "a": -2},
        {"_id": 6, "a": "54"},
    ]
    assert ids({"a": {"$bitsAllSet": [1, 5]}}, docs) == [1, 5]
    assert ids({"a": {"$bitsAllSet": 20}}, docs) == [1, 2, 3, 4, 5]
    assert ids({"a": {"$bitsAnySet": [1]}}, docs) == [1, 5]
    assert ids({"a": {"$bitsAllClear": [1, 5]}}, docs) == [2, 3, 4]
    assert ids({"a": {"$bitsAnyClear": [0, 1]}}, docs) == [1, 2, 3, 4, 5]
    # negative numbers are sign-extended: every high bit is set.
    assert ids({"a": {"$bitsAllSet": [100]}}, docs) == [5]


# ---- dotted paths and arrays --------------------------------------------------------


def test_numeric_path_components_index_arrays() -> None:
    docs = [
        {"_id": 1, "a": [{"b": 1}, {"b": 2}]},
        {"_id": 2, "a": [{"b": 2}, {"b": 1}]},
        {"_id": 3, "a": {"0": {"b": 1}}},
        {"_id": 4, "a": [[{"b": 1}]]},
        {"_id": 5, "a": [{"0": {"b": 1}}]},
    ]
    assert ids({"a.0.b": 1}, docs) == [1, 3, 5]
    assert ids({"a.1.b": 1}, docs) == [2]
    assert ids({"a.b": 1}, docs) == [1, 2]
    assert ids({"a.0.0.b": 1}, docs) == [4, 5]


def test_index_into_an_array_of_scalars() -> None:
    docs = [{"_id": 1, "tags": ["a", "b"]}, {"_id": 2, "tags": ["b", "a"]}, {"_id": 3, "tags": "a"}]
    assert ids({"tags.0": "a"}, docs) == [1]
    assert ids({"tags.5": {"$exists": True}}, docs) == []


def test_paths_traverse_arrays_of_documents_at_any_depth() -> None:
    docs = [
        {"_id": 1, "a": [{"b": [{"c": 1}, {"c": 2}]}, {"b": {"c": 3}}]},
        {"_id": 2, "a": {"b": [{"c": 4}]}},
        {"_id": 3, "a": [[{"b": {"c": 3}}]]},
    ]
    assert ids({"a.b.c": 2}, docs) == [1]
    assert ids({"a.b.c": 3}, docs) == [1]
    assert ids({"a.b.c": {"$gt": 3}}, docs) == [2]
    assert ids({"a.b.c": {"$in": [4, 1]}}, docs) == [1, 2]


# ---- $expr --------------------------------------------------------------------------


def test_docs_expr_compares_two_fields() -> None:
    budget = [
        {"_id": 1, "category": "food", "budget": 400, "spent": 450},
        {"_id": 2, "category": "drinks", "budget": 100, "spent": 150},
        {"_id": 3, "category": "clothes", "budget": 100, "spent": 50},
        {"_id": 4, "category": "misc", "budget": 500, "spent": 300},
        {"_id": 5, "category": "travel", "budget": 200, "spent": 650},
    ]
    assert ids({"$expr": {"$gt": ["$spent", "$budget"]}}, budget) == [1, 2, 5]
    assert ids({"$expr": {"$eq": ["$budget", 100]}, "spent": {"$lt": 100}}, budget) == [3]


def test_expr_uses_aggregation_truthiness() -> None:
    docs = [
        {"_id": 1, "f": 0},
        {"_id": 2, "f": 2},
        {"_id": 3, "f": None},
        {"_id": 4},
        {"_id": 5, "f": ""},
        {"_id": 6, "f": False},
        {"_id": 7, "f": []},
    ]
    assert ids({"$expr": "$f"}, docs) == [2, 5, 7]
    assert ids({"$expr": {"$literal": 0}}, docs) == []


def test_expr_runtime_errors_propagate() -> None:
    name = "$testQueryBoom"
    if name not in OPERATORS:

        @operator(name)
        def _boom(args: Any, ctx: Ctx) -> Any:
            def boom(doc: Any, v: Any) -> Any:
                raise ExprError(name, "boom")

            return boom

    pred = compile_query({"a": 1, "$expr": {name: 1}}, CTX)
    assert pred({"a": 2}) is False  # an earlier clause failed, $expr never evaluated
    with pytest.raises(ExprError) as e:
        pred({"a": 1})
    assert str(e.value) == "$testQueryBoom: boom"


def test_expr_is_only_allowed_at_the_top_level() -> None:
    assert error({"a": {"$elemMatch": {"$expr": {"$gt": ["$x", 1]}}}}) == (
        "pipeline[1].$match.a.$elemMatch.$expr: $expr can only be applied to the top-level document"
    )


def test_expr_compile_errors_carry_the_path() -> None:
    assert error({"$expr": "$a..b"}) == "pipeline[1].$match.$expr: invalid field path '$a..b'"


# ---- compile errors -----------------------------------------------------------------


def test_unknown_operator_did_you_mean() -> None:
    assert error({"x": {"$gtt": 5}}) == (
        "pipeline[1].$match.x.$gtt: unknown query operator '$gtt'; did you mean '$gt'?"
    )
    assert error({"x": {"$elemmatch": {"a": 1}}}) == (
        "pipeline[1].$match.x.$elemmatch: unknown query operator '$elemmatch'; did you mean '$elemMatch'?"
    )
    assert error({"a.b": {"$gt": 1, "$inn": [1]}}) == (
        "pipeline[1].$match.a.b.$inn: unknown query operator '$inn'; did you mean '$in'?"
    )


def test_unknown_top_level_operator() -> None:
    assert error({"$andd": [{"a": 1}]}) == (
        "pipeline[1].$match.$andd: unknown top-level query operator '$andd'; did you mean '$and'?"
    )
    assert error({"$gt": 5}) == (
        "pipeline[1].$match.$gt: unknown top-level query operator '$gt'; "
        "'$gt' applies to a field, e.g. {field: {$gt: ...}}"
    )
    assert error({"a": {"$or": [{"a": 1}]}}) == (
        "pipeline[1].$match.a.$or: unknown query operator '$or'; '$or' is only valid at the top level of a query"
    )


def test_asp_forbidden_operators() -> None:
    assert error({"$where": "this.a > 1"}) == (
        "pipeline[1].$match.$where: query operator '$where': JavaScript is not supported by stream processors"
    )
    assert error({"$text": {"$search": "x"}}) == (
        "pipeline[1].$match.$text: query operator '$text' is not supported in stream processing"
    )
    assert error({"loc": {"$near": [0, 0]}}) == (
        "pipeline[1].$match.loc.$near: query operator '$near' is not supported in stream processing"
    )
    assert error({"loc": {"$nearSphere": [0, 0]}}) == (
        "pipeline[1].$match.loc.$nearSphere: query operator '$nearSphere' is not supported in stream processing"
    )
    assert error({"loc": {"$geoWithin": {}}}) == (
        "pipeline[1].$match.loc.$geoWithin: query operator '$geoWithin' is not supported by mqlflow"
    )


def test_argument_errors() -> None:
    p = "pipeline[1].$match"
    assert error({"a": {"$in": 5}}) == f"{p}.a.$in: $in needs an array"
    assert error({"a": {"$nin": "x"}}) == f"{p}.a.$nin: $nin needs an array"
    assert error({"a": {"$in": [{"$gt": 1}]}}) == f"{p}.a.$in[0]: cannot nest $ under $in"
    assert error({"a": {"$all": 5}}) == f"{p}.a.$all: $all needs an array"
    assert error({"a": {"$size": -1}}) == f"{p}.a.$size: $size may not be negative"
    assert error({"a": {"$size": 1.5}}) == f"{p}.a.$size: $size needs a whole number, got 1.5"
    assert error({"a": {"$type": "strng"}}) == (
        f"{p}.a.$type: unknown type name alias 'strng'; did you mean 'string'?"
    )
    assert error({"a": {"$type": 99}}) == f"{p}.a.$type: invalid numerical type code: 99"
    assert error({"a": {"$type": ["int", "lng"]}}) == (
        f"{p}.a.$type[1]: unknown type name alias 'lng'; did you mean 'long'?"
    )
    assert error({"a": {"$not": 5}}) == f"{p}.a.$not: $not needs a regex or a document"
    assert error({"a": {"$not": {}}}) == f"{p}.a.$not: $not cannot be empty"
    assert error({"a": {"$elemMatch": 5}}) == f"{p}.a.$elemMatch: $elemMatch needs an object"
    assert error({"a": {"$options": "i"}}) == f"{p}.a.$options: $options needs a $regex"
    assert error({"a": {"$regex": "x", "$options": "g"}}) == f"{p}.a.$regex: invalid flag in regex options: g"
    assert error({"a": {"$regex": Regex("x", "i"), "$options": "m"}}) == (
        f"{p}.a.$regex: options set in both $regex and $options"
    )
    assert error({"a": {"$regex": 5}}) == f"{p}.a.$regex: $regex has to be a string"
    assert error({"a": {"$regex": "("}}).startswith(f"{p}.a.$regex: invalid regular expression '(': ")
    assert error({"a": {"$gt": re.compile("x")}}) == f"{p}.a.$gt: $gt does not accept a regular expression"
    assert error({"a": {"$gt": 1, "b": 2}}) == (
        f"{p}.a.b: unknown query operator 'b': operators and field names cannot be mixed"
    )
    assert error({"a..b": 1}) == f"{p}.a..b: invalid field path 'a..b'"
    assert error([{"a": 1}]) == f"{p}: a query must be an object, got [{{'a': 1}}]"


def test_logical_operator_errors() -> None:
    p = "pipeline[1].$match"
    assert error({"$and": []}) == f"{p}.$and: $and must be a nonempty array"
    assert error({"$or": {"a": 1}}) == f"{p}.$or: $or must be an array"
    assert error({"$nor": [5]}) == f"{p}.$nor[0]: $nor entries need to be full objects"
    assert error({"$or": [{"a": {"$gtt": 1}}]}) == (
        f"{p}.$or[0].a.$gtt: unknown query operator '$gtt'; did you mean '$gt'?"
    )


def test_jsonschema_errors_carry_the_query_path() -> None:
    assert error({"$jsonSchema": {"properties": {"x": {"bsonType": "integer"}}}}) == (
        "pipeline[1].$match.$jsonSchema.properties.x.bsonType: unknown bsonType 'integer'; did you mean 'int'?"
    )


def test_operators_are_dispatched_through_the_table() -> None:
    for name in ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists", "$type",
                 "$regex", "$options", "$not", "$elemMatch", "$size", "$all", "$mod",
                 "$bitsAllSet", "$bitsAnySet", "$bitsAllClear", "$bitsAnyClear"):
        assert name in QUERY_OPERATORS


# ---- $jsonSchema inside queries and describe_failure --------------------------------

DLQ_VALIDATOR = {
    "$jsonSchema": {"required": ["x"], "properties": {"x": {"bsonType": "int", "minimum": 1, "maximum": 42}}}
}
DLQ_DOCS: list[dict[str, Any]] = [
    {"x": 0}, {"x": 1}, {"x": 3.14}, {"x": 2}, {"x": "22"}, {"x": 3}, {"text": "yo"}, {"x": 4},
]


def test_mqlflow_dlq_demo_validator() -> None:
    pred = compile_query(DLQ_VALIDATOR, Ctx("pipeline[1].$validate.validator"))
    assert [d for d in DLQ_DOCS if pred(d)] == [{"x": 1}, {"x": 2}, {"x": 3}, {"x": 4}]


def test_describe_failure_for_the_dlq_demo() -> None:
    reasons = [describe_failure(DLQ_VALIDATOR, d) for d in DLQ_DOCS if not compile_query(DLQ_VALIDATOR, CTX)(d)]
    assert reasons == [
        "x: $jsonSchema minimum 1 failed for 0",
        'x: $jsonSchema bsonType "int" failed for 3.14',
        'x: $jsonSchema bsonType "int" failed for "22"',
        "x: $jsonSchema required failed: field is missing",
    ]
    assert describe_failure(DLQ_VALIDATOR, {"x": 99}) == "x: $jsonSchema maximum 42 failed for 99"


def test_describe_failure_for_query_clauses() -> None:
    assert describe_failure({"x": {"$gt": 5}}, {"x": 3}) == "x: $gt 5 failed for 3"
    assert describe_failure({"a": 1, "x": {"$gt": 5, "$lt": 9}}, {"a": 1, "x": 10}) == "x: $lt 9 failed for 10"
    assert describe_failure({"x": "a"}, {}) == 'x: $eq "a" failed for missing'
    assert describe_failure({"x": {"$exists": True}}, {"y": 1}) == "x: $exists true failed for missing"
    assert describe_failure({"$and": [{"a": 1}, {"b.c": {"$in": [1, 2]}}]}, {"a": 1, "b": {"c": 3}}) == (
        "b.c: $in [1, 2] failed for 3"
    )
    assert describe_failure({"$or": [{"a": 1}, {"b": 1}]}, {}) == "$or: none of 2 clauses matched"
    assert describe_failure({"$nor": [{"a": 1}]}, {"a": 1}) == "$nor: a clause matched"
    assert describe_failure({"$expr": "$ok"}, {"ok": False}) == '$expr "$ok" evaluated to false'


def test_describe_failure_shows_regexes_and_negations() -> None:
    assert describe_failure({"sku": re.compile("^ABC", re.IGNORECASE)}, {"sku": "x1"}) == (
        'sku: $regex /^ABC/i failed for "x1"'
    )
    assert describe_failure({"a": {"$not": {"$gt": 5}}}, {"a": 6}) == 'a: $not {"$gt": 5} failed for 6'
