"""String expression operators: documented examples, null handling, errors."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
from bson import Decimal128, Int64, Regex

from translator.errors import TranslateError
from translator.mql.expr import EMPTY_VARS, Ctx, ExprError, compile_expr, const_value


def run(spec: Any, doc: dict[str, Any] | None = None) -> Any:
    return compile_expr(spec, Ctx("t"))({} if doc is None else doc, EMPTY_VARS)


def runtime_error(spec: Any, doc: dict[str, Any] | None = None) -> tuple[str, str]:
    with pytest.raises(ExprError) as ei:
        run(spec, doc)
    return ei.value.op, ei.value.message


# ---- $concat -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ({"item": "ABC1", "description": "product 1"}, "ABC1 - product 1"),
        ({"item": "ABC2", "description": "product 2"}, "ABC2 - product 2"),
        ({"item": "XYZ1", "description": None}, None),
        ({"item": "XYZ2"}, None),
    ],
)
def test_concat_documented_example(doc: dict[str, Any], expected: str | None) -> None:
    assert run({"$concat": ["$item", " - ", "$description"]}, doc) == expected


def test_concat_arities_and_errors() -> None:
    assert run({"$concat": []}) == ""
    assert run({"$concat": "$a"}, {"a": "x"}) == "x"
    assert run({"$concat": ["$a", "$b"]}, {"a": "x", "b": "y"}) == "xy"
    assert run({"$concat": ["a", None, 1]}) is None  # null seen before the bad operand
    assert runtime_error({"$concat": ["a", 1]}) == ("$concat", "$concat only supports strings, not int")
    assert runtime_error({"$concat": ["$a", "b"]}, {"a": ["x"]}) == (
        "$concat",
        "$concat only supports strings, not array",
    )
    assert const_value(compile_expr({"$concat": ["a", "b", "c"]}, Ctx("t"))) == "abc"


# ---- $substrCP / $strLenCP -----------------------------------------------------------

FOOD = [
    ("apple", "app", 5),
    ("éclair", "écl", 6),
    ("hamburger", "ham", 9),
    ("jalapeño", "jal", 8),
    ("pizza", "piz", 5),
    ("tacos", "tac", 5),
    ("寿司sushi", "寿司s", 7),
]


@pytest.mark.parametrize(("name", "prefix", "length"), FOOD)
def test_substr_and_strlen_cp_documented_food_example(name: str, prefix: str, length: int) -> None:
    assert run({"$substrCP": ["$name", 0, 3]}, {"name": name}) == prefix
    n = run({"$strLenCP": "$name"}, {"name": name})
    assert n == length and type(n) is int


def test_substr_cp_documented_quarter_example() -> None:
    doc = {"quarter": "13Q1"}
    assert run({"$substrCP": ["$quarter", 0, 2]}, doc) == "13"
    spec = {"$substrCP": ["$quarter", 2, {"$subtract": [{"$strLenCP": "$quarter"}, 2]}]}
    assert run(spec, doc) == "Q1"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([None, 0, 2], ""),
        (["$absent", 0, 2], ""),
        (["abc", 1, 100], "bc"),
        (["abc", 5, 1], ""),
        (["abc", 1.0, Int64(1)], "b"),
        (["abc", Decimal128("1"), 2.0], "bc"),
        ([123, 0, 2], "12"),
        ([1.5, 0, 3], "1.5"),
    ],
)
def test_substr_cp_edge_cases(args: list[Any], expected: str) -> None:
    assert run({"$substrCP": args}) == expected


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["abc", "1", 2], "$substrCP: starting index must be a numeric type (is BSON type string)"),
        (["abc", 0, None], "$substrCP: length must be a numeric type (is BSON type null)"),
        (["abc", 1.5, 2], "$substrCP: starting index cannot be represented as a 32-bit integral value: 1.5"),
        (["abc", 0, -1], "$substrCP: length must be a nonnegative integer."),
        (["abc", -1, 1], "$substrCP: the starting index must be nonnegative integer."),
        ([[1], 0, 1], "can't convert from BSON type array to String"),
    ],
)
def test_substr_cp_errors(args: list[Any], message: str) -> None:
    assert runtime_error({"$substrCP": args}) == ("$substrCP", message)


@pytest.mark.parametrize(
    ("value", "found"), [(None, "null"), ("$absent", "missing"), (5, "int"), ([["a"]], "array")]
)
def test_strlen_cp_requires_a_string(value: Any, found: str) -> None:
    assert runtime_error({"$strLenCP": value}) == (
        "$strLenCP",
        f"$strLenCP requires a string argument, found: {found}",
    )


def test_substr_cp_arity() -> None:
    with pytest.raises(TranslateError) as ei:
        compile_expr({"$substrCP": ["abc", 1]}, Ctx("t"))
    assert str(ei.value) == "t.$substrCP: Expression $substrCP takes exactly 3 arguments. 2 were passed in."


# ---- $toLower / $toUpper -------------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "lower", "upper"),
    [
        ({"item": "ABC1", "description": "PRODUCT 1"}, ("abc1", "product 1"), ("ABC1", "PRODUCT 1")),
        ({"item": "abc2", "description": "Product 2"}, ("abc2", "product 2"), ("ABC2", "PRODUCT 2")),
        ({"item": "xyz1", "description": None}, ("xyz1", ""), ("XYZ1", "")),
    ],
)
def test_case_documented_example(
    doc: dict[str, Any], lower: tuple[str, str], upper: tuple[str, str]
) -> None:
    assert (run({"$toLower": "$item"}, doc), run({"$toLower": "$description"}, doc)) == lower
    assert (run({"$toUpper": "$item"}, doc), run({"$toUpper": "$description"}, doc)) == upper


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"$toUpper": "$absent"}, ""),
        ({"$toUpper": "straße é"}, "STRAßE é"),  # only ASCII letters change
        ({"$toLower": "ÉCOLE Abc"}, "École abc"),
        ({"$toUpper": 12}, "12"),
        ({"$toUpper": Int64(12)}, "12"),
        ({"$toLower": 1.5}, "1.5"),
        ({"$toLower": Decimal128("1.50")}, "1.50"),
        (
            {"$toLower": [{"$literal": dt.datetime(2018, 3, 27, 16, 58, 51, 538000, tzinfo=dt.UTC)}]},
            "2018-03-27t16:58:51.538z",
        ),
    ],
)
def test_case_coercion(spec: Any, expected: str) -> None:
    assert run(spec) == expected


def test_case_rejects_non_coercible() -> None:
    assert runtime_error({"$toUpper": True}) == ("$toUpper", "can't convert from BSON type bool to String")
    assert runtime_error({"$toLower": {"a": 1}}) == (
        "$toLower",
        "can't convert from BSON type object to String",
    )


# ---- $split --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["June-15-2013", "-"], ["June", "15", "2013"]),
        (["banana split", "a"], ["b", "n", "n", " split"]),
        (["Hello World", " "], ["Hello", "World"]),
        (["astronomical", "astro"], ["", "nomical"]),
        (["pea green boat", "owl"], ["pea green boat"]),
        (["Berkeley, CA", ", "], ["Berkeley", "CA"]),
        (["a,b,", ","], ["a", "b", ""]),
        ([None, ","], None),
        (["$absent", ","], None),
        (["a,b", None], None),
    ],
)
def test_split_documented_examples(args: list[Any], expected: list[str] | None) -> None:
    assert run({"$split": args}) == expected


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["headphone jack", 7],
            "$split requires an expression that evaluates to a string as a second argument, found: int",
        ),
        (
            ["headphone jack", Regex("jack")],
            "$split requires an expression that evaluates to a string as a second argument, found: regex",
        ),
        (
            [5, "-"],
            "$split requires an expression that evaluates to a string as a first argument, found: int",
        ),
    ],
)
def test_split_errors(args: list[Any], message: str) -> None:
    assert runtime_error({"$split": args}) == ("$split", message)


def test_split_empty_separator() -> None:
    with pytest.raises(TranslateError) as ei:
        compile_expr({"$split": ["abc", ""]}, Ctx("t"))
    assert str(ei.value) == "t.$split[1]: $split requires a non-empty separator"
    assert runtime_error({"$split": ["abc", "$s"]}, {"s": ""}) == (
        "$split",
        "$split requires a non-empty separator",
    )


# ---- $trim / $ltrim / $rtrim ---------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"$trim": {"input": "  \n good  bye \t  "}}, "good  bye"),
        ({"$trim": {"input": " ggggoodbyeeeee", "chars": "ge"}}, " ggggoodby"),
        ({"$trim": {"input": "    ggggoodbyeeeee", "chars": " ge"}}, "oodby"),
        ({"$trim": {"input": " product 1"}}, "product 1"),
        (
            {"$trim": {"input": "product 2 \n The product is in stock.  \n\n  "}},
            "product 2 \n The product is in stock.",
        ),
        ({"$trim": {"input": None}}, None),
        ({"$trim": {"input": "$absent"}}, None),
        ({"$trim": {"input": "\x00\u00a0\u3000x\u2003\x0b"}}, "\u3000x"),  # U+3000 is not in the set
        ({"$trim": {"input": "\u2028\u2029\u202f\u205fx\u1680\u200a"}}, "\u2028\u2029\u202f\u205fx"),
        ({"$trim": {"input": "xx", "chars": None}}, None),
        ({"$ltrim": {"input": "  \n good  bye \t  "}}, "good  bye \t  "),
        ({"$ltrim": {"input": " ggggoodbyeeeee", "chars": " ge"}}, "oodbyeeeee"),
        ({"$rtrim": {"input": "  \n good  bye \t  "}}, "  \n good  bye"),
        ({"$rtrim": {"input": " ggggoodbyeeeee", "chars": "ge"}}, " ggggoodby"),
        ({"$rtrim": {"input": "ab", "chars": ""}}, "ab"),
    ],
)
def test_trim_documented_examples(spec: Any, expected: str | None) -> None:
    assert run(spec) == expected


def test_trim_runtime_errors() -> None:
    assert runtime_error({"$trim": {"input": 1}}) == (
        "$trim",
        "$trim requires its input to be a string, got 1 (of type int) instead.",
    )
    assert runtime_error({"$ltrim": {"input": "a", "chars": 5}}) == (
        "$ltrim",
        "$ltrim requires 'chars' to be a string, got 5 (of type int) instead.",
    )


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"$trim": "abc"}, "t.$trim: $trim requires an object as an argument, found: string"),
        ({"$rtrim": {"chars": "a"}}, "t.$rtrim: $rtrim requires an 'input' field"),
        ({"$ltrim": {"input": "a", "char": "a"}}, "t.$ltrim.char: $ltrim found an unknown argument: char"),
    ],
)
def test_trim_compile_errors(spec: Any, message: str) -> None:
    with pytest.raises(TranslateError) as ei:
        compile_expr(spec, Ctx("t"))
    assert str(ei.value) == message


# ---- $regexMatch ---------------------------------------------------------------------

PRODUCTS = [
    "Single LINE description.",
    "First lines\nsecond line",
    "Many spaces before     line",
    "Multiple\nline descriptions",
    "Lots of words on this line",
]


@pytest.mark.parametrize(
    ("regex", "options", "expected"),
    [
        ("line", None, [False, True, True, True, True]),
        (Regex("line"), None, [False, True, True, True, True]),
        (Regex("line", "i"), None, [True, True, True, True, True]),
        ("line", "i", [True, True, True, True, True]),
        (Regex("^s", "im"), None, [True, True, False, False, False]),
        ("^s", "im", [True, True, False, False, False]),
        ("m.*line", "si", [False, False, True, True, False]),
        ("m.*line", "i", [False, False, True, False, False]),
        ("# comment\nlin e", "x", [False, True, True, True, True]),
        (re.compile("LINE"), None, [True, False, False, False, False]),
    ],
)
def test_regex_match_documented_examples(regex: Any, options: str | None, expected: list[bool]) -> None:
    args: dict[str, Any] = {"input": "$description", "regex": regex}
    if options is not None:
        args["options"] = options
    fn = compile_expr({"$regexMatch": args}, Ctx("t"))
    assert [fn({"description": d}, EMPTY_VARS) for d in PRODUCTS] == expected
    # The same through a per-document regex (not precompiled).
    dyn: dict[str, Any] = {"input": "$description", "regex": "$r"}
    if options is not None:
        dyn["options"] = "$o"
    fn = compile_expr({"$regexMatch": dyn}, Ctx("t"))
    got = [fn({"description": d, "r": regex, "o": options}, EMPTY_VARS) for d in PRODUCTS]
    assert got == expected


def test_regex_match_email_documented_example() -> None:
    spec = {"$regexMatch": {"input": "$comment", "regex": "[a-z0-9_.+-]+@mongodb.com"}}
    assert run(spec, {"comment": "Day 1: aunt.arc.tica@mongodb.com"}) is True
    assert run(spec, {"comment": "Day 1: no email here"}) is False


@pytest.mark.parametrize(
    ("doc", "expected"),
    [({"s": None, "r": "a"}, False), ({"r": "a"}, False), ({"s": "a", "r": None}, False), ({"s": "a"}, False)],
)
def test_regex_match_null_is_false(doc: dict[str, Any], expected: bool) -> None:
    assert run({"$regexMatch": {"input": "$s", "regex": "$r"}}, doc) is expected


@pytest.mark.parametrize(
    ("args", "doc", "message"),
    [
        ({"input": 1, "regex": "a"}, {}, "$regexMatch needs 'input' to be of type string"),
        ({"input": "a", "regex": "$r"}, {"r": 1}, "$regexMatch needs 'regex' to be of type string or regex"),
        (
            {"input": "a", "regex": "a", "options": "$o"},
            {"o": 1},
            "$regexMatch needs 'options' to be of type string",
        ),
        (
            {"input": "a", "regex": "$r", "options": "m"},
            {"r": Regex("a", "i")},
            "$regexMatch: found regex option(s) specified in both 'regex' and 'option' fields",
        ),
        ({"input": "a", "regex": "a", "options": "$o"}, {"o": "z"}, "$regexMatch invalid flag in regex options: z"),
    ],
)
def test_regex_match_runtime_errors(args: dict[str, Any], doc: dict[str, Any], message: str) -> None:
    assert runtime_error({"$regexMatch": args}, doc) == ("$regexMatch", message)


def test_regex_match_invalid_pattern() -> None:
    op, message = runtime_error({"$regexMatch": {"input": "a", "regex": "$r"}}, {"r": "(unclosed"})
    assert op == "$regexMatch"
    assert message == "Invalid Regex in $regexMatch: missing closing parenthesis"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"input": "a"}, "t.$regexMatch: $regexMatch requires 'regex' parameter"),
        ({"input": "a", "regex": "a", "flags": "i"}, "t.$regexMatch.flags: $regexMatch found an unknown argument: flags"),
        (
            {"input": "a", "regex": Regex("a", "i"), "options": "m"},
            "t.$regexMatch.regex: $regexMatch: found regex option(s) specified in both 'regex' and 'option' fields",
        ),
        ({"input": "a", "regex": "("}, "t.$regexMatch.regex: Invalid Regex in $regexMatch: missing closing parenthesis"),
    ],
)
def test_regex_match_compile_errors(args: dict[str, Any], message: str) -> None:
    with pytest.raises(TranslateError) as ei:
        compile_expr({"$regexMatch": args}, Ctx("t"))
    assert str(ei.value) == message
