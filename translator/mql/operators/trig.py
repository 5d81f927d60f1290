"""MQL trigonometry operators ($sin ... $atan2, hyperbolic ones, degree/radian conversion).

MongoDB docs ("Trigonometry Expression Operators"): null/missing gives null, NaN gives
NaN, a Decimal128 input gives a Decimal128 result and any other number a double. Inputs
outside a function's domain are errors (DLQ entries): "cannot apply $acos to 2, value
must be in [-1,1]". Decimal128 inputs are computed with mpmath at 50 significant digits
and rounded once to Decimal128's 34 (the manual's ``$sin`` example gives
``0.8000000000000000000000000000000000``, not a widened double).
"""

from __future__ import annotations

import decimal
import functools
import math
from collections.abc import Callable
from typing import Any

from bson import Decimal128

from translator.mql.expr import Ctx, Expr, ExprError, Vars, operator
from translator.mql.operators.arithmetic import (
    DCTX,
    DECIMAL,
    _need_number,
    _num_str,
    _unary,
    arg_list,
    as_decimal,
    as_float,
    double_to_decimal,
    fold,
    mk_decimal,
)
from translator.mql.values import MISSING

_INF = math.inf

# (function, lower bound, upper bound, bounds closed?) -- a domain check per operator.
_Domain = tuple[float, float, bool] | None


@functools.cache
def _mp() -> Any:
    """mpmath's context at 50 digits, made on first use: importing mpmath is about a
    tenth of a second of every processor's start-up, and only Decimal128 inputs need it."""
    import mpmath

    ctx = mpmath.MPContext()
    ctx.dps = 50
    return ctx


# The name of mpmath's version of each function, for Decimal128 inputs.
_MP_FUNCS: dict[str, str] = {
    op: op[1:] for op in ("$sin", "$cos", "$tan", "$asin", "$acos", "$atan", "$sinh", "$cosh", "$tanh", "$asinh", "$acosh", "$atanh")
}

# Degree/radian conversion of a Decimal128 is one Decimal128 multiplication by the
# factor rounded to 34 digits, as the server does: the manual's $atan2 example gives
# 53.13010235415597870314438744090658 degrees, one unit below the correctly rounded angle.
_DEC_FACTORS = {
    "$degreesToRadians": decimal.Decimal("0.01745329251994329576923690768488613"),
    "$radiansToDegrees": decimal.Decimal("57.29577951308232087679815481410517"),
}

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
    """A number as the server prints it in these messages (double infinities as ``inf``)."""
    if isinstance(x, Decimal128):
        return str(x)
    f = as_float(x)
    return "inf" if f == _INF else "-inf" if f == -_INF else _num_str(x)


def _check(op: str, x: Any, fx: float | decimal.Decimal, domain: _Domain) -> None:
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


def _decimal_result(r: Any) -> Any:
    """An mpmath value rounded once to Decimal128 (34 significant digits)."""
    mp = _mp()
    if mp.isnan(r) or mp.isinf(r) or r == 0:
        return mk_decimal(decimal.Decimal(str(r).replace("+inf", "Infinity").replace("-inf", "-Infinity")).normalize())
    return mk_decimal(decimal.Decimal(mp.nstr(r, 40, strip_zeros=False, min_fixed=-mp.inf, max_fixed=mp.inf)))


def _mpf(x: Any) -> Any:
    d = x if isinstance(x, decimal.Decimal) else as_decimal(x)
    if d.is_infinite():
        return _mp().inf if d > 0 else -_mp().inf
    return _mp().mpf(str(d))


def _decimal_apply(fn: Callable[..., Any], *xs: Any) -> Any:
    return _decimal_result(fn(*(_mpf(x) for x in xs)))


def _make(op: str, fn: Callable[[float], float], domain: _Domain) -> None:
    mp_name = _MP_FUNCS.get(op)
    factor = _DEC_FACTORS.get(op, decimal.Decimal(1))

    def impl(x: Any) -> Any:
        k = _need_number(op, x)
        if k == DECIMAL:
            d = x.to_decimal()
            _check(op, x, d, domain)
            if d.is_nan():
                return mk_decimal(d)
            if mp_name is None:
                return mk_decimal(DCTX.multiply(d, factor))
            return _decimal_apply(getattr(_mp(), mp_name), x)
        fx = as_float(x)
        _check(op, x, fx, domain)
        if fx != fx:
            return fx
        try:
            return fn(fx)
        except OverflowError:
            return math.copysign(_INF, fx) if op != "$cosh" else _INF

    @operator(op)
    def compile_(args: Any, ctx: Ctx) -> Expr:
        return _unary(ctx, args, impl)


for _op, (_fn, _dom) in _FUNCS.items():
    _make(_op, _fn, _dom)


def _decimal_atan2(y: decimal.Decimal, x: decimal.Decimal) -> Any:
    """atan2 as the server computes it for Decimal128: atan of the rounded quotient y/x,
    moved to the right quadrant (the manual's example: 53.13010235415597870314438744090658
    degrees for atan2(4, 3), the same as atan(4/3))."""
    if x == 0 or y.is_infinite() or x.is_infinite():
        return _decimal_apply(_mp().atan2, y, x)
    mp = _mp()
    r = mp.atan(_mpf(DCTX.divide(y, x)))
    if x < 0:
        r = r + mp.pi if y >= 0 else r - mp.pi
    return _decimal_result(r)


@operator("$atan2")
def _atan2(args: Any, ctx: Ctx) -> Expr:
    a, b = arg_list(args, ctx, 2)

    def atan2(doc: Any, v: Vars) -> Any:
        y, x = a(doc, v), b(doc, v)
        if y is None or y is MISSING or x is None or x is MISSING:
            return None
        ky, kx = _need_number("$atan2", y), _need_number("$atan2", x)
        if max(ky, kx) == DECIMAL:
            if as_decimal(y).is_nan() or as_decimal(x).is_nan():
                return mk_decimal(decimal.Decimal("NaN"))
            return _decimal_atan2(as_decimal(y), as_decimal(x))
        return math.atan2(as_float(y), as_float(x))

    return fold(atan2, (a, b))

