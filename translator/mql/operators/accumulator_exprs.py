"""Expression forms of the accumulators ($sum, $avg, $min, $max, $stdDevPop, $stdDevSamp,
$median, $percentile) and the array operators $firstN, $lastN, $maxN, $minN.

MongoDB's rule ($sum docs, "Use in Other Supported Stages"): with one operand that
resolves to an array the operator folds the array's elements; with one non-array
operand it folds that single value; with several operands it folds the operands and
does *not* descend into arrays among them. The fold itself is the ``$group``
accumulator's (init/add/final from :mod:`translator.accumulators`), so result types
(int -> long -> double, Decimal128 widening, NaN handling) are identical in both uses.
"""

from __future__ import annotations

from typing import Any

from bson import Decimal128, Int64

from translator.mql.expr import Ctx, Expr, ExprError, Vars, compile_expr, operator
from translator.mql.operators.arithmetic import fold
from translator.mql.operators.arrays import named_args
from translator.mql.values import MISSING, SortKey, bson_type


def _accumulator_fold(op: str, acc_arg: Any, ctx: Ctx) -> tuple[Any, Any, Any]:
    """(init, add, final) of the ``$group`` accumulator ``op`` (imported late: no cycle)."""
    from translator.accumulators import ACCUMULATORS

    spec = ACCUMULATORS[op](acc_arg, ctx)
    return spec.init, spec.add, spec.final


def _values(operands: list[Expr], doc: Any, v: Vars) -> list[Any]:
    """The values folded: a single array operand's elements, else the operands themselves."""
    if len(operands) == 1:
        x = operands[0](doc, v)
        return x if type(x) is list else [x]
    return [f(doc, v) for f in operands]


def _simple(op: str) -> None:
    @operator(op)
    def compile_(args: Any, ctx: Ctx) -> Expr:
        items = args if isinstance(args, list) else [args]
        operands = [compile_expr(x, ctx.at(i) if isinstance(args, list) else ctx) for i, x in enumerate(items)]
        init, add, final = _accumulator_fold(op, None, ctx)

        def acc_expr(doc: Any, v: Vars) -> Any:
            state = init()
            for x in _values(operands, doc, v):
                state = add(state, x)
            r = final(state)
            return None if r is MISSING else r

        return fold(acc_expr, operands)


for _op in ("$sum", "$avg", "$min", "$max", "$stdDevPop", "$stdDevSamp"):
    _simple(_op)


def _quantile(op: str, required: tuple[str, ...]) -> None:
    @operator(op)
    def compile_(args: Any, ctx: Ctx) -> Expr:
        d = named_args(args, ctx, op, required)
        inp = compile_expr(d["input"], ctx.at("input"))
        init, add, final = _accumulator_fold(op, {**d, "input": None}, ctx)

        def quantile(doc: Any, v: Vars) -> Any:
            x = inp(doc, v)
            state = init()
            for el in x if type(x) is list else [x]:
                state = add(state, el)
            return final(state)

        return fold(quantile, (inp,))


_quantile("$median", ("input", "method"))
_quantile("$percentile", ("input", "p", "method"))


# ---- $firstN / $lastN / $maxN / $minN (array forms) ------------------------------------


def n_value(op: str, n: Any) -> int:
    """``n`` of the N operators as MongoDB checks it: an integral number above 0 (the
    array forms here, and ``$group``'s ``n`` computed from the group ``_id``)."""
    t = type(n)
    if t is int or t is Int64 or (t is float and n.is_integer()):
        i = int(n)
    elif t is Decimal128 and n.to_decimal().is_finite() and n.to_decimal() == n.to_decimal().to_integral_value():
        i = int(n.to_decimal())
    else:
        raise ExprError(op, f"Value for 'n' must be of integral type, but found {'missing' if n is MISSING else repr(n)}")
    if i <= 0:
        raise ExprError(op, f"'n' must be greater than 0, found {i}")
    return i


def _n_operator(op: str, pick: Any) -> None:
    @operator(op)
    def compile_(args: Any, ctx: Ctx) -> Expr:
        d = named_args(args, ctx, op, ("n", "input"))
        fn = compile_expr(d["n"], ctx.at("n"))
        fi = compile_expr(d["input"], ctx.at("input"))

        def n_op(doc: Any, v: Vars) -> Any:
            n = n_value(op, fn(doc, v))
            a = fi(doc, v)
            if type(a) is not list:
                if a is None or a is MISSING:
                    return None
                raise ExprError(op, f"{op} requires an 'input' argument that is an array, found: {bson_type(a)}")
            return pick(a, n)

        return fold(n_op, (fn, fi))


def _top(a: list[Any], n: int, reverse: bool) -> list[Any]:
    vals = [x for x in a if x is not None and x is not MISSING]
    return sorted(vals, key=SortKey, reverse=reverse)[:n]


_n_operator("$firstN", lambda a, n: a[:n])
_n_operator("$lastN", lambda a, n: a[-n:])
_n_operator("$maxN", lambda a, n: _top(a, n, True))
_n_operator("$minN", lambda a, n: _top(a, n, False))
