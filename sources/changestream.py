"""Change-stream ``$source`` on a ``mongodb``/``atlas`` connection: a collection, a
database or a whole cluster as a stream of MongoDB change events.

ASP's rules: https://www.mongodb.com/docs/atlas/atlas-stream-processing/sp-agg-source/
(change stream forms and ``config``) and
https://www.mongodb.com/docs/atlas/atlas-stream-processing/multi-collection-initial-sync/
(``initialSync``). The change-event shape is MongoDB's:
https://www.mongodb.com/docs/manual/reference/change-events/

Two backends give the same events, chosen when the partition starts (and printed):

- ``watch``: pymongo's ``watch()`` on a server with change streams (a replica set,
  a sharded cluster, Atlas).
- ``oplog``: FerretDB v1 has no ``$changeStream`` but, once the capped collection
  ``local.oplog.rs`` exists, records each write there (inserts ``op: "i"`` with the
  document in ``o``; updates and replacements ``op: "u"`` with the whole new document
  under ``o.$set`` and ``o2._id``; deletes ``op: "d"``; ``ts`` a BSON Timestamp and
  ``wall``). Its tailable cursors end after the first batch, so the partition polls
  ``ts > last`` with a bounded sleep. The OpLog cannot tell an update from a
  replacement and keeps no update description: both become ``replace`` events (the new
  whole document), the only shape that claims nothing the OpLog does not record.

A change stream is one ordered stream, so the source has one partition per watched
namespace set (one watermark, as in ASP). Its recovery state (Bytewax snapshot) is the
resume token (``watch``) or OpLog timestamp (``oplog``) after the last emitted event,
plus the ``initialSync`` progress: a restart resumes after the last checkpoint
(at-least-once), and a position the server no longer holds fails the processor.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bson import Binary, Decimal128, Int64, ObjectId, Regex, Timestamp
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from pymongo import MongoClient
from pymongo.errors import OperationFailure, PyMongoError

from sources.base import SOURCE_DLQ_KEY, ProgressBatch, RawBatch, SourceItem, now_ms, source_dlq
from translator import ir
from translator.connections import Connection, mask_uri
from translator.errors import TranslateError
from translator.mql.values import datetime_to_ms
from translator.options import ProcessorOptions

log = logging.getLogger(__name__)

Doc = dict[str, Any]
State = dict[str, Any]

CONFIG_KEYS = frozenset(
    {"startAfter", "startAtOperationTime", "fullDocument", "fullDocumentOnly", "fullDocumentBeforeChange",
     "pipeline", "maxAwaitTimeMS"}
)
FULL_DOCUMENT = ("updateLookup", "required", "whenAvailable")
BEFORE_CHANGE = ("off", "required", "whenAvailable")
READ_PREFERENCES = ("primary", "primaryPreferred", "secondary", "secondaryPreferred", "nearest")
# Stages MongoDB allows in a change stream's pipeline (they must keep clusterTime/wallTime).
FILTER_STAGES = frozenset(
    {"$match", "$project", "$addFields", "$set", "$unset", "$replaceRoot", "$replaceWith", "$redact"}
)
INTERNAL_DBS = frozenset({"admin", "local", "config"})
OPLOG_NS = "local.oplog.rs"
NO_CHANGE_STREAMS = frozenset({238, 40573})  # NotImplemented (FerretDB); "only supported on replica sets"
SERVER_TIMEOUT_MS = 10_000  # server selection, connect, and every find's maxTimeMS
MAX_POLL_SLEEP_S = 0.2  # the OpLog poll's sleep when caught up (at most maxAwaitTimeMS)
LOOKBACK_S = 3  # OpLog entries up to this much older than the newest read are re-checked
OPLOG_QUERY_TIMEOUT_MS = 30_000  # each OpLog query scans the whole capped collection
ADVANCE_S = 10.0  # how often a caught-up OpLog poll moves its position past other namespaces
PROGRESS_S = 1.0  # how often an idle change stream reports the server's clock (ProgressBatch)

OPLOG_HINT = (
    "on FerretDB create it with `scripts/services.sh up mongodb`, or in mongosh: "
    "db.getSiblingDB('local').createCollection('oplog.rs', {capped: true, size: 8388608})"
)


# ---- settings ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChangeStreamSettings:
    """The change-stream ``$source``, checked at create time (no network involved)."""

    path: str
    uri: str
    connection: str
    db: str | None
    colls: tuple[str, ...]
    full_document: str
    full_document_only: bool
    before_change: str
    pipeline: tuple[Doc, ...]
    start_after: Doc | None
    start_at: Timestamp | None
    max_await_ms: int
    initial_sync: bool
    initial_sync_parallelism: int
    read_preference: str | None
    read_preference_tags: tuple[Doc, ...]
    batch_size: int
    processor: str

    @property
    def part(self) -> str:
        """The one partition's key, named after the watched namespaces."""
        if self.db is None:
            return "changestream:*"
        if not self.colls:
            return f"changestream:{self.db}.*"
        return f"changestream:{self.db}.{','.join(self.colls)}"

    def watches(self, ns: str) -> bool:
        db, _, coll = ns.partition(".")
        if self.db is None:
            return db not in INTERNAL_DBS
        return db == self.db and (not self.colls or coll in self.colls)

    @staticmethod
    def from_stage(
        src: ir.SourceStage, conn: Connection, options: ProcessorOptions, *, windowed: bool = False
    ) -> ChangeStreamSettings:
        path = src.path
        cpath = f"{path}.config"
        if src.topic:
            raise TranslateError(f"{path}.topic", "a change-stream $source (MongoDB connection) takes db/coll, not 'topic'")
        if src.coll and src.db is None:
            raise TranslateError(f"{path}.coll", "'coll' needs 'db' (a collection change stream is {db, coll})")
        if any(not c for c in src.coll) or src.db == "":
            raise TranslateError(f"{path}.coll" if src.db else f"{path}.db", "must be a non-empty string")
        cfg = src.config
        for k in cfg:
            if k not in CONFIG_KEYS:
                raise TranslateError(f"{cpath}.{k}", f"unknown change stream option '{k}'; allowed: {', '.join(sorted(CONFIG_KEYS))}")
        full = cfg.get("fullDocument", "updateLookup")
        if full not in FULL_DOCUMENT:
            raise TranslateError(f"{cpath}.fullDocument", f"expected one of {', '.join(FULL_DOCUMENT)}; got {full!r}")
        before = cfg.get("fullDocumentBeforeChange", "off")
        if before not in BEFORE_CHANGE:
            raise TranslateError(f"{cpath}.fullDocumentBeforeChange", f"expected one of {', '.join(BEFORE_CHANGE)}; got {before!r}")
        only = cfg.get("fullDocumentOnly", False)
        if not isinstance(only, bool):
            raise TranslateError(f"{cpath}.fullDocumentOnly", f"expected a boolean, got {only!r}")
        start_after = cfg.get("startAfter")
        start_at = cfg.get("startAtOperationTime")
        if start_after is not None and start_at is not None:
            raise TranslateError(cpath, "takes 'startAfter' or 'startAtOperationTime', not both")
        if start_after is not None and not isinstance(start_after, dict):
            raise TranslateError(f"{cpath}.startAfter", "expected a resume token (a change event's _id document)")
        at: Timestamp | None = None
        if isinstance(start_at, Timestamp):
            at = start_at
        elif isinstance(start_at, datetime):
            at = Timestamp(datetime_to_ms(start_at) // 1000, 0)
        elif start_at is not None:
            raise TranslateError(f"{cpath}.startAtOperationTime", f"expected a date or a timestamp, got {start_at!r}")
        await_ms = cfg.get("maxAwaitTimeMS", 1000)
        if isinstance(await_ms, bool) or not isinstance(await_ms, int) or await_ms < 1:
            raise TranslateError(f"{cpath}.maxAwaitTimeMS", f"expected a positive integer (milliseconds), got {await_ms!r}")
        pipeline = _filter_pipeline(cfg.get("pipeline", []), f"{cpath}.pipeline")
        sync, parallelism = _initial_sync(src.initial_sync, f"{path}.initialSync")
        if sync and windowed:
            raise TranslateError(f"{path}.initialSync", "initialSync cannot be combined with a window stage (as in Atlas Stream Processing)")
        pref = src.read_preference
        if pref is not None and pref not in READ_PREFERENCES:
            raise TranslateError(f"{path}.readPreference", f"expected one of {', '.join(READ_PREFERENCES)}; got {pref!r}")
        tags = src.read_preference_tags or []
        if not isinstance(tags, list) or not all(isinstance(t, dict) for t in tags):
            raise TranslateError(f"{path}.readPreferenceTags", "expected an array of tag documents")
        if not conn.uri:
            raise TranslateError(f"connections.{conn.name}.uri", "a MongoDB connection needs a uri")
        return ChangeStreamSettings(
            path=path, uri=conn.uri, connection=conn.name, db=src.db, colls=src.coll,
            full_document=full, full_document_only=only, before_change=before, pipeline=pipeline,
            start_after=start_after, start_at=at, max_await_ms=await_ms, initial_sync=sync,
            initial_sync_parallelism=parallelism, read_preference=pref, read_preference_tags=tuple(tags),
            batch_size=options.batch_size, processor=options.name,
        )


def _filter_pipeline(v: Any, path: str) -> tuple[Doc, ...]:
    """``config.pipeline``: parsed with the pipeline's own stage parsers (so its errors are
    path-named), limited to the stages MongoDB allows in a change stream."""
    from translator.parse import STAGE_PARSERS

    if not isinstance(v, list):
        raise TranslateError(path, "expected an array of stages")
    for i, stage in enumerate(v):
        if not isinstance(stage, dict) or len(stage) != 1:
            raise TranslateError(f"{path}[{i}]", "expected a stage document with one key")
        name = next(iter(stage))
        if name not in FILTER_STAGES:
            raise TranslateError(f"{path}[{i}]", f"{name} is not allowed in a change stream pipeline; allowed: {', '.join(sorted(FILTER_STAGES))}")
        STAGE_PARSERS[name](stage[name], f"{path}[{i}].{name}")
    return tuple(v)


def _initial_sync(v: Any, path: str) -> tuple[bool, int]:
    if v is None:
        return False, 1
    if not isinstance(v, dict):
        raise TranslateError(path, "expected {enable: <bool>, parallelism: <int>}")
    for k in v:
        if k not in ("enable", "parallelism"):
            raise TranslateError(f"{path}.{k}", "unknown initialSync option; allowed: enable, parallelism")
    enable = v.get("enable", False)
    if not isinstance(enable, bool):
        raise TranslateError(f"{path}.enable", f"expected a boolean, got {enable!r}")
    par = v.get("parallelism", 1)
    if isinstance(par, bool) or not isinstance(par, int) or par < 1:
        raise TranslateError(f"{path}.parallelism", f"expected a positive integer, got {par!r}")
    return enable, par


# ---- change events -----------------------------------------------------------------------


def ts_token(ts: Timestamp) -> Doc:
    """The OpLog backend's resume token: the entry's ``ts`` as 16 hex digits."""
    return {"_data": f"{ts.time:08x}{ts.inc:08x}"}


def token_ts(token: Any, path: str) -> Timestamp:
    data = token.get("_data") if isinstance(token, dict) else None
    if not isinstance(data, str) or len(data) != 16:
        raise RuntimeError(f"{path}: {token!r} is not a resume token of this server's OpLog (expected {{_data: '<16 hex digits>'}})")
    try:
        return Timestamp(int(data[:8], 16), int(data[8:], 16))
    except ValueError:
        raise RuntimeError(f"{path}: {token!r} is not a resume token of this server's OpLog") from None


def token_cluster_time(token: Any) -> Timestamp | None:
    """The cluster time inside a server's resume token: its ``_data`` hex string starts
    with the KeyString of a Timestamp (type byte ``82``, then seconds and increment, 4 bytes
    each, big-endian); None for anything else."""
    data = token.get("_data") if isinstance(token, dict) else None
    if not isinstance(data, str) or len(data) < 18 or not data.startswith("82"):
        return None
    try:
        return Timestamp(int(data[2:10], 16), int(data[10:18], 16))
    except ValueError:
        return None


def oplog_event(entry: Doc) -> Doc | None:
    """A change event from an OpLog entry (None for entries that are not document writes)."""
    op = entry.get("op")
    ts: Timestamp = entry["ts"]
    db, _, coll = str(entry.get("ns", "")).partition(".")
    ev: Doc = {"_id": ts_token(ts)}
    if op == "i":
        full = entry["o"]
        ev["operationType"] = "insert"
    elif op == "u":
        full = entry["o"].get("$set", {})
        ev["operationType"] = "replace"
    elif op == "d":
        full = None
        ev["operationType"] = "delete"
    else:
        return None
    ev["clusterTime"] = ts
    ev["wallTime"] = entry.get("wall") or datetime.fromtimestamp(ts.time, UTC)
    if full is not None:
        ev["fullDocument"] = full
    ev["ns"] = {"db": db, "coll": coll}
    key = entry.get("o2") if op == "u" else entry["o"]
    ev["documentKey"] = {"_id": (key or {}).get("_id", (full or {}).get("_id"))}
    return ev


def event_time_ms(ev: Doc) -> int:
    """A change event's own time: ``wallTime`` (ms), else ``clusterTime`` (seconds)."""
    wall = ev.get("wallTime")
    if isinstance(wall, datetime):
        return datetime_to_ms(wall)
    ct = ev.get("clusterTime")
    return ct.time * 1000 if isinstance(ct, Timestamp) else now_ms()


# ---- backends ------------------------------------------------------------------------------


def _ts_int(ts: Timestamp) -> int:
    return (ts.time << 32) | ts.inc


class _OplogBackend:
    """FerretDB's OpLog, polled by ``ts``. Position: the largest ``ts`` read, plus the
    ``ts`` of the watched entries read within :data:`LOOKBACK_S` below it.

    Why the look-back: with concurrent writers an OpLog entry can become visible after
    an entry with a larger ``ts`` (measured on FerretDB 1.24: 10 of 600 inserts from 4
    threads), so "``ts > last``" alone would skip it. Every poll re-reads the last
    :data:`LOOKBACK_S` seconds and emits the entries not seen yet.
    """

    name = "oplog"

    def __init__(self, client: MongoClient[Doc], s: ChangeStreamSettings, resume: State | None) -> None:
        self.s = s
        self.client = client
        self.coll = client.local["oplog.rs"]
        self.filter: Doc = {}
        if s.db is not None:
            if s.colls:
                self.filter["ns"] = {"$in": [f"{s.db}.{c}" for c in s.colls]}
            else:
                self.filter["ns"] = {"$regex": "^" + _re_escape(s.db) + r"\."}
        self.recent: set[int] = set()
        if resume is not None:
            self.last = token_ts(resume["token"], f"{s.path} (checkpoint)")
            self.recent = set(resume.get("recent", ()))
            self.floor = Timestamp(*resume.get("floor", (0, 0)))
            self._check_held(self.last, "the checkpointed position")
        elif s.start_after is not None:
            self.last = token_ts(s.start_after, f"{s.path}.config.startAfter")
            self.floor = self.last
            self._check_held(self.last, "config.startAfter")
        elif s.start_at is not None:
            t = s.start_at
            self.last = Timestamp(t.time, t.inc - 1) if t.inc > 0 else Timestamp(t.time - 1, 0xFFFFFFFF)
            self.floor = self.last
        else:
            self.last = self._newest()
            self.floor = self.last  # never look back before where the stream started
        self.last_advance = time.monotonic()

    def _newest(self) -> Timestamp:
        """The newest entry's ``ts``; on an empty OpLog, the server's clock."""
        top = list(self.coll.find({}, {"ts": 1}).sort("ts", -1).limit(1).max_time_ms(OPLOG_QUERY_TIMEOUT_MS))
        if top:
            return top[0]["ts"]
        local = self.client.admin.command("hello").get("localTime")
        return Timestamp(int(local.timestamp()), 0) if isinstance(local, datetime) else Timestamp(0, 0)

    def _check_held(self, ts: Timestamp, what: str) -> None:
        """A position older than the oldest entry the capped OpLog still holds would
        silently skip events: fail instead."""
        low = list(self.coll.find({}, {"ts": 1}).sort("ts", 1).limit(1).max_time_ms(OPLOG_QUERY_TIMEOUT_MS))
        if low and low[0]["ts"] > ts:
            raise RuntimeError(
                f"{self.s.path}: cannot resume the change stream: {what} (OpLog ts {ts.time}.{ts.inc}) is older than "
                f"the oldest entry {OPLOG_NS} still holds (ts {low[0]['ts'].time}.{low[0]['ts'].inc}); "
                f"events in between may be lost. Start the processor without its checkpoint to read from now"
            )

    def token(self) -> Doc:
        return ts_token(self.last)

    def state(self) -> Doc:
        return {"recent": sorted(self.recent), "floor": (self.floor.time, self.floor.inc)}

    def start_ts(self) -> Timestamp | None:
        return self.last

    def poll(self, limit: int) -> tuple[list[Doc], bool]:
        """Events after ``last`` (in ``ts`` order), late-visible ones within the
        look-back, and whether more are waiting.

        One query per poll: FerretDB scans the whole OpLog for every query (no index on
        ``ts``), so the look-back rides along with the read of new entries; ``recent``
        entries come first in ``ts`` order, hence the limit grows by their number."""
        now = time.monotonic()
        newest = self._newest() if now - self.last_advance > ADVANCE_S else None
        lo = max(Timestamp(max(self.last.time - LOOKBACK_S, 0), 0), self.floor)
        cap = limit + len(self.recent)
        entries = self._find({**self.filter, "ts": {"$gt": lo}}, cap)
        more = len(entries) >= cap
        events = []
        for e in entries:
            ts = e["ts"]
            key = _ts_int(ts)
            if key in self.recent:
                continue
            self.recent.add(key)
            if ts > self.last:
                self.last = ts
            if not self.s.watches(str(e.get("ns", ""))):
                continue
            ev = oplog_event(e)
            if ev is not None:
                events.append(ev)
        if newest is not None:
            self.last_advance = now
            if not more and newest > self.last:
                # Caught up: nothing watched up to ``newest``, so move past other namespaces'
                # entries (a checkpoint then never points at an entry the capped OpLog dropped).
                self.last = newest
        floor = _ts_int(max(Timestamp(max(self.last.time - LOOKBACK_S, 0), 0), self.floor))
        self.recent = {t for t in self.recent if t > floor}
        return events, more

    def progress_ms(self) -> int | None:
        """A bound below every event still to come, asked after a poll found nothing: the
        server's clock less :data:`LOOKBACK_S` (an entry becomes visible within the
        look-back of its ``ts``, and its ``wall`` is taken on the same clock)."""
        local = self.client.admin.command("hello").get("localTime")
        if not isinstance(local, datetime):
            return None
        return datetime_to_ms(local if local.tzinfo else local.replace(tzinfo=UTC)) - LOOKBACK_S * 1000

    def _find(self, flt: Doc, limit: int) -> list[Doc]:
        return list(self.coll.find(flt).sort("ts", 1).limit(limit).max_time_ms(OPLOG_QUERY_TIMEOUT_MS))

    def sleep_s(self) -> float:
        return min(MAX_POLL_SLEEP_S, self.s.max_await_ms / 1000)

    def close(self) -> None:
        pass


class _WatchBackend:
    """pymongo's ``watch()``. Position: the stream's resume token (postBatchResumeToken
    when there are no events)."""

    name = "watch"

    def __init__(self, client: MongoClient[Doc], s: ChangeStreamSettings, resume: State | None) -> None:
        self.s = s
        kwargs: Doc = {
            "full_document": s.full_document,
            "max_await_time_ms": s.max_await_ms,
            "batch_size": s.batch_size,
        }
        if s.before_change != "off":
            kwargs["full_document_before_change"] = s.before_change
        if resume is not None:
            kwargs["start_after"] = resume["token"]
        elif s.start_after is not None:
            kwargs["start_after"] = s.start_after
        elif s.start_at is not None:
            kwargs["start_at_operation_time"] = s.start_at
        pipeline = list(s.pipeline)
        target: Any
        if s.db is None:
            target = client
        elif len(s.colls) == 1:
            target = client[s.db][s.colls[0]]
        else:
            target = client[s.db]
            if s.colls:
                pipeline.insert(0, {"$match": {"ns.coll": {"$in": list(s.colls)}}})
        try:
            self.stream = target.watch(pipeline, **kwargs)
        except OperationFailure as exc:
            raise _lost(s, exc) from None

    def token(self) -> Any:
        return self.stream.resume_token

    def state(self) -> Doc:
        return {}

    def start_ts(self) -> Timestamp | None:
        return None

    def poll(self, limit: int) -> tuple[list[Doc], bool]:
        events: list[Doc] = []
        try:
            while len(events) < limit:
                ev = self.stream.try_next()  # waits up to maxAwaitTimeMS when caught up
                if ev is None:
                    return events, False
                events.append(ev)
        except OperationFailure as exc:
            raise _lost(self.s, exc) from None
        return events, True

    def progress_ms(self) -> int | None:
        """After an empty batch the resume token is the server's postBatchResumeToken, a
        high-water mark: every later event has a larger cluster time. Its time less
        :data:`LOOKBACK_S` (``wallTime``, the event time, comes from each shard's clock)."""
        ts = token_cluster_time(self.stream.resume_token)
        return None if ts is None else ts.time * 1000 - LOOKBACK_S * 1000

    def sleep_s(self) -> float:
        return 0.0  # try_next already waited maxAwaitTimeMS

    def close(self) -> None:
        self.stream.close()


def _lost(s: ChangeStreamSettings, exc: OperationFailure) -> RuntimeError:
    if exc.code in (280, 286):  # ChangeStreamFatalError, ChangeStreamHistoryLost
        return RuntimeError(
            f"{s.path}: cannot resume the change stream: the resume point is no longer in the server's oplog "
            f"({exc.code}: {exc.details.get('errmsg') if exc.details else exc}); events in between are lost"
        )
    return RuntimeError(f"{s.path}: change stream failed: {exc}")


def _re_escape(text: str) -> str:
    return re.escape(text)


def _read_preference(s: ChangeStreamSettings) -> dict[str, Any]:
    """``readPreference``/``readPreferenceTags`` as client options (tags need a non-primary mode)."""
    if s.read_preference is None:
        return {}
    out: dict[str, Any] = {"readPreference": s.read_preference}
    if s.read_preference_tags and s.read_preference != "primary":
        out["readPreferenceTags"] = [",".join(f"{k}:{v}" for k, v in t.items()) for t in s.read_preference_tags]
    return out


def choose_backend(client: MongoClient[Doc], s: ChangeStreamSettings) -> str:
    """``watch`` where the server runs a change stream (asked, not guessed from
    ``hello``: FerretDB started with ``--repl-set-name`` reports a ``setName`` but has no
    ``$changeStream``), else ``oplog`` where ``local.oplog.rs`` exists, else a clear error."""
    hello = client.admin.command("hello")
    if "setName" in hello or hello.get("msg") == "isdbgrid":
        target: Any = client if s.db is None else client[s.db] if len(s.colls) != 1 else client[s.db][s.colls[0]]
        try:
            target.watch(max_await_time_ms=1).close()
            return "watch"
        except OperationFailure as exc:
            if exc.code not in NO_CHANGE_STREAMS:
                raise
    if "oplog.rs" in client.local.list_collection_names(filter={"name": "oplog.rs"}, maxTimeMS=SERVER_TIMEOUT_MS):
        return "oplog"
    raise RuntimeError(
        f"{s.path}: {mask_uri(s.uri)} has no change streams (not a replica set) and no OpLog collection "
        f"{OPLOG_NS}; {OPLOG_HINT}"
    )


BACKENDS: dict[str, Any] = {"oplog": _OplogBackend, "watch": _WatchBackend}


# ---- the partition -------------------------------------------------------------------------


class _ChangeStreamPartition(StatefulSourcePartition[SourceItem, State]):
    """State: ``{backend, token, sync}``; ``sync`` is the initialSync progress
    (``{i: collection index, after: last _id}``) or None once it is done."""

    def __init__(self, s: ChangeStreamSettings, resume: State | None) -> None:
        self.s = s
        self.client: MongoClient[Doc] = MongoClient(
            s.uri,
            tz_aware=True,
            serverSelectionTimeoutMS=SERVER_TIMEOUT_MS,
            connectTimeoutMS=SERVER_TIMEOUT_MS,
            socketTimeoutMS=s.max_await_ms + 30_000,
            appname=f"mqlflow:{s.processor}",
            **_read_preference(s),
        )
        try:
            kind = choose_backend(self.client, s)
        except PyMongoError as exc:
            raise RuntimeError(f"{s.path}: cannot reach MongoDB connection '{s.connection}' at {mask_uri(s.uri)} ({type(exc).__name__}: {exc})") from None
        if resume is not None and resume.get("backend") != kind:
            raise RuntimeError(
                f"{s.path}: the checkpoint was taken with the '{resume.get('backend')}' backend but the server now "
                f"needs '{kind}'; start the processor without its checkpoint"
            )
        if kind == "oplog" and s.before_change == "required":
            raise RuntimeError(
                f"{s.path}.config.fullDocumentBeforeChange: 'required' cannot be met: FerretDB's OpLog records no "
                f"pre-images (use 'whenAvailable' or 'off')"
            )
        print(f"mqlflow: change stream $source {s.part[len('changestream:'):]} on {mask_uri(s.uri)}: backend {kind}"
              f"{' (pymongo watch)' if kind == 'watch' else ' (polling ' + OPLOG_NS + ')'}", file=sys.stderr, flush=True)
        log.info("change stream %s: backend %s", s.part, kind)
        self.kind = kind
        try:
            self.backend = BACKENDS[kind](self.client, s, resume)
        except PyMongoError as exc:
            raise RuntimeError(f"{s.path}: opening the change stream ({kind}) failed: {type(exc).__name__}: {exc}") from None
        self.filter_steps = _compile_filter(s.pipeline) if kind == "oplog" and s.pipeline else ()
        if resume is not None:
            self.sync: State | None = resume.get("sync")
        else:
            self.sync = {"i": 0, "ranges": None} if s.initial_sync else None
        self.pool: ThreadPoolExecutor | None = None
        self.sync_colls = self._sync_collections() if self.sync is not None else []
        self.sync_clock = self.backend.start_ts()
        self.caught_up = False
        self.next_progress = 0.0

    # -- Bytewax callbacks -----------------------------------------------------------------

    def next_batch(self) -> list[SourceItem]:
        if self.sync is not None:
            return self._sync_batch()
        try:
            events, more = self.backend.poll(self.s.batch_size)
        except PyMongoError as exc:
            raise RuntimeError(f"{self.s.path}: reading the change stream failed ({type(exc).__name__}: {exc})") from None
        self.caught_up = not more
        if not events:
            return self._progress() if self.caught_up else []
        if self.filter_steps:
            events = self._filter(events)
        batch: RawBatch = [self._record(ev) if SOURCE_DLQ_KEY not in ev else (ev, now_ms()) for ev in events]
        return [(self.s.part, batch)] if batch else []

    def _progress(self) -> list[SourceItem]:
        """An idle stream still moves the watermark: at most every :data:`PROGRESS_S`, the
        backend's bound below every event still to come (docs/windows.md#change-streams)."""
        now = time.monotonic()
        if now < self.next_progress:
            return []
        self.next_progress = now + PROGRESS_S
        try:
            ms = self.backend.progress_ms()
        except PyMongoError as exc:
            log.warning("change stream %s: reading the server's clock failed: %s", self.s.part, exc)
            return []
        return [] if ms is None else [(self.s.part, ProgressBatch(ms))]

    def next_awake(self) -> datetime | None:
        if not self.caught_up:
            return None
        return datetime.now(UTC) + timedelta(seconds=self.backend.sleep_s())

    def snapshot(self) -> State:
        sync = None if self.sync is None else {**self.sync}
        return {"backend": self.kind, "token": self.backend.token(), "sync": sync, **self.backend.state()}

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True)
        self.backend.close()
        self.client.close()

    # -- events -> records -----------------------------------------------------------------

    def _record(self, ev: Doc) -> tuple[Doc, int]:
        s = self.s
        t = event_time_ms(ev)
        ns = ev.get("ns") or {}
        meta = {"type": "atlas", "db": ns.get("db"), "coll": ns.get("coll")}
        if self.kind == "oplog" and s.before_change == "whenAvailable":
            ev["fullDocumentBeforeChange"] = None
        full = ev.get("fullDocument")
        if full is None and (s.full_document == "required" or s.full_document_only):
            why = "config.fullDocument is 'required'" if s.full_document == "required" else "config.fullDocumentOnly is true"
            reason = f"Change event has no fullDocument ({why}): operationType {ev.get('operationType')}"
            return source_dlq(reason, {**ev, "_stream_meta": {"source": meta}}), t
        doc = dict(full) if s.full_document_only else ev  # type: ignore[arg-type]
        doc["_stream_meta"] = {"source": meta}
        return doc, t

    def _filter(self, events: list[Doc]) -> list[Doc]:
        from translator.stages import run_chain_docs

        bad: list[Doc] = []

        def dlq(reason: str, ev: Any) -> None:  # a failing filter expression: that event to the DLQ
            bad.append(source_dlq(reason, ev))

        docs = run_chain_docs(self.filter_steps, [(e, event_time_ms(e)) for e in events], dlq)
        return [*docs, *bad]

    # -- initialSync -----------------------------------------------------------------------

    def _sync_collections(self) -> list[tuple[str, str]]:
        s = self.s
        if s.db is not None and s.colls:
            return [(s.db, c) for c in s.colls]
        dbs = [s.db] if s.db is not None else sorted(
            d for d in self.client.list_database_names() if d not in INTERNAL_DBS
        )
        return [(d, c) for d in dbs for c in sorted(self.client[d].list_collection_names()) if not c.startswith("system.")]

    def _sync_batch(self) -> list[SourceItem]:
        """Existing documents as insert events. The change stream position was taken
        before the scan, so a write made during it also arrives afterwards from the stream
        (at-least-once, as ASP's initial sync: a document written during the scan can be
        emitted by both).

        ``parallelism`` N > 1 splits each collection into N ``_id`` ranges and reads them
        with N concurrent queries per batch (each range in ``_id`` order); the progress of
        every range is checkpointed."""
        assert self.sync is not None
        i = self.sync["i"]
        if i >= len(self.sync_colls):
            self._end_sync()
            return []
        db, coll = self.sync_colls[i]
        ranges = self.sync.get("ranges")
        if ranges is None:
            if self.sync.get("after") is not None:  # a checkpoint of the one-cursor scan
                ranges = [{"lo": None, "hi": None, "after": self.sync["after"]}]
            else:
                ranges = self._split(db, coll)
        open_ranges = [r for r in ranges if not r.get("done")]
        if len(open_ranges) > 1:
            pool = self._pool()
            results = list(pool.map(lambda r: self._scan_range(db, coll, r), open_ranges))
        else:
            results = [self._scan_range(db, coll, r) for r in open_ranges]
        docs: list[Doc] = []
        progress = {id(r): r for r in ranges}
        for r, got in zip(open_ranges, results, strict=True):
            docs.extend(got)
            if len(got) < self.s.batch_size:
                progress[id(r)] = {**r, "done": True}
            else:
                progress[id(r)] = {**r, "after": got[-1]["_id"]}
        new_ranges = [progress[id(r)] for r in ranges]
        if all(r.get("done") for r in new_ranges):
            self.sync = {"i": i + 1, "ranges": None}
        else:
            self.sync = {"i": i, "ranges": new_ranges}
        wall = datetime.now(UTC)
        events = [
            {
                "_id": {"initialSync": f"{db}.{coll}", "documentKey": {"_id": d["_id"]}},
                "operationType": "insert",
                "clusterTime": self.sync_clock,
                "wallTime": wall,
                "fullDocument": d,
                "ns": {"db": db, "coll": coll},
                "documentKey": {"_id": d["_id"]},
            }
            for d in docs
        ]
        if self.filter_steps:
            events = self._filter(events)
        batch: RawBatch = [self._record(ev) if SOURCE_DLQ_KEY not in ev else (ev, now_ms()) for ev in events]
        return [(self.s.part, batch)] if batch else []

    def _split(self, db: str, coll: str) -> list[Doc]:
        """``parallelism`` ranges ``[lo, hi)`` of ``_id``, cut at evenly spaced positions of
        the ``_id`` order. Query operators compare only values of one BSON type, so a
        collection whose ``_id``s are not all of one type is scanned as one range."""
        n = self.s.initial_sync_parallelism
        whole: list[Doc] = [{"lo": None, "hi": None}]
        if n == 1:
            return whole
        c = self.client[db][coll]
        count = c.count_documents({}, maxTimeMS=SERVER_TIMEOUT_MS)
        if count < 2 * n:
            return whole
        ends = [c.find({}, {"_id": 1}).sort("_id", d).limit(1).max_time_ms(SERVER_TIMEOUT_MS) for d in (1, -1)]
        first, last = (next(iter(e))["_id"] for e in ends)
        if _bracket(first) not in SPLITTABLE or _bracket(first) != _bracket(last):
            return whole
        cuts: list[Any] = []
        for k in range(1, n):
            got = list(c.find({}, {"_id": 1}).sort("_id", 1).skip(k * count // n).limit(1).max_time_ms(SERVER_TIMEOUT_MS))
            if got and (not cuts or got[0]["_id"] != cuts[-1]) and got[0]["_id"] != first:
                cuts.append(got[0]["_id"])
        bounds = [None, *cuts, None]
        return [{"lo": bounds[j], "hi": bounds[j + 1]} for j in range(len(bounds) - 1)]

    def _scan_range(self, db: str, coll: str, r: Doc) -> list[Doc]:
        """The next batch of range ``r``: ``{lo, hi}``, plus ``after`` (the last ``_id``
        read, which may be null) once it has started."""
        parts: list[Doc] = []
        if "after" in r:
            parts.append(_after_filter(r["after"], open_end=r["hi"] is None))
        elif r["lo"] is not None:
            parts.append({"_id": {"$gte": r["lo"]}})
        if r["hi"] is not None:
            parts.append({"_id": {"$lt": r["hi"]}})
        query = {} if not parts else parts[0] if len(parts) == 1 else {"$and": parts}
        cur = self.client[db][coll].find(query).sort("_id", 1).limit(self.s.batch_size)
        return list(cur.max_time_ms(SERVER_TIMEOUT_MS))

    def _pool(self) -> ThreadPoolExecutor:
        if self.pool is None:
            self.pool = ThreadPoolExecutor(self.s.initial_sync_parallelism, thread_name_prefix="mqlflow-initial-sync")
        return self.pool

    def _end_sync(self) -> None:
        self.sync = None
        if self.pool is not None:
            self.pool.shutdown(wait=False)
            self.pool = None


# BSON's comparison order of the types an ``_id`` can have, as ``$type`` aliases: a query
# operator compares only values of one bracket (https://www.mongodb.com/docs/manual/reference/bson-type-comparison-order/).
TYPE_BRACKETS: tuple[tuple[str, ...], ...] = (
    ("null",), ("double", "int", "long", "decimal"), ("string",), ("object",), ("binData",), ("objectId",),
    ("bool",), ("date",), ("timestamp",), ("regex",),
)
SPLITTABLE = frozenset({1, 2, 5, 7})  # numbers, strings, ObjectIds, dates


def _bracket(v: Any) -> int | None:
    """The index of ``v``'s type in :data:`TYPE_BRACKETS` (None: unknown)."""
    kinds: tuple[tuple[Any, int], ...] = (
        (type(None), 0), (bool, 6), (int | float | Int64 | Decimal128, 1), (str, 2), (dict, 3),
        (bytes | Binary, 4), (ObjectId, 5), (datetime, 7), (Timestamp, 8), (Regex | re.Pattern, 9),
    )
    return next((k for t, k in kinds if isinstance(v, t)), None)


def _after_filter(after: Any, *, open_end: bool) -> Doc:
    """``_id`` after ``after`` in ``_id`` order: ``$gt`` within its type, and, at the open
    end of the scan, every ``_id`` of a type that sorts later (which ``$gt`` never matches)."""
    gt: Doc = {"_id": {"$gt": after}}
    k = _bracket(after)
    later = [alias for b in TYPE_BRACKETS[k + 1 :] for alias in b] if open_end and k is not None else []
    return {"$or": [gt, {"_id": {"$type": later}}]} if later else gt


def _compile_filter(pipeline: tuple[Doc, ...]) -> tuple[Any, ...]:
    """``config.pipeline`` for the OpLog backend runs here, with the pipeline's own stages."""
    from translator.parse import STAGE_PARSERS
    from translator.stages import compile_steps

    stages = tuple(STAGE_PARSERS[next(iter(st))](next(iter(st.values())), f"config.pipeline[{i}]") for i, st in enumerate(pipeline))
    return compile_steps(stages)


class ChangeStreamSource(FixedPartitionedSource[SourceItem, State]):
    """One partition for the whole watched namespace set (one ordered stream)."""

    def __init__(self, settings: ChangeStreamSettings) -> None:
        self.settings = settings

    def list_parts(self) -> list[str]:
        return [self.settings.part]

    def build_part(self, step_id: str, for_part: str, resume_state: State | None) -> _ChangeStreamPartition:
        return _ChangeStreamPartition(self.settings, resume_state)


__all__ = [
    "ChangeStreamSettings",
    "ChangeStreamSource",
    "oplog_event",
    "ts_token",
]
