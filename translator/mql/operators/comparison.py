"""MQL comparison expression operators: $eq $ne $gt $gte $lt $lte $cmp.

They compare values of any type with MongoDB's BSON order (numbers by value across
int/long/double/decimal, then by the canonical type order), so ``{$gt: ["a", 5]}``
is true. In aggregation a *missing* value sorts just below null, so
``{$eq: ["$absent", null]}`` is false ($eq docs; MongoDB's canonical type order
puts "missing"/undefined before null).

They compile to :class:`~translator.mql.expr.Binary` nodes for :mod:`translator.codegen`, which
inlines the same int/double/string fast path and calls ``general(x, y)`` otherwise.
"""

from __future__ import annotations

import operator as _op
from collections.abc import Callable
from typing import Any

from bson import MinKey

from translator.mql.expr import Ctx, Expr, Vars, binary, const_value, field_parts, operator
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
        general = _general(test)
        special = _against_constant(a, b, test, fast)
        if special is not None:
            return binary(op, a, b, general, special)

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

        return fold(binary(op, a, b, general, cmp_op), (a, b))


def _general(test: Callable[[int], bool]) -> Callable[[Any, Any], bool]:
    """The comparison on evaluated operands (``Binary.general`` for :mod:`translator.codegen`)."""

    def general(x: Any, y: Any) -> bool:
        return test(agg_compare(x, y))

    return general


def _against_constant(
    a: Expr, b: Expr, test: Callable[[int], bool], fast: Callable[[Any, Any], bool]
) -> Expr | None:
    """``{$gte: ["$obs.temp", 20]}``: a constant int/double (not NaN, not bool) or string
    on the right. An int, a non-NaN double (resp. a string) on the left compares with one
    Python operator; a one- or two-part field path on the left is read inline. Any other
    value (NaN, bool, Int64, Decimal128, null, missing, arrays...) takes ``agg_compare``.
    """
    c = const_value(b)
    if const_value(a) is not MISSING:
        return None  # both constant: fold() below evaluates it once
    tc = type(c)
    if tc is str:
        numeric = False
    elif (tc is int or tc is float) and c == c:
        numeric = True
    else:
        return None
    parts = field_parts(a)
    if parts is not None and len(parts) <= 2:
        k1 = parts[0]
        k2 = parts[1] if len(parts) == 2 else None

        def cmp_path_const(doc: Any, v: Vars) -> Any:
            if type(doc) is dict:
                x = doc.get(k1, MISSING)
                if k2 is not None:
                    if type(x) is dict:
                        x = x.get(k2, MISSING)
                    elif x is not MISSING:
                        x = a(doc, v)  # arrays along the path: the general getter
            else:
                x = a(doc, v)
            t = type(x)
            if numeric:
                if t is int or (t is float and x == x):
                    return fast(x, c)
            elif t is str:
                return fast(x, c)
            return test(agg_compare(x, c))

        return cmp_path_const

    def cmp_const(doc: Any, v: Vars) -> Any:
        x = a(doc, v)
        t = type(x)
        if numeric:
            if t is int or (t is float and x == x):
                return fast(x, c)
        elif t is str:
            return fast(x, c)
        return test(agg_compare(x, c))

    return cmp_const


# The Python operators are the C functions of the ``operator`` module (no lambda frame).
_make("$eq", lambda c: c == 0, _op.eq)
_make("$ne", lambda c: c != 0, _op.ne)
_make("$gt", lambda c: c > 0, _op.gt)
_make("$gte", lambda c: c >= 0, _op.ge)
_make("$lt", lambda c: c < 0, _op.lt)
_make("$lte", lambda c: c <= 0, _op.le)


@operator("$cmp")
def _cmp(args: Any, ctx: Ctx) -> Expr:
    """-1, 0 or 1 (an int), by the same BSON order as the other comparisons."""
    a, b = arg_list(args, ctx, 2)

    def cmp(doc: Any, v: Vars) -> Any:
        return agg_compare(a(doc, v), b(doc, v))

    return fold(cmp, (a, b))
