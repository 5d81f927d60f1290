"""`sample_stream_solar`: ASP's built-in generator of solar-panel readings (docs/semantics.md#sources).

Documents look like the seed's: ``{device_id, group_id, timestamp (string), max_watts,
event_type, obs: {watts, temp}}``. The rate, device count, partition count and random
seed are configurable so tests are reproducible. With ``start_time_ms`` set, the
clock is virtual: each event advances it by ``1000 / rate`` ms and nothing sleeps,
so a test or a benchmark gets a deterministic, as-fast-as-possible stream.

ASP's sample source does not checkpoint (docs/semantics.md#checkpoints): on the real
clock its snapshot is empty (a restart generates from now). A virtual clock is a
position in a deterministic stream, so its snapshot is that position (clock, count and
the generator's state): a restart continues the same stream where the checkpoint left
it, instead of restarting the clock at ``startTime`` behind the restored watermark (which
would make every replayed event late).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from bson.int64 import Int64
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from sources.base import SourceItem, now_ms
from translator.errors import TranslateError, did_you_mean
from translator.mql.values import bson_type


@dataclass(frozen=True)
class SolarConfig:
    """The sample source's settings, read with typed readers from ``$source.config``
    (and the connection entry), so a wrong type fails at create time with its path."""

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
    def from_mapping(m: dict[str, Any], path: str = "config") -> SolarConfig:
        """Raise :class:`TranslateError` naming ``<path>.<key>`` for an unknown key or a
        value of the wrong type."""
        kwargs: dict[str, Any] = {}
        for k, v in m.items():
            entry = SETTINGS.get(k)
            if entry is None:
                raise TranslateError(
                    f"{path}.{k}",
                    f"unknown sample source option '{k}'{did_you_mean(k, SETTINGS)}; allowed: {', '.join(sorted(SETTINGS))}",
                )
            field, read = entry
            kwargs[field] = read(v, f"{path}.{k}")
        return SolarConfig(**kwargs)


def _number(v: Any, path: str, *, low: float, high: float | None = None, low_inclusive: bool = True) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float | Int64):
        raise TranslateError(path, f"expected a number, got {bson_type(v)}")
    x = float(v)
    if not math.isfinite(x) or (x < low if low_inclusive else x <= low) or (high is not None and x > high):
        bound = f"{'at least' if low_inclusive else 'greater than'} {low:g}" + (f" and at most {high:g}" if high is not None else "")
        raise TranslateError(path, f"must be {bound}, got {v!r}")
    return x


def _count(minimum: int) -> Callable[[Any, str], int]:
    def read(v: Any, path: str) -> int:
        if isinstance(v, bool) or not isinstance(v, int | Int64 | float) or (isinstance(v, float) and not v.is_integer()):
            raise TranslateError(path, f"expected an integer, got {v!r}" if isinstance(v, float) else f"expected an integer, got {bson_type(v)}")
        if int(v) < minimum:
            raise TranslateError(path, f"must be at least {minimum}, got {int(v)}")
        return int(v)

    return read


def _optional(read: Callable[[Any, str], Any]) -> Callable[[Any, str], Any]:
    return lambda v, path: None if v is None else read(v, path)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def read_time_ms(v: Any, path: str) -> int:
    """A point in time as epoch milliseconds: a number (epoch ms), a date, an ISO-8601
    string such as ``"2024-01-01T00:00:00Z"``, or Extended JSON ``{"$date": ...}``
    (``$date`` holding an ISO string, epoch ms, or ``{"$numberLong": "..."}``)."""
    if isinstance(v, dict) and set(v) == {"$date"}:
        inner = v["$date"]
        if isinstance(inner, dict) and set(inner) == {"$numberLong"} and isinstance(inner["$numberLong"], str):
            digits = inner["$numberLong"]
            if not digits.lstrip("-").isdigit():
                raise TranslateError(path, f"expected $numberLong digits, got {digits!r}")
            return int(digits)
        return read_time_ms(inner, path)
    if isinstance(v, datetime):
        d = v if v.tzinfo else v.replace(tzinfo=UTC)
        return (d - _EPOCH) // timedelta(milliseconds=1)
    if isinstance(v, str):
        try:
            d = datetime.fromisoformat(v)
        except ValueError:
            raise TranslateError(path, f"expected an ISO-8601 date such as '2024-01-01T00:00:00Z', got {v!r}") from None
        return read_time_ms(d, path)
    if isinstance(v, bool) or not isinstance(v, int | Int64 | float):
        raise TranslateError(path, f"expected a date (ISO-8601 string, $date or epoch milliseconds), got {bson_type(v)}")
    return _count(-(2**62))(v, path)


# option -> (SolarConfig field, typed reader); snake_case aliases kept for older configs.
SETTINGS: dict[str, tuple[str, Callable[[Any, str], Any]]] = {
    "rate": ("rate", lambda v, p: _number(v, p, low=0.0, low_inclusive=False)),
    "devices": ("devices", _count(1)),
    "groups": ("groups", _count(1)),
    "partitions": ("partitions", _count(1)),
    "seed": ("seed", _optional(_count(-(2**62)))),
    "maxEvents": ("max_events", _optional(_count(0))),
    "max_events": ("max_events", _optional(_count(0))),
    "startTime": ("start_time_ms", _optional(read_time_ms)),
    "start_time_ms": ("start_time_ms", _optional(read_time_ms)),
    "batchSize": ("batch_size", _count(1)),
    "faultRate": ("fault_rate", lambda v, p: _number(v, p, low=0.0, high=1.0)),
}


def format_timestamp(ms: int) -> str:
    """``2024-08-08T23:08:02.881+00:00``: the sample source's string timestamps.

    The text up to the second is cached (``strftime`` was nearly half of the sample
    source's time per document); consecutive documents mostly share their second."""
    return _second_text(ms // 1000) + f"{ms % 1000:03d}+00:00"


@lru_cache(maxsize=1024)
def _second_text(s: int) -> str:
    return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=s)).strftime("%Y-%m-%dT%H:%M:%S.")


SolarState = dict[str, Any] | None


class _SolarPartition(StatefulSourcePartition[SourceItem, SolarState]):
    def __init__(self, cfg: SolarConfig, index: int, key: str, resume: SolarState = None) -> None:
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
        if resume is not None and self.virtual:
            self.clock = resume["clock"]
            self.emitted = resume["emitted"]
            self.rng.setstate(resume["rng"])

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

    def snapshot(self) -> SolarState:
        """The virtual clock's position (None on the real clock, as in ASP)."""
        if not self.virtual:
            return None
        return {"clock": self.clock, "emitted": self.emitted, "rng": self.rng.getstate()}


class SolarSource(FixedPartitionedSource[SourceItem, SolarState]):
    def __init__(self, cfg: SolarConfig) -> None:
        self.cfg = cfg

    def list_parts(self) -> list[str]:
        return [f"solar-{i}" for i in range(self.cfg.partitions)]

    def build_part(self, step_id: str, for_part: str, resume_state: SolarState) -> _SolarPartition:
        return _SolarPartition(self.cfg, int(for_part.rsplit("-", 1)[1]), for_part, resume_state)
