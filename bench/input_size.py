"""CPU per document of ``stats()`` ``inputMessageSize`` for a Kafka batch whose
``_stream_meta`` envelopes were deferred (translator/source_meta.py): counted from the
envelope's parts (``flows.processor.input_size``) against completing the batch and
BSON-encoding every document with its envelope (what the stats observer did before).

``python -m bench.input_size`` (needs the Kafka broker of ``KAFKA_BOOTSTRAP`` or
.cache/run/services.env only to build a source partition; the messages are
``confluent_kafka.Message`` objects built here, 1,000 per batch).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from confluent_kafka import Message
from confluent_kafka.admin import AdminClient, NewTopic

from bench.kafka_topic import TIMEOUT_S, bootstrap
from flows.processor import INPUT_SIZE_COUNTS, input_size
from service.channel import bson_size
from sources.kafka import _batch_decoder
from translator.compile import compile_pipeline, make_source
from translator.connections import Connection, ConnectionRegistry
from translator.options import ProcessorOptions

N = 1000
ROUNDS = 7
BATCHES = 20


def _completed(batch: Any) -> int:
    batch.complete()
    return bson_size([d for d, _ in batch])


def main() -> None:
    bs = bootstrap()
    topic = f"mqlflow-bench-size-{uuid.uuid4().hex[:12]}"
    admin = AdminClient({"bootstrap.servers": bs})
    admin.create_topics([NewTopic(topic, 1, 1)], operation_timeout=TIMEOUT_S)[topic].result(timeout=TIMEOUT_S)
    reg = ConnectionRegistry({"k": Connection(name="k", type="kafka", bootstrap_servers=bs)})
    window = {"$tumblingWindow": {"interval": {"size": 3, "unit": "second"},
                                  "pipeline": [{"$group": {"_id": "$group", "n": {"$sum": 1}}}]}}
    plan = compile_pipeline([{"$source": {"connectionName": "k", "topic": topic}}, window], reg, ProcessorOptions(name="bench"))
    part = make_source(plan).build_part("in", f"{topic}-0", None)
    try:
        msgs = [Message(topic=topic, partition=0, offset=i, timestamp=(1, 1_700_000_000_000 + i // 10),
                        value=b'{"device_id": "d%d", "group": "g%d", "temp": %d.5, "ts": "2024-08-08T23:08:00.000Z"}'
                        % (i, i % 10, i)) for i in range(N)]
        decode = _batch_decoder(msgs)
        ways: list[tuple[str, Callable[[Any], int]]] = [("from the parts", input_size), ("completed", _completed)]
        for name, size in ways:
            best = float("inf")
            for _ in range(ROUNDS):
                batches = [part._records(msgs, decode) for _ in range(BATCHES)]
                t = time.perf_counter()
                for b in batches:
                    size(b)
                best = min(best, (time.perf_counter() - t) / (BATCHES * N))
            print(f"{name}: {best * 1e6:.2f} µs per document (best of {ROUNDS})")
        print(INPUT_SIZE_COUNTS)
    finally:
        part.close()
        admin.delete_topics([topic], operation_timeout=TIMEOUT_S)


if __name__ == "__main__":
    main()
