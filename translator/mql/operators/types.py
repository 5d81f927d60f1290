"""MQL type expression operators: $type, $isNumber, $convert and the $toX shorthands.

The conversion rules follow MongoDB's ``$convert`` tables: e.g. a double converts to
int by truncation (and must fit), a string converts to int only when it is a base-10
integer, ``int`` -> ``date`` is unsupported while ``long`` -> ``date`` is allowed,
every non-null value converts to bool (numbers by value), and a double widens to a
decimal with 15 significant digits. Each target has one converter function in
:data:`CONVERTERS`; ``$toInt`` etc. are thin wrappers over :func:`convert`.
Conversion failures raise :class:`ConvertError` (an ExprError) with MongoDB's
"... in $convert with no onError value" wording, which ``onError`` catches.
"""

from __future__ import annotations

import datetime as _dt
import decimal
import math
import re
from collections.abc import Callable
from typing import Any

from bson import Decimal128, Int64, ObjectId, Timestamp

from translator.mql.expr import Ctx, Expr, ExprError, Vars, compile_expr, const_value, operator
from translator.mql.operators.arithmetic import (
    DCTX,
    DECIMAL,
    DOUBLE,
    arg_list,
    double_to_decimal,
    fold,
    format_double,
    num_kind,
)
from translator.mql.values import (
    INT32_MAX,
    INT32_MIN,
    INT64_MAX,
    INT64_MIN,
    MISSING,
    TYPE_CODES,
    UTC,
    bson_type,
    datetime_to_ms,
    is_number,
    ms_to_datetime,
)

_NO_ON_ERROR = "in $convert with no onError value"
_DOUBLE_MAX = 1.7976931348623157e308


class ConvertError(ExprError):
    """A failed conversion: the only error ``$convert``'s ``onError`` replaces."""


# ---- formatting helpers (shared with the string operators) ---------------------------


def format_date(d: _dt.datetime) -> str:
    """ISO-8601 in UTC with milliseconds, as $toString prints dates ("...T16:58:51.538Z")."""
    if d.tzinfo is not None:
        d = d.astimezone(UTC)
    return (
        f"{d.year:04d}-{d.month:02d}-{d.day:02d}T{d.hour:02d}:{d.minute:02d}:"
        f"{d.second:02d}.{d.microsecond // 1000:03d}Z"
    )


def _str_int(v: Any) -> str:
    return str(int(v))


def _str_double(v: Any) -> str:
    """A double as MongoDB 8.0 prints it: C ``%g``, six significant digits.

    The server's double-to-string conversion (``performFormatDouble`` in
    src/mongo/db/pipeline/expression_convert.cpp) returns "NaN", "Infinity", "-Infinity"
    and "-0" for the special values and otherwise streams the double into its
    ``StringBuilder``, whose ``operator<<(double)`` formats with ``"%g"``
    (src/mongo/bson/util/builder.h): ``1234567.89`` is ``"1.23457e+06"``.
    """
    if v != v or v in (math.inf, -math.inf):
        return format_double(v)
    return f"{v:g}"


def _str_decimal(v: Any) -> str:
    return str(v)


def _str_bool(v: Any) -> str:
    return "true" if v else "false"


def _str_date(v: Any) -> str:
    return format_date(v)


def _str_oid(v: Any) -> str:
    return str(v)


def _str_str(v: Any) -> str:
    return v


_TO_STRING: dict[type, Callable[[Any], str]] = {
    str: _str_str,
    int: _str_int,
    Int64: _str_int,
    float: _str_double,
    Decimal128: _str_decimal,
    bool: _str_bool,
    _dt.datetime: _str_date,
    ObjectId: _str_oid,
}


def value_to_string(v: Any) -> str | None:
    """The text of a string-convertible value, or None when the type has no text form."""
    fn = _TO_STRING.get(type(v))
    if fn is None:
        if isinstance(v, _dt.datetime):
            return format_date(v)
        return None
    return fn(v)


# ---- converters ------------------------------------------------------------------------

_INT_RE = re.compile(r"[+-]?[0-9]+")
_FLOAT_RE = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_SPECIAL_FLOATS = {
    "nan": math.nan,
    "+nan": math.nan,
    "-nan": math.nan,
    "inf": math.inf,
    "+inf": math.inf,
    "-inf": -math.inf,
    "infinity": math.inf,
    "+infinity": math.inf,
    "-infinity": -math.inf,
}


def _unsupported(v: Any, target: str, op: str) -> ConvertError:
    return ConvertError(op, f"Unsupported conversion from {bson_type(v)} to {target} {_NO_ON_ERROR}")


def _parse_error(s: str, reason: str, op: str) -> ConvertError:
    return ConvertError(op, f"Failed to parse number '{s}' {_NO_ON_ERROR}: {reason}")


def _overflow(op: str) -> ConvertError:
    return ConvertError(op, f"Conversion would overflow target type {_NO_ON_ERROR}")


def _parse_int_string(s: str, op: str) -> int:
    if _INT_RE.fullmatch(s):
        return int(s)
    if not s:
        raise _parse_error(s, "No digits", op)
    body = s[1:] if s[:1] in "+-" else s
    if not body[:1].isdigit() or not body[:1].isascii():
        raise _parse_error(s, "Did not consume any digits", op)
    raise _parse_error(s, "Did not consume whole string.", op)


def _parse_float_string(s: str, op: str) -> float:
    if _FLOAT_RE.fullmatch(s):
        f = float(s)
        if f in (math.inf, -math.inf):
            raise _parse_error(s, "Out of range", op)
        return f
    special = _SPECIAL_FLOATS.get(s.lower())
    if special is not None:
        return special
    if not s:
        raise _parse_error(s, "No digits", op)
    raise _parse_error(s, "Did not consume whole string.", op)


def _truncate_to_int(v: Any, lo: int, hi: int, op: str) -> int:
    """A double/decimal truncated toward zero, which must fit in [lo, hi]."""
    if type(v) is Decimal128:
        d = v.to_decimal()
        if d.is_nan():
            raise ConvertError(op, f"Attempt to convert NaN value to integer type {_NO_ON_ERROR}")
        if d.is_infinite():
            raise ConvertError(
                op, f"Attempt to convert infinity value to integer type {_NO_ON_ERROR}"
            )
        r = int(d.to_integral_value(rounding=decimal.ROUND_DOWN))
    else:
        if v != v:
            raise ConvertError(op, f"Attempt to convert NaN value to integer type {_NO_ON_ERROR}")
        if v in (math.inf, -math.inf):
            raise ConvertError(
                op, f"Attempt to convert infinity value to integer type {_NO_ON_ERROR}"
            )
        r = int(v)
    if not lo <= r <= hi:
        raise _overflow(op)
    return r


def to_int(v: Any, op: str = "$convert") -> Any:
    t = type(v)
    if t is int or t is Int64:
        if not INT32_MIN <= v <= INT32_MAX:
            raise _overflow(op)
        return int(v)
    if t is float or t is Decimal128:
        return _truncate_to_int(v, INT32_MIN, INT32_MAX, op)
    if t is bool:
        return 1 if v else 0
    if t is str:
        r = _parse_int_string(v, op)
        if not INT32_MIN <= r <= INT32_MAX:
            raise _parse_error(v, "Overflow", op)
        return r
    raise _unsupported(v, "int", op)


def to_long(v: Any, op: str = "$convert") -> Any:
    t = type(v)
    if t is int or t is Int64:
        if not INT64_MIN <= v <= INT64_MAX:
            raise _overflow(op)
        return Int64(v)
    if t is float or t is Decimal128:
        return Int64(_truncate_to_int(v, INT64_MIN, INT64_MAX, op))
    if t is bool:
        return Int64(1 if v else 0)
    if t is str:
        r = _parse_int_string(v, op)
        if not INT64_MIN <= r <= INT64_MAX:
            raise _parse_error(v, "Overflow", op)
        return Int64(r)
    if isinstance(v, _dt.datetime):
        return Int64(datetime_to_ms(v))
    raise _unsupported(v, "long", op)


def to_double(v: Any, op: str = "$convert") -> Any:
    t = type(v)
    if t is float:
        return v
    if t is int or t is Int64:
        return float(v)
    if t is Decimal128:
        d = v.to_decimal()
        if d.is_finite() and abs(d) > _DOUBLE_MAX:
            raise _overflow(op)
        return float(d)
    if t is bool:
        return 1.0 if v else 0.0
    if t is str:
        return _parse_float_string(v, op)
    if isinstance(v, _dt.datetime):
        return float(datetime_to_ms(v))
    raise _unsupported(v, "double", op)


def to_decimal(v: Any, op: str = "$convert") -> Any:
    t = type(v)
    if t is Decimal128:
        return v
    if t is float:
        return Decimal128(DCTX.create_decimal(double_to_decimal(v)))
    if t is int or t is Int64:
        return Decimal128(DCTX.create_decimal(int(v)))
    if t is bool:
        return Decimal128("1" if v else "0")
    if t is str:
        if _FLOAT_RE.fullmatch(v) or v.lower() in _SPECIAL_FLOATS:
            return Decimal128(DCTX.create_decimal(v))
        if not v:
            raise _parse_error(v, "No digits", op)
        raise _parse_error(v, "Did not consume whole string.", op)
    if isinstance(v, _dt.datetime):
        return Decimal128(str(datetime_to_ms(v)))
    raise _unsupported(v, "decimal", op)


def to_bool(v: Any, op: str = "$convert") -> Any:
    """Numbers convert by value (0 is false); every other non-null value is true."""
    t = type(v)
    if t is bool:
        return v
    if t is int or t is float or t is Int64:
        return v != 0
    if t is Decimal128:
        return v.to_decimal() != 0
    return True


def to_string(v: Any, op: str = "$convert") -> Any:
    s = value_to_string(v)
    if s is None:
        raise _unsupported(v, "string", op)
    return s


_DATE_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})"
    r"(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?)?"
    r"\s*(Z|[+-]\d{2}(?::?\d{2})?)?"
)


def parse_date_string(s: str, op: str = "$convert") -> _dt.datetime:
    """ISO-like date strings ("2018-03-03", "2018-03-03T12:00:00Z", "... +0500")."""
    m = _DATE_RE.fullmatch(s.strip())
    if m is None:
        raise ConvertError(op, f"Error parsing date string '{s}' {_NO_ON_ERROR}")
    y, mo, d, h, mi, sec, frac, tz = m.groups()
    try:
        ms = int((frac or "0")[:3].ljust(3, "0"))
        out = _dt.datetime(
            int(y), int(mo), int(d), int(h or 0), int(mi or 0), int(sec or 0), ms * 1000, tzinfo=UTC
        )
    except ValueError as e:
        raise ConvertError(op, f"Error parsing date string '{s}' {_NO_ON_ERROR}: {e}") from None
    if tz and tz != "Z":
        sign = -1 if tz[0] == "-" else 1
        digits = tz[1:].replace(":", "")
        offset = _dt.timedelta(hours=int(digits[:2]), minutes=int(digits[2:4] or 0))
        out -= sign * offset
    return out


def _date_from_ms(ms: int, op: str) -> _dt.datetime:
    try:
        return ms_to_datetime(ms)
    except (OverflowError, ValueError):
        raise ConvertError(op, f"Date value out of range {_NO_ON_ERROR}") from None


def to_date(v: Any, op: str = "$convert") -> Any:
    t = type(v)
    if isinstance(v, _dt.datetime):
        return v
    if t is Int64 or (t is int and not INT32_MIN <= v <= INT32_MAX):
        return _date_from_ms(int(v), op)
    if t is float or t is Decimal128:
        return _date_from_ms(_truncate_to_int(v, INT64_MIN, INT64_MAX, op), op)
    if t is str:
        return parse_date_string(v, op)
    if t is ObjectId:
        return v.generation_time
    if t is Timestamp:
        return _date_from_ms(v.time * 1000, op)
    raise _unsupported(v, "date", op)


def to_object_id(v: Any, op: str = "$convert") -> Any:
    if type(v) is ObjectId:
        return v
    if type(v) is str:
        if len(v) != 24:
            raise ConvertError(
                op,
                f"Failed to parse objectId '{v}' {_NO_ON_ERROR}: Invalid string length for "
                f"parsing to OID, expected 24 but found {len(v)}",
            )
        try:
            return ObjectId(v)
        except Exception:
            raise ConvertError(
                op, f"Failed to parse objectId '{v}' {_NO_ON_ERROR}: Invalid character found in hex string"
            ) from None
    raise _unsupported(v, "objectId", op)


Converter = Callable[[Any, str], Any]

CONVERTERS: dict[str, Converter] = {
    "double": to_double,
    "string": to_string,
    "objectId": to_object_id,
    "bool": to_bool,
    "date": to_date,
    "int": to_int,
    "long": to_long,
    "decimal": to_decimal,
}


def _no_conversion(target: str) -> Converter:
    def conv(v: Any, op: str) -> Any:
        raise _unsupported(v, target, op)

    return conv


def convert(value: Any, to_type: str, op: str = "$convert") -> Any:
    """Convert a non-null value to the type alias ``to_type`` (raises ConvertError)."""
    fn = CONVERTERS.get(to_type)
    if fn is None:
        raise _unsupported(value, to_type, op)
    return fn(value, op)


def resolve_target(to: Any) -> str:
    """The type alias named by a ``to`` value (string alias or numeric code).

    Not a conversion error: ``onError`` does not hide a bad ``to`` (MongoDB).
    """
    if isinstance(to, dict):
        if "type" not in to:
            raise ExprError("$convert", "$convert 'to' object requires a 'type' field")
        to = to["type"]
    if type(to) is str:
        if to in CONVERTERS or to in TYPE_CODES.values():
            return to
        raise ExprError("$convert", f"Unknown type name: {to}")
    if is_number(to):
        k = num_kind(to)
        f = float(to.to_decimal()) if k == DECIMAL else float(to)
        if k in (DOUBLE, DECIMAL) and not f.is_integer():
            raise ExprError(
                "$convert", f"In $convert, numeric 'to' argument is not an integer: {to}"
            )
        alias = TYPE_CODES.get(int(f))
        if alias is None:
            raise ExprError(
                "$convert",
                f"In $convert, numeric value for 'to' does not correspond to a BSON type: {int(f)}",
            )
        return alias
    raise ExprError(
        "$convert", f"$convert's 'to' argument must be a string or number, but is {bson_type(to)}"
    )


# ---- operators -------------------------------------------------------------------------


@operator("$type")
def _type(args: Any, ctx: Ctx) -> Expr:
    """The BSON type alias; "missing" for an absent field ($type docs)."""
    (a,) = arg_list(args, ctx, 1)

    def type_(doc: Any, v: Vars) -> Any:
        return bson_type(a(doc, v))

    return fold(type_, (a,))


@operator("$isNumber")
def _is_number(args: Any, ctx: Ctx) -> Expr:
    (a,) = arg_list(args, ctx, 1)

    def is_number_(doc: Any, v: Vars) -> Any:
        return is_number(a(doc, v))

    return fold(is_number_, (a,))


_CONVERT_KEYS = ("input", "to", "onError", "onNull")


@operator("$convert")
def _convert(args: Any, ctx: Ctx) -> Expr:
    if not isinstance(args, dict):
        raise ctx.error(f"$convert expects an object of named arguments but found: {bson_type(args)}")
    for k in args:
        if k not in _CONVERT_KEYS:
            if k == "format":
                raise ctx.at(k).error("$convert 'format' (binData conversions) is not supported")
            raise ctx.at(k).error(f"$convert found an unknown argument: {k}")
    if "input" not in args:
        raise ctx.error("Missing 'input' parameter to $convert")
    if "to" not in args:
        raise ctx.error("Missing 'to' parameter to $convert")
    inp = compile_expr(args["input"], ctx.at("input"))
    to_expr = compile_expr(args["to"], ctx.at("to"))
    on_error = compile_expr(args["onError"], ctx.at("onError")) if "onError" in args else None
    on_null = compile_expr(args["onNull"], ctx.at("onNull")) if "onNull" in args else None

    to_const = const_value(to_expr)
    if to_const is not MISSING and to_const is not None:
        try:
            target = resolve_target(to_const)
        except ExprError as e:
            raise ctx.at("to").error(e.message) from None
        conv: Converter = CONVERTERS.get(target) or _no_conversion(target)

        def convert_const(doc: Any, v: Vars) -> Any:
            x = inp(doc, v)
            if x is None or x is MISSING:
                return on_null(doc, v) if on_null is not None else None
            try:
                return conv(x, "$convert")
            except ConvertError:
                if on_error is None:
                    raise
                return on_error(doc, v)

        return convert_const

    def convert_dyn(doc: Any, v: Vars) -> Any:
        to = to_expr(doc, v)
        x = inp(doc, v)
        target = None if to is None or to is MISSING else resolve_target(to)
        if x is None or x is MISSING:
            return on_null(doc, v) if on_null is not None else None
        if target is None:
            return None
        try:
            return convert(x, target, "$convert")
        except ConvertError:
            if on_error is None:
                raise
            return on_error(doc, v)

    return convert_dyn


def _shorthand(op: str, conv: Converter) -> None:
    """``{$toX: <expr>}`` == ``{$convert: {input: <expr>, to: X}}``: null in, null out."""

    @operator(op)
    def compile_(args: Any, ctx: Ctx) -> Expr:
        (a,) = arg_list(args, ctx, 1)

        def to_x(doc: Any, v: Vars) -> Any:
            x = a(doc, v)
            if x is None or x is MISSING:
                return None
            return conv(x, op)

        return fold(to_x, (a,))


_shorthand("$toInt", to_int)
_shorthand("$toLong", to_long)
_shorthand("$toDouble", to_double)
_shorthand("$toDecimal", to_decimal)
_shorthand("$toString", to_string)
_shorthand("$toBool", to_bool)
_shorthand("$toDate", to_date)
_shorthand("$toObjectId", to_object_id)
