"""``getStreamProcessorStats`` for a Kafka source reports ``kafkaPartitions[]`` with
``partition``, ``currentOffset``, ``checkpointOffset``, ``isIdle`` (docs/semantics.md#stats), through
the real service: ``python -m service serve`` running ``flows.processor`` children,
a real Kafka topic with 3 partitions and ``$merge`` into a real MongoDB.

Offsets are "the next offset to read" (what a checkpoint stores): after 30 messages in a
partition both are 30. ``checkpointOffset`` catches up at the next checkpoint
(``--snapshot-interval 1``). A partition silent for ``partitionIdleTimeout`` is idle.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bson
import pymongo
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.append(str(Path(__file__).resolve().parents[1]))

from kafka_flows import new_topic, produce
from svc_helpers import start_service

pytestmark = [pytest.mark.kafka, pytest.mark.mongodb, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable


class Svc:
    def __init__(self, tmp: Path, bootstrap: str, uri: str) -> None:
        self.service = start_service(tmp, connections=(
            f'[connections.kafka1]\ntype = "kafka"\nbootstrap_servers = "{bootstrap}"\n\n'
            f'[connections.mongo1]\ntype = "mongodb"\nuri = "{uri}"\n'
        ))
        self.log = self.service.log
        self.client: pymongo.MongoClient[dict[str, Any]] = self.service.client()

    def stop(self) -> None:
        self.client.close()
        self.service.stop()


@pytest.fixture
def svc(tmp_path: Path, kafka_bootstrap: str, mongodb_uri: str) -> Iterator[Svc]:
    s = Svc(tmp_path, kafka_bootstrap, mongodb_uri)
    try:
        yield s
    finally:
        s.stop()


def msgs(partition: int, lo: int, hi: int) -> list[dict[str, Any]]:
    return [{"partition": partition, "value": {"_id": f"p{partition}-{i}", "i": i}} for i in range(lo, hi)]


def wait_stats(svc: Svc, pred: Callable[[dict[str, Any]], bool], what: str, timeout_s: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    st: dict[str, Any] = {}
    while time.monotonic() < deadline:
        st = svc.client.admin.command({"getStreamProcessorStats": "kstats"})["stats"]
        if pred(st):
            return st
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; last stats: {st}\n{svc.log.read_text()[-3000:]}")


def parts(st: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {p["partition"]: p for p in st.get("kafkaPartitions") or []}


def offsets(st: dict[str, Any], field: str) -> dict[int, Any]:
    return {n: p[field] for n, p in parts(st).items()}


def test_stats_report_kafka_partitions_with_advancing_offsets(svc: Svc, kafka_bootstrap: str, mongo_db: Any) -> None:
    topic = new_topic(kafka_bootstrap, 3, prefix="kstats")
    pipeline = [
        {"$source": {"connectionName": "kafka1", "topic": topic, "config": {"auto_offset_reset": "earliest"},
                     "partitionIdleTimeout": {"size": 3, "unit": "second"}}},
        {"$merge": {"into": {"connectionName": "mongo1", "db": mongo_db.name, "coll": "out"}}},
    ]
    produce(kafka_bootstrap, topic, msgs(0, 0, 30) + msgs(1, 0, 20))
    svc.client.admin.command({"createStreamProcessor": "kstats", "pipeline": pipeline})
    svc.client.admin.command({"startStreamProcessor": "kstats"})

    # Everything read and checkpointed; partition 2 never had a message: idle after 3 s.
    st = wait_stats(
        svc,
        lambda s: offsets(s, "checkpointOffset") == {0: 30, 1: 20, 2: 0} and parts(s)[2]["isIdle"] is True,
        "offsets 30/20/0 checkpointed and partition 2 idle",
    )
    assert [p["partition"] for p in st["kafkaPartitions"]] == [0, 1, 2]
    assert offsets(st, "currentOffset") == {0: 30, 1: 20, 2: 0}
    assert all(set(p) == {"partition", "currentOffset", "checkpointOffset", "isIdle"} for p in st["kafkaPartitions"])
    assert st["inputMessageCount"] == 50

    # More data: offsets advance, and partition 2 is active again as soon as it reads.
    produce(kafka_bootstrap, topic, msgs(0, 30, 40) + msgs(2, 0, 5))
    st = wait_stats(
        svc,
        lambda s: offsets(s, "currentOffset") == {0: 40, 1: 20, 2: 5} and parts(s)[2]["isIdle"] is False,
        "offsets 40/20/5 with partition 2 active",
    )
    st = wait_stats(svc, lambda s: offsets(s, "checkpointOffset") == {0: 40, 1: 20, 2: 5}, "checkpoint 40/20/5")
    assert offsets(st, "currentOffset") == {0: 40, 1: 20, 2: 5}
    deadline = time.monotonic() + 15
    while mongo_db.out.count_documents({}) < 65 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert sorted(d["_id"] for d in mongo_db.out.find({}, {"_id": 1})) == sorted(
        [f"p0-{i}" for i in range(40)] + [f"p1-{i}" for i in range(20)] + [f"p2-{i}" for i in range(5)]
    )
    svc.client.admin.command({"stopStreamProcessor": "kstats"})


def test_input_message_size_counts_the_deferred_envelopes(svc: Svc, kafka_bootstrap: str, mongo_db: Any) -> None:
    """A window pipeline whose source defers the ``_stream_meta.source`` envelope
    (translator/source_meta.py): ``inputMessageSize`` is still each input document's BSON
    size with its ``_ts`` stamp and envelope (headers and all), to the byte, though the
    window's fast path writes neither (the figure is counted from their parts)."""
    topic = new_topic(kafka_bootstrap, 2, prefix="ksize")
    ts = 1_700_000_000_000
    recs = [{"partition": i % 2, "value": {"g": f"g{i % 3}", "v": i, "s": "é" * i}, "timestamp": ts + i,
             "headers": [("h", b"x" * i), ("ключ", None)] if i % 4 == 0 else None} for i in range(60)]
    produce(kafka_bootstrap, topic, recs)
    pipeline = [
        {"$source": {"connectionName": "kafka1", "topic": topic, "config": {"auto_offset_reset": "earliest"}}},
        {"$tumblingWindow": {"interval": {"size": 1, "unit": "hour"},
                             "pipeline": [{"$group": {"_id": "$g", "n": {"$sum": 1}}}]}},
        {"$merge": {"into": {"connectionName": "mongo1", "db": mongo_db.name, "coll": "sized"}}},
    ]
    svc.client.admin.command({"createStreamProcessor": "kstats", "pipeline": pipeline})
    svc.client.admin.command({"startStreamProcessor": "kstats"})
    st = wait_stats(svc, lambda s: s.get("inputMessageCount") == 60, "60 input messages")
    offsets_in = {0: 0, 1: 0}
    want = 0
    for r in recs:
        p = r["partition"]
        env = {"type": "kafka", "ts": datetime.fromtimestamp(r["timestamp"] / 1000, UTC), "topic": topic, "partition": p,
               "offset": offsets_in[p], "key": None,
               "headers": [{"k": k, "v": v} for k, v in r["headers"] or []]}
        offsets_in[p] += 1
        want += len(bson.encode({**r["value"], "_ts": env["ts"], "_stream_meta": {"source": env}}))
    assert st["inputMessageSize"] == want
    svc.client.admin.command({"stopStreamProcessor": "kstats"})
