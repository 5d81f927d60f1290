"""Stateless stages compiled into per-document closures, and the batch runner that
applies a chain of them to a list of ``(doc, event_time_ms)`` records.

A failing expression sends only that document to the DLQ, with a reason that names
the stage and the operator (ASP: "failed expressions go to the DLQ"); the batch and
the dataflow go on.

Speed: a ``$match`` and the map stages after it run as one generated loop
(:mod:`translator.codegen`) when their shapes allow, else as one comprehension over the
fused closures; either way, when anything raises, the same records go through those
stages one at a time, so DLQ reasons name the failing stage.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, cast

from translator import ir, metrics
from translator.codegen import Chain, compile_chain
from translator.contracts import VALIDATE_REASON, Rec
from translator.errors import TranslateError
from translator.mql.expr import (
    EMPTY_VARS,
    Ctx,
    Expr,
    ExprError,
    Vars,
    closure,
    compile_expr,
    field_parts,
)
from translator.mql.values import MISSING, bson_type
from translator.options import fast_paths_enabled
from translator.stagespec import COMPUTE, COPY, PATH2, AddSpec, IncludeField, IncludeSpec, MapSpec

DlqFn = Callable[[str, Any], None]  # (reason, doc)

MAP, FILTER, FLAT, VALIDATE = 0, 1, 2, 3
# A whole-batch step ``fn(recs, dlq, vars) -> recs`` that does its own DLQ handling
# (I/O stages such as $lookup: one query per batch; see translator/enrich).
BATCH = 4
DocFn = Callable[[Any, Vars], Any]  # MAP/FILTER/FLAT/VALIDATE: (doc, vars) -> result
BatchFn = Callable[[list[Rec], DlqFn, Vars], list[Rec]]  # BATCH


@dataclass(frozen=True)
class Step:
    kind: int
    fn: DocFn | BatchFn  # BatchFn exactly when kind == BATCH
    name: str  # "$addFields"
    path: str  # "pipeline[2].$addFields"
    dlq_on_fail: bool = False
    describe: Callable[[dict[str, Any]], str] | None = None
    # FILTER steps: the same test as ``fn`` without the variables argument (a query),
    # and the compiled query as such (a HotPred codegen writes inline, or a closure).
    pred: Callable[[Any], bool] | None = None
    query: Callable[[Any], bool] | None = None
    # MAP steps of a shape the optimizers know (see translator.stagespec).
    spec: MapSpec | None = None
    # MAP steps: this step and the next one as one function (see _fuse_add_include).
    fused_next: Callable[[Any, Vars], Any] | None = None
    # This step and the ``chain_len - 1`` after it as one generated function over a
    # batch (translator.codegen); the runner's first choice when set.
    chain: Chain | None = None
    chain_len: int = 0
    # False with fastPaths off: the runner runs this step alone (no fused comprehension).
    fuse: bool = True


def failure_reason(step_name: str, path: str, exc: BaseException) -> str:
    """DLQ reason for a runtime failure: names the stage, where it is, and the operator."""
    if isinstance(exc, ExprError):
        return f"Failed to process input document in {step_name} stage ({path}): {exc}"
    return f"Failed to process input document in {step_name} stage ({path}): {type(exc).__name__}: {exc}"


def run_chain(steps: tuple[Step, ...], recs: list[Rec], dlq: DlqFn, vars_: Vars = EMPTY_VARS) -> list[Rec]:
    """Apply ``steps`` to a batch. Fast path per step over the whole list; a step that
    raises is re-run document by document so that only the bad documents go to the DLQ.
    With :mod:`translator.metrics` enabled, each step's figures are recorded."""
    if metrics.ENABLED:
        return metrics.measured_chain(_run_chain, steps, recs, dlq, vars_)
    return _run_chain(steps, recs, dlq, vars_)


def run_chain_docs(steps: tuple[Step, ...], recs: list[Rec], dlq: DlqFn, vars_: Vars = EMPTY_VARS) -> list[Any]:
    """:func:`run_chain`, returning the documents only (stages before a sink): the
    generated code of the last span then never builds a ``(doc, time)`` pair."""
    if metrics.ENABLED:
        return [d for d, _ in metrics.measured_chain(_run_chain, steps, recs, dlq, vars_)]
    box: list[list[Any]] = []
    recs = _run_chain(steps, recs, dlq, vars_, box)
    return box[0] if box else [d for d, _ in recs]


_MAX_FUSED_MAPS = 3


def _run_chain(
    steps: tuple[Step, ...], recs: list[Rec], dlq: DlqFn, vars_: Vars, docs: list[list[Any]] | None = None
) -> list[Rec]:
    """``docs``: when the last span has generated code, its documents are put there
    (without times) and the result is empty (see :func:`run_chain_docs`)."""
    n = len(steps)
    i = 0
    while i < n:
        if not recs:
            return recs
        st = steps[i]
        end = i + st.chain_len
        if st.chain is not None and end <= n and st.chain.fns == tuple(s.fn for s in steps[i:end]):
            # Generated code for the same span as below (see compile_steps), when this
            # tuple holds that span (metrics runs the steps one at a time); on any
            # exception the span runs again stage by stage through the closures.
            try:
                if docs is not None and end == n:
                    docs.append(st.chain.docs(recs, vars_))
                    return []
                recs = st.chain(recs, vars_)
            except Exception as exc:
                if metrics.ENABLED:
                    metrics.fallback(st.path, st.name, f"generated code: {type(exc).__name__}")
                for s in steps[i:end]:
                    if recs:
                        recs = _run_step(s, recs, dlq, vars_)
            i = end
            continue
        # A $match followed by up to three map stages ($addFields, $project...), or two
        # or three map stages in a row, run as one comprehension: no intermediate lists
        # and no (doc, t) tuples in between. The stages are pure, so when anything
        # raises, the same records go through those stages one at a time instead, which
        # sends just the bad documents to the DLQ with the failing stage's reason.
        pred, first, end = _span(steps, i)
        if (pred is None and end - first < 2) or not st.fuse:
            recs = _run_step(steps[i], recs, dlq, vars_)
            i += 1
            continue
        fns = []
        j = first
        while j < end:
            st = steps[j]
            if st.fused_next is not None and j + 1 < end:
                fns.append(st.fused_next)
                j += 2
            else:
                fns.append(cast(DocFn, st.fn))
                j += 1
        try:
            recs = _fused(pred, fns, recs, vars_) if fns or pred is not None else recs
        except Exception as exc:
            if metrics.ENABLED:
                metrics.fallback(steps[i].path, steps[i].name, f"fused stages: {type(exc).__name__}")
            for st in steps[i:end]:
                if recs:
                    recs = _run_step(st, recs, dlq, vars_)
        i = end
    return recs


def _span(steps: tuple[Step, ...] | list[Step], i: int) -> tuple[Callable[[Any], bool] | None, int, int]:
    """The run of steps from ``i`` that the runner fuses: an optional $match (its
    predicate), then map steps ``first:end`` (at most _MAX_FUSED_MAPS)."""
    n = len(steps)
    pred = steps[i].pred if steps[i].kind == FILTER else None
    first = i + 1 if pred is not None else i
    end = first
    while end < n and end - first < _MAX_FUSED_MAPS and steps[end].kind == MAP:
        end += 1
    return pred, first, end


def _fused(pred: Callable[[Any], bool] | None, fns: list[Callable[[Any, Vars], Any]], recs: list[Rec], v: Vars) -> list[Rec]:
    if len(fns) == 1 and pred is None:
        (f,) = fns
        return [(f(d, v), t) for d, t in recs]
    if pred is not None:
        if not fns:
            return [r for r in recs if pred(r[0])]
        if len(fns) == 1:
            (f,) = fns
            return [(f(d, v), t) for d, t in recs if pred(d)]
        if len(fns) == 2:
            f, g = fns
            return [(g(f(d, v), v), t) for d, t in recs if pred(d)]
        f, g, h = fns
        return [(h(g(f(d, v), v), v), t) for d, t in recs if pred(d)]
    if len(fns) == 2:
        f, g = fns
        return [(g(f(d, v), v), t) for d, t in recs]
    f, g, h = fns
    return [(h(g(f(d, v), v), v), t) for d, t in recs]


def _run_step(st: Step, recs: list[Rec], dlq: DlqFn, vars_: Vars) -> list[Rec]:
    """One step over the whole batch; if it raises, again document by document."""
    kind = st.kind
    if kind == BATCH:
        return cast(BatchFn, st.fn)(recs, dlq, vars_)
    fn = cast(DocFn, st.fn)
    try:
        if kind == MAP:
            return [(fn(d, vars_), t) for d, t in recs]
        if kind == FILTER:
            return [r for r in recs if fn(r[0], vars_)]
        if kind == FLAT:
            return [(o, t) for d, t in recs for o in fn(d, vars_)]
        ok = [fn(d, vars_) for d, _ in recs]
        if all(ok):
            return recs
        bad = [r for r, good in zip(recs, ok, strict=True) if not good]
        good_recs = [r for r, good in zip(recs, ok, strict=True) if good]
    except Exception:
        return _slow_step(st, recs, dlq, vars_)
    if st.dlq_on_fail:
        for d, _ in bad:
            dlq(_validate_reason(st, d), d)
    return good_recs


def _validate_reason(st: Step, doc: dict[str, Any]) -> str:
    if st.describe is None:
        return VALIDATE_REASON
    try:
        detail = st.describe(doc)
    except Exception:  # the description is best effort
        detail = ""
    return f"{VALIDATE_REASON}: {detail}" if detail else VALIDATE_REASON


def _slow_step(st: Step, recs: list[Rec], dlq: DlqFn, vars_: Vars) -> list[Rec]:
    out: list[Rec] = []
    fn, kind = cast(DocFn, st.fn), st.kind
    for d, t in recs:
        try:
            if kind == MAP:
                out.append((fn(d, vars_), t))
            elif kind == FILTER:
                if fn(d, vars_):
                    out.append((d, t))
            elif kind == FLAT:
                out.extend((o, t) for o in fn(d, vars_))
            elif fn(d, vars_):
                out.append((d, t))
            elif st.dlq_on_fail:
                dlq(_validate_reason(st, d), d)
        except Exception as exc:
            dlq(failure_reason(st.name, st.path, exc), d)
    return out


# ---- path helpers ----------------------------------------------------------------------


def _copy_set(doc: dict[str, Any], parts: tuple[str, ...], value: Any) -> dict[str, Any]:
    """Return a copy of ``doc`` with ``parts`` set (copying only along the path).

    Arrays along the path get the field set in each of their documents, as
    MongoDB's $addFields does; non-documents along the path are replaced.
    """
    out = dict(doc)
    head = parts[0]
    if len(parts) == 1:
        if value is MISSING:
            out.pop(head, None)
        else:
            out[head] = value
        return out
    cur = out.get(head, MISSING)
    if isinstance(cur, dict):
        out[head] = _copy_set(cur, parts[1:], value)
    elif isinstance(cur, list):
        out[head] = [_copy_set(el, parts[1:], value) if isinstance(el, dict) else el for el in cur]
    elif value is not MISSING:
        out[head] = _copy_set({}, parts[1:], value)
    return out


copy_set = _copy_set  # the public name, for stages compiled outside this module (translator.enrich)


def _copy_unset(doc: dict[str, Any], parts: tuple[str, ...]) -> dict[str, Any]:
    head = parts[0]
    if head not in doc:
        return doc
    out = dict(doc)
    if len(parts) == 1:
        del out[head]
        return out
    cur = out[head]
    if isinstance(cur, dict):
        out[head] = _copy_unset(cur, parts[1:])
    elif isinstance(cur, list):
        out[head] = [_copy_unset(el, parts[1:]) if isinstance(el, dict) else el for el in cur]
    return out


# ---- $addFields / $set -----------------------------------------------------------------


def _flatten_spec(spec: dict[str, Any], prefix: tuple[str, ...], path: str) -> list[tuple[tuple[str, ...], Any, str]]:
    out = []
    for k, v in spec.items():
        if not k or k.startswith("$"):
            raise TranslateError(f"{path}.{k}", f"invalid field name '{k}'")
        parts = prefix + tuple(k.split("."))
        if any(not p for p in parts):
            raise TranslateError(f"{path}.{k}", f"invalid field path '{k}'")
        out.append((parts, v, f"{path}.{k}"))
    return out


def compile_add_fields(spec: dict[str, Any], path: str, variables: frozenset[str] = frozenset()) -> Callable[[Any, Vars], Any]:
    return _add_fields(spec, path, variables)[0]


def _add_fields(
    spec: dict[str, Any], path: str, variables: frozenset[str]
) -> tuple[Callable[[Any, Vars], Any], AddSpec | None]:
    fields = [
        (parts, compile_expr(v, Ctx(p, variables))) for parts, v, p in _flatten_spec(spec, (), path)
    ]
    simple = all(len(p) == 1 for p, _ in fields)
    if simple:
        nodes = tuple((p[0], f) for p, f in fields)
        return _add_top_level_fn([(k, closure(f)) for k, f in nodes]), AddSpec(nodes)
    fields = [(p, closure(f)) for p, f in fields]

    def add_fields(doc: Any, v: Vars) -> Any:
        values = [(p, f(doc, v)) for p, f in fields]
        out = doc
        for p, x in values:
            out = _copy_set(out, p, x)
        return out if out is not doc else dict(doc)

    return add_fields, None


def _add_top_level_fn(flat: list[tuple[str, Expr]]) -> Callable[[Any, Vars], Any]:
    """$addFields of top-level fields: every value is computed from the input document
    (in spec order, so the first failing field names the error), then set on a copy;
    a missing value removes the field. One or two fields (the common case) are unrolled.
    Its :class:`AddSpec` is what :func:`_fuse_add_include` and codegen read.
    """
    if len(flat) == 1:
        ((k1, f1),) = flat

        def add1(doc: Any, v: Vars) -> Any:
            x1 = f1(doc, v)
            out = dict(doc)
            if x1 is MISSING:
                out.pop(k1, None)
            else:
                out[k1] = x1
            return out

        return add1
    if len(flat) == 2:
        (k1, f1), (k2, f2) = flat

        def add2(doc: Any, v: Vars) -> Any:
            x1 = f1(doc, v)
            x2 = f2(doc, v)
            out = dict(doc)
            if x1 is MISSING:
                out.pop(k1, None)
            else:
                out[k1] = x1
            if x2 is MISSING:
                out.pop(k2, None)
            else:
                out[k2] = x2
            return out

        return add2

    def add_simple(doc: Any, v: Vars) -> Any:
        values = [f(doc, v) for _, f in flat]
        out = dict(doc)
        for (k, _), x in zip(flat, values, strict=True):
            if x is MISSING:
                out.pop(k, None)
            else:
                out[k] = x
        return out

    return add_simple


# ---- $project --------------------------------------------------------------------------


def _is_flag(v: Any) -> bool:
    return isinstance(v, (bool, int, float)) and not isinstance(v, dict)


def _build_tree(spec: dict[str, Any], path: str) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for k, v in spec.items():
        if not k or k.startswith("$"):
            raise TranslateError(f"{path}.{k}", f"invalid projection field '{k}'")
        parts = k.split(".")
        node = tree
        for p in parts[:-1]:
            nxt = node.setdefault(p, {})
            if not isinstance(nxt, dict):
                raise TranslateError(f"{path}.{k}", f"path collision at '{k}'")
            node = nxt
        leaf = parts[-1]
        if isinstance(v, dict) and v and not any(str(x).startswith("$") for x in v):
            sub = _build_tree(v, f"{path}.{k}")
            existing = node.get(leaf)
            if isinstance(existing, dict):
                existing.update(sub)
            else:
                node[leaf] = sub
        else:
            if leaf in node:
                raise TranslateError(f"{path}.{k}", f"path collision at '{k}'")
            node[leaf] = ("flag", bool(v)) if _is_flag(v) else ("expr", v)
    return tree


def _tree_modes(tree: dict[str, Any], top: bool, acc: set[str]) -> None:
    for k, v in tree.items():
        if isinstance(v, dict):
            _tree_modes(v, False, acc)
        elif v[0] == "flag":
            if not (top and k == "_id"):
                acc.add("include" if v[1] else "exclude")
        else:
            acc.add("include")


def compile_project(spec: dict[str, Any], path: str, variables: frozenset[str] = frozenset()) -> Callable[[Any, Vars], Any]:
    """$project: inclusion (with computed fields) or exclusion, never both (but _id)."""
    return _project(spec, path, variables)[0]


def _project(
    spec: dict[str, Any], path: str, variables: frozenset[str]
) -> tuple[Callable[[Any, Vars], Any], IncludeSpec | None]:
    tree = _build_tree(spec, path)
    modes: set[str] = set()
    _tree_modes(tree, True, modes)
    if len(modes) > 1:
        raise TranslateError(path, "cannot mix inclusion and exclusion in one $project (except for _id)")
    id_spec = tree.get("_id")
    if modes == {"exclude"} or (not modes and id_spec is not None and id_spec == ("flag", False)):
        excluded = [tuple(p) for p in _leaf_paths(tree)]

        def exclude(doc: Any, v: Vars) -> Any:
            out = doc
            for parts in excluded:
                out = _copy_unset(out, parts)
            return out if out is not doc else dict(doc)

        return exclude, None
    include_id = id_spec != ("flag", False)
    if id_spec is not None and isinstance(id_spec, tuple) and id_spec[0] == "flag":
        del tree["_id"]
    compiled = _compile_include(tree, path, variables)

    def include(doc: Any, v: Vars) -> Any:
        out: dict[str, Any] = {}
        if include_id and "_id" in doc and "_id" not in tree:
            out["_id"] = doc["_id"]
        _apply_include(compiled, doc, doc, v, out)
        return out

    if any(kind == _SUBTREE for _, kind, _ in compiled):
        return include, None
    return _include_top_level(compiled, include_id and "_id" not in tree, include)


def _include_top_level(
    compiled: list[tuple[str, int, Any]], with_id: bool, general: Callable[[Any, Vars], Any]
) -> tuple[Callable[[Any, Vars], Any], IncludeSpec]:
    """Inclusion $project without sub-documents (``{_id: 0, a: 1, t: "$obs.temp"}``):
    one loop over a fixed tuple, in the same output order as :func:`_apply_include`
    (``_id`` first, then the spec's order). Included fields and one-part field paths
    are one ``dict.get``; two-part paths read through a sub-document inline and use the
    compiled expression for anything else (arrays along the path); other expressions
    are called. A document that is not a plain ``dict`` takes the general path.
    """
    entries: list[IncludeField] = []
    for k, kind, payload in compiled:
        parts = field_parts(payload) if kind == _EXPR else (k,)
        if parts is not None and len(parts) == 1:
            entries.append(IncludeField(k, COPY, parts[0], None))
        elif parts is not None and len(parts) == 2:
            entries.append(IncludeField(k, PATH2, payload, parts))
        else:
            entries.append(IncludeField(k, COMPUTE, payload, None))
    fixed = tuple(entries)

    def include_top(doc: Any, v: Vars) -> Any:
        if type(doc) is not dict:
            return general(doc, v)
        out: dict[str, Any] = {}
        get = doc.get
        if with_id:
            x = get("_id", MISSING)
            if x is not MISSING:
                out["_id"] = x
        for k, kind, a, b in fixed:
            if kind == COPY:
                x = get(a, MISSING)
            elif kind == PATH2:
                x = get(b[0], MISSING)
                if type(x) is dict:
                    x = x.get(b[1], MISSING)
                elif x is not MISSING:
                    x = a(doc, v)
            else:
                x = a(doc, v)
            if x is not MISSING:
                out[k] = x
        return out

    return include_top, IncludeSpec(fixed, with_id)


def _fuse_add_include(
    add: Callable[[Any, Vars], Any], add_spec: MapSpec | None, include: Callable[[Any, Vars], Any], include_spec: MapSpec | None
) -> Callable[[Any, Vars], Any] | None:
    """``$addFields`` of top-level fields then an inclusion ``$project`` of top-level
    fields and short field paths, as one closure that never builds the intermediate
    document: a projected field comes from the added values when $addFields set (or
    removed) it, else from the input document. Output and evaluation order are the two
    stages' own. Used only by the chain runner, which re-runs the two stages separately
    when this raises, so a DLQ entry still names the stage that failed. None when the
    pair has another shape.
    """
    if not isinstance(add_spec, AddSpec) or not isinstance(include_spec, IncludeSpec):
        return None
    flat = add_spec.fields
    fixed, with_id = include_spec
    index = {k: i for i, (k, _) in enumerate(flat)}
    entries: list[tuple[str, str, str | None, Any, int]] = []  # (out key, key, 2nd key, expr, value index)
    for k, kind, a, b in fixed:
        if kind == COPY:
            entries.append((k, a, None, None, index.get(a, -1)))
        elif kind == PATH2 and b is not None:
            entries.append((k, b[0], b[1], a, index.get(b[0], -1)))
        else:
            return None
    rows = tuple(entries)
    keys = tuple(k for k, _ in flat)
    fs = tuple(f for _, f in flat)
    f1 = fs[0]
    f2 = fs[1] if len(fs) == 2 else None
    id_index = index.get("_id", -1)

    def merged(doc: dict[str, Any], vals: Any) -> dict[str, Any]:
        out = dict(doc)
        for k, x in zip(keys, vals, strict=True):
            if x is MISSING:
                out.pop(k, None)
            else:
                out[k] = x
        return out

    def add_include(doc: Any, v: Vars) -> Any:
        if type(doc) is not dict:
            return include(add(doc, v), v)
        if f2 is not None:
            vals: Any = (f1(doc, v), f2(doc, v))
        elif len(fs) == 1:
            vals = (f1(doc, v),)
        else:
            vals = [f(doc, v) for f in fs]
        out: dict[str, Any] = {}
        get = doc.get
        if with_id:
            x = vals[id_index] if id_index >= 0 else get("_id", MISSING)
            if x is not MISSING:
                out["_id"] = x
        for k, key, key2, expr, i in rows:
            x = vals[i] if i >= 0 else get(key, MISSING)
            if key2 is not None:
                if type(x) is dict:
                    x = x.get(key2, MISSING)
                elif x is not MISSING:
                    x = expr(merged(doc, vals), v)  # arrays along the path
            if x is not MISSING:
                out[k] = x
        return out

    return add_include


def _leaf_paths(tree: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for k, v in tree.items():
        if isinstance(v, dict):
            out.extend(_leaf_paths(v, (*prefix, k)))
        else:
            out.append((*prefix, k))
    return out


# Kinds of the nodes of a compiled inclusion tree (not IncludeField's kinds).
_FLAG, _EXPR, _SUBTREE = 0, 1, 2


def _compile_include(tree: dict[str, Any], path: str, variables: frozenset[str]) -> list[tuple[str, int, Any]]:
    out: list[tuple[str, int, Any]] = []
    for k, v in tree.items():
        if isinstance(v, dict):
            out.append((k, _SUBTREE, _compile_include(v, f"{path}.{k}", variables)))
        elif v[0] == "flag":
            out.append((k, _FLAG, None))
        else:
            out.append((k, _EXPR, compile_expr(v[1], Ctx(f"{path}.{k}", variables))))
    return out


def _apply_include(nodes: list[tuple[str, int, Any]], src: Any, root: Any, v: Vars, out: dict[str, Any]) -> None:
    for k, kind, payload in nodes:
        if kind == _EXPR:
            x = payload(root, v)
            if x is not MISSING:
                out[k] = x
            continue
        cur = src.get(k, MISSING) if isinstance(src, dict) else MISSING
        if kind == _FLAG:
            if cur is not MISSING:
                out[k] = cur
        elif isinstance(cur, dict):
            sub: dict[str, Any] = {}
            _apply_include(payload, cur, root, v, sub)
            out[k] = sub
        elif isinstance(cur, list):
            arr = []
            for el in cur:
                if isinstance(el, dict):
                    sub = {}
                    _apply_include(payload, el, root, v, sub)
                    arr.append(sub)
            out[k] = arr
        elif any(kk == _EXPR for _, kk, _ in payload):
            sub = {}
            _apply_include(payload, {}, root, v, sub)
            out[k] = sub


# ---- the other stateless stages --------------------------------------------------------


def compile_unset(fields: tuple[str, ...], path: str) -> Callable[[Any, Vars], Any]:
    return compile_project({f: 0 for f in fields}, path)


def compile_replace_root(
    new_root: Any, path: str, variables: frozenset[str] = frozenset(), op: str = "$replaceRoot"
) -> Callable[[Any, Vars], Any]:
    with_ = op == "$replaceWith"
    f = closure(compile_expr(new_root, Ctx(path if with_ else f"{path}.newRoot", variables)))
    what = "'replacement document'" if with_ else "'newRoot' expression"

    def replace_root(doc: Any, v: Vars) -> Any:
        r = f(doc, v)
        if not isinstance(r, dict):
            shown = "missing" if r is MISSING else f"{bson_type(r)} {r!r}"
            raise ExprError(op, f"{what} must evaluate to an object, but resulting value was: {shown}")
        return r

    return replace_root


def compile_unwind(stage: ir.UnwindStage) -> Callable[[Any, Vars], Any]:
    parts = tuple(stage.field_path.split("."))
    idx_parts = tuple(stage.include_array_index.split(".")) if stage.include_array_index else None
    preserve = stage.preserve_null_and_empty

    def getp(doc: Any) -> Any:
        cur = doc
        for p in parts:
            if not isinstance(cur, dict):
                return MISSING
            cur = cur.get(p, MISSING)
        return cur

    def unwind(doc: Any, v: Vars) -> list[Any]:
        arr = getp(doc)
        if isinstance(arr, list):
            if not arr:
                if not preserve:
                    return []
                out = _copy_set(doc, parts, MISSING)
                return [_copy_set(out, idx_parts, None) if idx_parts else out]
            res = []
            for i, el in enumerate(arr):
                d = _copy_set(doc, parts, el)
                if idx_parts:
                    d = _copy_set(d, idx_parts, i)
                res.append(d)
            return res
        if arr is MISSING or arr is None:
            if not preserve:
                return []
            return [_copy_set(doc, idx_parts, None) if idx_parts else doc]
        # A non-array, non-null value is treated as a single-element array.
        return [_copy_set(doc, idx_parts, None) if idx_parts else doc]

    return unwind


def compile_redact(expr: Any, path: str) -> Callable[[Any, Vars], Any]:
    f = closure(compile_expr(expr, Ctx(path)))

    def visit(node: dict[str, Any], root: dict[str, Any], v: Vars) -> dict[str, Any] | None:
        inner = {**v, "ROOT": root}
        r = f(node, inner)
        if r == "PRUNE":
            return None
        if r == "KEEP":
            return node
        if r != "DESCEND":
            raise ExprError("$redact", f"$redact's expression should not return anything aside from the variables $$KEEP, $$DESCEND, and $$PRUNE, but returned {r!r}")
        out: dict[str, Any] = {}
        for k, x in node.items():
            if isinstance(x, dict):
                sub = visit(x, root, v)
                if sub is not None:
                    out[k] = sub
            elif isinstance(x, list):
                arr = []
                for el in x:
                    if isinstance(el, dict):
                        sub = visit(el, root, v)
                        if sub is not None:
                            arr.append(sub)
                    else:
                        arr.append(el)
                out[k] = arr
            else:
                out[k] = x
        return out

    def redact(doc: Any, v: Vars) -> list[Any]:
        r = visit(doc, doc, v)
        return [] if r is None else [r]

    return redact


def _compile_match(stage: ir.MatchStage) -> Step:
    from translator.mql.query import HotPred, compile_query

    query = compile_query(stage.query, Ctx(stage.path))
    # The runner calls the closure itself; codegen reads the compiled query.
    q = query.func if isinstance(query, HotPred) else query
    return Step(FILTER, lambda d, v: q(d), "$match", stage.path, pred=q, query=query)


def _compile_validate(stage: ir.ValidateStage) -> Step:
    from translator.mql import query

    compiled = query.compile_query(stage.validator, Ctx(f"{stage.path}.validator"))
    q = compiled.func if isinstance(compiled, query.HotPred) else compiled
    describe = getattr(query, "describe_failure", None)
    validator = stage.validator
    desc = (lambda d: describe(validator, d)) if describe is not None else None
    return Step(VALIDATE, lambda d, v: q(d), "$validate", stage.path, stage.action == "dlq", desc)


def _map_step(compiled: tuple[Callable[[Any, Vars], Any], MapSpec | None], name: str, path: str) -> Step:
    fn, spec = compiled
    return Step(MAP, fn, name, path, spec=spec)


def _name(s: Any) -> str:
    return str(s.path.rsplit(".", 1)[-1])


# (stage IR, variables bound by the caller, e.g. {"new"} in $merge's whenMatched) -> Step
STEP_COMPILERS: dict[type, Callable[[Any, frozenset[str]], Step]] = {
    ir.ValidateStage: lambda s, v: _compile_validate(s),
    ir.MatchStage: lambda s, v: _compile_match(s),
    ir.ProjectStage: lambda s, v: _map_step(_project(s.spec, s.path, v), "$project", s.path),
    ir.AddFieldsStage: lambda s, v: _map_step(_add_fields(s.spec, s.path, v), _name(s), s.path),
    ir.UnsetStage: lambda s, v: Step(MAP, compile_unset(s.fields, s.path), "$unset", s.path),
    ir.ReplaceRootStage: lambda s, v: Step(MAP, compile_replace_root(s.new_root, s.path, v, _name(s)), _name(s), s.path),
    ir.UnwindStage: lambda s, v: Step(FLAT, compile_unwind(s), "$unwind", s.path),
    ir.RedactStage: lambda s, v: Step(FLAT, compile_redact(s.expr, s.path), "$redact", s.path),
}


def compile_steps(stages: tuple[Any, ...], variables: frozenset[str] = frozenset()) -> tuple[Step, ...]:
    """Compile a run of stateless stages (raises TranslateError for bad expressions)."""
    steps = [STEP_COMPILERS[type(s)](s, variables) for s in stages]
    if not fast_paths_enabled():
        # The reference path: each stage on its own, through its closure.
        return tuple(replace(st, fuse=False) for st in steps)
    for i in range(len(steps) - 1):
        a, b = steps[i], steps[i + 1]
        if a.kind == MAP and b.kind == MAP:
            fused = _fuse_add_include(cast(DocFn, a.fn), a.spec, cast(DocFn, b.fn), b.spec)
            if fused is not None:
                steps[i] = replace(a, fused_next=fused)
    _attach_chains(steps)
    return tuple(steps)


def _attach_chains(steps: list[Step]) -> None:
    """Generated code (translator.codegen) for each span the runner fuses that holds at
    least one map step, walking the steps exactly as :func:`_run_chain` does."""
    i = 0
    while i < len(steps):
        pred, first, end = _span(steps, i)
        if end == first:  # a $match alone, or a stage of another kind
            i += 1
            continue
        if pred is None and end - first < 2:
            end = i + 1
        query = steps[i].query if pred is not None else None
        chain = compile_chain(query, [st.spec for st in steps[first:end]], tuple(st.fn for st in steps[i:end]))
        if chain is not None:
            steps[i] = replace(steps[i], chain=chain, chain_len=end - i)
        i = end

