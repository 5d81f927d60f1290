"""$cachedLookup against the real FerretDB: a cached key does not reach the server
before its TTL and does after it (find commands counted with pymongo's command
monitoring); eviction; stats()' cacheHits/cacheMisses per operator."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest
from pymongo import monitoring

from tests.translator.enrich.enrichhelpers import make_registry
from translator import metrics
from translator.enrich import steps as enrich_steps
from translator.enrich.lookup import LookupCache
from translator.errors import TranslateError
from translator.parse import parse_pipeline
from translator.stages import compile_steps, run_chain
from translator.testing import run_pipeline

pytestmark = pytest.mark.mongodb



class Finds(monitoring.CommandListener):
    def __init__(self, coll: str) -> None:
        self.coll = coll
        self.filters: list[Any] = []
        self.lock = threading.Lock()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "find" and event.command.get("find") == self.coll:
            with self.lock:
                self.filters.append(event.command["filter"])

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass





def _stage(db: str, coll: str, ttl_s: int = 1, **extra: Any) -> dict[str, Any]:
    return {"$cachedLookup": {"ttl": {"size": ttl_s, "unit": "second"},
                              "from": {"connectionName": "meta", "db": db, "coll": coll},
                              "localField": "dev", "foreignField": "_id", "as": "d", **extra}}


def test_cached_key_skips_the_server_until_its_ttl(mongodb_uri: str, db: Any) -> None:
    coll = f"devices_{uuid.uuid4().hex[:6]}"
    db[coll].insert_many([{"_id": "d1", "site": "n"}, {"_id": "d2", "site": "s"}])
    finds = Finds(coll)
    monitoring.register(finds)  # the lookup's client is created after this
    pipeline = parse_pipeline([{"$source": {"documents": []}}, _stage(db.name, coll, ttl_s=2)])
    with enrich_steps.bound(make_registry(mongodb_uri)) as closers:
        steps = compile_steps(pipeline.stages)

    def batch(*devs: str) -> list[Any]:
        dlq: list[Any] = []
        out = run_chain(steps, [({"dev": d}, 0) for d in devs], lambda r, d: dlq.append(r))
        assert dlq == []
        return [[x["_id"] for x in d["d"]] for d, _ in out]

    assert batch("d1", "d2", "d1") == [["d1"], ["d2"], ["d1"]]
    assert len(finds.filters) == 1  # both keys in one $in
    assert batch("d1", "d2") == [["d1"], ["d2"]]
    assert batch("d2") == [["d2"]]
    assert len(finds.filters) == 1  # cached: the server saw nothing
    assert batch("d1", "zz") == [["d1"], []]
    assert len(finds.filters) == 2 and finds.filters[1] == {"_id": {"$in": ["zz"]}}  # only the new key
    db[coll].update_one({"_id": "d1"}, {"$set": {"site": "changed"}})
    time.sleep(2.3)  # past the TTL
    out = run_chain(steps, [({"dev": "d1"}, 0)], lambda r, d: None)
    assert out[0][0]["d"] == [{"_id": "d1", "site": "changed"}]
    for close in closers:  # what the flow does when it ends
        close()
    assert len(finds.filters) == 3 and finds.filters[2] == {"_id": {"$in": ["d1"]}}


def test_eviction_expired_first_then_random_until_under_the_limit() -> None:
    c = LookupCache(ttl_s=10, max_bytes=10_000)
    doc = {"x": "y" * 900}
    c.put("old", [doc], now=0.0)
    c.put("a", [doc], now=5.0)
    # at now=11 "old" has expired; going over the limit evicts it, and only it
    for k in range(9):
        c.put(f"k{k}", [doc], now=11.0)
    assert "old" not in c.entries and len(c.entries) == 10 and "a" in c.entries
    # nothing expired: random entries go until the cache is under the limit again
    for k in range(9, 20):
        c.put(f"k{k}", [doc], now=12.0)
    assert c.size <= 10_000 and len(c.entries) == 10
    assert c.size == sum(e[2] for e in c.entries.values())
    assert c.get("a", 15.1) is None  # expired entries are not served


def test_cached_lookup_in_run_pipeline_and_stats(mongodb_uri: str, db: Any) -> None:
    db.devices.insert_many([{"_id": "d1", "site": "n"}])
    metrics.reset()
    metrics.enable()
    try:
        r = run_pipeline(
            [{"$source": {"documents": [{"_id": i, "dev": "d1"} for i in range(10)]}},
             _stage(db.name, "devices", ttl_s=60),
             {"$project": {"site": {"$first": "$d.site"}}}],
            options={"name": "c"},
            registry=make_registry(mongodb_uri),
        )
        assert [d["site"] for d in r.output] == ["n"] * 10
        ops = metrics.operator_stats(r.pipeline)
    finally:
        metrics.disable()
        metrics.reset()
    entry = ops[0]
    assert entry["name"] == "$cachedLookup"
    assert (entry["inputMessageCount"], entry["outputMessageCount"]) == (10, 10)
    assert (entry["cacheHits"], entry["cacheMisses"]) == (0, 1)  # one batch, one distinct key


def test_cached_lookup_takes_no_let_or_pipeline() -> None:
    with pytest.raises(TranslateError) as e:
        parse_pipeline([{"$source": {"documents": []}}, _stage("x", "y", pipeline=[])])
    assert e.value.path == "pipeline[1].$cachedLookup.pipeline"
    assert e.value.message.startswith("unknown field 'pipeline'")
    with pytest.raises(TranslateError) as e:
        parse_pipeline([{"$source": {"documents": []}}, {"$cachedLookup": {"from": {"connectionName": "meta", "db": "x", "coll": "y"}, "localField": "a", "foreignField": "b", "as": "c"}}])
    assert (e.value.path, e.value.message) == ("pipeline[1].$cachedLookup", "missing required field 'ttl'")




def test_one_cache_per_source_partition(mongodb_uri: str, db: Any) -> None:
    """Two partitions of the sample source on one Bytewax worker: each partition misses
    the key once (two finds), then hits its own cache (ASP keeps a cache per partition)."""
    coll = f"devices_{uuid.uuid4().hex[:6]}"
    db[coll].insert_many([{"_id": "device_0", "site": "n"}])
    finds = Finds(coll)
    monitoring.register(finds)
    r = run_pipeline(
        [{"$source": {"connectionName": "sample_stream_solar",
                      "config": {"seed": 1, "devices": 1, "partitions": 2, "maxEvents": 60, "batchSize": 10,
                                 "startTime": "2024-01-01T00:00:00Z", "faultRate": 0}}},
         _stage(db.name, coll, ttl_s=600, localField="device_id"),
         {"$project": {"_id": 0, "site": {"$first": "$d.site"}}}],
        registry=make_registry(mongodb_uri),
    )
    assert r.output == [{"site": "n"}] * 120 and r.dlq == []
    assert finds.filters == [{"_id": {"$in": ["device_0"]}}] * 2  # one miss per partition, 12 batches


def test_cache_outside_a_partition_is_per_thread(mongodb_uri: str, db: Any) -> None:
    """``run_chain`` called directly (as a window's close step does) has no source
    partition: each thread keeps its own cache."""
    coll = f"devices_{uuid.uuid4().hex[:6]}"
    db[coll].insert_many([{"_id": "d1", "site": "n"}])
    finds = Finds(coll)
    monitoring.register(finds)
    pipeline = parse_pipeline([{"$source": {"documents": []}}, _stage(db.name, coll, ttl_s=600)])
    with enrich_steps.bound(make_registry(mongodb_uri)) as closers:
        steps = compile_steps(pipeline.stages)

    def batch() -> None:
        out = run_chain(steps, [({"dev": "d1"}, 0)], lambda r, d: None)
        assert out[0][0]["d"] == [{"_id": "d1", "site": "n"}]

    batch()
    batch()
    assert len(finds.filters) == 1
    t = threading.Thread(target=batch)
    t.start()
    t.join()
    assert len(finds.filters) == 2
    for close in closers:
        close()
