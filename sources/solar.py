"""`sample_stream_solar`: ASP's built-in generator of solar-panel readings (reference §2).

Documents look like the seed's: ``{device_id, group_id, timestamp (string), max_watts,
event_type, obs: {watts, temp}}``. The rate, device count, partition count and random
seed are configurable so tests are reproducible. With ``start_time_ms`` set, the
clock is virtual: each event advances it by ``1000 / rate`` ms and nothing sleeps,
so a test or a benchmark gets a deterministic, as-fast-as-possible stream.
ASP's sample source does not checkpoint (reference §7), so its snapshot is empty.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from sources.base import SourceItem, now_ms


@dataclass(frozen=True)
class SolarConfig:
    rate: float = 10.0  # events per second per partition
    devices: int = 11  # device_0 .. device_10, as observed in Atlas
    groups: int = 10
    partitions: int = 1
    seed: int | None = None
    max_events: int | None = None  # per partition; None = infinite
    start_time_ms: int | None = None  # virtual clock when set
    batch_size: int = 1024
    fault_rate: float = 0.02

    @staticmethod
    def from_mapping(m: dict[str, Any]) -> SolarConfig:
        names = {
            "rate": "rate", "devices": "devices", "groups": "groups", "partitions": "partitions",
            "seed": "seed", "maxEvents": "max_events", "max_events": "max_events",
            "startTime": "start_time_ms", "start_time_ms": "start_time_ms", "batchSize": "batch_size",
            "faultRate": "fault_rate",
        }
        kwargs: dict[str, Any] = {}
        for k, v in m.items():
            if k not in names:
                raise ValueError(f"unknown sample source option '{k}'; allowed: {', '.join(sorted(names))}")
            if names[k] == "start_time_ms" and isinstance(v, datetime):
                v = int(v.timestamp() * 1000)
            kwargs[names[k]] = v
        return SolarConfig(**kwargs)


def format_timestamp(ms: int) -> str:
    """``2024-08-08T23:08:02.881+00:00``: the sample source's string timestamps."""
    d = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}+00:00"


class _SolarPartition(StatefulSourcePartition[SourceItem, None]):
    def __init__(self, cfg: SolarConfig, index: int, key: str) -> None:
        self.cfg = cfg
        self.key = key
        seed = None if cfg.seed is None else cfg.seed * 1000 + index
        self.rng = random.Random(seed)
        self.emitted = 0
        self.step_ms = 1000.0 / cfg.rate
        self.virtual = cfg.start_time_ms is not None
        self.clock = float(cfg.start_time_ms if cfg.start_time_ms is not None else now_ms())
        self.next_wall = time.monotonic()
        # Each device has a fixed group and panel size, as in Atlas's sample stream.
        self.device_group = [i % cfg.groups for i in range(cfg.devices)]
        self.device_max = [450 if i % 2 == 0 else 250 for i in range(cfg.devices)]

    def _doc(self, ms: int) -> dict[str, Any]:
        rng = self.rng
        dev = rng.randrange(self.cfg.devices)
        max_watts = self.device_max[dev]
        fault = rng.random() < self.cfg.fault_rate
        return {
            "device_id": f"device_{dev}",
            "group_id": self.device_group[dev],
            "timestamp": format_timestamp(ms),
            "max_watts": max_watts,
            "event_type": 1 if fault else 0,
            "obs": {"watts": 0 if fault else rng.randint(0, max_watts), "temp": rng.randint(8, 24)},
            "_stream_meta": {"source": {"type": "generated"}},
        }

    def next_batch(self) -> list[SourceItem]:
        cfg = self.cfg
        if cfg.max_events is not None and self.emitted >= cfg.max_events:
            raise StopIteration
        if self.virtual:
            n = cfg.batch_size
        else:
            now = time.monotonic()
            n = int((now - self.next_wall) * cfg.rate) + 1 if now >= self.next_wall else 0
            n = min(n, cfg.batch_size)
            if n == 0:
                return []
            self.next_wall += n / cfg.rate
            self.clock = float(now_ms())
        if cfg.max_events is not None:
            n = min(n, cfg.max_events - self.emitted)
        batch = []
        for _ in range(n):
            ms = int(self.clock)
            batch.append((self._doc(ms), ms))
            if self.virtual:
                self.clock += self.step_ms
        self.emitted += n
        return [(self.key, batch)]

    def next_awake(self) -> datetime | None:
        if self.virtual:
            return None
        delay = max(0.0, self.next_wall - time.monotonic())
        return datetime.now(UTC) + timedelta(seconds=delay)

    def snapshot(self) -> None:
        return None


class SolarSource(FixedPartitionedSource[SourceItem, None]):
    def __init__(self, cfg: SolarConfig) -> None:
        self.cfg = cfg

    def list_parts(self) -> list[str]:
        return [f"solar-{i}" for i in range(self.cfg.partitions)]

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _SolarPartition:
        return _SolarPartition(self.cfg, int(for_part.rsplit("-", 1)[1]), for_part)
