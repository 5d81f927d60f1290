"""MQL comparison expression operators: $eq $ne $gt $gte $lt $lte $cmp.

They compare values of any type with MongoDB's BSON order (numbers by value across
int/long/double/decimal, then by the canonical type order), so ``{$gt: ["a", 5]}``
is true. In aggregation a *missing* value sorts just below null, so
``{$eq: ["$absent", null]}`` is false ($eq docs; MongoDB's canonical type order
puts "missing"/undefined before null).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bson import MinKey

from translator.mql.expr import Ctx, Expr, Vars, operator
from translator.mql.operators.arithmetic import arg_list, fold
from translator.mql.values import MISSING, compare


def agg_compare(a: Any, b: Any) -> int:
    """values.compare, plus aggregation's rule that missing < null (but > MinKey)."""
    if a is MISSING or b is MISSING:
        if a is b:
            return 0
        if a is MISSING:
            return 1 if type(b) is MinKey else -1
        return -1 if type(a) is MinKey else 1
    return compare(a, b)


def _make(op: str, test: Callable[[int], bool], fast: Callable[[Any, Any], bool]) -> None:
    @operator(op)
    def compile_(args: Any, ctx: Ctx) -> Expr:
        a, b = arg_list(args, ctx, 2)

        def cmp_op(doc: Any, v: Vars) -> Any:
            x = a(doc, v)
            y = b(doc, v)
            t = type(x)
            u = type(y)
            if (t is int or t is float) and (u is int or u is float):
                if x == x and y == y:  # no NaN: Python compares int/float exactly
                    return fast(x, y)
            elif t is str and u is str:
                return fast(x, y)
            return test(agg_compare(x, y))

        return fold(cmp_op, (a, b))


_make("$eq", lambda c: c == 0, lambda x, y: x == y)
_make("$ne", lambda c: c != 0, lambda x, y: x != y)
_make("$gt", lambda c: c > 0, lambda x, y: x > y)
_make("$gte", lambda c: c >= 0, lambda x, y: x >= y)
_make("$lt", lambda c: c < 0, lambda x, y: x < y)
_make("$lte", lambda c: c <= 0, lambda x, y: x <= y)


@operator("$cmp")
def _cmp(args: Any, ctx: Ctx) -> Expr:
    """-1, 0 or 1 (an int), by the same BSON order as the other comparisons."""
    a, b = arg_list(args, ctx, 2)

    def cmp(doc: Any, v: Vars) -> Any:
        return agg_compare(a(doc, v), b(doc, v))

    return fold(cmp, (a, b))
