"""Batch-level fast paths for the common shapes of ASP pipelines.

The general ingest path (:mod:`translator.runtime`, :meth:`WindowPlan.fold`) handles
every document on its own: evaluate ``timeField``, stamp ``_ts``, check lateness, then
evaluate ``_id`` and each accumulator argument. For the shape most ASP pipelines have
(the seed's: ``timeField: {$dateFromString: {dateString: "$field"}}``, a
``$tumblingWindow``/``$hoppingWindow`` whose pipeline is ``$group`` on field paths), the
same results come from whole-batch steps that run in C: ``map``/``itemgetter`` pull the
fields out of every document, the timestamps parse through two small caches, and a batch
is checked for lateness with one ``min``/``max``.

Every fast step is *all or nothing* for a batch: the moment anything is unusual (a
missing field, a non-dict along a path, a string the caches cannot vouch for, a late
document, a group key type that needs MongoDB's number/bool rules) it returns ``None``
and the general path processes the batch, so DLQ entries, reasons and results are the
general path's own. Nothing is mutated before that decision.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from itertools import compress, repeat
from math import isnan
from operator import add, call, contains, itemgetter
from typing import Any

from translator import ir, metrics
from translator.accumulators import AccSpec, IntColumn
from translator.contracts import SOURCE_DLQ_KEY
from translator.mql.expr import EMPTY_VARS, const_value
from translator.mql.values import EPOCH, MISSING, datetime_to_ms

Getter = Callable[[list[Any]], list[Any]]

_PREFIX = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")
_SUFFIX = re.compile(r"(?:\.\d{1,9})?(?:Z|[+-]\d\d(?::?\d\d)?)?")
_CACHE_LIMIT = 1 << 16
_ZERO = "2000-01-01T00:00:00"


def field_getter(path: str) -> Getter | None:
    """A batch getter for ``"$a.b.c"``: ``list(map(itemgetter("c"), map(itemgetter("b"), ...)))``.

    Only dict intermediates and present fields get through: ``itemgetter`` raises
    KeyError for a missing field and TypeError for an array or scalar along the path,
    the cases where MQL path semantics (missing, array traversal) differ from plain
    lookups, and the caller falls back to the general path.
    """
    parts = field_parts(path)
    if parts is None:
        return None
    getters = [itemgetter(p) for p in parts]
    if len(getters) == 1:
        g0 = getters[0]
        return lambda docs: list(map(g0, docs))
    if len(getters) == 2:
        g0, g1 = getters
        return lambda docs: list(map(g1, map(g0, docs)))

    def deep(docs: list[Any]) -> list[Any]:
        it: Any = docs
        for g in getters:
            it = map(g, it)
        return list(it)

    return deep


def field_parts(path: Any) -> tuple[str, ...] | None:
    """``"$a.b"`` -> ``("a", "b")``; None for anything but a plain field path."""
    if not isinstance(path, str) or not path.startswith("$") or path.startswith("$$"):
        return None
    parts = path[1:].split(".")
    if not all(parts) or any(p.startswith("$") for p in parts):
        return None
    return tuple(parts)


class IsoMillis:
    """Batch ``$dateFromString`` (no format/timezone) for ISO-8601 strings.

    A timestamp ``2024-07-26T13:20:00.881+00:00`` is its second (``...T13:20:00``) plus
    its fraction and offset (``.881+00:00``). Consecutive events share the second and
    there are few distinct suffixes, so both halves come from dicts filled by the
    engine's own ``$dateFromString`` parser: each half is validated by a strict pattern
    before it enters a cache, and the sum equals the parser's result because ISO
    offsets are fixed minutes and BSON truncation to milliseconds commutes with them.
    """

    def __init__(self, parse: Callable[[str], datetime]) -> None:
        self.parse = parse
        self.prefix: dict[str, int] = {}
        self.suffix: dict[str, int] = {}
        self.zero = datetime_to_ms(parse(_ZERO + "Z"))
        self._pre = itemgetter(slice(None, 19))
        self._suf = itemgetter(slice(19, None))
        self.dedupe = True

    def millis(self, strs: list[Any]) -> list[int] | None:
        """Each string's milliseconds, or None if any string is not a plain ISO date."""
        if self.dedupe:
            # Busy streams repeat timestamps (many events per millisecond): parse each
            # distinct string once. ``fromkeys`` hashes every string once (the hash is
            # then cached in the string), so the final lookups are cheap.
            try:
                table: dict[Any, int] = dict.fromkeys(strs, 0)
            except TypeError:
                return None
            uniq = list(table)
            ms = self._split(uniq)
            if ms is None:
                return None
            # Whether to keep deduplicating: only while it saves work.
            self.dedupe = len(uniq) * 2 < len(strs)
            table.update(zip(uniq, ms, strict=True))
            return list(map(table.__getitem__, strs))
        ms = self._split(strs)
        if ms is not None:
            self.dedupe = len(set(strs)) * 2 < len(strs)
        return ms

    def distinct(self, strs: list[Any]) -> tuple[dict[Any, Any], list[int]] | None:
        """:meth:`millis` for a caller that needs one value per *distinct* string: the
        strings as the keys of a new dict (first-seen order, values None) and each key's
        milliseconds, in that order; None if any string is not a plain ISO date. Use it
        while deduplicating pays (:attr:`dedupe`), :meth:`millis` otherwise.
        :mod:`translator.fast_stateless` maps the keys to ``_ts`` dates, so a batch's
        dates and watermark cost one lookup per document, not a time and a date each."""
        try:
            table: dict[Any, Any] = dict.fromkeys(strs)
        except TypeError:
            return None
        ms = self._split(list(table))
        if ms is not None:
            self.dedupe = len(table) * 2 < len(strs)
        return None if ms is None else (table, ms)

    def _split(self, strs: list[Any]) -> list[int] | None:
        for _attempt in (0, 1):
            try:
                return list(
                    map(
                        add,
                        map(self.prefix.__getitem__, map(self._pre, strs)),
                        map(self.suffix.__getitem__, map(self._suf, strs)),
                    )
                )
            except (KeyError, TypeError):
                if _attempt or not self._learn(strs):
                    return None
        return None  # pragma: no cover - the loop always returns

    def _learn(self, strs: list[Any]) -> bool:
        """Add this batch's unseen halves to the caches; False if any cannot be vouched for."""
        prefix, suffix = self.prefix, self.suffix
        if len(prefix) > _CACHE_LIMIT:
            prefix.clear()
        if len(suffix) > _CACHE_LIMIT:
            suffix.clear()
        for s in strs:
            if type(s) is not str:
                return False
            p, x = s[:19], s[19:]
            try:
                if p not in prefix:
                    if not _PREFIX.fullmatch(p):
                        return False
                    prefix[p] = datetime_to_ms(self.parse(p + "Z"))
                if x not in suffix:
                    if not _SUFFIX.fullmatch(x):
                        return False
                    suffix[x] = datetime_to_ms(self.parse(_ZERO + x)) - self.zero
            except Exception:
                return False
        return True


_ONE_MS = timedelta(milliseconds=1)
_ONE_SECOND = timedelta(seconds=1)
_MS_DELTAS = tuple(_ONE_MS * i for i in range(1000))


class DateCache:
    """``_ts`` datetimes for millisecond times: one ``timedelta`` addition each, reusing
    the datetime of a millisecond already seen (documents often share one). A new
    millisecond is its second's datetime (one per second) plus one of 1,000 fixed
    ``timedelta``: exact, and about 4x cheaper than ``EPOCH + _ONE_MS * t``, whose
    multiplication goes through Python integers (benchmark workload C, callgrind)."""

    def __init__(self) -> None:
        self.cache: dict[int, datetime] = {}
        self.seconds: dict[int, datetime] = {}

    def dates(self, ms: list[int]) -> list[datetime]:
        cache = self.cache
        if len(cache) > _CACHE_LIMIT:
            cache.clear()
        try:
            return list(map(cache.__getitem__, ms))
        except KeyError:
            pass
        seconds = self.seconds
        if len(seconds) > _CACHE_LIMIT:
            seconds.clear()
        for t in set(ms).difference(cache):  # only the new milliseconds, found in C
            s, r = divmod(t, 1000)
            base = seconds.get(s)
            if base is None:
                base = seconds[s] = EPOCH + _ONE_SECOND * s
            cache[t] = base + _MS_DELTAS[r]
        return list(map(cache.__getitem__, ms))


def time_getter(src: ir.SourceStage) -> tuple[Getter, IsoMillis] | None:
    """The batch form of ``timeField`` when it is ``{$dateFromString: {dateString: "$f"}}``."""
    tf = src.time_field
    if not (isinstance(tf, dict) and len(tf) == 1 and isinstance(tf.get("$dateFromString"), dict)):
        return None
    spec = tf["$dateFromString"]
    if set(spec) != {"dateString"}:
        return None
    get = field_getter(spec["dateString"])
    if get is None:
        return None
    from translator.mql.operators.dates import parse_date_string

    return get, IsoMillis(parse_date_string)


# ---- windowed $group -------------------------------------------------------------------


# Why the group fast path handed a batch to the general path (operatorStats reasons).
FALLBACK_SOURCE_ERROR = "undecodable source record"
FALLBACK_TIME = "timeField not an ISO date string"
FALLBACK_LATE = "late document"
FALLBACK_FIELD = "missing field or not a document"
FALLBACK_GROUP_ID = "group id not a string, int or null"
FALLBACK_VALUE = "value an accumulator rejects"
FALLBACK_PRE = "a stage before the window raised"
FALLBACK_KEEP_DOCS = "partition resumed after idle: documents kept for the late check"


class FastGroupFold:
    """The ingest of a tumbling/hopping window whose pipeline starts with ``$group``
    on field paths, for whole batches (same partials as :meth:`WindowPlan.fold`)."""

    def __init__(self, plan: Any, times: tuple[Getter, IsoMillis] | None, gid: Getter | Any, values: list[Getter | Any]) -> None:
        self.wplan = plan
        st = plan.stage
        self.path = st.path
        self.name = st.path.rsplit(".", 1)[-1]
        self.times = times
        self.gid = gid  # a Getter, or a constant group id
        self.values = values  # per distinct accumulator argument: a Getter or a constant
        self.accs = plan.accs
        self.slot = plan.slot
        self.buckets = plan.buckets
        self.pane = plan.pane_ms
        self.offset = st.offset_ms
        self.close_after = st.interval_ms + st.allowed_lateness_ms
        self.earliest: Callable[[int], int] = plan.earliest_start
        self._bucket_cache: dict[Any, int] = {}
        self.check_markers = True
        # The stages before the window, as one generated chain (see _pre_chain), and as
        # the generated loop that reads the fold's fields from their output (the getters
        # then read columns: see _Columns).
        self.pre: tuple[Any, ...] = ()
        self.chain: Any = None
        self.cols: Any = None
        fi = [a.from_int for a in self.accs]
        self.from_ints: list[Callable[[int], Any]] | None = None if None in fi else fi
        # Per accumulator, in order: add one value, fold a fresh / an existing state from
        # an IntColumn; and the argument (distinct-argument index) each one reads.
        self._adds = [a.add for a in self.accs]
        self._news = [functools.partial(_fold_new, a) for a in self.accs]
        self._folds = [a.fold_ints for a in self.accs]
        self.rows = RowFold(self.accs, plan.slot, values, self.buckets)
        slot = list(self.slot)
        self._pick: Callable[[list[Any]], Any] = (
            (lambda xs: xs) if slot == list(range(len(slot))) else itemgetter(*slot) if len(slot) > 1 else (lambda xs: (xs[slot[0]],))
        )

    @staticmethod
    def build(plan: Any, src: ir.SourceStage, pre: tuple[Any, ...] = (), pre_stages: tuple[ir.Stage, ...] = ()) -> FastGroupFold | None:
        """``None`` unless the window's shape is one the fast path covers exactly.
        ``pre``/``pre_stages``: the compiled and IR stages before the window."""
        st = plan.stage
        chain = _pre_chain(pre, pre_stages, src)
        if chain is MISSING:
            return None
        if st.boundary != "eventTime" or plan.pre or plan.group_id is None:
            return None
        if not plan.panes or not plan.kind.gapless:  # sessions have no panes
            return None
        group = next(s for s in st.pipeline if isinstance(s, ir.GroupStage))
        # The envelope fields are the general path's to stamp (docs/semantics.md#sources: `_ts` is the
        # timeField's value even when the document brought its own): the fast path, which
        # stamps nothing, leaves any pipeline that reads them.
        paths = [group.id, *(a.arg for a in group.accumulations)]
        envelope = {src.ts_field_name, "_stream_meta"}
        if any(isinstance(x, str) and x.startswith("$") and x[1:].split(".")[0] in envelope for x in paths):
            return None
        times = None
        if src.time_field is not None:
            times = time_getter(src)
            if times is None:
                return None
        if chain is not None:
            # The fold's fields as columns of the stages' output, without building it.
            columns = _Columns()
            got = _fold_getters(plan, group, columns.leaf)
            if got is not None:
                cols = _column_chain(pre, columns.paths)
                if cols is not None:
                    fast = FastGroupFold(plan, times, *got)
                    fast.pre, fast.chain, fast.cols = pre, chain, cols
                    # An undecodable record has no timeField string: _run looks for one
                    # only when the batch parser refuses the batch; without a timeField
                    # (a $match would drop it silently) in every batch.
                    fast.check_markers = times is None
                    return fast
        got = _fold_getters(plan, group, field_getter)
        if got is None:
            return None
        gid, values = got
        fast = FastGroupFold(plan, times, gid, values)
        fast.pre = pre if chain is not None else ()
        fast.chain = chain
        # A source's undecodable record ({SOURCE_DLQ_KEY: ...}) fails every field getter;
        # with no field read at all it must be looked for explicitly.
        fast.check_markers = (times is None and not callable(gid) and all(isinstance(v, _Const) for v in values)) or chain is not None
        return fast

    def run(self, batch: list[tuple[dict[str, Any], int]], wm: int, into: dict[int, Any]) -> int | None:
        """Fold the batch into the partials ``into`` (``{bucket: {pane: table}}``, the
        format of :meth:`WindowPlan.fold`) and return the new watermark; or return
        ``None``, with ``into`` untouched, for the general path to take the batch (counted
        with its reason in the window's ``operatorStats`` while metrics are on)."""
        figures: list[tuple[int, int, float]] = []  # the stages before the window, with metrics on
        got = self._run(batch, wm, into, figures)
        if isinstance(got, str):
            if metrics.ENABLED:
                metrics.fallback(self.path, self.name, got)
            return None
        if figures:
            # The stages before the window count once, as run_chain would count them
            # (only a leading $match drops documents, see _pre_chain): in, out per stage.
            n_in, n_out, seconds = figures[0]
            share = seconds / len(self.pre)
            for k, step in enumerate(self.pre):
                metrics.record(step.path, step.name, n_in if k == 0 else n_out, n_out, 0, share)
        return got

    def _run(self, batch: list[tuple[dict[str, Any], int]], wm: int, into: dict[int, Any], figures: list[Any]) -> int | str:
        """:meth:`run`, returning the reason (a FALLBACK_* text) instead of None."""
        t0 = time.perf_counter() if metrics.ENABLED else 0.0
        docs: list[Any] = [d for d, _ in batch]
        if self.check_markers and self._markers(docs):
            return FALLBACK_SOURCE_ERROR
        try:
            if self.times is None:
                ms = [t for _, t in batch]
            else:
                try:
                    got = self.times[1].millis(self.times[0](docs))
                except (KeyError, TypeError, IndexError):
                    if self.cols is not None and self._markers(docs):
                        return FALLBACK_SOURCE_ERROR
                    raise
                if got is None:
                    return FALLBACK_SOURCE_ERROR if self.cols is not None and self._markers(docs) else FALLBACK_TIME
                ms = got
            lo, hi = min(ms), max(ms)
            new_wm = hi if hi > wm else wm
            # ASP lateness (docs/semantics.md#time-and-windows): a document is late for a window whose
            # end + allowedLateness is at or below the watermark before it. The oldest
            # window of the oldest document closes first: if even it is open at the
            # batch's final watermark, no document of the batch is late.
            if self.cols is not None:
                got_cols = self._run_cols(docs, ms, new_wm, figures)
                if isinstance(got_cols, str):
                    return got_cols
                docs, ms = got_cols  # docs: the table of columns the getters read
                if not ms:
                    if t0:
                        metrics.record(self.path, self.name, 0, 0, 0, time.perf_counter() - t0)
                    return new_wm
                lo, hi = min(ms), max(ms)
            elif self.chain is not None:
                got_pre = self._run_pre(docs, ms, figures)
                if got_pre is None:
                    return FALLBACK_PRE
                docs, ms = got_pre
                if not docs:
                    if t0:
                        metrics.record(self.path, self.name, 0, 0, 0, time.perf_counter() - t0)
                    return new_wm
                lo, hi = min(ms), max(ms)
            if self.earliest(lo) + self.close_after <= new_wm:
                return FALLBACK_LATE
            gid = self.gid
            gids = gid(docs) if callable(gid) else None
            cols = [v if isinstance(v, _Const) else v(docs) for v in self.values]
        except (KeyError, TypeError, IndexError):
            return FALLBACK_FIELD
        if gids is not None and not self._plain_keys(gids):
            return FALLBACK_GROUP_ID
        pane = self.pane
        off = self.offset
        p_lo = lo - (lo - off) % pane
        p_hi = hi - (hi - off) % pane
        classes = tuple(map(column_class, cols))
        if gids is not None and self._rows(gids, cols, classes, ms, p_lo, p_hi, into):
            if t0:
                metrics.record(self.path, self.name, len(ms), 0, 0, time.perf_counter() - t0)
            return new_wm
        if p_lo == p_hi:
            by_pane = {p_lo: self._groups(gids, cols, len(ms))}
        else:
            # Usually 2 panes (out-of-order documents reach back into the previous one):
            # split the batch with one C-level mask per pane.
            by_pane = {}
            for p in range(p_lo, p_hi + 1, pane):
                mask = list(map(range(p, p + pane).__contains__, ms))
                n = sum(mask)
                if n:
                    by_pane[p] = self._groups(
                        None if gids is None else list(compress(gids, mask)),
                        [c if isinstance(c, _Const) else list(compress(c, mask)) for c in cols],
                        n,
                    )
        if self.from_ints and all(c is INT for c in classes):
            self._apply_ints(by_pane, into)
        elif not self._apply(by_pane, into):
            return FALLBACK_VALUE
        if t0:
            metrics.record(self.path, self.name, len(ms), 0, 0, time.perf_counter() - t0)
        return new_wm

    @staticmethod
    def _markers(docs: list[Any]) -> bool:
        """Whether a source's undecodable record ({SOURCE_DLQ_KEY: ...}) is in the batch."""
        return any(map(contains, docs, repeat(SOURCE_DLQ_KEY)))

    def _run_pre(self, docs: list[Any], ms: list[int], figures: list[Any]) -> tuple[list[Any], list[int]] | None:
        """The stages before the window over the batch (their generated chain), or None
        when it raises: the general path then runs them and DLQs what fails. With
        metrics on, their figures go to ``figures`` for :meth:`run` to record."""
        t0 = time.perf_counter() if metrics.ENABLED else 0.0
        try:
            recs = self.chain(list(zip(docs, ms, strict=True)), EMPTY_VARS)
        except Exception:
            return None
        if t0:
            figures.append((len(docs), len(recs), time.perf_counter() - t0))
        return [d for d, _ in recs], [t for _, t in recs]

    def _run_cols(self, docs: list[Any], ms: list[int], wm: int, figures: list[Any]) -> tuple[list[list[Any]], list[int]] | str:
        """The stages before the window as the columns the fold reads (:class:`_Columns`)
        and the kept documents' times, without building their output documents; or the
        reason to hand the batch to the general path, the same one :meth:`_run_pre` and
        the field getters would give (a raising stage first, then a late document)."""
        from translator.codegen import FieldMiss

        t0 = time.perf_counter() if metrics.ENABLED else 0.0
        try:
            table = self.cols(docs, ms)
        except FieldMiss:
            # Which comes first on the batch as a whole: the stages' own error?
            kept = self._run_pre(docs, ms, [])
            if kept is None:
                return FALLBACK_PRE
            kms = kept[1]
            if kms and self.earliest(min(kms)) + self.close_after <= wm:
                return FALLBACK_LATE
            return FALLBACK_FIELD
        except Exception:
            return FALLBACK_PRE
        if t0:
            figures.append((len(docs), len(table[0]), time.perf_counter() - t0))
        return table, table[0]

    def _rows(
        self, gids: list[Any], cols: list[Any], classes: tuple[str | None, ...], ms: list[int], p_lo: int, p_hi: int, into: dict[int, Any]
    ) -> bool:
        """Fold the batch row by row (:class:`RowFold`) when that is the faster way and
        every argument column has one plain type; False (nothing changed) otherwise.
        Plain int columns of a few groups fold faster column-wise (one IntColumn summary
        per group), so those keep the column path."""
        if None in classes:
            return False
        if all(c is INT for c in classes):
            n = min(64, len(gids))
            if len(set(gids[:64])) * 2 <= n:
                return False
        fn = self.rows.get(classes)
        if fn is None:
            return False
        bcache = self._bucket_cache
        if len(bcache) > _CACHE_LIMIT:
            bcache.clear()
        from translator.windows import bucket_of

        data = [c for c in cols if not isinstance(c, _Const)]
        nb = self.buckets
        if p_lo == p_hi:
            fn(gids, *data, into, p_lo, bcache, bucket_of, nb)
            return True
        pane = self.pane
        for p in range(p_lo, p_hi + 1, pane):
            mask = list(map(range(p, p + pane).__contains__, ms))
            if any(mask):
                fn(list(compress(gids, mask)), *[list(compress(c, mask)) for c in data], into, p, bcache, bucket_of, nb)
        return True

    @staticmethod
    def _plain_keys(gids: list[Any]) -> bool:
        """Group ids whose Python dict identity is MongoDB's group identity: strings,
        ints and null (1 and 1.0, or true and 1, need :func:`hashable`'s rules)."""
        types = set(map(type, gids))
        return types <= _PLAIN

    def _groups(self, gids: list[Any] | None, cols: list[Any], n: int) -> dict[Any, list[list[Any]]]:
        """``{group id: [column per distinct argument]}`` for one pane."""
        if gids is None:
            assert isinstance(self.gid, _Const)
            key = self.gid.value
            return {key: [[c.value] * n if isinstance(c, _Const) else c for c in cols]}
        if len(cols) == 1 and not isinstance(cols[0], _Const):
            groups: dict[Any, list[Any]] = {}
            for g, v in zip(gids, cols[0], strict=True):
                try:
                    groups[g].append(v)
                except KeyError:
                    groups[g] = [v]
            return {g: [vals] for g, vals in groups.items()}
        rows: dict[Any, list[int]] = {}
        for i, g in enumerate(gids):
            try:
                rows[g].append(i)
            except KeyError:
                rows[g] = [i]
        return {
            g: [[c.value] * len(idx) if isinstance(c, _Const) else [c[i] for i in idx] for c in cols]
            for g, idx in rows.items()
        }

    def _apply_ints(self, by_pane: dict[int, dict[Any, list[list[Any]]]], into: dict[int, Any]) -> None:
        """:meth:`_apply` for a batch whose arguments are all plain ints (the usual case),
        in one pass: nothing can fail, so nothing needs checking first. A group's single
        row becomes states through ``from_int``/``add``; several rows through their
        :class:`IntColumn`. ``map(operator.call, ...)`` runs the per-accumulator loop in C.
        """
        froms, adds, news, folds = self.from_ints, self._adds, self._news, self._folds
        assert froms is not None
        pick = self._pick
        one_arg = len(self.values) == 1  # every accumulator reads the same argument
        nb, bcache = self.buckets, self._bucket_cache
        if len(bcache) > _CACHE_LIMIT:
            bcache.clear()
        from translator.windows import bucket_of

        for p, groups in by_pane.items():
            ptables: dict[int, dict[Any, Any]] = {}
            for g, cols in groups.items():
                if nb == 1:
                    b = 0
                else:
                    b = bcache.get(g, -1)
                    if b < 0:
                        b = bcache[g] = bucket_of(g, nb)
                ptable = ptables.get(b)
                if ptable is None:
                    table = into.get(b)
                    if table is None:
                        table = into[b] = {}
                    ptable = table.get(p)
                    if ptable is None:
                        ptable = table[p] = {}
                    ptables[b] = ptable
                entry = ptable.get(g)
                col = cols[0]
                if len(col) == 1:
                    vals = repeat(col[0]) if one_arg else pick([c[0] for c in cols])
                    if entry is None:
                        ptable[g] = [g, *map(call, froms, vals)]
                    else:
                        entry[1:] = map(call, adds, entry[1:], vals)
                else:
                    sums = (
                        repeat(IntColumn(col, len(col), min(col), max(col), sum(col)))
                        if one_arg
                        else pick([IntColumn(c, len(c), min(c), max(c), sum(c)) for c in cols])
                    )
                    if entry is None:
                        ptable[g] = [g, *map(call, news, sums)]
                    else:
                        entry[1:] = map(call, folds, entry[1:], sums)

    def _bucket(self, g: Any) -> int:
        """The close-step bucket of group ``g`` (:func:`bucket_of`, cached)."""
        if self.buckets == 1:
            return 0
        bcache = self._bucket_cache
        b = bcache.get(g, -1)
        if b < 0:
            if len(bcache) > _CACHE_LIMIT:
                bcache.clear()
            from translator.windows import bucket_of

            b = bcache[g] = bucket_of(g, self.buckets)
        return b

    def _apply(self, by_pane: dict[int, dict[Any, list[list[Any]]]], into: dict[int, Any]) -> bool:
        """Fold every group's columns into ``into``; False (nothing changed) if a value
        is one an accumulator rejects, so the general path can DLQ its document.

        Phase 1 does everything that can fail; phase 2 only adds int summaries (which
        cannot fail) or merges ready states, into existing entries where there are some:
        a group seen in earlier batches costs no new state and no later merge.
        """
        accs, slot = self.accs, self.slot
        from_ints = self.from_ints
        work: list[tuple[int, Any, int, Any]] = []  # (pane, group, ONE/INTS/STATES, data)
        for p, groups in by_pane.items():
            for g, cols in groups.items():
                if from_ints is not None and cols and len(cols[0]) == 1:
                    # One document of this group in the batch (the rule with many groups).
                    vals = [c[0] for c in cols]
                    if set(map(type, vals)) == _INT_ONLY:
                        work.append((p, g, _ONE, vals))
                        continue
                sums = _summaries(cols)
                states = None
                if None in sums:
                    try:
                        states = [
                            acc.fold_ints(acc.init(), sm) if (sm := sums[i]) is not None else acc.fold(acc.init(), list(cols[i]))
                            for acc, i in zip(accs, slot, strict=True)
                        ]
                    except Exception:
                        return False
                    work.append((p, g, _STATES, states))
                else:
                    work.append((p, g, _INTS, sums))
        for p, g, kind, data in work:
            ptable = into.setdefault(self._bucket(g), {}).setdefault(p, {})
            entry = ptable.get(g)
            if kind == _ONE:  # one document's values (ints: adding cannot fail)
                if entry is None:
                    ptable[g] = [g, *[f(data[i]) for f, i in zip(from_ints, slot, strict=True)]]  # type: ignore[arg-type]
                else:
                    for k, (acc, i) in enumerate(zip(accs, slot, strict=True), 1):
                        entry[k] = acc.add(entry[k], data[i])
            elif kind == _INTS:
                if entry is None:
                    ptable[g] = [g, *[acc.fold_ints(acc.init(), data[i]) for acc, i in zip(accs, slot, strict=True)]]
                else:
                    for k, (acc, i) in enumerate(zip(accs, slot, strict=True), 1):
                        entry[k] = acc.fold_ints(entry[k], data[i])
            elif entry is None:
                ptable[g] = [g, *data]
            else:
                for k, acc in enumerate(accs, 1):
                    entry[k] = acc.merge(entry[k], data[k - 1])
        return True


def _fold_new(acc: AccSpec, col: IntColumn) -> Any:
    return acc.fold_ints(acc.init(), col)


def _summaries(cols: list[list[Any]]) -> list[IntColumn | None]:
    """Each column's :class:`IntColumn` when it holds only plain ints, else None."""
    out: list[IntColumn | None] = []
    for col in cols:
        if len(col) == 1:
            v = col[0]
            out.append(IntColumn(col, 1, v, v, v) if type(v) is int else None)
        elif set(map(type, col)) == _INT_ONLY:
            out.append(IntColumn(col, len(col), min(col), max(col), sum(col)))
        else:
            out.append(None)
    return out


class _Const:
    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


_PLAIN = frozenset({str, int, type(None)})
_INT_ONLY = {int}
_ONE, _INTS, _STATES = 0, 1, 2  # how _apply folds a group: one int row, int summaries, states
_CONSTANT_ARG: dict[str, Any] = {"$count": 1}  # accumulators whose argument is implied


def _pre_chain(pre: tuple[Any, ...], stages: tuple[ir.Stage, ...], src: ir.SourceStage) -> Any:
    """The generated chain (:class:`translator.codegen.Chain`) running every stage before
    the window; None without such stages; MISSING when they are not of a shape the fast
    path can run: one chain over all of them, a ``$match`` only first (so per-stage
    counts are known), and nothing that reads ``_ts`` (which the fast path does not
    stamp) or the whole document (whose key order the stamping changes)."""
    if not pre:
        return None
    from translator.stages import FILTER, MAP

    first = pre[0]
    if first.chain is None or first.chain_len != len(pre) or first.chain.fns != tuple(st.fn for st in pre):
        return MISSING
    if any(st.kind != MAP for st in pre[1:]) or first.kind not in (MAP, FILTER):
        return MISSING
    text = repr(stages)
    if src.ts_field_name in text or "$$ROOT" in text or "$$CURRENT" in text:
        return MISSING
    return first.chain


def _fold_getters(plan: Any, group: ir.GroupStage, leaf: Callable[[Any], Getter | None]) -> tuple[Any, list[Any]] | None:
    """The group id's getter (or constant) and one getter (or constant) per distinct
    accumulator argument, with ``leaf`` as the getter of a field path; None when one
    is not a shape the fast path evaluates."""
    gid = _getter_or_const(group.id, leaf)
    if gid is MISSING:
        gid = batch_expr(group.id, leaf)
        if gid is None:
            return None
    values: list[Any] = []
    for ex in plan.extracts:
        c = const_value(ex)
        values.append(_Const(c) if c is not MISSING else None)
    # The extracts are deduplicated argument expressions; map each back to its IR arg.
    for acc_ir, slot in zip(group.accumulations, plan.slot, strict=True):
        if isinstance(values[slot], _Const):
            continue
        if acc_ir.op in _CONSTANT_ARG:
            values[slot] = _Const(_CONSTANT_ARG[acc_ir.op])
            continue
        get = leaf(acc_ir.arg)
        if get is None:
            return None
        values[slot] = get
    if any(v is None for v in values):
        return None
    return gid, values


class _Columns:
    """The field paths a fold reads from the rows of a column chain
    (:func:`translator.codegen.compile_columns`): each distinct path is one column of
    the batch's table, after the time column; the getters then read that table."""

    def __init__(self) -> None:
        self.paths: list[tuple[str, ...]] = []

    def leaf(self, path: Any) -> Getter | None:
        parts = field_parts(path)
        if parts is None:
            return None
        if parts not in self.paths:
            self.paths.append(parts)
        return itemgetter(self.paths.index(parts) + 1)


def _column_chain(pre: tuple[Any, ...], paths: list[tuple[str, ...]]) -> Any:
    """:func:`translator.codegen.compile_columns` for the span :func:`_pre_chain` accepted."""
    from translator.codegen import compile_columns
    from translator.stages import FILTER

    first = pre[0]
    query = first.query if first.kind == FILTER else None
    maps = [st.spec for st in (pre[1:] if query is not None else pre)]
    return compile_columns(query, maps, paths)


def batch_expr(spec: Any, leaf: Callable[[Any], Getter | None] = field_getter) -> Getter | None:
    """A batch evaluator for a computed ``_id`` made of field paths, string constants,
    ``$concat`` and ``$toString`` of ints or strings (the usual composite key), else
    None. It raises TypeError for any value outside those types (null, missing, a
    number in ``$concat``...), so the caller hands the batch to the general path, whose
    rules and error texts apply. ``leaf``: the getter of a field path."""
    if isinstance(spec, str):
        if spec.startswith("$"):
            return leaf(spec)
        return None
    if not isinstance(spec, dict) or len(spec) != 1:
        return None
    (op, arg), = spec.items()
    if op == "$toString":
        if isinstance(arg, list):
            if len(arg) != 1:
                return None
            arg = arg[0]
        inner = batch_expr(arg, leaf)
        if inner is None:
            return None
        return functools.partial(_to_string, inner)
    if op == "$concat" and isinstance(arg, list) and arg:
        parts: list[Getter | str] = []
        for a in arg:
            if isinstance(a, str) and not a.startswith("$"):
                parts.append(a)
                continue
            g = batch_expr(a, leaf)
            if g is None:
                return None
            parts.append(g)
        if all(isinstance(p, str) for p in parts):
            return None  # a constant: not worth a getter
        return functools.partial(_concat, parts)
    return None


def _strings(col: list[Any]) -> list[str]:
    if set(map(type, col)) != {str}:
        raise TypeError("not all strings")
    return col


def _to_string(inner: Getter, docs: list[Any]) -> list[str]:
    col = inner(docs)
    types = set(map(type, col))
    if types == {str}:
        return col
    if types == {int} and min(col) >= -(2**63) and max(col) < 2**63:  # BSON ints
        return list(map(str, col))
    raise TypeError("not all ints or strings")


def _concat(parts: list[Getter | str], docs: list[Any]) -> list[str]:
    cols = [repeat(p) if isinstance(p, str) else _strings(p(docs)) for p in parts]
    return list(map("".join, zip(*cols, strict=False)))  # constant parts repeat forever


def _getter_or_const(spec: Any, leaf: Callable[[Any], Getter | None] = field_getter) -> Any:
    """A batch getter for a field-path ``_id``, a :class:`_Const` for a literal one, else MISSING."""
    if isinstance(spec, str):
        if spec.startswith("$"):
            g = leaf(spec)
            return MISSING if g is None else g
        return _Const(spec)
    if spec is None or type(spec) is int:
        return _Const(spec)
    return MISSING


__all__ = ["DateCache", "FastGroupFold", "IsoMillis", "field_getter", "time_getter"]


# ---- many groups: one generated loop over the batch's rows -------------------------------

# Column classes (every value of a batch column has this exact type; floats hold no NaN).
INT, FLOAT, STR = "int", "float", "str"
_CLASS_OF: dict[type, str] = {int: INT, float: FLOAT, str: STR}

# Inline folds of one value ``v`` into the state ``e[k]``, per accumulator and column
# class. Each is exactly the accumulator's ``add`` for that value type (see
# translator/accumulators.py) and keeps a guard on the state's type: a state built by the
# general path from another type (a group that saw a double, an Int64...) goes through
# ``A(state, v)``, the accumulator's own add. Accumulators and classes not listed here are
# written as ``e[k] = A(e[k], v)``, only for ops whose add cannot raise (_SAFE_ADD).
_INLINE: dict[tuple[str, str], str] = {
    ("$min", INT): "s = e[K]\nif type(s) is int:\n    if V < s:\n        e[K] = V\nelse:\n    e[K] = A(s, V)",
    ("$max", INT): "s = e[K]\nif type(s) is int:\n    if V > s:\n        e[K] = V\nelse:\n    e[K] = A(s, V)",
    ("$min", FLOAT): "s = e[K]\nif type(s) is float and s == s:\n    if V < s:\n        e[K] = V\nelse:\n    e[K] = A(s, V)",
    ("$max", FLOAT): "s = e[K]\nif type(s) is float and s == s:\n    if V > s:\n        e[K] = V\nelse:\n    e[K] = A(s, V)",
    ("$min", STR): "s = e[K]\nif type(s) is str:\n    if V < s:\n        e[K] = V\nelse:\n    e[K] = A(s, V)",
    ("$max", STR): "s = e[K]\nif type(s) is str:\n    if V > s:\n        e[K] = V\nelse:\n    e[K] = A(s, V)",
    # _sum_add of a plain int: total, count, and "a long was seen" beyond int32.
    ("$sum", INT): "s = e[K]\ns[1] += V\ns[7] += 1\nif (V > 2147483647 or V < -2147483648) and s[0] < 1:\n    s[0] = 1",
    ("$avg", INT): "s = e[K]\ns[1] += V\ns[7] += 1\nif (V > 2147483647 or V < -2147483648) and s[0] < 1:\n    s[0] = 1",
    ("$stdDevPop", INT): "s = e[K]\ns[0] += 1\ns[1] += V\ns[2] += V * V",
    ("$stdDevSamp", INT): "s = e[K]\ns[0] += 1\ns[1] += V\ns[2] += V * V",
    # $push appends every value (a field getter never yields MISSING).
    ("$push", INT): "e[K].append(V)",
    ("$push", FLOAT): "e[K].append(V)",
    ("$push", STR): "e[K].append(V)",
    # $addToSet keys ints and strings by themselves (_set_key).
    ("$addToSet", INT): "s = e[K]\nif V not in s:\n    s[V] = V",
    ("$addToSet", STR): "s = e[K]\nif V not in s:\n    s[V] = V",
}
_COUNT = "e[K] += 1"  # $count: the state is the int count, whatever the value
# A new group's state from its first value, where it is simpler than ``A(I(), V)``:
# $min/$max of a first non-null value is that value; ``F`` is the accumulator's
# ``from_int`` (the state of one plain int).
_NEW: dict[tuple[str, str], str] = {
    **{(op, c): "V" for op in ("$min", "$max") for c in (INT, FLOAT, STR)},
    # _sum_from_int and _sd_from_int, written out (DZ: Decimal 0, E0: the double scale).
    **{(op, INT): "[0 if -2147483648 <= V <= 2147483647 else 1, V, 0, DZ, 0, 0, 0, 1, E0]" for op in ("$sum", "$avg")},
    **{(op, INT): "[1, V, V * V, 0, 0, 0, E0]" for op in ("$stdDevPop", "$stdDevSamp")},
    **{("$push", c): "[V]" for c in (INT, FLOAT, STR)},
    ("$addToSet", INT): "{V: V}",
    ("$addToSet", STR): "{V: V}",
}
# Accumulators whose ``add`` cannot raise for an int, float or string value.
_SAFE_ADD = frozenset(
    {"$min", "$max", "$sum", "$avg", "$count", "$stdDevPop", "$stdDevSamp", "$push", "$addToSet", "$first", "$last"}
)

_ROW_BUILTINS = {"type": type, "zip": zip, "int": int, "float": float, "str": str}


class RowFold:
    """Folds a pane's rows into its group tables one document at a time, with each
    accumulator's add written inline for the batch's column types.

    Why: with many groups most groups of a batch hold one or two documents, so the
    column-wise fold's per-group costs (building columns, one call per accumulator) are
    paid per document; the plain loop (benchmark engine (d)) pays one dict lookup and a
    few additions. One function per combination of column classes is generated from the
    fixed templates above (identifiers and small int literals only, nothing from the
    pipeline's text) and cached.
    """

    def __init__(self, accs: tuple[AccSpec, ...], slot: list[int], values: list[Any], nb: int) -> None:
        self.accs = accs
        self.slot = slot
        # Argument slots read from columns (zipped), and constant ones (bound by name).
        self.cols = [i for i, v in enumerate(values) if not isinstance(v, _Const)]
        self.consts = {i: v.value for i, v in enumerate(values) if isinstance(v, _Const)}
        self.nb = nb
        self.fns: dict[tuple[str | None, ...], Callable[..., None] | None] = {}

    def get(self, classes: tuple[str | None, ...]) -> Callable[..., None] | None:
        """The fold for these argument classes (a constant argument's slot holds the
        constant's class); None when some accumulator has no safe fold."""
        if classes not in self.fns:
            self.fns[classes] = self._generate(classes)
        return self.fns[classes]

    def _generate(self, classes: tuple[str | None, ...]) -> Callable[..., None] | None:
        from translator.accumulators import DOUBLE_SCALE, ZERO_DECIMAL

        ns: dict[str, Any] = {"__builtins__": _ROW_BUILTINS, "DZ": ZERO_DECIMAL, "E0": DOUBLE_SCALE}
        for i, value in self.consts.items():
            ns[f"v{i}"] = value
        adds: list[str] = []
        inits: list[str] = []
        for k, (acc, i) in enumerate(zip(self.accs, self.slot, strict=True), 1):
            cls = classes[i]
            ns[f"A{k}"] = acc.add
            ns[f"I{k}"] = acc.init
            ns[f"F{k}"] = acc.from_int
            new = "1" if acc.name == "$count" else _NEW.get((acc.name, cls or ""), "A(I(), V)")
            inits.append(new.replace("A(", f"A{k}(").replace("I(", f"I{k}(").replace("F(", f"F{k}(").replace("V", f"v{i}"))
            inline = _INLINE.get((acc.name, cls or ""))
            if acc.name == "$count":
                tmpl = _COUNT
            elif inline is not None:
                tmpl = inline
            elif acc.name in _SAFE_ADD and cls is not None:
                tmpl = "e[K] = A(e[K], V)"
            else:
                return None
            adds.append(tmpl.replace("A(", f"A{k}(").replace("K", str(k)).replace("V", f"v{i}"))
        body = "\n".join(adds)
        cols = "".join(f"C{i}, " for i in self.cols)
        lines = [
            f"def fold(G, {cols}INTO, P, BC, BO, NB):",
            "    T = {}",
            f"    for g, {''.join(f'v{i}, ' for i in self.cols)}in zip(G, {cols}):" if self.cols else "    for g in G:",
        ]
        if self.nb == 1:
            lines += ["        b = 0"]
        else:
            lines += ["        b = BC.get(g)", "        if b is None:", "            b = BC[g] = BO(g, NB)"]
        lines += [
            "        t = T.get(b)",
            "        if t is None:",
            "            tb = INTO.get(b)",
            "            if tb is None:",
            "                tb = INTO[b] = {}",
            "            t = tb.get(P)",
            "            if t is None:",
            "                t = tb[P] = {}",
            "            T[b] = t",
            "        e = t.get(g)",
            "        if e is None:",
            f"            t[g] = [g, {', '.join(inits)}]",
            "            continue",
            *("        " + ln for ln in body.splitlines()),
        ]
        code = compile("\n".join(lines) + "\n", "<mqlflow row fold>", "exec")
        exec(code, ns)  # fixed templates, see the class docstring
        fn: Callable[..., None] = ns["fold"]
        return fn


def column_class(col: Any) -> str | None:
    """INT, FLOAT (no NaN) or STR when every value of the batch column (or the constant)
    has that exact type; None otherwise."""
    if isinstance(col, _Const):
        v = col.value
        cls = _CLASS_OF.get(type(v))
        return None if cls is FLOAT and v != v else cls
    types = set(map(type, col))
    if len(types) != 1:
        return None
    cls = _CLASS_OF.get(types.pop())
    if cls is FLOAT and any(map(isnan, col)):
        return None
    return cls
