"""The ``$merge`` sink: writes a stream into a MongoDB collection in batches.

``{into: {connectionName, db, coll}, on, whenMatched, whenNotMatched}``
(https://www.mongodb.com/docs/atlas/atlas-stream-processing/sp-agg-merge/).
``db``/``coll`` may be per-document expressions; a non-string result sends that document
to the DLQ. Each batch becomes one ``bulk_write(ordered=False)`` per target namespace:

=============  ==================================================================
whenMatched    bulk operation (``upsert`` = whenNotMatched is ``insert``)
=============  ==================================================================
replace        ``ReplaceOne(on-filter, doc)``
merge          ``UpdateOne(on-filter, {$set: doc's fields})``
keepExisting   ``UpdateOne(on-filter, {$setOnInsert: doc})``
delete         ``DeleteOne`` for matched keys; ``InsertOne`` for the others when insert
fail           ``InsertOne``; a duplicate key goes to the DLQ with the server's message
pipeline       existing documents read with one ``find``; the pipeline (``$$new`` = the
               incoming document) runs client-side; ``ReplaceOne`` of the result
=============  ==================================================================

At-least-once (https://www.mongodb.com/docs/atlas/atlas-stream-processing/ops-guide/): every operation is idempotent on replay, so window results
keyed by ``_id`` overwrite themselves. Transient failures (network, stepdown, restart) are
retried forever with capped exponential backoff, never dropping the batch; permanent
per-document errors go to the DLQ with the server's ``errmsg`` while the rest is written.
Several documents with the same key in one batch are applied in arrival order (split into
sequential rounds), since an unordered bulk write does not promise an order.

Bulk writes are sized to the server (:func:`sinks.mongo_io.server_profile`: FerretDB
freezes at ~100 matched updates per bulk), every client call has a timeout, and a write
that makes no progress is logged, shown in ``stats().sinkStalls`` and, after
``MQLFLOW_SINK_GIVE_UP_S``, fails the processor (:class:`sinks.mongo_io.Attempts`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal, cast

import bson
import pymongo
from bson import ObjectId
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from pymongo import DeleteOne, InsertOne, MongoClient, ReplaceOne, UpdateOne
from pymongo.errors import (
    BulkWriteError,
    ConnectionFailure,
    DocumentTooLarge,
    InvalidDocument,
    OperationFailure,
    PyMongoError,
)

from sinks.mongo_dlq import DlqWriter, DlqWriterFactory
from sinks.mongo_io import (
    AdaptiveBulk,
    Attempts,
    ServerProfile,
    chunks,
    make_client,
    server_profile,
)
from translator.connections import Connection, mask_uri
from translator.contracts import (
    TRANSIENT_CODES,
    coll_name_problem,
    db_name_problem,
    dlq_document,
    is_transient,
)
from translator.errors import TranslateError, did_you_mean
from translator.ir import MergeStage, ModeExpr
from translator.mql.expr import (
    EMPTY_VARS,
    Ctx,
    Expr,
    ExprError,
    Vars,
    compile_expr,
    const_value,
    get_path,
)
from translator.mql.values import MISSING, bson_type
from translator.options import fast_paths

log = logging.getLogger("mqlflow.merge")

Doc = dict[str, Any]
Op = InsertOne[Doc] | ReplaceOne[Doc] | UpdateOne | DeleteOne

DUPLICATE_KEY = 11000
MAX_BSON_SIZE = 16 * 1024 * 1024
FATAL_CODES = frozenset({13, 18})  # Unauthorized, AuthenticationFailed: a configuration error
START_HINT = "start one with scripts/services.sh up mongodb"


class MergeUnreachableError(RuntimeError):
    """The ``$merge`` target does not answer at start (fail fast instead of a silent wait)."""


# ---- namespace resolution (name rules: translator.contracts) -------------------------------


@dataclass(frozen=True)
class _NameFn:
    """``into.db`` / ``into.coll``: a constant, or an expression evaluated per document."""

    what: str  # "db" / "coll"
    const: str | None
    fn: Expr | None
    check: Callable[[str], str | None]
    label: str = "$merge into."  # how DLQ reasons name the field

    def resolve(self, doc: Doc) -> tuple[str | None, str | None]:
        """``(name, None)`` or ``(None, dlq reason)``."""
        if self.const is not None:
            return self.const, None
        assert self.fn is not None
        try:
            v = self.fn(doc, EMPTY_VARS)
        except ExprError as exc:
            return None, f"Failed to evaluate {self.label}{self.what}: {exc}"
        if not isinstance(v, str):
            shown = "missing" if v is MISSING else type(v).__name__
            return None, f"{self.label}{self.what} must evaluate to a string, but it evaluated to {shown}"
        problem = self.check(v)
        if problem:
            return None, f"{self.label}{self.what} evaluated to an invalid name {v!r}: it {problem}"
        return v, None


def _compile_name(
    spec: Any, path: str, what: str, check: Callable[[str], str | None], label: str = "$merge into."
) -> _NameFn:
    fn = compile_expr(spec, Ctx(path))
    c = const_value(fn)
    if c is MISSING:
        return _NameFn(what, None, fn, check, label)
    if not isinstance(c, str):
        raise TranslateError(path, f"expected a string or an expression, got {type(c).__name__}")
    problem = check(c)
    if problem:
        raise TranslateError(path, f"invalid {'database' if what == 'db' else 'collection'} name {c!r}: it {problem}")
    return _NameFn(what, c, None, check, label)


# ---- whenMatched pipelines, applied client-side ---------------------------------------------
# FerretDB v1 has no update pipelines (and no `let`), so the pipeline runs here on the
# document read back from the server, with `$$new` bound to the incoming document.

DocFn = Callable[[Doc, Vars], Doc]
# The document-reshaping stages, compiled by the translator's own stage compilers.
PIPELINE_STAGES = ("$set", "$addFields", "$unset", "$project", "$replaceWith", "$replaceRoot")


class WhenMatchedPipeline:
    """``fn(existing_doc, {"new": incoming}) -> doc``. It follows the ``fastPaths`` option
    the stages were compiled under: with it, an ``$addFields`` + inclusion ``$project`` pair
    runs as the one fused closure the stage compiler made (``fused`` counts them), falling
    back to the two stages' own closures when that raises; without it, every stage runs
    through its own closure (the reference path)."""

    def __init__(self, runs: list[tuple[DocFn | None, tuple[DocFn, ...]]]) -> None:
        self.runs = runs
        self.fused = sum(1 for f, _ in runs if f is not None)

    def __call__(self, doc: Doc, v: Vars) -> Doc:
        for fused, fns in self.runs:
            if fused is not None:
                try:
                    doc = fused(doc, v)
                    continue
                except Exception:  # the stages' own closures below report it
                    pass
            for f in fns:
                doc = f(doc, v)
        return doc


def compile_when_matched_pipeline(
    stages: tuple[dict[str, Any], ...], path: str, variables: frozenset[str] = frozenset({"new"})
) -> WhenMatchedPipeline:
    """Compile ``whenMatched: [...]`` into ``fn(existing_doc, vars) -> doc``, where ``vars``
    holds ``variables`` (``new``, or the ``let`` names), with or without accelerators, as
    :func:`translator.options.fast_paths` says."""
    from translator.parse import STAGE_PARSERS
    from translator.stages import compile_steps

    parsed = []
    for i, st in enumerate(stages):
        spath = f"{path}[{i}]"
        if not isinstance(st, dict) or len(st) != 1:
            raise TranslateError(spath, "a pipeline stage must be an object with exactly one key")
        ((name, spec),) = st.items()
        if name not in PIPELINE_STAGES:
            raise TranslateError(
                f"{spath}.{name}",
                f"stage '{name}' is not supported in a $merge whenMatched pipeline{did_you_mean(name, PIPELINE_STAGES)}; "
                f"supported: {', '.join(PIPELINE_STAGES)}",
            )
        parsed.append(STAGE_PARSERS[name](spec, f"{spath}.{name}"))
    steps = compile_steps(tuple(parsed), variables)
    runs: list[tuple[DocFn | None, tuple[DocFn, ...]]] = []
    i = 0
    while i < len(steps):
        step = steps[i]
        if step.fused_next is not None and i + 1 < len(steps):  # only set with fastPaths on
            runs.append((step.fused_next, (cast(DocFn, step.fn), cast(DocFn, steps[i + 1].fn))))
            i += 2
        else:
            runs.append((None, (cast(DocFn, step.fn),)))
            i += 1
    return WhenMatchedPipeline(runs)


# ---- planning: documents -> bulk operations --------------------------------------------------


@dataclass
class _Entry:
    doc: Doc  # the document as written (an _id may have been added)
    original: Doc  # the document as received (what the DLQ shows)
    filter: Doc
    key: Any  # hashable identity of the `on` values


# One write as (kind, filter, document-or-update, upsert): both the bulk operation and, for
# the one-by-one fallback, the single-document call are built from it.
Spec = tuple[str, Doc, Doc, bool]

OP_BUILDERS: dict[str, Callable[[Doc, Doc, bool], Op]] = {
    "insert": lambda f, d, u: InsertOne(d),
    "replace": lambda f, d, u: ReplaceOne(f, d, upsert=u),
    "update": lambda f, d, u: UpdateOne(f, d, upsert=u),
    "delete": lambda f, d, u: DeleteOne(f),
}
SINGLE_CALLS: dict[str, Callable[[Any, Doc, Doc, bool], Any]] = {
    "insert": lambda c, f, d, u: c.insert_one(d),
    "replace": lambda c, f, d, u: c.replace_one(f, d, upsert=u),
    "update": lambda c, f, d, u: c.update_one(f, d, upsert=u),
    "delete": lambda c, f, d, u: c.delete_one(f),
}


@dataclass
class _Planned:
    ops: list[Op] = field(default_factory=list)
    specs: list[Spec] = field(default_factory=list)
    entries: list[_Entry] = field(default_factory=list)
    dlq: list[tuple[_Entry, str]] = field(default_factory=list)

    def add(self, e: _Entry, kind: str, doc: Doc | None = None, filter: Doc | None = None, upsert: bool = False) -> None:
        f = e.filter if filter is None else filter
        d = e.doc if doc is None else doc
        self.ops.append(OP_BUILDERS[kind](f, d, upsert))
        self.specs.append((kind, f, d, upsert))
        self.entries.append(e)


def _hashable(values: list[Any]) -> Any:
    t = tuple(values)
    try:
        hash(t)
        return t
    except TypeError:
        return bson.encode({"k": values})


class _Mode:
    """How one whenMatched/whenNotMatched pair turns entries into operations."""

    needs_existing = False  # read matching documents first (one find per round)
    existing_full = False  # ...whole documents (pipelines), not just the keys

    def __init__(self, stage: MergeStage) -> None:
        self.on = stage.on
        self.upsert = stage.when_not_matched == "insert"
        self.on_top = frozenset(f for f in stage.on if "." not in f)

    def plan(self, entries: list[_Entry], existing: dict[Any, Doc], out: _Planned) -> None:
        raise NotImplementedError


class _Replace(_Mode):
    def plan(self, entries: list[_Entry], existing: dict[Any, Doc], out: _Planned) -> None:
        for e in entries:
            out.add(e, "replace", upsert=self.upsert)


class _MergeFields(_Mode):
    def plan(self, entries: list[_Entry], existing: dict[Any, Doc], out: _Planned) -> None:
        for e in entries:
            sets = {k: v for k, v in e.doc.items() if k not in self.on_top and k != "_id"}
            update: Doc = {"$set": sets} if sets else {}
            if "_id" in e.doc and "_id" not in self.on_top:
                update["$setOnInsert"] = {"_id": e.doc["_id"]}
            if not update:  # only the key: nothing to change when matched
                if not self.upsert:
                    continue
                update = {"$setOnInsert": {k: e.doc[k] for k in self.on_top}}
            out.add(e, "update", update, upsert=self.upsert)


class _KeepExisting(_Mode):
    def plan(self, entries: list[_Entry], existing: dict[Any, Doc], out: _Planned) -> None:
        if not self.upsert:  # keepExisting + discard never writes anything
            return
        for e in entries:
            fields = {k: v for k, v in e.doc.items() if k not in self.on_top}
            if not fields:
                fields = {k: e.doc[k] for k in self.on_top}
            out.add(e, "update", {"$setOnInsert": fields}, upsert=True)


class _Delete(_Mode):
    def __init__(self, stage: MergeStage) -> None:
        super().__init__(stage)
        self.needs_existing = self.upsert  # only to know which ones to insert

    def plan(self, entries: list[_Entry], existing: dict[Any, Doc], out: _Planned) -> None:
        for e in entries:
            if not self.upsert or e.key in existing:
                out.add(e, "delete")
            else:
                out.add(e, "insert")


class _Fail(_Mode):
    def __init__(self, stage: MergeStage) -> None:
        super().__init__(stage)
        # With `on: _id` the unique _id index reports a match as a duplicate key error.
        self.needs_existing = self.on != ("_id",) or not self.upsert

    def plan(self, entries: list[_Entry], existing: dict[Any, Doc], out: _Planned) -> None:
        for e in entries:
            if self.needs_existing and e.key in existing:
                shown = ", ".join(f"{k}: {e.filter[k]!r}" for k in self.on)
                out.dlq.append((e, f"$merge whenMatched 'fail': a document with {{{shown}}} already exists"))
            elif self.upsert:
                out.add(e, "insert")


class _Pipeline(_Mode):
    needs_existing = True
    existing_full = True

    def __init__(self, stage: MergeStage) -> None:
        super().__init__(stage)
        assert isinstance(stage.when_matched, tuple)
        # Without ``let`` the pipeline sees ``$$new``; with it, only the ``let`` names, each
        # evaluated on the incoming document (MongoDB's $merge ``let``).
        self.let = None if stage.let is None else tuple(
            (n, compile_expr(x, Ctx(f"{stage.path}.let.{n}"))) for n, x in stage.let
        )
        names = frozenset({"new"}) if stage.let is None else frozenset(n for n, _ in stage.let)
        self.fn = compile_when_matched_pipeline(stage.when_matched, f"{stage.path}.whenMatched", names)

    def variables(self, doc: Doc) -> dict[str, Any]:
        if self.let is None:
            return {"new": doc}
        out = {}
        for n, f in self.let:
            try:
                out[n] = f(doc, EMPTY_VARS)
            except ExprError as exc:
                raise ExprError("", f"$merge let variable '{n}': {exc}") from exc
        return out

    def plan(self, entries: list[_Entry], existing: dict[Any, Doc], out: _Planned) -> None:
        for e in entries:
            old = existing.get(e.key)
            if old is None:
                if self.upsert:
                    out.add(e, "insert")
                continue
            try:
                new = self.fn(old, self.variables(e.doc))
            except ExprError as exc:
                out.dlq.append((e, f"Failed to apply $merge whenMatched pipeline: {exc}"))
                continue
            if "_id" in new and new["_id"] != old["_id"]:
                out.dlq.append((e, "$merge whenMatched pipeline may not change _id"))
                continue
            out.add(e, "replace", {"_id": old["_id"], **new}, {"_id": old["_id"]})


MODES: dict[str, Callable[[MergeStage], _Mode]] = {
    "replace": _Replace,
    "merge": _MergeFields,
    "keepExisting": _KeepExisting,
    "delete": _Delete,
    "fail": _Fail,
}
# What a whenMatched / whenNotMatched expression may evaluate to (ASP's $merge page).
DYNAMIC_CHOICES = {
    "whenMatched": ("merge", "replace", "keepExisting", "delete"),
    "whenNotMatched": ("insert", "discard"),
}


class _Dynamic(_Mode):
    """whenMatched and/or whenNotMatched given as expressions (ASP's $merge,
    https://www.mongodb.com/docs/atlas/atlas-stream-processing/sp-agg-merge/): each
    document's pair is evaluated on it, and the document is planned by the same mode
    class the constant pair uses (built once per pair). A failing expression or a value
    outside the allowed names sends the document to the DLQ. The matching documents are
    read first, since some pairs (delete + insert) need to know which exist."""

    needs_existing = True

    def __init__(self, stage: MergeStage) -> None:
        super().__init__(stage)
        self.stage = stage
        self.existing_full = isinstance(stage.when_matched, tuple)  # a constant pipeline
        self.choose = tuple(
            self._chooser(value, field) for value, field in
            ((stage.when_matched, "whenMatched"), (stage.when_not_matched, "whenNotMatched"))
        )
        # Every pair's mode is built now, under the create-time fastPaths setting.
        wms: tuple[str | tuple[dict[str, Any], ...], ...] = (
            DYNAMIC_CHOICES["whenMatched"] if isinstance(stage.when_matched, ModeExpr) else (stage.when_matched,)
        )
        wnms = (
            cast(tuple[Literal["insert", "discard"], ...], DYNAMIC_CHOICES["whenNotMatched"])
            if isinstance(stage.when_not_matched, ModeExpr) else (stage.when_not_matched,)
        )
        self.modes: dict[tuple[Any, Any], _Mode] = {
            (wm, wnm): make_mode(replace(stage, when_matched=wm, when_not_matched=wnm)) for wm in wms for wnm in wnms
        }

    def _chooser(self, value: Any, field: str) -> Callable[[Doc], Any]:
        if not isinstance(value, ModeExpr):
            return lambda doc: value
        fn = compile_expr(value.spec, Ctx(f"{self.stage.path}.{field}"))
        choices = DYNAMIC_CHOICES[field]

        def choose(doc: Doc) -> Any:
            v = fn(doc, EMPTY_VARS)
            if not (isinstance(v, str) and v in choices):
                shown = "missing" if v is MISSING else f"{bson_type(v)} {v!r}"
                allowed = ", ".join(f"'{c}'" for c in choices)
                raise ExprError("", f"$merge {field} must evaluate to one of {allowed}, but resulting value was: {shown}")
            return v

        return choose

    def plan(self, entries: list[_Entry], existing: dict[Any, Doc], out: _Planned) -> None:
        by_pair: dict[tuple[Any, Any], list[_Entry]] = {}
        for e in entries:
            try:
                pair = (self.choose[0](e.doc), self.choose[1](e.doc))
            except ExprError as exc:
                out.dlq.append((e, str(exc)))
                continue
            by_pair.setdefault(pair, []).append(e)
        for pair, group in by_pair.items():
            self.modes[pair].plan(group, existing, out)


def make_mode(stage: MergeStage) -> _Mode:
    if isinstance(stage.when_matched, ModeExpr) or isinstance(stage.when_not_matched, ModeExpr):
        return _Dynamic(stage)
    if isinstance(stage.when_matched, tuple):
        return _Pipeline(stage)
    ctor = MODES.get(stage.when_matched)
    if ctor is None:
        raise TranslateError(f"{stage.path}.whenMatched", f"unknown whenMatched mode {stage.when_matched!r}")
    return ctor(stage)


# ---- the settings, parsed at create time -------------------------------------------------------


@dataclass(frozen=True)
class MergeSettings:
    """``$merge`` checked and compiled once, by the translator at create time: the resolved
    connection, the target names, the ``on`` paths and the whenMatched mode (its pipeline
    compiled with or without accelerators, as the ``fastPaths`` option says)."""

    stage: MergeStage
    conn: Connection
    db: _NameFn
    coll: _NameFn
    on_parts: tuple[tuple[str, ...], ...]
    mode: _Mode

    @staticmethod
    def from_stage(stage: MergeStage, conn: Connection, *, fast: bool = True) -> MergeSettings:
        """``conn`` is the stage's MongoDB connection, already resolved."""
        if not conn.uri:
            raise TranslateError(f"{stage.path}.into.connectionName", f"connection '{conn.name}' has no uri")
        db = _compile_name(stage.db, f"{stage.path}.into.db", "db", db_name_problem)
        coll = _compile_name(stage.coll, f"{stage.path}.into.coll", "coll", coll_name_problem)
        with fast_paths(fast):
            mode = make_mode(stage)
        return MergeSettings(stage, conn, db, coll, tuple(tuple(f.split(".")) for f in stage.on), mode)


# ---- the sink --------------------------------------------------------------------------------


class MergeSink(DynamicSink[list[Doc]]):
    """Bytewax sink for ``$merge``; stream items are lists of documents (one batch each).

    It gets :class:`MergeSettings`, checked at create time by ``compile_pipeline``
    (connection kind, constant names, whenMatched pipeline). The server is contacted when
    the dataflow starts (:meth:`build`), which fails fast when it does not answer.
    """

    server_timeout_ms = 5000
    backoff_initial_s = 0.1
    backoff_max_s = 5.0

    def __init__(
        self,
        settings: MergeSettings,
        processor_name: str = "",
        dlq: DlqWriterFactory | None = None,
        batch_size: int = 1000,
        flush_interval_s: float = 1.0,
    ) -> None:
        self.settings = settings
        self.stage = settings.stage
        self.processor_name = processor_name
        self.conn: Connection = settings.conn
        self.db = settings.db
        self.coll = settings.coll
        self.on_parts = settings.on_parts
        self.mode = settings.mode
        self.dlq_factory = dlq
        self.batch_size = max(1, batch_size)
        self.flush_interval_s = flush_interval_s
        self._lock = threading.Lock()
        self.written = 0  # documents whose operation succeeded
        self.dlq_count = 0  # documents sent to the DLQ
        self.dlq_dropped = 0  # DLQ documents with no DLQ configured (logged)
        self.retries = 0  # transient failures retried

    def _count(self, written: int = 0, dlq: int = 0, dropped: int = 0, retries: int = 0) -> None:
        with self._lock:
            self.written += written
            self.dlq_count += dlq
            self.dlq_dropped += dropped
            self.retries += retries

    kind = "$merge"  # the stage, as log lines and errors name it
    partition_cls: type[MergePartition]  # set below the class: MergePartition

    def describe_target(self) -> str:
        return f"{self.kind} connection '{self.conn.name}' ({mask_uri(self.conn.uri or '')})"

    def connect(self) -> MongoClient[Doc]:
        """A client that answered ``ping``; else :class:`MergeUnreachableError`."""
        client = make_client(self.conn.uri or "", f"mqlflow:{self.processor_name}")
        try:
            with pymongo.timeout(self.server_timeout_ms / 1000):
                client.admin.command("ping")
        except PyMongoError as exc:
            client.close()
            raise MergeUnreachableError(
                f"{self.stage.path}: cannot reach MongoDB for {self.kind} connection '{self.conn.name}' "
                f"at {mask_uri(self.conn.uri or '')} ({type(exc).__name__}); {START_HINT} "
                f"or point the connection at a running server"
            ) from None
        return client

    def build(self, step_id: str, worker_index: int, worker_count: int) -> MergePartition:
        client = self.connect()
        profile = server_profile(client)
        writer = self.dlq_factory() if self.dlq_factory is not None else None
        return self.partition_cls(self, client, writer, f"{step_id}#{worker_index}", profile)


class MergePartition(StatelessSinkPartition[list[Doc]]):
    """One worker's writer: buffers documents, flushes by size, by timer, and at close."""

    def __init__(
        self, sink: MergeSink, client: MongoClient[Doc], dlq: DlqWriter | None, name: str, profile: ServerProfile
    ) -> None:
        self.sink = sink
        self.client = client
        self.dlq = dlq
        self.name = name
        # Operations per bulk write: the batch size, capped for a server that cannot take it,
        # halved after a socket timeout and grown back while writes are fast (the DLQ's rule too).
        self.bulk = AdaptiveBulk(client, sink.batch_size, profile, sink.processor_name, sink.describe_target())
        self._buf: list[Doc] = []
        self._since = 0.0  # monotonic time the oldest buffered document arrived
        self._buf_lock = threading.Lock()  # guards _buf
        self._write_lock = threading.Lock()  # one flush at a time
        self._stop = threading.Event()
        self._error: BaseException | None = None  # a fatal error of the timer thread
        self._timer = threading.Thread(target=self._tick, name=f"merge-flush-{name}", daemon=True)
        self._timer.start()

    # -- Bytewax API ----------------------------------------------------------------------------

    def write_batch(self, items: list[list[Doc]]) -> None:
        self._raise_timer_error()
        with self._buf_lock:
            if not self._buf:
                self._since = time.monotonic()
            for batch in items:
                self._buf.extend(batch)
            full = len(self._buf) >= self.sink.batch_size
        if self.sink.flush_interval_s <= 0:
            # Durable mode: everything Bytewax handed over is written before this returns,
            # so a checkpoint never covers documents still sitting in a buffer.
            self._flush(only_full=False)
        elif full:
            self._flush(only_full=True)

    def close(self) -> None:
        self._stop.set()
        self._timer.join(timeout=self.sink.flush_interval_s + 1.0)
        self._raise_timer_error()
        self._flush(only_full=False)
        if self.dlq is not None:
            self.dlq.close()
        self.client.close()

    def _raise_timer_error(self) -> None:
        if self._error is not None:
            err, self._error = self._error, None
            raise err

    # -- buffering ------------------------------------------------------------------------------

    def _tick(self) -> None:
        interval = self.sink.flush_interval_s
        step = min(max(interval / 4, 0.01), 0.25)
        while not self._stop.wait(step):
            with self._buf_lock:
                due = bool(self._buf) and time.monotonic() - self._since >= interval
            if due:
                try:
                    self._flush(only_full=False)
                except Exception as exc:  # surfaced in the dataflow by the next write_batch/close
                    log.exception("%s: timed flush failed", self.sink.describe_target())
                    self._error = exc
                    return

    def _take(self, only_full: bool) -> list[Doc] | None:
        with self._buf_lock:
            n = self.sink.batch_size
            if not self._buf or (only_full and len(self._buf) < n):
                return None
            chunk, self._buf = self._buf[:n], self._buf[n:]
            self._since = time.monotonic()
            return chunk

    def _flush(self, only_full: bool) -> None:
        with self._write_lock:
            while (chunk := self._take(only_full)) is not None:
                self.write_docs(chunk)

    # -- writing --------------------------------------------------------------------------------

    def write_docs(self, docs: list[Doc]) -> None:
        """Write one batch: resolve namespaces, split into rounds, plan, bulk write."""
        sink = self.sink
        by_ns: dict[tuple[str, str], list[_Entry]] = {}
        rejected: list[tuple[Doc, str]] = []
        for doc in docs:
            db, why = sink.db.resolve(doc)
            coll, why2 = (None, None) if why else sink.coll.resolve(doc)
            if db is None or coll is None:
                rejected.append((doc, why or why2 or "invalid namespace"))
                continue
            into = by_ns.setdefault((db, coll), [])
            entry, why = self._entry(doc)
            if entry is None:
                rejected.append((doc, why or "invalid 'on' field"))
                continue
            into.append(entry)
        self._prepare(list(by_ns))
        if rejected:
            self._to_dlq(rejected)
        for (db, coll), entries in by_ns.items():
            collection = self.client[db][coll]
            for rnd in _rounds(entries):
                for part in chunks(rnd, self.bulk.size):
                    self._write_round(collection, part)

    def _prepare(self, namespaces: list[tuple[str, str]]) -> None:
        """Called with a batch's namespaces, in the order documents first name them,
        before anything of the batch is written (the time-series sink creates its
        collections here; the names are resolved once per document, in :meth:`write_docs`)."""

    def _entry(self, doc: Doc) -> tuple[_Entry | None, str | None]:
        on = self.sink.stage.on
        if on == ("_id",):
            if "_id" not in doc:  # MongoDB $merge generates the _id of a document without one
                doc2 = {"_id": ObjectId(), **doc}
                return _Entry(doc2, doc, {"_id": doc2["_id"]}, (doc2["_id"],)), None
            v = doc["_id"]
            if v is None or isinstance(v, list):
                return None, "$merge write error: 'on' field '_id' cannot be missing, null, undefined or an array"
            return _Entry(doc, doc, {"_id": v}, _hashable([v])), None
        values = []
        for name, parts in zip(on, self.sink.on_parts, strict=True):
            v = get_path(doc, tuple(parts))
            if v is MISSING or v is None or isinstance(v, list):
                return None, f"$merge write error: 'on' field '{name}' cannot be missing, null, undefined or an array"
            values.append(v)
        return _Entry(doc, doc, dict(zip(on, values, strict=True)), _hashable(values)), None

    def _write_round(self, collection: Any, entries: list[_Entry]) -> None:
        sink = self.sink
        mode = sink.mode
        existing: dict[Any, Doc] = {}
        if mode.needs_existing:
            existing = self._read_existing(collection, entries, mode.existing_full)
        planned = _Planned()
        mode.plan(entries, existing, planned)
        if planned.dlq:
            self._to_dlq([(e.original, why) for e, why in planned.dlq])
        if planned.ops:
            self._execute(collection, planned)

    def _read_existing(self, collection: Any, entries: list[_Entry], full: bool) -> dict[Any, Doc]:
        on = self.sink.stage.on
        if on == ("_id",):
            query: Doc = {"_id": {"$in": [e.filter["_id"] for e in entries]}}
        else:
            query = {"$or": [e.filter for e in entries]}
        projection = None if full else {f: 1 for f in ("_id", *on)}
        docs = self._retrying("read existing documents", lambda: list(collection.find(query, projection)))
        out: dict[Any, Doc] = {}
        for d in docs:
            vals = [get_path(d, tuple(p)) for p in self.sink.on_parts]
            out[_hashable(vals)] = d
        return out

    def _attempts(self, what: str) -> Attempts:
        sink = self.sink
        return Attempts(
            sink.processor_name, sink.describe_target(), what,
            backoff_initial_s=sink.backoff_initial_s, backoff_max_s=sink.backoff_max_s,
        )

    def _retrying(self, what: str, fn: Callable[[], Any]) -> Any:
        with self._attempts(what) as attempts:
            while True:
                try:
                    return fn()
                except PyMongoError as exc:
                    if not is_transient(exc):
                        raise
                    self.sink._count(retries=1)
                    attempts.retry(f"{type(exc).__name__}: {exc}")

    def _execute(self, collection: Any, planned: _Planned) -> None:
        """Bulk-write ``planned.ops``; retry transient failures forever, DLQ permanent ones."""
        with self._attempts(f"writing {len(planned.ops)} document(s) to {collection.full_name}") as attempts:
            self._execute_attempts(collection, planned, attempts)

    def _execute_attempts(self, collection: Any, planned: _Planned, attempts: Attempts) -> None:
        sink = self.sink
        pending = list(range(len(planned.ops)))
        replayed = False  # an earlier attempt may have applied some operations
        while pending:
            n = self.bulk.size
            batch, rest = pending[:n], pending[n:]
            t0 = time.monotonic()
            try:
                collection.bulk_write([planned.ops[i] for i in batch], ordered=False)
                sink._count(written=len(batch))
                self.bulk.succeeded(time.monotonic() - t0)
                pending = rest
                continue
            except BulkWriteError as exc:
                again = self._after_bulk_error(collection, planned, batch, dict(exc.details), replayed)
                pending = again + rest
                if not again:
                    continue
                reason = "write concern / transient write errors"
            except KeyError:
                # FerretDB v1 answers an `update` batch with a write error without `n` /
                # `nModified` (pymongo then fails with KeyError), stops at the failing update
                # even when unordered, and reports index 0. Redo this batch one document at a
                # time: every operation is idempotent and single calls report errors reliably.
                self._execute_one_by_one(collection, planned, pending)
                return
            except (InvalidDocument, DocumentTooLarge):
                # Client-side encoding failure: find the bad documents, DLQ them, write the rest.
                pending = self._drop_unencodable(planned, pending)
                replayed = True
                continue
            except OperationFailure as exc:
                if is_transient(exc):
                    reason = f"{type(exc).__name__}: {exc}"
                elif exc.code in FATAL_CODES:
                    raise RuntimeError(f"{sink.describe_target()}: {exc}") from None
                else:  # the whole command was refused: every document gets the server's message
                    errmsg = str(exc.details.get("errmsg", exc)) if exc.details else str(exc)
                    self._to_dlq([(planned.entries[i].original, f"{self.sink.kind} write error: {errmsg}") for i in batch])
                    pending = rest
                    continue
            except ConnectionFailure as exc:
                self.bulk.failed(exc, time.monotonic() - t0)
                reason = f"{type(exc).__name__}: {exc}"
            replayed = True
            sink._count(retries=1)
            attempts.retry(f"{len(pending)} pending: {reason}")

    def _execute_one_by_one(self, collection: Any, planned: _Planned, pending: list[int]) -> None:
        dlq: list[tuple[Doc, str]] = []
        written = 0
        for i in pending:
            kind, f, d, upsert = planned.specs[i]
            call = SINGLE_CALLS[kind]
            try:
                self._retrying("write one document", lambda: call(collection, f, d, upsert))  # noqa: B023
                written += 1
            except OperationFailure as exc:
                if exc.code in FATAL_CODES:
                    raise RuntimeError(f"{self.sink.describe_target()}: {exc}") from None
                if exc.code == DUPLICATE_KEY and kind == "insert" and self._already_written(collection, planned, i):
                    written += 1
                    continue
                errmsg = (exc.details or {}).get("errmsg", str(exc))
                dlq.append((planned.entries[i].original, f"{self.sink.kind} write error: {errmsg}"))
            except (InvalidDocument, DocumentTooLarge, KeyError) as exc:
                dlq.append((planned.entries[i].original, f"{self.sink.kind} write error: {type(exc).__name__}: {exc}"))
        self.sink._count(written=written)
        if dlq:
            self._to_dlq(dlq)

    def _after_bulk_error(
        self, collection: Any, planned: _Planned, pending: list[int], details: Doc, replayed: bool
    ) -> list[int]:
        """Sort a BulkWriteError's per-document errors; return the indexes to retry."""
        retry: list[int] = []
        failed: set[int] = set()
        dlq: list[tuple[Doc, str]] = []
        for err in details.get("writeErrors", []):
            i = pending[err["index"]]
            failed.add(i)
            code = err.get("code")
            if code in TRANSIENT_CODES:
                retry.append(i)
            elif code == DUPLICATE_KEY and replayed and planned.specs[i][0] == "insert" and self._already_written(collection, planned, i):
                self.sink._count(written=1)  # our own insert from an attempt that lost its reply
            else:
                dlq.append((planned.entries[i].original, f"{self.sink.kind} write error: {err.get('errmsg', 'unknown error')}"))
        if details.get("writeConcernErrors"):
            # Applied but not acknowledged as required: the operations are idempotent, redo them.
            retry = [i for i in pending if i not in failed or i in retry]
        else:
            self.sink._count(written=len(pending) - len(failed))
        if dlq:
            self._to_dlq(dlq)
        return retry

    def _already_written(self, collection: Any, planned: _Planned, i: int) -> bool:
        doc = planned.entries[i].doc
        found = self._retrying("check a replayed insert", lambda: collection.find_one({"_id": doc.get("_id")}))
        if found is None:
            return False
        try:
            return bool(bson.encode(found) == bson.encode(doc))
        except (InvalidDocument, TypeError):
            return bool(found == doc)

    def _drop_unencodable(self, planned: _Planned, pending: list[int]) -> list[int]:
        keep: list[int] = []
        dlq: list[tuple[Doc, str]] = []
        limit = MAX_BSON_SIZE
        for i in pending:
            doc = planned.entries[i].doc
            try:
                size = len(bson.encode(doc))
            except (InvalidDocument, TypeError, OverflowError) as exc:
                dlq.append((planned.entries[i].original, f"{self.sink.kind} write error: document cannot be encoded as BSON: {exc}"))
                continue
            if size > limit:
                dlq.append((planned.entries[i].original, f"{self.sink.kind} write error: document is {size} bytes, larger than the {limit} byte BSON limit"))
                continue
            keep.append(i)
        if not dlq:  # nothing identifiable: treat every pending document as rejected rather than loop
            dlq = [(planned.entries[i].original, f"{self.sink.kind} write error: batch could not be encoded") for i in pending]
            keep = []
        self._to_dlq(dlq)
        return keep

    def _to_dlq(self, rejected: list[tuple[Doc, str]]) -> None:
        sink = self.sink
        if self.dlq is None:
            sink._count(dropped=len(rejected))
            for doc, why in rejected:
                log.error("%s: document rejected and no DLQ is configured: %s (_id=%r)", sink.describe_target(), why, doc.get("_id"))
            return
        self.dlq.write([dlq_document(why, doc, sink.processor_name) for doc, why in rejected])
        sink._count(dlq=len(rejected))


MergeSink.partition_cls = MergePartition

def _rounds(entries: list[_Entry]) -> list[list[_Entry]]:
    """Split so that no key repeats within a round (rounds run in order)."""
    seen: dict[Any, int] = {}
    rounds: list[list[_Entry]] = []
    for e in entries:
        r = seen.get(e.key, -1) + 1
        seen[e.key] = r
        if r == len(rounds):
            rounds.append([])
        rounds[r].append(e)
    return rounds
