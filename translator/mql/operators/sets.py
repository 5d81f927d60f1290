"""MQL set expression operators: arrays treated as sets (MongoDB "Set Expression Operators").

Duplicates are ignored and order does not matter; element equality is the same as
``$group``'s (1 and 1.0 are one element), so the keys come from
:func:`translator.mql.values.hashable`. Results keep the first occurrence's order, one
of the orders MongoDB allows ("the order of the elements in the output array is
unspecified"). Nested arrays are elements, not sets.
"""

from __future__ import annotations

from typing import Any

from translator.mql.expr import Ctx, Expr, ExprError, Vars, operator
from translator.mql.operators.arithmetic import arg_list, fold
from translator.mql.values import MISSING, bson_type, hashable, truthy


def _distinct(a: list[Any]) -> dict[Any, Any]:
    out: dict[Any, Any] = {}
    for x in a:
        out.setdefault(hashable(x), x)
    return out


def _nullish(x: Any) -> bool:
    return x is None or x is MISSING


def _all_arrays(op: str, vals: list[Any]) -> None:
    for x in vals:
        if type(x) is not list:
            raise ExprError(op, f"All operands of {op} must be arrays. One argument is of type: {bson_type(x)}")


def _arrays_or_null(op: str, fs: list[Expr], doc: Any, v: Vars) -> list[Any] | None:
    """The operands, or None when one is null/missing (the result is then null)."""
    vals = [f(doc, v) for f in fs]
    if any(_nullish(x) for x in vals):
        return None
    _all_arrays(op, vals)
    return vals


@operator("$setEquals")
def _set_equals(args: Any, ctx: Ctx) -> Expr:
    fs = arg_list(args, ctx, 2, -1)

    def set_equals(doc: Any, v: Vars) -> Any:
        vals = [f(doc, v) for f in fs]
        _all_arrays("$setEquals", vals)
        first = set(_distinct(vals[0]))
        return all(set(_distinct(x)) == first for x in vals[1:])

    return fold(set_equals, fs)


@operator("$setIntersection")
def _set_intersection(args: Any, ctx: Ctx) -> Expr:
    fs = arg_list(args, ctx, 0, -1)

    def set_intersection(doc: Any, v: Vars) -> Any:
        vals = _arrays_or_null("$setIntersection", fs, doc, v)
        if vals is None:
            return None
        if not vals:
            return []
        acc = _distinct(vals[0])
        for x in vals[1:]:
            keys = set(_distinct(x))
            acc = {k: e for k, e in acc.items() if k in keys}
        return list(acc.values())

    return fold(set_intersection, fs)


@operator("$setUnion")
def _set_union(args: Any, ctx: Ctx) -> Expr:
    fs = arg_list(args, ctx, 0, -1)

    def set_union(doc: Any, v: Vars) -> Any:
        vals = _arrays_or_null("$setUnion", fs, doc, v)
        if vals is None:
            return None
        acc: dict[Any, Any] = {}
        for x in vals:
            for k, e in _distinct(x).items():
                acc.setdefault(k, e)
        return list(acc.values())

    return fold(set_union, fs)


def _two_arrays(op: str, a: Any, b: Any) -> None:
    for which, x in (("First", a), ("Second", b)):
        if type(x) is not list:
            raise ExprError(op, f"both operands of {op} must be arrays. {which} argument is of type: {bson_type(x)}")


@operator("$setDifference")
def _set_difference(args: Any, ctx: Ctx) -> Expr:
    fa, fb = arg_list(args, ctx, 2)

    def set_difference(doc: Any, v: Vars) -> Any:
        a, b = fa(doc, v), fb(doc, v)
        if _nullish(a) or _nullish(b):
            return None
        _two_arrays("$setDifference", a, b)
        drop = set(_distinct(b))
        return [e for k, e in _distinct(a).items() if k not in drop]

    return fold(set_difference, (fa, fb))


@operator("$setIsSubset")
def _set_is_subset(args: Any, ctx: Ctx) -> Expr:
    fa, fb = arg_list(args, ctx, 2)

    def set_is_subset(doc: Any, v: Vars) -> Any:
        a, b = fa(doc, v), fb(doc, v)
        _two_arrays("$setIsSubset", a, b)
        return set(_distinct(a)) <= set(_distinct(b))

    return fold(set_is_subset, (fa, fb))


def _elements(op: str, test: Any) -> None:
    @operator(op)
    def compile_(args: Any, ctx: Ctx) -> Expr:
        (fa,) = arg_list(args, ctx, 1)

        def elements(doc: Any, v: Vars) -> Any:
            a = fa(doc, v)
            if type(a) is not list:
                raise ExprError(op, f"{op}'s argument must be an array, but is {bson_type(a)}")
            return test(truthy(x) for x in a)

        return fold(elements, (fa,))


_elements("$allElementsTrue", all)
_elements("$anyElementTrue", any)
