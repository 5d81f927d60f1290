"""The compiled plan of a pipeline and the per-partition ingest operator.

:class:`Plan` holds every closure (timeField, stateless stages, window) compiled once.
:class:`IngestLogic` runs per source partition on whole batches: it evaluates
``timeField``, stamps the ``_ts``/``_stream_meta`` envelope (docs/semantics.md#sources), tracks the
partition's watermark (the largest event time seen; it never goes back, docs/windows.md),
runs the stateless stages and, with a window, folds the batch into partials.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import repeat
from operator import contains, setitem
from typing import Any

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from translator import ir, metrics, partition
from translator.contracts import (
    SOURCE_DLQ_KEY,
    DeferredMetaBatch,
    IdleBatch,
    ProgressBatch,
    RawBatch,
    dlq_document,
    now_ms,
)
from translator.fast_stateless import FastStateless
from translator.fastpath import (
    FALLBACK_KEEP_DOCS,
    DateCache,
    FastGroupFold,
    Getter,
    IsoMillis,
    time_getter,
)
from translator.mql.expr import EMPTY_VARS, Ctx, Expr, ExprError, closure, compile_expr
from translator.mql.values import bson_type, datetime_to_ms, ms_to_datetime
from translator.options import ProcessorOptions, fast_paths
from translator.stages import Rec, Step, compile_steps, failure_reason, run_chain, run_chain_docs
from translator.window_state import IngestSnapshot, WindowMsg, dump_held, load_ingest_late
from translator.windows import ACTIVE, DLQ, IDLE, NEG_INF, OUT, QUIET, WIN, WindowPlan

Emission = tuple[int, Any]
# (raw batch, partition watermark ms, the stamp's field name when the documents lack it):
# the fast paths observe documents without the ``_ts`` stamp the reference path writes
# first, and name its field, so that ``inputMessageSize`` counts the same either way.
Observer = Callable[[RawBatch, int, "str | None"], None]


def _quiet_clock() -> float:
    """Seconds on the clock that tells a quiet partition (``idleTimeout``): the monotonic
    wall clock; tests that script the close step's clock script this one with it."""
    return time.monotonic()


@dataclass
class Plan:
    pipeline: ir.Pipeline
    options: ProcessorOptions
    time_expr: Expr | None
    pre: tuple[Step, ...]
    window: WindowPlan | None
    after: tuple[Step, ...]  # stateless stages after the window, run on its results
    observer: Observer | None = None
    fast_fold: FastGroupFold | None = None  # whole-batch ingest for the common window shape
    fast_time: tuple[Getter, IsoMillis] | None = None  # whole-batch timeField
    fast_stateless: FastStateless | None = None  # the stages without a window, unstamped

    def __post_init__(self) -> None:
        if not self.options.fast_paths:
            return  # the reference path only (see ProcessorOptions.fast_paths)
        src = self.pipeline.source
        self.fast_time = time_getter(src) if src.time_field is not None else None
        if self.window is not None:
            wi = next(i for i, s in enumerate(self.pipeline.stages) if isinstance(s, ir.WindowStage))
            self.fast_fold = FastGroupFold.build(self.window, src, self.pre, self.pipeline.stages[:wi])
        else:
            self.fast_stateless = FastStateless.build(self.pre, src, self.fast_time)

    @staticmethod
    def compile(pipeline: ir.Pipeline, options: ProcessorOptions) -> Plan:
        """Compile every closure once; with ``fastPaths: false``, no accelerator."""
        with fast_paths(options.fast_paths):
            return Plan._compile(pipeline, options)

    @staticmethod
    def _compile(pipeline: ir.Pipeline, options: ProcessorOptions) -> Plan:
        src = pipeline.source
        time_expr = closure(compile_expr(src.time_field, Ctx(f"{src.path}.timeField"))) if src.time_field is not None else None
        stages = pipeline.stages
        wi = next((i for i, s in enumerate(stages) if isinstance(s, ir.WindowStage)), None)
        if wi is None:
            return Plan(pipeline, options, time_expr, compile_steps(stages), None, ())
        wstage = stages[wi]
        assert isinstance(wstage, ir.WindowStage)
        return Plan(
            pipeline,
            options,
            time_expr,
            compile_steps(stages[:wi]),
            WindowPlan.compile(wstage, options.name, options.window_buckets),
            compile_steps(stages[wi + 1 :]),
        )

    def dlq_doc(self, reason: str, doc: Any, **extra: Any) -> dict[str, Any]:
        return dlq_document(reason, doc, self.options.name, **extra)


class IngestLogic:
    """Per source partition; its state is the partition's watermark in ms."""

    def __init__(self, plan: Plan, part: str, resume: int | None) -> None:
        self.plan = plan
        self.part = part
        self.wm = NEG_INF if resume is None else resume
        src = plan.pipeline.source
        self.ts_field = src.ts_field_name
        self.time_path = f"{src.path}.timeField"
        self.windowed = plan.window is not None
        self.processing = plan.window is not None and plan.window.stage.boundary == "processingTime"
        self.buckets = plan.window.buckets if plan.window is not None else 1
        self.fast = None if self.processing else plan.fast_fold
        self.fast_time = None if self.processing else plan.fast_time
        self.dates = DateCache()
        w = plan.window
        # Event-time tumbling/hopping $group partials are held here and sent to the close
        # step in fewer, larger messages (see flush and _IngestPartition.next_batch).
        self.hold = w is not None and not self.processing and w.holdable
        self.held: dict[int, dict[Any, Any]] = {}
        self.active = False  # documents since the last message to the close step
        idle = w.stage.idle_timeout_ms if w is not None else None
        # An idleTimeout closes windows after that long without activity: hold well
        # within it, so holding never looks like idleness.
        self.hold_s = min(HOLD_MS, idle // 4 if idle is not None else HOLD_MS) / 1000
        # Hold a window's partials until this partition's watermark closes the window
        # (flush). The reference path (fastPaths: false) keeps the simpler policy: every
        # held partial goes out with every message, at least every HOLD_MS. So does a
        # window with an idleTimeout: the close step then closes windows by the wall
        # clock, after idleTimeout without a message from any partition, whatever this
        # partition's watermark (a stalled poll must not leave a window's partials here).
        self.until_closable = self.hold and plan.options.fast_paths and idle is None
        self.after_idle = False  # see process(IdleBatch)
        # After an idle marker the next KEEP_DOCS documents travel with their partials
        # (kept: {bucket: {key: [document]}}, held as long as the partials): the close step
        # sends those of windows it already closed to the DLQ one by one (docs/windows.md).
        self.can_keep = w is not None and not self.processing and w.kind.keeps_docs
        self.keep_docs = 0
        # So does a window's idleTimeout: the close step may close windows by the wall
        # clock while this partition is quiet. Half the timeout without documents (the
        # hold, at most a quarter, and the trip stay within the other half) arms it.
        self.quiet_s = idle / 2000 if idle is not None and self.can_keep else None
        self.last_docs = _quiet_clock()
        self.kept: dict[int, dict[Any, list[dict[str, Any]]]] = {}
        if w is not None and self.hold:
            self.first_window: Callable[[Any], int] = w.kind.first_window
            self.closed_by = w.stage.interval_ms + w.stage.allowed_lateness_ms

    def keep(self, partials: dict[int, Any], docs: dict[int, dict[Any, list[dict[str, Any]]]] | None = None) -> None:
        """Merge a batch's partials into the held ones (same window tables the close step
        would merge them into, so nothing changes but how often messages are sent), and
        the documents behind them (``docs``, see :attr:`kept`) into the kept ones."""
        assert self.plan.window is not None
        merge = self.plan.window.merge_payload
        held = self.held
        for b, keyed in (docs or {}).items():
            kb = self.kept.setdefault(b, {})
            for key, lst in keyed.items():
                kb.setdefault(key, []).extend(lst)
        for b, panes in partials.items():
            hb = held.get(b)
            if hb is None:
                held[b] = panes
                continue
            for key, table in panes.items():
                cur = hb.get(key)
                hb[key] = table if cur is None else merge(cur, table)
        self.active = True

    def flush(self, everything: bool = False) -> list[Emission]:
        """Send the partition's watermark to every bucket with the held partials that are
        due: those of every window that watermark closes (:meth:`_take_due`), or all of
        them with ``everything`` or the reference policy (:attr:`until_closable` False)."""
        activity = ACTIVE if self.active else QUIET
        self.active = False
        if everything or not self.until_closable or self._over_cap():
            send, self.held = self.held, {}
        else:
            send = self._take_due()
        # Documents are kept only while until_closable is False (after an idle marker, or
        # with idleTimeout): everything held goes out here, so with its documents.
        docs, self.kept = self.kept, {}
        if metrics.ENABLED and self.hold:
            self._report()
        return [(WIN, (str(b), WindowMsg(self.part, self.wm, send.get(b), activity, docs.get(b))))
                for b in range(self.buckets)]

    def _take_due(self) -> dict[int, dict[Any, Any]]:
        """Take out the held partials of windows the partition's watermark closes.

        The close step closes a window once the minimum of the partitions' watermarks is
        at or past ``end + allowedLateness`` (docs/windows.md). Sending a window's
        partials no later than with the first watermark of this partition that reaches
        that point means the close step has them before it can close the window; a key
        counts in windows from :meth:`WindowKind.first_window` on, so it goes out with
        the first of them to close (a hopping pane's later windows get later documents
        as a new :class:`PaneKey`, which is held again). A later document of a window
        whose partials went out is late by this partition's watermark (DLQ at ingest),
        so nothing of that window is held after it."""
        limit = self.wm - self.closed_by  # window s is closable once s <= limit
        first = self.first_window
        due: dict[int, dict[Any, Any]] = {}
        for b, tables in list(self.held.items()):
            keys = [k for k in tables if first(k) <= limit]
            if keys:
                due[b] = {k: tables.pop(k) for k in keys}
                if not tables:
                    del self.held[b]
        return due

    def _report(self) -> None:
        """The held partials in the window's state figures (``operatorStats`` stateSize
        and open windows): they are open-window state the close step does not have yet.
        Each partition reports its own, as each close bucket does (metrics.window_state)."""
        assert self.plan.window is not None
        starts: set[int] = set()
        entries = 0
        for tables in self.held.values():
            for key, table in tables.items():
                starts.update(self.plan.window.kind.window_starts(key))
                entries += len(table)
        if starts:
            metrics.set_window_state(id(self), self.plan.window.stage.path, len(starts), entries, min(starts), max(starts))
        else:
            metrics.drop_window_state(id(self))

    def _over_cap(self) -> bool:
        """Whether the held partials exceed ``HOLD_ENTRIES`` group entries (then they all
        go out, as in the reference policy): it bounds the memory and snapshot size a
        partition adds for windows that have many groups and close late."""
        return sum(len(t) for tables in self.held.values() for t in tables.values()) > HOLD_ENTRIES

    @property
    def pending(self) -> bool:
        """Whether the close step lacks something of this partition's (documents seen
        since the last message, or held partials)."""
        return self.active or bool(self.held) or bool(self.kept)

    def process(self, batch: RawBatch) -> list[Emission]:
        plan = self.plan
        if type(batch) is IdleBatch:
            # Held partials go out before the partition is declared idle. While it is
            # idle the close step may close windows past its watermark; partials of those
            # it sends later are late there (CloseLogic._late_partial). To send them as
            # soon as before, the partition keeps the HOLD_MS policy from now on.
            flushed = self.flush(everything=True) if self.pending else []
            self.until_closable = False
            self.after_idle = True
            if self.can_keep:
                self.keep_docs = KEEP_DOCS
            return [*flushed, *((WIN, (str(b), WindowMsg(self.part, self.wm, None, IDLE))) for b in range(self.buckets))]
        if type(batch) is ProgressBatch:
            return self.progress(batch.ms)
        if not batch:
            return []
        if self.quiet_s is not None:
            now = _quiet_clock()
            if now - self.last_docs >= self.quiet_s:
                self.keep_docs = KEEP_DOCS
            self.last_docs = now
        keeping = self.keep_docs > 0 or bool(self.kept)
        if keeping and self.fast is not None and metrics.ENABLED:
            assert plan.window is not None
            metrics.fallback(plan.window.stage.path, plan.window.stage.path.rsplit(".", 1)[-1], FALLBACK_KEEP_DOCS)
        if self.fast is not None and not keeping:
            into: dict[int, Any] = self.held if self.hold else {}
            wm = self.fast.run(batch, self.wm, into)
            if wm is not None:
                self.wm = wm
                if plan.observer is not None:
                    plan.observer(batch, wm, self.ts_field)
                if self.hold:
                    self.active = True
                    return []
                return [(WIN, (str(b), WindowMsg(self.part, wm, into.get(b), ACTIVE))) for b in range(self.buckets)]
        if plan.fast_stateless is not None:
            done = plan.fast_stateless.run(batch, self.wm)
            if done is not None:
                docs, self.wm = done
                if plan.observer is not None:
                    plan.observer(batch, self.wm, self.ts_field)
                return [(OUT, docs)] if docs else []
        if type(batch) is DeferredMetaBatch:
            batch.complete()  # the general path and the DLQ see whole documents
        dlq: list[dict[str, Any]] = []

        def dlq_fn(reason: str, doc: Any, **extra: Any) -> None:
            dlq.append(plan.dlq_doc(reason, doc, **extra))

        recs = self._stamp(batch, dlq_fn)
        if plan.observer is not None:
            plan.observer(batch, self.wm, None)
        emissions: list[Emission] = []
        partition.enter(self.part)  # per-partition stage state ($cachedLookup's cache)
        if plan.window is None:
            docs = run_chain_docs(plan.pre, recs, dlq_fn) if plan.pre else [d for d, _ in recs]
            if docs:
                emissions.append((OUT, docs))
        else:
            if plan.pre:
                recs = run_chain(plan.pre, recs, dlq_fn)
            kept: dict[int, Any] | None = {} if keeping else None
            partials = plan.window.fold(recs, dlq_fn, kept)
            if kept is not None:
                self.keep_docs = max(0, self.keep_docs - len(recs))
            if self.hold:
                self.keep(partials, kept)
            else:
                for b in range(self.buckets):
                    docs_b = kept.get(b) if kept else None
                    emissions.append((WIN, (str(b), WindowMsg(self.part, self.wm, partials.get(b), ACTIVE, docs_b))))
        partition.enter(None)
        if dlq:
            emissions.append((DLQ, dlq))
        return emissions

    def progress(self, ms: int) -> list[Emission]:
        """The source's promise that nothing later has a source time below ``ms``: it
        moves the watermark only where the event time is the source time (no
        ``timeField``; a ``timeField`` value is unbounded), and held partials go out with it."""
        if self.plan.time_expr is not None or self.processing or ms <= self.wm:
            return []
        self.wm = ms
        return self.flush() if self.windowed else []

    def _stamp(self, batch: RawBatch, dlq_fn: Callable[..., None]) -> list[Rec]:
        """Evaluate timeField, add the envelope, and advance the watermark per document."""
        if self.fast_time is not None:
            fast = self._stamp_batch(batch, self.fast_time)
            if fast is not None:
                return fast
        time_expr = self.plan.time_expr
        ts_field = self.ts_field
        windowed, processing = self.windowed, self.processing
        wm = self.wm
        recs: list[Rec] = []
        now = now_ms() if processing else 0
        for doc, src_t in batch:
            bad = doc.get(SOURCE_DLQ_KEY)
            if bad is not None:
                dlq_fn(bad["reason"], bad["doc"])
                continue
            if processing:
                t = now
                value = ms_to_datetime(t)
            elif time_expr is not None:
                try:
                    value = time_expr(doc, EMPTY_VARS)
                    if not isinstance(value, datetime):
                        raise ExprError("timeField", f"must evaluate to a date, got {bson_type(value)}")
                    t = datetime_to_ms(value)
                    if value.microsecond % 1000 or value.tzinfo is not UTC:
                        value = ms_to_datetime(t)  # BSON dates: UTC, millisecond precision
                except Exception as exc:
                    dlq_fn(failure_reason("$source", self.time_path, exc), doc)
                    continue
            else:
                t = src_t
                value = ms_to_datetime(t)
            meta = doc.pop("_stream_meta", None)
            doc[ts_field] = value
            if meta is not None:
                doc["_stream_meta"] = meta
            if windowed:
                recs.append((doc, (t, wm)))
            else:
                recs.append((doc, t))
            if t > wm:
                wm = t
        self.wm = wm
        return recs


    def _stamp_batch(self, batch: RawBatch, fast: tuple[Getter, IsoMillis]) -> list[Rec] | None:
        """:meth:`_stamp` for a batch whose timestamps all parse through the caches of
        :class:`~translator.fastpath.IsoMillis` (None otherwise, before any change)."""
        docs = [d for d, _ in batch]
        try:
            ms = fast[1].millis(fast[0](docs))
        except (KeyError, TypeError):
            return None
        if ms is None:
            return None
        ts_field = self.ts_field
        dates = self.dates.dates(ms)
        if any(map(contains, docs, repeat("_stream_meta"))):
            for doc, value in zip(docs, dates, strict=True):
                meta = doc.pop("_stream_meta", None)
                doc[ts_field] = value
                if meta is not None:
                    doc["_stream_meta"] = meta
        else:
            # No envelope to move after ``_ts``: stamp every document in one C loop.
            deque(map(setitem, docs, repeat(ts_field), dates), maxlen=0)
        wm = self.wm
        if not self.windowed:
            hi = max(ms)
            if hi > wm:
                self.wm = hi
            return list(zip(docs, ms, strict=True))
        recs: list[Rec] = []
        append = recs.append
        for doc, t in zip(docs, ms, strict=True):
            append((doc, (t, wm)))
            if t > wm:
                wm = t
        self.wm = wm
        return recs


HOLD_MS = 100  # how long a partition may wait before sending its watermark (and due partials)
HOLD_ENTRIES = 100_000  # held group entries past which a partition sends them all (IngestLogic._over_cap)
# Documents a partition keeps beside its partials after an idle marker (IngestLogic.kept):
# the span in which a document of a window closed while the partition was idle goes to the
# DLQ on its own; later ones go as the group's partial result. Kept documents live only
# until the next message (HOLD_MS), so memory holds at most one message's documents.
KEEP_DOCS = 100_000
POLLS_PER_STEP = 8  # source polls per Bytewax step while the source is busy
BUSY: Emission = (-1, None)  # an emission every step drops (its tag is no step's)


class _IngestPartition(StatefulSourcePartition[Emission, tuple[Any, ...]]):
    def __init__(self, inner: StatefulSourcePartition[Any, Any], logic: IngestLogic) -> None:
        self.inner = inner
        self.logic = logic
        self.held_since = 0.0
        self.finished = False
        self.failure: BaseException | None = None

    def next_batch(self) -> list[Emission]:
        """Ingest what the source has; send the watermark and due window partials.

        Sending partials after every batch costs the close step one merge per group per
        batch and, across processes, one pickled message per bucket per batch. So a
        partition folds its batches into held partials and sends its watermark at least
        every ``HOLD_MS`` and whenever a poll brings no documents, with the held partials
        of the windows that watermark closes (:meth:`IngestLogic.flush`); the rest stay
        held until it closes them, and all go out before an idle marker and at end of
        input. Holding cannot make the close step miss them: the watermark it knows for
        this partition is the one sent last, and everything held belongs to windows that
        watermark does not close (docs/windows.md: windows close on the processor
        watermark). Most groups of a window are then created once, here, and taken over
        by the close step without a merge.
        """
        logic = self.logic
        if self.finished:
            raise StopIteration
        if self.failure is not None:
            failure, self.failure = self.failure, None
            raise failure
        out: list[Emission] = []
        docs = got = 0
        for poll in range(POLLS_PER_STEP):
            try:
                items = self.inner.next_batch()
            except StopIteration:
                if poll == 0 and not logic.pending:
                    raise
                # Send what this step has and everything held; end on the next call.
                self.finished = True
                return [*out, *(logic.flush(everything=True) if logic.pending else ())]
            except Exception as exc:
                if poll == 0:
                    raise
                # Return what the earlier polls of this step produced; the source's
                # error surfaces, unchanged, on the next call.
                self.failure = exc
                got = 0
                break
            got = 0
            for _key, batch in items:
                got += len(batch)
                out.extend(logic.process(batch))
            docs += got
            # A busy source (data now, no wake-up time) is polled again in this step:
            # every Bytewax step has a fixed cost, large on a cluster.
            if not got or self.inner.next_awake() is not None:
                break
        if logic.active:
            now = time.monotonic()
            if not self.held_since:
                self.held_since = now
            # A source that asks to be polled later (rate-limited, quiet) is not busy:
            # send now rather than wait for it.
            if not got or now - self.held_since >= logic.hold_s or self.inner.next_awake() is not None:
                out.extend(logic.flush())
                self.held_since = 0.0
        if docs and not out:
            # Bytewax backs off before polling again a partition that returned nothing;
            # a busy partition that is only holding says so with a marker item instead.
            out.append(BUSY)
        return out

    def next_awake(self) -> datetime | None:
        return self.inner.next_awake()

    def snapshot(self) -> tuple[Any, ...]:
        # Source position, watermark and held partials are snapshotted together, so a
        # resume neither loses nor repeats a document's contribution.
        # The held partials are pickled now: they keep changing after this call, and
        # Bytewax may serialise the snapshot later.
        logic = self.logic
        held = dump_held(logic.held, logic.kept) if logic.held or logic.kept else None
        return IngestSnapshot(self.inner.snapshot(), logic.wm, held, logic.after_idle, logic.keep_docs)

    def close(self) -> None:
        self.inner.close()


class IngestSource(FixedPartitionedSource[Emission, tuple[Any, ...]]):
    """Runs the ingest step inside each source partition, on the worker that reads it.

    Keying a separate step by partition would let Bytewax hash partitions to other
    workers and pickle every raw batch across processes; here raw documents never leave
    their worker, and only window partials (or outputs) move on.
    """

    def __init__(self, inner: FixedPartitionedSource[Any, Any], plan: Plan) -> None:
        self.inner = inner
        self.plan = plan

    def list_parts(self) -> list[str]:
        return self.inner.list_parts()

    def build_part(self, step_id: str, for_part: str, resume_state: tuple[Any, ...] | None) -> _IngestPartition:
        inner_state, wm, held, kept = (None, None, None, None) if resume_state is None else load_ingest_late(resume_state)
        part = self.inner.build_part(step_id, for_part, inner_state)
        logic = IngestLogic(self.plan, for_part, wm)
        if held:
            logic.held, logic.active = held, True
        if kept:
            logic.kept, logic.active = kept, True
        if isinstance(resume_state, IngestSnapshot) and resume_state.after_idle:
            logic.until_closable, logic.after_idle = False, True
            logic.keep_docs = resume_state.keep_docs if logic.can_keep else 0
        return _IngestPartition(part, logic)
