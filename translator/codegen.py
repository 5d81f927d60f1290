"""Generated Python for a run of stateless stages: ``$match`` + ``$addFields`` / ``$project``.

Why: a chain of closures costs one Python call per operand, operator, clause and stage
for every document (benchmark workload C: ~3x slower than the same checks written out
by hand). This module writes that hand-written loop once per pipeline, at compile time,
from the *compiled* stages (never from the pipeline text), and ``compile()``s it:

* the ``$match`` clauses that :mod:`translator.mql.query` fused (a ``HotPred`` and its
  ``HotSpec`` clauses) become inline tests; any other query is one call of its predicate;
* field paths are read inline, one level down, and each path is read once per document:
  ``obs`` and ``obs.temp`` are shared by the ``$match``, ``$addFields`` and ``$project``
  that use them. The loop first tries a *strict* body that reads ``doc[key]`` (faster
  than ``dict.get``); a missing field raises KeyError and that document goes through
  the *lenient* body (``doc.get(key, MISSING)``), see :class:`Chain`;
* expressions are written by node type (:data:`NODE_WRITERS`): constants and field
  paths inline; ``$divide``, ``$add``, ``$subtract``, ``$multiply`` and the comparisons
  are :class:`~translator.mql.expr.Binary` nodes: the same int/double (string) fast
  path as their closure is written inline, and ``general(x, y)`` (MongoDB's full rule, with its
  error texts) is called for anything else: bool, Int64, Decimal128, NaN, null,
  missing, arrays...;
* ``$addFields`` values are kept in locals; a following ``$project`` reads them from
  there, and builds its output with one dict display when every value is present.

Why it is safe: the source text is made of this module's fixed templates, identifiers
made from a counter, and ``repr()`` of values whose type is exactly ``str`` or ``int``
(checked to read back equal with :func:`ast.literal_eval`). Every other value (other
constants, types, the compiled closures) is bound by name in the function's namespace,
whose builtins are only ``type``, ``dict``, ``int``, ``float``, ``str`` and ``KeyError``.
No user string reaches the source unescaped.

The same span is also written two other ways, each beside the stamped reference:
:func:`compile_unstamped` (stateless pipelines, :mod:`translator.fast_stateless`) runs
on documents that were not stamped with ``_ts`` and reads ``$_ts`` as the record's time;
:func:`compile_columns` (stages before a window, :mod:`translator.fastpath`) yields, per
kept document, only the values the window's fold reads, without building the output
document.

Fallbacks: a stage of another shape (dotted ``$addFields`` paths, an exclusion or nested
``$project``, an unknown expression after the first map stage...) makes
:func:`compile_chain` return None and the closures run as before. At run time a
document that is not a plain ``dict`` raises, and any exception makes the caller
(:func:`translator.stages.run_chain`) re-run the same records stage by stage through
the closures, so DLQ reasons and values are the closures' own; with metrics on, that
batch is counted in the stage's ``operatorStats.fastPathFallbacks``. With the processor
option ``fastPaths: false`` no code is generated at all.
"""

from __future__ import annotations

import ast
import functools
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from translator.mql.expr import (
    EMPTY_VARS,
    Binary,
    Const,
    Expr,
    Field,
    Node,
    Vars,
    const_value,
    get_path,
)
from translator.mql.query import HotPred
from translator.mql.values import MISSING
from translator.stagespec import COPY, PATH2, AddSpec, IncludeSpec, MapSpec

ChainFn = Callable[[list[tuple[Any, Any]], Vars], list[tuple[Any, Any]]]

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


class Unsupported(Exception):
    """Compile time: a stage or expression this module does not write out."""


class NotADict(Exception):
    """Run time: a document that is not a plain dict (the closures handle it)."""


class Retyped(Exception):
    """Run time, a typed body (:class:`Switch`): a value is not of the type observed for
    it; that document runs the lenient body."""


class FieldMiss(Exception):
    """Run time, :func:`compile_columns`: a field the fold reads is missing, or a value
    along its path is not a document (where a fast-path field getter raises)."""


@dataclass(frozen=True)
class Val:
    """A value in the generated code: ``src`` is a local name or a literal."""

    src: str
    maybe_missing: bool


_ABSENT = Val("M", True)
_TS = Val("TS", False)  # the record's time as the stamped ``_ts`` (see _Gen.ts_field)

# Python operator of the query fast path (see query.HotSpec) -> its source symbol.
_QUERY_OPS: dict[Callable[[Any, Any], bool], str] = {
    operator.eq: "==",
    operator.ne: "!=",
    operator.gt: ">",
    operator.ge: ">=",
    operator.lt: "<",
    operator.le: "<=",
}
_BUILTIN_TYPES: dict[type, str] = {int: "int", float: "float", str: "str", dict: "dict"}
_CMP_SYMBOLS = {"$eq": "==", "$ne": "!=", "$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}


@functools.lru_cache(maxsize=4096, typed=True)
def _literal(value: str | int) -> str | None:
    """``repr(value)`` if it reads back as the same exact str/int, else None. Cached: a
    span writes each key several times (strict and lenient bodies, stamped and
    unstamped loops), and each check parses (part of a flow's start-up)."""
    try:
        src = repr(value)
        back = ast.literal_eval(src)
    except (ValueError, SyntaxError):  # e.g. an int too long for str()
        return None
    return src if type(back) is type(value) and back == value else None


def _mk(keys: tuple[str, ...], vals: tuple[Any, ...]) -> dict[str, Any]:
    """A projected document when some value is missing (missing fields are left out)."""
    return {k: x for k, x in zip(keys, vals, strict=True) if x is not MISSING}


class _Gen:
    def __init__(self, ts_field: str | None = None) -> None:
        self.ns: dict[str, Any] = {
            "__builtins__": {
                "type": type, "dict": dict, "float": float, "int": int, "str": str, "zip": zip,
                "KeyError": KeyError, "TypeError": TypeError, "IndexError": IndexError,
            },
            "M": MISSING,
            "GP": get_path,
            "NotADict": NotADict,
            "Retyped": Retyped,
            "FieldMiss": FieldMiss,
            "MK": _mk,
            "GPS": _present_path,
        }
        self.n = 0
        # Set: the documents are not stamped; the input document's ``ts_field`` is the
        # record's time ``TS`` (a datetime), and nothing may hand ``doc`` to a closure.
        self.ts_field = ts_field
        self.reads_ts = False
        # Typed bodies (see Switch): the exact type observed for an input path's value.
        # A value with one is checked once (``raise Retyped`` otherwise) and the type
        # tests on it are written as constants, which Python's compiler folds away.
        self.assume: dict[tuple[str, ...], type] | None = None
        self.reads: list[tuple[str, ...]] = []  # the input paths a body reads, in order
        self.start(strict=False)

    def start(self, strict: bool) -> None:
        """Begin a loop body. A strict body reads fields with ``doc[key]``: a missing
        field raises KeyError (the caller then runs the lenient body for that document),
        so every value read is present."""
        self.strict = strict
        self.lines: list[str] = []
        # The document the current stage sees: the input ``doc`` plus ``ops`` (fields set
        # by $addFields, in order), or, after a $project, ``base`` (its fields) plus ops.
        self.base: list[tuple[str, Val]] | None = None
        self.ops: list[tuple[str, Val]] = []
        self.top_cache: dict[str, Val] = {}
        self.path_cache: dict[tuple[str, tuple[str, ...]], Val] = {}
        self.type_cache: dict[str, str] = {}  # value source -> local holding its type
        self.read_of: dict[str, tuple[str, ...]] = {}  # value source -> its input path

    # ---- names and literals ------------------------------------------------------------

    def fresh(self, prefix: str = "x") -> str:
        self.n += 1
        return f"{prefix}{self.n}"

    def bind(self, value: Any) -> str:
        name = self.fresh("G")
        self.ns[name] = value
        return name

    def lit(self, value: Any) -> str:
        """Source for a constant: ``repr`` of an exact str/int, else a bound name."""
        if type(value) is str or type(value) is int:
            src = _literal(value)
            if src is not None:
                return src
        return self.bind(value)

    def typeof(self, v: Val) -> str:
        """A local holding ``type(v)``, computed once per value (at the body's top level);
        in a typed body, for a value of an observed type, that type's marker (``@int``...)
        after a check that raises :class:`Retyped` for any other type."""
        t = self.type_cache.get(v.src)
        if t is None:
            known = self._assumed(v)
            if known is not None:
                name = _BUILTIN_TYPES[known]
                self.emit(f"if type({v.src}) is not {name}:\n    raise Retyped")
                t = "@" + name
            else:
                t = self.fresh("t")
                self.emit(f"{t} = type({v.src})")
            self.type_cache[v.src] = t
        return t

    def _assumed(self, v: Val) -> type | None:
        if self.assume is None:
            return None
        parts = self.read_of.get(v.src)
        return None if parts is None else self.assume.get(parts)

    @staticmethod
    def is_(t: str, name: str) -> str:
        """``t is name`` (a builtin type's name), or its constant for a known type."""
        if t.startswith("@"):
            return "True" if t == "@" + name else "False"
        return f"{t} is {name}"

    def _read(self, v: Val, parts: tuple[str, ...]) -> None:
        self.read_of[v.src] = parts
        if self.strict and parts not in self.reads:
            self.reads.append(parts)

    def type_in(self, t: str, types: frozenset[type]) -> str:
        """``t`` is one of ``types``, as a chain of ``is`` (builtins first)."""
        if t.startswith("@"):
            return "True" if any(t == "@" + _BUILTIN_TYPES[x] for x in _BUILTIN_TYPES if x in types) else "False"
        names = [_BUILTIN_TYPES[x] for x in _BUILTIN_TYPES if x in types]
        names += [self.bind(x) for x in sorted(types - _BUILTIN_TYPES.keys(), key=lambda x: x.__name__)]
        return " or ".join(f"{t} is {n}" for n in names) if names else "False"

    def emit(self, block: str) -> None:
        self.lines.extend(block.strip("\n").split("\n"))

    # ---- reading the current document ---------------------------------------------------

    def pristine(self) -> bool:
        return self.base is None and not self.ops

    def top(self, key: str) -> Val:
        """The current document's field ``key``: a value the body already holds, or a
        new read of the input document."""
        v = self.known(key)
        if v is None:
            v = Val(self.fresh(), not self.strict)
            read = f"doc[{self.lit(key)}]" if self.strict else f"doc.get({self.lit(key)}, M)"
            self.emit(f"{v.src} = {read}")
            self.top_cache[key] = v
            self._read(v, (key,))
        return v

    def known(self, key: str) -> Val | None:
        """:meth:`top` without a new read (None when it would need one)."""
        for k, v in reversed(self.ops):
            if k == key:
                return v
        if self.base is not None:
            for k, v in self.base:
                if k == key:
                    return v
            return _ABSENT
        if key == self.ts_field:
            self.reads_ts = True
            return _TS
        return self.top_cache.get(key)

    def path(self, parts: tuple[str, ...]) -> Val:
        """Aggregation field path (arrays along it yield arrays, as expr.get_path)."""
        head = self.top(parts[0])
        if len(parts) == 1 or head is _ABSENT:
            return head
        if not head.src.isidentifier():
            return _ABSENT  # a str/int literal: nothing below it
        rest = parts[1:]
        ck = (head.src, rest)
        v = self.path_cache.get(ck)
        if v is None:
            v = Val(self.fresh(), not self.strict)
            gp = "GPS" if self.strict else "GP"
            if len(rest) == 1:
                key = self.lit(rest[0])
                one = f"{head.src}[{key}]" if self.strict else f"{head.src}.get({key}, M)"
                th = self.typeof(head)
                self.emit(f"{v.src} = {one} if {self.is_(th, 'dict')} else {gp}({head.src}, {self.bind(rest)})")
            else:
                self.emit(f"{v.src} = {gp}({head.src}, {self.bind(rest)})")
            self.path_cache[ck] = v
            base = self.read_of.get(head.src)
            if base is not None:
                self._read(v, base + rest)
        return v

    # ---- expressions -----------------------------------------------------------------------

    def expr(self, fn: Expr) -> Val:
        writer = NODE_WRITERS.get(type(fn))
        if writer is not None:
            v = writer(self, fn)
            if v is not None:
                return v
        if not self.pristine():
            raise Unsupported("an expression that needs the intermediate document")
        self.no_closure_on_doc()
        v = Val(self.fresh(), True)
        self.emit(f"{v.src} = {self.bind(fn.fn if isinstance(fn, Node) else fn)}(doc, V)")
        return v

    # ---- stages ------------------------------------------------------------------------------

    def no_closure_on_doc(self) -> None:
        """Without the stamp, a closure given ``doc`` could read ``_ts`` (or ``$$ROOT``)."""
        if self.ts_field is not None:
            raise Unsupported("a closure reading the unstamped document")

    def match(self, query: Callable[[Any], bool]) -> None:
        if not isinstance(query, HotPred):
            self.no_closure_on_doc()
            self.emit(f"if not {self.bind(query)}(doc):\n    continue")
            return
        for k1, k2, types, py_op, rhs, negate, general in query.specs:
            sym = _QUERY_OPS.get(py_op)
            if sym is None:
                raise Unsupported("query operator")
            if k1 == self.ts_field:  # ``general(doc)`` reads only this clause's field
                raise Unsupported("a query on the unstamped time field")
            xv = self.path((k1,) if k2 is None else (k1, k2))
            x = xv.src
            test = f"{x} {sym} {self.lit(rhs)}"
            fail = test if negate else f"not ({test})"
            self.emit(
                f"if {self.type_in(self.typeof(xv), types)}:\n"
                f"    if {fail}:\n"
                f"        continue\n"
                f"elif not {self.bind(general)}(doc):\n"
                f"    continue"
            )

    def add_fields(self, spec: AddSpec) -> None:
        vals = [(k, self.expr(f)) for k, f in spec.fields]  # all from the stage's input document
        self.ops.extend(vals)

    def project(self, spec: IncludeSpec) -> None:
        out: list[tuple[str, Val]] = []
        if spec.with_id:
            out.append(("_id", self.top("_id")))
        for k, kind, a, b in spec.fields:
            if kind == COPY:
                out.append((k, self.top(a)))
            elif kind == PATH2 and b is not None:
                out.append((k, self.path(b)))
            else:
                out.append((k, self.expr(a)))
        self.base = [(k, v) for k, v in out if v is not _ABSENT]
        self.ops = []

    def output(self) -> None:
        """``o`` = the document after the last stage, in MongoDB's key order."""
        if self.base is None:
            if self.ts_field is not None:
                raise Unsupported("the output keeps the unstamped input document")
            self.emit("o = dict(doc)")
        else:
            display = "{" + ", ".join(f"{self.lit(k)}: {v.src}" for k, v in self.base) + "}"
            maybe = [v.src for _, v in self.base if v.maybe_missing]
            if maybe:
                keys = self.bind(tuple(k for k, _ in self.base))
                vals = "(" + "".join(f"{v.src}, " for _, v in self.base) + ")"
                self.emit(
                    f"if {' or '.join(f'{m} is M' for m in maybe)}:\n"
                    f"    o = MK({keys}, {vals})\n"
                    f"else:\n"
                    f"    o = {display}"
                )
            else:
                self.emit(f"o = {display}")
        for k, v in self.ops:
            key = self.lit(k)
            if v is _ABSENT:
                self.emit(f"o.pop({key}, None)")
            elif v.maybe_missing:
                self.emit(f"if {v.src} is M:\n    o.pop({key}, None)\nelse:\n    o[{key}] = {v.src}")
            else:
                self.emit(f"o[{key}] = {v.src}")

    def plain_reads(self, paths: Sequence[tuple[str, ...]]) -> None:
        """``F0, F1...`` = each path's value in the current document, read as the fast
        path's field getters read it (``itemgetter``, :func:`translator.fastpath.field_getter`):
        a missing field, or a value along the path that cannot be subscripted by name
        (an array, a scalar), raises :class:`FieldMiss`. MQL's own path rules (arrays
        along the path) are the general path's."""
        start = len(self.lines)
        for j, parts in enumerate(paths):
            name = f"F{j}"
            head = self.known(parts[0])
            subs = "".join(f"[{self.lit(k)}]" for k in parts[1:])
            if head is None:  # not read by the stages: a KeyError here is a FieldMiss
                self.emit(f"{name} = doc[{self.lit(parts[0])}]{subs}")
                continue
            src = head.src
            if head.maybe_missing:
                self.emit(f"if {src} is M:\n    raise FieldMiss")
            if subs and not src.isidentifier():  # a literal: subscript it through a name
                self.emit(f"{name} = {src}")
                src = name
            self.emit(f"{name} = {src}{subs}")
        reads = self.lines[start:]
        self.lines[start:] = [
            "try:",
            *("    " + ln for ln in reads),
            "except (KeyError, TypeError, IndexError):",
            "    raise FieldMiss",
        ]

    def body(self, indent: int) -> str:
        return "\n".join(" " * indent + line for line in self.lines)


def _loop(name: str, body: str, tail: str, docs: bool) -> str:
    return _func(name, "recs, V", "doc, ts", "recs", body, "o" if docs else "(o, ts)", tail)


def _func(name: str, args: str, each: str, over: str, body: str, item: str, tail: str, columns: int = 0) -> str:
    """A loop over a batch appending ``item`` per document to ``out``; with ``columns``,
    ``item`` is that many comma-separated values and ``out`` one list per value
    (cheaper than a tuple per document transposed afterwards)."""
    if columns:
        names = [f"c{j}" for j in range(columns)]
        start = f"    out = [{', '.join('[]' for _ in names)}]\n    {', '.join(names)}, = [c.append for c in out]\n"
        add = "; ".join(f"{c}({v.strip()})" for c, v in zip(names, item.split(","), strict=True))
    else:
        start, add = "    out = []\n    append = out.append\n", f"append({item})"
    return (
        f"def {name}({args}):\n"
        f"{start}"
        "    misses = 0\n"
        f"    for {each} in {over}:\n"
        "        if type(doc) is not dict:\n"
        "            raise NotADict\n"
        f"{body}\n"
        f"        {add}\n"
        f"    return {tail}\n"
    )


RecsFn = Callable[[list[tuple[Any, Any]], Vars], Any]


class Chain:
    """The generated functions of a span. The strict loop reads fields by subscript and
    runs the lenient body for a document with a missing field; when more than one
    document in eight of a batch misses a field, later batches use the lenient loop.
    ``docs`` is the same as a call but returns the documents without their times (for
    the last stages before a sink, saving a tuple per document).

    The source is compiled on the first call: a stateless pipeline whose batches all
    take :mod:`translator.fast_stateless` never runs it (a few milliseconds of every
    flow's start-up, benchmark workload C)."""

    __slots__ = ("fns", "lenient", "lenient_docs", "ns", "source", "strict", "strict_docs", "use_strict")

    def __init__(self, ns: dict[str, Any], source: str, steps: tuple[Any, ...]) -> None:
        self.fns = steps  # the stages' own closures, to recognise the span
        self.ns: dict[str, Any] | None = ns
        self.source = source
        self.use_strict = True

    def _load(self) -> None:
        """Compile the loops. Idempotent, and ``ns`` is cleared last, so workers (threads)
        that call a new chain at once each see whole functions."""
        ns = self.ns
        if ns is None:
            return
        exec(compile(self.source, "<mqlflow codegen>", "exec"), ns)  # source: see the module docstring
        self.strict, self.lenient = ns["strict"], ns["lenient"]
        self.strict_docs, self.lenient_docs = ns["strict_docs"], ns["lenient_docs"]
        self.ns = None

    def __call__(self, recs: list[tuple[Any, Any]], v: Vars) -> list[tuple[Any, Any]]:
        if self.ns is not None:
            self._load()
        if self.use_strict:
            out, misses = self.strict(recs, v)
            if misses * 8 > len(recs):
                self.use_strict = False
            return out
        return self.lenient(recs, v)

    def docs(self, recs: list[tuple[Any, Any]], v: Vars) -> list[Any]:
        if self.ns is not None:
            self._load()
        if self.use_strict:
            out, misses = self.strict_docs(recs, v)
            if misses * 8 > len(recs):
                self.use_strict = False
            return out
        return self.lenient_docs(recs, v)


def _present_path(value: Any, rest: tuple[str, ...]) -> Any:
    """get_path for a strict body: a missing value raises KeyError."""
    x = get_path(value, rest)
    if x is MISSING:
        raise KeyError(rest)
    return x


# ---- operator writers: the closures' fast paths, inline --------------------------------------

Writer = Callable[[_Gen, str, list[Val], Sequence[Expr], Callable[[Any, Any], Any]], Val]


def _binary(template: str) -> Writer:
    """``template`` sets ``{r}`` from ``{x}``/``{y}`` (types in ``{t}``/``{u}``), calling
    ``{S}`` (the operator's general rule) for anything the fast path does not cover."""

    def write(g: _Gen, name: str, vals: list[Val], operands: Sequence[Expr], general: Callable[[Any, Any], Any]) -> Val:
        x, y = vals
        r = Val(g.fresh(), False)
        t, u = g.typeof(x), g.typeof(y)
        text = template
        for ph, tv in (("{t}", t), ("{u}", u)):
            for tname in _BUILTIN_TYPES.values():
                text = text.replace(f"{ph} is {tname}", g.is_(tv, tname))
        g.emit(text.format(x=x.src, y=y.src, r=r.src, t=t, u=u, S=g.bind(general), lo=INT32_MIN, hi=INT32_MAX))
        return r

    return write


def _int32_op(sym: str) -> str:
    # add2 / subtract / multiply2: int32 in and out, or a double involved; else general.
    return (
        "if {t} is int and {u} is int and {lo} <= {x} <= {hi} and {lo} <= {y} <= {hi} "
        f"and {{lo}} <= {{x}} {sym} {{y}} <= {{hi}}:\n"
        f"    {{r}} = {{x}} {sym} {{y}}\n"
        "elif ({t} is int and {u} is float) or ({t} is float and ({u} is float or {u} is int)):\n"
        f"    {{r}} = {{x}} {sym} {{y}}\n"
        "else:\n"
        "    {r} = {S}({x}, {y})"
    )


_DIVIDE = (
    # arithmetic.divide: float(x) / y for int/double operands and a non-zero divisor.
    "if {t} is float and ({u} is float or {u} is int) and {y}:\n"
    "    {r} = {x} / {y}\n"
    "elif {t} is int and ({u} is int or {u} is float) and {y}:\n"
    "    {r} = float({x}) / {y}\n"
    "else:\n"
    "    {r} = {S}({x}, {y})"
)


def _compare(g: _Gen, name: str, vals: list[Val], operands: Sequence[Expr], general: Callable[[Any, Any], Any]) -> Val:
    """comparison._against_constant / cmp_op, inline."""
    sym = _CMP_SYMBOLS[name]
    x, y = vals
    r = Val(g.fresh(), False)
    s = g.bind(general)
    c = const_value(operands[1])
    tc = type(c)
    if const_value(operands[0]) is MISSING and (tc is str or ((tc is int or tc is float) and c == c)):
        t = g.typeof(x)
        if tc is str:
            cond = g.is_(t, "str")
        elif t == "@int":
            cond = "True"
        else:
            cond = f"{g.is_(t, 'int')} or ({g.is_(t, 'float')} and {x.src} == {x.src})"
        g.emit(f"{r.src} = {x.src} {sym} {y.src} if {cond} else {s}({x.src}, {y.src})")
        return r
    t, u = g.typeof(x), g.typeof(y)
    g.emit(
        f"if ({g.is_(t, 'int')} or {g.is_(t, 'float')}) and ({g.is_(u, 'int')} or {g.is_(u, 'float')}) "
        f"and {x.src} == {x.src} and {y.src} == {y.src}:\n"
        f"    {r.src} = {x.src} {sym} {y.src}\n"
        f"elif {g.is_(t, 'str')} and {g.is_(u, 'str')}:\n"
        f"    {r.src} = {x.src} {sym} {y.src}\n"
        f"else:\n"
        f"    {r.src} = {s}({x.src}, {y.src})"
    )
    return r


# Binary node's operator -> writer of its inline fast path.
OPERATOR_WRITERS: dict[str, Writer] = {
    "$divide": _binary(_DIVIDE),
    "$add": _binary(_int32_op("+")),
    "$subtract": _binary(_int32_op("-")),
    "$multiply": _binary(_int32_op("*")),
    **dict.fromkeys(_CMP_SYMBOLS, _compare),
}


def _write_const(g: _Gen, node: Const) -> Val:
    return Val(g.lit(node.value), False)


def _write_field(g: _Gen, node: Field) -> Val:
    return g.path(node.parts)


def _write_binary(g: _Gen, node: Binary) -> Val | None:
    writer = OPERATOR_WRITERS.get(node.op)
    if writer is None:
        return None
    operands = (node.left, node.right)
    return writer(g, node.op, [g.expr(a) for a in operands], operands, node.general)


# Expression node type -> its writer (None from a writer: write a call of the closure).
NODE_WRITERS: dict[type, Callable[[_Gen, Any], Val | None]] = {
    Const: _write_const,
    Field: _write_field,
    Binary: _write_binary,
}

# Map stage spec type -> the _Gen method that writes it.
STAGE_WRITERS: dict[type, Callable[[_Gen, Any], None]] = {
    AddSpec: _Gen.add_fields,
    IncludeSpec: _Gen.project,
}


def _bodies(
    g: _Gen,
    query: Callable[[Any], bool] | None,
    maps: Sequence[MapSpec | None],
    finish: Callable[[_Gen], None],
    assume: dict[tuple[str, ...], type] | None = None,
    on_miss: str = "",
) -> tuple[str, str]:
    """The loop bodies of a span: the strict body with the lenient one run for a
    document whose strict body raised KeyError, and the lenient one alone; ``finish``
    writes what a body ends with. With ``assume``, the strict body is typed (see
    :class:`Switch`) and a document it raises :class:`Retyped` for runs the lenient one.
    ``on_miss``: that document's statement instead of the lenient body (then the
    second body is not written)."""
    bodies: list[str] = []
    for strict in (True, False) if not on_miss else (True,):
        g.start(strict)
        g.assume = assume if strict else None
        if query is not None:
            g.match(query)
        for spec in maps:
            write = STAGE_WRITERS.get(type(spec))
            if write is None:
                raise Unsupported("a stage of another shape")
            write(g, spec)
        finish(g)
        bodies.append(g.body(12 if strict else 8))
    strict_body, lenient_body = bodies if not on_miss else (bodies[0], " " * 8 + on_miss)
    lenient_in_except = "\n".join("    " + line for line in lenient_body.split("\n"))
    caught = "KeyError" if assume is None else "(KeyError, Retyped)"
    both = f"        try:\n{strict_body}\n        except {caught}:\n            misses += 1\n{lenient_in_except}"
    return both, lenient_body


def _exec(g: _Gen, source: str, names: Sequence[str]) -> dict[str, Any]:
    exec(compile(source, "<mqlflow codegen>", "exec"), g.ns)  # source: see the module docstring
    return {k: g.ns[k] for k in names}


def compile_chain(
    query: Callable[[Any], bool] | None, maps: Sequence[MapSpec | None], steps: tuple[Any, ...] = ()
) -> Chain | None:
    """One function ``(recs, vars) -> recs`` for an optional ``$match`` (its compiled
    query) then map stages of known shapes (top-level ``$addFields``: :class:`AddSpec`,
    inclusion ``$project``: :class:`IncludeSpec`); None when a stage has another shape.
    ``steps``: the closures of the whole span, kept to recognise it."""
    g = _Gen()
    try:
        both, lenient_body = _bodies(g, query, maps, _Gen.output)
    except Unsupported:
        return None
    source = "\n\n".join(
        [
            _loop("strict", both, "out, misses", False),
            _loop("lenient", lenient_body, "out", False),
            _loop("strict_docs", both, "out, misses", True),
            _loop("lenient_docs", lenient_body, "out", True),
        ]
    )
    return Chain(g.ns, source, steps)


LoopFn = Callable[[list[Any], list[Any] | None, Vars], Any]
Specialise = Callable[[list[Any]], tuple[LoopFn, str] | None]

# The exact types a typed body may assume for an input value (bool, Int64... never).
_TYPED = frozenset({int, float, str, dict})
_SAMPLE = 64  # documents whose types a typed body is written for


class Switch:
    """A strict and a lenient generated loop over a batch (see :class:`Chain`): the
    strict one until more than one document in eight of a batch misses a field.

    A *typed* loop first, where ``specialise`` is given (:func:`compile_unstamped`):
    MongoDB's type rules make the strict body test each value's type before every
    operator (benchmark workload C: a third of the loop). After the first batch, the
    input paths whose values had one exact type in its first documents (int, float,
    str or object) get a strict body written for those types: one ``type(v) is T``
    check per value, the operators' branches for other types folded away. A value of
    another type raises :class:`Retyped` and that document runs the lenient body, with
    every check. When more than one document in eight of a batch does, the typed loop
    is dropped for good (:attr:`retyped` says so once, for the caller's fallback count)
    and the strict/lenient pair runs as before."""

    __slots__ = ("lenient", "retyped", "source", "specialise", "strict", "typed", "typed_source", "use_strict")

    def __init__(self, fns: dict[str, LoopFn], source: str, specialise: Specialise | None = None) -> None:
        self.strict = fns["strict"]
        self.lenient = fns["lenient"]
        self.source = source
        self.use_strict = True
        self.specialise = specialise
        self.typed: LoopFn | None = None
        self.typed_source = ""
        self.retyped = False

    def __call__(self, docs: list[Any], times: list[Any] | None) -> Any:
        typed = self.typed
        if typed is not None:
            out, misses = typed(docs, times, EMPTY_VARS)
            if misses * 8 > len(docs):
                self.typed, self.retyped = None, True
            return out
        if self.use_strict:
            out, misses = self.strict(docs, times, EMPTY_VARS)
            if misses * 8 > len(docs):
                self.use_strict = False
            elif self.specialise is not None:
                spec, self.specialise = self.specialise, None
                got = spec(docs)
                if got is not None:
                    self.typed, self.typed_source = got
            return out
        return self.lenient(docs, times, EMPTY_VARS)


def observed_types(docs: list[Any], reads: Sequence[tuple[str, ...]]) -> dict[tuple[str, ...], type]:
    """Each input path whose value has one exact type (of :data:`_TYPED`) in the first
    documents of a batch (paths missing there, or of several types, are left out)."""
    sample = [d for d in docs[:_SAMPLE] if type(d) is dict]
    out: dict[tuple[str, ...], type] = {}
    for parts in reads:
        types = {type(get_path(d, parts)) for d in sample}
        if len(types) == 1:
            (t,) = types
            if t in _TYPED:
                out[parts] = t
    return out


def _switch(
    g: _Gen,
    finish: Callable[[_Gen], None],
    query: Callable[[Any], bool] | None,
    maps: Sequence[MapSpec | None],
    loop: Callable[[str, str, str], str],
) -> Switch | None:
    try:
        both, lenient_body = _bodies(g, query, maps, finish)
    except Unsupported:
        return None
    source = loop("strict", both, "out, misses") + "\n\n" + loop("lenient", lenient_body, "out")
    return Switch(_exec(g, source, ("strict", "lenient")), source)


def compile_unstamped(query: Callable[[Any], bool] | None, maps: Sequence[MapSpec | None], ts_field: str) -> tuple[Switch, bool] | None:
    """The span as ``(docs, dates) -> output documents`` over documents that were *not*
    stamped with ``ts_field``: a read of the input's ``ts_field`` is the record's time
    (``dates``, the ``_ts`` values the stamp would have written). Only for a span whose
    output is a new document (it ends with ``$project``, possibly followed by
    ``$addFields``) and that hands the input document to no closure; None otherwise.
    The bool: whether the span reads the time at all (else ``dates`` may be None)."""
    g = _Gen(ts_field)

    def loop(name: str, body: str, tail: str) -> str:  # after the bodies: reads_ts is known
        each, over = ("doc, TS", "zip(docs, dates)") if g.reads_ts else ("doc", "docs")
        return _func(name, "docs, dates, V", each, over, body, "o", tail)

    sw = _switch(g, _Gen.output, query, maps, loop)
    if sw is None:
        return None
    reads = tuple(g.reads)

    def specialise(docs: list[Any]) -> tuple[LoopFn, str] | None:
        """The typed loop for the types ``docs`` show (None if they show none)."""
        assume = observed_types(docs, reads)
        if not assume:
            return None
        tg = _Gen(ts_field)
        tg.ns["LENIENT"] = sw.lenient
        # A document of another type: the lenient loop on it alone (rare; keeps this
        # function's source, compiled while the stream runs, half as long).
        dates = "[TS]" if g.reads_ts else "None"
        try:
            both, _ = _bodies(tg, query, maps, _Gen.output, assume, f"out.extend(LENIENT([doc], {dates}, V))\n        continue")
        except Unsupported:
            return None
        if tg.reads_ts != g.reads_ts:  # cannot happen (same stages); the loop's arguments differ
            return None
        source = loop("typed", both, "out, misses")
        return _exec(tg, source, ("typed",))["typed"], source

    sw.specialise = specialise
    return sw, g.reads_ts


def compile_columns(query: Callable[[Any], bool] | None, maps: Sequence[MapSpec | None], paths: Sequence[tuple[str, ...]]) -> Switch | None:
    """The span as ``(docs, times) -> columns``: for the documents it keeps, their times
    and the values of ``paths[0]``, ``paths[1]``... in the documents the span would
    output, without building them (no copy of the input for ``$addFields``).
    Values are read as the fast path's field getters read them: :class:`FieldMiss`
    when one is missing or under a non-document; any other exception is the span's
    own (the general path then runs the stages and DLQs). None when a stage has a
    shape codegen does not write."""
    g = _Gen()
    row = ", ".join(["ts", *(f"F{j}" for j in range(len(paths)))])

    def loop(name: str, body: str, tail: str) -> str:
        return _func(name, "docs, times, V", "doc, ts", "zip(docs, times)", body, row, tail, len(paths) + 1)

    return _switch(g, lambda gen: gen.plain_reads(paths), query, maps, loop)
