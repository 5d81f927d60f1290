"""MQL array expression operators ($size, $filter, $map, $reduce, $slice, ...).

Null/missing rules follow MongoDB's reference pages: most operators return null for a
null or missing array, while ``$size`` errors; ``$arrayElemAt`` (and ``$first`` /
``$last`` on an empty array) return *missing* for an index out of range. Errors name
the operator with MongoDB's wording so DLQ entries read like Atlas's.

The small argument helpers at the top (``one_arg``, ``arg_list``, ``named_args``,
``int_value``) are shared by the other operator families in this package.
"""

from __future__ import annotations

import math
from typing import Any

from bson import Decimal128, Int64

from translator.errors import did_you_mean
from translator.mql.expr import (
    EMPTY_VARS,
    Ctx,
    Expr,
    ExprError,
    Vars,
    compile_expr,
    const_value,
    is_const,
    literal,
    operator,
)
from translator.mql.values import (
    INT32_MAX,
    INT32_MIN,
    MISSING,
    SortKey,
    bson_type,
    is_number,
    truthy,
    values_equal,
)

# ---- argument helpers (shared with dates/objects/misc) ------------------------------


def one_arg(args: Any, ctx: Ctx, op: str) -> Any:
    """The operand of a one-argument operator: ``{$op: x}`` or ``{$op: [x]}`` (MongoDB)."""
    if isinstance(args, list):
        if len(args) != 1:
            raise ctx.error(f"Expression {op} takes exactly 1 arguments. {len(args)} were passed in.")
        return args[0]
    return args


def arg_list(args: Any, ctx: Ctx, op: str, min_n: int, max_n: int) -> list[Expr]:
    """Compile a positional argument list, checking its arity at compile time."""
    items = args if isinstance(args, list) else [args]
    n = len(items)
    if n < min_n or n > max_n:
        if min_n == max_n:
            raise ctx.error(f"Expression {op} takes exactly {min_n} arguments. {n} were passed in.")
        raise ctx.error(
            f"Expression {op} takes at least {min_n} arguments, and at most {max_n}, "
            f"but {n} were passed in."
        )
    if not isinstance(args, list):
        return [compile_expr(args, ctx)]
    return [compile_expr(x, ctx.at(i)) for i, x in enumerate(items)]


def named_args(
    args: Any, ctx: Ctx, op: str, required: tuple[str, ...], optional: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Validate the ``{name: expr}`` argument object of ``op`` (unknown/missing keys)."""
    if not isinstance(args, dict):
        raise ctx.error(f"{op} expects an object of named arguments, got {bson_type(args)}")
    allowed = required + optional
    for k in args:
        if k not in allowed:
            raise ctx.at(k).error(
                f"unrecognized parameter to {op}: '{k}'{did_you_mean(k, allowed)}"
            )
    for r in required:
        if r not in args:
            raise ctx.error(f"missing '{r}' parameter to {op}")
    return args


def int_value(v: Any, lo: int = INT32_MIN, hi: int = INT32_MAX) -> int | None:
    """``v`` as a Python int if it is a number with an exact integral value in [lo, hi]."""
    t = type(v)
    if t is int or t is Int64:
        i = int(v)
    elif t is float:
        if not math.isfinite(v) or not v.is_integer():
            return None
        i = int(v)
    elif t is Decimal128:
        d = v.to_decimal()
        if not d.is_finite() or d != d.to_integral_value():
            return None
        i = int(d)
    else:
        return None
    return i if lo <= i <= hi else None


def _nullish(v: Any) -> bool:
    return v is None or v is MISSING


def _variable_name(spec: Any, ctx: Ctx, op: str) -> str:
    if not isinstance(spec, str) or not spec:
        raise ctx.error(f"{op} 'as' must be a non-empty string")
    if not (spec[0].islower() or spec[0] == "_" or ord(spec[0]) > 127):
        raise ctx.error(f"{op} variable name '{spec}' must begin with a lowercase letter")
    return spec


def _const_fold(fn: Expr, parts: list[Expr]) -> Expr:
    """Evaluate ``fn`` at compile time when all its inputs are constants."""
    if all(is_const(p) for p in parts):
        return literal(fn(None, EMPTY_VARS))
    return fn


# ---- operators ----------------------------------------------------------------------


@operator("$size")
def _size(args: Any, ctx: Ctx) -> Expr:
    """``$size``: the length of an array; any non-array (even null) is an error."""
    f = compile_expr(one_arg(args, ctx, "$size"), ctx)

    def size(doc: Any, v: Vars) -> Any:
        a = f(doc, v)
        if type(a) is list:
            return len(a)
        raise ExprError(
            "$size", f"The argument to $size must be an array. Type of argument is {bson_type(a)}"
        )

    return size


@operator("$isArray")
def _is_array(args: Any, ctx: Ctx) -> Expr:
    f = compile_expr(one_arg(args, ctx, "$isArray"), ctx)

    def is_array(doc: Any, v: Vars) -> Any:
        return isinstance(f(doc, v), list)

    return _const_fold(is_array, [f])


def _index(array: list[Any], i: int) -> Any:
    n = len(array)
    if i < 0:
        i += n
    if 0 <= i < n:
        return array[i]
    return MISSING


@operator("$arrayElemAt")
def _array_elem_at(args: Any, ctx: Ctx) -> Expr:
    """``$arrayElemAt``: negative indexes count from the end; out of range is missing."""
    fa, fi = arg_list(args, ctx, "$arrayElemAt", 2, 2)

    def array_elem_at(doc: Any, v: Vars) -> Any:
        a = fa(doc, v)
        i = fi(doc, v)
        if _nullish(a) or _nullish(i):
            return None
        if type(a) is not list:
            raise ExprError(
                "$arrayElemAt", f"$arrayElemAt's first argument must be an array, but is {bson_type(a)}"
            )
        if not is_number(i):
            raise ExprError(
                "$arrayElemAt",
                f"$arrayElemAt's second argument must be a numeric value, but is {bson_type(i)}",
            )
        idx = int_value(i)
        if idx is None:
            raise ExprError(
                "$arrayElemAt",
                f"$arrayElemAt's second argument must be representable as a 32-bit integer: {i}",
            )
        return _index(a, idx)

    return array_elem_at


def _first_last(op: str, pos: int) -> None:
    @operator(op)
    def _compile(args: Any, ctx: Ctx) -> Expr:
        f = compile_expr(one_arg(args, ctx, op), ctx)

        def first_last(doc: Any, v: Vars) -> Any:
            a = f(doc, v)
            if type(a) is list:
                return a[pos] if a else MISSING
            if _nullish(a):
                return None
            raise ExprError(op, f"{op}'s argument must be an array, but is {bson_type(a)}")

        return first_last


_first_last("$first", 0)
_first_last("$last", -1)


@operator("$in")
def _in(args: Any, ctx: Ctx) -> Expr:
    """``$in``: whether a value is an element of an array (MongoDB equality)."""
    fx, fa = arg_list(args, ctx, "$in", 2, 2)

    def in_(doc: Any, v: Vars) -> Any:
        x = fx(doc, v)
        a = fa(doc, v)
        if type(a) is not list:
            raise ExprError("$in", f"$in requires an array as a second argument, found: {bson_type(a)}")
        if x is MISSING:  # missing is not null: it equals no element ($in docs)
            return False
        return any(values_equal(el, x) for el in a)

    return in_


@operator("$concatArrays")
def _concat_arrays(args: Any, ctx: Ctx) -> Expr:
    """``$concatArrays``: null if any argument is null/missing; non-arrays are errors."""
    parts = arg_list(args, ctx, "$concatArrays", 0, 1 << 30)

    def concat_arrays(doc: Any, v: Vars) -> Any:
        out: list[Any] = []
        for f in parts:
            a = f(doc, v)
            if type(a) is list:
                out.extend(a)
            elif _nullish(a):
                return None
            else:
                raise ExprError(
                    "$concatArrays", f"$concatArrays only supports arrays, not {bson_type(a)}"
                )
        return out

    return _const_fold(concat_arrays, parts)


@operator("$reverseArray")
def _reverse_array(args: Any, ctx: Ctx) -> Expr:
    f = compile_expr(one_arg(args, ctx, "$reverseArray"), ctx)

    def reverse_array(doc: Any, v: Vars) -> Any:
        a = f(doc, v)
        if type(a) is list:
            return a[::-1]
        if _nullish(a):
            return None
        raise ExprError(
            "$reverseArray",
            f"The argument to $reverseArray must be an array, but was of type: {bson_type(a)}",
        )

    return reverse_array


_ORDINAL = ("First", "Second", "Third")


@operator("$slice")
def _slice(args: Any, ctx: Ctx) -> Expr:
    """``$slice``: ``[array, n]`` (n < 0 takes from the end) or ``[array, position, n]``."""
    fs = arg_list(args, ctx, "$slice", 2, 3)

    def slice_(doc: Any, v: Vars) -> Any:
        vals = [f(doc, v) for f in fs]
        if any(_nullish(x) for x in vals):
            return None
        a = vals[0]
        if type(a) is not list:
            raise ExprError(
                "$slice", f"First argument to $slice must be an array, but is of type: {bson_type(a)}"
            )
        ints: list[int] = []
        for k, x in enumerate(vals[1:], start=1):
            if not is_number(x):
                raise ExprError(
                    "$slice",
                    f"{_ORDINAL[k]} argument to $slice must be a numeric value, but was of type: "
                    f"{bson_type(x)}",
                )
            i = int_value(x)
            if i is None:
                raise ExprError(
                    "$slice",
                    f"{_ORDINAL[k]} argument to $slice can't be represented as a 32-bit integer: {x}",
                )
            ints.append(i)
        n = len(a)
        if len(ints) == 1:
            (count,) = ints
            if count >= 0:
                return a[:count]
            return a[max(n + count, 0) :]
        pos, count = ints
        if count <= 0:
            raise ExprError("$slice", f"Third argument to $slice must be positive: {count}")
        if pos < 0:
            pos = max(n + pos, 0)
        return a[pos : pos + count]

    return slice_


@operator("$range")
def _range(args: Any, ctx: Ctx) -> Expr:
    """``$range``: ``[start, end, step?]`` of 32-bit integers; step defaults to 1."""
    fs = arg_list(args, ctx, "$range", 2, 3)
    names = ("starting value", "ending value", "step value")

    def range_(doc: Any, v: Vars) -> Any:
        ints: list[int] = []
        for name, f in zip(names, fs, strict=False):
            x = f(doc, v)
            if not is_number(x):
                raise ExprError(
                    "$range", f"$range requires a numeric {name}, found value of type: {bson_type(x)}"
                )
            i = int_value(x)
            if i is None:
                raise ExprError(
                    "$range",
                    f"$range requires a {name} that can be represented as a 32-bit integer, "
                    f"found value: {x}",
                )
            ints.append(i)
        step = ints[2] if len(ints) == 3 else 1
        if step == 0:
            raise ExprError("$range", "$range requires a non-zero step value")
        return list(range(ints[0], ints[1], step))

    return range_


@operator("$indexOfArray")
def _index_of_array(args: Any, ctx: Ctx) -> Expr:
    """``$indexOfArray``: ``[array, value, start?, end?]``; -1 when not found."""
    fs = arg_list(args, ctx, "$indexOfArray", 2, 4)

    def bound(x: Any, which: str) -> int:
        if not is_number(x) or int_value(x) is None:
            raise ExprError(
                "$indexOfArray",
                f"$indexOfArray requires an integral {which} index, found a value of type: "
                f"{bson_type(x)}" + (f", with value: {x}" if is_number(x) else ""),
            )
        i = int_value(x)
        assert i is not None
        if i < 0:
            raise ExprError(
                "$indexOfArray", f"$indexOfArray requires a nonnegative {which} index, found: {i}"
            )
        return i

    def index_of_array(doc: Any, v: Vars) -> Any:
        a = fs[0](doc, v)
        if _nullish(a):
            return None
        if type(a) is not list:
            raise ExprError(
                "$indexOfArray",
                f"$indexOfArray requires an array as a first argument, found: {bson_type(a)}",
            )
        x = fs[1](doc, v)
        start = bound(fs[2](doc, v), "starting") if len(fs) > 2 else 0
        end = bound(fs[3](doc, v), "ending") if len(fs) > 3 else len(a)
        if x is MISSING:  # missing is not null, so it is found nowhere
            return -1
        for i in range(start, min(end, len(a))):
            if values_equal(a[i], x):
                return i
        return -1

    return index_of_array


def _iteration(
    args: Any, ctx: Ctx, op: str, required: tuple[str, ...], optional: tuple[str, ...]
) -> tuple[dict[str, Any], str, Ctx]:
    spec = named_args(args, ctx, op, required, optional)
    name = _variable_name(spec.get("as", "this"), ctx.at("as"), op)
    return spec, name, ctx.bind(name)


@operator("$filter")
def _filter(args: Any, ctx: Ctx) -> Expr:
    """``$filter``: keep elements whose ``cond`` is truthy, up to ``limit`` (null = none)."""
    spec, name, inner_ctx = _iteration(args, ctx, "$filter", ("input", "cond"), ("as", "limit"))
    f_input = compile_expr(spec["input"], ctx.at("input"))
    cond = compile_expr(spec["cond"], inner_ctx.at("cond"))
    f_limit = compile_expr(spec["limit"], ctx.at("limit")) if "limit" in spec else None
    if f_limit is not None:
        c = const_value(f_limit)
        if c is not MISSING and c is not None and (not is_number(c) or (int_value(c) or 0) < 1):
            raise ctx.at("limit").error("$filter: limit must be a positive integer")

    def filter_(doc: Any, v: Vars) -> Any:
        a = f_input(doc, v)
        if _nullish(a):
            return None
        if type(a) is not list:
            raise ExprError("$filter", f"input to $filter must be an array not {bson_type(a)}")
        limit = len(a)
        if f_limit is not None:
            lv = f_limit(doc, v)
            if not _nullish(lv):
                li = int_value(lv) if is_number(lv) else None
                if li is None:
                    raise ExprError(
                        "$filter",
                        f"$filter: limit must be represented as a 32-bit integral value: {lv}",
                    )
                if li < 1:
                    raise ExprError("$filter", f"$filter: limit must be greater than 0: {li}")
                limit = li
        out: list[Any] = []
        inner = dict(v)
        for el in a:
            inner[name] = el
            if truthy(cond(doc, inner)):
                out.append(el)
                if len(out) >= limit:
                    break
        return out

    return filter_


@operator("$map")
def _map(args: Any, ctx: Ctx) -> Expr:
    """``$map``: apply ``in`` to each element (``as`` names the element, default ``this``)."""
    spec, name, inner_ctx = _iteration(args, ctx, "$map", ("input", "in"), ("as",))
    f_input = compile_expr(spec["input"], ctx.at("input"))
    body = compile_expr(spec["in"], inner_ctx.at("in"))

    def map_(doc: Any, v: Vars) -> Any:
        a = f_input(doc, v)
        if _nullish(a):
            return None
        if type(a) is not list:
            raise ExprError("$map", f"input to $map must be an array not {bson_type(a)}")
        inner = dict(v)
        out: list[Any] = []
        for el in a:
            inner[name] = el
            r = body(doc, inner)
            out.append(None if r is MISSING else r)  # arrays cannot hold missing
        return out

    return map_


@operator("$reduce")
def _reduce(args: Any, ctx: Ctx) -> Expr:
    """``$reduce``: fold ``in`` over the array with ``$$value`` (accumulator) and ``$$this``."""
    spec = named_args(args, ctx, "$reduce", ("input", "initialValue", "in"))
    f_input = compile_expr(spec["input"], ctx.at("input"))
    f_init = compile_expr(spec["initialValue"], ctx.at("initialValue"))
    body = compile_expr(spec["in"], ctx.at("in").bind("this", "value"))

    def reduce_(doc: Any, v: Vars) -> Any:
        a = f_input(doc, v)
        if _nullish(a):
            return None
        if type(a) is not list:
            raise ExprError("$reduce", f"input to $reduce must be an array not {bson_type(a)}")
        acc = f_init(doc, v)
        inner = dict(v)
        for el in a:
            inner["this"] = el
            inner["value"] = acc
            acc = body(doc, inner)
        return acc

    return reduce_


def _sort_key_path(value: Any, parts: tuple[str, ...]) -> Any:
    """A ``$sortArray`` key: dotted lookup with no implicit array traversal."""
    for p in parts:
        if not isinstance(value, dict):
            return None
        value = value.get(p, MISSING)
        if value is MISSING:
            return None
    return value


@operator("$sortArray")
def _sort_array(args: Any, ctx: Ctx) -> Expr:
    """``$sortArray``: ``sortBy`` is 1/-1 (whole values) or ``{field: ±1, ...}``."""
    spec = named_args(args, ctx, "$sortArray", ("input", "sortBy"))
    f_input = compile_expr(spec["input"], ctx.at("input"))
    sort_by = spec["sortBy"]
    sctx = ctx.at("sortBy")

    def direction(x: Any, c: Ctx) -> bool:
        if not is_number(x) or int_value(x) not in (1, -1):
            raise c.error("$sortArray sort direction must be 1 or -1")
        return int_value(x) == -1

    keys: list[tuple[tuple[str, ...], bool]] = []
    whole_desc = False
    if isinstance(sort_by, dict):
        if not sort_by:
            raise sctx.error("$sortArray sortBy must not be an empty object")
        for k, d in sort_by.items():
            if not k or k.startswith("$") or any(p == "" for p in k.split(".")):
                raise sctx.at(k).error(f"$sortArray invalid sort field '{k}'")
            keys.append((tuple(k.split(".")), direction(d, sctx.at(k))))
    else:
        whole_desc = direction(sort_by, sctx)

    def sort_array(doc: Any, v: Vars) -> Any:
        a = f_input(doc, v)
        if _nullish(a):
            return None
        if type(a) is not list:
            raise ExprError(
                "$sortArray",
                f"The input argument to $sortArray must be an array, but was of type: {bson_type(a)}",
            )
        if not keys:
            return sorted(a, key=SortKey, reverse=whole_desc)
        out = list(a)
        # Stable multi-key sort: sort by the least significant key first.
        for parts, desc in reversed(keys):

            def key(el: Any, p: tuple[str, ...] = parts) -> SortKey:
                return SortKey(_sort_key_path(el, p))

            out.sort(key=key, reverse=desc)
        return out

    return sort_array


@operator("$zip")
def _zip(args: Any, ctx: Ctx) -> Expr:
    """``$zip``: transpose ``inputs``; ``useLongestLength`` pads with ``defaults`` or null."""
    spec = named_args(args, ctx, "$zip", ("inputs",), ("useLongestLength", "defaults"))
    longest = spec.get("useLongestLength", False)
    if not isinstance(longest, bool):
        raise ctx.at("useLongestLength").error("useLongestLength must be a bool")
    if "defaults" in spec and not longest:
        raise ctx.at("defaults").error("cannot specify defaults unless useLongestLength is true")
    f_inputs = compile_expr(spec["inputs"], ctx.at("inputs"))
    f_defaults = compile_expr(spec["defaults"], ctx.at("defaults")) if "defaults" in spec else None

    def zip_(doc: Any, v: Vars) -> Any:
        inputs = f_inputs(doc, v)
        if type(inputs) is not list:
            raise ExprError(
                "$zip", f"$zip found a non-array expression in input: {bson_type(inputs)}"
            )
        arrays: list[list[Any]] = []
        for a in inputs:
            if _nullish(a):
                return None
            if type(a) is not list:
                raise ExprError(
                    "$zip", f"$zip found a non-array expression in input: {bson_type(a)}"
                )
            arrays.append(a)
        defaults: list[Any] = [None] * len(arrays)
        if f_defaults is not None:
            d = f_defaults(doc, v)
            if type(d) is not list:
                raise ExprError("$zip", f"defaults must be an array, found: {bson_type(d)}")
            if len(d) != len(arrays):
                raise ExprError(
                    "$zip", "defaults and inputs must be arrays of the same length"
                )
            defaults = d
        if not arrays:
            return []
        n = max(map(len, arrays)) if longest else min(map(len, arrays))
        return [
            [arr[i] if i < len(arr) else defaults[j] for j, arr in enumerate(arrays)]
            for i in range(n)
        ]

    return zip_
