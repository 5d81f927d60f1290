"""Workload K: the seed pipeline from a real Kafka topic (``bench/kafka_topic.py``).

- (ka) mqlflow as a user runs it: Kafka ``$source`` (4 partitions) -> the seed's window
  -> ``$emit`` to a fresh ``perf_kout_*`` topic on the same broker, one Bytewax worker,
  built by ``compile_pipeline`` + ``build_flow`` with the product's own source and sink.
  Done when the output topic holds every result row (the reference's count); a watcher
  thread reads it, and the source stops at its next poll.
- (ks) mqlflow's Kafka ``$source`` alone: the same source in a flow that only counts the
  records, until every message is read.
- (kd) the reference: a plain confluent-kafka ``consume(1024)`` + ``json.loads`` loop over
  the 4 partitions with ASP's window rules (one watermark per partition, the minimum
  closes windows), the plain loop (d)'s fold.
- (kj) plain confluent-kafka ``consume(1024)`` + ``json.loads`` only: the peer of (ks).
- (kb) hand-written Bytewax on ``bytewax.connectors.kafka.KafkaSource`` (``tail=False``:
  it ends at the end of the partitions) + ``json.loads`` + (c)'s windows.

The clock starts before the consumers are created (a user pays for connecting) and stops
at the last result (ka, kd) or the last message read (ks, kj).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

from bench.gen import GenSpec
from bench.kafka_topic import END_GROUP, PARTITIONS, TIMEOUT_S, bootstrap, messages_in
from bench.workloads import LATENESS_MS, Workload

RUN_TIMEOUT_S = 600.0
CONN = "kafka"


def _pipeline(wl: Workload, topic: str, out_topic: str | None) -> list[dict[str, Any]]:
    src = {
        "$source": {
            "connectionName": CONN,
            "topic": topic,
            "config": {"auto_offset_reset": "earliest"},
            "timeField": {"$dateFromString": {"dateString": "$timestamp"}},
        }
    }
    stages = [src, *wl.pipeline()[1:]]
    if out_topic is not None:
        stages.append({"$emit": {"connectionName": CONN, "topic": out_topic}})
    return stages


class _Stop:
    """A flag the source checks on every poll (Kafka sources never end by themselves)."""

    def __init__(self) -> None:
        self.done = False
        self.end: float | None = None
        self.deadline = time.monotonic() + RUN_TIMEOUT_S

    def finish(self) -> None:
        if self.end is None:
            self.end = time.perf_counter()
        self.done = True


def _stoppable(inner: Any, stop: _Stop) -> Any:
    from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
    from bytewax.testing import AbortExecution  # type: ignore[attr-defined]

    class Part(StatefulSourcePartition[Any, Any]):
        def __init__(self, part: Any) -> None:
            self.part = part

        def next_awake(self) -> Any:
            return self.part.next_awake()

        def snapshot(self) -> Any:
            return self.part.snapshot()

        def close(self) -> None:
            self.part.close()

        def next_batch(self) -> Any:
            if stop.done:
                raise AbortExecution()
            if time.monotonic() > stop.deadline:
                raise RuntimeError(f"no end after {RUN_TIMEOUT_S:.0f} s")
            return self.part.next_batch()

    class Src(FixedPartitionedSource[Any, Any]):
        def list_parts(self) -> list[str]:
            return inner.list_parts()  # type: ignore[no-any-return]

        def build_part(self, step_id: str, for_part: str, resume_state: Any) -> Any:
            return Part(inner.build_part(step_id, for_part, resume_state))

    return Src()


def _options_and_registry() -> tuple[Any, Any]:
    from translator.connections import Connection, ConnectionRegistry
    from translator.options import ProcessorOptions

    reg = ConnectionRegistry({CONN: Connection(name=CONN, type="kafka", bootstrap_servers=bootstrap())})
    return ProcessorOptions(name="bench"), reg


def _run_flow(flow: Any) -> None:
    from bytewax.testing import AbortExecution, run_main  # type: ignore[attr-defined]

    with contextlib.suppress(AbortExecution):
        run_main(flow)


def run_ka(wl: Workload, topic: str, expect_rows: int) -> tuple[list[Any], float, float | None]:
    """-> (result documents, elapsed s, first output s)."""
    from bson import json_util
    from confluent_kafka import Consumer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    from flows.pipeline import tune_gc
    from translator.compile import build_flow, compile_pipeline, make_source

    out_topic = f"perf_kout_{uuid.uuid4().hex[:12]}"
    admin = AdminClient({"bootstrap.servers": bootstrap()})
    admin.create_topics([NewTopic(out_topic, 1, 1)], operation_timeout=TIMEOUT_S)[out_topic].result(timeout=TIMEOUT_S)
    try:
        tune_gc()
        opts, reg = _options_and_registry()
        pipeline = compile_pipeline(_pipeline(wl, topic, out_topic), reg, opts)
        watcher = Consumer({"bootstrap.servers": bootstrap(), "group.id": f"perf-{out_topic}", "enable.auto.commit": False})
        watcher.assign([TopicPartition(out_topic, 0, 0)])
        stop = _Stop()
        values: list[bytes] = []
        first: list[float] = []

        def watch() -> None:
            while not stop.done and time.monotonic() < stop.deadline:
                for m in watcher.consume(1000, timeout=0.05):
                    if m.error() is None:
                        if not first:
                            first.append(time.perf_counter())
                        values.append(m.value())  # type: ignore[arg-type]
                if len(values) >= expect_rows:
                    stop.finish()

        t0 = time.perf_counter()
        flow = build_flow(pipeline, source=_stoppable(make_source(pipeline), stop), flow_id="bench_k")
        th = threading.Thread(target=watch, daemon=True)
        th.start()
        _run_flow(flow)
        th.join(5)
        watcher.close()
        if not stop.done or stop.end is None:
            raise RuntimeError(f"the output topic got {len(values)} of {expect_rows} result rows")
        docs = [json_util.loads(v, json_options=json_util.JSONOptions(tz_aware=True)) for v in values]
        return docs, stop.end - t0, (first[0] - t0) if first else None
    finally:
        admin.delete_topics([out_topic], operation_timeout=TIMEOUT_S)


def run_ks(topic: str, spec: GenSpec) -> float:
    """-> elapsed s until every message was read by mqlflow's Kafka source."""
    from bytewax import operators as op
    from bytewax.dataflow import Dataflow

    from flows.pipeline import tune_gc
    from translator.compile import compile_pipeline, make_source

    tune_gc()  # as every mqlflow flow process does
    opts, reg = _options_and_registry()
    pipeline = compile_pipeline(_pipeline(Workload("K", "tumbling", 3000, 3000), topic, None), reg, opts,
                                check_sink_connection=False)
    want = messages_in(spec)
    stop = _Stop()
    seen = [0]

    def count(step: str, item: Any) -> None:
        batch = item[1]
        if isinstance(batch, list):
            seen[0] += len(batch)
            if seen[0] >= want:
                stop.finish()

    t0 = time.perf_counter()
    flow = Dataflow("bench_ks")
    op.inspect("count", op.input("source", flow, _stoppable(make_source(pipeline), stop)), count)
    _run_flow(flow)
    if stop.end is None or seen[0] != want:
        raise RuntimeError(f"mqlflow's Kafka source read {seen[0]} of {want} messages")
    return stop.end - t0


def _plain_consumer(topic: str) -> Any:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap(), "group.id": f"perf-plain-{uuid.uuid4().hex[:8]}",
                  "enable.auto.commit": False, "enable.partition.eof": False, "queued.max.messages.kbytes": 16384})
    c.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    return c


def _messages(topic: str, spec: GenSpec) -> Iterator[list[Any]]:
    """Every message of the topic, a ``consume(1024)`` batch at a time; fails unless
    exactly all were read."""
    want = messages_in(spec)
    c = _plain_consumer(topic)
    n = 0
    deadline = time.monotonic() + RUN_TIMEOUT_S
    try:
        while n < want and time.monotonic() < deadline:
            batch = [m for m in c.consume(1024, timeout=0.1) if m.error() is None]
            n += len(batch)
            yield batch
    finally:
        c.close()
    if n != want:
        raise RuntimeError(f"plain consumer read {n} of {want} messages")


def run_kj(topic: str, spec: GenSpec) -> float:
    """-> elapsed s for consume + ``json.loads`` of every message."""
    loads = json.loads
    t0 = time.perf_counter()
    for batch in _messages(topic, spec):
        for m in batch:
            loads(m.value())
    return time.perf_counter() - t0


def run_kd(wl: Workload, topic: str, spec: GenSpec) -> tuple[list[Any], float, float | None]:
    """The reference: consume + ``json.loads`` + ASP's tumbling windows with one
    watermark per partition; windows close when the smallest passes end + lateness.
    The fold is the plain loop (d)'s, inlined as there."""
    from datetime import datetime

    from bench.engines.plain import _finish

    size, lateness = wl.size_ms, LATENESS_MS
    fromiso = datetime.fromisoformat
    loads = json.loads
    windows: dict[int, dict[int, list[int]]] = {}
    out: list[Any] = []
    first: float | None = None
    wms = [-(2**62)] * PARTITIONS
    wm = -(2**62)
    t0 = time.perf_counter()
    for batch in _messages(topic, spec):
        for m in batch:
            doc = loads(m.value())
            dt = fromiso(doc["timestamp"])
            t = int(dt.timestamp()) * 1000 + dt.microsecond // 1000
            s = t - t % size
            if s + size + lateness <= wm:
                raise RuntimeError(f"a late document in workload K: {doc}")
            g = doc["group_id"]
            temp = doc["obs"]["temp"]
            table = windows.get(s)
            if table is None:
                table = windows[s] = {}
            acc = table.get(g)
            if acc is None:
                table[g] = [1, temp, temp * temp, temp, temp]
            else:
                acc[0] += 1
                acc[1] += temp
                acc[2] += temp * temp
                if temp < acc[3]:
                    acc[3] = temp
                elif temp > acc[4]:
                    acc[4] = temp
            p = m.partition()
            if t > wms[p]:
                wms[p] = t
                low = min(wms)
                if low > wm:
                    wm = low
                    for start in sorted(windows):
                        if start + size + lateness > wm:
                            break
                        closed = windows.pop(start)
                        closed.pop(END_GROUP, None)
                        _finish(start, closed, out)
                        if first is None:
                            first = time.perf_counter()
    return out, time.perf_counter() - t0, None if first is None else first - t0


def run_kb(wl: Workload, topic: str) -> tuple[list[Any], float, float | None]:
    """(kb): Bytewax's own Kafka connector, ``json.loads``, then (c)'s windowing."""
    from bytewax import operators as op
    from bytewax.connectors.kafka import KafkaSource
    from bytewax.dataflow import Dataflow
    from bytewax.testing import run_main
    from confluent_kafka import OFFSET_BEGINNING

    from bench.engines.bytewax_hand import add_windows
    from bench.engines.bytewax_io import Collector

    col, late = Collector(), Collector()
    t0 = time.perf_counter()
    flow = Dataflow("bench_kb")
    msgs = op.input("in", flow, KafkaSource([bootstrap()], [topic], tail=False, starting_offset=OFFSET_BEGINNING, batch_size=1024))
    loads: Any = json.loads
    docs = op.filter("data", op.map("json", msgs, lambda m: loads(m.value)), lambda d: d["group_id"] != END_GROUP)  # type: ignore[union-attr]
    add_windows(wl, docs, col, late)
    run_main(flow)
    elapsed = time.perf_counter() - t0
    if late.items:
        raise RuntimeError(f"Bytewax reported {len(late.items)} late items")
    return col.items, elapsed, None if col.first is None else col.first - t0
