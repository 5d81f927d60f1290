"""Stateless pipelines over whole batches without stamping ``_ts`` on every document.

The general ingest (:meth:`translator.runtime.IngestLogic._stamp`) writes the event time
into each input document as ``_ts`` (docs/semantics.md#sources) before the stages run.
When the stages are one generated span (:mod:`translator.codegen`) whose output is a new
document (``$project``), the stamp is only ever seen through the span's own reads of
``$_ts``, so :func:`translator.codegen.compile_unstamped` reads the record's time there
instead, and the input documents are left untouched (benchmark workload C: the stamp
was about a quarter of the run). The dates themselves cost one dict lookup per
document in a busy stream (see :meth:`FastStateless._times`).

All or nothing per batch, like :mod:`translator.fastpath`: an undecodable source record,
a ``timeField`` the batch parser cannot vouch for, or any exception in the generated
code hands the batch, unchanged, to the general path, which stamps it and runs the
stages' closures (so DLQ entries and reasons are the general path's own). Fallbacks are
counted in the first stage's ``operatorStats.fastPathFallbacks``, and so is the end of
the span's typed loop (:class:`translator.codegen.Switch`: written for the value types
the first batch shows; documents of other types run the loop with MongoDB's every type
check, and a stream whose types change goes back to that loop for good).
"""

from __future__ import annotations

import time
from datetime import datetime
from itertools import repeat
from operator import contains, itemgetter
from typing import Any

from translator import ir, metrics
from translator.codegen import Switch, compile_unstamped
from translator.contracts import SOURCE_DLQ_KEY, RawBatch
from translator.fastpath import FALLBACK_SOURCE_ERROR, FALLBACK_TIME, DateCache, Getter, IsoMillis

_first, _second = itemgetter(0), itemgetter(1)
FALLBACK_RETYPED = "typed loop dropped: values of other types than observed"


class FastStateless:
    """The stages of a pipeline without a window, on a batch of unstamped documents."""

    def __init__(self, steps: tuple[Any, ...], fn: Switch, reads_ts: bool, times: tuple[Getter, IsoMillis] | None) -> None:
        self.steps = steps
        self.fn = fn
        self.reads_ts = reads_ts
        self.times = times
        self.dates = DateCache()
        self.path = steps[0].path
        self.name = steps[0].name

    @staticmethod
    def build(steps: tuple[Any, ...], src: ir.SourceStage, times: tuple[Getter, IsoMillis] | None) -> FastStateless | None:
        """None unless ``steps`` are one generated span (see :func:`_attach_chains` in
        translator/stages.py) that codegen can write over unstamped documents, and the
        event time comes from the source or a ``timeField`` the batch parser reads."""
        from translator.stages import FILTER

        if not steps or (src.time_field is not None and times is None):
            return None
        first = steps[0]
        if first.chain is None or first.chain_len != len(steps) or first.chain.fns != tuple(st.fn for st in steps):
            return None
        query = first.query if first.kind == FILTER else None
        got = compile_unstamped(query, [st.spec for st in (steps[1:] if query is not None else steps)], src.ts_field_name)
        if got is None:
            return None
        return FastStateless(steps, got[0], got[1], times)

    def run(self, batch: RawBatch, wm: int) -> tuple[list[Any], int] | None:
        """The batch's output documents and the partition's new watermark, or None (the
        batch untouched) for the general path."""
        got = self._run(batch, wm)
        if isinstance(got, str):
            if metrics.ENABLED:
                metrics.fallback(self.path, self.name, got)
            return None
        return got

    @staticmethod
    def _markers(docs: list[Any]) -> bool:
        return any(map(contains, docs, repeat(SOURCE_DLQ_KEY)))

    def _run(self, batch: RawBatch, wm: int) -> tuple[list[Any], int] | str:
        t0 = time.perf_counter() if metrics.ENABLED else 0.0
        docs = list(map(_first, batch))
        dates: list[datetime] | None = None
        if self.times is None:
            if self._markers(docs):
                return FALLBACK_SOURCE_ERROR
            ms = list(map(_second, batch))
            hi = max(ms)
            if self.reads_ts:
                dates = self.dates.dates(ms)
        else:
            # A source's undecodable record ({SOURCE_DLQ_KEY: ...}, its only field) has
            # no timeField string: the batch parser refuses it, so look for one only then.
            got = self._times(docs)
            if got is None:
                return FALLBACK_SOURCE_ERROR if self._markers(docs) else FALLBACK_TIME
            dates, hi = got
        fn = self.fn
        try:
            out = fn(docs, dates)
        except Exception as exc:
            return f"generated code: {type(exc).__name__}"
        if fn.retyped:  # the typed loop was dropped (codegen.Switch): counted once
            fn.retyped = False
            if metrics.ENABLED:
                metrics.fallback(self.path, self.name, FALLBACK_RETYPED)
        if t0:
            # Only a leading $match drops documents: in, out per stage, as run_chain counts.
            n_in, n_out = len(docs), len(out)
            share = (time.perf_counter() - t0) / len(self.steps)
            for k, step in enumerate(self.steps):
                metrics.record(step.path, step.name, n_in if k == 0 else n_out, n_out, 0, share)
        return out, hi if hi > wm else wm

    def _times(self, docs: list[Any]) -> tuple[list[datetime] | None, int] | None:
        """The documents' ``_ts`` dates (None if the span does not read them) and the
        largest time, or None if a ``timeField`` is not a plain ISO date string.

        Busy streams repeat timestamps: while they do (:attr:`IsoMillis.dedupe`), each
        distinct string gets its time and date once, and each document one dict lookup
        for its date (the watermark is the largest distinct time). Else every string is
        parsed and dated, as the stamp does."""
        assert self.times is not None
        get, iso = self.times
        try:
            strs = get(docs)
        except (KeyError, TypeError):
            return None
        if iso.dedupe:
            got = iso.distinct(strs)
            if got is None:
                return None
            table, ms = got
            if not self.reads_ts:
                return None, max(ms)
            table.update(zip(list(table), self.dates.dates(ms), strict=True))
            return list(map(table.__getitem__, strs)), max(ms)
        each = iso.millis(strs)
        if each is None:
            return None
        return (self.dates.dates(each) if self.reads_ts else None), max(each)
