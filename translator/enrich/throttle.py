"""``$throttle``: https://www.mongodb.com/docs/atlas/atlas-stream-processing/sp-agg-throttle/

Each limit is a continuously refilling token bucket holding at most one second of
budget. A document takes one message token and its BSON size in byte tokens; when a
bucket runs short the stage sleeps until it has refilled (the Bytewax worker waits, so
the source is read no faster). A document larger than ``bytesPerSec`` passes, then the
stage waits one second, as ASP does. Buckets are per process (shared by its workers).
Sleeps are batched: a debt under 20 ms is carried to the next document.
"""

from __future__ import annotations

import threading
import time

import bson

from translator import metrics
from translator.enrich.spec import ThrottleStage
from translator.mql.expr import Vars
from translator.stages import BATCH, DlqFn, Rec, Step

SLACK_S = 0.02


class Bucket:
    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.tokens = rate
        self.at = time.monotonic()

    def refill(self, now: float) -> None:
        self.tokens = min(self.rate, self.tokens + (now - self.at) * self.rate)
        self.at = now

    def take(self, n: float) -> float:
        """Take ``n`` tokens; the seconds to wait now (0 while the debt is small)."""
        self.refill(time.monotonic())
        if n > self.rate:  # larger than a whole second's budget: pass, then wait 1 s
            self.tokens = 0.0
            return 1.0
        self.tokens -= n
        return -self.tokens / self.rate if self.tokens < -self.rate * SLACK_S else 0.0

    def debt(self) -> float:
        self.refill(time.monotonic())
        return -self.tokens / self.rate if self.tokens < 0 else 0.0


class Throttle:
    def __init__(self, stage: ThrottleStage) -> None:
        self.stage = stage
        self.buckets: list[tuple[Bucket, bool]] = []  # (bucket, counts bytes)
        if stage.messages_per_sec is not None:
            self.buckets.append((Bucket(stage.messages_per_sec), False))
        if stage.bytes_per_sec is not None:
            self.buckets.append((Bucket(stage.bytes_per_sec), True))
        self.lock = threading.Lock()
        self.throttled_s = 0.0
        self.events = 0

    def _wait(self, seconds: float) -> None:
        if seconds <= 0:
            return
        time.sleep(seconds)
        self.throttled_s += seconds
        self.events += 1
        if metrics.ENABLED:
            metrics.add_counters(
                self.stage.path, {"throttle": {"throttledTimeMs": int(seconds * 1000), "throttleEvents": 1}}
            )

    def run(self, recs: list[Rec], dlq: DlqFn, vars_: Vars) -> list[Rec]:
        with self.lock:
            for d, _ in recs:
                wait = 0.0
                for b, by_size in self.buckets:
                    wait = max(wait, b.take(len(bson.encode(d)) if by_size else 1))
                self._wait(wait)
            self._wait(max(b.debt() for b, _ in self.buckets))
        return recs


def compile_throttle(stage: ThrottleStage) -> Step:
    t = Throttle(stage)
    step = Step(BATCH, t.run, "$throttle", stage.path)
    return step
