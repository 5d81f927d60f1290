"""MongoDB's rules in the places where a differential run found mqlflow diverging.

Each test names the rule; values follow the MongoDB 8.0 manual and PCRE2 (the engine
MongoDB uses for regular expressions).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from bson import Decimal128

from tests.translator.mql.mqlhelpers import ev, expr_error
from translator.mql.expr import Ctx
from translator.mql.query import compile_query
from translator.testing import run_pipeline

# ---- 1. $trim's default whitespace set ------------------------------------------------


def test_trim_default_set_is_exactly_the_documented_one() -> None:
    stripped = "\x00 \t\n\x0b\x0c\r\u00a0\u1680" + "".join(chr(c) for c in range(0x2000, 0x200B))
    kept = "\u2028\u2029\u202f\u205f\u3000"
    assert ev({"$trim": {"input": stripped + "x" + stripped}}) == "x"
    assert ev({"$trim": {"input": kept + "x" + kept}}) == kept + "x" + kept
    assert ev({"$ltrim": {"input": "\u3000 x"}}) == "\u3000 x"
    assert ev({"$rtrim": {"input": "x \u205f"}}) == "x \u205f"


# ---- 2./3. regular expressions run on PCRE2 ------------------------------------------

REGEX_CASES: list[tuple[str, str, str, bool]] = [
    # ASCII character classes (PCRE2 in UTF mode without UCP)
    (r"^\w$", "", "é", False),
    (r"^\w$", "", "e", True),
    (r"^\d$", "", "\u0663", False),  # ARABIC-INDIC DIGIT THREE
    (r"^\s$", "", "\u00a0", False),
    (r"\bé", "", " é", False),
    (r"^.$", "", "é", True),  # '.' is one code point
    ("É", "i", "é", True),  # caseless matching still folds non-ASCII letters
    # PCRE syntax Python's re rejects or reads differently
    (r"(?<year>\d{4})", "", "in 2024", True),
    (r"^\Qa.b\E$", "", "a.b", True),
    (r"^\Qa.b\E$", "", "axb", False),
    (r"^\x{41}$", "", "A", True),
    (r"^a(?i)b$", "", "aB", True),
    (r"^a(?i)b$", "", "AB", False),
    (r"^[[:alpha:]]+$", "", "abc", True),
    (r"^[[:digit:]]$", "", "7", True),
    (r"a\Z", "", "a\n", True),  # \Z also matches before a final newline
    (r"a\z", "", "a\n", False),
]


@pytest.mark.parametrize(("pattern", "options", "text", "expected"), REGEX_CASES)
def test_regex_match_expression_runs_pcre2(pattern: str, options: str, text: str, expected: bool) -> None:
    assert ev({"$regexMatch": {"input": text, "regex": pattern, "options": options}}) is expected


@pytest.mark.parametrize(("pattern", "options", "text", "expected"), REGEX_CASES)
def test_match_regex_query_runs_pcre2(pattern: str, options: str, text: str, expected: bool) -> None:
    pred = compile_query({"s": {"$regex": pattern, "$options": options}}, Ctx("pipeline[1].$match"))
    assert pred({"s": text}) is expected


def test_regex_find_reports_code_point_index_and_null_for_unmatched_groups() -> None:
    got = ev({"$regexFind": {"input": "cafétéria", "regex": "(t)(z)?(é)"}})
    assert got == {"match": "té", "idx": 4, "captures": ["t", None, "é"]}
    got_all = ev({"$regexFindAll": {"input": "a1b22", "regex": r"(\d)+"}})
    assert got_all == [
        {"match": "1", "idx": 1, "captures": ["1"]},
        {"match": "22", "idx": 3, "captures": ["2"]},
    ]
    assert ev({"$regexFind": {"input": None, "regex": "a"}}) is None
    assert ev({"$regexFindAll": {"input": "$nope", "regex": "a"}}) == []
    assert str(expr_error({"$regexFind": {"input": 1, "regex": "a"}})) == "$regexFind needs 'input' to be of type string"


# ---- 4./5. missing is not null ----------------------------------------------------------


def test_in_with_a_missing_value_is_false() -> None:
    assert ev({"$in": ["$missing", [None]]}) is False
    assert ev({"$in": [None, [None]]}) is True


def test_index_of_array_with_a_missing_value_is_minus_one() -> None:
    assert ev({"$indexOfArray": [[1, None], "$missing"]}) == -1
    assert ev({"$indexOfArray": [[1, None], None]}) == 1


# ---- 6./7. $group keys: every NaN is one group; 0.5 double == 0.5 decimal -------------


def _groups(ids: list[Any]) -> list[tuple[Any, int]]:
    t0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    docs = [{"k": k, "t": t0 + dt.timedelta(milliseconds=i)} for i, k in enumerate(ids)]
    out = run_pipeline(
        [
            {"$source": {"documents": docs, "timeField": {"$toDate": "$t"}}},
            {
                "$tumblingWindow": {
                    "interval": {"size": 1, "unit": "minute"},
                    "pipeline": [{"$group": {"_id": "$k", "n": {"$count": {}}}}],
                }
            },
        ]
    ).output
    return sorted(((d["_id"], d["n"]) for d in out), key=repr)


def test_group_puts_every_nan_in_one_group() -> None:
    nan, dnan = float("nan"), Decimal128("NaN")
    got = _groups([nan, nan, dnan, 1])
    assert len(got) == 2
    assert sorted(n for _, n in got) == [1, 3]
    compound = _groups([{"a": nan}, {"a": nan}, {"a": 2}])
    assert sorted(n for _, n in compound) == [1, 2]


def test_group_merges_equal_fractional_double_and_decimal() -> None:
    got = _groups([0.5, Decimal128("0.5"), Decimal128("0.50"), 0.25, Decimal128("0.1"), 0.1])
    counts = sorted(n for _, n in got)
    # 0.5 x3 in one group; 0.25 alone; Decimal128 0.1 and double 0.1 are different numbers
    assert counts == [1, 1, 1, 3]


# ---- 8. $dateFromString needs year, month and day --------------------------------------


@pytest.mark.parametrize(
    ("fmt", "text"), [("%Y-%m", "2024-06"), ("%Y", "2024"), ("%m/%Y", "06/2024"), ("%Y %H:%M", "2024 10:30")]
)
def test_date_from_string_with_an_incomplete_format_is_an_error(fmt: str, text: str) -> None:
    spec = {"dateString": text, "format": fmt}
    assert str(expr_error({"$dateFromString": spec})) == (
        f"$dateFromString: Error parsing date string '{text}'; "
        "an incomplete date/time string has been found, with elements missing"
    )
    assert ev({"$dateFromString": {**spec, "onError": "bad"}}) == "bad"


def test_date_from_string_with_a_full_format_still_parses() -> None:
    got = ev({"$dateFromString": {"dateString": "06/15/2024", "format": "%m/%d/%Y"}})
    assert got == dt.datetime(2024, 6, 15, tzinfo=dt.UTC)


# ---- 9. doubles as text: the server's %g ------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [(-0.0, "-0"), (1234567.89, "1.23457e+06"), (2.5, "2.5"), (0.1, "0.1"), (100.0, "100"), (1e-05, "1e-05"), (123456.7, "123457")],
)
def test_double_to_string_is_percent_g(value: float, text: str) -> None:
    assert ev({"$toString": value}) == text
    assert ev({"$convert": {"input": value, "to": "string"}}) == text
    assert ev({"$substrCP": [value, 0, 50]}) == text
