"""The tour's companion script shape end to end: real mongosh drives ``mqlflow serve``
(real child flow ``flows.processor:from_definition``) to run a change-stream ``$source``
on the server of scripts/services.sh (FerretDB through its OpLog, or a replica set
through ``watch()``), and writes windows with ``$merge`` into the same server."""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymongo
import pytest
from bson import json_util
from svc_helpers import Service, mongosh_path
from test_seed_tour import mongo, services_env, wait_for  # noqa: F401  (mongo: a fixture)
from test_seed_tour import start as start_service

from tests.sources.test_changestream import (
    FLUSH,
    batch_docs,
    expected_windows,
    window_pipeline,
    window_results,
)

pytestmark = [pytest.mark.mongosh, pytest.mark.mongodb, pytest.mark.slow]

SIX = [
    {"color": "red", "x": 1}, {"color": "red", "x": 2}, {"color": "blue", "x": 4},
    {"color": "white", "x": 8}, {"color": "black", "x": 256}, {"color": "green", "x": 32},
]


@pytest.fixture
def cs_db(request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh database on the test server (the tour test's ``mongo`` fixture checks it answers)."""
    client: pymongo.MongoClient[Any] = request.getfixturevalue("mongo")
    name = f"changestream_{uuid.uuid4().hex[:10]}"
    yield client[name]
    client.drop_database(name)


def start(tmp: Path, *extra: str) -> Service:
    """``mqlflow serve`` with the tour's two connections on the test server."""
    return start_service(tmp, 0, *extra, names=("MyInputComesFromHere", "MyOutputGoesHere"))


def child_log(svc: Service) -> str:
    return "".join(f.read_text(errors="replace") for f in svc.state_dir.rglob("child.log"))


def backend_line(logs: str) -> str:
    """The child's line naming the backend that ran (``oplog`` on FerretDB, ``watch`` on a
    replica set): printed by the tests, so a run says which path it exercised."""
    line = next((ln for ln in logs.splitlines() if ": backend " in ln), "")
    assert re.search(r": backend (oplog|watch) ", line), logs[-3000:]
    return line


def mongosh(uri: str, script: str, home: Path, timeout: float = 120) -> str:
    r = subprocess.run([mongosh_path("newest"), uri, "--quiet", "--norc", "--eval", script],
                       capture_output=True, text=True, timeout=timeout, env={**os.environ, "HOME": str(home)})
    assert r.returncode == 0 and "Error" not in r.stderr, f"mongosh failed: {r.stdout}\n{r.stderr}"
    return r.stdout


def test_companion_script_change_stream_to_merge_from_mongosh(tmp_path: Path, cs_db: Any) -> None:
    db = cs_db.name
    svc = start(tmp_path)
    try:
        mongosh(f"mongodb://127.0.0.1:{svc.port}", f"""
        let p = sp.createStreamProcessor("atlasToAtlas", [
          {{ $source: {{ connectionName: "MyInputComesFromHere", db: "{db}", coll: "atlasToAtlasIn",
                         config: {{ fullDocument: "required" }} }} }},
          {{ $tumblingWindow: {{ interval: {{ size: 3, unit: "second" }},
              pipeline: [ {{ $group: {{ _id: "$fullDocument.color",
                                        sum: {{ $sum: "$fullDocument.x" }}, series: {{ $push: "$fullDocument.x" }} }} }} ] }} }},
          {{ $merge: {{ into: {{ connectionName: "MyOutputGoesHere", db: "{db}", coll: "atlasToAtlasOut" }} }} }}
        ]);
        p.start();
        """, tmp_path)
        # the child's source has taken its stream position once it names its backend
        wait_for(lambda: ": backend " in child_log(svc), 90, "the processor's change stream")
        uri = services_env("MONGODB_URI")
        docs = ", ".join(f"{{color: '{d['color']}', x: {d['x']}}}" for d in SIX)
        mongosh(uri, f"db.getSiblingDB('{db}').atlasToAtlasIn.insertMany([{docs}])", tmp_path)
        # The windows close when a later event moves the watermark past end + 3 s.
        time.sleep(7)
        mongosh(uri, f"db.getSiblingDB('{db}').atlasToAtlasIn.insertOne({{color: 'later', x: 0}})", tmp_path)
        out = cs_db["atlasToAtlasOut"]
        wait_for(lambda: {d["_id"] for d in out.find()} >= {"red", "blue", "white", "black", "green"}, 60,
                 "per-colour window results")
        time.sleep(1)
        got: dict[str, tuple[int, list[int]]] = {}
        for d in sorted(out.find(), key=lambda d: d["_stream_meta"]["window"]["start"]):
            s, series = got.get(d["_id"], (0, []))
            got[d["_id"]] = (s + d["sum"], series + d["series"])
        assert got == {"red": (3, [1, 2]), "blue": (4, [4]), "white": (8, [8]), "black": (256, [256]),
                       "green": (32, [32])}
        child_logs = child_log(svc)
        print(backend_line(child_logs))
    finally:
        svc.stop()


def test_sp_process_streams_change_events_into_mongosh(tmp_path: Path, cs_db: Any) -> None:
    db = cs_db.name
    svc = start(tmp_path, "--process-max-seconds", "14")
    stop = threading.Event()

    def writer() -> None:
        n = 0
        while not stop.is_set():
            cs_db["events"].insert_one({"n": n})
            n += 1
            stop.wait(0.5)

    t = threading.Thread(target=writer)
    t.start()
    try:
        out = mongosh(f"mongodb://127.0.0.1:{svc.port}", f"""
        sp.process([{{ $source: {{ connectionName: "MyInputComesFromHere", db: "{db}", coll: "events" }} }},
                    {{ $project: {{ _id: 0, op: "$operationType", n: "$fullDocument.n" }} }}])
        """, tmp_path, timeout=60)
    finally:
        stop.set()
        t.join()
        svc.stop()
    seen = [int(n) for n in re.findall(r"op: 'insert',\s*n: (\d+)", out)]
    assert len(seen) >= 3, out
    assert seen == list(range(seen[0], seen[0] + len(seen))), out  # in order, none missing


def test_kill9_of_the_processor_child_resumes_from_its_checkpoint(tmp_path: Path, cs_db: Any) -> None:
    """The service's child is killed with SIGKILL after batch 0; batch 1 is written while
    it is down; the supervisor restarts it from its checkpoint (resume token / OpLog ts),
    then batch 2 and a far-future event close every window: the output collection equals
    an independent computation over the three batches (an uninterrupted run's result)."""
    stages = json_util.loads(json_util.dumps(window_pipeline(cs_db.name)).replace('"fdb"', '"MyInputComesFromHere"'))
    stages[-1]["$merge"]["into"]["connectionName"] = "MyOutputGoesHere"
    svc = start(tmp_path)
    aware: pymongo.MongoClient[Any] = pymongo.MongoClient(services_env("MONGODB_URI"), tz_aware=True)
    src, out = cs_db["in"], aware[cs_db.name]["out"]
    try:
        with svc.client() as c:
            c.admin.command({"createStreamProcessor": "crashy", "pipeline": stages})
            c.admin.command({"startStreamProcessor": "crashy"})
        wait_for(lambda: ": backend " in child_log(svc), 90, "the processor's change stream")
        print(backend_line(child_log(svc)))
        src.insert_many(batch_docs(0))
        wait_for(lambda: out.count_documents({}) > 0, 60, "batch 0's first window")
        time.sleep(2.5)  # checkpoints every second
        child = subprocess.run(["pgrep", "-P", str(svc.proc.pid)], capture_output=True, text=True).stdout.split()
        assert len(child) == 1, child
        os.kill(int(child[0]), 9)
        src.insert_many(batch_docs(1))
        wait_for(lambda: child_log(svc).count(": backend ") >= 2, 90, "the restarted child")
        src.insert_many(batch_docs(2))
        src.insert_one(FLUSH)
        want = expected_windows(3)
        try:
            wait_for(lambda: window_results(out) == want, 90, "every window of the three batches")
        except AssertionError:
            got = window_results(out)
            missing = {k: v for k, v in want.items() if got.get(k) != v}
            raise AssertionError(f"{len(missing)} windows differ, e.g. {list(missing.items())[:3]} got "
                                 f"{[got.get(k) for k in list(missing)[:3]]}\n{child_log(svc)[-2500:]}") from None
        assert window_results(out) == want
    finally:
        svc.stop()
        aware.close()
