"""The sample source's string timestamps: the cached per-second text gives exactly what
formatting each millisecond from scratch gives."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from sources.solar import format_timestamp


def reference(ms: int) -> str:
    d = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}+00:00"


def test_cached_seconds_format_like_the_reference() -> None:
    rng = random.Random(7)
    t0 = 1_723_158_482_881  # 2024-08-08T23:08:02.881
    samples = [t0 + i for i in range(-2500, 2500)]  # runs across second boundaries
    samples += [rng.randrange(-62_135_596_800_000 + 1000, 253_402_300_799_000) for _ in range(5000)]
    samples += [0, -1, -999, -1000, -1001, 999, 1000]
    assert [format_timestamp(ms) for ms in samples] == [reference(ms) for ms in samples]
    assert format_timestamp(t0) == "2024-08-08T23:08:02.881+00:00"
