"""MQL string expression operators.

$concat, $substrCP, $toLower, $toUpper, $split, $strLenCP, $trim/$ltrim/$rtrim and
$regexMatch. Null handling differs per operator, as MongoDB documents it: $concat,
$split and $trim return null; $toLower/$toUpper/$substrCP treat null as ""; $strLenCP
errors; $regexMatch returns false. Indexes and lengths count code points, which is
what Python ``str`` indexes. $toLower/$toUpper only change ASCII letters (MongoDB
case-maps bytes, "well-defined only for ASCII").
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Callable
from typing import Any

from bson import Regex

from translator.mql.expr import Ctx, Expr, ExprError, Vars, compile_expr, const_value, operator
from translator.mql.operators.arithmetic import arg_list, fold, num_kind
from translator.mql.operators.types import value_to_string
from translator.mql.pcre import RegexError, compile_pcre
from translator.mql.values import INT32_MAX, INT32_MIN, MISSING, bson_type


def coerce_to_string(v: Any, op: str) -> str:
    """MongoDB's string coercion: null/missing -> "", numbers and dates -> text."""
    if type(v) is str:
        return v
    if v is None or v is MISSING:
        return ""
    if num_kind(v) >= 0 or isinstance(v, _dt.datetime):
        return value_to_string(v)  # type: ignore[return-value]
    raise ExprError(op, f"can't convert from BSON type {bson_type(v)} to String")


# ---- $concat ---------------------------------------------------------------------------


def concat_values(vals: list[Any] | tuple[Any, ...]) -> Any:
    for x in vals:
        if type(x) is not str:
            if x is None or x is MISSING:
                return None
            raise ExprError("$concat", f"$concat only supports strings, not {bson_type(x)}")
    return "".join(vals)


@operator("$concat")
def _concat(args: Any, ctx: Ctx) -> Expr:
    parts = arg_list(args, ctx, 0, -1)
    if len(parts) == 2:
        a, b = parts

        def concat2(doc: Any, v: Vars) -> Any:
            x = a(doc, v)
            y = b(doc, v)
            if type(x) is str and type(y) is str:
                return x + y
            return concat_values((x, y))

        return fold(concat2, parts)

    def concat(doc: Any, v: Vars) -> Any:
        vals = [f(doc, v) for f in parts]
        try:
            return "".join(vals)
        except TypeError:
            return concat_values(vals)

    return fold(concat, parts)


# ---- $substrCP / $strLenCP -------------------------------------------------------------


def _cp_int(op: str, what: str, x: Any) -> int:
    if num_kind(x) < 0:
        raise ExprError(op, f"{op}: {what} must be a numeric type (is BSON type {bson_type(x)})")
    f = float(x.to_decimal()) if bson_type(x) == "decimal" else float(x)
    if not f.is_integer() or not INT32_MIN <= f <= INT32_MAX:
        raise ExprError(op, f"{op}: {what} cannot be represented as a 32-bit integral value: {x}")
    return int(f)


def substr_cp(s: Any, start: Any, count: Any) -> str:
    text = coerce_to_string(s, "$substrCP")
    i = _cp_int("$substrCP", "starting index", start)
    n = _cp_int("$substrCP", "length", count)
    if n < 0:
        raise ExprError("$substrCP", "$substrCP: length must be a nonnegative integer.")
    if i < 0:
        raise ExprError("$substrCP", "$substrCP: the starting index must be nonnegative integer.")
    return text[i : i + n]


@operator("$substrCP")
def _substr_cp(args: Any, ctx: Ctx) -> Expr:
    a, b, c = arg_list(args, ctx, 3)

    def substr(doc: Any, v: Vars) -> Any:
        s = a(doc, v)
        i = b(doc, v)
        n = c(doc, v)
        if type(s) is str and type(i) is int and type(n) is int and i >= 0 and n >= 0:
            return s[i : i + n]
        return substr_cp(s, i, n)

    return fold(substr, (a, b, c))


@operator("$strLenCP")
def _str_len_cp(args: Any, ctx: Ctx) -> Expr:
    (a,) = arg_list(args, ctx, 1)

    def str_len(doc: Any, v: Vars) -> Any:
        s = a(doc, v)
        if type(s) is not str:
            raise ExprError(
                "$strLenCP", f"$strLenCP requires a string argument, found: {bson_type(s)}"
            )
        return len(s)

    return fold(str_len, (a,))


# ---- $toLower / $toUpper ---------------------------------------------------------------

_LOWER = {c: c + 32 for c in range(ord("A"), ord("Z") + 1)}
_UPPER = {c: c - 32 for c in range(ord("a"), ord("z") + 1)}


def _case(op: str, table: dict[int, int], ascii_fn: Callable[[str], str]) -> None:
    @operator(op)
    def compile_(args: Any, ctx: Ctx) -> Expr:
        (a,) = arg_list(args, ctx, 1)

        def case(doc: Any, v: Vars) -> Any:
            s = a(doc, v)
            if type(s) is not str:
                s = coerce_to_string(s, op)
            return ascii_fn(s) if s.isascii() else s.translate(table)

        return fold(case, (a,))


_case("$toLower", _LOWER, str.lower)
_case("$toUpper", _UPPER, str.upper)


# ---- $split ----------------------------------------------------------------------------


@operator("$split")
def _split(args: Any, ctx: Ctx) -> Expr:
    a, b = arg_list(args, ctx, 2)
    sep_const = const_value(b)
    if sep_const == "":
        raise ctx.at(1).error("$split requires a non-empty separator")

    def split(doc: Any, v: Vars) -> Any:
        s = a(doc, v)
        sep = b(doc, v)
        if type(s) is str and type(sep) is str and sep:
            return s.split(sep)
        if s is None or s is MISSING or sep is None or sep is MISSING:
            return None
        if type(s) is not str:
            raise ExprError(
                "$split",
                "$split requires an expression that evaluates to a string as a first "
                f"argument, found: {bson_type(s)}",
            )
        if type(sep) is not str:
            raise ExprError(
                "$split",
                "$split requires an expression that evaluates to a string as a second "
                f"argument, found: {bson_type(sep)}",
            )
        raise ExprError("$split", "$split requires a non-empty separator")

    return fold(split, (a, b))


# ---- $trim / $ltrim / $rtrim -----------------------------------------------------------

# The default trim set, exactly as the $trim docs list it: U+0000, U+0020, U+0009-U+000D,
# U+00A0, U+1680 and U+2000-U+200A (not U+2028/U+2029/U+202F/U+205F/U+3000).
WHITESPACE = (
    "\x00 \t\n\x0b\x0c\r\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2007\u2008\u2009\u200a"
)


def _show(x: Any) -> str:
    if type(x) is float:
        return value_to_string(x) or repr(x)
    if type(x) is bool:
        return "true" if x else "false"
    return str(x)


def _trim(op: str, method: Callable[[str, str], str]) -> None:
    @operator(op)
    def compile_(args: Any, ctx: Ctx) -> Expr:
        if not isinstance(args, dict):
            raise ctx.error(f"{op} requires an object as an argument, found: {bson_type(args)}")
        for k in args:
            if k not in ("input", "chars"):
                raise ctx.at(k).error(f"{op} found an unknown argument: {k}")
        if "input" not in args:
            raise ctx.error(f"{op} requires an 'input' field")
        inp = compile_expr(args["input"], ctx.at("input"))
        chars_expr = compile_expr(args["chars"], ctx.at("chars")) if "chars" in args else None

        def check_input(s: Any) -> str | None:
            if type(s) is str:
                return s
            if s is None or s is MISSING:
                return None
            raise ExprError(
                op,
                f"{op} requires its input to be a string, got {_show(s)} "
                f"(of type {bson_type(s)}) instead.",
            )

        if chars_expr is None:

            def trim_ws(doc: Any, v: Vars) -> Any:
                s = check_input(inp(doc, v))
                return None if s is None else method(s, WHITESPACE)

            return fold(trim_ws, (inp,))

        chars_f = chars_expr

        def trim_chars(doc: Any, v: Vars) -> Any:
            s = check_input(inp(doc, v))
            if s is None:
                return None
            chars = chars_f(doc, v)
            if type(chars) is not str:
                if chars is None or chars is MISSING:
                    return None
                raise ExprError(
                    op,
                    f"{op} requires 'chars' to be a string, got {_show(chars)} "
                    f"(of type {bson_type(chars)}) instead.",
                )
            return method(s, chars)

        return fold(trim_chars, (inp, chars_f))


_trim("$trim", str.strip)
_trim("$ltrim", str.lstrip)
_trim("$rtrim", str.rstrip)


# ---- $regexMatch -----------------------------------------------------------------------

_FLAG_OPTIONS = ((re.IGNORECASE, "i"), (re.MULTILINE, "m"), (re.DOTALL, "s"), (re.VERBOSE, "x"))


def _regex_parts(regex: Any) -> tuple[str, str]:
    """(pattern, options) of a string, a bson Regex or a compiled pattern."""
    if type(regex) is str:
        return regex, ""
    flags = regex.flags
    if isinstance(flags, str):
        return regex.pattern, flags
    return regex.pattern, "".join(c for f, c in _FLAG_OPTIONS if flags & f)


def compile_regex(op: str, pattern: str, options: str) -> Any:
    """The PCRE2 pattern MongoDB would run (:mod:`translator.mql.pcre`), compiled once."""
    try:
        return compile_pcre(pattern, options)
    except RegexError as e:
        msg = str(e)
        if msg.startswith("invalid flag"):
            raise ExprError(op, f"{op} {msg}") from None
        if "null byte" in msg:
            raise ExprError(op, f"{op}: {msg}") from None
        raise ExprError(op, f"Invalid Regex in {op}: {msg}") from None


def resolve_regex(op: str, regex: Any, options: Any) -> Any:
    """The compiled regex, or None when regex is null/missing (which matches nothing)."""
    if regex is None or regex is MISSING:
        return None
    if not (type(regex) is str or isinstance(regex, (Regex, re.Pattern))):
        raise ExprError(op, f"{op} needs 'regex' to be of type string or regex")
    pattern, own_options = _regex_parts(regex)
    if options is None or options is MISSING:
        options = ""
    elif type(options) is not str:
        raise ExprError(op, f"{op} needs 'options' to be of type string")
    if own_options and options:
        raise ExprError(
            op, f"{op}: found regex option(s) specified in both 'regex' and 'option' fields"
        )
    return compile_regex(op, pattern, own_options or options)


@operator("$regexMatch")
def _regex_match(args: Any, ctx: Ctx) -> Expr:
    op = "$regexMatch"
    if not isinstance(args, dict):
        raise ctx.error(f"{op} expects an object of named arguments but found: {bson_type(args)}")
    for k in args:
        if k not in ("input", "regex", "options"):
            raise ctx.at(k).error(f"{op} found an unknown argument: {k}")
    for k in ("input", "regex"):
        if k not in args:
            raise ctx.error(f"{op} requires '{k}' parameter")
    inp = compile_expr(args["input"], ctx.at("input"))
    rx = compile_expr(args["regex"], ctx.at("regex"))
    opts = compile_expr(args["options"], ctx.at("options")) if "options" in args else None

    def check_input(s: Any) -> bool:
        if type(s) is str:
            return True
        if s is None or s is MISSING:
            return False
        raise ExprError(op, f"{op} needs 'input' to be of type string")

    rx_const = const_value(rx)
    opts_const = const_value(opts) if opts is not None else None
    if rx_const is not MISSING and opts_const is not MISSING:
        try:
            pattern = resolve_regex(op, rx_const, opts_const)
        except ExprError as e:
            raise ctx.at("regex").error(e.message) from None
        if pattern is None:

            def no_regex(doc: Any, v: Vars) -> Any:
                check_input(inp(doc, v))
                return False

            return fold(no_regex, (inp,))
        search = pattern.search

        def match_const(doc: Any, v: Vars) -> Any:
            s = inp(doc, v)
            if type(s) is str:
                return search(s) is not None
            check_input(s)
            return False

        return fold(match_const, (inp,))

    opts_f = opts

    def match_dyn(doc: Any, v: Vars) -> Any:
        s = inp(doc, v)
        pattern = resolve_regex(op, rx(doc, v), opts_f(doc, v) if opts_f is not None else None)
        if not check_input(s) or pattern is None:
            return False
        return pattern.search(s) is not None

    return match_dyn
