"""The dead-letter collection: processor option ``dlq: {connectionName, db, coll}``.

By default the DLQ is as durable as the main output: :class:`DlqWriter` writes before it
returns, retries transient failures like ``$merge`` does (logged, shown as a sink stall in
``stats()``, failing the processor after the same give-up time), so a checkpoint taken
after a batch never covers a DLQ entry that was not written. Each entry is an upsert by
its ``_id`` (:func:`sinks.dlq.dlq_id`, which includes the processor name), so a replay
after a crash overwrites its own entries and processors can share a collection.

Best-effort mode restores the other trade-off (ASP documents DLQ delivery as best effort:
https://www.mongodb.com/docs/atlas/atlas-stream-processing/ops-guide/): writes go to a
bounded queue drained by a thread, give up after :attr:`DlqWriter.best_effort_give_up_s`,
and count what they lose, never holding up the main output. A processor chooses it with
``dlq: {..., mode: "best-effort"}`` (:func:`translator.loader.dlq_target`); without
``mode``, ``MQLFLOW_DLQ_MODE`` is the process default.

Bulk writes are sized by :class:`sinks.mongo_io.AdaptiveBulk`, the rule ``$merge`` uses:
halved after a socket timeout, grown back while writes are fast.

Two users: :class:`MongoDlqSink` (a Bytewax sink for the DLQ stream of a dataflow) and
``$merge`` (:mod:`sinks.mongo`), which sends the documents the server rejects.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from bytewax.outputs import DynamicSink, StatelessSinkPartition
from pymongo import MongoClient, ReplaceOne
from pymongo.errors import (
    BulkWriteError,
    ConnectionFailure,
    DocumentTooLarge,
    InvalidDocument,
    OperationFailure,
    PyMongoError,
)

from sinks.mongo_io import (
    AdaptiveBulk,
    Attempts,
    SinkStalledError,
    make_client,
    server_profile,
)
from translator.connections import Connection, mask_uri
from translator.contracts import TRANSIENT_CODES
from translator.ir import DlqTarget

log = logging.getLogger("mqlflow.dlq")

ENV_DLQ_MODE = "MQLFLOW_DLQ_MODE"
DLQ_MODES = ("durable", "best-effort")


def durable_mode(mode: str | None = None) -> bool:
    """``mode`` (the processor's ``dlq.mode``) wins; without it the process default."""
    raw = mode or os.environ.get(ENV_DLQ_MODE, "durable") or "durable"
    if raw not in DLQ_MODES:
        where = "dlq.mode" if mode else ENV_DLQ_MODE
        raise ValueError(f"{where}={raw!r}: expected one of {', '.join(DLQ_MODES)}")
    return raw == "durable"


class DlqStats:
    """Process-wide DLQ counters (all writers add to them; stats and tests read them)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.written = 0
        self.lost = 0

    def add(self, written: int = 0, lost: int = 0) -> None:
        with self._lock:
            self.written += written
            self.lost += lost


STATS = DlqStats()


class DlqWriter:
    """Writer of DLQ documents into one collection (durable by default, see the module)."""

    batch_size_default = 500
    backoff_s = 0.1  # first retry delay, doubled per attempt
    backoff_max_s = 5.0
    best_effort_give_up_s = 10.0
    server_timeout_ms = 5000

    def __init__(
        self,
        target: DlqTarget,
        conn: Connection,
        processor_name: str = "",
        *,
        batch_size: int = 500,
        max_queue: int = 100_000,
        durable: bool | None = None,
    ) -> None:
        """``conn`` is the DLQ's MongoDB connection, resolved by ``compile_pipeline``;
        ``durable`` None: the target's ``mode``, else the process default."""
        if durable is None:
            durable = durable_mode(target.mode)
        self._setup(conn.uri or "", target.db, target.coll, conn.name, batch_size, max_queue, durable)
        self.processor_name = processor_name

    @classmethod
    def to(
        cls, uri: str, db: str, coll: str, *, batch_size: int = 500, max_queue: int = 100_000, durable: bool | None = None
    ) -> DlqWriter:
        """A writer for a bare URI (no connection entry)."""
        w = cls.__new__(cls)
        w._setup(uri, db, coll, "", batch_size, max_queue, durable)
        w.processor_name = ""
        return w

    def _setup(
        self, uri: str, db: str, coll: str, connection_name: str, batch_size: int, max_queue: int, durable: bool | None
    ) -> None:
        self.uri = uri
        self.db = db
        self.coll = coll
        self.connection_name = connection_name
        self.batch_size = batch_size
        self.durable = durable_mode() if durable is None else durable
        self.written = 0
        self.lost = 0
        self._queue: queue.Queue[list[dict[str, Any]] | None] = queue.Queue(maxsize=max(1, max_queue // 100))
        self._client: MongoClient[dict[str, Any]] | None = None
        self._bulk: AdaptiveBulk | None = None  # set with the client
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False

    def describe(self) -> str:
        return f"DLQ {self.db}.{self.coll} ({mask_uri(self.uri)})"

    # -- public API ---------------------------------------------------------------------------

    def write(self, docs: list[dict[str, Any]]) -> None:
        """Durable: write ``docs`` now (retrying; :class:`SinkStalledError` after the give-up
        time). Best effort: queue them without blocking."""
        if not docs:
            return
        if self.durable:
            self._write(docs, give_up_s=None)
            return
        self._ensure_thread()
        try:
            self._queue.put_nowait(list(docs))
        except queue.Full:
            self._count(lost=len(docs))
            log.error("%s: queue full, %d document(s) dropped", self.describe(), len(docs))

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until everything queued so far is written or given up; False on timeout."""
        if self._thread is None:
            return True
        deadline = time.monotonic() + timeout_s
        while self._queue.unfinished_tasks:
            if time.monotonic() > deadline:
                log.error("%s: flush timed out with %d batch(es) pending", self.describe(), self._queue.unfinished_tasks)
                return False
            time.sleep(0.01)
        return True

    def close(self, timeout_s: float = 30.0) -> None:
        self.flush(timeout_s)
        with self._lock:
            self._closed = True
            thread = self._thread
        if thread is not None:
            with contextlib.suppress(queue.Full):
                self._queue.put(None, timeout=1.0)
            thread.join(timeout=5.0)
            atexit.unregister(self._at_exit)
        if self._client is not None:
            self._client.close()
            self._client = None

    def _at_exit(self) -> None:
        # A user that never calls close() still gets its queued documents written.
        self.flush(5.0)

    # -- internals ------------------------------------------------------------------------------

    def _count(self, written: int = 0, lost: int = 0) -> None:
        with self._lock:
            self.written += written
            self.lost += lost
        STATS.add(written, lost)

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            if self._closed:
                raise RuntimeError("DlqWriter is closed")
            self._thread = threading.Thread(target=self._run, name=f"dlq-{self.db}.{self.coll}", daemon=True)
            self._thread.start()
            atexit.register(self._at_exit)

    def _collection(self) -> tuple[Any, AdaptiveBulk]:
        if self._client is None or self._bulk is None:
            client = make_client(self.uri, f"mqlflow-dlq:{self.processor_name}")
            try:
                profile = server_profile(client)
            except BaseException:
                client.close()
                raise
            self._bulk = AdaptiveBulk(client, self.batch_size, profile, self.processor_name, self.describe())
            self._client = client
        return self._client[self.db][self.coll], self._bulk

    def _run(self) -> None:
        while True:
            batch = self._queue.get()
            try:
                if batch is None:
                    return
                self._write(batch, give_up_s=self.best_effort_give_up_s)
            except SinkStalledError as exc:
                log.error("%s: %d document(s) lost: %s", self.describe(), len(batch or ()), exc)
                self._count(lost=len(batch or ()))
            except Exception:  # never let the writer thread die
                log.exception("%s: unexpected error, %d document(s) lost", self.describe(), len(batch or ()))
                self._count(lost=len(batch or ()))
            finally:
                self._queue.task_done()

    def _write(self, docs: list[dict[str, Any]], give_up_s: float | None) -> None:
        what = f"writing {len(docs)} DLQ document(s)"
        with Attempts(
            self.processor_name, self.describe(), what,
            backoff_initial_s=self.backoff_s, backoff_max_s=self.backoff_max_s, give_up_s=give_up_s,
            fatal=self.durable,
        ) as attempts:
            while True:
                try:
                    coll, bulk = self._collection()
                    break
                except PyMongoError as exc:  # buildInfo/selection while the server is away
                    attempts.retry(f"{type(exc).__name__}: {exc}")
            pending = list(docs)
            while pending:
                # Re-cut on every round: a timed-out bulk is retried as smaller ones.
                n = bulk.size
                retry, reason = self._write_part(coll, pending[:n], attempts, bulk)
                pending = retry + pending[n:]
                if retry:
                    attempts.retry(f"{len(pending)} pending: {reason}")

    def _write_part(
        self, coll: Any, docs: list[dict[str, Any]], attempts: Attempts, bulk: AdaptiveBulk
    ) -> tuple[list[dict[str, Any]], str]:
        """One bulk of upserts by ``_id`` (a replayed entry overwrites itself); returns the
        documents to retry after a transient failure, and why."""
        t0 = time.monotonic()
        try:
            coll.bulk_write([ReplaceOne({"_id": d["_id"]}, d, upsert=True) for d in docs], ordered=False)
            self._count(written=len(docs))
            bulk.succeeded(time.monotonic() - t0)
            return [], ""
        except BulkWriteError as exc:
            return self._sort_errors(docs, dict(exc.details)), "transient write errors"
        except (KeyError, InvalidDocument, DocumentTooLarge):
            # FerretDB answers a failed update batch without `n` (pymongo: KeyError);
            # an unencodable document fails the whole batch: go one by one.
            self._one_by_one(coll, docs, attempts)
            return [], ""
        except ConnectionFailure as exc:
            bulk.failed(exc, time.monotonic() - t0)
            return docs, f"{type(exc).__name__}: {exc}"
        except OperationFailure as exc:
            if exc.code not in TRANSIENT_CODES and not exc.has_error_label("RetryableWriteError"):
                self._lose(docs, f"{type(exc).__name__}: {exc}")
                return [], ""
            return docs, f"{type(exc).__name__}: {exc}"

    def _sort_errors(self, pending: list[dict[str, Any]], details: dict[str, Any]) -> list[dict[str, Any]]:
        retry: list[dict[str, Any]] = []
        failed = 0
        for err in details.get("writeErrors", []):
            failed += 1
            doc = pending[err["index"]]
            if err.get("code") in TRANSIENT_CODES:
                retry.append(doc)
            else:
                self._lose([doc], str(err.get("errmsg")))
        if details.get("writeConcernErrors"):
            return pending  # idempotent upserts: redo them all
        self._count(written=len(pending) - failed)
        return retry

    def _one_by_one(self, coll: Any, docs: list[dict[str, Any]], attempts: Attempts) -> None:
        for d in docs:
            while True:
                try:
                    coll.replace_one({"_id": d["_id"]}, d, upsert=True)
                    self._count(written=1)
                    break
                except (InvalidDocument, DocumentTooLarge, KeyError) as exc:
                    self._lose([d], f"{type(exc).__name__}: {exc}")
                    break
                except OperationFailure as exc:
                    if exc.code in TRANSIENT_CODES:
                        attempts.retry(f"{type(exc).__name__}: {exc}")
                        continue
                    self._lose([d], str((exc.details or {}).get("errmsg", exc)))
                    break
                except ConnectionFailure as exc:
                    attempts.retry(f"{type(exc).__name__}: {exc}")

    def _lose(self, docs: list[dict[str, Any]], why: str) -> None:
        """A DLQ entry the server refuses for good (there is no DLQ for the DLQ): logged, counted."""
        self._count(lost=len(docs))
        for d in docs:
            log.error("%s: entry %r rejected by the server: %s", self.describe(), d.get("_id"), why)


DlqWriterFactory = Callable[[], DlqWriter]


def dlq_writer_factory(target: DlqTarget, conn: Connection, processor_name: str = "") -> DlqWriterFactory:
    """A per-worker writer factory for the DLQ's resolved connection."""

    def make() -> DlqWriter:
        return DlqWriter(target, conn, processor_name)

    return make


class _DlqPartition(StatelessSinkPartition[list[dict[str, Any]]]):
    def __init__(self, sink: MongoDlqSink, writer: DlqWriter) -> None:
        self._sink = sink
        self._writer = writer

    def write_batch(self, items: list[list[dict[str, Any]]]) -> None:
        docs = [d for batch in items for d in batch]
        if docs:
            # Durable: written (or the processor fails) before Bytewax can checkpoint
            # past this batch. Best effort: queued.
            self._writer.write(docs)

    def close(self) -> None:
        self._writer.close()
        self._sink._add(self._writer.written, self._writer.lost)


class MongoDlqSink(DynamicSink[list[dict[str, Any]]]):
    """Bytewax sink for a dataflow's DLQ stream (items are lists of DLQ documents).

    ``written`` / ``lost`` sum the partitions once they close; :data:`STATS` is live.
    """

    def __init__(self, target: DlqTarget, conn: Connection, processor_name: str) -> None:
        self.target = target
        self.processor_name = processor_name
        self._factory = dlq_writer_factory(target, conn, processor_name)
        self._lock = threading.Lock()
        self.written = 0
        self.lost = 0

    def _add(self, written: int, lost: int) -> None:
        with self._lock:
            self.written += written
            self.lost += lost

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _DlqPartition:
        return _DlqPartition(self, self._factory())
