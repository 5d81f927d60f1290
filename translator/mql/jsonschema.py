"""``$jsonSchema``: MongoDB's JSON Schema draft-4 subset, compiled once into closures.

MongoDB implements draft 4 plus ``bsonType`` and minus ``$ref``, ``$schema``,
``default``, ``definitions``, ``format``, ``id`` and the ``integer`` type; unknown
keywords are errors. As in JSON Schema, a keyword that only concerns one type
(``minimum`` for numbers, ``minLength`` for strings, ``required`` for objects...)
ignores values of other types, and schemas apply to a value as a whole: there is no
implicit array traversal as in queries.

Each keyword is one compile function in :data:`KEYWORDS` returning a :class:`Check`:
a fast predicate plus a slow ``why`` used only to explain a failure
(``"x: $jsonSchema maximum 42 failed for 99"``).
"""

from __future__ import annotations

import datetime as _dt
import decimal
import json
import math
import operator
import re
from collections.abc import Callable
from typing import Any, NamedTuple

from bson import Decimal128, Int64, Regex

from translator.errors import did_you_mean
from translator.mql.expr import Ctx
from translator.mql.pcre import RegexError, compile_pcre
from translator.mql.values import (
    INT32_MAX,
    INT32_MIN,
    MISSING,
    TYPE_ALIASES,
    bson_type,
    compare,
    hashable,
    is_number,
    num_key,
    to_decimal,
    values_equal,
)

Pred = Callable[[Any], bool]
Why = Callable[[Any, str], "str | None"]


class Check(NamedTuple):
    pred: Pred
    why: Why


KeywordCompiler = Callable[[Any, dict[str, Any], Ctx], "Check | None"]
KEYWORDS: dict[str, KeywordCompiler] = {}

# Draft-4 keywords MongoDB does not implement.
UNSUPPORTED_KEYWORDS = frozenset({"$ref", "$schema", "default", "definitions", "format", "id"})

# JSON Schema "type" names -> the BSON types they cover (MongoDB has no "integer").
JSON_TYPES: dict[str, frozenset[str]] = {
    "object": frozenset({"object"}),
    "array": frozenset({"array"}),
    "number": frozenset({"number"}),
    "boolean": frozenset({"bool"}),
    "string": frozenset({"string"}),
    "null": frozenset({"null"}),
}


def keyword(*names: str) -> Callable[[KeywordCompiler], KeywordCompiler]:
    def deco(fn: KeywordCompiler) -> KeywordCompiler:
        for n in names:
            if n in KEYWORDS:
                raise RuntimeError(f"$jsonSchema keyword {n} registered twice")
            KEYWORDS[n] = fn
        return fn

    return deco


# ---- display helpers ----------------------------------------------------------------


_SHOW_FLAGS = (("i", re.IGNORECASE), ("m", re.MULTILINE), ("s", re.DOTALL), ("x", re.VERBOSE))


def _json_default(v: Any) -> Any:
    if isinstance(v, _dt.datetime):
        return v.isoformat()
    return str(v)


def show(v: Any, limit: int = 120) -> str:
    """A short JSON-like rendering of a value for failure messages."""
    if v is MISSING:
        return "missing"
    if type(v) is Decimal128:
        return f'NumberDecimal("{v}")'
    if isinstance(v, _dt.datetime):
        return v.isoformat()
    if isinstance(v, (Regex, re.Pattern)):
        flags = v.flags if isinstance(v.flags, int) else 0
        letters = "".join(c for c, f in _SHOW_FLAGS if flags & f)
        return f"/{v.pattern}/{letters}"
    try:
        text = json.dumps(v, default=_json_default, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(v)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _join(path: str, key: str | int) -> str:
    return f"{path}.{key}" if path else str(key)


def _prefix(path: str) -> str:
    return f"{path}: $jsonSchema" if path else "$jsonSchema"


def _leaf(name: str, arg: Any, pred: Pred) -> Check:
    """A check whose failure message is ``<path>: $jsonSchema <name> <arg> failed for <v>``."""
    shown = show(arg)

    def why(v: Any, path: str) -> str | None:
        return None if pred(v) else f"{_prefix(path)} {name} {shown} failed for {show(v)}"

    return Check(pred, why)


def _all(preds: list[Pred]) -> Pred:
    if not preds:
        return lambda v: True
    if len(preds) == 1:
        return preds[0]
    if len(preds) == 2:
        p, q = preds
        return lambda v: p(v) and q(v)
    ps = tuple(preds)

    def all_(v: Any) -> bool:
        for p in ps:  # noqa: SIM110
            if not p(v):
                return False
        return True

    return all_


# ---- argument validation ------------------------------------------------------------


def _count_arg(arg: Any, ctx: Ctx) -> int:
    """A non-negative integral number (MongoDB accepts whole doubles too)."""
    if type(arg) is not bool and is_number(arg):
        k = num_key(arg)
        if k == k and k not in (math.inf, -math.inf) and k == int(k) and k >= 0:
            return int(k)
    name = ctx.path.rsplit(".", 1)[-1]
    raise ctx.error(f"'{name}' must be a non-negative integer, got {show(arg)}")


def _number_arg(arg: Any, ctx: Ctx) -> Any:
    if type(arg) is bool or not is_number(arg):
        name = ctx.path.rsplit(".", 1)[-1]
        raise ctx.error(f"'{name}' must be a number, got {show(arg)}")
    return arg


def _bool_arg(arg: Any, ctx: Ctx) -> bool:
    if type(arg) is not bool:
        name = ctx.path.rsplit(".", 1)[-1]
        raise ctx.error(f"'{name}' must be a boolean, got {show(arg)}")
    return arg


def _string_list(arg: Any, ctx: Ctx, non_empty: bool = True) -> list[str]:
    name = ctx.path.rsplit(".", 1)[-1]
    if not isinstance(arg, list) or not all(isinstance(x, str) for x in arg):
        raise ctx.error(f"'{name}' must be an array of strings")
    if non_empty and not arg:
        raise ctx.error(f"'{name}' must be a non-empty array")
    if len(set(arg)) != len(arg):
        raise ctx.error(f"'{name}' array must not contain duplicate values")
    return list(arg)


def _schema_list(arg: Any, ctx: Ctx) -> list[Check]:
    name = ctx.path.rsplit(".", 1)[-1]
    if not isinstance(arg, list) or not arg:
        raise ctx.error(f"'{name}' must be a non-empty array of schemas")
    return [compile_node(s, ctx.at(i)) for i, s in enumerate(arg)]


def _regex(pattern: Any, ctx: Ctx) -> Any:
    """A ``pattern``/``patternProperties`` regex on PCRE2, as MongoDB runs it (``.search``)."""
    if not isinstance(pattern, str):
        raise ctx.error(f"a regular expression must be a string, got {show(pattern)}")
    try:
        return compile_pcre(pattern)
    except RegexError as e:
        raise ctx.error(f"invalid regular expression {pattern!r}: {e}") from None


# ---- type keywords ------------------------------------------------------------------


# Direct tests for the common single types (same answers as bson_type(v) == name).
_FAST_TYPE_TESTS: dict[str, Pred] = {
    "int": lambda v: type(v) is int and INT32_MIN <= v <= INT32_MAX,
    "long": lambda v: type(v) is Int64 or (type(v) is int and not INT32_MIN <= v <= INT32_MAX),
    "double": lambda v: type(v) is float,
    "decimal": lambda v: type(v) is Decimal128,
    "string": lambda v: type(v) is str,
    "bool": lambda v: type(v) is bool,
    "null": lambda v: v is None,
    "array": lambda v: isinstance(v, (list, tuple)),
    "object": lambda v: isinstance(v, dict),
    "number": is_number,
}


def type_test(names: frozenset[str]) -> Pred:
    """A ``$type``/``bsonType`` test; "number" covers int, long, double and decimal."""
    if len(names) == 1:
        (only,) = names
        fast = _FAST_TYPE_TESTS.get(only)
        if fast is not None:
            return fast
        return lambda v: bson_type(v) == only
    if "number" in names:
        rest = names - {"number"}
        return lambda v: is_number(v) or bson_type(v) in rest
    return lambda v: bson_type(v) in names


def _type_names(arg: Any, ctx: Ctx, known: Any, what: str) -> list[str]:
    items = arg if isinstance(arg, list) else [arg]
    if not items or not all(isinstance(x, str) for x in items):
        raise ctx.error(f"'{what}' must be a string or a non-empty array of strings")
    if len(set(items)) != len(items):
        raise ctx.error(f"'{what}' array must not contain duplicate values")
    for i, t in enumerate(items):
        if t not in known:
            c = ctx.at(i) if isinstance(arg, list) else ctx
            if what == "type" and t == "integer":
                raise c.error(
                    "MongoDB's $jsonSchema does not support type 'integer'; "
                    "use bsonType 'int' or 'long'"
                )
            raise c.error(f"unknown {what} '{t}'{did_you_mean(t, known)}")
    return items


@keyword("bsonType")
def _k_bson_type(arg: Any, schema: dict[str, Any], ctx: Ctx) -> Check:
    if "type" in schema:
        raise ctx.error("cannot specify both 'type' and 'bsonType' in one schema")
    names = _type_names(arg, ctx, TYPE_ALIASES, "bsonType")
    return _leaf("bsonType", arg, type_test(frozenset(names)))


@keyword("type")
def _k_type(arg: Any, schema: dict[str, Any], ctx: Ctx) -> Check:
    names = _type_names(arg, ctx, JSON_TYPES, "type")
    covered = frozenset().union(*(JSON_TYPES[n] for n in names))
    return _leaf("type", arg, type_test(covered))


@keyword("enum")
def _k_enum(arg: Any, schema: dict[str, Any], ctx: Ctx) -> Check:
    if not isinstance(arg, list) or not arg:
        raise ctx.error("'enum' must be an array of at least one element")
    values = tuple(arg)

    def enum(v: Any) -> bool:
        for x in values:  # noqa: SIM110
            if values_equal(v, x):
                return True
        return False

    return _leaf("enum", arg, enum)


# ---- numbers ------------------------------------------------------------------------


_Cmp = Callable[[Any, Any], bool]


def _bound(name: str, exclusive_kw: str, strict: _Cmp, loose: _Cmp) -> KeywordCompiler:
    """minimum/maximum: numbers only; NaN is neither above nor below any bound."""

    def compile_bound(arg: Any, schema: dict[str, Any], ctx: Ctx) -> Check:
        limit = _number_arg(arg, ctx)
        exclusive = schema.get(exclusive_kw, False)
        py_op = strict if exclusive is True else loose
        exact_limit = type(limit) is not Decimal128 and limit == limit

        def bound(v: Any) -> bool:
            t = type(v)
            if (t is int or t is float or t is Int64) and exact_limit:
                return py_op(v, limit)  # NaN compares false
            if not is_number(v):
                return True
            k = num_key(v)
            if k != k:
                return False
            return py_op(compare(v, limit), 0)

        return _leaf(f"{name} (exclusive)" if exclusive is True else name, arg, bound)

    return compile_bound


keyword("minimum")(_bound("minimum", "exclusiveMinimum", operator.gt, operator.ge))
keyword("maximum")(_bound("maximum", "exclusiveMaximum", operator.lt, operator.le))


@keyword("exclusiveMinimum", "exclusiveMaximum")
def _k_exclusive(arg: Any, schema: dict[str, Any], ctx: Ctx) -> None:
    """Draft 4: a boolean modifier of minimum/maximum (read by those keywords)."""
    name = ctx.path.rsplit(".", 1)[-1]
    _bool_arg(arg, ctx)
    base = "minimum" if name == "exclusiveMinimum" else "maximum"
    if base not in schema:
        raise ctx.error(f"'{name}' requires '{base}' in the same schema")
    return None


_MOD_CTX = decimal.Context(prec=800, Emax=999_999, Emin=-999_999)


@keyword("multipleOf")
def _k_multiple_of(arg: Any, schema: dict[str, Any], ctx: Ctx) -> Check:
    divisor = _number_arg(arg, ctx)
    d = num_key(divisor)
    if not (d == d and d not in (math.inf, -math.inf) and d > 0):
        raise ctx.error(f"'multipleOf' must be a positive finite number, got {show(arg)}")
    dd = to_decimal(divisor)

    def multiple_of(v: Any) -> bool:
        if not is_number(v):
            return True
        k = num_key(v)
        if k != k or k in (math.inf, -math.inf):
            return False
        try:
            return _MOD_CTX.remainder(to_decimal(v), dd) == 0
        except decimal.DecimalException:
            return math.fmod(float(k), float(d)) == 0

    return _leaf("multipleOf", arg, multiple_of)


# ---- strings ------------------------------------------------------------------------


@keyword("minLength")
def _k_min_length(arg: Any, schema: dict[str, Any], ctx: Ctx) -> Check:
    n = _count_arg(arg, ctx)
    return _leaf("minLength", arg, lambda v: type(v) is not str or len(v) >= n)


@keyword("maxLength")
def _k_max_length(arg: Any, schema: dict[str, Any], ctx: Ctx) -> Check:
    n = _count_arg(arg, ctx)
    return _leaf("maxLength", arg, lambda v: type(v) is not str or len(v) <= n)


@keyword("pattern")
def _k_pattern(arg: Any, schema: dict[str, Any], ctx: Ctx) -> Check:
    search = _regex(arg, ctx).search
    return _leaf("pattern", arg, lambda v: type(v) is not str or search(v) is not None)


# ---- objects ------------------------------------------------------------------------


@keyword("required")
def _k_required(arg: Any, schema: dict[str, Any], ctx: Ctx) -> Check:
    names = tuple(_string_list(arg, ctx))

    def required_all(v: Any) -> bool:
        if not isinstance(v, dict):
            return True
        for n in names:  # noqa: SIM110
            if n not in v:
                return False
        return True

    only = names[0]

    def required_one(v: Any) -> bool:
        return only in v if isinstance(v, dict) else True

    required = required_one if len(names) == 1 else required_all

    def why(v: Any, path: str) -> str | None:
        if required(v):
            return None
        missing = next(n for n in names if n not in v)
        return f"{_prefix(_join(path, missing))} required failed: field is missing"

    return Check(required, why)


def _schema_map(arg: Any, ctx: Ctx) -> dict[str, Check]:
    name = ctx.path.rsplit(".", 1)[-1]
    if not isinstance(arg, dict):
        raise ctx.error(f"'{name}' must be an object")
    return {k: compile_node(s, ctx.at(k)) for k, s in arg.items()}


@keyword("properties")
def _k_properties(arg: Any, schema: dict[str, Any], ctx: Ctx) -> Check:
    props = tuple((k, c.pred, c.why) for k, c in _schema_map(arg, ctx).items())
    preds = tuple((k, p) for k, p, _ in props)

    def properties(v: Any) -> bool:
        if not isinstance(v, dict):
            return True
        for k, pred in preds:
            x = v.get(k, MISSING)
            if x is not MISSING and not pred(x):
                return False
        return True

    def why(v: Any, path: str) -> str | None:
        if not isinstance(v, dict):
            return None
        for k, _, w in props:
            if k in v:
                r = w(v[k], _join(path, k))
                if r:
                    return r
        return None

    return Check(properties, why)


@keyword("patternProperties")
def _k_pattern_properties(arg: Any, schema: dict[str, Any], ctx: Ctx) -> Check:
    checks = _schema_map(arg, ctx)
    pats = tuple((_regex(p, ctx.at(p)).search, c.pred, c.why) for p, c in checks.items())

    def pattern_properties(v: Any) -> bool:
        if not isinstance(v, dict):
            return True
        for k, x in v.items():
            for search, pred, _ in pats:
                if search(k) is not None and not pred(x):
                    return False
        return True

    def why(v: Any, path: str) -> str | None:
        if not isinstance(v, dict):
            return None
        for k, x in v.items():
            for search, _, w in pats:
                if search(k) is not None:
                    r = w(x, _join(path, k))
                    if r:
                        return r
        return None

    return Check(pattern_properties, why)


@keyword("additionalProperties")
def _k_additional_properties(arg: Any, schema: dict[str, Any], ctx: Ctx) -> Check:
    """Fields not named in ``properties`` nor matched by ``patternProperties``."""
    named = frozenset(schema.get("properties", {}) if isinstance(schema.get("properties"), dict) else ())
    pp = schema.get("patternProperties", {})
    searches = tuple(
        _regex(p, ctx.at(p)).search for p in (pp if isinstance(pp, dict) else {})
    )

    def extra(k: str) -> bool:
        if k in named:
            return False
        for s in searches:  # noqa: SIM110
            if s(k) is not None:
                return False
        return True

    if isinstance(arg, bool):
        if arg:
            return Check(lambda v: True, lambda v, p: None)

        def closed(v: Any) -> bool:
            if not isinstance(v, dict):
                return True
            for k in v:  # noqa: SIM110
                if extra(k):
                    return False
            return True

        def why_closed(v: Any, path: str) -> str | None:
            if closed(v):
                return None
            k = next(k for k in v if extra(k))
            return f"{_prefix(_join(path, k))} additionalProperties false failed for {show(v[k])}"

        return Check(closed, why_closed)
    if not isinstance(arg, dict):
        raise ctx.error("'additionalProperties' must be a boolean or a schema")
    sub = compile_node(arg, ctx)

    def additional(v: Any) -> bool:
        if not isinstance(v, dict):
            return True
        for k, x in v.items():  # noqa: SIM110
            if extra(k) and not sub.pred(x):
                return False
        return True

    def why(v: Any, path: str) -> str | None:
        if not isinstance(v, dict):
            return None
        for k, x in v.items():
            if extra(k):
                r = sub.why(x, _join(path, k))
                if r:
                    return r
        return None

    return Check(additional, why)


@keyword("minProperties")
def _k_min_properties(arg: Any, schema: dict[str, Any], ctx: Ctx) -> Check:
    n = _count_arg(arg, ctx)
    return _leaf("minProperties", arg, lambda v: not isinstance(v, dict) or len(v) >= n)


@keyword("maxProperties")
def _k_max_properties(arg: Any, schema: dict[str, Any], ctx: Ctx) -> Check:
    n = _count_arg(arg, ctx)
    return _leaf("maxProperties", arg, lambda v: not isinstance(v, dict) or len(v) <= n)


@keyword("dependencies")
def _k_dependencies(arg: Any, schema: dict[str, Any], ctx: Ctx) -> Check:
    """``{a: ["b"]}``: when ``a`` is present ``b`` must be; ``{a: {schema}}``: the object matches it."""
    if not isinstance(arg, dict):
        raise ctx.error("'dependencies' must be an object")
    deps: list[tuple[str, Check]] = []
    for k, d in arg.items():
        c = ctx.at(k)
        if isinstance(d, list):
            names = tuple(_string_list(d, c))
            deps.append((k, _required_names(k, names)))
        elif isinstance(d, dict):
            deps.append((k, compile_node(d, c)))
        else:
            raise c.error("a dependency must be an array of field names or a schema")
    items = tuple(deps)

    def dependencies(v: Any) -> bool:
        if not isinstance(v, dict):
            return True
        for k, chk in items:  # noqa: SIM110
            if k in v and not chk.pred(v):
                return False
        return True

    def why(v: Any, path: str) -> str | None:
        if not isinstance(v, dict):
            return None
        for k, chk in items:
            if k in v:
                r = chk.why(v, path)
                if r:
                    return r
        return None

    return Check(dependencies, why)


def _required_names(owner: str, names: tuple[str, ...]) -> Check:
    def pred(v: Any) -> bool:
        return all(n in v for n in names)

    def why(v: Any, path: str) -> str | None:
        if pred(v):
            return None
        missing = next(n for n in names if n not in v)
        return f"{_prefix(_join(path, missing))} dependencies failed: required by '{owner}', field is missing"

    return Check(pred, why)


# ---- arrays -------------------------------------------------------------------------


@keyword("items")
def _k_items(arg: Any, schema: dict[str, Any], ctx: Ctx) -> Check:
    if isinstance(arg, dict):
        sub = compile_node(arg, ctx)
        spred, swhy = sub.pred, sub.why

        def items_all(v: Any) -> bool:
            if type(v) is not list:
                return True
            for x in v:  # noqa: SIM110
                if not spred(x):
                    return False
            return True

        def why_all(v: Any, path: str) -> str | None:
            if type(v) is not list:
                return None
            for i, x in enumerate(v):
                r = swhy(x, _join(path, i))
                if r:
                    return r
            return None

        return Check(items_all, why_all)
    if not isinstance(arg, list):
        raise ctx.error("'items' must be a schema or an array of schemas")
    subs = tuple(compile_node(s, ctx.at(i)) for i, s in enumerate(arg))

    def items_tuple(v: Any) -> bool:
        if type(v) is not list:
            return True
        for s, x in zip(subs, v, strict=False):  # noqa: SIM110
            if not s.pred(x):
                return False
        return True

    def why_tuple(v: Any, path: str) -> str | None:
        if type(v) is not list:
            return None
        for i, (s, x) in enumerate(zip(subs, v, strict=False)):
            r = s.why(x, _join(path, i))
            if r:
                return r
        return None

    return Check(items_tuple, why_tuple)


@keyword("additionalItems")
def _k_additional_items(arg: Any, schema: dict[str, Any], ctx: Ctx) -> Check | None:
    """Only meaningful when ``items`` is an array: elements past its end."""
    if isinstance(arg, bool):
        sub: Check | None = None
    elif isinstance(arg, dict):
        sub = compile_node(arg, ctx)
    else:
        raise ctx.error("'additionalItems' must be a boolean or a schema")
    items = schema.get("items")
    if not isinstance(items, list) or arg is True:
        return None
    start = len(items)
    if sub is None:
        return _leaf(
            "additionalItems", False, lambda v: type(v) is not list or len(v) <= start
        )
    spred, swhy = sub.pred, sub.why

    def additional(v: Any) -> bool:
        if type(v) is not list:
            return True
        for x in v[start:]:  # noqa: SIM110
            if not spred(x):
                return False
        return True

    def why(v: Any, path: str) -> str | None:
        if type(v) is not list:
            return None
        for i in range(start, len(v)):
            r = swhy(v[i], _join(path, i))
            if r:
                return r
        return None

    return Check(additional, why)


@keyword("minItems")
def _k_min_items(arg: Any, schema: dict[str, Any], ctx: Ctx) -> Check:
    n = _count_arg(arg, ctx)
    return _leaf("minItems", arg, lambda v: type(v) is not list or len(v) >= n)


@keyword("maxItems")
def _k_max_items(arg: Any, schema: dict[str, Any], ctx: Ctx) -> Check:
    n = _count_arg(arg, ctx)
    return _leaf("maxItems", arg, lambda v: type(v) is not list or len(v) <= n)


def _unique(v: Any) -> bool:
    if type(v) is not list:
        return True
    seen = set()
    for x in v:
        k = hashable(x)
        if k in seen:
            return False
        seen.add(k)
    # hashable() is exact for integral numbers; fractional ones need compare().
    nums = [x for x in v if is_number(x)]
    for i, a in enumerate(nums):
        for b in nums[i + 1 :]:
            if values_equal(a, b):
                return False
    return True


@keyword("uniqueItems")
def _k_unique_items(arg: Any, schema: dict[str, Any], ctx: Ctx) -> Check | None:
    if not _bool_arg(arg, ctx):
        return None
    return _leaf("uniqueItems", True, _unique)


# ---- combinators --------------------------------------------------------------------


@keyword("allOf")
def _k_all_of(arg: Any, schema: dict[str, Any], ctx: Ctx) -> Check:
    subs = _schema_list(arg, ctx)
    pred = _all([s.pred for s in subs])

    def why(v: Any, path: str) -> str | None:
        for s in subs:
            r = s.why(v, path)
            if r:
                return r
        return None

    return Check(pred, why)


@keyword("anyOf")
def _k_any_of(arg: Any, schema: dict[str, Any], ctx: Ctx) -> Check:
    preds = tuple(s.pred for s in _schema_list(arg, ctx))

    def any_of(v: Any) -> bool:
        for p in preds:  # noqa: SIM110
            if p(v):
                return True
        return False

    def why(v: Any, path: str) -> str | None:
        if any_of(v):
            return None
        return f"{_prefix(path)} anyOf failed: no schema matched {show(v)}"

    return Check(any_of, why)


@keyword("oneOf")
def _k_one_of(arg: Any, schema: dict[str, Any], ctx: Ctx) -> Check:
    preds = tuple(s.pred for s in _schema_list(arg, ctx))

    def count(v: Any) -> int:
        return sum(1 for p in preds if p(v))

    def why(v: Any, path: str) -> str | None:
        n = count(v)
        if n == 1:
            return None
        return f"{_prefix(path)} oneOf failed: {n} schemas matched {show(v)}"

    return Check(lambda v: count(v) == 1, why)


@keyword("not")
def _k_not(arg: Any, schema: dict[str, Any], ctx: Ctx) -> Check:
    sub = compile_node(arg, ctx).pred

    def not_(v: Any) -> bool:
        return not sub(v)

    def why(v: Any, path: str) -> str | None:
        return None if not_(v) else f"{_prefix(path)} not failed: {show(v)} matched the schema"

    return Check(not_, why)


@keyword("description", "title")
def _k_annotation(arg: Any, schema: dict[str, Any], ctx: Ctx) -> None:
    if not isinstance(arg, str):
        raise ctx.error(f"'{ctx.path.rsplit('.', 1)[-1]}' must be a string")
    return None


# ---- compiling ----------------------------------------------------------------------


def compile_node(schema: Any, ctx: Ctx) -> Check:
    """Compile one (sub)schema into a :class:`Check` applied to a present value."""
    if not isinstance(schema, dict):
        raise ctx.error(f"a JSON schema must be an object, got {show(schema)}")
    checks: list[Check] = []
    for kw, arg in schema.items():
        c = ctx.at(kw)
        comp = KEYWORDS.get(kw)
        if comp is None:
            if kw in UNSUPPORTED_KEYWORDS:
                raise c.error(f"$jsonSchema keyword '{kw}' is not supported by MongoDB")
            raise c.error(f"unknown $jsonSchema keyword '{kw}'{did_you_mean(kw, KEYWORDS)}")
        check = comp(arg, schema, c)
        if check is not None:
            checks.append(check)
    pred = _all([chk.pred for chk in checks])
    whys = tuple(chk.why for chk in checks)

    def why(v: Any, path: str) -> str | None:
        for w in whys:
            r = w(v, path)
            if r:
                return r
        return None

    return Check(pred, why)


def compile_schema(schema: Any, ctx: Ctx) -> Pred:
    """``{$jsonSchema: schema}`` as ``doc -> bool`` (``ctx`` points at ``$jsonSchema``)."""
    return compile_node(schema, ctx).pred


def explain_schema(schema: Any, doc: Any) -> str | None:
    """Why ``doc`` fails ``schema`` (first failing keyword), or None if it passes."""
    return compile_node(schema, Ctx("$jsonSchema")).why(doc, "")
