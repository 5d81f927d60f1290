"""docs/operators.md is generated from the registries and must match them."""

from __future__ import annotations

import pathlib

from translator.mql.expr import OPERATORS
from translator.mql.operator_table import render

DOC = pathlib.Path(__file__).resolve().parents[3] / "docs" / "operators.md"


def test_committed_operator_table_matches_the_registry() -> None:
    assert DOC.read_text(encoding="utf-8") == render(), (
        "docs/operators.md is stale: run .venv/bin/python scripts/gen_operator_table.py"
    )


def test_table_lists_every_expression_operator_once() -> None:
    text = render()
    for name in OPERATORS:
        assert text.count(f"| `{name}` |") >= 1, name
    assert "| `$function` | rejected: JavaScript is not supported by stream processors |" in text
    assert "| `$setUnion` | supported |" in text
