"""The MongoDB query engine for ``$match``, ``$validate`` and ``$expr``.

A query (``{a: 5, b: {$gt: 1}, $or: [...]}``) is compiled once into a closure
``doc -> bool``. Field operators are compiled by functions registered in
:data:`QUERY_OPERATORS`, top-level ones (``$and``, ``$expr``...) in
:data:`TOP_LEVEL_OPERATORS`; nothing is looked up by name per document.

Semantics follow MongoDB's find/``$match``:

* a field predicate holds when *any* value reached by the path satisfies it. Paths
  traverse arrays of documents, numeric components also index arrays, and a leaf
  array offers both itself and each of its elements (``{tags: "a"}`` matches
  ``{tags: ["a", "b"]}``, ``{a: [1, 2]}`` matches the exact array);
* ``$size`` and ``$elemMatch`` look at the array itself only, never at its elements;
* ``$ne``, ``$nin``, ``$not`` and ``$exists: false`` negate the whole path predicate;
* comparisons are "type bracketed": ``{a: {$gt: 5}}`` never matches a string, but all
  numeric types compare together; ``null`` equals a missing field.

ASP forbids ``$near``, ``$nearSphere``, ``$text`` and ``$where`` in ``$validate``;
they are compile errors here.
"""

from __future__ import annotations

import math
import operator
import random
import re
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

from bson import Binary, Decimal128, Int64, MaxKey, MinKey, Regex

from translator.errors import did_you_mean
from translator.mql import jsonschema
from translator.mql.expr import EMPTY_VARS, Ctx, ExprError, closure, compile_expr, get_path
from translator.mql.pcre import OPTION_LETTERS, RegexError, compile_pcre
from translator.mql.values import (
    MISSING,
    TYPE_ALIASES,
    TYPE_CODES,
    compare,
    hashable,
    is_number,
    num_key,
    truthy,
    type_order,
    values_equal,
)

__all__ = [
    "QUERY_OPERATORS",
    "TOP_LEVEL_OPERATORS",
    "ExprError",
    "compile_query",
    "describe_failure",
]

Pred = Callable[[Any], bool]
Parts = tuple[str, ...]

# ---- field operators: compiled form -------------------------------------------------


class FieldOp:
    """One compiled field operator.

    ``single(v)`` tests one value (used for each candidate of a path and by the value
    form of ``$elemMatch``); ``matcher(parts)`` builds the document predicate.
    """

    __slots__ = ("single",)

    def __init__(self, single: Pred) -> None:
        self.single = single

    def matcher(self, parts: Parts) -> Pred:
        raise NotImplementedError


class AnyOp(FieldOp):
    """Holds when any value reached by the path passes ``single``.

    ``expand``: a leaf array offers its elements as well as itself (false for
    ``$size``/``$elemMatch``, which MongoDB applies to the array only).
    ``fast``: ``(types, py_op, rhs)`` for the hot scalar case: when ``type(v)`` is in
    ``types``, the answer is ``py_op(v, rhs)``.
    """

    __slots__ = ("expand", "fast")

    def __init__(
        self,
        single: Pred,
        expand: bool = True,
        fast: tuple[frozenset[type], Callable[[Any, Any], bool], Any] | None = None,
    ) -> None:
        super().__init__(single)
        self.expand = expand
        self.fast = fast

    def matcher(self, parts: Parts) -> Pred:
        return _path_any(parts, self.single, self.expand)


class NotOp(FieldOp):
    """MongoDB's negations ($ne, $nin, $not, $exists: false) negate the path predicate."""

    __slots__ = ("inner",)

    def __init__(self, inner: list[FieldOp]) -> None:
        single = _conj([op.single for op in inner])
        super().__init__(lambda v: not single(v))
        self.inner = inner

    def matcher(self, parts: Parts) -> Pred:
        m = _conj([op.matcher(parts) for op in self.inner])
        return lambda doc: not m(doc)


class AllOp(FieldOp):
    """A conjunction of field operators on the same path ($all)."""

    __slots__ = ("inner",)

    def __init__(self, inner: list[FieldOp]) -> None:
        super().__init__(_conj([op.single for op in inner]))
        self.inner = inner

    def matcher(self, parts: Parts) -> Pred:
        return _conj([op.matcher(parts) for op in self.inner])


class ConstOp(FieldOp):
    """Always the same answer (``$all: []`` matches nothing)."""

    __slots__ = ("value",)

    def __init__(self, value: bool) -> None:
        super().__init__(lambda v: value)
        self.value = value

    def matcher(self, parts: Parts) -> Pred:
        value = self.value
        return lambda doc: value


OpCompiler = Callable[[Any, dict[str, Any], Ctx], "FieldOp | None"]
QUERY_OPERATORS: dict[str, OpCompiler] = {}

TopCompiler = Callable[[Any, Ctx, bool], Pred]
TOP_LEVEL_OPERATORS: dict[str, TopCompiler] = {}

# ASP: "$validate supports all query operators except $near, $nearSphere, $text, $where".
FORBIDDEN_OPERATORS = frozenset({"$near", "$nearSphere", "$text", "$where"})
# Valid MongoDB, but not implemented by mqlflow (geospatial).
UNIMPLEMENTED_OPERATORS = frozenset(
    {
        "$geoWithin",
        "$geoIntersects",
        "$within",
        "$box",
        "$center",
        "$centerSphere",
        "$polygon",
        "$geometry",
        "$maxDistance",
        "$minDistance",
    }
)


def query_operator(*names: str) -> Callable[[OpCompiler], OpCompiler]:
    def deco(fn: OpCompiler) -> OpCompiler:
        for n in names:
            if n in QUERY_OPERATORS:
                raise RuntimeError(f"query operator {n} registered twice")
            QUERY_OPERATORS[n] = fn
        return fn

    return deco


def top_level_operator(*names: str) -> Callable[[TopCompiler], TopCompiler]:
    def deco(fn: TopCompiler) -> TopCompiler:
        for n in names:
            TOP_LEVEL_OPERATORS[n] = fn
        return fn

    return deco


# ---- combinators and path traversal -------------------------------------------------


def _conj(preds: list[Pred]) -> Pred:
    if len(preds) > 1:
        specs: list[HotSpec] = []
        for p in preds:
            if type(p) is not HotPred:
                break
            specs.extend(p.specs)
        else:
            return _hot_all(tuple(specs))
    if not preds:
        return lambda x: True
    if len(preds) == 1:
        return preds[0]
    preds = [p.func if type(p) is HotPred else p for p in preds]  # call the closures themselves
    if len(preds) == 2:
        p, q = preds
        return lambda x: p(x) and q(x)
    ps = tuple(preds)

    def conj(x: Any) -> bool:
        for p in ps:  # noqa: SIM110
            if not p(x):
                return False
        return True

    return conj


def _array_index(part: str) -> int | None:
    """A path component that can index an array ("0", "12"; not "01" or "-1")."""
    if part.isdigit() and part.isascii() and (part == "0" or part[0] != "0"):
        return int(part)
    return None


def _any_in_array(arr: list[Any], single: Pred) -> bool:
    if single(arr):
        return True
    for e in arr:  # noqa: SIM110
        if single(e):
            return True
    return False


def _path_any(parts: Parts, single: Pred, expand: bool) -> Pred:
    """Document predicate: some value at ``parts`` passes ``single`` (MongoDB path rules).

    A path that stops at a scalar or a missing field yields "missing" (so
    ``{"a.b": null}`` matches ``{a: 4}``); scalars inside a traversed array yield
    nothing; nested arrays are not traversed implicitly.
    """
    if len(parts) == 1:
        key = parts[0]
        if expand:

            def leaf_expand(doc: Any) -> bool:
                v = doc.get(key, MISSING)
                if type(v) is list:
                    return _any_in_array(v, single)
                return single(v)

            return leaf_expand

        def leaf(doc: Any) -> bool:
            return single(doc.get(key, MISSING))

        return leaf

    n = len(parts)
    indexes = tuple(_array_index(p) for p in parts)

    def walk(v: Any, i: int) -> bool:
        while i < n:
            if isinstance(v, dict):
                v = v.get(parts[i], MISSING)
                i += 1
            elif isinstance(v, list):
                for e in v:
                    if isinstance(e, dict) and walk(e, i):
                        return True
                j = indexes[i]
                return j is not None and j < len(v) and walk_indexed(v[j], i + 1)
            else:
                return single(MISSING)
        if expand and isinstance(v, list):
            return _any_in_array(v, single)
        return single(v)

    def walk_indexed(v: Any, i: int) -> bool:
        # An array reached through an explicit index is a document with keys "0", "1"...
        # for the rest of the path: its elements are not traversed implicitly.
        while i < n and isinstance(v, list):
            j = indexes[i]
            v = v[j] if j is not None and j < len(v) else MISSING
            i += 1
        return walk(v, i)

    return lambda doc: walk(doc, 0)


def _split_path(path: str, ctx: Ctx) -> Parts:
    parts = tuple(path.split("."))
    if any(p == "" for p in parts):
        raise ctx.error(f"invalid field path '{path}'")
    return parts


# ---- equality and comparison --------------------------------------------------------

_NUM_TYPES: frozenset[type] = frozenset({int, float, Int64})
_REGEX_TYPES = (Regex, re.Pattern)


def _is_nan(v: Any) -> bool:
    k = num_key(v)
    return k != k


def _eq_single(rhs: Any) -> Pred:
    """$eq on one value: null matches missing; 1 == 1.0 == NumberLong(1); true != 1."""
    if rhs is None:
        return lambda v: v is None or v is MISSING
    t = type(rhs)
    if t is str:
        return lambda v: type(v) is str and v == rhs
    if t is bool:
        return lambda v: type(v) is bool and v == rhs
    if t in _NUM_TYPES and rhs == rhs:

        def eq_num(v: Any) -> bool:
            tv = type(v)
            if tv is int or tv is float or tv is Int64:
                return bool(v == rhs)
            if tv is Decimal128:
                return compare(v, rhs) == 0
            return False

        return eq_num
    if isinstance(rhs, _REGEX_TYPES):
        key = _regex_key(rhs)
        return lambda v: isinstance(v, _REGEX_TYPES) and _regex_key(v) == key
    order = type_order(rhs)
    return lambda v: type_order(v) == order and compare(v, rhs) == 0


_STR_TYPES: frozenset[type] = frozenset({str})


def _eq_op(rhs: Any) -> AnyOp:
    fast: tuple[frozenset[type], Callable[[Any, Any], bool], Any] | None = None
    t = type(rhs)
    if t is str:
        fast = (_STR_TYPES, operator.eq, rhs)
    elif t in _NUM_TYPES and rhs == rhs:
        fast = (_NUM_TYPES, operator.eq, rhs)
    return AnyOp(_eq_single(rhs), fast=fast)


# name -> (python operator for the hot path, test on compare()'s sign, accepts equality)
_COMPARISONS: dict[str, tuple[Callable[[Any, Any], bool], Callable[[int], bool], bool]] = {
    "$gt": (operator.gt, lambda c: c > 0, False),
    "$gte": (operator.ge, lambda c: c >= 0, True),
    "$lt": (operator.lt, lambda c: c < 0, False),
    "$lte": (operator.le, lambda c: c <= 0, True),
}


def _reject_regex(name: str, arg: Any, ctx: Ctx) -> None:
    if isinstance(arg, _REGEX_TYPES):
        raise ctx.error(f"{name} does not accept a regular expression")


@query_operator("$eq")
def _q_eq(arg: Any, siblings: dict[str, Any], ctx: Ctx) -> FieldOp:
    return _eq_op(arg)


@query_operator("$ne")
def _q_ne(arg: Any, siblings: dict[str, Any], ctx: Ctx) -> FieldOp:
    return NotOp([_eq_op(arg)])


@query_operator("$gt", "$gte", "$lt", "$lte")
def _q_compare(arg: Any, siblings: dict[str, Any], ctx: Ctx) -> FieldOp:
    """Type-bracketed comparison; NaN only equals NaN and is neither < nor > anything."""
    name = ctx.path.rsplit(".", 1)[-1]
    _reject_regex(name, arg, ctx)
    py_op, test, accepts_eq = _COMPARISONS[name]
    rhs = arg
    if isinstance(rhs, (MinKey, MaxKey)):
        # MinKey/MaxKey compare against every type.
        return AnyOp(lambda v: test(compare(v, rhs)))
    if is_number(rhs) and _is_nan(rhs):
        return AnyOp(lambda v: accepts_eq and is_number(v) and _is_nan(v))
    if type(rhs) in _NUM_TYPES:

        def cmp_num(v: Any) -> bool:
            tv = type(v)
            if tv is int or tv is float or tv is Int64:
                return bool(py_op(v, rhs))
            if tv is Decimal128:
                return not _is_nan(v) and test(compare(v, rhs))
            return False

        return AnyOp(cmp_num, fast=(_NUM_TYPES, py_op, rhs))
    order = type_order(rhs)
    fast = (_STR_TYPES, py_op, rhs) if type(rhs) is str else None

    def cmp_general(v: Any) -> bool:
        if type_order(v) != order:
            return False
        if order == 3 and _is_nan(v):
            return False
        return test(compare(v, rhs))

    return AnyOp(cmp_general, fast=fast)


def _in_single(values: Any, ctx: Ctx) -> Pred:
    if not isinstance(values, list):
        raise ctx.error(f"{ctx.path.rsplit('.', 1)[-1]} needs an array")
    plain: list[Any] = []
    regexes: list[Pred] = []
    for i, x in enumerate(values):
        if isinstance(x, _REGEX_TYPES):
            regexes.append(_regex_single(_compile_regex(x, None, ctx.at(i))))
        elif _is_operator_object(x):
            raise ctx.at(i).error("cannot nest $ under $in")
        else:
            plain.append(x)
    keys = frozenset(hashable(x) for x in plain)
    # hashable() groups integral numbers exactly; fractional/decimal/NaN need compare().
    inexact = [
        x
        for x in plain
        if type(x) is Decimal128 or (type(x) is float and not (x == x and x.is_integer()))
    ]
    rx = tuple(regexes)

    def in_(v: Any) -> bool:
        if hashable(v) in keys:
            return True
        for r in rx:
            if r(v):
                return True
        if inexact and is_number(v):
            for x in inexact:
                if values_equal(v, x):
                    return True
        return False

    return in_


@query_operator("$in")
def _q_in(arg: Any, siblings: dict[str, Any], ctx: Ctx) -> FieldOp:
    return AnyOp(_in_single(arg, ctx))


@query_operator("$nin")
def _q_nin(arg: Any, siblings: dict[str, Any], ctx: Ctx) -> FieldOp:
    return NotOp([AnyOp(_in_single(arg, ctx))])


# ---- element operators --------------------------------------------------------------


def _not_missing(v: Any) -> bool:
    return v is not MISSING


@query_operator("$exists")
def _q_exists(arg: Any, siblings: dict[str, Any], ctx: Ctx) -> FieldOp:
    exists = AnyOp(_not_missing, expand=False)
    return exists if truthy(arg) else NotOp([exists])


def _type_names(arg: Any, ctx: Ctx) -> frozenset[str]:
    items = arg if isinstance(arg, list) else [arg]
    if not items:
        raise ctx.error("$type needs at least one type")
    names = set()
    for i, t in enumerate(items):
        c = ctx.at(i) if isinstance(arg, list) else ctx
        if isinstance(t, str):
            if t not in TYPE_ALIASES:
                raise c.error(f"unknown type name alias '{t}'{did_you_mean(t, TYPE_ALIASES)}")
            names.add(t)
        elif is_number(t) and not isinstance(t, Decimal128) and float(t).is_integer():
            code = int(t)
            if code not in TYPE_CODES:
                raise c.error(f"invalid numerical type code: {code}")
            names.add(TYPE_CODES[code])
        else:
            raise c.error(f"type must be represented as a number or a string, got {t!r}")
    return frozenset(names)


@query_operator("$type")
def _q_type(arg: Any, siblings: dict[str, Any], ctx: Ctx) -> FieldOp:
    return AnyOp(jsonschema.type_test(_type_names(arg, ctx)))


# ---- evaluation operators -----------------------------------------------------------

_REGEX_OPTION_FLAGS: dict[str, int] = {
    "i": re.IGNORECASE,
    "m": re.MULTILINE,
    "s": re.DOTALL,
    "x": re.VERBOSE,
    "u": 0,
}


def _flag_chars(flags: int) -> str:
    return "".join(c for c, f in _REGEX_OPTION_FLAGS.items() if f and flags & f)


def _regex_key(r: Any) -> tuple[str, str]:
    """(pattern, option letters) of a bson.Regex or re.Pattern, for regex equality."""
    flags = r.flags
    letters = _flag_chars(flags) if isinstance(flags, int) else "".join(sorted(str(flags)))
    return (str(r.pattern), letters)


class _Compiled:
    """A ``$regex`` compiled on PCRE2 (:mod:`translator.mql.pcre`) with its identity key."""

    __slots__ = ("key", "search")

    def __init__(self, source: str, letters: str, ctx: Ctx) -> None:
        try:
            self.search = compile_pcre(source, letters).search
        except RegexError as e:
            raise ctx.error(f"invalid regular expression {source!r}: {e}") from None
        self.key = (source, "".join(sorted(letters)))


def _compile_regex(pattern: Any, options: Any, ctx: Ctx) -> _Compiled:
    """``$regex``/``$options`` as MongoDB runs them (PCRE2; options: i, m, s, x, u)."""
    letters = ""
    if isinstance(pattern, _REGEX_TYPES):
        if options is not None and _regex_key(pattern)[1]:
            raise ctx.error("options set in both $regex and $options")
        letters = _regex_key(pattern)[1]
        source = pattern.pattern
        if isinstance(source, bytes):
            source = source.decode()
    elif isinstance(pattern, str):
        source = pattern
    else:
        raise ctx.error("$regex has to be a string")
    if options is not None:
        if not isinstance(options, str):
            raise ctx.error("$options has to be a string")
        for c in options:
            if c not in OPTION_LETTERS:
                raise ctx.error(f"invalid flag in regex options: {c}")
        letters += options
    return _Compiled(source, letters.replace("u", ""), ctx)


def _regex_single(rx: _Compiled) -> Pred:
    """Strings are searched; a stored regex matches only an identical regex."""
    search = rx.search
    key = rx.key

    def regex(v: Any) -> bool:
        if type(v) is str:
            return search(v) is not None
        if isinstance(v, _REGEX_TYPES):
            return _regex_key(v) == key
        return False

    return regex


@query_operator("$regex")
def _q_regex(arg: Any, siblings: dict[str, Any], ctx: Ctx) -> FieldOp:
    return AnyOp(_regex_single(_compile_regex(arg, siblings.get("$options"), ctx)))


@query_operator("$options")
def _q_options(arg: Any, siblings: dict[str, Any], ctx: Ctx) -> FieldOp | None:
    if "$regex" not in siblings:
        raise ctx.error("$options needs a $regex")
    return None  # consumed by $regex


def _int_arg(x: Any) -> int | None:
    """An integral number argument (int, long, whole double), else None."""
    if type(x) is bool or not is_number(x):
        return None
    k = num_key(x)
    if k != k or k in (math.inf, -math.inf):
        return None
    if isinstance(k, float) and not k.is_integer():
        return None
    return int(k)


@query_operator("$mod")
def _q_mod(arg: Any, siblings: dict[str, Any], ctx: Ctx) -> FieldOp:
    """``{$mod: [divisor, remainder]}``: truncated (C-style) remainder of the truncated value."""
    if not isinstance(arg, list):
        raise ctx.error("malformed mod, needs to be an array of [divisor, remainder]")
    if len(arg) < 2:
        raise ctx.error("malformed mod, not enough elements")
    if len(arg) > 2:
        raise ctx.error("malformed mod, too many elements")
    for x, what in zip(arg, ("divisor", "remainder"), strict=True):
        if type(x) is bool or not is_number(x):
            raise ctx.error(f"malformed mod, {what} not a number")
        k = num_key(x)
        if k != k or k in (math.inf, -math.inf):
            raise ctx.error(f"malformed mod, {what} cannot be NaN or infinite")
    divisor, remainder = (int(num_key(x)) for x in arg)
    if divisor == 0:
        raise ctx.error("divisor cannot be 0")
    d = abs(divisor)

    def mod(v: Any) -> bool:
        if type(v) is bool or not is_number(v):
            return False
        k = num_key(v)
        if k != k or k in (math.inf, -math.inf):
            return False
        n = int(k)
        r = abs(n) % d
        return (-r if n < 0 else r) == remainder

    return AnyOp(mod)


# ---- array operators ----------------------------------------------------------------


@query_operator("$size")
def _q_size(arg: Any, siblings: dict[str, Any], ctx: Ctx) -> FieldOp:
    n = _int_arg(arg)
    if n is None:
        raise ctx.error(f"$size needs a whole number, got {arg!r}")
    if n < 0:
        raise ctx.error("$size may not be negative")
    return AnyOp(lambda v: type(v) is list and len(v) == n, expand=False)


# Keys that make an $elemMatch argument a query on documents rather than on values.
_ELEM_MATCH_OBJECT_KEYS = frozenset({"$and", "$or", "$nor", "$expr", "$jsonSchema", "$where", "$text", "$comment", "$alwaysTrue", "$alwaysFalse"})


def _elem_match_single(arg: Any, ctx: Ctx) -> Pred:
    if not isinstance(arg, dict):
        raise ctx.error("$elemMatch needs an object")
    first = next(iter(arg), None)
    if isinstance(first, str) and first.startswith("$") and first not in _ELEM_MATCH_OBJECT_KEYS:
        # Value form: {$elemMatch: {$gte: 80, $lt: 85}} applies to each element.
        test = _conj([op.single for _, _, op in _compile_op_object(arg, ctx)])

        def elem_match_value(v: Any) -> bool:
            if type(v) is not list:
                return False
            for e in v:  # noqa: SIM110
                if test(e):
                    return True
            return False

        return elem_match_value
    query = _compile_query_object(arg, ctx, top=False)

    def elem_match_object(v: Any) -> bool:
        if type(v) is not list:
            return False
        for e in v:  # noqa: SIM110
            if isinstance(e, dict) and query(e):
                return True
        return False

    return elem_match_object


@query_operator("$elemMatch")
def _q_elem_match(arg: Any, siblings: dict[str, Any], ctx: Ctx) -> FieldOp:
    return AnyOp(_elem_match_single(arg, ctx), expand=False)


@query_operator("$all")
def _q_all(arg: Any, siblings: dict[str, Any], ctx: Ctx) -> FieldOp:
    """``$all``: an AND of equalities (or of ``$elemMatch``es); ``$all: []`` matches nothing."""
    if not isinstance(arg, list):
        raise ctx.error("$all needs an array")
    if not arg:
        return ConstOp(False)
    inner: list[FieldOp] = []
    for i, x in enumerate(arg):
        c = ctx.at(i)
        if isinstance(x, dict) and next(iter(x), None) == "$elemMatch":
            if len(x) != 1:
                raise c.error("$elemMatch inside $all must be the only key")
            inner.append(AnyOp(_elem_match_single(x["$elemMatch"], c.at("$elemMatch")), expand=False))
        elif isinstance(x, _REGEX_TYPES):
            inner.append(AnyOp(_regex_single(_compile_regex(x, None, c))))
        elif _is_operator_object(x):
            raise c.error("no $ expressions in $all")
        else:
            inner.append(_eq_op(x))
    return inner[0] if len(inner) == 1 else AllOp(inner)


# ---- bitwise operators --------------------------------------------------------------


def _bitmask(arg: Any, ctx: Ctx) -> int:
    if isinstance(arg, (bytes, Binary)):
        return int.from_bytes(bytes(arg), "little")
    if isinstance(arg, list):
        mask = 0
        for i, p in enumerate(arg):
            n = _int_arg(p)
            if n is None or n < 0:
                raise ctx.at(i).error("bit positions must be non-negative whole numbers")
            mask |= 1 << n
        return mask
    n = _int_arg(arg)
    if n is None or n < 0:
        raise ctx.error("needs a non-negative whole number, an array of bit positions or BinData")
    return n


def _bits_value(v: Any) -> int | None:
    """The bits of an integral number (sign-extended) or of BinData; None otherwise."""
    t = type(v)
    if t is int or t is Int64:
        return int(v)
    if t is float:
        if v.is_integer() and -(2.0**63) <= v < 2.0**63:
            return int(v)
        return None
    if t is Decimal128:
        return _int_arg(v)
    if isinstance(v, (bytes, Binary)):
        return int.from_bytes(bytes(v), "little")
    return None


_BIT_TESTS: dict[str, Callable[[int, int], bool]] = {
    "$bitsAllSet": lambda x, m: x & m == m,
    "$bitsAnySet": lambda x, m: x & m != 0,
    "$bitsAllClear": lambda x, m: x & m == 0,
    "$bitsAnyClear": lambda x, m: x & m != m,
}


@query_operator(*_BIT_TESTS)
def _q_bits(arg: Any, siblings: dict[str, Any], ctx: Ctx) -> FieldOp:
    test = _BIT_TESTS[ctx.path.rsplit(".", 1)[-1]]
    mask = _bitmask(arg, ctx)

    def bits(v: Any) -> bool:
        x = _bits_value(v)
        return x is not None and test(x, mask)

    return AnyOp(bits)


# ---- $not ---------------------------------------------------------------------------


@query_operator("$not")
def _q_not(arg: Any, siblings: dict[str, Any], ctx: Ctx) -> FieldOp:
    if isinstance(arg, _REGEX_TYPES):
        return NotOp([AnyOp(_regex_single(_compile_regex(arg, None, ctx)))])
    if not isinstance(arg, dict):
        raise ctx.error("$not needs a regex or a document")
    if not arg:
        raise ctx.error("$not cannot be empty")
    if not _is_operator_object(arg):
        raise ctx.error("$not needs operators, e.g. {$not: {$gt: 5}}")
    return NotOp([op for _, _, op in _compile_op_object(arg, ctx)])


# ---- compiling query objects --------------------------------------------------------

_DBREF_KEYS = frozenset({"$ref", "$id", "$db"})


def _is_operator_object(x: Any) -> bool:
    """MongoDB's rule: a document whose first key starts with '$' is an operator object."""
    if not isinstance(x, dict) or not x:
        return False
    first = next(iter(x))
    return isinstance(first, str) and first.startswith("$") and first not in _DBREF_KEYS


def _unsupported(name: str, ctx: Ctx) -> Exception | None:
    if name == "$where":
        return ctx.error("query operator '$where': JavaScript is not supported by stream processors")
    if name in FORBIDDEN_OPERATORS:
        return ctx.error(f"query operator '{name}' is not supported in stream processing")
    if name in UNIMPLEMENTED_OPERATORS:
        return ctx.error(f"query operator '{name}' is not supported by mqlflow")
    return None


def _compile_op_object(spec: dict[str, Any], ctx: Ctx) -> list[tuple[str, Any, FieldOp]]:
    """``{$gt: 1, $lt: 5}`` -> [(name, arg, op)] in order (``$options`` folds into ``$regex``)."""
    out: list[tuple[str, Any, FieldOp]] = []
    for name, arg in spec.items():
        c = ctx.at(name)
        if not (isinstance(name, str) and name.startswith("$")):
            raise c.error(f"unknown query operator '{name}': operators and field names cannot be mixed")
        err = _unsupported(name, c)
        if err is not None:
            raise err
        comp = QUERY_OPERATORS.get(name)
        if comp is None:
            hint = did_you_mean(name, QUERY_OPERATORS)
            if not hint and name in TOP_LEVEL_OPERATORS:
                hint = f"; '{name}' is only valid at the top level of a query"
            raise c.error(f"unknown query operator '{name}'{hint}")
        op = comp(arg, spec, c)
        if op is not None:
            out.append((name, arg, op))
    return out


def _field_ops(arg: Any, ctx: Ctx) -> list[tuple[str, Any, FieldOp]]:
    if _is_operator_object(arg):
        return _compile_op_object(arg, ctx)
    if isinstance(arg, _REGEX_TYPES):
        return [("$regex", arg, AnyOp(_regex_single(_compile_regex(arg, None, ctx))))]
    return [("$eq", arg, _eq_op(arg))]


class HotSpec(NamedTuple):
    """One field clause that :class:`HotPred` closures (and :mod:`translator.codegen`)
    evaluate with dict lookups: ``type(value) in types`` and ``op(value, rhs)``, negated
    when ``negate``; any other value goes to ``general`` (the clause's full predicate)."""

    k1: str
    k2: str | None
    types: frozenset[type]
    op: Callable[[Any, Any], bool]
    rhs: Any
    negate: bool
    general: Pred


class HotPred(partial[bool]):
    """A predicate made only of hot clauses, holding its closure (called at C speed,
    see :class:`translator.mql.expr.Node`) and its clauses, which :func:`_conj` fuses
    and :mod:`translator.codegen` writes inline."""

    __slots__ = ("specs",)
    specs: tuple[HotSpec, ...]

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("HotPred is frozen")


def _hot_pred(fn: Pred, specs: tuple[HotSpec, ...]) -> HotPred:
    pred = HotPred(fn)
    object.__setattr__(pred, "specs", specs)
    return pred


def _hot(parts: Parts, op: FieldOp, general: Pred) -> Pred:
    """A field (``a`` or ``a.b``) with one scalar equality/comparison: dict lookups and one
    Python compare when the value has the expected type; anything else (arrays along the
    path or at the leaf, missing, null, bool, Decimal128, NaN...) takes the general path.

    The result is a :class:`HotPred` so that :func:`_conj` can fuse an AND of such
    clauses (``{event_type: 0, "obs.temp": {$gte: 12}}``) into one closure.
    """
    negate = False
    if isinstance(op, NotOp) and len(op.inner) == 1:
        negate, op = True, op.inner[0]
    if not isinstance(op, AnyOp) or op.fast is None or len(parts) > 2:
        return general
    types, py_op, rhs = op.fast
    spec = HotSpec(parts[0], parts[1] if len(parts) == 2 else None, types, py_op, rhs, negate, general)

    if len(parts) == 1:
        (key,) = parts

        def hot1(doc: Any) -> bool:
            v = doc.get(key, MISSING)
            if type(v) in types:
                return py_op(v, rhs) is not negate
            return general(doc)

        return _hot_pred(hot1, (spec,))
    k1, k2 = parts

    def hot2(doc: Any) -> bool:
        sub = doc.get(k1)
        if type(sub) is dict:
            v = sub.get(k2, MISSING)
            if type(v) in types:
                return py_op(v, rhs) is not negate
        return general(doc)

    return _hot_pred(hot2, (spec,))


def _hot_all(specs: tuple[HotSpec, ...]) -> Pred:
    """An AND of hot clauses in one closure: per clause, the same test as :func:`_hot`
    (the Python operators here return a bool for the types they are used on)."""

    def hot_all(doc: Any) -> bool:
        for k1, k2, types, py_op, rhs, negate, general in specs:
            v = doc.get(k1, MISSING)
            if k2 is not None:
                if type(v) is not dict:
                    if not general(doc):
                        return False
                    continue
                v = v.get(k2, MISSING)
            if type(v) in types:
                if py_op(v, rhs) is negate:
                    return False
            elif not general(doc):
                return False
        return True

    return _hot_pred(hot_all, specs)


def _compile_field(path: str, arg: Any, ctx: Ctx) -> Pred:
    c = ctx.at(path)
    parts = _split_path(path, c)
    ops = _field_ops(arg, c)
    # Each operator is matched on its own (on an array, different elements may satisfy
    # different operators, as in MongoDB), then the results are ANDed.
    return _conj([_hot(parts, op, op.matcher(parts)) for _, _, op in ops])


def _compile_clauses(spec: Any, ctx: Ctx, top: bool) -> list[tuple[str, Any, Pred]]:
    if not isinstance(spec, dict):
        raise ctx.error(f"a query must be an object, got {spec!r}")
    out: list[tuple[str, Any, Pred]] = []
    for key, arg in spec.items():
        if not isinstance(key, str):
            raise ctx.error(f"field names must be strings, got {key!r}")
        if key.startswith("$"):
            c = ctx.at(key)
            err = _unsupported(key, c)
            if err is not None:
                raise err
            comp = TOP_LEVEL_OPERATORS.get(key)
            if comp is None:
                if key in QUERY_OPERATORS:
                    raise c.error(
                        f"unknown top-level query operator '{key}'; "
                        f"'{key}' applies to a field, e.g. {{field: {{{key}: ...}}}}"
                    )
                raise c.error(
                    f"unknown top-level query operator '{key}'"
                    f"{did_you_mean(key, TOP_LEVEL_OPERATORS)}"
                )
            out.append((key, arg, comp(arg, c, top)))
        else:
            out.append((key, arg, _compile_field(key, arg, ctx)))
    return out


def _compile_query_object(spec: Any, ctx: Ctx, top: bool) -> Pred:
    return _conj([p for _, _, p in _compile_clauses(spec, ctx, top)])


def compile_query(spec: dict[str, Any], ctx: Ctx) -> Callable[[dict[str, Any]], bool]:
    """Compile a MongoDB query (``$match`` / ``$validate`` validator) into ``doc -> bool``.

    Compile errors raise :class:`~translator.errors.TranslateError` with a path;
    :class:`ExprError` raised inside ``$expr`` propagates to the caller (DLQ).
    """
    return _compile_query_object(spec, ctx, top=True)


# ---- top-level operators ------------------------------------------------------------


def _subqueries(arg: Any, ctx: Ctx, top: bool) -> list[Pred]:
    name = ctx.path.rsplit(".", 1)[-1]
    if not isinstance(arg, list):
        raise ctx.error(f"{name} must be an array")
    if not arg:
        raise ctx.error(f"{name} must be a nonempty array")
    preds = []
    for i, q in enumerate(arg):
        if not isinstance(q, dict):
            raise ctx.at(i).error(f"{name} entries need to be full objects")
        preds.append(_compile_query_object(q, ctx.at(i), top))
    return preds


@top_level_operator("$and")
def _t_and(arg: Any, ctx: Ctx, top: bool) -> Pred:
    return _conj(_subqueries(arg, ctx, top))


@top_level_operator("$or")
def _t_or(arg: Any, ctx: Ctx, top: bool) -> Pred:
    preds = tuple(_subqueries(arg, ctx, top))
    if len(preds) == 1:
        return preds[0]

    def or_(doc: Any) -> bool:
        for p in preds:  # noqa: SIM110
            if p(doc):
                return True
        return False

    return or_


@top_level_operator("$nor")
def _t_nor(arg: Any, ctx: Ctx, top: bool) -> Pred:
    preds = tuple(_subqueries(arg, ctx, top))

    def nor(doc: Any) -> bool:
        for p in preds:  # noqa: SIM110
            if p(doc):
                return False
        return True

    return nor


@top_level_operator("$expr")
def _t_expr(arg: Any, ctx: Ctx, top: bool) -> Pred:
    """Aggregation expression, true by MongoDB truthiness; ExprError is not swallowed."""
    if not top:
        raise ctx.error("$expr can only be applied to the top-level document")
    fn = closure(compile_expr(arg, ctx))
    return lambda doc: truthy(fn(doc, EMPTY_VARS))


@top_level_operator("$comment")
def _t_comment(arg: Any, ctx: Ctx, top: bool) -> Pred:
    return lambda doc: True


@top_level_operator("$jsonSchema")
def _t_json_schema(arg: Any, ctx: Ctx, top: bool) -> Pred:
    return jsonschema.compile_schema(arg, ctx)


@top_level_operator("$alwaysTrue", "$alwaysFalse")
def _t_always(arg: Any, ctx: Ctx, top: bool) -> Pred:
    if arg != 1:
        raise ctx.error(f"{ctx.path.rsplit('.', 1)[-1]} must be an integer value of 1")
    value = ctx.path.endswith("$alwaysTrue")
    return lambda doc: value


@top_level_operator("$sampleRate")
def _t_sample_rate(arg: Any, ctx: Ctx, top: bool) -> Pred:
    """``$sampleRate``: keep each document with the given probability (MongoDB 4.4.2+)."""
    if type(arg) is bool or not is_number(arg) or not 0 <= float(num_key(arg)) <= 1:
        raise ctx.error("$sampleRate expects a number between 0 and 1")
    rate = float(num_key(arg))
    rnd = random.random
    return lambda doc: rnd() < rate


# ---- describe_failure: slow path for failed documents -------------------------------

_show = jsonschema.show


def _describe_field(path: str, arg: Any, doc: Any) -> str:
    ctx = Ctx("")
    parts = tuple(path.split("."))
    value = get_path(doc, parts) if isinstance(doc, dict) else MISSING
    for name, op_arg, op in _field_ops(arg, ctx.at(path)):
        if not op.matcher(parts)(doc):
            return f"{path}: {name} {_show(op_arg)} failed for {_show(value)}"
    return f"{path}: query failed for {_show(value)}"


_DESCRIBERS: dict[str, Callable[[Any, Any], str]] = {}


def _describe_and(arg: Any, doc: Any) -> str:
    for q in arg:
        if not compile_query(q, Ctx(""))(doc):
            return describe_failure(q, doc)
    return "$and failed"


_DESCRIBERS["$and"] = _describe_and
_DESCRIBERS["$or"] = lambda arg, doc: f"$or: none of {len(arg)} clauses matched"
_DESCRIBERS["$nor"] = lambda arg, doc: "$nor: a clause matched"
_DESCRIBERS["$expr"] = lambda arg, doc: f"$expr {_show(arg)} evaluated to false"
_DESCRIBERS["$jsonSchema"] = lambda arg, doc: (
    jsonschema.explain_schema(arg, doc) or "$jsonSchema failed"
)


def describe_failure(spec: dict[str, Any], doc: dict[str, Any]) -> str:
    """A short human reason why ``doc`` fails ``spec`` (first failing clause).

    Only used for documents that already failed, e.g. for the DLQ ``errInfo.reason``:
    ``"x: $jsonSchema maximum 42 failed for 99"``, ``"x: $gt 5 failed for 3"``.
    """
    for key, arg, pred in _compile_clauses(spec, Ctx(""), top=True):
        if pred(doc):
            continue
        if key.startswith("$"):
            describer = _DESCRIBERS.get(key)
            return describer(arg, doc) if describer else f"{key} failed"
        return _describe_field(key, arg, doc)
    return "document failed validation"
