"""``$lookup`` and ``$cachedLookup`` against a MongoDB connection, one query per batch.

https://www.mongodb.com/docs/atlas/atlas-stream-processing/sp-agg-lookup/ and
.../sp-agg-cachedlookup/ . A batch's distinct local values become one
``find({foreignField: {$in: [...]}})`` (split over up to ``parallelism`` concurrent
queries); the fetched documents are matched to each input document here with MongoDB's
equality rules (1 == 1.0, null matches a missing field, an array matches by its elements).

Why the ``pipeline`` runs in mqlflow and not on the server: FerretDB v1 (the server the
tests run against) has no ``let`` in ``aggregate`` and no ``$lookup``, so a server-side
pipeline per let-values would not run there. Instead the documents are fetched with a
bounded query (an ``$in`` on the foreign field when the syntax gives one, or on the
field of a leading ``$match: {$expr: {$eq: ["$field", "$$var"]}}``; a leading
``$match`` without variables is also sent as a filter) and the pipeline is compiled by
the translator's own stage compilers with the ``let`` values substituted as literals
(compiled once per distinct let-values and cached). Without any such filter the whole
collection is read, at most :data:`FULL_SCAN_LIMIT` documents, once per batch.
"""

from __future__ import annotations

import functools
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import bson
from pymongo import MongoClient
from pymongo.errors import OperationFailure, PyMongoError

from translator import metrics, partition
from translator.contracts import is_transient
from translator.enrich.spec import LookupStage
from translator.errors import TranslateError
from translator.mql.expr import EMPTY_VARS, Ctx, Vars, compile_expr, get_path
from translator.mql.values import MISSING, compare, hashable
from translator.stages import (
    BATCH,
    DlqFn,
    Rec,
    Step,
    compile_steps,
    copy_set,
    failure_reason,
    run_chain,
)

log = logging.getLogger("mqlflow.lookup")
T = TypeVar("T")

SERVER_TIMEOUT_MS = 5000  # server selection and connect
QUERY_TIMEOUT_MS = 30_000  # socket read and the server's maxTimeMS
FULL_SCAN_LIMIT = 100_000  # documents a pipeline-only $lookup may read per batch
IN_CHUNK = 20_000  # values per $in query (keeps the query document far below 16 MiB)
BACKOFF_INITIAL_S, BACKOFF_MAX_S = 0.1, 5.0
COMPILED_CACHE = 4096  # distinct let-values whose pipeline stays compiled
# Process-wide figures (read by tests and the benchmark): find commands answered,
# transient retries, seconds spent waiting for answers.
STATS: dict[str, float] = {"queries": 0, "retries": 0, "seconds": 0.0}
_stats_lock = threading.Lock()


def default_cache_bytes() -> int:
    """$cachedLookup's default memory limit: 1/16 of physical memory (64 MiB if unknown)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")) // 16
    except (ValueError, OSError, AttributeError):
        return 64 * 1024 * 1024


# ---- the server ----------------------------------------------------------------------------


class _Lazy(Generic[T]):
    """A resource made at its first use and released by :meth:`close` when the flow ends
    (:meth:`LookupOp.close`); made again if a later run of the same compiled pipeline
    uses it."""

    def __init__(self, make: Callable[[], T], release: Callable[[T], None]) -> None:
        self._make, self._release = make, release
        self._value: T | None = None
        self._lock = threading.Lock()

    def get(self) -> T:
        with self._lock:
            if self._value is None:
                self._value = self._make()
            return self._value

    def close(self) -> None:
        with self._lock:
            value, self._value = self._value, None
        if value is not None:
            self._release(value)


def _client(uri: str) -> _Lazy[MongoClient[dict[str, Any]]]:
    """The client of one ``$lookup`` and the ``$lookup`` stages nested in its pipeline."""

    def make() -> MongoClient[dict[str, Any]]:
        return MongoClient(
            uri,
            serverSelectionTimeoutMS=SERVER_TIMEOUT_MS,
            connectTimeoutMS=SERVER_TIMEOUT_MS,
            socketTimeoutMS=QUERY_TIMEOUT_MS,
            appname="mqlflow:lookup",
        )

    return _Lazy(make, MongoClient.close)


class LookupServer:
    """One lazily connected client per (connection, db, coll); transient errors are
    retried with capped backoff forever (a batch is never dropped), others fail the
    processor. ``queries`` counts the find commands sent (for the cache's tests/stats)."""

    def __init__(
        self, uri: str, db: str, coll: str, what: str, client: _Lazy[MongoClient[dict[str, Any]]] | None = None
    ) -> None:
        self.uri, self.db, self.coll, self.what = uri, db, coll, what
        self.client = client or _client(uri)

    def collection(self) -> Any:
        return self.client.get()[self.db][self.coll]

    def sibling(self, coll: str) -> LookupServer:
        """The same connection and database, another collection (nested ``$lookup``): the
        same client."""
        return LookupServer(self.uri, self.db, coll, self.what, self.client)

    def close(self) -> None:
        """Close the client (the nested stages' too); a later query opens a new one."""
        self.client.close()

    def find(self, query: dict[str, Any], limit: int = 0) -> list[dict[str, Any]]:
        delay, attempt = BACKOFF_INITIAL_S, 0
        while True:
            try:
                t0 = time.perf_counter()
                cur = self.collection().find(query, limit=limit, max_time_ms=QUERY_TIMEOUT_MS)
                docs = list(cur)
                with _stats_lock:
                    STATS["queries"] += 1
                    STATS["seconds"] += time.perf_counter() - t0
                return docs
            except PyMongoError as exc:
                if not is_transient(exc):
                    raise
                attempt += 1
                with _stats_lock:
                    STATS["retries"] += 1
                log.warning("%s: query failed (%s: %s); retry %d in %.1f s", self.what, type(exc).__name__, exc, attempt, delay)
                time.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX_S)

    def find_in(
        self, fld: str, values: list[Any], extra: dict[str, Any] | None, pool: Pool | None = None
    ) -> list[dict[str, Any]]:
        """The documents whose ``fld`` is one of ``values``: one ``$in`` query per
        :data:`IN_CHUNK` values; with a ``pool`` (``$lookup.parallelism`` > 1) the values
        are split over up to ``pool.size`` queries that run at once."""
        size = IN_CHUNK
        if pool is not None and len(values) > 1:
            size = min(IN_CHUNK, -(-len(values) // min(pool.size, len(values))))
        chunks = [values[i : i + size] for i in range(0, len(values), size)]

        def one(chunk: list[Any]) -> list[dict[str, Any]]:
            q: dict[str, Any] = {fld: {"$in": chunk}}
            return self.find({"$and": [q, extra]} if extra else q)

        if len(chunks) == 1:
            return one(chunks[0])
        parts = list(pool.executor.map(one, chunks)) if pool is not None else [one(c) for c in chunks]
        # A document whose foreign field is an array can answer keys of several chunks.
        out: list[dict[str, Any]] = []
        seen: set[Any] = set()
        for docs in parts:
            for d in docs:
                k = hashable(d.get("_id"))
                if k not in seen:
                    seen.add(k)
                    out.append(d)
        return out


class Pool:
    """The threads of one ``$lookup`` with ``parallelism`` > 1: its queries of a batch
    run at once on them (pymongo's client is thread-safe and pools its connections).
    Started at the first batch, stopped when the flow ends (:meth:`LookupOp.close`)."""

    def __init__(self, size: int, what: str) -> None:
        self.size = size
        self._threads = _Lazy(
            lambda: ThreadPoolExecutor(max_workers=size, thread_name_prefix=f"mqlflow-lookup {what}"),
            ThreadPoolExecutor.shutdown,
        )

    @property
    def executor(self) -> ThreadPoolExecutor:
        return self._threads.get()

    def close(self) -> None:
        self._threads.close()


# ---- MongoDB's equality, on keys -------------------------------------------------------------


def local_values(doc: Any, parts: tuple[str, ...]) -> list[Any]:
    """The values a local field offers to an equality match: an array's elements, and
    null for a missing field (null matches missing, as in MongoDB)."""
    v = get_path(doc, parts)
    if v is MISSING or v is None:
        return [None]
    if isinstance(v, list):
        out: list[Any] = []
        for x in v:
            out.extend(x if isinstance(x, list) else [x])
        return out
    return [v]


def index_by(docs: list[dict[str, Any]], parts: tuple[str, ...]) -> dict[Any, list[int]]:
    """hashable(value) -> positions of the documents whose field equals it (or holds it)."""
    idx: dict[Any, list[int]] = {}
    for i, d in enumerate(docs):
        v = get_path(d, parts)
        keys = {hashable(None)} if v is MISSING or v is None else {hashable(v)}
        if isinstance(v, list):
            keys.update(hashable(x) for x in v)
        for k in keys:
            idx.setdefault(k, []).append(i)
    return idx


def matched(docs: list[dict[str, Any]], idx: dict[Any, list[int]], keys: list[Any]) -> list[dict[str, Any]]:
    if len(keys) == 1:
        return [docs[i] for i in idx.get(keys[0], ())]
    pos: set[int] = set()
    for k in keys:
        pos.update(idx.get(k, ()))
    return [docs[i] for i in sorted(pos)]


# ---- let values as literals ------------------------------------------------------------------


def substitute(spec: Any, values: dict[str, Any]) -> Any:
    """``spec`` with ``$$name`` / ``$$name.a.b`` of the let variables replaced by literals.

    The query engine's ``$expr`` sees no variables, so the pipeline is compiled with the
    values in place. A nested ``$lookup`` that rebinds a name in its own ``let`` keeps
    it in its pipeline."""
    if not values:
        return spec
    if isinstance(spec, str):
        if spec.startswith("$$"):
            name, _, rest = spec[2:].partition(".")
            if name in values:
                lit = {"$literal": values[name]}
                return lit if not rest else {"$let": {"vars": {"lkv": lit}, "in": f"$$lkv.{rest}"}}
        return spec
    if isinstance(spec, list):
        return [substitute(x, values) for x in spec]
    if isinstance(spec, dict):
        inner = spec.get("$lookup")
        if len(spec) == 1 and isinstance(inner, dict) and isinstance(inner.get("let"), dict):
            shadowed = {k: v for k, v in values.items() if k not in inner["let"]}
            return {"$lookup": {k: substitute(x, shadowed if k == "pipeline" else values) for k, x in inner.items()}}
        return {k: substitute(x, values) for k, x in spec.items()}
    return spec


def _has_vars(spec: Any) -> bool:
    if isinstance(spec, str):
        return spec.startswith("$$")
    if isinstance(spec, list):
        return any(_has_vars(x) for x in spec)
    if isinstance(spec, dict):
        return any(k == "$expr" or _has_vars(x) for k, x in spec.items())
    return False


def _eq_pushdown(pipeline: tuple[dict[str, Any], ...], let_names: set[str]) -> tuple[str, str] | None:
    """(foreign field, let variable) of a leading ``$match: {$expr: {$eq: ["$f", "$$v"]}}``
    (also inside ``$and``), the usual let+pipeline join condition."""
    if not pipeline or "$match" not in pipeline[0]:
        return None
    m = pipeline[0]["$match"]
    conds: list[Any] = [m.get("$expr")] if isinstance(m, dict) else []
    while conds:
        c = conds.pop(0)
        if not isinstance(c, dict) or len(c) != 1:
            continue
        ((op, args),) = c.items()
        if op == "$and" and isinstance(args, list):
            conds.extend(args)
        elif op == "$eq" and isinstance(args, list) and len(args) == 2:
            for a, b in (args, args[::-1]):
                if (
                    isinstance(a, str) and a.startswith("$") and not a.startswith("$$")
                    and isinstance(b, str) and b[2:] in let_names and b.startswith("$$")
                ):
                    return a[1:], b[2:]
    return None


# ---- the sub-pipeline ------------------------------------------------------------------------


def _sort_step(spec: dict[str, Any], path: str) -> Step:
    keys = [(tuple(k.split(".")), int(d)) for k, d in spec.items()]

    def cmp(a: Rec, b: Rec) -> int:
        for parts, direction in keys:
            c = compare(get_path(a[0], parts), get_path(b[0], parts))
            if c:
                return c * direction
        return 0

    return Step(BATCH, lambda recs, dlq, v: sorted(recs, key=functools.cmp_to_key(cmp)), "$sort", path)


def _limit_step(n: int, path: str) -> Step:
    return Step(BATCH, lambda recs, dlq, v: recs[:n], "$limit", path)


def _count_step(name: str, path: str) -> Step:
    return Step(BATCH, lambda recs, dlq, v: [({name: len(recs)}, 0)] if recs else [], "$count", path)


def compile_sub_pipeline(stages: list[dict[str, Any]], path: str, server: LookupServer) -> tuple[Step, ...]:
    """A ``$lookup`` pipeline (let values already substituted) as steps for ``run_chain``."""
    from translator.enrich.parse import parse_lookup
    from translator.parse import STAGE_PARSERS

    steps: list[Step] = []
    run: list[Any] = []

    def flush() -> None:
        if run:
            steps.extend(compile_steps(tuple(run)))
            run.clear()

    for i, st in enumerate(stages):
        ((name, spec),) = st.items()
        spath = f"{path}[{i}].{name}"
        if name in ("$sort", "$limit", "$count", "$lookup"):
            flush()
            if name == "$sort":
                steps.append(_sort_step(spec, spath))
            elif name == "$limit":
                steps.append(_limit_step(int(spec), spath))
            elif name == "$count":
                steps.append(_count_step(spec, spath))
            else:
                nested = parse_lookup(spec, spath, nested=True)
                _check_names(nested, spath)
                steps.append(LookupOp(nested, server.sibling(nested.coll)).step())
        else:
            run.append(STAGE_PARSERS[name](spec, spath))
    flush()
    return tuple(steps)


class _Failed(Exception):
    pass


# ---- the operator ----------------------------------------------------------------------------


@dataclass
class LookupCache:
    """$cachedLookup's cache of one source partition: local key -> (expiry, documents,
    bytes). Over the memory limit, expired entries go first, then random ones."""

    ttl_s: float
    max_bytes: int
    entries: dict[Any, tuple[float, list[dict[str, Any]], int]] = field(default_factory=dict)
    size: int = 0

    def get(self, key: Any, now: float) -> list[dict[str, Any]] | None:
        e = self.entries.get(key)
        if e is None or e[0] <= now:
            return None
        return e[1]

    def put(self, key: Any, docs: list[dict[str, Any]], now: float) -> None:
        nbytes = 64 + sum(len(bson.encode(d)) for d in docs)
        old = self.entries.pop(key, None)
        if old is not None:
            self.size -= old[2]
        self.entries[key] = (now + self.ttl_s, docs, nbytes)
        self.size += nbytes
        if self.size > self.max_bytes:
            self.evict(now)

    def evict(self, now: float) -> None:
        for k in [k for k, e in self.entries.items() if e[0] <= now]:
            self.size -= self.entries.pop(k)[2]
        if self.size > self.max_bytes:
            keys = list(self.entries)
            random.shuffle(keys)
            for k in keys:
                if self.size <= self.max_bytes:
                    break
                self.size -= self.entries.pop(k)[2]


class LookupOp:
    """One compiled ``$lookup``/``$cachedLookup``; :meth:`step` is its batch step."""

    def __init__(self, stage: LookupStage, server: LookupServer) -> None:
        self.stage = stage
        self.server = server
        self.name = "$cachedLookup" if stage.cached else "$lookup"
        self.local = tuple(stage.local_field.split(".")) if stage.local_field else None
        self.foreign = stage.foreign_field
        self.foreign_parts = tuple(stage.foreign_field.split(".")) if stage.foreign_field else ()
        self.as_parts = tuple(stage.as_field.split("."))
        self.let = [(n, compile_expr(x, Ctx(f"{stage.path}.let.{n}"))) for n, x in stage.let]
        let_names = {n for n, _ in stage.let}
        pipeline = stage.pipeline
        self.pushdown = _eq_pushdown(pipeline, let_names) if pipeline is not None and self.local is None else None
        self.filter: dict[str, Any] | None = None
        if pipeline and "$match" in pipeline[0] and not _has_vars(pipeline[0]["$match"]):
            self.filter = pipeline[0]["$match"]
        self._compiled: dict[Any, tuple[Step, ...]] = {}
        self._local = threading.local()
        self.pool = Pool(stage.parallelism, stage.path) if stage.parallelism > 1 else None
        self._caches: dict[Any, LookupCache] = {}  # $cachedLookup: source partition -> cache
        self._caches_lock = threading.Lock()
        if pipeline is not None:  # create-time check of every expression (let values as null)
            self.sub_steps({n: None for n in let_names})

    # -- per let-values compiled pipeline
    def sub_steps(self, values: dict[str, Any]) -> tuple[Step, ...]:
        key = hashable(values)
        steps = self._compiled.get(key)
        if steps is None:
            assert self.stage.pipeline is not None
            spec = substitute(list(self.stage.pipeline), values)
            steps = compile_sub_pipeline(spec, f"{self.stage.path}.pipeline", self.server)
            if len(self._compiled) >= COMPILED_CACHE:
                self._compiled.clear()
            self._compiled[key] = steps
        return steps

    def step(self) -> Step:
        return Step(BATCH, self.run, self.name, self.stage.path)

    def close(self) -> None:
        """When the flow ends: close the client (nested stages share it) and the threads."""
        self.server.close()
        if self.pool is not None:
            self.pool.close()

    # -- the batch
    def run(self, recs: list[Rec], dlq: DlqFn, vars_: Vars) -> list[Rec]:
        if not recs:
            return recs
        stage = self.stage
        lets: list[dict[str, Any] | None] = []
        for d, _ in recs:
            try:
                lets.append({n: f(d, vars_) for n, f in self.let})
            except Exception as exc:
                lets.append(None)
                dlq(failure_reason(self.name, f"{stage.path}.let", exc), d)
        if self.local is not None:
            keys = [[hashable(x) for x in local_values(d, self.local)] for d, _ in recs]
            fetched, idx = self._fetch_equal(recs, keys, lets)
        else:
            keys = [[] for _ in recs]
            fetched, idx = self._fetch_pipeline(lets)
        out: list[Rec] = []
        results: dict[Any, list[dict[str, Any]] | str] = {}
        for (d, t), ks, values in zip(recs, keys, lets, strict=True):
            if values is None:
                continue
            if self.local is not None:
                cand_key: Any = tuple(ks)
                cands = None
            elif self.pushdown is not None:
                k = hashable(values[self.pushdown[1]])
                cand_key, cands = k, [fetched[i] for i in (idx or {}).get(k, ())]
            else:
                cand_key, cands = None, fetched
            rkey = (cand_key, hashable(values)) if values else cand_key
            res = results.get(rkey)
            if res is None:
                if cands is None:
                    cands = matched(fetched, idx, ks) if idx is not None else self._cached_docs(ks)
                res = self._run_pipeline(cands, values) if stage.pipeline is not None else cands
                results[rkey] = res
            if isinstance(res, str):
                dlq(res, d)
                continue
            out.append((_set(d, self.as_parts, list(res)), t))
        return out

    def _run_pipeline(self, cands: list[dict[str, Any]], values: dict[str, Any]) -> list[dict[str, Any]] | str:
        """The pipeline's output, or the DLQ reason when an expression in it failed."""
        reasons: list[str] = []
        try:
            steps = self.sub_steps(values)
        except TranslateError as exc:
            return failure_reason(self.name, self.stage.path, exc)
        recs = run_chain(steps, [(c, 0) for c in cands], lambda r, d: reasons.append(r), EMPTY_VARS)
        if reasons:
            return reasons[0]
        return [d for d, _ in recs]

    def _fetch_equal(
        self, recs: list[Rec], keys: list[list[Any]], lets: list[dict[str, Any] | None]
    ) -> tuple[list[dict[str, Any]], dict[Any, list[int]] | None]:
        distinct: dict[Any, Any] = {}
        for (d, _), ks, ok in zip(recs, keys, lets, strict=True):
            if ok is None:
                continue
            assert self.local is not None
            for k, v in zip(ks, local_values(d, self.local), strict=True):
                distinct.setdefault(k, v)
        if self.stage.cached:
            self._fill_cache(distinct)
            return [], None
        assert self.foreign is not None
        fld = self.foreign
        docs = self._filtered(lambda extra: self.server.find_in(fld, list(distinct.values()), extra, self.pool)) if distinct else []
        return docs, index_by(docs, self.foreign_parts)

    def _fetch_pipeline(self, lets: list[dict[str, Any] | None]) -> tuple[list[dict[str, Any]], dict[Any, list[int]]]:
        if self.pushdown is not None:
            fld, var = self.pushdown
            distinct = {hashable(v[var]): v[var] for v in lets if v is not None}
            vals = [None if x is MISSING else x for x in distinct.values()]
            docs = self._filtered(lambda extra: self.server.find_in(fld, vals, extra, self.pool)) if vals else []
            return docs, index_by(docs, tuple(fld.split(".")))
        docs = self._filtered(lambda extra: self.server.find(extra or {}, limit=FULL_SCAN_LIMIT + 1))
        if len(docs) > FULL_SCAN_LIMIT:
            raise RuntimeError(
                f"{self.stage.path}: the pipeline has no equality on a let variable to filter by, and "
                f"{self.server.db}.{self.server.coll} holds more than {FULL_SCAN_LIMIT} matching documents; "
                "add localField/foreignField or a leading $match {$expr: {$eq: ['$field', '$$var']}}"
            )
        return docs, {}

    def _filtered(self, fetch: Callable[[dict[str, Any] | None], list[dict[str, Any]]]) -> list[dict[str, Any]]:
        """``fetch(leading $match)``; when the server rejects that filter (FerretDB lacks
        e.g. ``$jsonSchema``), fetch without it from now on: the pipeline's own ``$match``
        still applies it here, so only the amount read changes."""
        if self.filter is None:
            return fetch(None)
        try:
            return fetch(self.filter)
        except OperationFailure as exc:
            log.warning("%s: the server rejects the leading $match as a filter (%s); filtering in mqlflow",
                        self.stage.path, exc)
            self.filter = None
            return fetch(None)

    # -- $cachedLookup
    def cache(self) -> LookupCache:
        """The cache of the source partition this thread ingests now (ASP keeps one per
        partition); outside the ingest step (a window's close step, ``run_chain`` called
        directly), one per thread."""
        part = partition.current()
        key: Any = part if part is not None else ("thread", threading.get_ident())
        c = self._caches.get(key)
        if c is None:
            limit = self.stage.max_mem_bytes or default_cache_bytes()
            with self._caches_lock:
                c = self._caches.setdefault(key, LookupCache(self.stage.ttl_ms / 1000, limit))
        return c

    def _fill_cache(self, distinct: dict[Any, Any]) -> None:
        cache, now = self.cache(), time.monotonic()
        batch: dict[Any, list[dict[str, Any]]] = {}
        missing: dict[Any, Any] = {}
        for k, v in distinct.items():
            got = cache.get(k, now)
            if got is None:
                missing[k] = v
            else:
                batch[k] = got
        hits = len(batch)
        if missing:
            assert self.foreign is not None
            docs = self.server.find_in(self.foreign, list(missing.values()), None, self.pool)
            idx = index_by(docs, self.foreign_parts)
            for k in missing:  # this batch uses them even if the cache evicts them at once
                batch[k] = [docs[i] for i in idx.get(k, ())]
                cache.put(k, batch[k], now)
        self._local.batch = batch
        if metrics.ENABLED:
            metrics.add_counters(self.stage.path, {"cacheHits": hits, "cacheMisses": len(missing)})

    def _cached_docs(self, keys: list[Any]) -> list[dict[str, Any]]:
        batch: dict[Any, list[dict[str, Any]]] = self._local.batch
        if len(keys) == 1:
            return batch.get(keys[0], [])
        seen: dict[int, dict[str, Any]] = {}
        for k in keys:
            for d in batch.get(k, ()):
                seen.setdefault(id(d), d)
        return list(seen.values())


def _set(doc: dict[str, Any], parts: tuple[str, ...], value: Any) -> dict[str, Any]:
    return copy_set(doc, parts, value)


def _check_names(stage: LookupStage, path: str) -> None:
    """Database and collection names the server would reject fail at create time."""
    from translator.contracts import coll_name_problem, db_name_problem

    for what, name, check in (("db", stage.db, db_name_problem), ("coll", stage.coll, coll_name_problem)):
        problem = check(name) if name is not None else None
        if problem:
            where = f"{path}.from" if stage.connection_name is None else f"{path}.{what}"  # nested: from: "coll"
            raise TranslateError(where, f"the {'database' if what == 'db' else 'collection'} name {name!r} {problem}")


def compile_lookup(stage: LookupStage, conn: Any) -> LookupOp:
    """Create time: ``conn`` is the stage's MongoDB connection, resolved by the compiler
    (:mod:`translator.enrich.steps`), or None when no registry is bound."""
    if conn is None:
        raise TranslateError(stage.path, f"{stage.path.rsplit('.', 1)[-1]} needs a connection registry here")
    assert stage.db is not None
    _check_names(stage, f"{stage.path}.from")
    server = LookupServer(conn.uri or "", stage.db, stage.coll, f"{stage.path} ({conn.name})")
    return LookupOp(stage, server)

