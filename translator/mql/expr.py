"""Compile MQL aggregation expressions into Python closures, once per pipeline.

An ``Expr`` is ``fn(doc, vars) -> value``: ``doc`` is ``$$CURRENT`` (field paths read
from it) and ``vars`` maps variable names (``this``, ``value``, ``$let`` names, and the
reserved ``ROOT`` / ``__meta__``) to values. :func:`compile_expr` returns it as a typed
:class:`Node` (``Const``, ``Field``, ``Binary``, ``Call``...) holding the closure, so
compile-time optimizers read what an expression is instead of guessing from a closure. Each operator is one registered compile
function in :data:`OPERATORS`; nothing is looked up by name per document.

Runtime failures raise :class:`ExprError`, which the stage runner turns into a DLQ
entry naming the stage and the operator (ASP: "failed expressions go to the DLQ").
Compile-time mistakes raise :class:`~translator.errors.TranslateError` with a path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar, cast

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


# ---- compiled expression nodes -------------------------------------------------------


class Node(partial[Any]):
    """A compiled expression: a typed record of what it is, holding its reference closure.

    Calling a node calls the closure through :class:`functools.partial`'s C-level call
    (measured: a Python ``__call__`` costs about four times a bare closure call on a field
    lookup, ``partial`` well under twice). Per-document code never pays even that: stages
    keep :func:`closure` of a node, and operator closures have their captured operand
    nodes swapped for closures (:func:`_call_closures`). Only compile-time code
    (:mod:`translator.codegen`, constant folding, stage optimizers) reads the fields,
    through ``isinstance``. Nodes are frozen: fields are set once, in :func:`_make`.
    """

    __slots__ = ()

    @property
    def fn(self) -> Expr:
        """The closure itself (what the hot path calls)."""
        return cast(Expr, self.func)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is frozen")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is frozen")

    def __repr__(self) -> str:
        names: tuple[str, ...] = type(self).__slots__
        fields = ", ".join(f"{k}={getattr(self, k)!r}" for k in names)
        return f"{type(self).__name__}({fields})"


class Const(Node):
    """A constant (a literal, ``$literal``, or an operator folded at compile time)."""

    __slots__ = ("value",)
    value: Any


class Field(Node):
    """``"$a.b"``: a field path relative to ``$$CURRENT``."""

    __slots__ = ("parts",)
    parts: tuple[str, ...]


class Variable(Node):
    """``"$$name.a.b"``: a variable (system or bound by ``$let``/``$map``...) and a path below it."""

    __slots__ = ("name", "parts")
    name: str
    parts: tuple[str, ...]


class Binary(Node):
    """A two-operand operator whose closure has an int/double (string) fast path and
    calls ``general(x, y)`` (MongoDB's full rule) for anything else; codegen writes the
    same fast path inline."""

    __slots__ = ("general", "left", "op", "right")
    op: str
    left: Expr
    right: Expr
    general: Callable[[Any, Any], Any]


class Call(Node):
    """Any other operator: its compile function's closure, named by the operator."""

    __slots__ = ("op",)
    op: str


class Object(Node):
    """``{a: <expr>, b: <expr>}``: an expression object (missing values are left out)."""

    __slots__ = ("fields",)
    fields: tuple[tuple[str, Expr], ...]


class Array(Node):
    """``[<expr>, ...]``: an array literal with at least one non-constant item."""

    __slots__ = ("items",)
    items: tuple[Expr, ...]


N = TypeVar("N", bound=Node)


def _make(cls: type[N], fn: Expr, **fields: Any) -> N:
    node = cls(fn)
    for k, x in fields.items():
        object.__setattr__(node, k, x)
    return node


def _unwrapped(x: Any, depth: int = 0) -> Any:
    """``x`` with nodes replaced by their closures: a node, or one inside a list, tuple
    or dict (two levels: ``[(name, node), ...]``). Lists and dicts change in place."""
    if isinstance(x, Node):
        return x.func
    if depth > 2:
        return x
    t = type(x)
    if t is tuple:
        new = tuple(_unwrapped(y, depth + 1) for y in x)
        return x if all(a is b for a, b in zip(new, x, strict=True)) else new
    if t is list:
        for i, y in enumerate(x):
            u = _unwrapped(y, depth + 1)
            if u is not y:
                x[i] = u
    elif t is dict:
        for k, y in x.items():
            u = _unwrapped(y, depth + 1)
            if u is not y:
                x[k] = u
    return x


def _call_closures(fn: Expr) -> Expr:
    """Let an operator's closure call its operands' closures, not their nodes.

    Operator compile functions capture the nodes that :func:`compile_expr` gave them and
    call them per document. Once an operator is compiled, nothing reads those captured
    nodes again (compile-time readers use the node's own fields), so its closure cells
    are pointed at the closures: measured, a node in between costs 20-50 % on nested
    expressions, a bare closure nothing."""
    for cell in getattr(fn, "__closure__", None) or ():
        try:
            x = cell.cell_contents
        except ValueError:  # a cell not yet filled
            continue
        u = _unwrapped(x)
        if u is not x:
            cell.cell_contents = u
    return fn


def closure(fn: Expr) -> Expr:
    """The closure of a node (or ``fn`` itself): what code that runs per document keeps,
    saving the node's call layer."""
    return fn.func if isinstance(fn, Node) else fn


def binary(op: str, left: Expr, right: Expr, general: Callable[[Any, Any], Any], fn: Expr) -> Binary:
    """The node of a two-operand operator with an inline-able fast path (see :class:`Binary`)."""
    return _make(Binary, fn, op=op, left=left, right=right, general=general)


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
    """Compile one expression (a literal, ``"$path"``, ``"$$var"``, ``{$op: args}``, object, array).

    The result is always a :class:`Node` (see :func:`compile_node`); it is typed as the
    callable operator code treats it as.
    """
    return compile_node(spec, ctx)


def compile_node(spec: Any, ctx: Ctx) -> Node:
    """:func:`compile_expr`, typed as the node it returns. An operator's compile function
    may return a :class:`Node` (kept as is) or a plain closure (wrapped in a :class:`Call`
    naming the operator)."""
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
                compiled = fn(spec[key], ctx.at(key))
                if isinstance(compiled, Node):
                    _call_closures(compiled.func)
                    return compiled
                return _make(Call, _call_closures(compiled), op=key)
        for key in spec:
            if isinstance(key, str) and key.startswith("$"):
                raise ctx.error(
                    f"an expression object must have exactly one '$' operator, got {list(spec)}"
                )
        return _compile_object(spec, ctx)
    if isinstance(spec, list):
        items = tuple(compile_node(x, ctx.at(i)) for i, x in enumerate(spec))
        if all(type(f) is Const for f in items):
            return _const([f(None, EMPTY_VARS) for f in items])
        fns = tuple(closure(f) for f in items)

        def arr(doc: Any, v: Vars) -> Any:
            # In array literals a missing value becomes null (MongoDB).
            out = []
            for f in fns:
                x = f(doc, v)
                out.append(None if x is MISSING else x)
            return out

        return _make(Array, arr, items=items)
    return _const(spec)


def _const(value: Any) -> Const:
    def const(doc: Any, v: Vars) -> Any:
        return value

    return _make(Const, const, value=value)


def const_value(fn: Expr) -> Any:
    """The value of a constant expression, or MISSING when it is not constant."""
    return fn.value if type(fn) is Const else MISSING


def is_const(fn: Expr) -> bool:
    """Whether ``fn`` is a constant expression (its value may be anything, even null)."""
    return type(fn) is Const


def literal(value: Any) -> Const:
    return _const(value)


def _compile_object(spec: dict[str, Any], ctx: Ctx) -> Node:
    fields = []
    for k, x in spec.items():
        if "." in k:
            raise ctx.at(k).error("field names in expression objects may not contain '.'")
        fields.append((k, compile_expr(x, ctx.at(k))))
    fns = [(k, closure(f)) for k, f in fields]

    def obj(doc: Any, v: Vars) -> Any:
        out = {}
        for k, f in fns:
            x = f(doc, v)
            if x is not MISSING:
                out[k] = x
        return out

    return _make(Object, obj, fields=tuple(fields))


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


def compile_field_path(path: str, ctx: Ctx) -> Field:
    parts = tuple(path.split("."))
    if any(p == "" for p in parts):
        raise ctx.error(f"invalid field path '${path}'")
    if len(parts) == 1:
        key = parts[0]

        def field1(doc: Any, v: Vars) -> Any:
            if type(doc) is dict:
                return doc.get(key, MISSING)
            return get_path(doc, parts)

        return _make(Field, field1, parts=parts)
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

        return _make(Field, field2, parts=parts)

    def field(doc: Any, v: Vars) -> Any:
        return get_path(doc, parts)

    return _make(Field, field, parts=parts)


def field_parts(fn: Expr) -> tuple[str, ...] | None:
    """The parts of a plain ``"$a.b"`` expression (``$$CURRENT``-relative), else None.

    Lets a stage or operator inline the dict lookups of a short path and keep the
    compiled closure as the fallback for arrays and non-documents along it.
    """
    return fn.parts if type(fn) is Field else None


def _compile_variable(spec: str, ctx: Ctx) -> Variable:
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
        return _make(Variable, base, name=name, parts=parts)

    def var_path(doc: Any, v: Vars) -> Any:
        return get_path(base(doc, v), parts)

    return _make(Variable, var_path, name=name, parts=parts)


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
    compiled = [(n, closure(compile_expr(x, ctx.at("vars").at(n)))) for n, x in vars_spec.items()]
    body = closure(compile_expr(args["in"], ctx.at("in").bind(*names)))

    def let(doc: Any, v: Vars) -> Any:
        inner = dict(v)
        for n, f in compiled:
            inner[n] = f(doc, v)
        return body(doc, inner)

    return let


@operator("$meta")
def _meta(args: Any, ctx: Ctx) -> Expr:
    """ASP ``{$meta: "stream.source.topic"}`` / ``"stream.window.start"``.

    The window stage overlays window bounds in ``vars[META]`` on the document's own
    ``_stream_meta`` envelope (what ``$setStreamMeta`` sets, also inside the window's
    pipeline); the overlay's top-level fields win, as in the window's output envelope.
    """
    if not isinstance(args, str) or not (args == "stream" or args.startswith("stream.")):
        raise ctx.error(f"$meta supports 'stream' and 'stream.<field>' in stream processing, got {args!r}")
    parts = tuple(args.split(".")[1:])

    def meta(doc: Any, v: Vars) -> Any:
        m = v.get(META, MISSING)
        own = doc.get("_stream_meta", MISSING) if isinstance(doc, dict) else MISSING
        if m is MISSING:
            m = own
        elif isinstance(own, dict):
            if not parts:
                return {**own, **m}
            if parts[0] not in m:
                m = own
        if not parts:
            return m
        return get_path(m, parts)

    return meta
