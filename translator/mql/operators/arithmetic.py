"""MQL arithmetic operators ($add ... $log10), with MongoDB's numeric type rules.

Numeric kinds widen int -> long -> double -> decimal; the widest input decides the
result type, and integral overflow promotes int -> long -> double (MongoDB docs,
"agg-expression-order-of-return-behavior"). A Python ``int`` in int32 range is a
BSON int, a larger one or an ``Int64`` is a long; ``bool`` is never a number.
Null or missing operands give null. Runtime failures raise :class:`ExprError`
with MongoDB's wording; arity mistakes are compile errors.

The two-operand forms of ``$add``/``$subtract``/``$multiply``/``$divide`` compile to a
:class:`~translator.mql.expr.Binary` node whose ``general(x, y)`` is the full rule on
evaluated operands: :mod:`translator.codegen` inlines the same int/double fast path as the closure
and calls ``general`` for everything else.

The small helpers at the top (:func:`arg_list`, :func:`fold`, :func:`num_kind`...)
are shared by the other operator families.
"""

from __future__ import annotations

import datetime as _dt
import decimal
import math
from collections.abc import Callable, Sequence
from typing import Any

from bson import Decimal128, Int64

from translator.mql.expr import (
    EMPTY_VARS,
    Ctx,
    Expr,
    ExprError,
    Vars,
    binary,
    compile_expr,
    const_value,
    literal,
    operator,
)
from translator.mql.values import (
    DECIMAL128_CTX,
    INT32_MAX,
    INT32_MIN,
    INT64_MAX,
    INT64_MIN,
    MISSING,
    bson_type,
    datetime_to_ms,
    ms_to_datetime,
)

# ---- shared helpers ------------------------------------------------------------------

INT, LONG, DOUBLE, DECIMAL = 0, 1, 2, 3

# Arithmetic context: Decimal128 precision/exponent range, but NaN/Infinity results
# instead of exceptions (MongoDB returns NaN for Infinity - Infinity), and clamped
# like bson's own context so every result converts to Decimal128 exactly.
DCTX = DECIMAL128_CTX.copy()
DCTX.traps[decimal.InvalidOperation] = False
DCTX.traps[decimal.DivisionByZero] = False
DCTX.clamp = 1

_INF = float("inf")
_DEC_ZERO = decimal.Decimal(0)


def arg_list(args: Any, ctx: Ctx, lo: int, hi: int | None = None) -> list[Expr]:
    """Compile an operator's operand list; a non-array operand is one argument (MongoDB).

    ``hi=None`` means the same as ``lo`` (exact arity); ``hi=-1`` means unbounded.
    """
    items = args if isinstance(args, list) else [args]
    n = len(items)
    op = ctx.path.rsplit(".", 1)[-1]
    hi_ = lo if hi is None else hi
    if hi_ == lo and n != lo:
        raise ctx.error(f"Expression {op} takes exactly {lo} arguments. {n} were passed in.")
    if n < lo:
        raise ctx.error(f"Expression {op} takes at least {lo} arguments, and {n} were passed in.")
    if hi_ >= 0 and n > hi_:
        raise ctx.error(f"Expression {op} takes at most {hi_} arguments, and {n} were passed in.")
    return [compile_expr(x, ctx.at(i)) for i, x in enumerate(items)]


def fold(fn: Expr, parts: Sequence[Expr]) -> Expr:
    """Evaluate ``fn`` once at compile time when all its operands are constant.

    A constant expression that fails (``{$divide: [1, 0]}``) is left to fail per
    document, so it reaches the DLQ like any other runtime error (ASP).
    """
    for p in parts:
        if const_value(p) is MISSING:
            return fn
    try:
        value = fn(None, EMPTY_VARS)
    except ExprError:
        return fn
    if value is MISSING:
        return fn
    return literal(value)


def num_kind(v: Any) -> int:
    """INT/LONG/DOUBLE/DECIMAL for a BSON number, -1 for anything else (bool included)."""
    t = type(v)
    if t is int:
        return INT if INT32_MIN <= v <= INT32_MAX else LONG
    if t is float:
        return DOUBLE
    if t is Int64:
        return LONG
    if t is Decimal128:
        return DECIMAL
    return -1


def int_result(r: int, kind: int) -> Any:
    """An exact integral result typed by the widest input kind, promoting on overflow."""
    if kind == INT and INT32_MIN <= r <= INT32_MAX:
        return r
    if INT64_MIN <= r <= INT64_MAX:
        return Int64(r)
    return float(r)


def double_to_decimal(f: float) -> decimal.Decimal:
    """A double as MongoDB widens it to decimal: rounded to 15 significant digits.

    ($convert docs: ``2.5`` -> ``Decimal128("2.50000000000000")``.)
    """
    if f != f:
        return decimal.Decimal("NaN")
    if f == _INF:
        return decimal.Decimal("Infinity")
    if f == -_INF:
        return decimal.Decimal("-Infinity")
    if f == 0:
        return decimal.Decimal("-0") if math.copysign(1.0, f) < 0 else _DEC_ZERO
    return decimal.Decimal(f"{f:.14e}")


def as_decimal(v: Any) -> decimal.Decimal:
    """Any BSON number as a ``decimal.Decimal`` for decimal arithmetic."""
    t = type(v)
    if t is Decimal128:
        return v.to_decimal()
    if t is float:
        return double_to_decimal(v)
    return decimal.Decimal(int(v))


def as_float(v: Any) -> float:
    if type(v) is Decimal128:
        return float(v.to_decimal())
    return float(v)


def mk_decimal(d: decimal.Decimal) -> Decimal128:
    return Decimal128(DCTX.create_decimal(d))


def _is_null(v: Any) -> bool:
    return v is None or v is MISSING


def _round_half_away(x: float) -> int:
    """C ``llround``: halves round away from zero (MongoDB rounds date offsets so)."""
    if x != x or x in (_INF, -_INF):
        raise ValueError("non-finite")
    r = math.floor(abs(x) + 0.5)
    return int(r if x >= 0 else -r)


def _ms_of_number(v: Any, op: str) -> int:
    """A numeric millisecond offset as added to a date (doubles rounded, not truncated)."""
    t = type(v)
    try:
        if t is float:
            return _round_half_away(v)
        if t is Decimal128:
            d = v.to_decimal()
            if not d.is_finite():
                raise ValueError("non-finite")
            return int(d.to_integral_value(rounding=decimal.ROUND_HALF_EVEN))
    except ValueError:
        raise ExprError(op, f"{op} resulted in a non-finite date offset: {v}") from None
    return int(v)


def _date_from_ms(ms: int, op: str) -> _dt.datetime:
    try:
        return ms_to_datetime(ms)
    except (OverflowError, ValueError):
        raise ExprError(op, f"{op} resulted in a date out of the supported range") from None


def _unary(ctx: Ctx, args: Any, impl: Callable[[Any], Any]) -> Expr:
    """Compile a one-operand numeric operator: null/missing in, null out."""
    (a,) = arg_list(args, ctx, 1)

    def unary(doc: Any, v: Vars) -> Any:
        x = a(doc, v)
        if x is None or x is MISSING:
            return None
        return impl(x)

    return fold(unary, (a,))


def _need_number(op: str, x: Any) -> int:
    k = num_kind(x)
    if k < 0:
        raise ExprError(op, f"{op} only supports numeric types, not {bson_type(x)}")
    return k


# ---- $add ----------------------------------------------------------------------------


def _add_numbers(x: Any, y: Any) -> Any:
    """Sum of two numbers with MongoDB's result typing."""
    kx, ky = num_kind(x), num_kind(y)
    k = kx if kx > ky else ky
    if k == DOUBLE:
        return float(x) + float(y)
    if k == DECIMAL:
        return mk_decimal(DCTX.add(as_decimal(x), as_decimal(y)))
    return int_result(int(x) + int(y), k)


def add_values(vals: Sequence[Any]) -> Any:
    """``$add`` over evaluated operands: numbers, or numbers plus one date.

    Left-associative like MongoDB: the numeric total before the date is rounded to
    whole milliseconds when the date is reached, and each later number is rounded
    as it is added ($add docs, "Add Non-Integer Values to a Date").
    """
    total: Any = 0
    date_ms: int | None = None
    for x in vals:
        if num_kind(x) >= 0:
            if date_ms is None:
                total = _add_numbers(total, x)
            else:
                date_ms += _ms_of_number(x, "$add")
            continue
        if x is None or x is MISSING:
            return None
        if isinstance(x, _dt.datetime):
            if date_ms is not None:
                raise ExprError("$add", "only one date allowed in an $add expression")
            date_ms = datetime_to_ms(x) + _ms_of_number(total, "$add")
            continue
        raise ExprError("$add", f"$add only supports numeric or date types, not {bson_type(x)}")
    if date_ms is not None:
        return _date_from_ms(date_ms, "$add")
    return total


def _add_pair(x: Any, y: Any) -> Any:
    return add_values((x, y))


@operator("$add")
def _add(args: Any, ctx: Ctx) -> Expr:
    parts = arg_list(args, ctx, 0, -1)
    if len(parts) == 2:
        a, b = parts

        def add2(doc: Any, v: Vars) -> Any:
            # Fast path: plain ints (int32 in and out) and doubles; an int with a double
            # is float(x) + float(y) in Python too. Bool, Int64, Decimal128, dates, null
            # and anything that would overflow int32 take the general path.
            x = a(doc, v)
            y = b(doc, v)
            tx, ty = type(x), type(y)
            if tx is int:
                if ty is int:
                    r = x + y
                    if INT32_MIN <= r <= INT32_MAX and INT32_MIN <= x <= INT32_MAX and INT32_MIN <= y <= INT32_MAX:
                        return r
                elif ty is float:
                    return x + y
            elif tx is float and (ty is float or ty is int):
                return x + y
            return add_values((x, y))

        return fold(binary("$add", a, b, _add_pair, add2), parts)

    def add(doc: Any, v: Vars) -> Any:
        vals = [f(doc, v) for f in parts]
        acc: Any = 0
        for x in vals:  # fast path: only int32 ints and doubles
            t = type(x)
            if (t is int and INT32_MIN <= x <= INT32_MAX) or t is float:
                acc += x
            else:
                return add_values(vals)
        return acc if type(acc) is float else int_result(acc, INT)

    return fold(add, parts)


# ---- $subtract -----------------------------------------------------------------------


def subtract_values(x: Any, y: Any) -> Any:
    kx, ky = num_kind(x), num_kind(y)
    if kx >= 0 and ky >= 0:
        k = kx if kx > ky else ky
        if k == DOUBLE:
            return float(x) - float(y)
        if k == DECIMAL:
            return mk_decimal(DCTX.subtract(as_decimal(x), as_decimal(y)))
        return int_result(int(x) - int(y), k)
    if _is_null(x) or _is_null(y):
        return None
    if isinstance(x, _dt.datetime):
        if isinstance(y, _dt.datetime):
            return Int64(datetime_to_ms(x) - datetime_to_ms(y))
        if ky >= 0:
            return _date_from_ms(datetime_to_ms(x) - _ms_of_number(y, "$subtract"), "$subtract")
        raise ExprError("$subtract", f"can't $subtract {bson_type(y)} from date")
    raise ExprError("$subtract", f"can't $subtract {bson_type(y)} from {bson_type(x)}")


@operator("$subtract")
def _subtract(args: Any, ctx: Ctx) -> Expr:
    a, b = arg_list(args, ctx, 2)

    def subtract(doc: Any, v: Vars) -> Any:
        x = a(doc, v)
        y = b(doc, v)
        tx, ty = type(x), type(y)
        if tx is int:
            if ty is int:
                r = x - y
                if INT32_MIN <= r <= INT32_MAX and INT32_MIN <= x <= INT32_MAX and INT32_MIN <= y <= INT32_MAX:
                    return r
            elif ty is float:
                return x - y
        elif tx is float and (ty is float or ty is int):
            return x - y
        return subtract_values(x, y)

    return fold(binary("$subtract", a, b, subtract_values, subtract), (a, b))


# ---- $multiply -----------------------------------------------------------------------


def multiply_values(vals: Sequence[Any]) -> Any:
    kind = INT
    for x in vals:
        k = num_kind(x)
        if k < 0:
            if x is None or x is MISSING:
                return None
            raise ExprError("$multiply", f"$multiply only supports numeric types, not {bson_type(x)}")
        if k > kind:
            kind = k
    if kind == DOUBLE:
        fr = 1.0
        for x in vals:
            fr *= float(x)
        return fr
    if kind == DECIMAL:
        d = decimal.Decimal(1)
        for x in vals:
            d = DCTX.multiply(d, as_decimal(x))
        return mk_decimal(d)
    r = 1
    for x in vals:
        r *= int(x)
    return int_result(r, kind)


def _multiply_pair(x: Any, y: Any) -> Any:
    return multiply_values((x, y))


@operator("$multiply")
def _multiply(args: Any, ctx: Ctx) -> Expr:
    parts = arg_list(args, ctx, 0, -1)
    if len(parts) == 2:
        a, b = parts

        def multiply2(doc: Any, v: Vars) -> Any:
            # Same fast path as add2: int32 x int32 within int32, or any double involved.
            x = a(doc, v)
            y = b(doc, v)
            tx, ty = type(x), type(y)
            if tx is int:
                if ty is int:
                    if INT32_MIN <= x <= INT32_MAX and INT32_MIN <= y <= INT32_MAX:
                        r = x * y
                        if INT32_MIN <= r <= INT32_MAX:
                            return r
                elif ty is float:
                    return x * y
            elif tx is float and (ty is float or ty is int):
                return x * y
            return multiply_values((x, y))

        return fold(binary("$multiply", a, b, _multiply_pair, multiply2), parts)

    def multiply(doc: Any, v: Vars) -> Any:
        return multiply_values([f(doc, v) for f in parts])

    return fold(multiply, parts)


# ---- $divide / $mod ------------------------------------------------------------------


def divide_values(x: Any, y: Any) -> Any:
    """Always a double, or a decimal when either operand is decimal ($divide docs)."""
    kx, ky = num_kind(x), num_kind(y)
    if kx >= 0 and ky >= 0:
        if kx == DECIMAL or ky == DECIMAL:
            dy = as_decimal(y)
            if dy == 0:
                raise ExprError("$divide", "can't $divide by zero")
            return mk_decimal(DCTX.divide(as_decimal(x), dy))
        fy = float(y)
        if fy == 0:
            raise ExprError("$divide", "can't $divide by zero")
        return float(x) / fy
    if _is_null(x) or _is_null(y):
        return None
    raise ExprError(
        "$divide", f"$divide only supports numeric types, not {bson_type(x)} and {bson_type(y)}"
    )


@operator("$divide")
def _divide(args: Any, ctx: Ctx) -> Expr:
    a, b = arg_list(args, ctx, 2)

    def divide(doc: Any, v: Vars) -> Any:
        # Fast path for int/double operands and a non-zero divisor: float(x) / float(y),
        # as the general path computes it (Python converts an int operand of a float
        # division the same way; ``float(x)`` keeps int / int from dividing exactly).
        # Zero, bool, Int64, Decimal128, null and non-numbers take the general path,
        # which raises MongoDB's error text.
        x = a(doc, v)
        y = b(doc, v)
        tx, ty = type(x), type(y)
        if tx is float:
            if (ty is float or ty is int) and y:
                return x / y
        elif tx is int and (ty is int or ty is float) and y:
            return float(x) / y
        return divide_values(x, y)

    return fold(binary("$divide", a, b, divide_values, divide), (a, b))


def mod_values(x: Any, y: Any) -> Any:
    """Remainder with the dividend's sign (C ``fmod``), typed like MongoDB's $mod.

    An integral double divisor with an integral dividend keeps the integral type.
    """
    kx, ky = num_kind(x), num_kind(y)
    if kx >= 0 and ky >= 0:
        if kx == DECIMAL or ky == DECIMAL:
            dy = as_decimal(y)
            if dy == 0:
                raise ExprError("$mod", "can't $mod by zero")
            return mk_decimal(DCTX.remainder(as_decimal(x), dy))
        fy = float(y)
        if fy == 0:
            raise ExprError("$mod", "can't $mod by zero")
        if kx == DOUBLE or (ky == DOUBLE and not fy.is_integer()):
            return math.fmod(float(x), fy)
        ix, iy = int(x), int(y)
        r = abs(ix) % abs(iy)
        if ix < 0:
            r = -r
        return int_result(r, LONG if LONG in (kx, ky) else INT)
    if _is_null(x) or _is_null(y):
        return None
    raise ExprError(
        "$mod", f"$mod only supports numeric types, not {bson_type(x)} and {bson_type(y)}"
    )


@operator("$mod")
def _mod(args: Any, ctx: Ctx) -> Expr:
    a, b = arg_list(args, ctx, 2)

    def mod(doc: Any, v: Vars) -> Any:
        return mod_values(a(doc, v), b(doc, v))

    return fold(mod, (a, b))


# ---- $abs / $ceil / $floor -----------------------------------------------------------


def _abs_impl(x: Any) -> Any:
    k = _need_number("$abs", x)
    if k == DOUBLE:
        return abs(x)
    if k == DECIMAL:
        return mk_decimal(abs(x.to_decimal()))
    r = abs(int(x))
    if r > INT64_MAX:
        raise ExprError("$abs", "can't take $abs of long long min")
    return int_result(r, k)


def _integral(op: str, rounding: str, fn: Callable[[float], float]) -> Callable[[Any], Any]:
    def impl(x: Any) -> Any:
        k = _need_number(op, x)
        if k == DOUBLE:
            if x != x or x in (_INF, -_INF):
                return x
            return float(fn(x))
        if k == DECIMAL:
            d = x.to_decimal()
            if not d.is_finite():
                return x
            return mk_decimal(d.to_integral_value(rounding=rounding))
        return x

    return impl


_ceil_impl = _integral("$ceil", decimal.ROUND_CEILING, math.ceil)
_floor_impl = _integral("$floor", decimal.ROUND_FLOOR, math.floor)


@operator("$abs")
def _abs(args: Any, ctx: Ctx) -> Expr:
    return _unary(ctx, args, _abs_impl)


@operator("$ceil")
def _ceil(args: Any, ctx: Ctx) -> Expr:
    return _unary(ctx, args, _ceil_impl)


@operator("$floor")
def _floor(args: Any, ctx: Ctx) -> Expr:
    return _unary(ctx, args, _floor_impl)


# ---- $round / $trunc -----------------------------------------------------------------


def round_or_trunc(op: str, x: Any, place: Any, rounding: str) -> Any:
    """$round / $trunc: the result keeps the input's type ($round docs).

    Doubles are rounded through a 34-digit decimal, halves to even for $round.
    """
    if x is None or x is MISSING:
        return None
    k = num_kind(x)
    if k < 0:
        raise ExprError(op, f"{op} only supports numeric types, not {bson_type(x)}")
    if type(place) is not int:
        if place is None or place is MISSING:
            return None
        pk = num_kind(place)
        if pk < 0 or not (float(as_float(place))).is_integer():
            raise ExprError(
                op, f"{op} requires \"place\" argument to be an integer between -20 and 100"
            )
        place = int(as_float(place))
    if not -20 < place < 100:
        raise ExprError(op, f"{op} requires \"place\" argument to be an integer between -20 and 100")
    if k <= LONG and place >= 0:
        return x
    if k == DOUBLE:
        if x != x or x in (_INF, -_INF):
            return x
        if rounding == decimal.ROUND_HALF_EVEN:
            # Python rounds the exact binary value half-to-even; a double is never
            # within 1e-34 of a decimal tie unless it is the tie, so this equals
            # MongoDB's round-through-34-digit-decimal result.
            return round(x, place)
        d = DCTX.create_decimal_from_float(x)
    elif k == DECIMAL:
        d = x.to_decimal()
        if not d.is_finite():
            return x
    else:
        d = decimal.Decimal(int(x))
    q = decimal.Decimal(1).scaleb(-place)
    try:
        r = d.quantize(q, rounding=rounding, context=DCTX)
    except decimal.InvalidOperation:
        r = d  # more digits than 34 would be needed: already exact at that place
    if r.is_nan():
        r = d
    if k == DOUBLE:
        return float(r)
    if k == DECIMAL:
        return mk_decimal(r)
    ri = int(r)
    if INT64_MIN <= ri <= INT64_MAX:
        return int_result(ri, k)
    raise ExprError(op, f"{op} overflowed while rounding {x} to place {place}")


def _round_like(op: str, rounding: str) -> Callable[[Any, Ctx], Expr]:
    def compile_(args: Any, ctx: Ctx) -> Expr:
        parts = arg_list(args, ctx, 1, 2)
        a = parts[0]
        if len(parts) == 1:

            def one(doc: Any, v: Vars) -> Any:
                return round_or_trunc(op, a(doc, v), 0, rounding)

            return fold(one, parts)
        b = parts[1]

        def two(doc: Any, v: Vars) -> Any:
            return round_or_trunc(op, a(doc, v), b(doc, v), rounding)

        return fold(two, parts)

    return compile_


operator("$round")(_round_like("$round", decimal.ROUND_HALF_EVEN))
operator("$trunc")(_round_like("$trunc", decimal.ROUND_DOWN))


# ---- $pow / $sqrt / $exp / $ln / $log / $log10 ---------------------------------------


def pow_values(base: Any, exp: Any) -> Any:
    kb, ke = num_kind(base), num_kind(exp)
    if kb < 0 or ke < 0:
        if _is_null(base) or _is_null(exp):
            return None
        if kb < 0:
            raise ExprError("$pow", f"$pow's base must be numeric, not {bson_type(base)}")
        raise ExprError("$pow", f"$pow's exponent must be numeric, not {bson_type(exp)}")
    if kb == DECIMAL or ke == DECIMAL:
        db, de = as_decimal(base), as_decimal(exp)
        if db == 0 and de < 0:
            return mk_decimal(decimal.Decimal("Infinity"))
        return mk_decimal(DCTX.power(db, de))
    if kb == DOUBLE or ke == DOUBLE:
        try:
            return math.pow(float(base), float(exp))
        except OverflowError:
            return _INF if float(base) > 0 or float(exp) % 2 == 0 else -_INF
        except ValueError:  # negative base, fractional exponent / 0 ** negative
            if float(base) == 0:
                return _INF
            return float("nan")
    ib, ie = int(base), int(exp)
    k = kb if kb > ke else ke
    if ie < 0:
        if ib == 0:
            raise ExprError("$pow", "$pow cannot take a base of 0 and a negative exponent")
        if ib == 1:
            return int_result(1, k)
        if ib == -1:
            return int_result(1 if ie % 2 == 0 else -1, k)
        return math.pow(ib, ie)
    if ie > 63 and abs(ib) > 1:  # beyond any long: a double, without a huge power
        try:
            return math.pow(ib, ie)
        except OverflowError:
            return _INF if ib > 0 or ie % 2 == 0 else -_INF
    return int_result(ib**ie, k)


@operator("$pow")
def _pow(args: Any, ctx: Ctx) -> Expr:
    a, b = arg_list(args, ctx, 2)

    def pow_(doc: Any, v: Vars) -> Any:
        return pow_values(a(doc, v), b(doc, v))

    return fold(pow_, (a, b))


def _float_or_dec(
    op: str,
    ffn: Callable[[float], float],
    dfn: Callable[[decimal.Decimal], decimal.Decimal],
    domain: Callable[[Any], str | None],
) -> Callable[[Any], Any]:
    """A double-valued math function (decimal stays decimal), with a domain check."""

    def impl(x: Any) -> Any:
        k = _need_number(op, x)
        msg = domain(x)
        if msg is not None:
            raise ExprError(op, msg)
        if k == DECIMAL:
            return mk_decimal(dfn(x.to_decimal()))
        try:
            return ffn(float(x))
        except OverflowError:
            return _INF

    return impl


def _num_str(x: Any) -> str:
    if type(x) is float:
        return format_double(x)
    return str(x)


def format_double(f: float) -> str:
    """A double as text: integral values without ".0", otherwise the shortest repr."""
    if f != f:
        return "NaN"
    if f == _INF:
        return "Infinity"
    if f == -_INF:
        return "-Infinity"
    if f.is_integer() and abs(f) < 1e15:
        return str(int(f))
    return repr(f)


def _positive(op: str) -> Callable[[Any], str | None]:
    def check(x: Any) -> str | None:
        fx = as_float(x)
        if fx > 0 or fx != fx:
            return None
        return f"{op}'s argument must be a positive number, but is {_num_str(x)}"

    return check


def _non_negative(x: Any) -> str | None:
    fx = as_float(x)
    if fx >= 0 or fx != fx:
        return None
    return "$sqrt's argument must be greater than or equal to 0"


def _no_domain(x: Any) -> str | None:
    return None


def _exp_float(x: float) -> float:
    return math.exp(x)


_sqrt_impl = _float_or_dec("$sqrt", math.sqrt, DCTX.sqrt, _non_negative)
_exp_impl = _float_or_dec("$exp", _exp_float, DCTX.exp, _no_domain)
_ln_impl = _float_or_dec("$ln", math.log, DCTX.ln, _positive("$ln"))
_log10_impl = _float_or_dec("$log10", math.log10, DCTX.log10, _positive("$log10"))


@operator("$sqrt")
def _sqrt(args: Any, ctx: Ctx) -> Expr:
    return _unary(ctx, args, _sqrt_impl)


@operator("$exp")
def _exp(args: Any, ctx: Ctx) -> Expr:
    return _unary(ctx, args, _exp_impl)


@operator("$ln")
def _ln(args: Any, ctx: Ctx) -> Expr:
    return _unary(ctx, args, _ln_impl)


@operator("$log10")
def _log10(args: Any, ctx: Ctx) -> Expr:
    return _unary(ctx, args, _log10_impl)


def log_values(x: Any, base: Any) -> Any:
    kx, kb = num_kind(x), num_kind(base)
    if kx < 0 or kb < 0:
        if _is_null(x) or _is_null(base):
            return None
        if kx < 0:
            raise ExprError("$log", f"$log's argument must be numeric, not {bson_type(x)}")
        raise ExprError("$log", f"$log's base must be numeric, not {bson_type(base)}")
    fx, fb = as_float(x), as_float(base)
    if not (fx > 0 or fx != fx):
        raise ExprError("$log", f"$log's argument must be a positive number, but is {_num_str(x)}")
    if not ((fb > 0 and fb != 1) or fb != fb):
        raise ExprError(
            "$log", f"$log's base must be a positive number not equal to 1, but is {_num_str(base)}"
        )
    if kx == DECIMAL or kb == DECIMAL:
        dx, db = as_decimal(x), as_decimal(base)
        return mk_decimal(DCTX.divide(DCTX.ln(dx), DCTX.ln(db)))
    return math.log(fx) / math.log(fb)


@operator("$log")
def _log(args: Any, ctx: Ctx) -> Expr:
    a, b = arg_list(args, ctx, 2)

    def log(doc: Any, v: Vars) -> Any:
        return log_values(a(doc, v), b(doc, v))

    return fold(log, (a, b))
