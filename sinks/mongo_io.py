"""What the MongoDB sinks (``$merge`` and the DLQ) share: clients with timeouts, bulk writes
sized to the server, and one retry loop that reports a write making no progress.

* Every call has a timeout. The client gets ``serverSelectionTimeoutMS``,
  ``connectTimeoutMS`` and ``socketTimeoutMS`` unless the connection's URI sets them, so a
  server that accepts a connection and then stops answering raises ``NetworkTimeout``
  instead of blocking a worker forever.
* FerretDB v1 on SQLite holds one connection of a per-database pool (about 100) for each
  update a bulk write matches; a bulk of 100 or more matched updates freezes that
  database until FerretDB restarts. :func:`server_profile` reads ``buildInfo`` once per
  client and caps the operations per bulk write for FerretDB; a real ``mongod`` keeps the
  sink's batch size.
* :class:`AdaptiveBulk` is the one rule both sinks size their bulk writes by: halved
  after a bulk write that timed out (a slow server), doubled back toward that cap while
  bulk writes answer quickly.
* :class:`Attempts` wraps one logical write: while it has not finished it is listed by
  :func:`translator.metrics.sink_stalls` (``stats().sinkStalls``), each transient failure
  is logged with the processor, the sink and how long the write has waited, and after
  ``give_up_s`` without progress it raises :class:`SinkStalledError`, which fails the
  processor with that message (its ``errorMsg``).
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from pymongo import MongoClient
from pymongo.errors import (
    ConnectionFailure,
    NetworkTimeout,
    OperationFailure,
    ServerSelectionTimeoutError,
)

from translator import metrics

log = logging.getLogger("mqlflow.sink")

Doc = dict[str, Any]

# Defaults for the client timeouts; a connection URI that sets one wins.
CLIENT_TIMEOUTS_MS: dict[str, int] = {
    "serverSelectionTimeoutMS": 10_000,
    "connectTimeoutMS": 10_000,
    "socketTimeoutMS": 30_000,
}
ENV_GIVE_UP_S = "MQLFLOW_SINK_GIVE_UP_S"
DEFAULT_GIVE_UP_S = 300.0


def give_up_after_s() -> float:
    """How long a sink write may make no progress before the processor fails (0: never)."""
    raw = os.environ.get(ENV_GIVE_UP_S, "")
    try:
        v = float(raw) if raw else DEFAULT_GIVE_UP_S
    except ValueError:
        log.error("%s=%r is not a number; using %.0f s", ENV_GIVE_UP_S, raw, DEFAULT_GIVE_UP_S)
        return DEFAULT_GIVE_UP_S
    return v if v > 0 else float("inf")


def uri_options(uri: str) -> frozenset[str]:
    """Lower-cased option names in a MongoDB URI's query string (no DNS lookup)."""
    return frozenset(k.lower() for k, _ in parse_qsl(urlsplit(uri).query))


def make_client(uri: str, appname: str) -> MongoClient[Doc]:
    """A client whose every operation has a timeout (defaults unless the URI sets them)."""
    given = uri_options(uri)
    kw: dict[str, Any] = {k: v for k, v in CLIENT_TIMEOUTS_MS.items() if k.lower() not in given}
    return MongoClient(uri, appname=appname, **kw)


# ---- bulk write size per server ---------------------------------------------------------------


@dataclass(frozen=True)
class ServerProfile:
    name: str
    max_bulk_ops: int | None  # None: no cap beyond the sink's own batch size


# FerretDB v1 (SQLite) freezes at ~100 matched updates in one bulk write; 50 leaves room for
# the DLQ writer and other clients of the same database.
SERVER_PROFILES: dict[str, ServerProfile] = {
    "ferretdb": ServerProfile("FerretDB", 50),
    "mongodb": ServerProfile("MongoDB", None),
}


def server_kind(build_info: Doc) -> str:
    """FerretDB's ``buildInfo`` carries ``ferretdbVersion``; anything else is a MongoDB."""
    return "ferretdb" if "ferretdbVersion" in build_info or "ferretdbFeatures" in build_info else "mongodb"


def server_profile(client: MongoClient[Doc]) -> ServerProfile:
    """Read once per client (the caller keeps the result); network errors propagate."""
    try:
        info = client.admin.command("buildInfo")
    except OperationFailure as exc:  # refused (not a network error, which the caller retries)
        log.warning("buildInfo failed (%s); assuming a MongoDB server", exc)
        return SERVER_PROFILES["mongodb"]
    return SERVER_PROFILES[server_kind(dict(info))]


def bulk_size(batch_size: int, profile: ServerProfile) -> int:
    cap = profile.max_bulk_ops
    return max(1, batch_size if cap is None else min(batch_size, cap))


FAST_BULK_S = 1.0  # a bulk write answered this fast may grow back toward the cap


class AdaptiveBulk:
    """Operations per bulk write for one client: the sink's batch size capped for the
    server (:func:`bulk_size`), halved after a socket timeout, doubled back (up to that cap)
    while bulk writes answer within :data:`FAST_BULK_S`. ``$merge`` and the DLQ writer both
    size their writes by it, so a server that is slow for big bulks gets smaller ones
    instead of the same timed-out bulk again."""

    def __init__(self, client: MongoClient[Doc], batch_size: int, profile: ServerProfile, processor: str, sink: str) -> None:
        self.max = bulk_size(batch_size, profile)
        self.size = self.max
        self.processor = processor
        self.sink = sink
        # A failed attempt that lasted about socketTimeoutMS timed out (pymongo may report it
        # as a cancelled operation when its monitor saw the server go silent first).
        timeout_s = client.options.pool_options.socket_timeout
        self.timed_out_s = 0.9 * timeout_s if timeout_s else float("inf")

    def succeeded(self, seconds: float) -> None:
        """A bulk write of ``size`` or fewer operations took ``seconds``."""
        if seconds < FAST_BULK_S and self.size < self.max:
            self._set(min(self.max, self.size * 2), seconds, timed_out=False)

    def failed(self, exc: ConnectionFailure, seconds: float) -> None:
        """A bulk write failed with ``exc`` after ``seconds``: halve if it timed out. A
        server that cannot be selected (down, unreachable) is not slow: no change."""
        slow = isinstance(exc, NetworkTimeout) or seconds >= self.timed_out_s
        if slow and not isinstance(exc, ServerSelectionTimeoutError):
            self._set(max(1, self.size // 2), seconds, timed_out=True)

    def _set(self, new: int, seconds: float, timed_out: bool) -> None:
        if new != self.size:
            log.warning(
                "processor '%s': %s: bulk writes now hold at most %d operation(s) (last took %.1f s%s)",
                self.processor, self.sink, new, seconds, ", timed out" if timed_out else "",
            )
            self.size = new


def chunks(items: list[Any], n: int) -> list[list[Any]]:
    return [items[i : i + n] for i in range(0, len(items), n)] or [[]]


# ---- progress of one write -----------------------------------------------------------------


class SinkStalledError(RuntimeError):
    """A sink write made no progress for longer than the processor tolerates."""


_fatal: list[str] = []


def _print_fatal() -> None:
    for msg in _fatal:
        print(f"mqlflow: sink failed: {msg}", file=sys.stderr, flush=True)


def report_fatal(msg: str) -> None:
    """Make ``msg`` the last line the process writes to stderr.

    Bytewax re-raises a sink's exception wrapped as "error writing output batch", and the
    service shows the last stderr line as ``errorMsg``; atexit handlers run after Python
    printed the traceback, so the reason comes last."""
    if not _fatal:
        atexit.register(_print_fatal)
    _fatal.append(msg)


class Attempts:
    """One logical write and its retries (use as a context manager).

    ``retry(reason)`` after each transient failure: logs, backs off, and raises
    :class:`SinkStalledError` once the write has waited ``give_up_s``."""

    def __init__(
        self,
        processor: str,
        sink: str,
        what: str,
        *,
        backoff_initial_s: float = 0.1,
        backoff_max_s: float = 5.0,
        give_up_s: float | None = None,
        fatal: bool = True,
    ) -> None:
        self.fatal = fatal  # giving up fails the processor (else the caller counts a loss)
        self.processor = processor
        self.sink = sink
        self.what = what
        self.delay = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.give_up_s = give_up_after_s() if give_up_s is None else give_up_s
        self.count = 0
        self.t0 = time.monotonic()
        self._key = id(self)

    def __enter__(self) -> Attempts:
        metrics.sink_wait_begin(self._key, self.processor, self.sink, self.what)
        return self

    def __exit__(self, *exc: object) -> None:
        metrics.sink_wait_end(self._key)
        if self.count and exc[0] is None:
            log.warning(
                "processor '%s': %s: %s done after %d retries, %.1f s",
                self.processor, self.sink, self.what, self.count, self.waited(),
            )

    def waited(self) -> float:
        return time.monotonic() - self.t0

    def retry(self, reason: str) -> None:
        reason = reason.split(", Topology Description:", 1)[0]  # pymongo's server list: noise here
        waited = self.waited()
        if waited >= self.give_up_s:
            msg = (
                f"processor '{self.processor}': {self.sink} made no progress for {waited:.0f} s "
                f"({self.what}); last error: {reason}"
            )
            if self.fatal:
                report_fatal(msg)
            raise SinkStalledError(msg)
        self.count += 1
        metrics.sink_wait_retry(self._key, reason)
        delay = min(self.delay, max(0.0, self.give_up_s - waited))
        log.warning(
            "processor '%s': %s: %s made no progress for %.1f s (%s); retry %d in %.1f s",
            self.processor, self.sink, self.what, waited, reason, self.count, delay,
        )
        time.sleep(delay)
        self.delay = min(self.delay * 2, self.backoff_max_s)
