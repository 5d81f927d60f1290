"""The operator table of docs/operators.md, generated from the registries themselves.

Every expression operator (:data:`translator.mql.expr.OPERATORS`), ``$group``
accumulator (:data:`translator.accumulators.ACCUMULATORS`) and query operator
(:mod:`translator.mql.query`) is listed with its status: supported, or rejected at create
time with the reason a user sees. ``scripts/gen_operator_table.py`` writes the file and a
test checks the committed file is current, so the table cannot drift from the code.
"""

from __future__ import annotations

from collections import defaultdict

from translator.accumulators import ACCUMULATORS
from translator.mql import operators as _operators  # noqa: F401  (registers every family)
from translator.mql import query
from translator.mql.expr import OPERATORS, UNSUPPORTED_VARIABLES, Ctx
from translator.mql.operators.javascript import JAVASCRIPT_OPERATORS, JAVASCRIPT_UNSUPPORTED

_FAMILY_TITLES = {
    "accumulator_exprs": "Accumulators in expressions, $firstN/$lastN/$maxN/$minN",
    "arithmetic": "Arithmetic",
    "arrays": "Arrays",
    "bits": "Bitwise",
    "boolean": "Boolean",
    "comparison": "Comparison",
    "conditional": "Conditional",
    "date_parts": "Dates from/to parts",
    "dates": "Dates",
    "expr": "Literal, variables, metadata",
    "javascript": "JavaScript",
    "misc": "Miscellaneous",
    "objects": "Objects",
    "regex": "Regular expressions",
    "sets": "Sets",
    "sizes": "Sizes, timestamps, hashing",
    "string_bytes": "Strings (bytes, code points, search)",
    "strings": "Strings",
    "trig": "Trigonometry",
    "types": "Types and conversion",
}


def _status(name: str) -> str:
    if name in JAVASCRIPT_OPERATORS:
        return f"rejected: {JAVASCRIPT_UNSUPPORTED}"
    return "supported"


def render() -> str:
    """The whole Markdown document."""
    lines = [
        "# Operator table",
        "",
        "Generated from mqlflow's operator registries by `scripts/gen_operator_table.py`;",
        "`tests/translator/mql/test_operator_table.py` fails when this file is out of date.",
        "Semantics follow the MongoDB 8.0 manual",
        "(https://www.mongodb.com/docs/manual/reference/operator/aggregation/) as Atlas Stream",
        "Processing uses them (https://www.mongodb.com/docs/atlas/atlas-stream-processing/).",
        "",
        "## Expression operators",
        "",
    ]
    families: dict[str, list[str]] = defaultdict(list)
    for name, fn in OPERATORS.items():
        families[fn.__module__.rsplit(".", 1)[-1]].append(name)
    for family in sorted(families, key=lambda f: _FAMILY_TITLES.get(f, f)):
        lines += [f"### {_FAMILY_TITLES.get(family, family)}", "", "| Operator | Status |", "|---|---|"]
        lines += [f"| `{n}` | {_status(n)} |" for n in sorted(families[family], key=str.lower)]
        lines.append("")
    lines += ["### Variables", "", "| Variable | Status |", "|---|---|"]
    lines += [f"| `$${v}` | rejected: not supported in stream processing |" for v in sorted(UNSUPPORTED_VARIABLES)]
    lines += ["", "## `$group` accumulators", "", "| Accumulator | Status |", "|---|---|"]
    lines += [f"| `{n}` | {_status(n)} |" for n in sorted(ACCUMULATORS, key=str.lower)]
    lines += ["", "## Query operators (`$match`, `$validate`)", "", "| Operator | Status |", "|---|---|"]
    supported = set(query.QUERY_OPERATORS) | set(query.TOP_LEVEL_OPERATORS)
    rejected = {n: _query_reason(n) for n in query.FORBIDDEN_OPERATORS | query.UNIMPLEMENTED_OPERATORS}
    for n in sorted(supported | set(rejected), key=str.lower):
        lines.append(f"| `{n}` | {rejected.get(n, 'supported')} |")
    lines.append("")
    return "\n".join(lines)


def _query_reason(name: str) -> str:
    """The create-time error text the query compiler gives for ``name`` (path left out)."""
    err = query._unsupported(name, Ctx(""))
    return f"rejected: {err}" if err is not None else "rejected"
