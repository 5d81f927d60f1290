"""ASP windows on Bytewax, with ASP's watermark semantics (reference §3).

Bytewax's own windowing keeps one watermark per *key*; ASP keeps one per *source
partition*, and closes a window for every group once the processor's watermark (the
minimum over source partitions) passes ``end + allowedLateness``. So windows are built
from two batch-level ``stateful_batch`` steps instead of ``fold_window``:

1. **ingest** (keyed by source partition, see :mod:`translator.runtime`) tracks the
   partition's watermark, sends documents of already-closed windows to the DLQ as late,
   runs the window's stateless prefix and folds the batch into *partial* accumulator
   states per (window, group). :meth:`WindowPlan.fold` does that part.
2. **close** (:class:`CloseLogic`, keyed by a group bucket) merges partials from all
   partitions, keeps every partition's watermark, and closes windows when the minimum
   passes, at end of input, or on ``idleTimeout``. Only partials cross workers, never
   single documents.

A hopping window with an order-free ``$group`` is folded by *pane* (gcd(interval, hop)
wide): each document is folded once, into its pane, instead of once per window it is
in, and a window is merged from its panes when it closes (:meth:`WindowPlan.fold`,
:meth:`CloseLogic._close_panes`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import pickle
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bytewax.operators import StatefulBatchLogic

from sinks.dlq import LATE_REASON
from translator import ir, metrics
from translator.accumulators import AccSpec, compile_accumulator
from translator.mql.expr import META, Ctx, Expr, Vars, compile_expr, get_path
from translator.mql.values import MISSING, compare, hashable, ms_to_datetime
from translator.stages import Rec, Step, compile_steps, failure_reason, run_chain

NEG_INF = -(2**62)
_UNARY = frozenset(
    {"$sum", "$avg", "$min", "$max", "$first", "$last", "$push", "$addToSet", "$stdDevPop",
     "$stdDevSamp", "$mergeObjects"}
)
DlqFn = Callable[..., None]  # (reason, doc, **extra)
# Accumulators whose final value does not depend on the order their inputs arrive in, so a
# hopping window can be merged from panes (sub-windows) in any order. $first/$last/$push,
# $addToSet (first-seen order), $mergeObjects, the N-selections (ties keep the earlier) are not.
_ORDER_FREE = frozenset(
    {"$sum", "$avg", "$count", "$min", "$max", "$stdDevPop", "$stdDevSamp", "$median", "$percentile"}
)

# Partial message from ingest to close: (partition, watermark_ms, partials, activity)
WindowMsg = tuple[str, int, Any, int]
QUIET, ACTIVE, IDLE = 0, 1, 2  # activity: no documents, documents, partition idle


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
    stage: ir.WindowStage
    processor: str
    pre: tuple[Step, ...]
    group_id: Expr | None
    accs: tuple[AccSpec, ...]
    fields: tuple[str, ...]
    post: list[Callable[[list[dict[str, Any]], DlqFn, Vars], list[dict[str, Any]]]]
    buckets: int
    partition_by: Expr | None
    extracts: list[Expr] = dataclasses.field(default_factory=list)
    slot: list[int] = dataclasses.field(default_factory=list)
    # True when ``fold`` returns pane partials (``{pane_start | (pane_start, from_start):
    # table}``, see :meth:`fold`): tumbling windows (pane == window) and hopping windows
    # with an order-free ``$group`` that does not read the window's ``$meta``.
    panes: bool = dataclasses.field(default=False, init=False)
    _pane: int = dataclasses.field(default=0, init=False)

    def __post_init__(self) -> None:
        # Accumulators over the same field path ($min/$max/$avg of "$obs.temp") share
        # one evaluation per document.
        seen: dict[str, int] = {}
        st = self.stage
        gi = next((i for i, s in enumerate(st.pipeline) if isinstance(s, ir.GroupStage)), None)
        group = st.pipeline[gi] if gi is not None else None
        assert group is None or isinstance(group, ir.GroupStage)
        if st.kind == "tumbling":
            self._pane, self.panes = st.interval_ms, True
        elif st.kind == "hopping":
            self._pane = math.gcd(st.interval_ms, st.hop_ms)
            # A document is folded once into its pane instead of once per window, so
            # nothing before the window's end may depend on which window it is in.
            self.panes = (
                gi is not None
                and all(a.name in _ORDER_FREE for a in self.accs)
                and not _reads_meta(st.pipeline[: gi + 1])
            )
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
        pby = None
        if stage.kind == "session":
            pby = compile_expr(stage.partition_by, Ctx(f"{stage.path}.partitionBy"))
        return WindowPlan(
            stage=stage,
            processor=processor,
            pre=compile_steps(tuple(pre_stages)),
            group_id=compile_expr(group.id, Ctx(f"{group.path}._id")) if group else None,
            accs=tuple(
                compile_accumulator(a.op, a.arg, Ctx(f"{group.path}.{a.field}.{a.op}")) for a in group.accumulations
            )
            if group
            else (),
            fields=tuple(a.field for a in group.accumulations) if group else (),
            post=_compile_post(tuple(post_stages)),
            # Window-global stages ($sort/$limit/$count after $group) or a window without
            # $group need every group of a window in one place.
            buckets=1 if (global_post or group is None or stage.kind == "session") else max(1, buckets),
            partition_by=pby,
        )

    # -- assignment ----------------------------------------------------------------------

    def starts_for(self, t: int) -> list[int]:
        st = self.stage
        if st.kind == "tumbling":
            return [t - (t - st.offset_ms) % st.interval_ms]
        last = t - (t - st.offset_ms) % st.hop_ms
        out = []
        s = last
        while s + st.interval_ms > t:
            out.append(s)
            s -= st.hop_ms
        out.reverse()
        return out

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
        st = self.stage
        if st.kind == "tumbling":
            return t - (t - st.offset_ms) % st.interval_ms
        hop = st.hop_ms
        last = t - (t - st.offset_ms) % hop
        return last - ((st.interval_ms - (t - last) - 1) // hop) * hop

    def last_start(self, t: int) -> int:
        """Start of the newest window that may contain ``t`` (the hop grid point <= t)."""
        st = self.stage
        step = st.interval_ms if st.kind == "tumbling" else st.hop_ms
        return t - (t - st.offset_ms) % step

    def meta_for(self, start: int, end: int, partition: Any = MISSING) -> dict[str, Any]:
        w: dict[str, Any] = {"start": ms_to_datetime(start), "end": ms_to_datetime(end)}
        if partition is not MISSING:
            w["partition"] = partition
        return {"window": w}

    # -- stage 1: fold a batch into partials ----------------------------------------------

    def fold(self, recs: list[Rec], dlq: DlqFn) -> dict[int, Any]:
        """Fold ``(doc, (t, wm_before))`` records into ``{bucket: partials}``.

        With :attr:`panes` (tumbling, and hopping with an order-free ``$group``) each
        document is folded once, into its pane, and partials are ``{key: table}`` where
        ``key`` is a pane start (an ``int``: the pane counts in every window containing
        it) or ``(pane_start, from_start)`` (only in windows starting at or after
        ``from_start``: the documents were late for the earlier ones). For tumbling
        windows pane == window, so keys are window starts. Other hopping windows give
        ``{window_start: table}``. Sessions give ``{partition_key: [session, ...]}``.
        A table is ``{group_key: [group_id, state...]}`` or, without $group, a list of
        documents.
        """
        if metrics.ENABLED:
            # The window's figures include its inner stages (also listed on their own).
            dropped = [0]

            def counting(reason: str, doc: Any, **extra: Any) -> None:
                dropped[0] += 1
                dlq(reason, doc, **extra)

            t0 = time.perf_counter()
            out = self._fold(recs, counting)
            metrics.record(self.stage.path, _name_of(self.stage), len(recs), 0, dropped[0], time.perf_counter() - t0)
            return out
        return self._fold(recs, dlq)

    def _fold(self, recs: list[Rec], dlq: DlqFn) -> dict[int, Any]:
        if self.stage.kind == "session":
            return self._fold_sessions(recs, dlq)
        st = self.stage
        lateness = st.allowed_lateness_ms
        size = st.interval_ms
        by_win: dict[int, list[Rec]] = {}
        tumbling = st.kind == "tumbling"
        if self.panes and not tumbling:
            return self._fold_panes(recs, dlq)
        for rec in recs:
            t, wm = rec[1]
            if tumbling:
                s = t - (t - st.offset_ms) % size
                if s + size + lateness <= wm:
                    dlq_late(dlq, rec[0], [s])
                    continue
                lst = by_win.get(s)
                if lst is None:
                    by_win[s] = [rec]
                else:
                    lst.append(rec)
                continue
            starts = self.starts_for(t)
            missed = [s for s in starts if s + size + lateness <= wm]
            if missed:
                dlq_late(dlq, rec[0], missed)
            for s in starts:
                if s + size + lateness > wm:
                    by_win.setdefault(s, []).append(rec)
        out: dict[int, Any] = {}
        for s, wrecs in by_win.items():
            v = {META: self.meta_for(s, s + size)}
            if self.pre:
                wrecs = run_chain(self.pre, wrecs, lambda r, d: dlq(r, d), v)
            self._accumulate(out, s, wrecs, v, dlq)
        return out

    def _fold_panes(self, recs: list[Rec], dlq: DlqFn) -> dict[int, Any]:
        """Hopping: fold each document once into its pane (lateness still per window)."""
        st = self.stage
        size, hop, off, pane = st.interval_ms, st.hop_ms, st.offset_ms, self._pane
        closed_by = size + st.allowed_lateness_ms  # window s is closed once s + this <= wm
        by_key: dict[Any, list[Rec]] = {}
        for rec in recs:
            t, wm = rec[1]
            last = t - (t - off) % hop
            first = last - ((size - (t - last) - 1) // hop) * hop
            if first > last:
                continue  # in the gap between two windows (hop > interval)
            key: Any = t - (t - off) % pane
            if first + closed_by <= wm:
                # Late for the oldest windows (a prefix): DLQ naming just those, and
                # count the document only in the windows still open for it.
                s = first
                missed = []
                while s <= last and s + closed_by <= wm:
                    missed.append(s)
                    s += hop
                dlq_late(dlq, rec[0], missed)
                if s > last:
                    continue
                key = (key, s)
            lst = by_key.get(key)
            if lst is None:
                by_key[key] = [rec]
            else:
                lst.append(rec)
        out: dict[int, Any] = {}
        for key, krecs in by_key.items():
            p = key if type(key) is int else key[0]
            first = self.earliest_start(p)
            # No stage before the window's end reads the window's $meta (see ``panes``);
            # the oldest window's bounds are there for completeness.
            v = {META: self.meta_for(first, first + size)}
            if self.pre:
                krecs = run_chain(self.pre, krecs, lambda r, d: dlq(r, d), v)
            self._accumulate(out, key, krecs, v, dlq)
        return out

    def _accumulate(self, out: dict[int, Any], key: Any, recs: list[Rec], v: Vars, dlq: DlqFn) -> None:
        if self.group_id is None:
            out.setdefault(0, {}).setdefault(key, []).extend(d for d, _ in recs)
            return
        gid_f, accs = self.group_id, self.accs
        extracts = self.extracts
        # Collect each group's extracted values for the whole batch, then fold them per
        # accumulator in one call (add_many): per-document work is only evaluation.
        groups: dict[Any, tuple[Any, list[tuple[dict[str, Any], list[Any]]]]] = {}
        for d, _ in recs:
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
        nb = self.buckets
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

    def _fold_sessions(self, recs: list[Rec], dlq: DlqFn) -> dict[int, Any]:
        st = self.stage
        assert self.partition_by is not None
        by_key: dict[Any, tuple[Any, list[Rec]]] = {}
        for rec in recs:
            t, wm = rec[1]
            if t + st.gap_ms + st.allowed_lateness_ms <= wm:
                dlq_late(dlq, rec[0], [t])
                continue
            try:
                p = self.partition_by(rec[0], {})
            except Exception as exc:
                dlq(failure_reason(st.path.rsplit(".", 1)[-1], f"{st.path}.partitionBy", exc), rec[0])
                continue
            p = None if p is MISSING else p
            hk = hashable(p)
            entry = by_key.get(hk)
            if entry is None:
                by_key[hk] = (p, [rec])
            else:
                entry[1].append(rec)
        sessions_out: dict[Any, list[list[Any]]] = {}
        for hk, (pval, prs) in by_key.items():
            prs.sort(key=lambda r: r[1][0])
            runs: list[list[Rec]] = []
            for r in prs:
                if runs and r[1][0] - runs[-1][-1][1][0] < st.gap_ms:
                    runs[-1].append(r)
                else:
                    runs.append([r])
            for run in runs:
                start, last = run[0][1][0], run[-1][1][0]
                v = {META: self.meta_for(start, last + st.gap_ms, pval)}
                rr = run_chain(self.pre, run, lambda r, d: dlq(r, d), v) if self.pre else run
                holder: dict[int, Any] = {}
                self._accumulate(holder, "s", rr, v, dlq)
                payload = holder.get(0, {}).get("s", [] if self.group_id is None else {})
                sessions_out.setdefault(hk, []).append([start, last, pval, payload])
        return {0: sessions_out} if sessions_out else {}

    # -- stage 2 helpers ------------------------------------------------------------------

    def merge_payload(self, a: Any, b: Any) -> Any:
        """Merge two window tables (``b`` holds later-arriving documents)."""
        if self.group_id is None:
            a.extend(b)
            return a
        accs = self.accs
        for hk, eb in b.items():
            ea = a.get(hk)
            if ea is None:
                a[hk] = eb
            else:
                for i, acc in enumerate(accs, 1):
                    ea[i] = acc.merge(ea[i], eb[i])
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
        fields = tuple(zip(self.fields, (a.final for a in self.accs), strict=True))
        out = []
        for entry in payload.values():
            d = {"_id": entry[0]}
            try:
                for (f, final), state in zip(fields, entry[1:], strict=True):
                    d[f] = final(state)
            except Exception as exc:
                dlq(failure_reason("$group", self.stage.path, exc), d)
                continue
            d["_stream_meta"] = dict(meta)
            out.append(d)
        return out


def _name_of(stage: ir.WindowStage) -> str:
    return stage.path.rsplit(".", 1)[-1]


def _reads_meta(obj: Any) -> bool:
    """Whether an IR fragment uses ``$meta`` anywhere (a window bound could be read)."""
    if isinstance(obj, dict):
        return "$meta" in obj or any(_reads_meta(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return any(_reads_meta(v) for v in obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return any(_reads_meta(getattr(obj, f.name)) for f in dataclasses.fields(obj))
    return False


def _err(path: str, msg: str) -> Exception:
    from translator.errors import TranslateError

    return TranslateError(path, msg)


def bucket_of(hk: Any, n: int) -> int:
    """A stable (cross-process) bucket for a group key: Python's str hash is salted."""
    return zlib.crc32(repr(hk).encode()) % n


def dlq_late(dlq: DlqFn, doc: dict[str, Any], starts: list[int]) -> None:
    dlq(LATE_REASON, doc, missedWindowStartTimes=[ms_to_datetime(s) for s in starts])


# ---- stage 2: close windows across partitions --------------------------------------------


class CloseLogic(StatefulBatchLogic[WindowMsg, tuple[int, list[dict[str, Any]]], bytes]):
    """Per group bucket: merge partials, track every partition's watermark, close windows.

    Emits ``(OUT, docs)`` and ``(DLQ, dlq_docs)``. State survives restarts through
    ``snapshot`` (pickled, so the runtime gets an immutable copy).
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
        self.after = after
        self.partitions = partitions
        self.dlq_doc = dlq_doc
        st = plan.stage
        self.lateness = st.allowed_lateness_ms
        self.processing = st.boundary == "processingTime"
        self.idle_ms = st.idle_timeout_ms
        self.wms: dict[str, int] = {}
        self.windows: dict[int, Any] = {}
        self.sessions: dict[Any, list[list[Any]]] = {}
        self.last_activity: float = _now_ms()
        self.idle: set[str] = set()
        self.closed_upto = NEG_INF  # start of the last closed window
        # Hopping windows folded by pane: ``windows`` holds panes, keyed as ``fold``
        # returns them, and a window is merged from its panes when it closes.
        self.by_pane = plan.panes and st.kind == "hopping"
        self.late: list[dict[str, Any]] = []
        if resume is not None:
            (self.wms, self.windows, self.sessions, self.last_activity, self.idle, self.closed_upto) = pickle.loads(resume)

    # -- Bytewax callbacks ---------------------------------------------------------------

    def on_batch(self, values: list[WindowMsg]) -> tuple[list[tuple[int, list[dict[str, Any]]]], bool]:
        for part, wm, partials, activity in values:
            if wm > self.wms.get(part, NEG_INF):
                self.wms[part] = wm
            if activity == IDLE:
                self.idle.add(part)
                continue
            if activity == ACTIVE:
                self.idle.discard(part)
                self.last_activity = _now_ms()
            if partials:
                if self.plan.stage.kind == "session":
                    self._merge_sessions(partials)
                else:
                    self._merge_windows(partials)
        return self._close(self._watermark()), False

    def on_notify(self) -> tuple[list[tuple[int, list[dict[str, Any]]]], bool]:
        now = _now_ms()
        if self.processing:
            return self._close(now), False
        if self.idle_ms is not None and now >= self.last_activity + self.idle_ms:
            # ASP idleTimeout: an idle source still gets its open windows out.
            return self._close(max(self._watermark(), now) + self.lateness, idle=True), False
        return [], False

    def on_eof(self) -> tuple[list[tuple[int, list[dict[str, Any]]]], bool]:
        # End of a finite input flushes every open window (reference §3).
        return self._close(None), False

    def notify_at(self) -> datetime | None:
        if not (self.windows or self.sessions):
            return None
        if self.processing:
            ends = [self._end(s) for s in (self._open_starts() if self.by_pane else self.windows)]
            return _dt(min(ends)) if ends else None
        if self.idle_ms is not None:
            return _dt(int(self.last_activity) + self.idle_ms)
        return None

    def snapshot(self) -> bytes:
        state = (self.wms, self.windows, self.sessions, self.last_activity, self.idle, self.closed_upto)
        return pickle.dumps(state, protocol=5)

    # -- internals -----------------------------------------------------------------------

    def _watermark(self) -> int:
        if self.processing:
            return _now_ms()
        # The processor watermark is the minimum over source partitions, ignoring idle
        # ones; a partition that has not reported yet holds every window back.
        wms, idle = self.wms, self.idle
        known = [*self.partitions, *(p for p in wms if p not in self.partitions)]
        live = [p for p in known if p not in idle] or known
        lowest = None
        for p in live:
            w = wms.get(p)
            if w is None:
                return NEG_INF
            if lowest is None or w < lowest:
                lowest = w
        return NEG_INF if lowest is None else lowest

    def _end(self, start: int) -> int:
        return start + self.plan.stage.interval_ms

    def _pane_span(self, key: Any) -> tuple[int, int, int]:
        """``(pane start, first window, last window)`` that a stored pane counts in."""
        plan = self.plan
        if type(key) is tuple:
            p, first = key
        else:
            p = key
            first = plan.earliest_start(p)
        return p, first, plan.last_start(p)

    def _open_starts(self) -> list[int]:
        """Starts of the open windows holding at least one stored pane, in order."""
        hop, after = self.plan.stage.hop_ms, self.closed_upto + self.plan.stage.hop_ms
        starts: set[int] = set()
        for key in self.windows:
            _, first, last = self._pane_span(key)
            starts.update(range(max(first, after), last + 1, hop))
        return sorted(starts)

    def _merge_panes(self, partials: dict[Any, Any]) -> None:
        plan, panes = self.plan, self.windows
        hop, closed = plan.stage.hop_ms, self.closed_upto
        late: dict[int, dict[Any, Any]] = {}
        for key, payload in partials.items():
            p, first, last = self._pane_span(key)
            if first <= closed:
                # Some of the pane's windows are out already: see ``_late_partial``.
                for s in range(first, min(last, closed) + 1, hop):
                    plan.merge_pane(late.setdefault(s, {}), payload, owned=False)
                if last <= closed:
                    continue
                key = (p, closed + hop)
            cur = panes.get(key)
            if cur is None:
                panes[key] = payload
            else:
                plan.merge_pane(cur, payload, owned=True)
        for s in sorted(late):
            self._late_partial(s, late[s])

    def _close_panes(self, wm: int | None, lateness: int, out: list[dict[str, Any]], dlq_fn: DlqFn) -> None:
        """Close every window whose end + lateness the watermark passed, in start order,
        each merged from its stored panes; drop a pane after its last window."""
        panes = self.windows
        if not panes:
            return
        plan = self.plan
        size, hop = plan.stage.interval_ms, plan.stage.hop_ms
        limit = None if wm is None else wm - size - lateness
        after = self.closed_upto + hop
        spans = sorted(((*self._pane_span(k), k) for k in panes), key=lambda e: (e[0], e[1]))
        starts: set[int] = set()
        for _, first, last, _ in spans:
            hi = last if limit is None or last < limit else limit
            starts.update(range(max(first, after), hi + 1, hop))
        for s in sorted(starts):
            end = s + size
            table: dict[Any, Any] = {}
            keep = []
            for e in spans:
                p, first, last, key = e
                if s <= p < end and first <= s:
                    plan.merge_pane(table, panes[key], owned=last <= s)
                if last <= s:
                    del panes[key]
                else:
                    keep.append(e)
            spans = keep
            self.closed_upto = s
            out.extend(plan.finalize(table, plan.meta_for(s, end), dlq_fn))

    def _merge_windows(self, partials: dict[int, Any]) -> None:
        if self.by_pane:
            self._merge_panes(partials)
            return
        plan, windows = self.plan, self.windows
        for start, payload in partials.items():
            if start <= self.closed_upto and start not in windows:
                self._late_partial(start, payload)
                continue
            cur = windows.get(start)
            windows[start] = payload if cur is None else plan.merge_payload(cur, payload)

    def _late_partial(self, start: int, payload: Any) -> None:
        """A partial for a window that already closed. Its partition was idle (so the
        processor watermark moved on without it) and resumed with older data; the
        partition's own watermark could not tell. The documents are late: DLQ them, or
        for a $group window the group's partial result, which is what is left of them."""
        plan = self.plan
        meta = plan.meta_for(start, self._end(start))
        missed = [ms_to_datetime(start)]
        for doc in plan.finalize(payload, meta, lambda r, d, **kw: None):
            self.late.append(self.dlq_doc(LATE_REASON, doc, missedWindowStartTimes=missed))

    def _merge_sessions(self, partials: dict[Any, list[list[Any]]]) -> None:
        gap = self.plan.stage.gap_ms
        plan = self.plan
        for hk, new_sessions in partials.items():
            lst = self.sessions.setdefault(hk, [])
            for ns in new_sessions:
                merged = ns
                keep = []
                for s in lst:
                    if s[0] < merged[1] + gap and merged[0] < s[1] + gap:
                        # An event bridging two sessions merges them (reference §3).
                        older, newer = (s, merged) if s[0] <= merged[0] else (merged, s)
                        merged = [
                            min(s[0], merged[0]),
                            max(s[1], merged[1]),
                            older[2],
                            plan.merge_payload(older[3], newer[3]),
                        ]
                    else:
                        keep.append(s)
                keep.append(merged)
                keep.sort(key=lambda s: s[0])
                lst[:] = keep

    def _close(self, wm: int | None, idle: bool = False) -> list[tuple[int, list[dict[str, Any]]]]:
        out: list[dict[str, Any]] = []
        dlq: list[dict[str, Any]] = []
        plan = self.plan
        t0 = time.perf_counter() if metrics.ENABLED else 0.0

        def dlq_fn(reason: str, doc: Any, **extra: Any) -> None:
            dlq.append(self.dlq_doc(reason, doc, **extra))

        lateness = 0 if self.processing else self.lateness
        if plan.stage.kind == "session":
            gap = plan.stage.gap_ms
            for hk in list(self.sessions):
                lst = self.sessions[hk]
                remaining = []
                for s in lst:
                    if wm is None or s[1] + gap + lateness <= wm:
                        out.extend(plan.finalize(s[3], plan.meta_for(s[0], s[1] + gap, s[2]), dlq_fn))
                    else:
                        remaining.append(s)
                if remaining:
                    self.sessions[hk] = remaining
                else:
                    del self.sessions[hk]
        elif self.by_pane:
            self._close_panes(wm, lateness, out, dlq_fn)
        else:
            for start in sorted(self.windows):
                end = self._end(start)
                if wm is not None and end + lateness > wm:
                    break
                payload = self.windows.pop(start)
                self.closed_upto = max(self.closed_upto, start)
                out.extend(plan.finalize(payload, plan.meta_for(start, end), dlq_fn))
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
        if st.kind == "session":
            starts = [s[0] for lst in self.sessions.values() for s in lst]
            entries = sum(len(s[3]) for lst in self.sessions.values() for s in lst)
        else:
            # Hopping by pane: open windows are counted, the state is the panes' entries.
            starts = self._open_starts() if self.by_pane else list(self.windows)
            entries = sum(len(p) for p in self.windows.values())
        lo, hi = (min(starts), max(starts)) if starts else (None, None)
        metrics.set_window_state(id(self), st.path, len(starts), entries, lo, hi)


OUT, DLQ, WIN = 0, 1, 2


def _now_ms() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)


def _dt(ms: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
