"""Deterministic generator of seed-shaped solar documents (stdlib only).

Documents look like ``sample_stream_solar``'s (``sources/solar.py``): ``{device_id,
group_id, timestamp (string), max_watts, event_type, obs: {watts, temp}}``. Event ``i`` has
event time ``start + i * 1000 / rate`` ms; a fraction ``ooo`` of events is moved back in
time by 1..``ooo_max_ms`` ms while keeping its place in the stream (out of order). Keeping
``ooo_max_ms`` below ASP's default ``allowedLateness`` (3 s) means no document is late
under any engine's lateness rule, so every engine must produce the same windows.

Only the standard library is used: the PyFlink and Pathway engines import this module
from their own virtualenvs.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

START_MS = 1_722_000_000_000  # 2024-07-26T13:20:00Z, a whole 3 s and 10 s boundary
DEVICES = 64


@dataclass(frozen=True)
class GenSpec:
    n: int = 100_000  # events in total
    groups: int = 10  # distinct group_id values
    ooo: float = 0.05  # fraction of events out of order
    ooo_max_ms: int = 2500  # how far back an out-of-order event goes (< allowedLateness)
    rate: float = 10_000.0  # events per second of event time
    seed: int = 42
    partitions: int = 1  # event i goes to partition i % partitions
    devices: int = DEVICES  # distinct device_id values (workload D: 10,000)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> GenSpec:
        return GenSpec(**d)


def _devices(n: int) -> tuple[list[str], list[int]]:
    """Device ids and their ``max_watts`` (even devices 450, odd 250)."""
    return [f"device_{i}" for i in range(n)], [450 if i % 2 == 0 else 250 for i in range(n)]


class _Clock:
    """``2024-08-08T23:08:02.881+00:00`` strings, the second's prefix cached."""

    def __init__(self) -> None:
        self.cache: dict[int, str] = {}

    def fmt(self, ms: int) -> str:
        sec, milli = divmod(ms, 1000)
        prefix = self.cache.get(sec)
        if prefix is None:
            if len(self.cache) > 4096:
                self.cache.clear()
            prefix = datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%dT%H:%M:%S.")
            self.cache[sec] = prefix
        return f"{prefix}{milli:03d}+00:00"


def iter_docs(spec: GenSpec, partition: int = 0) -> Iterator[dict[str, Any]]:
    """Documents of one partition, in stream order. Same spec, same documents."""
    rng = random.Random(spec.seed)
    bits = rng.getrandbits
    k = spec.groups
    step = 1000.0 / spec.rate
    ooo_cut = int(spec.ooo * 1_000_000)
    ooo_max = spec.ooo_max_ms
    clock = _Clock()
    fmt = clock.fmt
    parts = spec.partitions
    ndev = spec.devices
    devices, max_watts = _devices(ndev)
    for i in range(spec.n):
        r = bits(64)  # one draw per event, whatever the partition: partitions split one stream
        if i % parts != partition:
            continue
        ms = START_MS + int(i * step)
        if (r >> 8) % 1_000_000 < ooo_cut:
            ms -= 1 + (r >> 28) % ooo_max
        dev = (r >> 40) % ndev
        mw = max_watts[dev]
        fault = (r >> 46) & 63 == 0
        yield {
            "device_id": devices[dev],
            "group_id": r % k,
            "timestamp": fmt(ms),
            "max_watts": mw,
            "event_type": 1 if fault else 0,
            "obs": {"watts": 0 if fault else (r >> 52) % (mw + 1), "temp": 8 + (r >> 20) % 17},
        }


def iter_batches(spec: GenSpec, partition: int = 0, batch_size: int = 1024) -> Iterator[list[dict[str, Any]]]:
    """The partition's documents in lists of ``batch_size`` (the last may be shorter)."""
    batch: list[dict[str, Any]] = []
    for d in iter_docs(spec, partition):
        batch.append(d)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def materialize(spec: GenSpec, partition: int = 0, batch_size: int = 1024) -> list[list[dict[str, Any]]]:
    return list(iter_batches(spec, partition, batch_size))


def parse_ms(ts: str) -> int:
    """Event time in ms of a generator timestamp (what ``$dateFromString`` yields)."""
    dt = datetime.fromisoformat(ts)
    return (int(dt.timestamp()) * 1000) + dt.microsecond // 1000
