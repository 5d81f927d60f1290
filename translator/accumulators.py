"""`$group` accumulators with MongoDB's null/missing/type rules, built to be *mergeable*.

A window keeps per-group accumulator states. Stage 1 (per source partition) folds a
batch of documents into states; stage 2 merges those partial states across batches
and partitions, and finalizes them when the window closes. So every accumulator is:

- ``extract(doc, vars) -> value``: the per-document argument (compiled once);
- ``init() -> state``: a fresh state (plain picklable Python data: lists/tuples/dicts/numbers);
- ``add(state, value) -> state``: fold one extracted value (may mutate and return ``state``);
- ``merge(a, b) -> state``: combine two states, ``b`` holding *later* documents than ``a``
  (may mutate and return ``a``; never mutates ``b``);
- ``final(state) -> value``: the result document field.

``AccSpec.fold(state, values)`` folds a whole batch of extracted values at once (faster
than calling ``add`` per value for ``$count``, ``$first``, ``$push``...).

The registry :data:`ACCUMULATORS` maps ``"$sum"`` etc. to a compile function
``(arg_spec, ctx) -> AccSpec``; no if-chains over names.

Exactness: ``final(merge(fold(a), fold(b)))`` equals ``final(fold(a + b))`` bit for bit, for
any split of the documents. Floating-point sums are therefore kept *exactly* (every finite
double is m / 2**k, so a double sum is an exact Python int over a power of two,
converted once, correctly rounded, at ``final``); MongoDB's double-double
summation gives the same result except in pathological cancellations. For the same reason
``$stdDevPop``/``$stdDevSamp`` keep exact ``(n, sum, sum of squares)`` rather than Welford /
Chan (whose float merge depends on the split); the variance is computed exactly, then
rounded once before the square root. Decimal128 sums are exact too and rounded to 34
digits at ``final``; doubles mixed into a decimal sum join as their (exact, correctly
rounded) double sum written with Python's shortest repr (``1 + 0.1`` -> ``1.1``).

``$median``/``$percentile``: Atlas only accepts ``method: "approximate"`` (a t-digest); on
the data sizes of a window its answer is the exact *discrete* percentile, the value at
0-based rank ``max(0, ceil(p * n) - 1)`` of the sorted inputs (``p = 1`` -> the maximum),
which reproduces every example in MongoDB's docs. We compute that exactly (keeping all
numeric inputs as doubles); results are doubles, NaN inputs are ignored, no input -> null.

``$top``/``$bottom``/``$topN``/``$bottomN``: ties in ``sortBy`` keep the first document
seen (MongoDB's documented examples); ``$bottomN`` returns its picks in ``sortBy`` order
with tied documents in arrival order (docs: ``[[A, 1], [D, null], [E, null]]``).
``n`` is a constant positive integer, or an expression of the group ``_id`` (evaluated
once per group, with the ``_id`` as the document when it is an object and an empty
document otherwise), as MongoDB allows
(https://www.mongodb.com/docs/manual/reference/operator/aggregation/firstN/).
"""

from __future__ import annotations

import decimal
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass
from functools import cmp_to_key
from typing import Any, NamedTuple

from bson import Decimal128, Int64, MinKey
from bson.decimal128 import create_decimal128_context

from translator.errors import TranslateError, did_you_mean
from translator.mql.expr import Ctx, Expr, ExprError, Vars, compile_expr, const_value, get_path
from translator.mql.operators.accumulator_exprs import n_value
from translator.mql.values import (
    INT32_MAX,
    INT32_MIN,
    INT64_MAX,
    INT64_MIN,
    MISSING,
    bson_type,
    compare,
    hashable,
    to_decimal,
)


@dataclass(frozen=True)
class AccSpec:
    name: str
    extract: Expr
    init: Callable[[], Any]
    add: Callable[[Any, Any], Any]
    merge: Callable[[Any, Any], Any]
    final: Callable[[Any], Any]
    # Optional batch fold ``(state, values) -> state``; use :meth:`fold`, which falls back to ``add``.
    add_many: Callable[[Any, list[Any]], Any] | None = None
    # Optional fold of a column known to hold only plain ``int`` values, from its summary
    # (computed once and shared by every accumulator of the same argument).
    add_ints: Callable[[Any, IntColumn], Any] | None = None
    # Optional state of a single plain ``int`` value (same as ``add(init(), v)``): with
    # many groups, most groups of a batch hold one document.
    from_int: Callable[[int], Any] | None = None

    def fold(self, state: Any, values: list[Any]) -> Any:
        """Fold a batch of extracted values into ``state`` (same result as ``add`` per value)."""
        if self.add_many is not None:
            return self.add_many(state, values)
        add = self.add
        for v in values:
            state = add(state, v)
        return state

    def fold_ints(self, state: Any, col: IntColumn) -> Any:
        """:meth:`fold` for a column of plain ints (same result), using its summary."""
        if self.add_ints is not None:
            return self.add_ints(state, col)
        return self.fold(state, list(col.values))


class IntColumn(NamedTuple):
    """A non-empty column of plain ``int`` values with its count, minimum, maximum and
    sum, each computed once in C (``len``/``min``/``max``/``sum``). A tuple: one is
    made per group per batch."""

    values: list[int]
    n: int
    lo: int
    hi: int
    total: int

    @staticmethod
    def of(values: list[int]) -> IntColumn:
        return IntColumn(values, len(values), min(values), max(values), sum(values))


AccCompiler = Callable[[Any, Ctx], AccSpec]
ACCUMULATORS: dict[str, AccCompiler] = {}


def accumulator(*names: str) -> Callable[[AccCompiler], AccCompiler]:
    def deco(fn: AccCompiler) -> AccCompiler:
        for n in names:
            ACCUMULATORS[n] = fn
        return fn

    return deco


def compile_accumulator(op: str, arg: Any, ctx: Ctx, group_id: Expr | None = None) -> AccSpec:
    """``group_id`` is the ``$group``'s compiled ``_id``, for an ``n`` computed from it."""
    fn = ACCUMULATORS.get(op)
    if fn is None:
        raise TranslateError(
            ctx.path, f"unknown group accumulator '{op}'{did_you_mean(op, ACCUMULATORS)}"
        )
    if op in N_OPS and group_id is not None and isinstance(arg, dict) and "n" in arg:
        n_expr = compile_expr(arg["n"], ctx.at("n"))
        if const_value(n_expr) is MISSING:
            return _keyed_n(op, fn, arg, ctx, n_expr, group_id)
    return fn(arg, ctx)


# Accumulators whose ``n`` may be computed from the group ``_id``.
N_OPS = frozenset({"$firstN", "$lastN", "$maxN", "$minN", "$topN", "$bottomN"})
KEYED_N_CACHE = 1024  # distinct n values whose accumulator stays compiled


def _keyed_n(op: str, fn: AccCompiler, arg: dict[str, Any], ctx: Ctx, n_expr: Expr, gid: Expr) -> AccSpec:
    """An N accumulator whose ``n`` is an expression of the group ``_id``.

    Each extracted value carries its group's ``n`` (the ``_id`` is evaluated again per
    document: only these accumulators pay for it), and the state is ``[n, inner]`` where
    ``inner`` is the state of the same accumulator compiled with that constant ``n``
    (compiled once per distinct ``n``). A bad ``n`` fails the document, which goes to
    the DLQ with the reason."""
    specs: dict[int, AccSpec] = {}

    def spec_for(n: int) -> AccSpec:
        s = specs.get(n)
        if s is None:
            s = fn({**arg, "n": n}, ctx)
            if len(specs) < KEYED_N_CACHE:
                specs[n] = s
        return s

    def n_of(key: Any) -> int:
        return n_value(op, n_expr(key if isinstance(key, dict) else {}, {}))

    def extract(doc: Any, v: Vars) -> Any:
        key = gid(doc, v)
        n = n_of(key)
        return (n, spec_for(n).extract(doc, v))

    def add(s: list[Any] | None, nv: tuple[int, Any]) -> list[Any]:
        n, value = nv
        spec = spec_for(n)
        if s is None:
            s = [n, spec.init()]
        s[1] = spec.add(s[1], value)
        return s

    def merge(a: list[Any] | None, b: list[Any] | None) -> list[Any] | None:
        if b is None:
            return a
        spec = spec_for(b[0])
        if a is None:
            return [b[0], spec.merge(spec.init(), b[1])]
        a[1] = spec.merge(a[1], b[1])
        return a

    def final(s: list[Any] | None) -> Any:
        if s is None:
            empty = spec_for(1)
            return empty.final(empty.init())
        return spec_for(s[0]).final(s[1])

    return AccSpec(op, extract, lambda: None, add, merge, final)


# ---- shared helpers -------------------------------------------------------------------


def _unary(op: str, arg: Any, ctx: Ctx) -> Expr:
    """The single expression argument of ``{$op: <expression>}`` (MongoDB rejects arrays)."""
    if isinstance(arg, list):
        raise ctx.error(f"The {op} accumulator is a unary operator; pass one expression, not an array")
    return compile_expr(arg, ctx)


def _named(op: str, arg: Any, ctx: Ctx, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict[str, Any]:
    """Check the ``{field: ...}`` object argument of $topN, $percentile etc."""
    if not isinstance(arg, dict):
        raise ctx.error(f"{op} takes an object {{{', '.join(required)}}}, got {bson_type(arg)}")
    allowed = set(required) | set(optional)
    for k in arg:
        if k not in allowed:
            raise ctx.at(k).error(f"unknown argument '{k}' to {op}{did_you_mean(k, allowed)}")
    for k in required:
        if k not in arg:
            raise ctx.error(f"{op} requires '{k}'")
    return arg


def _positive_n(op: str, spec: Any, ctx: Ctx) -> int:
    """``n`` of $topN/$firstN/...: a constant positive integer (compile-time check)."""
    c = ctx.at("n")
    value = const_value(compile_expr(spec, c))
    n: int | None = None
    t = type(value)
    if t is int or t is Int64 or (t is float and value.is_integer()):
        n = int(value)
    elif t is Decimal128:
        d = value.to_decimal()
        if d.is_finite() and d == d.to_integral_value():
            n = int(d)
    if value is MISSING:
        raise c.error(f"{op} needs 'n' to be a constant positive integer; expressions are not supported")
    if n is None or n < 1:
        raise c.error(f"{op} needs 'n' to be a positive integer, got {value!r}")
    return n


def _spec(
    name: str,
    extract: Expr,
    init: Callable[[], Any],
    add: Callable[[Any, Any], Any],
    merge: Callable[[Any, Any], Any],
    final: Callable[[Any], Any],
    add_many: Callable[[Any, list[Any]], Any] | None = None,
    add_ints: Callable[[Any, IntColumn], Any] | None = None,
    from_int: Callable[[int], Any] | None = None,
) -> AccSpec:
    return AccSpec(name, extract, init, add, merge, final, add_many, add_ints, from_int)


def _const_one(doc: Any, v: Vars) -> Any:
    return 1


# ---- exact numeric summation ($sum, $avg) ---------------------------------------------

_EXACT = decimal.Context(
    prec=decimal.MAX_PREC, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN, traps=[decimal.InvalidOperation]
)
_D128 = create_decimal128_context()  # rounds a result to a valid Decimal128 (34 digits, clamped)
_DZERO = decimal.Decimal(0)

# Sum state: [kind, int total, double total numerator, decimal total, nan, +inf, -inf,
# count, double total exponent]: the doubles sum exactly to numerator / 2**exponent (every
# finite double is m / 2**k; the exponent starts at 64 and grows to the largest k seen,
# at most 1074). kind: 0 = all int32 so far, 1 = a long was seen, 2 = a double, 3 = a
# Decimal128.
_E0 = 64
_TWO_E0 = 2.0**_E0  # v * 2**64 is exact; when it is integral, int() of it is v's numerator
# For code that writes the sum and stdDev states out (translator/fastpath.py RowFold).
ZERO_DECIMAL, DOUBLE_SCALE = _DZERO, _E0


def _sum_init() -> list[Any]:
    return [0, 0, 0, _DZERO, 0, 0, 0, 0, _E0]


def _sum_add(s: list[Any], v: Any) -> list[Any]:
    t = type(v)
    if t is int:
        s[1] += v
        if (v > INT32_MAX or v < INT32_MIN) and s[0] < 1:
            s[0] = 1
    elif t is float:
        m = v * _TWO_E0
        if m.is_integer():  # the common case: no bits below 2**-64, not inf/nan
            e = s[8]
            s[2] += int(m) if e == _E0 else int(m) << (e - _E0)
        elif v - v == 0.0:
            num, den = v.as_integer_ratio()
            k = den.bit_length() - 1
            e = s[8]
            if k <= e:
                s[2] += num << (e - k)
            else:
                s[2] = (s[2] << (k - e)) + num
                s[8] = k
        elif v != v:
            s[4] += 1
        elif v > 0:
            s[5] += 1
        else:
            s[6] += 1
        if s[0] < 2:
            s[0] = 2
    elif t is Int64:
        s[1] += int(v)
        if s[0] < 1:
            s[0] = 1
    elif t is Decimal128:
        d = v.to_decimal()
        if d.is_finite():
            s[3] = _EXACT.add(s[3], d)
        elif d.is_nan():
            s[4] += 1
        elif d > 0:
            s[5] += 1
        else:
            s[6] += 1
        s[0] = 3
    else:  # null, missing, strings, bools, arrays...: $sum/$avg ignore non-numbers
        return s
    s[7] += 1
    return s


def _sum_add_many(s: list[Any], values: list[Any]) -> list[Any]:
    """Batch fold: int32s and "plain" doubles accumulate in locals, the rest via ``_sum_add``."""
    itotal = 0
    ftotal = 0  # numerator over 2**64
    n = 0
    has_float = False
    for v in values:
        t = type(v)
        if t is int and INT32_MIN <= v <= INT32_MAX:
            itotal += v
            n += 1
        elif t is float and (m := v * _TWO_E0).is_integer():
            ftotal += int(m)
            has_float = True
            n += 1
        else:
            _sum_add(s, v)
    s[1] += itotal
    s[7] += n
    if has_float:
        e = s[8]
        s[2] += ftotal if e == _E0 else ftotal << (e - _E0)
        if s[0] < 2:
            s[0] = 2
    return s


def _sum_add_ints(s: list[Any], col: IntColumn) -> list[Any]:
    s[1] += col.total
    s[7] += col.n
    if s[0] < 1 and (col.lo < INT32_MIN or col.hi > INT32_MAX):
        s[0] = 1  # a long was seen: the sum is a long (as _sum_add decides per value)
    return s


def _sum_from_int(v: int) -> list[Any]:
    return [0 if INT32_MIN <= v <= INT32_MAX else 1, v, 0, _DZERO, 0, 0, 0, 1, _E0]


def _sum_merge(a: list[Any], b: list[Any]) -> list[Any]:
    if b[0] > a[0]:
        a[0] = b[0]
    a[1] += b[1]
    ea, eb = a[8], b[8]
    if ea >= eb:
        a[2] += b[2] << (ea - eb)
    else:
        a[2] = (a[2] << (eb - ea)) + b[2]
        a[8] = eb
    if b[3]:
        a[3] = _EXACT.add(a[3], b[3])
    a[4] += b[4]
    a[5] += b[5]
    a[6] += b[6]
    a[7] += b[7]
    return a


def _ratio_to_float(num: int, den: int) -> float:
    try:
        return num / den  # int / int is correctly rounded in CPython
    except OverflowError:
        return math.inf if num > 0 else -math.inf


def _special(s: list[Any]) -> float | None:
    """The NaN/inf result when the inputs held non-finite numbers, else None."""
    nan, pinf, ninf = s[4], s[5], s[6]
    if nan or (pinf and ninf):
        return math.nan
    if pinf:
        return math.inf
    if ninf:
        return -math.inf
    return None


def _exact_decimal_total(s: list[Any]) -> decimal.Decimal:
    """Decimal mode: decimals + ints exactly, plus the doubles' correctly rounded sum."""
    total = _EXACT.add(s[3], decimal.Decimal(s[1]))
    if s[2]:
        total = _EXACT.add(total, to_decimal(_ratio_to_float(s[2], 1 << s[8])))
    return total


def _d128(value: decimal.Decimal) -> Decimal128:
    return Decimal128(_D128.create_decimal(value))


def _special_decimal(sp: float) -> Decimal128:
    if sp != sp:
        return Decimal128("NaN")
    return Decimal128("Infinity" if sp > 0 else "-Infinity")


def _sum_final(s: list[Any]) -> Any:
    kind = s[0]
    if kind >= 2:
        sp = _special(s)
        if kind == 3:
            if sp is not None:
                return _special_decimal(sp)
            return _d128(_exact_decimal_total(s))
        if sp is not None:
            return sp
        e = s[8]
        return _ratio_to_float((s[1] << e) + s[2], 1 << e)
    total = s[1]
    if kind == 0 and INT32_MIN <= total <= INT32_MAX:
        return total
    if INT64_MIN <= total <= INT64_MAX:
        return Int64(total)
    return float(total)  # MongoDB falls back to double when a long sum overflows


def _avg_final(s: list[Any]) -> Any:
    n = s[7]
    if n == 0:
        return None
    if s[0] < 2 and not (s[2] or s[4] or s[5] or s[6]):
        return s[1] / n  # ints only: the same quotient as below without the 2**e scale
    sp = _special(s)
    if s[0] == 3:
        if sp is not None:
            return _special_decimal(sp)
        return Decimal128(_D128.divide(_exact_decimal_total(s), decimal.Decimal(n)))
    if sp is not None:
        return sp
    e = s[8]
    return ((s[1] << e) + s[2]) / (n << e)


@accumulator("$sum")
def _acc_sum(arg: Any, ctx: Ctx) -> AccSpec:
    """$sum: numbers only (others ignored); int -> long on overflow -> double; 0 for none."""
    return _spec("$sum", _unary("$sum", arg, ctx), _sum_init, _sum_add, _sum_merge, _sum_final, _sum_add_many, _sum_add_ints, _sum_from_int)


@accumulator("$avg")
def _acc_avg(arg: Any, ctx: Ctx) -> AccSpec:
    """$avg: numbers only; null when there are none; double (Decimal128 if any decimal)."""
    return _spec("$avg", _unary("$avg", arg, ctx), _sum_init, _sum_add, _sum_merge, _avg_final, _sum_add_many, _sum_add_ints, _sum_from_int)


# ---- $count ---------------------------------------------------------------------------


def _count_init() -> int:
    return 0


def _count_add(s: int, v: Any) -> int:
    return s + 1


def _count_add_many(s: int, values: list[Any]) -> int:
    return s + len(values)


def _count_add_ints(s: int, col: IntColumn) -> int:
    return s + col.n


def _count_from_int(v: int) -> int:
    return 1


def _count_merge(a: int, b: int) -> int:
    return a + b


def _int_or_long(n: int) -> Any:
    return n if n <= INT32_MAX else Int64(n)


@accumulator("$count")
def _acc_count(arg: Any, ctx: Ctx) -> AccSpec:
    """$count: {} counts the group's documents (int, long beyond int32)."""
    if not isinstance(arg, dict) or arg:
        raise ctx.error("$count takes no arguments, i.e. $count: {}")
    return _spec("$count", _const_one, _count_init, _count_add, _count_merge, _int_or_long, _count_add_many, _count_add_ints, _count_from_int)


# ---- $min / $max ----------------------------------------------------------------------


def _none() -> None:
    return None


def _max_add(s: Any, v: Any) -> Any:
    if v is None or v is MISSING:
        return s
    if s is None:
        return v
    t = type(v)
    if t is type(s) and (t is int or t is str):
        return v if v > s else s
    return v if compare(v, s) > 0 else s


def _min_add(s: Any, v: Any) -> Any:
    if v is None or v is MISSING:
        return s
    if s is None:
        return v
    t = type(v)
    if t is type(s) and (t is int or t is str):
        return v if v < s else s
    return v if compare(v, s) < 0 else s


def _all_int(values: list[Any]) -> bool:
    return set(map(type, values)) == _INT_ONLY


_INT_ONLY = {int}


def _max_add_many(s: Any, values: list[Any]) -> Any:
    # Plain ints (the common case) fold with the builtin; ties keep the earlier value.
    if values and _all_int(values):
        return _max_add(s, max(values))
    for v in values:
        s = _max_add(s, v)
    return s


def _min_add_many(s: Any, values: list[Any]) -> Any:
    if values and _all_int(values):
        return _min_add(s, min(values))
    for v in values:
        s = _min_add(s, v)
    return s


def _max_add_ints(s: Any, col: IntColumn) -> Any:
    return _max_add(s, col.hi)


def _min_add_ints(s: Any, col: IntColumn) -> Any:
    return _min_add(s, col.lo)


def _identity(s: Any) -> Any:
    return s


@accumulator("$max")
def _acc_max(arg: Any, ctx: Ctx) -> AccSpec:
    """$max: BSON order, null/missing ignored, null when nothing else; ties keep the first."""
    return _spec("$max", _unary("$max", arg, ctx), _none, _max_add, _max_add, _identity, _max_add_many, _max_add_ints, _identity)


@accumulator("$min")
def _acc_min(arg: Any, ctx: Ctx) -> AccSpec:
    """$min: BSON order, null/missing ignored, null when nothing else; ties keep the first."""
    return _spec("$min", _unary("$min", arg, ctx), _none, _min_add, _min_add, _identity, _min_add_many, _min_add_ints, _identity)


# ---- $first / $last -------------------------------------------------------------------
# State: [] before any document, [value] after (value may be null: that is kept).


def _empty_list() -> list[Any]:
    return []


def _first_add(s: list[Any], v: Any) -> list[Any]:
    if s:
        return s
    return [None if v is MISSING else v]


def _first_add_many(s: list[Any], values: list[Any]) -> list[Any]:
    if s or not values:
        return s
    return _first_add(s, values[0])


def _first_merge(a: list[Any], b: list[Any]) -> list[Any]:
    return a if a else list(b)


def _last_add(s: list[Any], v: Any) -> list[Any]:
    return [None if v is MISSING else v]


def _last_add_many(s: list[Any], values: list[Any]) -> list[Any]:
    if not values:
        return s
    return _last_add(s, values[-1])


def _last_merge(a: list[Any], b: list[Any]) -> list[Any]:
    return list(b) if b else a


def _single_final(s: list[Any]) -> Any:
    return s[0] if s else None


@accumulator("$first")
def _acc_first(arg: Any, ctx: Ctx) -> AccSpec:
    """$first: the first document's value, null included; a missing field gives null."""
    return _spec("$first", _unary("$first", arg, ctx), _empty_list, _first_add, _first_merge, _single_final, _first_add_many)


@accumulator("$last")
def _acc_last(arg: Any, ctx: Ctx) -> AccSpec:
    """$last: the last document's value, null included; a missing field gives null."""
    return _spec("$last", _unary("$last", arg, ctx), _empty_list, _last_add, _last_merge, _single_final, _last_add_many)


# ---- $push / $addToSet / $mergeObjects ------------------------------------------------


def _push_add(s: list[Any], v: Any) -> list[Any]:
    if v is not MISSING:
        s.append(v)
    return s


def _push_add_many(s: list[Any], values: list[Any]) -> list[Any]:
    s.extend([v for v in values if v is not MISSING])
    return s


def _push_merge(a: list[Any], b: list[Any]) -> list[Any]:
    a.extend(b)
    return a


def _list_copy(s: list[Any]) -> list[Any]:
    return list(s)


@accumulator("$push")
def _acc_push(arg: Any, ctx: Ctx) -> AccSpec:
    """$push: every value in arrival order, nulls included, missing skipped."""
    return _spec("$push", _unary("$push", arg, ctx), _empty_list, _push_add, _push_merge, _list_copy, _push_add_many)


_NAN_KEY = ("$nan",)


def _set_key(v: Any) -> Any:
    """``hashable`` plus MongoDB equalities it misses: NaN == NaN, Decimal128 0.5 == 0.5."""
    t = type(v)
    if t is str or t is int:
        return v
    if t is float:
        if v != v:
            return _NAN_KEY
    elif t is Decimal128:
        d = v.to_decimal()
        if d.is_nan():
            return _NAN_KEY
        if d.is_finite() and d != d.to_integral_value():
            f = float(d)
            if decimal.Decimal(f) == d:
                return f
    return hashable(v)


def _dict_init() -> dict[Any, Any]:
    return {}


def _set_add(s: dict[Any, Any], v: Any) -> dict[Any, Any]:
    if v is not MISSING:
        k = _set_key(v)
        if k not in s:
            s[k] = v
    return s


def _set_merge(a: dict[Any, Any], b: dict[Any, Any]) -> dict[Any, Any]:
    for k, v in b.items():
        if k not in a:
            a[k] = v
    return a


def _set_final(s: dict[Any, Any]) -> list[Any]:
    return list(s.values())


@accumulator("$addToSet")
def _acc_add_to_set(arg: Any, ctx: Ctx) -> AccSpec:
    """$addToSet: distinct values by MongoDB equality (1 == 1.0), first-seen order, missing skipped."""
    return _spec("$addToSet", _unary("$addToSet", arg, ctx), _dict_init, _set_add, _set_merge, _set_final)


def _merge_objects_add(s: dict[str, Any], v: Any) -> dict[str, Any]:
    if v is None or v is MISSING:
        return s
    if not isinstance(v, dict):
        raise ExprError("$mergeObjects", f"requires object inputs, but input is of type {bson_type(v)}")
    s.update(v)
    return s


def _merge_objects_merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    a.update(b)
    return a


def _dict_copy(s: dict[str, Any]) -> dict[str, Any]:
    return dict(s)


@accumulator("$mergeObjects")
def _acc_merge_objects(arg: Any, ctx: Ctx) -> AccSpec:
    """$mergeObjects: later documents overwrite earlier fields; null ignored; non-objects error."""
    return _spec(
        "$mergeObjects", _unary("$mergeObjects", arg, ctx), _dict_init, _merge_objects_add, _merge_objects_merge, _dict_copy
    )


# ---- $stdDevPop / $stdDevSamp ---------------------------------------------------------
# State: [n, int sum, int sum of squares, double sum numerator, double sum-of-squares
# numerator, non-finite count, exponent e]: doubles sum to num / 2**e and their squares to
# num / 2**(2e). Exact, so any split merges identically.


def _sd_init() -> list[int]:
    return [0, 0, 0, 0, 0, 0, _E0]


def _sd_add(s: list[int], v: Any) -> list[int]:
    t = type(v)
    if t is int or t is Int64:
        i = int(v)
        s[1] += i
        s[2] += i * i
    elif t is float or t is Decimal128:
        x = v if t is float else float(v.to_decimal())
        m = x * _TWO_E0
        if m.is_integer():
            e = s[6]
            q = int(m) if e == _E0 else int(m) << (e - _E0)
            s[3] += q
            s[4] += q * q
        elif x - x == 0.0:
            num, den = x.as_integer_ratio()
            k = den.bit_length() - 1
            e = s[6]
            if k <= e:
                q = num << (e - k)
                s[3] += q
                s[4] += q * q
            else:
                d = k - e
                s[3] = (s[3] << d) + num
                s[4] = (s[4] << (2 * d)) + num * num
                s[6] = k
        else:
            s[5] += 1
    else:
        return s
    s[0] += 1
    return s


def _sd_add_many(s: list[int], values: list[Any]) -> list[int]:
    if values and _all_int(values):
        s[0] += len(values)
        s[1] += sum(values)
        s[2] += sum(map(operator.mul, values, values))
        return s
    for v in values:
        s = _sd_add(s, v)
    return s


def _sd_add_ints(s: list[int], col: IntColumn) -> list[int]:
    s[0] += col.n
    s[1] += col.total
    s[2] += sum(map(operator.mul, col.values, col.values))
    return s


def _sd_from_int(v: int) -> list[int]:
    return [1, v, v * v, 0, 0, 0, _E0]


def _sd_merge(a: list[int], b: list[int]) -> list[int]:
    for i in (0, 1, 2, 5):
        a[i] += b[i]
    ea, eb = a[6], b[6]
    if ea >= eb:
        d = ea - eb
        a[3] += b[3] << d
        a[4] += b[4] << (2 * d)
    else:
        d = eb - ea
        a[3] = (a[3] << d) + b[3]
        a[4] = (a[4] << (2 * d)) + b[4]
        a[6] = eb
    return a


def _variance(s: list[int], sample: bool) -> float | None:
    n = s[0]
    if n == 0 or (sample and n == 1):
        return None
    if s[5]:
        return math.nan
    if not (s[3] or s[4]):
        # Ints only: the same exact quotient as below without the 2**(2e) scale.
        num = n * s[2] - s[1] * s[1]
        try:
            return num / (n * (n - 1) if sample else n * n)
        except OverflowError:
            return math.inf
    e = s[6]
    s1 = (s[1] << e) + s[3]
    s2 = (s[2] << (2 * e)) + s[4]
    num = n * s2 - s1 * s1  # n**2 * variance, scaled by 2**(2e); exact and >= 0
    den = (n * (n - 1) if sample else n * n) << (2 * e)
    try:
        return num / den
    except OverflowError:
        return math.inf


def _sd_pop_final(s: list[int]) -> float | None:
    var = _variance(s, False)
    return None if var is None else math.sqrt(var)


def _sd_samp_final(s: list[int]) -> float | None:
    var = _variance(s, True)
    return None if var is None else math.sqrt(var)


@accumulator("$stdDevPop")
def _acc_std_dev_pop(arg: Any, ctx: Ctx) -> AccSpec:
    """$stdDevPop: population standard deviation of the numbers (double); null for none."""
    return _spec("$stdDevPop", _unary("$stdDevPop", arg, ctx), _sd_init, _sd_add, _sd_merge, _sd_pop_final, _sd_add_many, _sd_add_ints, _sd_from_int)


@accumulator("$stdDevSamp")
def _acc_std_dev_samp(arg: Any, ctx: Ctx) -> AccSpec:
    """$stdDevSamp: sample standard deviation (double); null for fewer than two numbers."""
    return _spec("$stdDevSamp", _unary("$stdDevSamp", arg, ctx), _sd_init, _sd_add, _sd_merge, _sd_samp_final, _sd_add_many, _sd_add_ints, _sd_from_int)


# ---- $median / $percentile ------------------------------------------------------------


def _pct_add(s: list[float], v: Any) -> list[float]:
    t = type(v)
    if t is int or t is float or t is Int64:
        x = float(v)
    elif t is Decimal128:
        x = float(v.to_decimal())
    else:
        return s
    if x == x:  # NaN has no rank: ignored
        s.append(x)
    return s


def _rank(n: int, p: float) -> int:
    """0-based rank of the discrete ``p`` percentile among ``n`` sorted values."""
    if p >= 1.0:
        return n - 1
    return max(0, math.ceil(n * p) - 1)


def _method(op: str, d: dict[str, Any], ctx: Ctx) -> None:
    m = d["method"]
    if m != "approximate":
        raise ctx.at("method").error(f"{op} 'method' must be 'approximate', got {m!r}")


@accumulator("$median")
def _acc_median(arg: Any, ctx: Ctx) -> AccSpec:
    """$median: {input, method: "approximate"}; the discrete 50th percentile as a double."""
    d = _named("$median", arg, ctx, ("input", "method"))
    _method("$median", d, ctx)

    def final(s: list[float]) -> float | None:
        if not s:
            return None
        return sorted(s)[_rank(len(s), 0.5)]

    return _spec("$median", compile_expr(d["input"], ctx.at("input")), _empty_list, _pct_add, _push_merge, final)


@accumulator("$percentile")
def _acc_percentile(arg: Any, ctx: Ctx) -> AccSpec:
    """$percentile: {input, p: [numbers in 0..1], method: "approximate"}; doubles in p's order."""
    d = _named("$percentile", arg, ctx, ("input", "p", "method"))
    _method("$percentile", d, ctx)
    pspec = d["p"]
    pc = ctx.at("p")
    if not isinstance(pspec, list) or not pspec:
        raise pc.error("$percentile 'p' must be a non-empty array of numbers from 0.0 to 1.0")
    ps: list[float] = []
    for i, x in enumerate(pspec):
        value = const_value(compile_expr(x, pc.at(i)))
        t = type(value)
        if t is Decimal128:
            value = float(value.to_decimal())
        elif t is int or t is Int64:
            value = float(value)
        if type(value) is not float or not (0.0 <= value <= 1.0):
            raise pc.at(i).error(
                f"$percentile 'p' must be an array of constant numbers from 0.0 to 1.0, got {x!r}"
            )
        ps.append(value)

    def final(s: list[float]) -> list[float] | None:
        if not s:
            return None
        srt = sorted(s)
        n = len(srt)
        return [srt[_rank(n, p)] for p in ps]

    return _spec("$percentile", compile_expr(d["input"], ctx.at("input")), _empty_list, _pct_add, _push_merge, final)


# ---- $firstN / $lastN -----------------------------------------------------------------


@accumulator("$firstN")
def _acc_first_n(arg: Any, ctx: Ctx) -> AccSpec:
    """$firstN: {input, n}; the first n values in arrival order, missing -> null."""
    d = _named("$firstN", arg, ctx, ("input", "n"))
    n = _positive_n("$firstN", d["n"], ctx)

    def add(s: list[Any], v: Any) -> list[Any]:
        if len(s) < n:
            s.append(None if v is MISSING else v)
        return s

    def add_many(s: list[Any], values: list[Any]) -> list[Any]:
        room = n - len(s)
        if room > 0:
            s.extend([None if v is MISSING else v for v in values[:room]])
        return s

    def merge(a: list[Any], b: list[Any]) -> list[Any]:
        room = n - len(a)
        if room > 0:
            a.extend(b[:room])
        return a

    return _spec("$firstN", compile_expr(d["input"], ctx.at("input")), _empty_list, add, merge, _list_copy, add_many)


@accumulator("$lastN")
def _acc_last_n(arg: Any, ctx: Ctx) -> AccSpec:
    """$lastN: {input, n}; the last n values in arrival order, missing -> null."""
    d = _named("$lastN", arg, ctx, ("input", "n"))
    n = _positive_n("$lastN", d["n"], ctx)

    def add(s: list[Any], v: Any) -> list[Any]:
        s.append(None if v is MISSING else v)
        if len(s) > n:
            del s[0]
        return s

    def add_many(s: list[Any], values: list[Any]) -> list[Any]:
        s.extend([None if v is MISSING else v for v in values[-n:]])
        if len(s) > n:
            del s[: len(s) - n]
        return s

    def merge(a: list[Any], b: list[Any]) -> list[Any]:
        a.extend(b)
        if len(a) > n:
            del a[: len(a) - n]
        return a

    return _spec("$lastN", compile_expr(d["input"], ctx.at("input")), _empty_list, add, merge, _list_copy, add_many)


# ---- bounded sorted selections: $top/$bottom/$topN/$bottomN/$maxN/$minN -------------


def _fast_compare(a: Any, b: Any) -> int:
    t = type(a)
    if t is type(b) and (t is int or t is str):
        return (a > b) - (a < b)
    return compare(a, b)


def _bounded(n: int, cmp: Callable[[Any, Any], int], key: Callable[[Any], Any] | None) -> tuple[
    Callable[[list[Any], Any], list[Any]], Callable[[list[Any], list[Any]], list[Any]]
]:
    """add/merge keeping the best ``n`` entries sorted by ``cmp``; ties keep the earlier one."""

    def insert(s: list[Any], entry: Any) -> list[Any]:
        k = entry if key is None else key(entry)
        if len(s) >= n:
            last = s[-1]
            if cmp(k, last if key is None else key(last)) >= 0:
                return s
            s.pop()
        lo, hi = 0, len(s)
        while lo < hi:  # bisect_right: after equal keys, which arrived earlier
            mid = (lo + hi) // 2
            m = s[mid]
            if cmp(k, m if key is None else key(m)) < 0:
                hi = mid
            else:
                lo = mid + 1
        s.insert(lo, entry)
        return s

    def merge(a: list[Any], b: list[Any]) -> list[Any]:
        for entry in b:
            a = insert(a, entry)
        return a

    return insert, merge


def _sort_spec(op: str, spec: Any, ctx: Ctx) -> list[tuple[tuple[str, ...], int]]:
    c = ctx.at("sortBy")
    if not isinstance(spec, dict) or not spec:
        raise c.error(f"{op} 'sortBy' must be a non-empty object such as {{score: -1}}")
    fields: list[tuple[tuple[str, ...], int]] = []
    for k, direction in spec.items():
        if not isinstance(k, str) or not k or k.startswith("$") or "" in k.split("."):
            raise c.error(f"{op} 'sortBy' has an invalid field name {k!r}")
        t = type(direction)
        if t not in (int, float, Int64) or direction not in (1, -1):
            raise c.at(k).error(f"{op} sort direction must be 1 or -1, got {direction!r}")
        fields.append((tuple(k.split(".")), int(direction)))
    return fields


_EMPTY_ARRAY_KEY = MinKey()  # an empty array sorts before null in MongoDB's $sort


def _sort_value(doc: Any, parts: tuple[str, ...], direction: int) -> Any:
    """The sort key of one field, as $sort builds it (arrays: min ascending, max descending)."""
    v = get_path(doc, parts)
    if v is MISSING:
        return None
    if isinstance(v, list):
        if not v:
            return _EMPTY_ARRAY_KEY
        best = v[0]
        for x in v[1:]:
            if compare(x, best) * direction < 0:
                best = x
        return best
    return v


def _key_cmp(dirs: list[int]) -> Callable[[Any, Any], int]:
    if len(dirs) == 1:
        d0 = dirs[0]

        def cmp1(a: Any, b: Any) -> int:
            return d0 * _fast_compare(a[0], b[0])

        return cmp1

    def cmpn(a: Any, b: Any) -> int:
        for x, y, d in zip(a, b, dirs, strict=True):
            c = _fast_compare(x, y)
            if c:
                return d * c
        return 0

    return cmpn


def _entry_key(entry: Any) -> Any:
    return entry[0]


def _top_bottom(op: str, arg: Any, ctx: Ctx, *, many: bool, bottom: bool) -> AccSpec:
    d = _named(op, arg, ctx, ("n", "sortBy", "output") if many else ("sortBy", "output"))
    n = _positive_n(op, d["n"], ctx) if many else 1
    fields = _sort_spec(op, d["sortBy"], ctx)
    output = compile_expr(d["output"], ctx.at("output"))
    dirs = [direction for _, direction in fields]
    order = _key_cmp(dirs)
    select = _key_cmp([-x for x in dirs]) if bottom else order

    if len(fields) == 1:
        [(parts0, dir0)] = fields

        def sort_key(doc: Any) -> tuple[Any, ...]:
            return (_sort_value(doc, parts0, dir0),)
    else:

        def sort_key(doc: Any) -> tuple[Any, ...]:
            return tuple(_sort_value(doc, p, di) for p, di in fields)

    def extract(doc: Any, v: Vars) -> Any:
        out = output(doc, v)
        return (sort_key(doc), None if out is MISSING else out)

    add, merge = _bounded(n, select, _entry_key)
    def entry_order(a: Any, b: Any) -> int:
        return order(a[0], b[0])

    resort = cmp_to_key(entry_order)

    if many:

        def final(s: list[Any]) -> Any:
            picked = sorted(s, key=resort) if bottom else s  # stable: ties stay in arrival order
            return [e[1] for e in picked]
    else:

        def final(s: list[Any]) -> Any:
            return s[0][1] if s else None

    return _spec(op, extract, _empty_list, add, merge, final)


@accumulator("$top")
def _acc_top(arg: Any, ctx: Ctx) -> AccSpec:
    """$top: {sortBy, output}; the output of the first document in sortBy order."""
    return _top_bottom("$top", arg, ctx, many=False, bottom=False)


@accumulator("$bottom")
def _acc_bottom(arg: Any, ctx: Ctx) -> AccSpec:
    """$bottom: {sortBy, output}; the output of the last document in sortBy order."""
    return _top_bottom("$bottom", arg, ctx, many=False, bottom=True)


@accumulator("$topN")
def _acc_top_n(arg: Any, ctx: Ctx) -> AccSpec:
    """$topN: {n, sortBy, output}; the first n outputs in sortBy order (nulls kept)."""
    return _top_bottom("$topN", arg, ctx, many=True, bottom=False)


@accumulator("$bottomN")
def _acc_bottom_n(arg: Any, ctx: Ctx) -> AccSpec:
    """$bottomN: {n, sortBy, output}; the last n outputs, returned in sortBy order."""
    return _top_bottom("$bottomN", arg, ctx, many=True, bottom=True)


def _max_min_n(op: str, arg: Any, ctx: Ctx, direction: int) -> AccSpec:
    d = _named(op, arg, ctx, ("input", "n"))
    n = _positive_n(op, d["n"], ctx)
    d0 = direction

    def cmp(a: Any, b: Any) -> int:
        return d0 * _fast_compare(a, b)

    insert, merge = _bounded(n, cmp, None)

    def add(s: list[Any], v: Any) -> list[Any]:
        if v is None or v is MISSING:
            return s
        return insert(s, v)

    return _spec(op, compile_expr(d["input"], ctx.at("input")), _empty_list, add, merge, _list_copy)


@accumulator("$maxN")
def _acc_max_n(arg: Any, ctx: Ctx) -> AccSpec:
    """$maxN: {input, n}; the n largest values (BSON order), descending; null/missing ignored."""
    return _max_min_n("$maxN", arg, ctx, -1)


@accumulator("$minN")
def _acc_min_n(arg: Any, ctx: Ctx) -> AccSpec:
    """$minN: {input, n}; the n smallest values (BSON order), ascending; null/missing ignored."""
    return _max_min_n("$minN", arg, ctx, 1)


@accumulator("$accumulator")
def _acc_javascript(arg: Any, ctx: Ctx) -> AccSpec:
    """$accumulator runs user JavaScript, which stream processors do not (rejected by name)."""
    raise ctx.error("$accumulator: JavaScript is not supported by stream processors")
