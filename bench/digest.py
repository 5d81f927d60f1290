"""Order-free, additive digests of engine results (stdlib only).

Every engine reduces its output rows to a :class:`Digest`; two engines agree when their
digests are equal. Exact fields (window start, group, min, max, strings, ints) go into a
sum of 64-bit hashes; floats (avg, stddev, ratios) go into sums weighted by a per-row
factor taken from that hash, compared with a relative tolerance, because engines compute
them in different orders (Welford, sum of squares, exact integers). The digest is a sum,
so the parts from several processes add up to the digest of the whole.

Hashes use ``hashlib.blake2b`` over ``repr`` of ints and strings so they are the same in
every process and every virtualenv.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, field
from typing import Any

MASK = (1 << 64) - 1
REL_TOL = 1e-9


def _h(key: tuple[Any, ...]) -> int:
    return int.from_bytes(hashlib.blake2b(repr(key).encode(), digest_size=8).digest(), "little")


@dataclass
class Digest:
    rows: int = 0
    exact: int = 0
    floats: list[float] = field(default_factory=list)

    def add(self, key: tuple[Any, ...], values: tuple[float, ...]) -> None:
        h = _h(key)
        self.rows += 1
        self.exact = (self.exact + h) & MASK
        w = 1.0 + (h & 1023) / 1024.0
        fl = self.floats
        if not fl:
            fl.extend(0.0 for _ in values)
        for i, v in enumerate(values):
            fl[i] += w * v

    def merge(self, other: Digest) -> Digest:
        fl = list(self.floats) or [0.0] * len(other.floats)
        for i, v in enumerate(other.floats):
            fl[i] += v
        return Digest(self.rows + other.rows, (self.exact + other.exact) & MASK, fl)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Digest:
        return Digest(int(d["rows"]), int(d["exact"]), [float(x) for x in d["floats"]])

    def diff(self, ref: Digest) -> str | None:
        """``None`` when equal to ``ref``, else what differs."""
        if self.rows != ref.rows:
            return f"{self.rows} result rows, reference has {ref.rows}"
        if self.exact != ref.exact:
            return "same row count but different exact fields (window, group, min, max, strings)"
        for i, (a, b) in enumerate(zip(self.floats, ref.floats, strict=False)):
            if not math.isclose(a, b, rel_tol=REL_TOL, abs_tol=1e-9):
                return f"float field {i}: {a!r} != reference {b!r}"
        if len(self.floats) != len(ref.floats):
            return "different float fields"
        return None


def window_row(d: Digest, start_ms: int, group: int | str, mn: int, mx: int, avg: float, std: float) -> None:
    """One window result: ``(window start, group) -> min, max, avg, stdDevPop of temp``.
    The group is a ``group_id`` (engines may return it as text) or a ``device_id``."""
    g = group if isinstance(group, str) and not group.lstrip("-").isdigit() else int(group)
    d.add((int(start_ms), g, int(mn), int(mx)), (float(avg), float(std)))


def offpath_row(d: Digest, start_ms: int, key: str, n: int, max_pct: float, temps: list[int], watts: list[int]) -> None:
    """One workload-E window result. ``$addToSet`` has no order (sorted here); ``$push``
    keeps arrival order, which every engine must reproduce."""
    d.add((int(start_ms), key, int(n), tuple(sorted(temps)), tuple(watts)), (float(max_pct),))


def stateless_row(
    d: Digest, device: str, group: int, ts_ms: int, temp: int, hot: bool, watts_pct: float
) -> None:
    """One workload-C document."""
    d.add((device, int(group), int(ts_ms), int(temp), bool(hot)), (float(watts_pct),))
