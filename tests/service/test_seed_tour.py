"""The user's tour, end to end: real mongosh runs the seed's scripts (copied verbatim into
tests/service/seed/) against ``mqlflow serve``, whose processors write to the real
MongoDB-wire server started by scripts/services.sh (FerretDB, or MONGODB_URI).

Every test runs on the pinned mongosh 2.5.0 directly and on the newest 2.x through
``mqlflow shell`` (whose start-up snippet lets ``sp.getProcessor('name')`` take a string)."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pymongo
import pytest
from svc_helpers import (
    Service,
    mongodb_connections,
    mongosh_argv,
    services_env,
    start_service,
    wait_until,
)

pytestmark = [pytest.mark.mongosh, pytest.mark.mongodb, pytest.mark.slow]
SEED = Path(__file__).resolve().parent / "seed"


@pytest.fixture(scope="module")
def mongo() -> Iterator[pymongo.MongoClient]:  # type: ignore[type-arg]
    uri = services_env("MONGODB_URI")
    client: pymongo.MongoClient[Any] = pymongo.MongoClient(uri, serverSelectionTimeoutMS=5000)
    try:
        client.admin.command("ping")
    except pymongo.errors.PyMongoError as exc:
        pytest.fail(f"MongoDB is not reachable at {uri} ({exc}); start it with scripts/services.sh up mongodb")
    yield client
    client.close()


def start(tmp: Path, port: int = 0, *extra: str, names: tuple[str, ...] = ("MyOutputGoesHere", "dlqConn")) -> Service:
    """``mqlflow serve`` (real child flow) whose connections ``names`` all point at the test server."""
    return start_service(tmp, *extra, port=port, connections=mongodb_connections(services_env("MONGODB_URI"), *names))


def mongosh(svc: Service, version: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOME": str(svc.state_dir.parent)}
    argv = mongosh_argv(version, "127.0.0.1", svc.port, "--quiet", "--norc", *args, via_shell=version == "newest")
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
    assert r.returncode == 0, f"mongosh failed: {r.stderr}\n{svc.log.read_text()[-3000:]}"
    assert "Error" not in r.stderr, r.stderr
    return r


def states(svc: Service) -> dict[str, str]:
    with svc.client() as c:
        return {p["name"]: p["state"] for p in c.admin.command({"listStreamProcessors": 1})["streamProcessors"]}


def wait_for(pred: Any, timeout: float, what: str) -> Any:
    return wait_until(pred, timeout, what)


def children(pid: int) -> list[int]:
    r = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(x) for x in r.stdout.split()]


def test_seed_long_running_processor_tour(tmp_path: Path, mongo: pymongo.MongoClient, mongosh_version: str) -> None:  # type: ignore[type-arg]
    coll = mongo["demo"]["groupTempStatsFromStreamProcessor"]
    coll.drop()
    svc = start(tmp_path)
    try:
        mongosh(svc, mongosh_version, "--file", str(SEED / "create_processor.js"))
        assert states(svc) == {"myGroupTempStatsProcessor": "CREATED"}
        mongosh(svc, mongosh_version, "--file", str(SEED / "control.js"))
        # the shell has exited: the processor runs on, and windows reach MongoDB
        assert states(svc) == {"myGroupTempStatsProcessor": "STARTED"}
        docs = wait_for(lambda: list(coll.find()) if coll.count_documents({}) >= 3 else None, 90, "window documents")
        for d in docs:
            assert isinstance(d["_id"], int)
            assert d["minTemp"] <= d["avgTemp"] <= d["maxTemp"]
            assert d["stdevPTemp"] >= 0
            w = d["_stream_meta"]["window"]
            assert w["end"] - w["start"] == timedelta(seconds=3)

        # reconnect: still running; listStreamProcessors shows it
        r = mongosh(svc, mongosh_version, "--eval", "sp.listStreamProcessors().map(p => p.name).join(',')")
        assert r.stdout.strip() == "myGroupTempStatsProcessor"
        assert states(svc) == {"myGroupTempStatsProcessor": "STARTED"}

        # kill -9 the service and the processor child, restart: it resumes
        latest = max(d["_stream_meta"]["window"]["end"] for d in coll.find())
        kids = children(svc.proc.pid)
        assert kids, "the processor child is not running"
        for pid in [svc.proc.pid, *kids]:
            os.kill(pid, signal.SIGKILL)
        svc.proc.wait()
        svc2 = start(tmp_path, port=svc.port)
        svc = svc2
        assert states(svc) == {"myGroupTempStatsProcessor": "STARTED"}
        wait_for(lambda: coll.find_one({"_stream_meta.window.end": {"$gt": latest}}), 90, "windows after the restart")
        ids = [d["_id"] for d in coll.find()]
        assert len(ids) == len(set(ids))  # $merge on _id: one document per group, no duplicates

        # stop, then drop, from the shell
        mongosh(svc, mongosh_version, "--eval", "let p = sp.getProcessor('myGroupTempStatsProcessor'); p.stop();")
        assert states(svc) == {"myGroupTempStatsProcessor": "STOPPED"}
        mongosh(svc, mongosh_version, "--eval", "sp.getProcessor('myGroupTempStatsProcessor').drop();")
        assert states(svc) == {}
    finally:
        svc.stop()


DLQ_SCRIPT = """
let pipeline = [
  { $source: { documents: [{x: 0}, {x: 1}, {x: 3.14}, {x: 2}, {x: "22"}, {x: 3}, {text: 'yo'}, {x: 4}] } },
  { $validate: { validator: { $jsonSchema: { required: ["x"], properties: {
      x: { bsonType: "int", minimum: 1, maximum: 42 } } } }, validationAction: "dlq" } },
  { $tumblingWindow: { interval: { size: NumberInt(3), unit: "second" },
      pipeline: [ { $group: { _id: { $meta: "stream.window.start" }, sum: { $sum: "$x" }, all: { $push: "$x" } } } ] } },
  { $merge: { into: { connectionName: "MyOutputGoesHere", db: "dlqdemo", coll: "theGoodOnes" } } }
];
sp.createStreamProcessor("dlqDemo", pipeline, { dlq: { connectionName: "dlqConn", db: "dlqdemo", coll: "theBadOnes" } });
sp.getProcessor("dlqDemo").start();
"""


def test_dlq_scenario_from_mongosh(tmp_path: Path, mongo: pymongo.MongoClient, mongosh_version: str) -> None:  # type: ignore[type-arg]
    db = mongo["dlqdemo"]
    db.drop_collection("theGoodOnes")
    db.drop_collection("theBadOnes")
    svc = start(tmp_path)
    try:
        mongosh(svc, mongosh_version, "--eval", DLQ_SCRIPT)
        good = wait_for(lambda: list(db.theGoodOnes.find()), 60, "theGoodOnes")
        assert [(d["sum"], d["all"]) for d in good] == [(10, [1, 2, 3, 4])]
        bad = wait_for(lambda: list(db.theBadOnes.find()) if db.theBadOnes.count_documents({}) >= 4 else None, 60, "theBadOnes")
        assert sorted(repr(d["doc"].get("x", d["doc"].get("text"))) for d in bad) == sorted(["0", "3.14", "'22'", "'yo'"])
        for d in bad:
            assert d["errInfo"]["reason"].startswith("Input document found to be invalid in $validate stage")
            assert d["processorName"] == "dlqDemo"
    finally:
        svc.stop()
