"""Workload K's input: the shared generator's documents in a real Kafka topic.

The topic (``perf_k_...``, 4 partitions, on ``KAFKA_BOOTSTRAP``, default
``127.0.0.1:9092``) holds the ``n`` documents of ``GenSpec`` as JSON (``json.dumps``),
event ``i`` in partition ``i % 4``: each partition is a subsequence of one in-order-enough
stream, so no document is late under ASP's per-partition watermark and the windows equal
the plain loop's on the whole stream. After them, each partition gets one *end marker*
(``group_id: -1``, one hour after the last event): it moves every partition's watermark
past every data window, so they all close, while the marker's own window never does.
A filled topic is reused by later runs with the same spec (it is named after the spec).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from bench.gen import START_MS, GenSpec, _Clock, iter_docs

PARTITIONS = 4
END_GROUP = -1
TIMEOUT_S = 30.0


def bootstrap() -> str:
    env = os.environ.get("KAFKA_BOOTSTRAP")
    if env:
        return env
    services = Path(__file__).resolve().parents[1] / ".cache" / "run" / "services.env"
    if services.exists():
        for line in services.read_text().splitlines():
            if line.startswith("KAFKA_BOOTSTRAP="):
                return line.split("=", 1)[1].strip()
    return "127.0.0.1:9092"


def topic_name(spec: GenSpec) -> str:
    return f"perf_k_n{spec.n}_k{spec.groups}_o{spec.ooo:g}_r{spec.rate:g}_s{spec.seed}_v1"


def end_marker(spec: GenSpec, partition: int) -> dict[str, Any]:
    ms = START_MS + int(spec.n * 1000 / spec.rate) + 3_600_000
    return {"device_id": f"end-{partition}", "group_id": END_GROUP, "timestamp": _Clock().fmt(ms), "max_watts": 1,
            "event_type": 0, "obs": {"watts": 0, "temp": 0}}


def messages_in(spec: GenSpec) -> int:
    """Messages a complete topic holds: the documents and one end marker per partition."""
    return spec.n + PARTITIONS


def _filled(admin: Any, consumer: Any, topic: str, want: int) -> bool | None:
    from confluent_kafka import TopicPartition

    md = admin.list_topics(timeout=TIMEOUT_S).topics.get(topic)  # not topic=: that may auto-create it
    if md is None or md.error is not None or not md.partitions:
        return None
    total = 0
    for p in md.partitions:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=TIMEOUT_S, cached=False)
        total += high - low
    return total == want and len(md.partitions) == PARTITIONS


def ensure_topic(spec: GenSpec, log: Any = None) -> str:
    """The filled topic for ``spec``, created and filled if it is not there yet."""
    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    boot = bootstrap()
    topic = topic_name(spec)
    admin = AdminClient({"bootstrap.servers": boot})
    probe = Consumer({"bootstrap.servers": boot, "group.id": "perf-bench-probe", "enable.auto.commit": False})
    try:
        state = _filled(admin, probe, topic, messages_in(spec))
        if state:
            return topic
        if state is False:
            admin.delete_topics([topic], operation_timeout=TIMEOUT_S)[topic].result(timeout=TIMEOUT_S)
            time.sleep(2)
        admin.create_topics([NewTopic(topic, PARTITIONS, 1)], operation_timeout=TIMEOUT_S)[topic].result(timeout=TIMEOUT_S)
        if log:
            log(f"filling Kafka topic {topic} on {boot} with {spec.n:,} messages")
        prod = Producer({"bootstrap.servers": boot, "linger.ms": 50, "batch.size": 1_000_000,
                         "queue.buffering.max.messages": 1_000_000, "enable.idempotence": True})
        errors: list[Any] = []

        def cb(err: Any, msg: Any) -> None:
            if err is not None:
                errors.append(err)

        dumps = json.dumps
        for i, doc in enumerate(iter_docs(spec)):
            while True:
                try:
                    prod.produce(topic, dumps(doc).encode(), partition=i % PARTITIONS, on_delivery=cb)
                    break
                except BufferError:
                    prod.poll(0.05)
            if i % 10_000 == 0:
                prod.poll(0)
        for p in range(PARTITIONS):
            prod.produce(topic, dumps(end_marker(spec, p)).encode(), partition=p, on_delivery=cb)
        left = prod.flush(120)
        if left or errors:
            raise RuntimeError(f"filling {topic}: {left} messages not delivered, errors {errors[:3]}")
        if not _filled(admin, probe, topic, messages_in(spec)):
            raise RuntimeError(f"topic {topic} does not hold {messages_in(spec)} messages after filling")
        return topic
    finally:
        probe.close()
