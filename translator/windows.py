"""ASP windows on Bytewax, with ASP's per-partition watermark (docs/windows.md).

Bytewax's own windowing keeps one watermark per *key*; ASP keeps one per *source
partition*, and closes a window for every group once the processor's watermark (the
minimum over source partitions) passes ``end + allowedLateness``. So windows are built
from two batch-level ``stateful_batch`` steps instead of ``fold_window``:

1. **ingest** (keyed by source partition, see :mod:`translator.runtime`) tracks the
   partition's watermark, sends documents of already-closed windows to the DLQ as late,
   runs the window's stateless prefix and folds the batch into *partial* accumulator
   states per (window or pane, group): :meth:`WindowPlan.fold`.
2. **close** (:class:`CloseLogic`, keyed by a group bucket) merges partials from all
   partitions, keeps every partition's watermark, and closes windows when the minimum
   passes, at end of input, or on ``idleTimeout``. Only partials cross workers, never
   single documents.

What differs between tumbling, hopping and session windows (assignment, lateness, the
partials' keys, what closes) lives in one class per kind in :mod:`translator.window_kinds`;
the state types and snapshots are in :mod:`translator.window_state`.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from operator import call
from typing import Any

from bytewax.operators import StatefulBatchLogic

from translator import ir, metrics
from translator.accumulators import AccSpec, compile_accumulator
from translator.contracts import LATE_REASON, bucket_of
from translator.mql.expr import META, Ctx, Expr, Vars, compile_expr, get_path
from translator.mql.values import MISSING, compare, hashable, ms_to_datetime
from translator.stages import Rec, Step, compile_steps, failure_reason, run_chain
from translator.window_kinds import (
    WINDOW_KEY,
    DlqFn,
    LateDocs,
    WindowKind,
    dlq_late,
    meta_for,
    window_kind,
)
from translator.window_state import (
    ACTIVE,
    ERRORS,
    IDLE,
    QUIET,
    CloseState,
    Partials,
    WindowMsg,
    dump_close,
    load_close,
)

NEG_INF = -(2**62)
_UNARY = frozenset(
    {"$sum", "$avg", "$min", "$max", "$first", "$last", "$push", "$addToSet", "$stdDevPop",
     "$stdDevSamp", "$mergeObjects"}
)
__all__ = ["ACTIVE", "DLQ", "IDLE", "NEG_INF", "OUT", "QUIET", "WIN", "CloseLogic", "WindowMsg", "WindowPlan",
           "bucket_of", "dlq_late"]

# ---- the window's inner pipeline, split around $group ----------------------------------


def _compile_post(stages: tuple[ir.Stage, ...]) -> list[Callable[[list[dict[str, Any]], DlqFn, Vars], list[dict[str, Any]]]]:
    """List-level stages that run when a window closes ($sort, $limit, $count, stateless)."""
    out: list[Callable[[list[dict[str, Any]], DlqFn, Vars], list[dict[str, Any]]]] = []
    run: list[ir.Stage] = []

    def flush_run() -> None:
        if run:
            steps = compile_steps(tuple(run))

            def stateless(docs: list[dict[str, Any]], dlq: DlqFn, v: Vars, steps: tuple[Step, ...] = steps) -> list[dict[str, Any]]:
                recs = run_chain(steps, [(d, 0) for d in docs], lambda r, d: dlq(r, d), v)
                return [d for d, _ in recs]

            out.append(stateless)
            run.clear()

    for s in stages:
        if isinstance(s, ir.SortStage):
            flush_run()
            out.append(_sorter(s))
        elif isinstance(s, ir.LimitStage):
            flush_run()
            n = s.n
            out.append(functools.partial(_limit, n=n))
        elif isinstance(s, ir.CountStage):
            flush_run()
            name = s.field
            out.append(functools.partial(_count, name=name))
        else:
            run.append(s)
    flush_run()
    return out


def _limit(docs: list[dict[str, Any]], dlq: DlqFn, v: Vars, n: int) -> list[dict[str, Any]]:
    return docs[:n]


def _count(docs: list[dict[str, Any]], dlq: DlqFn, v: Vars, name: str) -> list[dict[str, Any]]:
    # MongoDB's $count emits nothing for empty input.
    return [{name: len(docs)}] if docs else []


def _sorter(s: ir.SortStage) -> Callable[[list[dict[str, Any]], DlqFn, Vars], list[dict[str, Any]]]:
    keys = [(tuple(k.split(".")), d) for k, d in s.keys]

    def cmp(a: dict[str, Any], b: dict[str, Any]) -> int:
        for parts, direction in keys:
            c = compare(_sort_value(get_path(a, parts)), _sort_value(get_path(b, parts)))
            if c:
                return c * direction
        return 0

    key = functools.cmp_to_key(cmp)
    return lambda docs, dlq, v: sorted(docs, key=key)


def _sort_value(v: Any) -> Any:
    return None if v is MISSING else v



@dataclass
class WindowPlan:
    """A window stage compiled once: its kind (:mod:`translator.window_kinds`), the
    inner pipeline's stateless prefix, ``$group`` and what runs after it."""

    stage: ir.WindowStage
    processor: str
    pre: tuple[Step, ...]
    group_id: Expr | None
    accs: tuple[AccSpec, ...]
    fields: tuple[str, ...]
    post: list[Callable[[list[dict[str, Any]], DlqFn, Vars], list[dict[str, Any]]]]
    buckets: int
    extracts: list[Expr] = dataclasses.field(default_factory=list)
    slot: list[int] = dataclasses.field(default_factory=list)
    kind: WindowKind = dataclasses.field(init=False)
    # True when ``fold`` returns pane partials (keyed by pane start or PaneKey): tumbling
    # windows (pane == window) and hopping windows with an order-free ``$group`` that
    # does not read the window's ``$meta``. The fast path reads it.
    panes: bool = dataclasses.field(default=False, init=False)
    _pane: int = dataclasses.field(default=0, init=False)

    def __post_init__(self) -> None:
        # Accumulators over the same field path ($min/$max/$avg of "$obs.temp") share
        # one evaluation per document.
        seen: dict[str, int] = {}
        group = next((s for s in self.stage.pipeline if isinstance(s, ir.GroupStage)), None)
        args = [a.arg if a.op in _UNARY else None for a in group.accumulations] if group else []
        for acc, arg in zip(self.accs, args, strict=True):
            key = arg if isinstance(arg, str) and arg.startswith("$") else None
            if key is not None and key in seen:
                self.slot.append(seen[key])
                continue
            self.slot.append(len(self.extracts))
            if key is not None:
                seen[key] = len(self.extracts)
            self.extracts.append(acc.extract)
        self._merges = [acc.merge for acc in self.accs]
        self.kind = window_kind(self)
        self.panes, self._pane = self.kind.panes, self.kind.pane_ms
        if self.kind.one_bucket:
            self.buckets = 1

    @staticmethod
    def compile(stage: ir.WindowStage, processor: str, buckets: int) -> WindowPlan:
        inner = stage.pipeline
        gi = next((i for i, s in enumerate(inner) if isinstance(s, ir.GroupStage)), None)
        if gi is None:
            # Without $group, the window keeps its documents; the prefix up to the first
            # list-level stage runs on ingest.
            cut = next(
                (i for i, s in enumerate(inner) if isinstance(s, (ir.SortStage, ir.LimitStage, ir.CountStage))),
                len(inner),
            )
            pre_stages, post_stages, group = inner[:cut], inner[cut:], None
        else:
            pre_stages, post_stages = inner[:gi], inner[gi + 1 :]
            group = inner[gi]
            for s in pre_stages:
                if isinstance(s, (ir.SortStage, ir.LimitStage, ir.CountStage)):
                    raise _err(s.path, "$sort, $limit and $count are only supported after $group in a window pipeline")
        assert group is None or isinstance(group, ir.GroupStage)
        global_post = any(isinstance(s, (ir.SortStage, ir.LimitStage, ir.CountStage)) for s in post_stages)
        group_id = compile_expr(group.id, Ctx(f"{group.path}._id")) if group else None
        return WindowPlan(
            stage=stage,
            processor=processor,
            pre=compile_steps(tuple(pre_stages)),
            group_id=group_id,
            accs=tuple(
                compile_accumulator(a.op, a.arg, Ctx(f"{group.path}.{a.field}.{a.op}"), group_id)
                for a in group.accumulations
            )
            if group
            else (),
            fields=tuple(a.field for a in group.accumulations) if group else (),
            post=_compile_post(tuple(post_stages)),
            # Window-global stages ($sort/$limit/$count after $group) or a window without
            # $group need every group of a window in one place (sessions too: their kind).
            buckets=1 if (global_post or group is None) else max(1, buckets),
        )

    # -- panes (the kind's; read by the fast path) -----------------------------------------

    @property
    def pane_ms(self) -> int:
        """The pane (sub-window) size: the interval for tumbling windows, gcd(interval,
        hop) for hopping ones, so every window is a whole number of panes and all of a
        pane's documents lie in the same windows. Absent (``AttributeError``, so
        ``hasattr`` is False) unless :attr:`panes`: other windows' partials are per window."""
        if not self.panes:
            raise AttributeError("pane_ms: this window's partials are per window, not per pane")
        return self._pane

    def pane_start(self, t: int) -> int:
        """Start of the pane holding event time ``t``."""
        return t - (t - self.stage.offset_ms) % self._pane

    def earliest_start(self, t: int) -> int:
        """Start of the oldest window containing ``t``; a start above ``t`` means none
        does (``t`` falls in a gap of a hopping window whose hop exceeds its interval)."""
        return self.kind.earliest_start(t)

    @property
    def holdable(self) -> bool:
        """Whether ingest may hold partials and merge them (:meth:`merge_payload`)."""
        return self.kind.holdable and self.group_id is not None

    # -- stage 1: fold a batch into partials ----------------------------------------------

    def fold(self, recs: list[Rec], dlq: DlqFn, keep: LateDocs | None = None) -> Partials:
        """Fold ``(doc, (t, wm_before))`` records into ``{bucket: partials}``.

        With :attr:`panes` (tumbling, and hopping with an order-free ``$group``) each
        document is folded once, into its pane, and partials are ``{key: table}`` where
        ``key`` is a pane start (an ``int``: the pane counts in every window containing
        it) or a ``PaneKey(pane_start, first)`` (only in windows starting at or after
        ``first``: the documents were late for the earlier ones). For tumbling windows
        pane == window, so keys are window starts. Other hopping windows give
        ``{window_start: table}``. Sessions give ``{partition_key: [Session, ...]}``.
        A table is ``{group_key: [group_id, state...]}`` or, without $group, a list of
        documents (docs/windows.md).

        With ``keep`` (a partition that was idle, :attr:`WindowKind.keeps_docs`), the
        documents as they entered the window are put there too, ``{bucket: {key: [doc]}}``
        beside the partials they went into, for the close step to tell which are late;
        each document in one bucket only (:class:`_Keep`). The errors of the window's own
        stages for them go there too (bucket 0, :data:`ERRORS`), not to ``dlq``: a
        document the close step finds late gets only its late entry, as at ingest, where
        lateness is judged before those stages run.
        """
        if keep is None:
            return self._fold(recs, dlq, None)
        recs = [(d, _Entered(m, d)) for d, m in recs]
        kept = _Keep()
        errors: list[dict[str, Any]] = []

        def held(reason: str, doc: Any, **extra: Any) -> None:
            if WINDOW_KEY in extra:
                errors.append({"key": extra.pop(WINDOW_KEY), "reason": reason, "doc": doc})
            else:
                dlq(reason, doc, **extra)

        out = self._fold(recs, held, kept)
        for b, keyed in kept.items():
            kb = keep.setdefault(b, {})
            for key, lst in keyed.items():
                kb.setdefault(key, []).extend(lst)
        if errors:
            keep.setdefault(0, {}).setdefault(ERRORS, []).extend(errors)
        return out

    def _fold(self, recs: list[Rec], dlq: DlqFn, keep: LateDocs | None) -> Partials:
        if metrics.ENABLED:
            # The window's figures include its inner stages (also listed on their own).
            dropped = [0]

            def counting(reason: str, doc: Any, **extra: Any) -> None:
                dropped[0] += 1
                dlq(reason, doc, **extra)

            t0 = time.perf_counter()
            out = self.kind.fold(recs, counting, keep)
            metrics.record(self.stage.path, _name_of(self.stage), len(recs), 0, dropped[0], time.perf_counter() - t0)
            return out
        return self.kind.fold(recs, dlq, keep)

    def _accumulate(self, out: dict[int, Any], key: Any, recs: list[Rec], v: Vars, dlq: DlqFn,
                    keep: LateDocs | None = None, entered: list[Rec] | None = None) -> None:
        """Fold ``recs`` into ``out[bucket][key]``. With ``keep``, the documents of
        ``entered`` (``recs`` before the window's stages) go to ``keep[bucket][key]``,
        the bucket of the group they went into, or bucket 0 for those a stage dropped."""
        if self.group_id is None:
            out.setdefault(0, {}).setdefault(key, []).extend(d for d, _ in recs)
            if keep is not None:
                _keep_docs(keep, key, {}, entered or recs)
            return
        gid_f, accs = self.group_id, self.accs
        extracts = self.extracts
        # Collect each group's extracted values for the whole batch, then fold them per
        # accumulator in one call (add_many): per-document work is only evaluation.
        groups: dict[Any, tuple[Any, list[tuple[dict[str, Any], list[Any]]]]] = {}
        kept: dict[Any, list[Any]] | None = None if keep is None else {}
        for d, m in recs:
            try:
                gid = gid_f(d, v)
                vals = [ex(d, v) for ex in extracts]
            except Exception as exc:
                dlq(failure_reason("$group", self.stage.path, exc), d)
                continue
            hk = gid if type(gid) is str else hashable(gid)
            g = groups.get(hk)
            if g is None:
                groups[hk] = (None if gid is MISSING else gid, [(d, vals)])
            else:
                g[1].append((d, vals))
            if kept is not None:
                kept.setdefault(hk, []).append(m)
        nb = self.buckets
        if keep is not None and kept is not None:
            _keep_docs(keep, key, {hk: (0 if nb == 1 else bucket_of(hk, nb), ms) for hk, ms in kept.items()},
                       entered or recs)
        for hk, (gid, rows) in groups.items():
            b = 0 if nb == 1 else bucket_of(hk, nb)
            table = out.setdefault(b, {}).setdefault(key, {})
            entry = table.get(hk)
            if entry is None:
                entry = table[hk] = [gid, *(a.init() for a in accs)]
            self._fold_rows(entry, rows, dlq)

    def _fold_rows(self, entry: list[Any], rows: list[tuple[dict[str, Any], list[Any]]], dlq: DlqFn) -> None:
        accs, slot = self.accs, self.slot
        cols = list(zip(*(vals for _, vals in rows), strict=True))
        try:
            new = [acc.fold(entry[i], list(cols[slot[i - 1]])) for i, acc in enumerate(accs, 1)]
        except Exception:
            # A value an accumulator rejects ($mergeObjects of a number...): fold one
            # document at a time so only that document goes to the DLQ.
            for d, vals in rows:
                saved = list(entry)
                try:
                    for i, acc in enumerate(accs, 1):
                        entry[i] = acc.add(entry[i], vals[slot[i - 1]])
                except Exception as exc:
                    entry[:] = saved
                    dlq(failure_reason("$group", self.stage.path, exc), d)
            return
        entry[1:] = new

    # -- stage 2 helpers ------------------------------------------------------------------

    def merge_payload(self, a: Any, b: Any) -> Any:
        """Merge two window tables (``b`` holds later-arriving documents)."""
        if self.group_id is None:
            a.extend(b)
            return a
        merges = self._merges
        for hk, eb in b.items():
            ea = a.get(hk)
            if ea is None:
                a[hk] = eb
            else:
                # One C-level loop over the accumulators (many groups: one merge per entry).
                ea[1:] = map(call, merges, ea[1:], eb[1:])
        return a

    def merge_pane(self, a: dict[Any, Any], b: dict[Any, Any], owned: bool) -> None:
        """Merge pane table ``b`` into window table ``a``. Unless ``owned`` (``b`` is being
        dropped), ``b`` still belongs to later windows: its entries are not taken into
        ``a`` but rebuilt from fresh states (``merge`` never mutates its second argument)."""
        accs = self.accs
        for hk, eb in b.items():
            ea = a.get(hk)
            if ea is None:
                if owned:
                    a[hk] = eb
                    continue
                ea = a[hk] = [eb[0], *(acc.init() for acc in accs)]
            for i, acc in enumerate(accs, 1):
                ea[i] = acc.merge(ea[i], eb[i])

    def finalize(self, payload: Any, meta: dict[str, Any], dlq: DlqFn) -> list[dict[str, Any]]:
        """Run the rest of the inner pipeline over a closed window; add ``_stream_meta``."""
        if self.group_id is None:
            docs = list(payload)
        elif not self.post and "_stream_meta" not in self.fields:
            return self._finalize_groups(payload, meta, dlq)
        else:
            docs = []
            for entry in payload.values():
                d = {"_id": entry[0]}
                try:
                    for i, (f, acc) in enumerate(zip(self.fields, self.accs, strict=True), 1):
                        d[f] = acc.final(entry[i])
                except Exception as exc:
                    dlq(failure_reason("$group", self.stage.path, exc), d)
                    continue
                docs.append(d)
        v = {META: meta}
        for fn in self.post:
            docs = fn(docs, dlq, v)
        out = []
        for d in docs:
            d = dict(d)
            prev = d.pop("_stream_meta", None)
            d["_stream_meta"] = {**prev, **meta} if isinstance(prev, dict) else dict(meta)
            out.append(d)
        return out

    def _finalize_groups(self, payload: Any, meta: dict[str, Any], dlq: DlqFn) -> list[dict[str, Any]]:
        """:meth:`finalize` when ``$group`` ends the window pipeline (the usual case):
        each result is built once, ``_stream_meta`` last, as the general loop orders it."""
        names, finals = self.fields, [a.final for a in self.accs]
        out = []
        for entry in payload.values():
            d = {"_id": entry[0]}
            try:
                # In C: a failing final leaves the fields before it in ``d``, as a loop would.
                d.update(zip(names, map(call, finals, entry[1:]), strict=True))
            except Exception as exc:
                dlq(failure_reason("$group", self.stage.path, exc), d)
                continue
            d["_stream_meta"] = dict(meta)
            out.append(d)
        return out


class _Keep(dict[int, dict[Any, list[dict[str, Any]]]]):
    """Kept documents of one fold (:data:`LateDocs`) and the bucket each document went
    to (``placed``, by ``id``): a document under several keys (a hopping window's
    windows) whose groups lie in several buckets (a ``$group`` ``_id`` that reads the
    window's ``$meta``) is kept in one bucket only, so the close step finds it late
    once, with all the windows it missed."""

    def __init__(self) -> None:
        super().__init__()
        self.placed: dict[int, int] = {}


class _Entered(tuple[int, int]):
    """A record's ``(t, watermark)`` that also carries the document as it entered the
    window (``.doc``): the window's stages keep a record's second part as it is, so the
    documents behind a group can be found after them (WindowPlan.fold with ``keep``)."""

    doc: dict[str, Any]

    def __new__(cls, m: tuple[int, int], doc: dict[str, Any]) -> _Entered:
        self = super().__new__(cls, m)
        self.doc = doc
        return self


def _keep_docs(keep: LateDocs, key: Any, groups: dict[Any, tuple[int, list[Any]]], entered: list[Rec]) -> None:
    """Put the documents behind one key's partials into ``keep``: each group's (from its
    records' :class:`_Entered` marks) in the group's bucket, once; the rest of ``entered``
    (dropped by a stage in the window, or without ``$group``) in bucket 0. A document
    already kept under another key of this fold stays in that bucket (``_Keep.placed``);
    every bucket with a group of ``key`` gets the key, empty if need be, so its close step
    knows the key's documents came (``WindowKind.merge``'s ``covered``)."""
    seen: set[int] = set()
    placed = keep.placed if isinstance(keep, _Keep) else {}
    for b, marks in groups.values():
        keep.setdefault(b, {}).setdefault(key, [])
        for m in marks:
            d = m.doc
            if id(d) not in seen:
                seen.add(id(d))
                keep.setdefault(placed.setdefault(id(d), b), {}).setdefault(key, []).append(d)
    for _, m in entered:
        d = m.doc
        if id(d) not in seen:
            seen.add(id(d))
            keep.setdefault(placed.setdefault(id(d), 0), {}).setdefault(key, []).append(d)


def _name_of(stage: ir.WindowStage) -> str:
    return stage.path.rsplit(".", 1)[-1]


def _err(path: str, msg: str) -> Exception:
    from translator.errors import TranslateError

    return TranslateError(path, msg)


# ---- stage 2: close windows across partitions --------------------------------------------


class CloseLogic(StatefulBatchLogic[WindowMsg, tuple[int, list[dict[str, Any]]], bytes]):
    """Per group bucket: merge partials, track every partition's watermark, close windows.

    Emits ``(OUT, docs)`` and ``(DLQ, dlq_docs)``. State survives restarts through
    ``snapshot``: a versioned :class:`~translator.window_state.CloseSnapshot`, pickled so
    the runtime gets an immutable copy.
    """

    def __init__(
        self,
        plan: WindowPlan,
        partitions: list[str],
        dlq_doc: Callable[..., dict[str, Any]],
        resume: bytes | None,
        after: tuple[Step, ...] = (),
    ) -> None:
        self.plan = plan
        self.kind = plan.kind
        self.after = after
        self.partitions = partitions
        self.dlq_doc = dlq_doc
        st = plan.stage
        self.lateness = st.allowed_lateness_ms
        self.processing = st.boundary == "processingTime"
        self.idle_ms = st.idle_timeout_ms
        self.late: list[dict[str, Any]] = []
        self._idle_closed: float | None = None  # last_activity of the last idleTimeout close
        if resume is None:
            self.state = CloseState({}, {}, {}, _now_ms(), set(), NEG_INF)
        else:
            self.state, version = load_close(resume, self.kind.layout, st.path)
            self.kind.resume(self.state, version)

    @property
    def windows(self) -> dict[Any, Any]:
        """Open windows ``{start: table}``, or the stored panes of a hopping window."""
        return self.state.windows

    @property
    def closed_upto(self) -> int:
        return self.state.closed_upto

    # -- Bytewax callbacks ---------------------------------------------------------------

    def on_batch(self, values: list[WindowMsg]) -> tuple[list[tuple[int, list[dict[str, Any]]]], bool]:
        state, kind = self.state, self.kind
        wms = state.wms
        for part, wm, partials, activity, *late_docs in values:
            # ``late`` (WindowMsg.late) is left out of plain 4-tuples.
            late = late_docs[0] if late_docs else None
            if wm > wms.get(part, NEG_INF):
                wms[part] = wm
            if activity == IDLE:
                state.idle.add(part)
                continue
            if activity == ACTIVE:
                state.idle.discard(part)
                state.last_activity = _now_ms()
            if late:
                # Before merge: merge opens the windows that are still open.
                errors = late.get(ERRORS)
                if errors is not None:
                    late = {k: v for k, v in late.items() if k != ERRORS}
                self._late_docs(kind.late_docs(state, late, partials))
                if errors:
                    # A stage's error for a document that is late, and only late: the
                    # document gets the late entry alone, as at ingest.
                    closed = kind.closed_keys(state, {e["key"] for e in errors}, partials)
                    for e in errors:
                        if e["key"] not in closed:
                            self._late_dlq(e["reason"], e["doc"])
            if partials:
                kind.merge(state, partials, self._late_partial, late or ())
        return self._close(self._watermark()), False

    def on_notify(self) -> tuple[list[tuple[int, list[dict[str, Any]]]], bool]:
        now = _now_ms()
        if self.processing:
            return self._close(now), False
        if self.idle_ms is not None and now >= self.state.last_activity + self.idle_ms:
            # ASP idleTimeout: an idle source still gets its open windows out.
            self._idle_closed = self.state.last_activity
            return self._close(max(self._watermark(), now) + self.lateness, idle=True), False
        return [], False

    def on_eof(self) -> tuple[list[tuple[int, list[dict[str, Any]]]], bool]:
        # End of a finite input flushes every open window (docs/windows.md).
        return self._close(None), False

    def notify_at(self) -> datetime | None:
        state = self.state
        if not (state.windows or state.sessions):
            # A bucket without windows wakes once per idle period too, to mark the
            # windows an idleTimeout closes as closed here (see _close).
            if self.idle_ms is None or self.processing or not state.wms or self._idle_closed == state.last_activity:
                return None
            return _dt(int(state.last_activity) + self.idle_ms)
        if self.processing:
            end = self.kind.next_end(state)
            return None if end is None else _dt(end)
        if self.idle_ms is not None:
            return _dt(int(state.last_activity) + self.idle_ms)
        return None

    def snapshot(self) -> bytes:
        return dump_close(self.state, self.kind.layout)

    # -- internals -----------------------------------------------------------------------

    def _watermark(self) -> int:
        if self.processing:
            return _now_ms()
        # The processor watermark is the minimum over source partitions, ignoring idle
        # ones; a partition that has not reported yet holds every window back. When every
        # partition is idle, those that reported count: an idle partition that never
        # reported holds nothing back (else whether a window closes would depend on the
        # order the idle markers arrive in; docs/windows.md).
        wms, idle = self.state.wms, self.state.idle
        known = [*self.partitions, *(p for p in wms if p not in self.partitions)]
        live = [p for p in known if p not in idle] or [p for p in known if p in wms]
        lowest = None
        for p in live:
            w = wms.get(p)
            if w is None:
                return NEG_INF
            if lowest is None or w < lowest:
                lowest = w
        return NEG_INF if lowest is None else lowest

    def _late_docs(self, found: list[tuple[dict[str, Any], list[int]]]) -> None:
        """Documents of windows that already closed, sent with their partials by a
        partition that was idle (the processor watermark moved on without it) and resumed
        with older data: each goes to the DLQ as a late document at ingest would."""
        for doc, starts in found:
            dlq_late(self._late_dlq, doc, starts)

    def _late_dlq(self, reason: str, doc: Any, **extra: Any) -> None:
        self.late.append(self.dlq_doc(reason, doc, **extra))

    def _late_partial(self, start: int, payload: Any, meta: dict[str, Any] | None = None) -> None:
        """A partial for a window that already closed, without its documents (they are
        kept only for a while after a partition resumes, see IngestLogic.keep_docs, and
        not at all by snapshots from before that). Its partition was idle (so the
        processor watermark moved on without it) and resumed with older data; the
        partition's own watermark could not tell. The documents are late: DLQ them, or
        for a $group window the group's partial result, which is what is left of them.
        ``meta``: the window's bounds where they are not ``start`` + interval (sessions)."""
        plan = self.plan
        if meta is None:
            meta = meta_for(start, start + plan.stage.interval_ms)
        missed = [ms_to_datetime(start)]
        for doc in plan.finalize(payload, meta, lambda r, d, **kw: None):
            self.late.append(self.dlq_doc(LATE_REASON, doc, missedWindowStartTimes=missed))

    def _close(self, wm: int | None, idle: bool = False) -> list[tuple[int, list[dict[str, Any]]]]:
        out: list[dict[str, Any]] = []
        dlq: list[dict[str, Any]] = []
        plan, kind, state = self.plan, self.kind, self.state
        t0 = time.perf_counter() if metrics.ENABLED else 0.0

        def dlq_fn(reason: str, doc: Any, **extra: Any) -> None:
            dlq.append(self.dlq_doc(reason, doc, **extra))

        lateness = 0 if self.processing else self.lateness
        due = kind.due(state, wm, lateness)
        if due:
            for payload, meta in kind.close(state, due):
                out.extend(plan.finalize(payload, meta, dlq_fn))
        if wm is not None and not self.processing:
            # Windows this watermark closes are closed even where this bucket had no
            # documents: a later partial for one is late, not a result of its own. An
            # idleTimeout closes by the wall clock every window up to the latest event
            # time seen (any bucket's open windows are among them), not beyond.
            upto = max(state.wms.values(), default=NEG_INF) if idle else None
            kind.mark_closed(state, wm, lateness, upto)
        if t0:
            self._report(len(out), len(dlq) + len(self.late), time.perf_counter() - t0)
        if out and self.after:
            # Stages after the window run on its results ($project, $addFields ...).
            out = [d for d, _ in run_chain(self.after, [(d, 0) for d in out], lambda r, d: dlq_fn(r, d))]
        if self.late:
            dlq.extend(self.late)
            self.late = []
        res: list[tuple[int, list[dict[str, Any]]]] = []
        if out:
            res.append((OUT, out))
        if dlq:
            res.append((DLQ, dlq))
        return res

    def _report(self, n_out: int, n_dlq: int, seconds: float) -> None:
        """Closed-window figures and the open-window state for ``operatorStats``."""
        st = self.plan.stage
        metrics.record(st.path, _name_of(st), 0, n_out, n_dlq, seconds)
        starts = self.kind.open_starts(self.state)
        entries = self.kind.entries(self.state)
        lo, hi = (min(starts), max(starts)) if starts else (None, None)
        metrics.set_window_state(id(self), st.path, len(starts), entries, lo, hi)


OUT, DLQ, WIN = 0, 1, 2


def _now_ms() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)


def _dt(ms: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
