"""MQL boolean expression operators: $and, $or, $not.

Aggregation truthiness (values.truthy): false, null, missing and numeric zero are
false, everything else (including "" and []) is true. $and/$or short-circuit left to
right; ``{$and: []}`` is true and ``{$or: []}`` is false ($and/$or docs).
"""

from __future__ import annotations

from typing import Any

from translator.mql.expr import Ctx, Expr, Vars, literal, operator
from translator.mql.operators.arithmetic import arg_list, fold
from translator.mql.values import truthy


@operator("$and")
def _and(args: Any, ctx: Ctx) -> Expr:
    parts = arg_list(args, ctx, 0, -1)
    if not parts:
        return literal(True)
    if len(parts) == 2:
        a, b = parts

        def and2(doc: Any, v: Vars) -> Any:
            return truthy(a(doc, v)) and truthy(b(doc, v))

        return fold(and2, parts)

    def and_(doc: Any, v: Vars) -> Any:
        for f in parts:  # noqa: SIM110 - a plain loop beats all(<genexpr>) per document
            if not truthy(f(doc, v)):
                return False
        return True

    return fold(and_, parts)


@operator("$or")
def _or(args: Any, ctx: Ctx) -> Expr:
    parts = arg_list(args, ctx, 0, -1)
    if not parts:
        return literal(False)
    if len(parts) == 2:
        a, b = parts

        def or2(doc: Any, v: Vars) -> Any:
            return truthy(a(doc, v)) or truthy(b(doc, v))

        return fold(or2, parts)

    def or_(doc: Any, v: Vars) -> Any:
        for f in parts:  # noqa: SIM110 - a plain loop beats any(<genexpr>) per document
            if truthy(f(doc, v)):
                return True
        return False

    return fold(or_, parts)


@operator("$not")
def _not(args: Any, ctx: Ctx) -> Expr:
    (a,) = arg_list(args, ctx, 1)

    def not_(doc: Any, v: Vars) -> Any:
        return not truthy(a(doc, v))

    return fold(not_, (a,))
