"""The enrichment stages in a pipeline file run as users run it (FerretDB and a
loopback HTTP server):
``python -m bytewax.run "flows.pipeline:from_file(...)"`` against the real FerretDB.
$lookup enriches, $setStreamMeta routes each document to a collection that $merge
reads with {$meta: "stream.coll"}, $throttle holds the rate."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pymongo
import pytest
from bson import json_util

pytestmark = [pytest.mark.mongodb, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


def test_lookup_https_set_stream_meta_throttle_in_a_bytewax_run_flow(tmp_path: Path, mongodb_uri: str) -> None:
    from tests.translator.enrich.enrichhelpers import Server

    api = Server()
    client: pymongo.MongoClient[Any] = pymongo.MongoClient(mongodb_uri, serverSelectionTimeoutMS=5000)
    dbname = f"enrich_{uuid.uuid4().hex[:10]}"
    db = client[dbname]
    try:
        db.devices.insert_many([{"_id": f"d{i}", "site": "north" if i % 2 else "south"} for i in range(10)])
        events = [{"_id": i, "dev": f"d{i % 10}", "v": i} for i in range(40)]
        pipeline = {
            "name": "enrichflow",
            "pipeline": [
                {"$source": {"documents": events}},
                {"$lookup": {"from": {"connectionName": "meta", "db": dbname, "coll": "devices"},
                             "localField": "dev", "foreignField": "_id", "as": "device"}},
                {"$cachedLookup": {"ttl": {"size": 1, "unit": "minute"},
                                   "from": {"connectionName": "meta", "db": dbname, "coll": "devices"},
                                   "localField": "dev", "foreignField": "_id", "as": "again"}},
                {"$https": {"connectionName": "api", "path": {"$concat": ["echo/", "$dev"]}, "method": "POST",
                            "payload": [{"$project": {"_id": 0, "v": 1}}], "as": "api"}},
                {"$setStreamMeta": {"stream.coll": {"$concat": ["site_", {"$first": "$device.site"}]}}},
                {"$throttle": {"messagesPerSec": 20}},
                # mqlflow keeps stream metadata in the _stream_meta field: an inclusion
                # $project must keep it for $merge to read it
                {"$project": {"v": 1, "dev": 1, "same": {"$eq": ["$device", "$again"]}, "_stream_meta": 1,
                              "echo": {"$concat": ["$api.path", ":", {"$toString": "$api.body.v"}]},
                              "status": {"$meta": "stream.https.httpStatusCode"}}},
                {"$merge": {"into": {"connectionName": "meta", "db": dbname, "coll": {"$meta": "stream.coll"}}}},
            ],
        }
        pfile = tmp_path / "enrich.json"
        pfile.write_text(json_util.dumps(pipeline))
        conns = tmp_path / "connections.toml"
        conns.write_text(f'[connections.meta]\ntype = "mongodb"\nuri = "{mongodb_uri}"\n'
                         f'[connections.api]\ntype = "https"\nurl = "http://127.0.0.1:{api.port}"\n')
        t0 = time.monotonic()
        r = subprocess.run(
            [sys.executable, "-m", "bytewax.run", f"flows.pipeline:from_file({str(pfile)!r}, connections={str(conns)!r})"],
            cwd=ROOT, capture_output=True, text=True, timeout=300,
        )
        elapsed = time.monotonic() - t0
        assert r.returncode == 0, r.stderr[-4000:]
        north = sorted(db.site_north.find({}, {"_ts": 0, "_stream_meta": 0}), key=lambda d: d["_id"])
        south = sorted(db.site_south.find({}, {"_ts": 0, "_stream_meta": 0}), key=lambda d: d["_id"])
        def want(i: int) -> dict[str, Any]:
            return {"_id": i, "dev": f"d{i % 10}", "v": i, "same": True, "echo": f"/echo/d{i % 10}:{i}", "status": 200}

        assert north == [want(i) for i in range(40) if i % 2]
        assert south == [want(i) for i in range(40) if not i % 2]
        assert len(api.calls) == 40
        # 40 messages at 20/s with a one-second bucket: at least about 1 s of waiting.
        assert elapsed >= 1.0
    finally:
        api.close()
        client.drop_database(dbname)
        client.close()
