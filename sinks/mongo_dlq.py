"""The dead-letter collection: processor option ``dlq: {connectionName, db, coll}``.

Reference §5: DLQ delivery is *best effort, not transactional*, and it must never hold up
the main output. So :class:`DlqWriter` queues documents and a background thread inserts
them in batches (``insert_many(ordered=False)``), retrying a transient failure a bounded
number of times and then logging and counting the loss. Documents arrive already shaped by
:func:`sinks.dlq.dlq_document`.

Two users: :class:`MongoDlqSink` (a Bytewax sink for the DLQ stream of a dataflow) and
``$merge`` (:mod:`sinks.mongo`), which sends the documents the server rejects.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from bytewax.outputs import DynamicSink, StatelessSinkPartition
from pymongo import MongoClient
from pymongo.errors import BulkWriteError, ConnectionFailure, OperationFailure, PyMongoError

from translator.connections import ConnectionRegistry
from translator.ir import DlqTarget

log = logging.getLogger("mqlflow.dlq")

DUPLICATE_KEY = 11000


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
    """Best-effort batched writer of DLQ documents into one collection.

    ``write`` never blocks: documents go to a bounded queue that a daemon thread drains.
    When the queue is full (the DLQ server is down for long) further documents are dropped
    and counted in ``lost``. ``flush`` waits (bounded) until what was queued is written or
    given up.
    """

    retries = 3  # attempts per batch for transient errors
    backoff_s = 0.2  # first retry delay, doubled per attempt
    server_timeout_ms = 3000

    def __init__(
        self,
        target: DlqTarget,
        registry: ConnectionRegistry,
        processor_name: str = "",
        *,
        path: str = "options.dlq",
        batch_size: int = 500,
        max_queue: int = 100_000,
    ) -> None:
        conn = registry.get_mongodb(target.connection_name, f"{path}.connectionName")
        self._setup(conn.uri or "", target.db, target.coll, conn.name, batch_size, max_queue)
        self.processor_name = processor_name

    @classmethod
    def to(cls, uri: str, db: str, coll: str, *, batch_size: int = 500, max_queue: int = 100_000) -> DlqWriter:
        """A writer for a bare URI (no registry)."""
        w = cls.__new__(cls)
        w._setup(uri, db, coll, "", batch_size, max_queue)
        w.processor_name = ""
        return w

    def _setup(self, uri: str, db: str, coll: str, connection_name: str, batch_size: int, max_queue: int) -> None:
        self.uri = uri
        self.db = db
        self.coll = coll
        self.connection_name = connection_name
        self.batch_size = batch_size
        self.written = 0
        self.lost = 0
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize=max_queue)
        self._client: MongoClient[dict[str, Any]] | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False

    # -- public API ---------------------------------------------------------------------------

    def write(self, docs: list[dict[str, Any]]) -> None:
        """Queue ``docs`` for insertion (non-blocking)."""
        if not docs:
            return
        self._ensure_thread()
        dropped = 0
        for d in docs:
            try:
                self._queue.put_nowait(d)
            except queue.Full:
                dropped += 1
        if dropped:
            self._count(lost=dropped)
            log.error("DLQ %s.%s: queue full, %d document(s) dropped", self.db, self.coll, dropped)

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until everything queued so far is written or given up; False on timeout."""
        if self._thread is None:
            return True
        deadline = time.monotonic() + timeout_s
        while self._queue.unfinished_tasks:
            if time.monotonic() > deadline:
                log.error("DLQ %s.%s: flush timed out with %d document(s) pending", self.db, self.coll, self._queue.unfinished_tasks)
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

    def _collection(self) -> Any:
        if self._client is None:
            self._client = MongoClient(self.uri, serverSelectionTimeoutMS=self.server_timeout_ms, connectTimeoutMS=self.server_timeout_ms)
        return self._client[self.db][self.coll]

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            batch: list[dict[str, Any]] = []
            if first is None:
                self._queue.task_done()
                break
            batch.append(first)
            while len(batch) < self.batch_size:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.task_done()
                    stop = True
                    break
                batch.append(nxt)
            try:
                self._insert(batch)
            except Exception:  # never let the writer thread die
                log.exception("DLQ %s.%s: unexpected error, %d document(s) lost", self.db, self.coll, len(batch))
                self._count(lost=len(batch))
            finally:
                for _ in batch:
                    self._queue.task_done()

    def _insert(self, batch: list[dict[str, Any]]) -> None:
        delay = self.backoff_s
        for attempt in range(1, self.retries + 1):
            try:
                self._collection().insert_many(batch, ordered=False)
                self._count(written=len(batch))
                return
            except BulkWriteError as exc:
                errors = exc.details.get("writeErrors", [])
                # A retried batch may hit its own earlier inserts (same ObjectId): that is written.
                failed = [e for e in errors if e.get("code") != DUPLICATE_KEY]
                for e in failed:
                    log.error("DLQ %s.%s: document rejected: %s", self.db, self.coll, e.get("errmsg"))
                self._count(written=len(batch) - len(failed), lost=len(failed))
                return
            except (ConnectionFailure, OperationFailure) as exc:
                if attempt == self.retries:
                    log.error(
                        "DLQ %s.%s: giving up on %d document(s) after %d attempts: %s",
                        self.db, self.coll, len(batch), attempt, exc,
                    )
                    self._count(lost=len(batch))
                    return
                log.warning("DLQ %s.%s: write failed (%s); retry %d in %.1f s", self.db, self.coll, exc, attempt, delay)
                time.sleep(delay)
                delay *= 2
            except PyMongoError as exc:  # InvalidDocument and the like: not retryable
                log.error("DLQ %s.%s: %d document(s) lost: %s", self.db, self.coll, len(batch), exc)
                self._count(lost=len(batch))
                return


DlqWriterFactory = Callable[[], DlqWriter]


def dlq_writer_factory(target: DlqTarget, registry: ConnectionRegistry, path: str = "options.dlq") -> DlqWriterFactory:
    """Resolve the DLQ connection now (compile time) and return a per-worker writer factory."""
    registry.get_mongodb(target.connection_name, f"{path}.connectionName")  # fail now, not per worker

    def make() -> DlqWriter:
        return DlqWriter(target, registry, path=path)

    return make


class _DlqPartition(StatelessSinkPartition[list[dict[str, Any]]]):
    def __init__(self, sink: MongoDlqSink, writer: DlqWriter) -> None:
        self._sink = sink
        self._writer = writer

    def write_batch(self, items: list[list[dict[str, Any]]]) -> None:
        docs = [d for batch in items for d in batch]
        if docs:
            self._writer.write(docs)
            # Wait (briefly, bounded) for the queue to drain, so that a checkpoint taken
            # after this batch normally covers written DLQ entries; never long enough to
            # hold the main output back when the DLQ server is away.
            self._writer.flush(timeout_s=2.0)

    def close(self) -> None:
        self._writer.close()
        self._sink._add(self._writer.written, self._writer.lost)


class MongoDlqSink(DynamicSink[list[dict[str, Any]]]):
    """Bytewax sink for a dataflow's DLQ stream (items are lists of DLQ documents).

    ``written`` / ``lost`` sum the partitions once they close; :data:`STATS` is live.
    """

    def __init__(self, target: DlqTarget, registry: ConnectionRegistry, processor_name: str) -> None:
        self.target = target
        self.processor_name = processor_name
        self._factory = dlq_writer_factory(target, registry)
        self._lock = threading.Lock()
        self.written = 0
        self.lost = 0

    def _add(self, written: int, lost: int) -> None:
        with self._lock:
            self.written += written
            self.lost += lost

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _DlqPartition:
        return _DlqPartition(self, self._factory())
