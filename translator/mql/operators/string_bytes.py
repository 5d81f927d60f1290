"""String operators that index by UTF-8 bytes or search by code points.

$substrBytes (and its old name $substr), $strLenBytes, $indexOfBytes, $indexOfCP,
$strcasecmp, $replaceOne and $replaceAll. MongoDB strings are UTF-8: the ``Bytes``
operators index the encoded bytes and fail when a cut would fall inside a character
($substrBytes docs); the ``CP`` ones index code points, which is what Python ``str``
indexes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from bson import Decimal128

from translator.mql.expr import Ctx, Expr, ExprError, Vars, compile_expr, operator
from translator.mql.operators.arithmetic import arg_list, fold, num_kind
from translator.mql.operators.arrays import int_value, named_args
from translator.mql.operators.strings import coerce_to_string
from translator.mql.values import MISSING, bson_type


def _coerce_int(op: str, what: str, x: Any) -> int:
    """A number truncated to an integer, as the server's ``coerceToInt`` does."""
    if num_kind(x) < 0:
        raise ExprError(op, f"{op}: {what} must be a numeric type (is BSON type {bson_type(x)})")
    f = float(x.to_decimal()) if type(x) is Decimal128 else float(x)
    if not math.isfinite(f):
        return 0
    return int(f)


def _is_continuation(b: bytes, i: int) -> bool:
    return i < len(b) and (b[i] & 0xC0) == 0x80


def substr_bytes(op: str, s: Any, start: Any, count: Any) -> str:
    text = coerce_to_string(s, op).encode("utf-8")
    i = _coerce_int(op, "starting index", start)
    n = _coerce_int(op, "length", count)
    if i < 0 or i >= len(text):
        return ""
    if _is_continuation(text, i):
        raise ExprError(op, f"{op}:  Invalid range, starting index is a UTF-8 continuation byte.")
    end = len(text) if n < 0 or i + n > len(text) else i + n
    if _is_continuation(text, end):
        raise ExprError(op, f"{op}:  Invalid range, ending index is in the middle of a UTF-8 character.")
    return text[i:end].decode("utf-8")


def _substr(op: str) -> None:
    @operator(op)
    def compile_(args: Any, ctx: Ctx) -> Expr:
        a, b, c = arg_list(args, ctx, 3)

        def substr(doc: Any, v: Vars) -> Any:
            return substr_bytes(op, a(doc, v), b(doc, v), c(doc, v))

        return fold(substr, (a, b, c))


_substr("$substrBytes")
_substr("$substr")


@operator("$strLenBytes")
def _str_len_bytes(args: Any, ctx: Ctx) -> Expr:
    (a,) = arg_list(args, ctx, 1)

    def str_len_bytes(doc: Any, v: Vars) -> Any:
        s = a(doc, v)
        if type(s) is not str:
            raise ExprError(
                "$strLenBytes", f"$strLenBytes requires a string argument, found: {bson_type(s)}"
            )
        return len(s.encode("utf-8"))

    return fold(str_len_bytes, (a,))


# ---- $indexOfBytes / $indexOfCP ---------------------------------------------------------


def _index_of(op: str, encode: Callable[[str], Any]) -> None:
    @operator(op)
    def compile_(args: Any, ctx: Ctx) -> Expr:
        fs = arg_list(args, ctx, 2, 4)

        def bound(x: Any, which: str) -> int:
            i = int_value(x)
            if i is None:
                raise ExprError(
                    op,
                    f"{op} requires an integral {which} index, found a value of type: "
                    f"{bson_type(x)}" + (f", with value: {x}" if num_kind(x) >= 0 else ""),
                )
            if i < 0:
                raise ExprError(op, f"{op} requires a nonnegative {which} index, found: {i}")
            return i

        def index_of(doc: Any, v: Vars) -> Any:
            s = fs[0](doc, v)
            if s is None or s is MISSING:
                return None
            if type(s) is not str:
                raise ExprError(op, f"{op} requires a string as the first argument, found: {bson_type(s)}")
            sub = fs[1](doc, v)
            if type(sub) is not str:
                raise ExprError(
                    op, f"{op} requires a string as the second argument, found: {bson_type(sub)}"
                )
            hay, needle = encode(s), encode(sub)
            start = bound(fs[2](doc, v), "starting") if len(fs) > 2 else 0
            end = bound(fs[3](doc, v), "ending") if len(fs) > 3 else len(hay)
            if start > len(hay) or start > end:
                return -1
            return hay.find(needle, start, min(end, len(hay)))

        return fold(index_of, fs)


_index_of("$indexOfBytes", lambda s: s.encode("utf-8"))
_index_of("$indexOfCP", lambda s: s)


# ---- $strcasecmp ------------------------------------------------------------------------

_FOLD = {c: c + 32 for c in range(ord("A"), ord("Z") + 1)}


@operator("$strcasecmp")
def _strcasecmp(args: Any, ctx: Ctx) -> Expr:
    """Case-insensitive comparison of two strings; only ASCII letters fold (MongoDB docs)."""
    a, b = arg_list(args, ctx, 2)

    def strcasecmp(doc: Any, v: Vars) -> Any:
        x = coerce_to_string(a(doc, v), "$strcasecmp").translate(_FOLD).encode("utf-8")
        y = coerce_to_string(b(doc, v), "$strcasecmp").translate(_FOLD).encode("utf-8")
        return (x > y) - (x < y)

    return fold(strcasecmp, (a, b))


# ---- $replaceOne / $replaceAll ----------------------------------------------------------


def _replace(op: str, count: int) -> None:
    @operator(op)
    def compile_(args: Any, ctx: Ctx) -> Expr:
        d = named_args(args, ctx, op, ("input", "find", "replacement"))
        names = ("input", "find", "replacement")
        fs = [compile_expr(d[k], ctx.at(k)) for k in names]

        def replace(doc: Any, v: Vars) -> Any:
            vals = [f(doc, v) for f in fs]
            for name, x in zip(names, vals, strict=True):
                if type(x) is not str and x is not None and x is not MISSING:
                    raise ExprError(op, f"{op} requires that '{name}' be a string, found: {bson_type(x)}")
            if any(x is None or x is MISSING for x in vals):
                return None
            s, find, repl = vals
            return s.replace(find, repl, count)

        return fold(replace, fs)


_replace("$replaceOne", 1)
_replace("$replaceAll", -1)
