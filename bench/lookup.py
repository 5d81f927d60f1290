"""$lookup / $cachedLookup throughput against a real MongoDB-wire server.

    .venv/bin/python -m bench.lookup [--uri mongodb://127.0.0.1:27018/] [--n 200000] [--keys 1000,100000] [--parallelism 4]

Fills ``enrich_bench.devices_<K>`` with K devices (once; reused when already full),
then runs ``$source (documents) -> $lookup (equality on _id) -> output`` through
``translator.testing.run_pipeline`` (one Bytewax worker, ``--batch`` documents per batch) with N events
whose ``dev`` is drawn uniformly from the K keys, and prints documents/s for $lookup
and for $cachedLookup (TTL 1 hour). The figures include the run's start-up.
"""

from __future__ import annotations

import argparse
import random
import time
from typing import Any

from pymongo import MongoClient

from translator.connections import Connection, ConnectionRegistry
from translator.testing import run_pipeline


def _uri(arg: str | None) -> str:
    if arg:
        return arg
    from tests.conftest import service_endpoint

    return service_endpoint("MONGODB_URI") or "mongodb://127.0.0.1:27018/"


def fill(client: MongoClient[dict[str, Any]], keys: int) -> str:
    coll = client["enrich_bench"][f"devices_{keys}"]
    if coll.estimated_document_count() != keys:
        coll.drop()
        for i in range(0, keys, 10_000):
            coll.insert_many([{"_id": f"dev{j}", "site": f"s{j % 97}", "owner": f"o{j}"} for j in range(i, min(keys, i + 10_000))])
    return coll.name


def run(uri: str, coll: str, keys: int, n: int, stage: str, batch: int, parallelism: int = 1) -> tuple[float, int, float]:
    """(documents/s, find commands, share of the run spent waiting for the server; with
    ``parallelism`` > 1 the waits of concurrent queries add up, so it may pass 100 %)."""
    from translator.enrich.lookup import STATS

    q0, s0 = STATS["queries"], STATS["seconds"]
    rnd = random.Random(7)
    events = [{"_id": i, "dev": f"dev{rnd.randrange(keys)}"} for i in range(n)]
    spec: dict[str, Any] = {"from": {"connectionName": "m", "db": "enrich_bench", "coll": coll},
                            "localField": "dev", "foreignField": "_id", "as": "d"}
    if stage == "$cachedLookup":
        spec["ttl"] = {"size": 1, "unit": "hour"}
    elif parallelism > 1:
        spec["parallelism"] = parallelism
    reg = ConnectionRegistry({"m": Connection(name="m", type="mongodb", uri=uri)})
    t0 = time.perf_counter()
    r = run_pipeline([{"$source": {"documents": events}}, {stage: spec}], {"name": "bench", "batchSize": batch}, reg)
    secs = time.perf_counter() - t0
    assert len(r.output) == n and all(len(d["d"]) == 1 for d in r.output)
    return n / secs, int(STATS["queries"] - q0), (STATS["seconds"] - s0) / secs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--uri")
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--keys", default="1000,100000")
    ap.add_argument("--batch", type=int, default=1024, help="documents per source batch (one $in each)")
    ap.add_argument("--parallelism", type=int, default=1, help="$lookup.parallelism: concurrent $in queries per batch")
    ap.add_argument("--stages", default="$lookup,$cachedLookup")
    a = ap.parse_args()
    uri = _uri(a.uri)
    client: MongoClient[dict[str, Any]] = MongoClient(uri, serverSelectionTimeoutMS=5000)
    print(f"server {uri}, n = {a.n} events, batches of {a.batch:,}")
    for keys in (int(k) for k in a.keys.split(",")):
        coll = fill(client, keys)
        for stage in a.stages.split(","):
            rate, queries, share = run(uri, coll, keys, a.n, stage, a.batch, a.parallelism)
            print(f"{stage:14} {keys:>7} distinct keys, parallelism {a.parallelism}: {rate:>9,.0f} docs/s, {queries} queries, "
                  f"{share:.0%} of the time waiting for the server", flush=True)
    client.close()


if __name__ == "__main__":
    main()
