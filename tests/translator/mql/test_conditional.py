"""Conditional expression operators: $cond, $ifNull, $switch."""

from __future__ import annotations

from typing import Any

import pytest

from translator.errors import TranslateError
from translator.mql.expr import EMPTY_VARS, Ctx, ExprError, compile_expr, const_value
from translator.mql.values import MISSING


def run(spec: Any, doc: dict[str, Any] | None = None) -> Any:
    return compile_expr(spec, Ctx("t"))({} if doc is None else doc, EMPTY_VARS)


BOOM = {"$divide": [1, 0]}

# $cond docs: discount 30 when qty >= 250, else 20.
COND_DOCS = [({"qty": 300}, 30), ({"qty": 200}, 20), ({"qty": 250}, 30)]


@pytest.mark.parametrize(
    "spec",
    [
        {"$cond": {"if": {"$gte": ["$qty", 250]}, "then": 30, "else": 20}},
        {"$cond": [{"$gte": ["$qty", 250]}, 30, 20]},
    ],
)
def test_cond_documented_example(spec: Any) -> None:
    fn = compile_expr(spec, Ctx("t"))
    for doc, expected in COND_DOCS:
        assert fn(doc, EMPTY_VARS) == expected


def test_cond_uses_truthiness_and_evaluates_one_branch() -> None:
    assert run({"$cond": ["$absent", BOOM, "no"]}) == "no"
    assert run({"$cond": [0, BOOM, "no"]}) == "no"
    assert run({"$cond": ["", "yes", BOOM]}) == "yes"
    assert run({"$cond": [[], "yes", BOOM]}) == "yes"
    assert run({"$cond": ["$x", "$x", "none"]}, {"x": 5}) == 5


def test_cond_with_constant_test_compiles_to_the_branch() -> None:
    fn = compile_expr({"$cond": [True, "$a", BOOM]}, Ctx("t"))
    assert fn({"a": 7}, EMPTY_VARS) == 7
    assert const_value(compile_expr({"$cond": [False, 1, 2]}, Ctx("t"))) == 2


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"$cond": {"if": 1, "then": 2}}, "t.$cond: Missing 'else' parameter to $cond"),
        ({"$cond": {"then": 2, "else": 3}}, "t.$cond: Missing 'if' parameter to $cond"),
        (
            {"$cond": {"if": 1, "then": 2, "else": 3, "otherwise": 4}},
            "t.$cond.otherwise: Unrecognized parameter to $cond: otherwise",
        ),
        ({"$cond": [1, 2]}, "t.$cond: Expression $cond takes exactly 3 arguments. 2 were passed in."),
    ],
)
def test_cond_compile_errors(spec: Any, message: str) -> None:
    with pytest.raises(TranslateError) as ei:
        compile_expr(spec, Ctx("t"))
    assert str(ei.value) == message


# $ifNull docs: single input and multiple inputs (MongoDB 5.0+).
IF_NULL_DOCS = [
    {"item": "buggy", "description": "Toy car", "quantity": 300},
    {"item": "bicycle", "description": None, "quantity": 200},
    {"item": "flag"},
]


def test_if_null_single_input_documented_example() -> None:
    fn = compile_expr({"$ifNull": ["$description", "Unspecified"]}, Ctx("t"))
    assert [fn(d, EMPTY_VARS) for d in IF_NULL_DOCS] == ["Toy car", "Unspecified", "Unspecified"]


def test_if_null_multiple_inputs_documented_example() -> None:
    fn = compile_expr({"$ifNull": ["$description", "$quantity", "Unspecified"]}, Ctx("t"))
    assert [fn(d, EMPTY_VARS) for d in IF_NULL_DOCS] == ["Toy car", 200, "Unspecified"]


def test_if_null_semantics() -> None:
    assert run({"$ifNull": ["$a", 1]}, {"a": 0}) == 0  # only null/missing are replaced
    assert run({"$ifNull": ["$a", 1]}, {"a": False}) is False
    assert run({"$ifNull": ["$a", "$b", "$c"]}, {"c": None}) is None  # replacement as is
    assert run({"$ifNull": ["$a", "$b"]}) is MISSING  # a missing replacement stays missing
    assert run({"$ifNull": ["$a", BOOM]}, {"a": 1}) == 1  # replacement is lazy
    assert const_value(compile_expr({"$ifNull": [None, None, 3]}, Ctx("t"))) == 3


@pytest.mark.parametrize("spec", [{"$ifNull": ["$a"]}, {"$ifNull": "$a"}, {"$ifNull": []}])
def test_if_null_needs_two_arguments(spec: Any) -> None:
    with pytest.raises(TranslateError) as ei:
        compile_expr(spec, Ctx("t"))
    assert "$ifNull needs at least two arguments, had: " in str(ei.value)


# $switch docs: a message from the average score.
SWITCH = {
    "$switch": {
        "branches": [
            {"case": {"$gte": ["$avg", 90]}, "then": "Doing great!"},
            {
                "case": {"$and": [{"$gte": ["$avg", 80]}, {"$lt": ["$avg", 90]}]},
                "then": "Doing pretty well.",
            },
            {"case": {"$lt": ["$avg", 80]}, "then": "Needs improvement."},
        ],
        "default": "No scores found.",
    }
}


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ({"avg": 87}, "Doing pretty well."),
        ({"avg": 96}, "Doing great!"),
        ({"avg": 66}, "Needs improvement."),
        ({}, "Needs improvement."),  # missing < 80 in the BSON order
        ({"avg": "n/a"}, "Doing great!"),  # a string sorts above every number
    ],
)
def test_switch_documented_example(doc: dict[str, Any], expected: str) -> None:
    assert run(SWITCH, doc) == expected


def test_switch_default_and_first_match() -> None:
    spec = {
        "$switch": {
            "branches": [{"case": "$a", "then": "a"}, {"case": "$b", "then": "b"}],
            "default": "none",
        }
    }
    assert run(spec, {"a": 1, "b": 1}) == "a"
    assert run(spec, {"b": 1}) == "b"
    assert run(spec, {}) == "none"


def test_switch_without_match_or_default_is_a_runtime_error() -> None:
    spec = {"$switch": {"branches": [{"case": {"$eq": ["$x", 1]}, "then": "one"}]}}
    assert run(spec, {"x": 1}) == "one"
    with pytest.raises(ExprError) as ei:
        run(spec, {"x": 2})
    assert ei.value.op == "$switch"
    assert ei.value.message == (
        "$switch could not find a matching branch for an input, and no default was specified."
    )


def test_switch_constant_cases_are_pruned() -> None:
    spec = {
        "$switch": {
            "branches": [{"case": False, "then": BOOM}, {"case": True, "then": "$v"}],
        }
    }
    fn = compile_expr(spec, Ctx("t"))
    assert fn({"v": 3}, EMPTY_VARS) == 3
    assert const_value(compile_expr({"$switch": {"branches": [{"case": 0, "then": 1}], "default": 2}}, Ctx("t"))) == 2


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"$switch": []}, "t.$switch: $switch requires an object as an argument, found: array"),
        ({"$switch": {"branches": []}}, "t.$switch.branches: $switch requires at least one branch."),
        (
            {"$switch": {"branches": {"case": 1, "then": 2}}},
            "t.$switch.branches: $switch expected an array for 'branches'",
        ),
        (
            {"$switch": {"branches": [{"then": 2}]}},
            "t.$switch.branches[0]: $switch requires each branch have a 'case' expression",
        ),
        (
            {"$switch": {"branches": [{"case": 1}]}},
            "t.$switch.branches[0]: $switch requires each branch have a 'then' expression.",
        ),
        (
            {"$switch": {"branches": [{"case": 1, "then": 2}], "else": 3}},
            "t.$switch.else: $switch found an unknown argument: else",
        ),
    ],
)
def test_switch_compile_errors(spec: Any, message: str) -> None:
    with pytest.raises(TranslateError) as ei:
        compile_expr(spec, Ctx("t"))
    assert str(ei.value) == message
