"""The child's end of the side channel to the service (protocol: :mod:`service.protocol`).

A processor child finds the socket in ``MQLFLOW_SAMPLE_SOCKET``. Output and DLQ
documents go there for ``sp.process`` and ``sample()``; periodic cumulative figures
go there for ``stats()`` and Prometheus. Figures travel this way rather than by
scraping logs, which would be slow and lose figures (see docs/semantics.md#stats).

Use from a flow::

    from service.channel import ChannelSink, channel
    build_flow(..., output_sink=ChannelSink("output"), dlq_sink=ChannelSink("dlq"))
    channel().add_counts(inputMessageCount=n, inputMessageSize=bytes)   # anywhere
    channel().set_gauges(watermark=dt, stateSize=n, operatorStats=[...])

All calls are no-ops when the variable is unset, so flows run unchanged outside
the service.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import bson
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from service.protocol import (
    COUNTER_FIELDS,
    DOC_KINDS,
    ENV_SOCKET,
    KIND_COUNTERS,
    STATS_INTERVAL_S,
    DocKind,
    Stats,
    decode_control,
    encode_docs,
    encode_stats,
)


class Channel:
    """One connection per child process, shared by all its workers (thread-safe)."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.sampling = False
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(COUNTER_FIELDS, 0)
        self._gauges: dict[str, Any] = {"stateSize": 0, "watermark": None}
        self._last_sent = 0.0
        self._providers: list[Callable[[], Stats]] = []
        if path:
            try:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(path)
            except OSError:
                return
            self._sock = s
            threading.Thread(target=self._read_control, name="mqlflow-channel", daemon=True).start()
            threading.Thread(target=self._stats_loop, name="mqlflow-stats", daemon=True).start()

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def _read_control(self) -> None:
        """Service -> child ``{"sample": bool}`` lines."""
        assert self._sock is not None
        buf = b""
        with contextlib.suppress(OSError):
            while True:
                chunk = self._sock.recv(4096)
                if not chunk:
                    return
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    flag = decode_control(line)
                    if flag is not None:
                        self.sampling = flag

    def _send(self, lines: list[str]) -> None:
        if self._sock is None or not lines:
            return
        data = ("\n".join(lines) + "\n").encode("utf-8")
        with self._lock:
            try:
                self._sock.sendall(data)
            except OSError:
                self._sock = None

    def send_docs(self, kind: DocKind, docs: list[dict[str, Any]]) -> None:
        """Sent only while someone samples."""
        if self._sock is None or not self.sampling:
            return
        self._send(encode_docs(kind, docs))

    def add_counts(self, **counts: int) -> None:
        with self._lock:
            for k, v in counts.items():
                self._counts[k] = self._counts.get(k, 0) + v

    def set_gauges(self, **gauges: Any) -> None:
        with self._lock:
            self._gauges.update(gauges)

    def add_gauge_provider(self, fn: Callable[[], Stats]) -> None:
        """``fn()`` returns gauges (``stateSize``, ``operatorStats``) computed at each
        flush, so they are fresh once a second and at exit without per-batch work."""
        with self._lock:
            self._providers.append(fn)

    def flush_stats(self) -> None:
        with self._lock:
            providers = list(self._providers)
        extra: dict[str, Any] = {}
        for fn in providers:
            with contextlib.suppress(Exception):  # figures are best effort, never fatal
                extra.update(fn())
        with self._lock:
            self._gauges.update(extra)
            stats = {**self._counts, **self._gauges}
        self._send([encode_stats(stats)])

    def _stats_loop(self) -> None:
        while self._sock is not None:
            time.sleep(STATS_INTERVAL_S)
            self.flush_stats()


_channel: Channel | None = None
_channel_lock = threading.Lock()


def channel() -> Channel:
    """The process-wide channel (connected on first use)."""
    global _channel
    with _channel_lock:
        if _channel is None:
            _channel = Channel(os.environ.get(ENV_SOCKET))
            if _channel.enabled:
                import atexit

                atexit.register(_channel.flush_stats)
        return _channel


SIZE_CHUNK = 32  # documents encoded together by bson_size


def _framing(n: int) -> int:
    """Bytes ``bson.encode({"": docs})`` adds around ``n`` documents: the outer document
    (length, element type, empty key, terminator: 7), the array's length and terminator
    (5), and per element its type byte, its index as a C string ("0", "1", ...)."""
    return 12 + sum(2 + len(str(i)) for i in range(n))


_FRAMING = [_framing(n) for n in range(SIZE_CHUNK + 1)]


def bson_size(docs: list[dict[str, Any]]) -> int:
    """Total BSON size of ``docs``, the unit of ``stats()`` ``*MessageSize``; a document
    BSON cannot encode still counts as a message but adds no bytes.

    Documents are encoded ``SIZE_CHUNK`` at a time, as one array, and the array's own
    framing taken off: the same total as one ``bson.encode`` per document at half the CPU
    (the per-call cost is most of a small document's), with the extra memory bounded to a
    chunk. A chunk that cannot be encoded together is sized one document at a time."""
    size = 0
    for i in range(0, len(docs), SIZE_CHUNK):
        chunk = docs[i : i + SIZE_CHUNK]
        if all(type(d) is dict for d in chunk):
            try:
                size += len(bson.encode({"": chunk})) - _FRAMING[len(chunk)]
                continue
            except Exception:
                pass
        size += _sizes_one_by_one(chunk)
    return size


def bson_size_exact(docs: list[dict[str, Any]]) -> int | None:
    """:func:`bson_size` when BSON encodes every document, else None (for a caller that
    adds bytes per encodable document and cannot tell which ones those are)."""
    size = 0
    for i in range(0, len(docs), SIZE_CHUNK):
        chunk = docs[i : i + SIZE_CHUNK]
        if not all(type(d) is dict for d in chunk):
            return None
        try:
            size += len(bson.encode({"": chunk})) - _FRAMING[len(chunk)]
        except Exception:
            return None
    return size


def _sizes_one_by_one(docs: list[Any]) -> int:
    size = 0
    for d in docs:
        try:
            size += len(bson.encode(d))
        except Exception:
            continue
    return size


class _ChannelPartition(StatelessSinkPartition[Any]):
    def __init__(self, kind: DocKind) -> None:
        self.kind = kind
        self.count_key, self.size_key = KIND_COUNTERS[kind]
        self.ch = channel()

    def write_batch(self, items: list[Any]) -> None:
        docs: list[dict[str, Any]] = []
        for item in items:
            if isinstance(item, list):
                docs.extend(item)
            else:
                docs.append(item)
        if not docs:
            return
        self.ch.add_counts(**{self.count_key: len(docs), self.size_key: bson_size(docs)})
        self.ch.send_docs(self.kind, docs)


class ChannelSink(DynamicSink[Any]):
    """Bytewax sink for ``sp.process``: items are documents or lists (batches) of them."""

    def __init__(self, kind: DocKind = "output") -> None:
        if kind not in DOC_KINDS:
            raise ValueError(f"kind must be one of {DOC_KINDS}")
        self.kind = kind

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _ChannelPartition:
        return _ChannelPartition(self.kind)
