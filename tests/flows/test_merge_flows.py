"""``$merge`` with a whenMatched pipeline and ``let`` in a pipeline file, run as users run
it: ``python -m bytewax.run "flows.pipeline:from_file(...)"`` against the real FerretDB."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pymongo
import pytest
from bson import json_util

pytestmark = [pytest.mark.mongodb, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


def run_file(tmp: Path, pipeline: dict[str, Any], conns: Path) -> None:
    """``python -m bytewax.run`` of ``pipeline`` written to a file, as a user runs it."""
    pfile = tmp / f"{pipeline['name']}.json"
    pfile.write_text(json_util.dumps(pipeline))
    r = subprocess.run(
        [sys.executable, "-m", "bytewax.run", f"flows.pipeline:from_file({str(pfile)!r}, connections={str(conns)!r})"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 0, r.stderr[-4000:]


def test_merge_let_variables_in_a_bytewax_run_flow(tmp_path: Path, mongodb_uri: str) -> None:
    client: pymongo.MongoClient[Any] = pymongo.MongoClient(mongodb_uri, serverSelectionTimeoutMS=5000)
    dbname = f"mergelet_{uuid.uuid4().hex[:10]}"
    db = client[dbname]
    try:
        db.totals.insert_many([{"_id": "a", "total": 10}, {"_id": "b", "total": 20}])
        events = [{"_id": "a", "n": 1, "tag": "x"}, {"_id": "b", "n": 2, "tag": "y"}, {"_id": "c", "n": 3, "tag": "z"}]
        pipeline = {
            "name": "mergelet",
            "pipeline": [
                {"$source": {"documents": events}},
                {"$project": {"n": 1, "tag": 1}},
                {"$merge": {
                    "into": {"connectionName": "db", "db": dbname, "coll": "totals"},
                    "let": {"inc": "$n", "src": {"$concat": ["run-", "$tag"]}},
                    "whenMatched": [{"$set": {"total": {"$add": ["$total", "$$inc"]}, "last": "$$src"}}],
                    "whenNotMatched": "insert",
                }},
            ],
        }
        conns = tmp_path / "connections.toml"
        conns.write_text(f'[connections.db]\ntype = "mongodb"\nuri = "{mongodb_uri}"\n')
        run_file(tmp_path, pipeline, conns)
        assert sorted(db.totals.find(), key=lambda d: d["_id"]) == [
            {"_id": "a", "total": 11, "last": "run-x"},
            {"_id": "b", "total": 22, "last": "run-y"},
            {"_id": "c", "n": 3, "tag": "z"},
        ]

        # ASP's modes as expressions: per document, "replace" or "keepExisting"; new
        # documents are inserted only when they ask for it.
        events2 = [{"_id": "a", "n": 5, "mode": "replace"}, {"_id": "b", "n": 6, "mode": "keepExisting"},
                   {"_id": "d", "n": 7, "mode": "merge", "new": True}, {"_id": "e", "n": 8, "mode": "merge"}]
        pipeline2 = {"name": "mergemodes", "pipeline": [
            {"$source": {"documents": events2}},
            {"$project": {"n": 1, "mode": 1, "new": 1}},
            {"$merge": {"into": {"connectionName": "db", "db": dbname, "coll": "totals"},
                        "whenMatched": "$mode",
                        "whenNotMatched": {"$cond": [{"$eq": ["$new", True]}, "insert", "discard"]}}},
        ]}
        run_file(tmp_path, pipeline2, conns)
        assert sorted(db.totals.find(), key=lambda d: d["_id"]) == [
            {"_id": "a", "n": 5, "mode": "replace"},
            {"_id": "b", "total": 22, "last": "run-y"},
            {"_id": "c", "n": 3, "tag": "z"},
            {"_id": "d", "n": 7, "mode": "merge", "new": True},
        ]
    finally:
        client.drop_database(dbname)
        client.close()


def test_window_results_emitted_to_a_time_series_collection_in_a_bytewax_run_flow(tmp_path: Path, mongodb_uri: str) -> None:
    """The ASP pattern: window averages into a time series collection, keyed by the
    window start (on FerretDB a plain collection; ``_id`` dropped so repeats are fine)."""
    from datetime import UTC, datetime, timedelta

    client: pymongo.MongoClient[Any] = pymongo.MongoClient(mongodb_uri, serverSelectionTimeoutMS=5000)
    dbname = f"tsemit_{uuid.uuid4().hex[:10]}"
    t0 = datetime(2024, 8, 8, 23, 8, 0, tzinfo=UTC)
    events = [{"device": f"d{i % 2}", "v": i, "t": t0 + timedelta(seconds=i)} for i in range(8)]
    pipeline = {"name": "tsemit", "pipeline": [
        {"$source": {"documents": events, "timeField": {"$toDate": "$t"}}},
        {"$tumblingWindow": {"interval": {"size": 4, "unit": "second"},
                             "pipeline": [{"$group": {"_id": "$device", "avg": {"$avg": "$v"}}}]}},
        {"$project": {"_id": 0, "device": "$_id", "avg": 1, "ts": {"$meta": "stream.window.start"}}},
        {"$emit": {"connectionName": "db", "db": dbname, "coll": "averages",
                   "timeseries": {"timeField": "ts", "metaField": "device"}}},
    ]}
    conns = tmp_path / "connections.toml"
    conns.write_text(f'[connections.db]\ntype = "mongodb"\nuri = "{mongodb_uri}"\n')
    try:
        run_file(tmp_path, pipeline, conns)
        got = sorted((d["ts"], d["device"], d["avg"]) for d in client[dbname].averages.find())
        w0, w1 = t0.replace(tzinfo=None), (t0 + timedelta(seconds=4)).replace(tzinfo=None)
        assert got == [(w0, "d0", 1.0), (w0, "d1", 2.0), (w1, "d0", 5.0), (w1, "d1", 6.0)]
    finally:
        client.drop_database(dbname)
        client.close()
