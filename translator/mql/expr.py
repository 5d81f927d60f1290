"""Compile MQL aggregation expressions into Python closures, once per pipeline.

An ``Expr`` is ``fn(doc, vars) -> value``: ``doc`` is ``$$CURRENT`` (field paths read
from it) and ``vars`` maps variable names (``this``, ``value``, ``$let`` names, and the
reserved ``ROOT`` / ``__meta__``) to values. Each operator is one registered compile
function in :data:`OPERATORS`; nothing is looked up by name per document.

Runtime failures raise :class:`ExprError`, which the stage runner turns into a DLQ
entry naming the stage and the operator (ASP: "failed expressions go to the DLQ").
Compile-time mistakes raise :class:`~translator.errors.TranslateError` with a path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from translator.errors import TranslateError, did_you_mean
from translator.mql.values import MISSING

Vars = dict[str, Any]
Expr = Callable[[Any, Vars], Any]
EMPTY_VARS: Vars = {}
META = "__meta__"  # vars key holding the stream metadata overlay (window bounds...)


class ExprError(Exception):
    """A runtime evaluation failure of one operator (goes to the DLQ, never crashes)."""

    def __init__(self, op: str, message: str) -> None:
        self.op = op
        self.message = message
        # MongoDB's own wording often starts with the operator already.
        super().__init__(f"{op}: {message}" if op and not message.startswith(op) else message)


@dataclass(frozen=True)
class Ctx:
    """Compile context: where we are (for error paths) and which variables are bound."""

    path: str
    variables: frozenset[str] = frozenset()

    def at(self, suffix: str | int) -> Ctx:
        if isinstance(suffix, int):
            return Ctx(f"{self.path}[{suffix}]", self.variables)
        return Ctx(f"{self.path}.{suffix}" if self.path else suffix, self.variables)

    def bind(self, *names: str) -> Ctx:
        return Ctx(self.path, self.variables | frozenset(names))

    def error(self, message: str) -> TranslateError:
        return TranslateError(self.path, message)


OperatorCompiler = Callable[[Any, Ctx], Expr]
OPERATORS: dict[str, OperatorCompiler] = {}

# Stages/operators that ASP rejects outright, so we can say "unsupported", not "unknown".
UNSUPPORTED_VARIABLES = frozenset({"NOW", "CLUSTER_TIME", "USER_ROLES"})
SYSTEM_VARIABLES = frozenset({"ROOT", "CURRENT", "REMOVE", "DESCEND", "PRUNE", "KEEP"})


def operator(*names: str) -> Callable[[OperatorCompiler], OperatorCompiler]:
    """Register a compile function for one or more ``$op`` names."""

    def deco(fn: OperatorCompiler) -> OperatorCompiler:
        for n in names:
            if n in OPERATORS:
                raise RuntimeError(f"operator {n} registered twice")
            OPERATORS[n] = fn
        return fn

    return deco


def _ensure_loaded() -> None:
    # Operator families register themselves on import.
    from translator.mql import operators  # noqa: F401


def compile_expr(spec: Any, ctx: Ctx) -> Expr:
    """Compile one expression (a literal, ``"$path"``, ``"$$var"``, ``{$op: args}``, object, array)."""
    _ensure_loaded()
    if isinstance(spec, str):
        if spec.startswith("$$"):
            return _compile_variable(spec[2:], ctx)
        if spec.startswith("$"):
            if len(spec) == 1:
                raise ctx.error("'$' is not a valid field path")
            return compile_field_path(spec[1:], ctx)
        return _const(spec)
    if isinstance(spec, dict):
        if len(spec) == 1:
            (key,) = spec
            if isinstance(key, str) and key.startswith("$"):
                fn = OPERATORS.get(key)
                if fn is None:
                    raise ctx.at(key).error(
                        f"unknown expression operator '{key}'{did_you_mean(key, OPERATORS)}"
                    )
                return fn(spec[key], ctx.at(key))
        for key in spec:
            if isinstance(key, str) and key.startswith("$"):
                raise ctx.error(
                    f"an expression object must have exactly one '$' operator, got {list(spec)}"
                )
        return _compile_object(spec, ctx)
    if isinstance(spec, list):
        items = [compile_expr(x, ctx.at(i)) for i, x in enumerate(spec)]
        if all(getattr(f, "is_const", False) for f in items):
            return _const([f(None, EMPTY_VARS) for f in items])

        def arr(doc: Any, v: Vars) -> Any:
            # In array literals a missing value becomes null (MongoDB).
            out = []
            for f in items:
                x = f(doc, v)
                out.append(None if x is MISSING else x)
            return out

        return arr
    return _const(spec)


def _const(value: Any) -> Expr:
    def const(doc: Any, v: Vars) -> Any:
        return value

    const.is_const = True  # type: ignore[attr-defined]
    const.value = value  # type: ignore[attr-defined]
    return const


def const_value(fn: Expr) -> Any:
    """The value of a constant expression, or MISSING when it is not constant."""
    return fn.value if getattr(fn, "is_const", False) else MISSING  # type: ignore[attr-defined]


def literal(value: Any) -> Expr:
    return _const(value)


def _compile_object(spec: dict[str, Any], ctx: Ctx) -> Expr:
    fields = []
    for k, x in spec.items():
        if "." in k:
            raise ctx.at(k).error("field names in expression objects may not contain '.'")
        fields.append((k, compile_expr(x, ctx.at(k))))

    def obj(doc: Any, v: Vars) -> Any:
        out = {}
        for k, f in fields:
            x = f(doc, v)
            if x is not MISSING:
                out[k] = x
        return out

    return obj


def get_path(value: Any, parts: tuple[str, ...]) -> Any:
    """Aggregation field-path lookup: traverses arrays, collecting values (missing skipped)."""
    for i, p in enumerate(parts):
        if type(value) is dict:
            value = value.get(p, MISSING)
            if value is MISSING:
                return MISSING
        elif isinstance(value, list):
            rest = parts[i:]
            out = []
            for el in value:
                if isinstance(el, (dict, list)):
                    r = get_path(el, rest)
                    if r is not MISSING:
                        out.append(r)
            return out
        elif isinstance(value, dict):
            value = value.get(p, MISSING)
            if value is MISSING:
                return MISSING
        else:
            return MISSING
    return value


def compile_field_path(path: str, ctx: Ctx) -> Expr:
    parts = tuple(path.split("."))
    if any(p == "" for p in parts):
        raise ctx.error(f"invalid field path '${path}'")
    if len(parts) == 1:
        key = parts[0]

        def field1(doc: Any, v: Vars) -> Any:
            if type(doc) is dict:
                return doc.get(key, MISSING)
            return get_path(doc, parts)

        field1.field_parts = parts  # type: ignore[attr-defined]
        return field1
    if len(parts) == 2:
        k1, k2 = parts

        def field2(doc: Any, v: Vars) -> Any:
            if type(doc) is dict:
                x = doc.get(k1, MISSING)
                if type(x) is dict:
                    return x.get(k2, MISSING)
                if x is MISSING:
                    return MISSING
            return get_path(doc, parts)

        field2.field_parts = parts  # type: ignore[attr-defined]
        return field2

    def field(doc: Any, v: Vars) -> Any:
        return get_path(doc, parts)

    field.field_parts = parts  # type: ignore[attr-defined]
    return field


def field_parts(fn: Expr) -> tuple[str, ...] | None:
    """The parts of a plain ``"$a.b"`` expression (``$$CURRENT``-relative), else None.

    Lets a stage or operator inline the dict lookups of a short path and keep the
    compiled closure as the fallback for arrays and non-documents along it.
    """
    return getattr(fn, "field_parts", None)


def _compile_variable(spec: str, ctx: Ctx) -> Expr:
    name, _, rest = spec.partition(".")
    parts = tuple(rest.split(".")) if rest else ()
    if name in UNSUPPORTED_VARIABLES:
        raise ctx.error(f"variable '$${name}' is not supported in stream processing")
    if name == "CURRENT":
        base: Expr = lambda doc, v: doc  # noqa: E731
    elif name == "ROOT":
        base = lambda doc, v: v.get("ROOT", doc)  # noqa: E731
    elif name == "REMOVE":
        base = lambda doc, v: MISSING  # noqa: E731
    elif name in ("DESCEND", "PRUNE", "KEEP"):
        value = name
        base = lambda doc, v: value  # noqa: E731
    elif name in ctx.variables:

        def base(doc: Any, v: Vars) -> Any:
            return v.get(name, MISSING)

    else:
        known = sorted(ctx.variables | SYSTEM_VARIABLES)
        raise ctx.error(
            f"use of undefined variable '$${name}'{did_you_mean(name, known)}"
        )
    if not parts:
        return base

    def var_path(doc: Any, v: Vars) -> Any:
        return get_path(base(doc, v), parts)

    return var_path


# ---- the core operators that the compiler itself relies on -------------------------


@operator("$literal")
def _literal(args: Any, ctx: Ctx) -> Expr:
    return _const(args)


@operator("$let")
def _let(args: Any, ctx: Ctx) -> Expr:
    if not isinstance(args, dict) or set(args) - {"vars", "in"} or "in" not in args:
        raise ctx.error("$let takes {vars: {...}, in: <expression>}")
    vars_spec = args.get("vars", {})
    if not isinstance(vars_spec, dict):
        raise ctx.at("vars").error("must be an object")
    names = list(vars_spec)
    for n in names:
        if not n or not (n[0].islower() or n[0] == "_" or ord(n[0]) > 127):
            raise ctx.at("vars").at(n).error("variable names must begin with a lowercase letter")
    compiled = [(n, compile_expr(x, ctx.at("vars").at(n))) for n, x in vars_spec.items()]
    body = compile_expr(args["in"], ctx.at("in").bind(*names))

    def let(doc: Any, v: Vars) -> Any:
        inner = dict(v)
        for n, f in compiled:
            inner[n] = f(doc, v)
        return body(doc, inner)

    return let


@operator("$meta")
def _meta(args: Any, ctx: Ctx) -> Expr:
    """ASP ``{$meta: "stream.source.topic"}`` / ``"stream.window.start"``.

    The window stage overlays window bounds in ``vars[META]``; otherwise the
    document's own ``_stream_meta`` envelope is read.
    """
    if not isinstance(args, str) or not (args == "stream" or args.startswith("stream.")):
        raise ctx.error(f"$meta supports 'stream' and 'stream.<field>' in stream processing, got {args!r}")
    parts = tuple(args.split(".")[1:])

    def meta(doc: Any, v: Vars) -> Any:
        m = v.get(META, MISSING)
        if m is MISSING:
            m = doc.get("_stream_meta", MISSING) if isinstance(doc, dict) else MISSING
        if not parts:
            return m
        return get_path(m, parts)

    return meta
