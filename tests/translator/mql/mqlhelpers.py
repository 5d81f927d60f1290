"""Helpers shared by the MQL operator tests: compile once, evaluate, compare exactly."""

from __future__ import annotations

import math
from typing import Any

import pytest

from translator.errors import TranslateError
from translator.mql.expr import EMPTY_VARS, Ctx, ExprError, compile_expr


def ev(spec: Any, doc: Any = None) -> Any:
    """Compile ``spec`` and evaluate it against ``doc`` (default ``{}``)."""
    return compile_expr(spec, Ctx("t"))({} if doc is None else doc, EMPTY_VARS)


def expr_error(spec: Any, doc: Any = None) -> ExprError:
    """The runtime error ``spec`` raises on ``doc``."""
    with pytest.raises(ExprError) as ei:
        ev(spec, doc)
    return ei.value


def compile_error(spec: Any) -> str:
    """The create-time error text of ``spec``."""
    with pytest.raises(TranslateError) as ei:
        compile_expr(spec, Ctx("t"))
    return str(ei.value)


def same(actual: Any, expected: Any) -> None:
    """Exact value and exact Python type (Int64 vs int, float vs int, Decimal128 digits)."""
    assert type(actual) is type(expected), f"{actual!r} is {type(actual)}, want {expected!r}"
    if isinstance(expected, float) and math.isnan(expected):
        assert math.isnan(actual)
    else:
        assert actual == expected, f"{actual!r} != {expected!r}"


run = ev
runtime_error = expr_error
