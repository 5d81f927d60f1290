"""How the window key's shape costs ``$merge`` upserts as the collection grows.

``python bench/window_keys.py [uri] [total]`` (default: the local FerretDB, 2000 windows)
upserts window results in bulks of 50, as the ``$merge`` sink does on FerretDB, with
three key shapes, and prints the seconds per bulk at a few collection sizes:

- ``compound``: ``_id: {g, start}`` (the shape the ASP docs show for window results);
- ``string``:   ``_id: "<g>|<start ISO>"`` (one string, ``$concat`` in ``$group``);
- ``fields``:   ``_id`` generated, ``on: ["g", "start"]`` with a unique index on them.
"""

from __future__ import annotations

import datetime as dt
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

from pymongo import MongoClient, UpdateOne

T0 = dt.datetime(2024, 8, 8, tzinfo=dt.UTC)
BULK = 50
Doc = dict[str, Any]


def compound(i: int) -> tuple[Doc, Doc]:
    k = {"g": i % 7, "start": T0 + dt.timedelta(seconds=i)}
    return {"_id": k}, {"n": i}


def string(i: int) -> tuple[Doc, Doc]:
    start = T0 + dt.timedelta(seconds=i)
    return {"_id": f"{i % 7}|{start.isoformat()}"}, {"n": i}


def fields(i: int) -> tuple[Doc, Doc]:
    return {"g": i % 7, "start": T0 + dt.timedelta(seconds=i)}, {"n": i}


SHAPES: dict[str, Callable[[int], tuple[Doc, Doc]]] = {"compound": compound, "string": string, "fields": fields}


def run(uri: str, total: int) -> None:
    client: MongoClient[Doc] = MongoClient(uri, serverSelectionTimeoutMS=5000, socketTimeoutMS=120_000)
    db = client[f"bench_keys_{uuid.uuid4().hex[:8]}"]
    marks = {0, total // 4, total // 2, total - BULK}
    print(f"{'shape':10} {'docs before':>11} {'s per bulk of 50':>17}")
    try:
        for name, key in SHAPES.items():
            coll = db[name]
            if name == "fields":
                coll.create_index([("g", 1), ("start", 1)], unique=True)
            for lo in range(0, total, BULK):
                ops = [UpdateOne(f, {"$set": s}, upsert=True) for f, s in map(key, range(lo, lo + BULK))]
                t0 = time.perf_counter()
                coll.bulk_write(ops, ordered=False)
                took = time.perf_counter() - t0
                if lo in marks:
                    print(f"{name:10} {lo:>11} {took:>17.3f}", flush=True)
    finally:
        client.drop_database(db.name)
        client.close()


if __name__ == "__main__":
    run(sys.argv[1] if len(sys.argv) > 1 else "mongodb://127.0.0.1:27018/", int(sys.argv[2]) if len(sys.argv) > 2 else 2000)
