"""One class per window kind: where a document goes, when it is late, how a batch folds,
what closes at a watermark, and how a window's result is put together.

:class:`~translator.windows.WindowPlan` picks one through :data:`KINDS`; the ingest step
(``WindowPlan.fold``) and the close step (``CloseLogic``) only call the interface of
:class:`WindowKind`. docs/windows.md describes the rules and the state each kind keeps.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, ClassVar

from translator import ir
from translator.contracts import LATE_REASON
from translator.mql.expr import META, Ctx, Expr, compile_expr
from translator.mql.values import MISSING, hashable, ms_to_datetime
from translator.stages import Rec, failure_reason, run_chain
from translator.window_state import (
    RESTART,
    CloseState,
    PaneKey,
    Partials,
    Session,
    SessionDoc,
    SnapshotError,
    Table,
)

if TYPE_CHECKING:
    from translator.windows import WindowPlan

DlqFn = Callable[..., None]  # (reason, doc, **extra)
# (window start, partial of an already closed window[, meta=its window $meta])
LateFn = Callable[..., None]
# Documents behind partials, ``{bucket: {key: [document, ...]}}`` (WindowMsg.late); one
# bucket's share is ``{key: [document, ...]}``.
LateDocs = dict[int, dict[Any, list[dict[str, Any]]]]
Missed = list[tuple[dict[str, Any], list[int]]]  # (document, starts of the windows it missed)
Closing = list[tuple[Any, dict[str, Any]]]  # (partial, window $meta) per closed window, in order

# Accumulators whose final value does not depend on the order their inputs arrive in, so a
# hopping window can be merged from panes (sub-windows) in any order. $first/$last/$push,
# $addToSet (first-seen order), $mergeObjects, the N-selections (ties keep the earlier) are not.
ORDER_FREE = frozenset(
    {"$sum", "$avg", "$count", "$min", "$max", "$stdDevPop", "$stdDevSamp", "$median", "$percentile"}
)


# The keyword with which a kind's fold tags the DLQ entries of the window's own stages
# for kept documents (``fold`` with ``keep``): WindowPlan.fold holds them back for the close
# step, which sends them unless the key's windows had all closed (window_state.ERRORS).
WINDOW_KEY = "_window_key"


def dlq_late(dlq: DlqFn, doc: dict[str, Any], starts: list[int]) -> None:
    dlq(LATE_REASON, doc, missedWindowStartTimes=[ms_to_datetime(s) for s in starts])


def inner_dlq(dlq: DlqFn, key: Any, keep: LateDocs | None) -> Callable[[str, Any], None]:
    """The DLQ of the window's stages for the documents folded under ``key``: with
    ``keep``, tagged with the key (:data:`WINDOW_KEY`)."""
    if keep is None:
        return lambda r, d: dlq(r, d)
    return lambda r, d: dlq(r, d, **{WINDOW_KEY: key})


def meta_for(start: int, end: int, partition: Any = MISSING) -> dict[str, Any]:
    """A window's ``$meta``/``_stream_meta`` part: ``{window: {start, end[, partition]}}``."""
    w: dict[str, Any] = {"start": ms_to_datetime(start), "end": ms_to_datetime(end)}
    if partition is not MISSING:
        w["partition"] = partition
    return {"window": w}


class WindowKind:
    """The rules of one window kind. ``plan`` gives the compiled inner pipeline (its
    stateless prefix, ``_accumulate``, ``merge_payload``); ``state`` is a close bucket's
    :class:`CloseState`."""

    layout: ClassVar[str]  # the name snapshots record, see window_state.load_close
    panes: ClassVar[bool] = False  # fold keys are pane starts (WindowPlan.panes)
    one_bucket: ClassVar[bool] = False  # every group in one close bucket
    holdable: ClassVar[bool] = True  # ingest may merge partials with plan.merge_payload
    # fold can keep the documents behind its partials and late_docs tell the late ones
    # (after an idle partition resumes, docs/windows.md).
    keeps_docs: ClassVar[bool] = True
    gapless: bool = True  # every event time is in some window (not: hop > interval)
    pane_ms: int = 0

    def __init__(self, plan: WindowPlan) -> None:
        self.plan = plan
        self.stage = plan.stage

    # -- assignment and lateness (ingest) ----------------------------------------------

    def assign(self, t: int) -> list[int]:
        """Starts of the windows containing event time ``t``, oldest first."""
        raise NotImplementedError

    def earliest_start(self, t: int) -> int:
        """Start of the oldest window containing ``t`` (windows on a fixed grid only)."""
        raise TypeError(f"{self.layout} windows are not on a fixed grid")

    def last_start(self, t: int) -> int:
        """Start of the newest window that may contain ``t`` (windows on a fixed grid only)."""
        raise TypeError(f"{self.layout} windows are not on a fixed grid")

    def first_window(self, key: Any) -> int:
        """Start of the oldest window a partial keyed ``key`` (a :meth:`fold` key) counts
        in: the first one to close. Ingest holds the partial until its own watermark
        closes that window (docs/windows.md, "Two steps")."""
        raise TypeError(f"{self.layout} partials are not held until their window closes")

    def window_starts(self, key: Any) -> Iterable[int]:
        """Starts of the windows a partial keyed ``key`` counts in (state figures)."""
        return (self.first_window(key),)

    def missed(self, t: int, wm: int) -> list[int]:
        """Starts of the windows ``t`` is late for at partition watermark ``wm``: their
        ``end + allowedLateness`` is at or below it."""
        closed_by = self.stage.interval_ms + self.stage.allowed_lateness_ms
        return [s for s in self.assign(t) if s + closed_by <= wm]

    def fold(self, recs: list[Rec], dlq: DlqFn, keep: LateDocs | None = None) -> Partials:
        """Fold ``(doc, (t, watermark before))`` records into ``{bucket: {key: partial}}``;
        late documents go to ``dlq``. With ``keep`` (:attr:`keeps_docs` kinds), the
        documents behind each partial are put there too (``WindowPlan._accumulate``)."""
        raise NotImplementedError

    # -- close step ----------------------------------------------------------------------

    def merge(self, state: CloseState, partials: dict[Any, Any], late: LateFn, covered: Any = ()) -> None:
        """Merge one bucket's partials into ``state``; a partial of an already closed
        window goes to ``late``, unless its key is in ``covered``: its documents came
        with it and :meth:`late_docs` (called first) sends them to the DLQ one by one."""
        raise NotImplementedError

    def late_docs(self, state: CloseState, docs: dict[Any, list[dict[str, Any]]],
                  partials: dict[Any, Any] | None = None) -> Missed:
        """The documents of ``docs`` (one bucket's ``{key: [document, ...]}``) whose
        windows already closed, each once with the starts of the windows it missed, as
        a late document at ingest (:func:`dlq_late`). Called before :meth:`merge`, with
        the partials of the same message (sessions judge them, not the documents)."""
        return []

    def closed_keys(self, state: CloseState, keys: Iterable[Any], partials: dict[Any, Any] | None = None) -> set[Any]:
        """The fold keys among ``keys`` whose every window already closed: their
        documents count nowhere, so a late document's errors from the window's stages
        are dropped (at ingest lateness is judged before those stages run)."""
        return set()

    def due(self, state: CloseState, wm: int | None, lateness: int) -> list[Any]:
        """What closes at watermark ``wm`` (None: everything, at end of input), in order."""
        raise NotImplementedError

    def close(self, state: CloseState, due: list[Any]) -> Closing:
        """Take ``due`` (from :meth:`due`) out of ``state``: each window's partial and $meta."""
        raise NotImplementedError

    def mark_closed(self, state: CloseState, wm: int, lateness: int, upto: int | None = None) -> None:
        """Record in ``state.closed_upto`` that every window the event-time watermark
        ``wm`` closes is closed, with or without documents (after :meth:`close`); with
        ``upto``, only the windows starting at or before it too."""

    def open_starts(self, state: CloseState) -> list[int]:
        """Starts of the open windows (state figures, processing-time wake-ups)."""
        return list(state.windows)

    def entries(self, state: CloseState) -> int:
        """Stored (window or pane, group) entries, for the state figures."""
        return sum(len(p) for p in state.windows.values())

    def next_end(self, state: CloseState) -> int | None:
        """The earliest end of an open window (processing time wakes up then)."""
        ends = [s + self.stage.interval_ms for s in self.open_starts(state)]
        return min(ends) if ends else None

    def resume(self, state: CloseState, version: int) -> None:
        """Check (or convert) a resumed state written in snapshot ``version``."""


class _ByWindow(WindowKind):
    """Partials per window, keyed by window start: tumbling windows, and hopping windows
    whose ``$group`` cannot be merged from panes."""

    def fold(self, recs: list[Rec], dlq: DlqFn, keep: LateDocs | None = None) -> Partials:
        by_win = self._assign_recs(recs, dlq)
        plan, size = self.plan, self.stage.interval_ms
        out: Partials = {}
        for s, wrecs in by_win.items():
            v = {META: meta_for(s, s + size)}
            entered = wrecs
            kd = inner_dlq(dlq, s, keep)
            if plan.pre:
                wrecs = run_chain(plan.pre, wrecs, kd, v)
            plan._accumulate(out, s, wrecs, v, kd, keep, entered)
        return out

    def closed_keys(self, state: CloseState, keys: Iterable[Any], partials: dict[Any, Any] | None = None) -> set[Any]:
        closed, windows = state.closed_upto, state.windows
        return {k for k in keys if k <= closed and k not in windows}

    def late_docs(self, state: CloseState, docs: dict[Any, list[dict[str, Any]]],
                  partials: dict[Any, Any] | None = None) -> Missed:
        # The same test as merge's: keys are window starts; a hopping window's document
        # is under each of its windows and missed the closed ones.
        closed, windows = state.closed_upto, state.windows
        found: dict[int, tuple[dict[str, Any], list[int]]] = {}
        for start in sorted(docs):
            if start <= closed and start not in windows:
                for d in docs[start]:
                    e = found.get(id(d))
                    if e is None:
                        found[id(d)] = (d, [start])
                    else:
                        e[1].append(start)
        return list(found.values())

    def first_window(self, key: Any) -> int:
        return int(key)  # keys are window starts

    def mark_closed(self, state: CloseState, wm: int, lateness: int, upto: int | None = None) -> None:
        limit = wm - self.stage.interval_ms - lateness  # window s closes once s <= limit
        s = self.last_start(limit if upto is None or upto > limit else upto)
        if s > state.closed_upto:
            state.closed_upto = s

    def _assign_recs(self, recs: list[Rec], dlq: DlqFn) -> dict[int, list[Rec]]:
        """Records per window they count in; a document late for some of its windows
        goes to the DLQ naming those (:meth:`missed`) and counts in the others."""
        closed_by = self.stage.interval_ms + self.stage.allowed_lateness_ms
        by_win: dict[int, list[Rec]] = {}
        for rec in recs:
            t, wm = rec[1]
            starts = self.assign(t)
            if starts and starts[0] + closed_by <= wm:  # the oldest window closes first
                dlq_late(dlq, rec[0], self.missed(t, wm))
            for s in starts:
                if s + closed_by > wm:
                    by_win.setdefault(s, []).append(rec)
        return by_win

    def merge(self, state: CloseState, partials: dict[Any, Any], late: LateFn, covered: Any = ()) -> None:
        merge, windows = self.plan.merge_payload, state.windows
        for start, payload in partials.items():
            if start <= state.closed_upto and start not in windows:
                if start not in covered:
                    late(start, payload)
                continue
            cur = windows.get(start)
            windows[start] = payload if cur is None else merge(cur, payload)

    def due(self, state: CloseState, wm: int | None, lateness: int) -> list[Any]:
        starts = sorted(state.windows)
        if wm is None:
            return starts
        limit = wm - self.stage.interval_ms - lateness  # window s closes once s <= limit
        return [s for s in starts if s <= limit]

    def close(self, state: CloseState, due: list[Any]) -> Closing:
        size, windows = self.stage.interval_ms, state.windows
        out: Closing = []
        for start in due:
            out.append((windows.pop(start), meta_for(start, start + size)))
            if start > state.closed_upto:
                state.closed_upto = start
        return out


class TumblingWindows(_ByWindow):
    """``$tumblingWindow``: each document is in exactly one window (pane == window)."""

    layout = "tumbling"
    panes = True

    def __init__(self, plan: WindowPlan) -> None:
        super().__init__(plan)
        self.pane_ms = self.stage.interval_ms

    def assign(self, t: int) -> list[int]:
        return [self.earliest_start(t)]

    def earliest_start(self, t: int) -> int:
        st = self.stage
        return t - (t - st.offset_ms) % st.interval_ms

    last_start = earliest_start

    def _assign_recs(self, recs: list[Rec], dlq: DlqFn) -> dict[int, list[Rec]]:
        # assign/missed, inlined: one window per document, the general path's hot loop.
        st = self.stage
        size, off = st.interval_ms, st.offset_ms
        closed_by = size + st.allowed_lateness_ms
        by_win: dict[int, list[Rec]] = {}
        for rec in recs:
            t, wm = rec[1]
            s = t - (t - off) % size
            if s + closed_by <= wm:
                dlq_late(dlq, rec[0], [s])
                continue
            lst = by_win.get(s)
            if lst is None:
                by_win[s] = [rec]
            else:
                lst.append(rec)
        return by_win


class _Hopping(WindowKind):
    """The hop grid of ``$hoppingWindow``: windows of ``interval`` starting every ``hop``."""

    def __init__(self, plan: WindowPlan) -> None:
        super().__init__(plan)
        self.gapless = self.stage.hop_ms <= self.stage.interval_ms

    def assign(self, t: int) -> list[int]:
        st = self.stage
        first, last = self.earliest_start(t), self.last_start(t)
        return list(range(first, last + 1, st.hop_ms))

    def earliest_start(self, t: int) -> int:
        """Start of the oldest window containing ``t``; a start above ``t`` means none
        does (``t`` falls in a gap of a hopping window whose hop exceeds its interval)."""
        st = self.stage
        hop = st.hop_ms
        last = t - (t - st.offset_ms) % hop
        return last - ((st.interval_ms - (t - last) - 1) // hop) * hop

    def last_start(self, t: int) -> int:
        """Start of the newest window that may contain ``t`` (the hop grid point <= t)."""
        st = self.stage
        return t - (t - st.offset_ms) % st.hop_ms


class HoppingWindows(_Hopping, _ByWindow):
    """``$hoppingWindow`` whose ``$group`` depends on input order or reads the window's
    ``$meta``: a document is folded into every window it is in."""

    layout = "hopping"


class HoppingPanes(_Hopping):
    """``$hoppingWindow`` with an order-free ``$group``: each document is folded once,
    into its pane (gcd(interval, hop) wide), and a window is merged from its panes when
    it closes. ``state.windows`` holds panes keyed by :data:`PaneRef`."""

    layout = "hopping-panes"
    panes = True

    def __init__(self, plan: WindowPlan) -> None:
        super().__init__(plan)
        self.pane_ms = math.gcd(self.stage.interval_ms, self.stage.hop_ms)

    def fold(self, recs: list[Rec], dlq: DlqFn, keep: LateDocs | None = None) -> Partials:
        """Lateness stays per window: a document late for its oldest windows goes to the
        DLQ naming those, and counts in the rest under a :class:`PaneKey`."""
        st, plan = self.stage, self.plan
        size, hop, off, pane = st.interval_ms, st.hop_ms, st.offset_ms, self.pane_ms
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
                s = first
                missed = []
                while s <= last and s + closed_by <= wm:
                    missed.append(s)
                    s += hop
                dlq_late(dlq, rec[0], missed)
                if s > last:
                    continue
                key = PaneKey(key, s)
            lst = by_key.get(key)
            if lst is None:
                by_key[key] = [rec]
            else:
                lst.append(rec)
        out: Partials = {}
        for key, krecs in by_key.items():
            p = key if type(key) is int else key[0]
            first = self.earliest_start(p)
            # No stage before the window's end reads the window's $meta (see _hopping);
            # the oldest window's bounds are there for completeness.
            v = {META: meta_for(first, first + size)}
            entered = krecs
            kd = inner_dlq(dlq, key, keep)
            if plan.pre:
                krecs = run_chain(plan.pre, krecs, kd, v)
            plan._accumulate(out, key, krecs, v, kd, keep, entered)
        return out

    def pane_span(self, key: Any) -> tuple[int, int, int]:
        """``(pane start, first window, last window)`` that a stored pane counts in."""
        if isinstance(key, tuple):
            p, first = key
        else:
            p = key
            first = self.earliest_start(p)
        return p, first, self.last_start(p)

    def first_window(self, key: Any) -> int:
        return self.pane_span(key)[1]

    def mark_closed(self, state: CloseState, wm: int, lateness: int, upto: int | None = None) -> None:
        # due/close took every stored pane's windows up to the limit first.
        limit = wm - self.stage.interval_ms - lateness
        s = self.last_start(limit if upto is None or upto > limit else upto)
        if s > state.closed_upto:
            state.closed_upto = s

    def window_starts(self, key: Any) -> Iterable[int]:
        _, first, last = self.pane_span(key)
        return range(first, last + 1, self.stage.hop_ms)

    def open_starts(self, state: CloseState) -> list[int]:
        """Starts of the open windows holding at least one stored pane, in order."""
        hop = self.stage.hop_ms
        after = state.closed_upto + hop
        starts: set[int] = set()
        for key in state.windows:
            _, first, last = self.pane_span(key)
            starts.update(range(max(first, after), last + 1, hop))
        return sorted(starts)

    def closed_keys(self, state: CloseState, keys: Iterable[Any], partials: dict[Any, Any] | None = None) -> set[Any]:
        # A pane with windows still open counts there: its documents' errors stand.
        closed = state.closed_upto
        return {k for k in keys if self.pane_span(k)[2] <= closed}

    def late_docs(self, state: CloseState, docs: dict[Any, list[dict[str, Any]]],
                  partials: dict[Any, Any] | None = None) -> Missed:
        # A pane's documents missed the pane's windows that are out already (merge's test).
        hop, closed = self.stage.hop_ms, state.closed_upto
        found: Missed = []
        for key, kdocs in docs.items():
            _, first, last = self.pane_span(key)
            if first <= closed:
                starts = list(range(first, min(last, closed) + 1, hop))
                found.extend((d, starts) for d in kdocs)
        return found

    def merge(self, state: CloseState, partials: dict[Any, Any], late: LateFn, covered: Any = ()) -> None:
        plan, panes = self.plan, state.windows
        hop, closed = self.stage.hop_ms, state.closed_upto
        late_tables: dict[int, dict[Any, Any]] = {}
        for key, payload in partials.items():
            p, first, last = self.pane_span(key)
            if first <= closed:
                # Some of the pane's windows are out already: their share is late
                # (document by document when the documents came with it).
                if key not in covered:
                    for s in range(first, min(last, closed) + 1, hop):
                        plan.merge_pane(late_tables.setdefault(s, {}), payload, owned=False)
                if last <= closed:
                    continue
                key = PaneKey(p, closed + hop)
            cur = panes.get(key)
            if cur is None:
                panes[key] = payload
            else:
                plan.merge_pane(cur, payload, owned=True)
        for s in sorted(late_tables):
            late(s, late_tables[s])

    def due(self, state: CloseState, wm: int | None, lateness: int) -> list[Any]:
        hop = self.stage.hop_ms
        limit = None if wm is None else wm - self.stage.interval_ms - lateness
        after = state.closed_upto + hop
        starts: set[int] = set()
        for key in state.windows:
            _, first, last = self.pane_span(key)
            hi = last if limit is None or last < limit else limit
            starts.update(range(max(first, after), hi + 1, hop))
        return sorted(starts)

    def close(self, state: CloseState, due: list[Any]) -> Closing:
        """Each due window merged from its stored panes, in start order; a pane is
        dropped after its last window (and then given away, not copied)."""
        panes, plan = state.windows, self.plan
        size = self.stage.interval_ms
        spans = sorted(((*self.pane_span(k), k) for k in panes), key=lambda e: (e[0], e[1]))
        out: Closing = []
        for s in due:
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
            state.closed_upto = s
            out.append((table, meta_for(s, end)))
        return out

    def resume(self, state: CloseState, version: int) -> None:
        """Version 1 snapshots of hopping windows held whole windows (keyed by window
        start) before windows were folded by pane, and panes after, in the same tuple.
        Pane keys off the hop grid, or :class:`PaneKey` keys, prove panes; otherwise the
        two cannot be told apart and the resume fails rather than misread."""
        if version != 1 or not state.windows:
            return
        st = self.stage
        if any(isinstance(k, tuple) or (k - st.offset_ms) % st.hop_ms for k in state.windows):
            return
        raise SnapshotError(
            f"{st.path}: cannot resume this $hoppingWindow from an unversioned (version 1) snapshot: "
            "it may hold whole windows (written before hopping windows were kept as panes) or panes, "
            f"and they cannot be told apart; {RESTART}"
        )


class SessionWindows(WindowKind):
    """``$sessionWindow``: per ``partitionBy`` value, runs of events less than ``gap``
    apart; two sessions merge when an event falls strictly within ``gap`` of both."""

    layout = "session"
    one_bucket = True
    holdable = False

    def __init__(self, plan: WindowPlan) -> None:
        super().__init__(plan)
        st = self.stage
        self.partition_by: Expr = compile_expr(st.partition_by, Ctx(f"{st.path}.partitionBy"))

    def assign(self, t: int) -> list[int]:
        return [t]  # a session starts (or extends one) at the event itself

    def missed(self, t: int, wm: int) -> list[int]:
        st = self.stage
        return [t] if t + st.gap_ms + st.allowed_lateness_ms <= wm else []

    def fold(self, recs: list[Rec], dlq: DlqFn, keep: LateDocs | None = None) -> Partials:
        """``{0: {partition key: [Session, ...]}}``: the batch's sessions per partition.
        With ``keep``, each session's documents go there under :class:`SessionDoc` keys
        (their event times), for :meth:`late_docs`."""
        st, plan = self.stage, self.plan
        gap = st.gap_ms
        by_key: dict[Any, tuple[Any, list[Rec]]] = {}
        for rec in recs:
            t, wm = rec[1]
            missed = self.missed(t, wm)
            if missed:
                dlq_late(dlq, rec[0], missed)
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
        sessions_out: dict[Any, list[Session]] = {}
        for hk, (pval, prs) in by_key.items():
            prs.sort(key=lambda r: r[1][0])
            runs: list[list[Rec]] = []
            for r in prs:
                if runs and r[1][0] - runs[-1][-1][1][0] < gap:
                    runs[-1].append(r)
                else:
                    runs.append([r])
            for run in runs:
                start, last = run[0][1][0], run[-1][1][0]
                v = {META: meta_for(start, last + gap, pval)}
                kd = inner_dlq(dlq, SessionDoc(hk, start), keep)
                if keep is not None:
                    kept = keep.setdefault(0, {})
                    for r in run:
                        kept.setdefault(SessionDoc(hk, r[1][0]), []).append(r[0])
                rr = run_chain(plan.pre, run, kd, v) if plan.pre else run
                holder: Partials = {}
                plan._accumulate(holder, "s", rr, v, kd)
                payload: Table = holder.get(0, {}).get("s", [] if plan.group_id is None else {})
                sessions_out.setdefault(hk, []).append(Session(start, last, pval, payload))
        return {0: sessions_out} if sessions_out else {}

    def late_sessions(self, state: CloseState, partials: dict[Any, Any] | None) -> dict[SessionDoc, int]:
        """The sessions of ``partials`` that are late, ``{SessionDoc(partition, start): last}``:
        those whose end plus ``allowedLateness`` (``last + gap + allowedLateness``) the
        close step's watermark had reached, ``last <= closed_upto`` (:meth:`mark_closed`).
        Every document of one is late by ingest's own test (:meth:`missed`, ``t + gap +
        allowedLateness <= watermark``) at that watermark, whether or not an open session
        would take it in, as at ingest. A session partial with a later event counts whole:
        it cannot give back a document's share (docs/windows.md)."""
        closed = state.closed_upto
        return {SessionDoc(hk, p.start): p.last for hk, new_sessions in (partials or {}).items()
                for p in new_sessions if p.last <= closed}

    def late_docs(self, state: CloseState, docs: dict[Any, list[dict[str, Any]]],
                  partials: dict[Any, Any] | None = None) -> Missed:
        # Each document of a late session once, missing the session it would have
        # started, as ingest names it (missed: [t]).
        late = self.late_sessions(state, partials)
        if not late:
            return []
        spans: dict[Any, list[tuple[int, int]]] = {}
        for (hk, start), last in late.items():
            spans.setdefault(hk, []).append((start, last))
        found: Missed = []
        for key, kdocs in docs.items():
            hk, t = key
            if any(s <= t <= last for s, last in spans.get(hk, ())):
                found.extend((d, [t]) for d in kdocs)
        return found

    def closed_keys(self, state: CloseState, keys: Iterable[Any], partials: dict[Any, Any] | None = None) -> set[Any]:
        return set(self.late_sessions(state, partials)).intersection(keys)

    def mark_closed(self, state: CloseState, wm: int, lateness: int, upto: int | None = None) -> None:
        # closed_upto: sessions whose last event is at or below it had closed (``upto``,
        # the latest event time seen, bounds an idleTimeout close, which sessions lack).
        limit = wm - self.stage.gap_ms - lateness
        if upto is not None and upto < limit:
            limit = upto
        if limit > state.closed_upto:
            state.closed_upto = limit

    def merge(self, state: CloseState, partials: dict[Any, Any], late: LateFn, covered: Any = ()) -> None:
        gap = self.stage.gap_ms
        merge = self.plan.merge_payload
        late_ones = self.late_sessions(state, partials)
        for hk, new_sessions in partials.items():
            lst = state.sessions.setdefault(hk, [])
            for merged in new_sessions:
                ref = SessionDoc(hk, merged.start)
                if ref in late_ones:
                    # Its documents went to the DLQ one by one (late_docs) when they came
                    # with it; otherwise what is left of them, the partial result.
                    if ref not in covered:
                        late(merged.start, merged.payload, meta=meta_for(merged.start, merged.last + gap, merged.partition))
                    continue
                keep = []
                for s in lst:
                    if s.start < merged.last + gap and merged.start < s.last + gap:
                        # An event bridging two sessions merges them (docs/windows.md).
                        older, newer = (s, merged) if s.start <= merged.start else (merged, s)
                        merged = Session(min(s.start, merged.start), max(s.last, merged.last), older.partition,
                                         merge(older.payload, newer.payload))
                    else:
                        keep.append(s)
                keep.append(merged)
                keep.sort(key=lambda s: s.start)
                lst[:] = keep
            if not lst:
                del state.sessions[hk]

    def due(self, state: CloseState, wm: int | None, lateness: int) -> list[Any]:
        closed_by = self.stage.gap_ms + lateness
        return [(hk, s) for hk, lst in state.sessions.items() for s in lst if wm is None or s.last + closed_by <= wm]

    def close(self, state: CloseState, due: list[Any]) -> Closing:
        gap, sessions = self.stage.gap_ms, state.sessions
        gone = {id(s) for _, s in due}
        for hk in {hk for hk, _ in due}:
            remaining = [s for s in sessions[hk] if id(s) not in gone]
            if remaining:
                sessions[hk] = remaining
            else:
                del sessions[hk]
        return [(s.payload, meta_for(s.start, s.last + gap, s.partition)) for _, s in due]

    def open_starts(self, state: CloseState) -> list[int]:
        return [s.start for lst in state.sessions.values() for s in lst]

    def entries(self, state: CloseState) -> int:
        return sum(len(s.payload) for lst in state.sessions.values() for s in lst)

    def next_end(self, state: CloseState) -> int | None:
        return None  # processing-time sessions close as batches arrive (as before)


def _hopping(plan: WindowPlan) -> WindowKind:
    """Panes when no result before the window's end depends on which window a document
    is in: a ``$group`` of order-free accumulators, and no ``$meta`` read up to it."""
    inner = plan.stage.pipeline
    gi = next((i for i, s in enumerate(inner) if isinstance(s, ir.GroupStage)), None)
    by_pane = gi is not None and all(a.name in ORDER_FREE for a in plan.accs) and not _reads_meta(inner[: gi + 1])
    return HoppingPanes(plan) if by_pane else HoppingWindows(plan)


KINDS: dict[str, Callable[[WindowPlan], WindowKind]] = {
    "tumbling": TumblingWindows,
    "hopping": _hopping,
    "session": SessionWindows,
}


def window_kind(plan: WindowPlan) -> WindowKind:
    return KINDS[plan.stage.kind](plan)


def _reads_meta(obj: Any) -> bool:
    """Whether an IR fragment uses ``$meta`` anywhere (a window bound could be read)."""
    if isinstance(obj, dict):
        return "$meta" in obj or any(_reads_meta(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return any(_reads_meta(v) for v in obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return any(_reads_meta(getattr(obj, f.name)) for f in dataclasses.fields(obj))
    return False
