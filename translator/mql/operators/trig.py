"""MQL trigonometry operators ($sin ... $atan2, hyperbolic ones, degree/radian conversion).

MongoDB docs ("Trigonometry Expression Operators"): null/missing gives null, NaN gives
NaN, a Decimal128 input gives a Decimal128 result and any other number a double. Inputs
outside a function's domain are errors (DLQ entries): "cannot apply $acos to 2, value
must be in [-1,1]". Decimal results are computed in double precision and widened
(15 significant digits), not with 34-digit decimal arithmetic.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from translator.mql.expr import Ctx, Expr, ExprError, Vars, operator
from translator.mql.operators.arithmetic import (
    DECIMAL,
    _need_number,
    _num_str,
    _unary,
    arg_list,
    as_float,
    double_to_decimal,
    fold,
    mk_decimal,
)
from translator.mql.values import MISSING

_INF = math.inf

# (function, lower bound, upper bound, bounds closed?) -- a domain check per operator.
_Domain = tuple[float, float, bool] | None
_FUNCS: dict[str, tuple[Callable[[float], float], _Domain]] = {
    "$sin": (math.sin, (-_INF, _INF, False)),
    "$cos": (math.cos, (-_INF, _INF, False)),
    "$tan": (math.tan, (-_INF, _INF, False)),
    "$asin": (math.asin, (-1.0, 1.0, True)),
    "$acos": (math.acos, (-1.0, 1.0, True)),
    "$atan": (math.atan, None),
    "$sinh": (math.sinh, None),
    "$cosh": (math.cosh, None),
    "$tanh": (math.tanh, None),
    "$asinh": (math.asinh, None),
    "$acosh": (math.acosh, (1.0, _INF, True)),
    "$atanh": (math.atanh, (-1.0, 1.0, True)),
    "$degreesToRadians": (math.radians, None),
    "$radiansToDegrees": (math.degrees, None),
}


def _bound(x: Any) -> str:
    """A number as the server prints it in these messages (infinities as ``inf``)."""
    f = as_float(x)
    return "inf" if f == _INF else "-inf" if f == -_INF else _num_str(x)


def _check(op: str, x: Any, fx: float, domain: _Domain) -> None:
    if domain is None or fx != fx:
        return
    lo, hi, closed = domain
    ok = lo <= fx <= hi if closed else lo < fx < hi
    if not ok:
        lb, rb = ("[", "]") if closed else ("(", ")")
        if hi == _INF and closed:
            rb = ")"
        raise ExprError(
            op, f"cannot apply {op} to {_bound(x)}, value must be in {lb}{_bound(lo)},{_bound(hi)}{rb}"
        )


def _result(k: int, r: float) -> Any:
    return mk_decimal(double_to_decimal(r)) if k == DECIMAL else r


def _make(op: str, fn: Callable[[float], float], domain: _Domain) -> None:
    def impl(x: Any) -> Any:
        k = _need_number(op, x)
        fx = as_float(x)
        _check(op, x, fx, domain)
        if fx != fx:
            return _result(k, fx)
        try:
            r = fn(fx)
        except OverflowError:
            r = math.copysign(_INF, fx) if op != "$cosh" else _INF
        return _result(k, r)

    @operator(op)
    def compile_(args: Any, ctx: Ctx) -> Expr:
        return _unary(ctx, args, impl)


for _op, (_fn, _dom) in _FUNCS.items():
    _make(_op, _fn, _dom)


@operator("$atan2")
def _atan2(args: Any, ctx: Ctx) -> Expr:
    a, b = arg_list(args, ctx, 2)

    def atan2(doc: Any, v: Vars) -> Any:
        y, x = a(doc, v), b(doc, v)
        if y is None or y is MISSING or x is None or x is MISSING:
            return None
        ky, kx = _need_number("$atan2", y), _need_number("$atan2", x)
        return _result(max(ky, kx), math.atan2(as_float(y), as_float(x)))

    return fold(atan2, (a, b))

