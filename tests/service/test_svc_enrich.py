"""Enrichment stages in a processor under the real ``mqlflow serve`` (real child flow,
``flows.processor:from_definition``) against the real FerretDB: $lookup and
$cachedLookup enrich every document from FerretDB, $https from a loopback HTTP server, stats() reports the cache's hits and misses and
the throttle's figures per operator; a Kafka connection in $lookup fails at create time."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymongo
import pytest
from svc_helpers import Service, start_service

pytestmark = [pytest.mark.mongodb, pytest.mark.slow]
T0_MS = 1_700_000_000_000


@pytest.fixture
def api() -> Iterator[Any]:
    from tests.translator.enrich.enrichhelpers import Server

    s = Server()
    yield s
    s.close()


@pytest.fixture
def svc(tmp_path: Path, mongodb_uri: str, api: Any) -> Iterator[Service]:
    conns = tmp_path / "real-connections.toml"
    conns.write_text(
        f'[connections.mongo1]\ntype = "mongodb"\nuri = "{mongodb_uri}"\n'
        '[connections.k1]\ntype = "kafka"\nbootstrap_servers = "127.0.0.1:9"\n'
        f'[connections.api]\ntype = "https"\nurl = "http://127.0.0.1:{api.port}"\n'
    )
    s = start_service(tmp_path, "--connections", str(conns))
    yield s
    s.stop()


def test_processor_with_lookup_cached_lookup_https_and_throttle(svc: Service, mongodb_uri: str, api: Any) -> None:
    db_name = f"enrich_{uuid.uuid4().hex[:10]}"
    mc: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(mongodb_uri, serverSelectionTimeoutMS=5000)
    db = mc[db_name]
    db.devices.insert_many([{"_id": f"device_{i}", "owner": f"o{i}"} for i in range(100)])
    frm = {"connectionName": "mongo1", "db": db_name, "coll": "devices"}
    pipeline = [
        {"$source": {"connectionName": "sample_stream_solar", "config": {
            "seed": 3, "maxEvents": 400, "rate": 1000, "startTime": T0_MS, "faultRate": 0.0, "batchSize": 100}}},
        {"$lookup": {"from": frm, "localField": "device_id", "foreignField": "_id", "as": "dev"}},
        {"$cachedLookup": {"ttl": {"size": 10, "unit": "minute"}, "from": frm,
                           "localField": "device_id", "foreignField": "_id", "as": "dev2"}},
        {"$throttle": {"messagesPerSec": 200}},
        {"$https": {"connectionName": "api", "path": {"$concat": ["echo/", "$device_id"]}, "as": "resp"}},
        {"$project": {"_id": 0, "device_id": 1, "timestamp": 1, "owner": {"$first": "$dev.owner"},
                      "owner2": {"$first": "$dev2.owner"}, "apiPath": "$resp.path"}},
        {"$merge": {"into": {"connectionName": "mongo1", "db": db_name, "coll": "out"}}},
    ]
    client: pymongo.MongoClient[dict[str, Any]] = svc.client()
    try:
        bad = [*pipeline[:1], {"$lookup": {**pipeline[1]["$lookup"], "from": {**frm, "connectionName": "k1"}}}, pipeline[-1]]
        with pytest.raises(pymongo.errors.OperationFailure) as e:
            client.admin.command({"createStreamProcessor": "bad", "pipeline": bad})
        assert "pipeline[1].$lookup.from.connectionName: connection 'k1' is of type 'kafka'" in str(e.value)

        client.admin.command({"createStreamProcessor": "enr", "pipeline": pipeline})
        client.admin.command({"startStreamProcessor": "enr"})
        deadline = time.monotonic() + 120
        st: dict[str, Any] = {}
        while time.monotonic() < deadline:
            st = client.admin.command({"getStreamProcessorStats": "enr", "options": {"verbose": True}})["stats"]
            if st["status"] == "stopped":
                break
            time.sleep(0.3)
        assert st["status"] == "stopped", st
        assert (st["inputMessageCount"], st["outputMessageCount"], st["dlqMessageCount"]) == (400, 400, 0)
        ops = {e["name"]: e for e in st["operatorStats"]}
        cached = ops["$cachedLookup"]
        assert cached["inputMessageCount"] == cached["outputMessageCount"] == 400
        # every distinct device is fetched once, later batches are served from the cache
        devices = len({d["device_id"] for d in db.out.find()})
        assert cached["cacheMisses"] == devices
        assert cached["cacheHits"] > 0
        thr = ops["$throttle"]["throttle"]
        assert thr["throttleEvents"] > 0 and thr["throttledTimeMs"] > 0  # 400 msgs at 200/s: it had to wait
        outs = list(db.out.find({}, {"_id": 0, "device_id": 1, "owner": 1, "owner2": 1, "apiPath": 1}))
        assert len(outs) == 400
        assert all(o["owner"] == o["owner2"] == "o" + o["device_id"].split("_")[1] for o in outs)
        assert all(o["apiPath"] == "/echo/" + o["device_id"] for o in outs)
        assert len(api.calls) == 400
    finally:
        client.close()
        mc.drop_database(db_name)
        mc.close()


def test_https_server_error_fails_the_processor_after_bounded_retries(tmp_path: Path, api: Any, mongodb_uri: str) -> None:
    conns = tmp_path / "https-connections.toml"
    conns.write_text(f'[connections.api]\ntype = "https"\nurl = "http://127.0.0.1:{api.port}"\n'
                     f'[connections.mongo1]\ntype = "mongodb"\nuri = "{mongodb_uri}"\n')
    svc = start_service(tmp_path, "--connections", str(conns),
                        "--max-restarts", "1")
    try:
        c: pymongo.MongoClient[dict[str, Any]] = svc.client()
        pipeline = [
            {"$source": {"documents": [{"_id": 1}]}},
            {"$https": {"connectionName": "api", "path": "status/500", "as": "r"}},
            {"$merge": {"into": {"connectionName": "mongo1", "db": "enrich_never", "coll": "written"}}},
        ]
        c.admin.command({"createStreamProcessor": "h500", "pipeline": pipeline})
        c.admin.command({"startStreamProcessor": "h500"})
        deadline = time.monotonic() + 90
        p: dict[str, Any] = {}
        while time.monotonic() < deadline:
            p = c.admin.command({"listStreamProcessors": 1, "filter": {"name": "h500"}})["streamProcessors"][0]
            if p["state"] == "FAILED":
                break
            time.sleep(0.5)
        assert p["state"] == "FAILED", p
        # errorMsg names the root cause, not Bytewax's wrapper line around it.
        assert p["errorMsg"] == (
            "processor failed after 2 attempts: translator.enrich.https.HttpsProcessorError: "
            f"pipeline[1].$https: request to http://127.0.0.1:{api.port}/status/500 failed after "
            "4 attempts (HTTP status 500); the processor stops"
        ), p["errorMsg"]
        # Two runs, each 1 request + 3 bounded retries.
        assert [c["path"] for c in api.calls] == ["/status/500"] * 8
        c.close()
    finally:
        svc.stop()


def test_throttle_figures_at_the_processor_level_in_mongosh(svc: Service, mongodb_uri: str) -> None:
    """``sp.<name>.stats()`` in the real mongosh shows ``throttle.throttledTimeMs`` and
    ``throttle.throttleEvents`` for the processor (ASP reports them per processor and per
    operator), the same figures as the operator's; a processor without ``$throttle`` has none."""
    import os
    import subprocess

    from svc_helpers import mongosh_argv

    db_name = f"enrich_{uuid.uuid4().hex[:10]}"
    src = {"$source": {"connectionName": "sample_stream_solar", "config": {
        "seed": 5, "maxEvents": 300, "rate": 1000, "startTime": T0_MS, "faultRate": 0.0, "batchSize": 50}}}
    merge = {"$merge": {"into": {"connectionName": "mongo1", "db": db_name, "coll": "out"}}}
    client: pymongo.MongoClient[dict[str, Any]] = svc.client()
    mc: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(mongodb_uri, serverSelectionTimeoutMS=5000)
    try:
        client.admin.command({"createStreamProcessor": "thr", "pipeline": [src, {"$throttle": {"messagesPerSec": 100}}, merge]})
        client.admin.command({"createStreamProcessor": "nothr", "pipeline": [src, merge]})
        client.admin.command({"startStreamProcessor": "thr"})
        deadline = time.monotonic() + 120
        st: dict[str, Any] = {}
        while time.monotonic() < deadline:
            st = client.admin.command({"getStreamProcessorStats": "thr", "options": {"verbose": True}})["stats"]
            if st["status"] == "stopped":
                break
            time.sleep(0.3)
        assert st["status"] == "stopped", st
        assert st["outputMessageCount"] == 300
        op = next(e for e in st["operatorStats"] if e["name"] == "$throttle")["throttle"]
        # 300 messages at 100/s from a full one-second bucket: about two seconds of waiting
        assert st["throttle"] == op and op["throttleEvents"] > 0 and 1000 < op["throttledTimeMs"] <= 2100, st

        env = dict(os.environ)
        env["HOME"] = str(svc.state_dir.parent)
        script = ("print(EJSON.stringify(sp.thr.stats().stats.throttle, {relaxed: true})); "
                  "print(EJSON.stringify(sp.nothr.stats().stats.throttle === undefined))")
        r = subprocess.run(mongosh_argv("pinned", "127.0.0.1", svc.port, "--quiet", "--norc", "--eval", script),
                           capture_output=True, text=True, timeout=120, env=env)
        assert r.returncode == 0, r.stderr
        assert r.stdout.split("\n")[:2] == [
            f'{{"throttledTimeMs":{op["throttledTimeMs"]},"throttleEvents":{op["throttleEvents"]}}}', "true"]
    finally:
        client.close()
        mc.drop_database(db_name)
        mc.close()
