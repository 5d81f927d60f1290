"""A processor with ``workers: 2`` runs as two Bytewax processes joined as one cluster
(``-i/-a`` on loopback ports the service picks), through the real ``mqlflow serve`` and
its child flow: the exact window results equal the one-process run (and a 3-process one's), ``stats()`` sums
both processes, and a ``kill -9`` of one process restarts the whole cluster from the
processor's checkpoint."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pymongo
import pytest
import test_svc_stats
from svc_helpers import Service, start_service

from service.cluster import ENV_CLUSTER_PEERS

pytestmark = [pytest.mark.mongodb, pytest.mark.slow]

svc = test_svc_stats.svc  # the service with the mongo1 connection (a fixture)
wait_for = test_svc_stats.wait_for

T0_MS = 1_700_000_000_000


def seed_pipeline(db: str, coll: str, **source: Any) -> list[dict[str, Any]]:
    """The seed's window over the sample source, on a virtual clock, 4 partitions."""
    cfg = {"seed": 3, "rate": 1000, "startTime": T0_MS, "faultRate": 0.0, "batchSize": 100, "partitions": 4, **source}
    return [
        {"$source": {"connectionName": "sample_stream_solar", "config": cfg}},
        {"$tumblingWindow": {"interval": {"size": 1, "unit": "second"}, "pipeline": [{"$group": {
            "_id": "$group_id", "n": {"$sum": 1}, "minTemp": {"$min": "$obs.temp"}, "maxTemp": {"$max": "$obs.temp"},
            "avgTemp": {"$avg": "$obs.temp"}, "stdevPTemp": {"$stdDevPop": "$obs.temp"}}}]}},
        {"$addFields": {"g": "$_id", "win": "$_stream_meta.window.start",
                        "_id": {"$concat": [{"$toString": "$_stream_meta.window.start"}, "/", {"$toString": "$_id"}]}}},
        {"$merge": {"into": {"connectionName": "mongo1", "db": db, "coll": coll}}},
    ]


def child_pids(svc: Service, client: Any, name: str) -> list[int]:
    """The processes the service started for ``name`` (its ``child.pid``, one per line)."""
    pid_id = client.admin.command({"getStreamProcessorStats": name})["stats"]["processorId"]
    pidfile = svc.state_dir / "processors" / pid_id / "child.pid"
    try:
        return [int(x) for x in pidfile.read_text().split()]
    except (OSError, ValueError):
        return []


def cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")


def environ(pid: int) -> dict[str, str]:
    pairs = (e.partition("=") for e in Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0") if e)
    return {k: v for k, _, v in pairs}


def test_two_processes_give_the_one_process_results(svc: Service, mongo_db: Any) -> None:
    client: pymongo.MongoClient[dict[str, Any]] = svc.client()
    results = {}
    for name, workers in (("one", 1), ("two", 2), ("three", 3)):
        coll = f"cluster_{name}_{time.monotonic_ns()}"
        client.admin.command({"createStreamProcessor": name, "pipeline": seed_pipeline(mongo_db.name, coll, maxEvents=3000)})
        client.admin.command({"startStreamProcessor": name, "options": {"workers": workers}})
        if workers > 1:
            pids = wait_for(lambda name=name: child_pids(svc, client, name))
            assert len(pids) == workers
            args = [cmdline(p) for p in pids]
            assert [a[a.index("-i") + 1] for a in args] == [str(i) for i in range(workers)]
            addrs = {a[a.index("-a") + 1] for a in args}
            assert len(addrs) == 1
            cluster = addrs.pop().split(";")
            assert len(cluster) == workers and all(x.startswith("127.0.0.1:") for x in cluster)
            # Process i waits for processes 0..i-1 to listen (service.cluster), not for Timely's retry.
            assert [environ(p).get(ENV_CLUSTER_PEERS) for p in pids] == [None, *(";".join(cluster[:i]) for i in range(1, workers))]

        def done(name: str = name) -> dict[str, Any] | None:
            st = client.admin.command({"getStreamProcessorStats": name})["stats"]
            return st if st["status"] == "stopped" else None

        st = wait_for(done)
        assert "error connecting" not in svc.child_log()
        # 4 partitions x 3000 events, counted by both processes together.
        assert (st["inputMessageCount"], st["dlqMessageCount"]) == (12000, 0)
        docs = sorted(mongo_db[coll].find(), key=lambda d: d["_id"])
        assert st["outputMessageCount"] == len(docs) > 0
        results[name] = docs
    assert sum(d["n"] for d in results["one"]) == 12000
    assert results["two"] == results["one"]
    assert results["three"] == results["one"]  # 4 partitions on 3 processes: 2, 1 and 1
    client.close()


def test_kill_9_of_one_process_restarts_the_cluster(svc: Service, mongo_db: Any) -> None:
    client: pymongo.MongoClient[dict[str, Any]] = svc.client()
    coll = f"cluster_kill_{time.monotonic_ns()}"
    # A real-time source: a window closes every second.
    pipeline = seed_pipeline(mongo_db.name, coll, rate=50)
    del pipeline[0]["$source"]["config"]["startTime"]
    client.admin.command({"createStreamProcessor": "k", "pipeline": pipeline})
    client.admin.command({"startStreamProcessor": "k", "options": {"workers": 2}})
    first = wait_for(lambda: (lambda p: p if len(p) == 2 else None)(child_pids(svc, client, "k")))
    wait_for(lambda: mongo_db[coll].count_documents({}) > 0)
    os.kill(first[1], signal.SIGKILL)
    second = wait_for(lambda: (lambda p: p if len(p) == 2 and not set(p) & set(first) else None)(child_pids(svc, client, "k")))
    for pid in first:  # the survivor was killed with its dead peer
        assert wait_for(lambda pid=pid: not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2])
    before = mongo_db[coll].count_documents({})
    wait_for(lambda: mongo_db[coll].count_documents({}) > before + 10)
    st = client.admin.command({"getStreamProcessorStats": "k"})["stats"]
    assert st["status"] == "running"
    assert [int(x) for x in cmdline(second[0])[cmdline(second[0]).index("-i") + 1:][:1]] == [0]
    client.admin.command({"stopStreamProcessor": "k"})
    for pid in second:
        wait_for(lambda pid=pid: not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2], 30)
    client.close()


@pytest.fixture
def kafka_svc(tmp_path: Path, mongodb_uri: str, kafka_bootstrap: str) -> Iterator[Service]:
    conns = tmp_path / "kafka-connections.toml"
    conns.write_text(f'[connections.mongo1]\ntype = "mongodb"\nuri = "{mongodb_uri}"\n\n'
                     f'[connections.kafka1]\ntype = "kafka"\nbootstrap_servers = "{kafka_bootstrap}"\n')
    s = start_service(tmp_path, "--connections", str(conns))
    yield s
    s.stop()


@pytest.mark.kafka
def test_kill_9_mid_run_resumes_from_the_checkpoint_to_exact_results(kafka_svc: Service, mongo_db: Any) -> None:
    """The seed's window from a 4-partition Kafka topic on 2 processes, one killed -9
    part-way: the cluster restarts from the processor's checkpoint (both processes'
    recovery partitions, the Kafka offsets in them) and ends with exactly the plain
    reference's windows ($merge upserts replayed results by _id)."""
    from bench.engines import plain
    from bench.gen import GenSpec, iter_batches
    from bench.kafka_topic import ensure_topic
    from bench.workloads import WORKLOADS

    spec = GenSpec(n=400_000, groups=10, seed=11)
    topic = ensure_topic(spec)  # 4 partitions, end markers close every window
    rows, _ = plain.run(WORKLOADS["A"], iter_batches(spec))
    want = sorted((datetime.fromtimestamp(r[0] / 1000, UTC).replace(tzinfo=None), r[1], r[2], r[3], r[4]) for r in rows)
    client: pymongo.MongoClient[dict[str, Any]] = kafka_svc.client()
    coll = f"cluster_kafka_{time.monotonic_ns()}"
    pipeline = [
        {"$source": {"connectionName": "kafka1", "topic": topic, "config": {"auto_offset_reset": "earliest"},
                     "timeField": {"$dateFromString": {"dateString": "$timestamp"}}}},
        {"$tumblingWindow": {"interval": {"size": 3, "unit": "second"}, "pipeline": [{"$group": {
            "_id": "$group_id", "minTemp": {"$min": "$obs.temp"}, "maxTemp": {"$max": "$obs.temp"},
            "avgTemp": {"$avg": "$obs.temp"}}}]}},
        {"$addFields": {"g": "$_id", "win": "$_stream_meta.window.start",
                        "_id": {"$concat": [{"$toString": "$_stream_meta.window.start"}, "/", {"$toString": "$_id"}]}}},
        {"$merge": {"into": {"connectionName": "mongo1", "db": mongo_db.name, "coll": coll}}},
    ]
    client.admin.command({"createStreamProcessor": "kk", "pipeline": pipeline})
    client.admin.command({"startStreamProcessor": "kk", "options": {"workers": 2}})
    pids = wait_for(lambda: (lambda p: p if len(p) == 2 else None)(child_pids(kafka_svc, client, "kk")))
    # Kill as soon as results flow (the service snapshots every second, so a checkpoint
    # with the processes' Kafka offsets usually exists by then; without one the restart
    # reads from the start, which must give the same results too).
    wait_for(lambda: mongo_db[coll].count_documents({}) >= 20, 120)
    os.kill(pids[1], signal.SIGKILL)
    before = mongo_db[coll].count_documents({})
    assert before < len(want), (before, len(want))  # killed part-way
    wait_for(lambda: mongo_db[coll].count_documents({}) >= len(want), 300)
    time.sleep(2)  # nothing more may come
    got = sorted((d["win"], d["g"], d["minTemp"], d["maxTemp"], d["avgTemp"]) for d in mongo_db[coll].find())
    assert got == want
    st = client.admin.command({"getStreamProcessorStats": "kk"})["stats"]
    assert (st["status"], st["dlqMessageCount"]) == ("running", 0)
    assert not set(child_pids(kafka_svc, client, "kk")) & set(pids)  # a new cluster
    client.admin.command({"stopStreamProcessor": "kk"})
    client.close()
