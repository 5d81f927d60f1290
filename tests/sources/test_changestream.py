"""The change-stream ``$source`` against the real server of scripts/services.sh: FerretDB
(through its OpLog ``local.oplog.rs``, which ``services.sh up mongodb`` creates) or,
when ``MONGODB_URI`` names a replica set, pymongo's ``watch()``.

Every run goes through ``python -m bytewax.run "flows.pipeline:from_file(...)"`` into a
``$merge`` collection on the same server; the tests print and assert which backend ran.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pymongo
import pytest
from bson import ObjectId, Timestamp, json_util

from sources.base import ProgressBatch
from sources.changestream import ChangeStreamSettings
from translator.compile import compile_pipeline
from translator.connections import ConnectionRegistry, load_registry
from translator.errors import TranslateError

pytestmark = [pytest.mark.mongodb]

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable


# ---- create-time errors (no server) ----------------------------------------------------------


def registry(tmp_path: Path) -> ConnectionRegistry:
    f = tmp_path / "c.toml"
    f.write_text('[connections.db]\ntype = "mongodb"\nuri = "mongodb://127.0.0.1:1/"\n')
    return load_registry(str(f))


def error(tmp_path: Path, source: dict[str, Any], *more: dict[str, Any]) -> str:
    with pytest.raises(TranslateError) as exc:
        compile_pipeline([{"$source": {"connectionName": "db", **source}}, *more], registry(tmp_path))
    return str(exc.value)


WINDOW = {"$tumblingWindow": {"interval": {"size": 1, "unit": "second"},
                              "pipeline": [{"$group": {"_id": None, "n": {"$sum": 1}}}]}}


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ({"coll": "c"}, "pipeline[0].$source.coll: 'coll' needs 'db' (a collection change stream is {db, coll})"),
        ({"db": "d", "coll": ["a", 3]}, "pipeline[0].$source.coll[1]: expected a string, got int"),
        ({"db": "d", "config": {"fullDocument": "always"}},
         "pipeline[0].$source.config.fullDocument: expected one of updateLookup, required, whenAvailable; got 'always'"),
        ({"db": "d", "config": {"fullDocumentBeforeChange": True}},
         "pipeline[0].$source.config.fullDocumentBeforeChange: expected one of off, required, whenAvailable; got True"),
        ({"db": "d", "config": {"startAfter": {"_data": "00"}, "startAtOperationTime": datetime(2024, 1, 1, tzinfo=UTC)}},
         "pipeline[0].$source.config: takes 'startAfter' or 'startAtOperationTime', not both"),
        ({"db": "d", "config": {"maxAwaitTimeMS": 0}},
         "pipeline[0].$source.config.maxAwaitTimeMS: expected a positive integer (milliseconds), got 0"),
        ({"db": "d", "config": {"pipeline": [{"$group": {"_id": 1}}]}},
         "pipeline[0].$source.config.pipeline[0]: $group is not allowed in a change stream pipeline; allowed: "
         "$addFields, $match, $project, $redact, $replaceRoot, $replaceWith, $set, $unset"),
        ({"db": "d", "config": {"fullDocumentOnly": "yes"}},
         "pipeline[0].$source.config.fullDocumentOnly: expected a boolean, got 'yes'"),
        ({"db": "d", "config": {"batchSize": 3}},
         "pipeline[0].$source.config.batchSize: unknown change stream option 'batchSize'; allowed: fullDocument, "
         "fullDocumentBeforeChange, fullDocumentOnly, maxAwaitTimeMS, pipeline, startAfter, startAtOperationTime"),
        ({"db": "d", "initialSync": {"enable": True, "parallelism": 0}},
         "pipeline[0].$source.initialSync.parallelism: expected a positive integer, got 0"),
    ],
)
def test_bad_change_stream_source_is_a_path_named_error(tmp_path: Path, source: dict[str, Any], message: str) -> None:
    assert error(tmp_path, source) == message


def test_initial_sync_is_refused_with_a_window(tmp_path: Path) -> None:
    msg = error(tmp_path, {"db": "d", "coll": "c", "initialSync": {"enable": True}}, WINDOW)
    assert msg == "pipeline[0].$source.initialSync: initialSync cannot be combined with a window stage (as in Atlas Stream Processing)"
    # without a window it compiles
    compile_pipeline([{"$source": {"connectionName": "db", "db": "d", "coll": ["a", "b"], "initialSync": {"enable": True}}}],
                     registry(tmp_path))


# ---- running flows -------------------------------------------------------------------------


def backend_of(uri: str) -> str:
    c: pymongo.MongoClient[Any] = pymongo.MongoClient(uri, serverSelectionTimeoutMS=5000)
    try:
        hello = c.admin.command("hello")
        return "watch" if "setName" in hello or hello.get("msg") == "isdbgrid" else "oplog"
    finally:
        c.close()


class Run:
    """``python -m bytewax.run "flows.pipeline:from_file(...)"``, optionally with a
    recovery directory; killed with SIGKILL by pid."""

    def __init__(self, tmp: Path, stages: list[dict[str, Any]], uri: str, recovery: Path | None = None,
                 options: dict[str, Any] | None = None) -> None:
        self.spec = tmp / f"p-{uuid.uuid4().hex[:6]}.json"
        self.spec.write_text(json_util.dumps({"name": "cs", "pipeline": stages, "options": options or {}}))
        self.conns = tmp / "connections.toml"
        self.conns.write_text(f'[connections.fdb]\ntype = "mongodb"\nuri = "{uri}"\n')
        self.log = tmp / "run.log"
        self.recovery = recovery
        if recovery is not None and not recovery.exists():
            recovery.mkdir(parents=True)
            subprocess.run([PY, "-m", "bytewax.recovery", str(recovery), "1"], check=True, cwd=ROOT, timeout=60)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = [PY, "-m", "bytewax.run", f"flows.pipeline:from_file('{self.spec}', connections='{self.conns}')"]
        if self.recovery is not None:
            args += ["-r", str(self.recovery), "-s", "1", "-b", "0"]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        with self.log.open("ab") as f:
            self.proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_started(self, backend: str) -> None:
        """The source printed its backend: the stream position is taken."""
        wait(lambda: f": backend {backend}" in self.text(), 60, self, f"the {backend} backend to start")
        print(f"change stream backend: {backend}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        assert self.proc is not None and self.proc.poll() is None, f"exited early:\n{self.text()[-3000:]}"
        self.proc.kill()
        self.proc.wait(10)


def wait(pred: Callable[[], Any], timeout: float, run: Run, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        assert run.alive(), f"the flow died while waiting for {what}:\n{run.text()[-3000:]}"
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}:\n{run.text()[-3000:]}")


@pytest.fixture
def cs_db(mongodb_uri: str) -> Iterator[Any]:
    client: pymongo.MongoClient[Any] = pymongo.MongoClient(mongodb_uri, serverSelectionTimeoutMS=5000, tz_aware=True)
    name = f"changestream_{uuid.uuid4().hex[:10]}"
    try:
        yield client[name]
    finally:
        client.drop_database(name)
        client.close()


def test_events_of_inserts_updates_replaces_deletes_reach_merge(tmp_path: Path, mongodb_uri: str, cs_db: Any) -> None:
    """Every write made during the run arrives once, in order, in MongoDB's change-event
    shape; a write to another collection of the database is not watched."""
    backend = backend_of(mongodb_uri)
    stages = [
        {"$source": {"connectionName": "fdb", "db": cs_db.name, "coll": ["in", "in2"]}},
        {"$project": {"op": "$operationType", "ns": 1, "key": "$documentKey._id",
                      "full": "$fullDocument", "clusterTime": 1, "wallTime": 1, "ts": "$_ts", "meta": "$_stream_meta"}},
        {"$merge": {"into": {"connectionName": "fdb", "db": cs_db.name, "coll": "out"}}},
    ]
    run = Run(tmp_path, stages, mongodb_uri)
    run.start()
    try:
        run.wait_started(backend)
        src, src2, other = cs_db["in"], cs_db["in2"], cs_db["notWatched"]
        src.insert_one({"_id": 1, "color": "red", "x": 1})
        src.insert_many([{"_id": 2, "color": "blue", "x": 4}, {"_id": 3, "color": "red", "x": 2}])
        other.insert_one({"_id": 99})
        src.update_one({"_id": 2}, {"$set": {"x": 5}, "$unset": {"color": ""}})
        src.replace_one({"_id": 3}, {"color": "white", "x": 8})
        src2.insert_one({"_id": "a", "x": 256})
        src.delete_one({"_id": 1})
        src.update_many({}, {"$inc": {"x": 10}})
        upd = "update" if backend == "watch" else "replace"  # FerretDB's OpLog cannot tell them apart
        expected = [
            ("insert", "in", 1, {"_id": 1, "color": "red", "x": 1}),
            ("insert", "in", 2, {"_id": 2, "color": "blue", "x": 4}),
            ("insert", "in", 3, {"_id": 3, "color": "red", "x": 2}),
            (upd, "in", 2, {"_id": 2, "x": 5}),
            ("replace", "in", 3, {"_id": 3, "color": "white", "x": 8}),
            ("insert", "in2", "a", {"_id": "a", "x": 256}),
            ("delete", "in", 1, None),
            (upd, "in", 2, {"_id": 2, "x": 15}),
            (upd, "in", 3, {"_id": 3, "color": "white", "x": 18}),
        ]
        out = cs_db["out"]
        wait(lambda: out.count_documents({}) >= len(expected), 60, run, "9 events")
        time.sleep(1.5)
        docs = list(out.find())
    finally:
        run.kill9()
    docs.sort(key=lambda d: d["clusterTime"])
    got: list[tuple[Any, ...]] = [(d["op"], d["ns"]["coll"], d["key"], d.get("full")) for d in docs]
    want: list[tuple[Any, ...]] = list(expected)
    if backend == "watch":  # updateLookup reads the document later: compare keys and kinds only
        got, want = [g[:3] for g in got], [e[:3] for e in want]
    assert got == want
    for d in docs:
        assert d["ns"]["db"] == cs_db.name
        assert d["ts"] == d["wallTime"]  # event time = the change event's time
        assert d["meta"] == {"source": {"type": "atlas", "db": cs_db.name, "coll": d["ns"]["coll"]}}
        assert isinstance(d["_id"], dict) and "_data" in d["_id"]  # the resume token
    assert f"backend {backend}" in run.text()


T0 = datetime(2024, 8, 8, 23, 8, 0, tzinfo=UTC)
COLORS = ("red", "blue", "green")


def batch_docs(k: int) -> list[dict[str, Any]]:
    """Batch ``k``: 20 documents 200 ms apart (two 2 s windows), 10 s after batch ``k-1``."""
    return [
        {"_id": k * 100 + j, "color": COLORS[(k + j) % 3], "x": (k * 7 + j * 3) % 11,
         "t": T0 + timedelta(seconds=10 * k, milliseconds=200 * j)}
        for j in range(20)
    ]


FLUSH = {"_id": "flush", "color": "flush", "x": 0, "t": T0 + timedelta(hours=1)}  # closes every window before it


def expected_windows(batches: int) -> dict[tuple[str, datetime], dict[str, Any]]:
    out: dict[tuple[str, datetime], dict[str, Any]] = {}
    for k in range(batches):
        for d in batch_docs(k):
            ms = int((d["t"] - T0).total_seconds() * 1000)
            start = T0 + timedelta(milliseconds=ms - ms % 2000)
            r = out.setdefault((d["color"], start), {"n": 0, "total": 0})
            r["n"] += 1
            r["total"] += d["x"]
    return out


def window_pipeline(db: str) -> list[dict[str, Any]]:
    return [
        {"$source": {"connectionName": "fdb", "db": db, "coll": "in", "timeField": {"$toDate": "$fullDocument.t"},
                     "config": {"fullDocument": "required"}}},
        {"$tumblingWindow": {
            "interval": {"size": 2, "unit": "second"}, "allowedLateness": 0,
            "pipeline": [{"$group": {"_id": {"c": "$fullDocument.color", "start": {"$meta": "stream.window.start"}},
                                     "n": {"$sum": 1}, "total": {"$sum": "$fullDocument.x"}}}]}},
        {"$merge": {"into": {"connectionName": "fdb", "db": db, "coll": "out"}}},
    ]


def window_results(coll: Any) -> dict[tuple[str, datetime], dict[str, Any]]:
    return {(d["_id"]["c"], d["_id"]["start"]): {"n": d["n"], "total": d["total"]} for d in coll.find()}


@pytest.mark.slow
def test_kill9_mid_stream_then_restart_resumes_from_the_checkpoint(tmp_path: Path, mongodb_uri: str, cs_db: Any) -> None:
    """Batch 0 is read, the flow is killed with SIGKILL, batch 1 is written while it is
    down, the restart (same recovery directory) resumes from the checkpointed OpLog
    timestamp / resume token and then sees batch 2: the windows equal an independent
    computation over all three batches (what an uninterrupted run gives)."""
    backend = backend_of(mongodb_uri)
    src, out = cs_db["in"], cs_db["out"]
    run = Run(tmp_path, window_pipeline(cs_db.name), mongodb_uri, recovery=tmp_path / "recovery")
    run.start()
    run.wait_started(backend)
    src.insert_many(batch_docs(0))
    # batch 0's first window closes (its second one stays open in the window state)
    wait(lambda: out.count_documents({}) > 0, 60, run, "batch 0's first window")
    time.sleep(2.5)  # at least one checkpoint (every second) after batch 0
    run.kill9()
    src.insert_many(batch_docs(1))  # while the flow is down
    src.delete_one({"_id": 0})  # no fullDocument with fullDocument: required -> the DLQ (console)
    run.start()
    wait(lambda: run.text().count(f": backend {backend}") == 2, 60, run, "the restart")
    src.insert_many(batch_docs(2))
    src.insert_one(FLUSH)
    want = expected_windows(3)
    wait(lambda: window_results(out) == want, 90, run, "every window of the three batches")
    run.kill9()
    assert window_results(out) == want
    assert "Change event has no fullDocument (config.fullDocument is 'required'): operationType delete" in run.text()


@pytest.mark.parametrize("parallelism", [1, 4])
def test_initial_sync_then_stream_and_full_document_only(
    tmp_path: Path, mongodb_uri: str, cs_db: Any, parallelism: int
) -> None:
    """initialSync emits the existing documents as inserts first (with ``parallelism`` 4,
    four ``_id`` ranges read concurrently, 25 documents per query), then follows the
    stream; fullDocumentOnly emits the documents themselves; config.pipeline filters events."""
    backend = backend_of(mongodb_uri)
    src = cs_db["in"]
    src.insert_many([{"_id": i, "x": i} for i in range(300)])
    stages = [
        {"$source": {"connectionName": "fdb", "db": cs_db.name, "coll": "in",
                     "initialSync": {"enable": True, "parallelism": parallelism},
                     "config": {"fullDocumentOnly": True, "pipeline": [{"$match": {"operationType": "insert"}}]}}},
        {"$project": {"_stream_meta": 0, "_ts": 0}},
        {"$merge": {"into": {"connectionName": "fdb", "db": cs_db.name, "coll": "out"}}},
    ]
    run = Run(tmp_path, stages, mongodb_uri, options={"batchSize": 25})
    run.start()
    try:
        run.wait_started(backend)
        out = cs_db["out"]
        wait(lambda: out.count_documents({}) == 300, 60, run, "the 300 existing documents")
        src.insert_one({"_id": 1000, "x": 1000})
        src.update_one({"_id": 0}, {"$set": {"x": 100}})  # filtered out by config.pipeline
        wait(lambda: out.count_documents({}) == 301, 60, run, "the streamed insert")
        time.sleep(1.5)
        assert sorted(out.find(), key=lambda d: d["_id"]) == [{"_id": i, "x": i} for i in (*range(300), 1000)]
    finally:
        run.kill9()


def sync_partition(cs_db: Any, uri: str, colls: tuple[str, ...], parallelism: int, batch: int) -> Any:
    """The change-stream source partition itself, on the real server, with initialSync."""
    from sources.changestream import ChangeStreamSource
    from translator import ir
    from translator.connections import Connection
    from translator.options import ProcessorOptions

    if backend_of(uri) != "oplog":
        pytest.fail("this test needs FerretDB's OpLog (MONGODB_URI names a server with change streams)")
    settings = ChangeStreamSettings.from_stage(
        ir.SourceStage(path="pipeline[0].$source", connection_name="fdb", documents=None, time_field=None,
                       db=cs_db.name, coll=colls, initial_sync={"enable": True, "parallelism": parallelism}),
        Connection(name="fdb", type="mongodb", uri=uri), ProcessorOptions(batch_size=batch),
    )
    source = ChangeStreamSource(settings)
    return source.build_part("s", settings.part, None)


def events_of(items: list[Any]) -> list[dict[str, Any]]:
    return [doc for _, batch in items if type(batch) is not ProgressBatch for doc, _ in batch]


@pytest.mark.parametrize("parallelism", [1, 4])
def test_initial_sync_scans_every_document_once_and_hands_over_to_the_stream(
    mongodb_uri: str, cs_db: Any, parallelism: int
) -> None:
    """The partition, driven batch by batch: the scan emits every existing document once
    (``parallelism`` 4: four ``_id`` ranges, 20 documents each per batch; a collection of
    mixed ``_id`` types is one range, read across the types), and writes made during the
    scan all arrive from the stream afterwards. A write to a range not scanned yet is
    also seen by the scan: initial sync is at-least-once, as in ASP."""
    ints, mixed = cs_db["in"], cs_db["mixed"]
    ints.insert_many([{"_id": i, "x": i} for i in range(230)])
    mixed_ids: list[Any] = [None, *range(15), *(f"s{i}" for i in range(15)), *(ObjectId() for _ in range(15)), True]
    mixed.insert_many([{"_id": k} for k in mixed_ids])
    part = sync_partition(cs_db, mongodb_uri, ("in", "mixed"), parallelism, 20)
    try:
        first = events_of(part.next_batch())
        assert len(first) == 20 * parallelism
        assert len(part.sync["ranges"]) == parallelism
        # during the scan: an update of a scanned document, an insert after every range,
        # a delete of a document not scanned yet
        ints.update_one({"_id": 0}, {"$set": {"x": 100}})
        ints.insert_one({"_id": 5000, "x": 5000})
        ints.delete_one({"_id": 229})
        scanned = list(first)
        while part.sync is not None:
            scanned.extend(events_of(part.next_batch()))
        streamed: list[dict[str, Any]] = []
        deadline = time.monotonic() + 30
        while len(streamed) < 3 and time.monotonic() < deadline:
            streamed.extend(events_of(part.next_batch()))
            time.sleep(0.2)
    finally:
        part.close()
    assert all(e["operationType"] == "insert" and e["_id"]["initialSync"] == f"{cs_db.name}.{e['ns']['coll']}"
               for e in scanned)
    got = Counter((e["ns"]["coll"], e["documentKey"]["_id"]) for e in scanned)
    want = Counter([*(("in", i) for i in [*range(229), 5000]), *(("mixed", k) for k in mixed_ids)])
    assert got == want
    assert next(e["fullDocument"] for e in scanned if e["documentKey"]["_id"] == 0) == {"_id": 0, "x": 0}
    assert [(e["operationType"], e["documentKey"]["_id"], e.get("fullDocument")) for e in streamed] == [
        ("replace", 0, {"_id": 0, "x": 100}), ("insert", 5000, {"_id": 5000, "x": 5000}), ("delete", 229, None),
    ]


def test_an_idle_change_stream_moves_the_watermark(tmp_path: Path, mongodb_uri: str, cs_db: Any) -> None:
    """Without timeField (event time = the change event's time), an idle stream reports
    the server's clock: the windows close without a later event and without idleTimeout."""
    backend = backend_of(mongodb_uri)
    stages = [
        {"$source": {"connectionName": "fdb", "db": cs_db.name, "coll": "in"}},
        {"$tumblingWindow": {"interval": {"size": 2, "unit": "second"}, "pipeline": [
            {"$group": {"_id": "$fullDocument.color", "sum": {"$sum": "$fullDocument.x"},
                        "series": {"$push": "$fullDocument.x"}}}]}},
        {"$merge": {"into": {"connectionName": "fdb", "db": cs_db.name, "coll": "out"}}},
    ]
    run = Run(tmp_path, stages, mongodb_uri)
    run.start()
    try:
        run.wait_started(backend)
        cs_db["in"].insert_many([{"color": "red", "x": 1}, {"color": "red", "x": 2}, {"color": "blue", "x": 4}])
        cs_db["in"].insert_many([{"color": "white", "x": 8}, {"color": "red", "x": 16}])
        out = cs_db["out"]
        wait(lambda: {d["_id"] for d in out.find()} == {"red", "blue", "white"}, 60, run, "the window results")
        time.sleep(1.5)
        got: dict[str, list[Any]] = {}
        for d in sorted(out.find(), key=lambda d: d["_stream_meta"]["window"]["start"]):
            s, series = got.get(d["_id"], [0, []])
            got[d["_id"]] = [s + d["sum"], series + d["series"]]
        assert run.alive()
    finally:
        run.kill9()
    assert got == {"red": [19, [1, 2, 16]], "blue": [4, [4]], "white": [8, [8]]}


def test_resume_token_cluster_time() -> None:
    """The watch() backend's idle bound: the cluster time at the start of a server's
    resume token (KeyString: 0x82, then seconds and increment)."""
    from sources.changestream import token_cluster_time

    token = {"_data": "826553A1B2000000032B022C0100296E5A1004AB"}
    assert token_cluster_time(token) == Timestamp(0x6553A1B2, 3)
    assert token_cluster_time({"_data": "0000000100000000"}) is None
    assert token_cluster_time({"_data": 5}) is None
    assert token_cluster_time(None) is None


@pytest.mark.parametrize("form", ["database", "cluster"])
def test_database_and_cluster_forms_with_concurrent_writers(
    tmp_path: Path, mongodb_uri: str, cs_db: Any, form: str
) -> None:
    """A database (``db`` only) or cluster (neither) change stream sees every insert of 4
    concurrent writers on 2 collections exactly once (FerretDB's OpLog makes some entries
    visible out of ``ts`` order under concurrency; the look-back must catch them)."""
    import threading

    backend = backend_of(mongodb_uri)
    out_db = f"{cs_db.name}_out"  # outside the watched database: no feedback
    src: dict[str, Any] = {"connectionName": "fdb"}
    if form == "database":
        src["db"] = cs_db.name
    else:  # the cluster also sees every other test's writes: keep this database's
        src["config"] = {"pipeline": [{"$match": {"ns.db": cs_db.name}}]}
    stages = [
        {"$source": src},
        {"$project": {"_id": "$fullDocument._id", "coll": "$ns.coll", "op": "$operationType"}},
        {"$merge": {"into": {"connectionName": "fdb", "db": out_db, "coll": "out"}}},
    ]
    run = Run(tmp_path, stages, mongodb_uri)
    run.start()
    client = cs_db.client
    try:
        run.wait_started(backend)

        def writer(k: int) -> None:
            coll = cs_db[f"c{k % 2}"]
            for i in range(60):
                coll.insert_one({"_id": f"{k}-{i}"})

        threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        out = client[out_db]["out"]
        wait(lambda: out.count_documents({}) >= 240, 90, run, "240 events")
        time.sleep(1.5)
        got = sorted((d["_id"], d["coll"], d["op"]) for d in out.find())
    finally:
        run.kill9()
        client.drop_database(out_db)
    assert got == sorted((f"{k}-{i}", f"c{k % 2}", "insert") for k in range(4) for i in range(60))


def test_fails_clearly_on_a_resume_token_the_oplog_no_longer_holds(tmp_path: Path, mongodb_uri: str, cs_db: Any) -> None:
    text = failed_start(tmp_path, mongodb_uri, cs_db.name, {"startAfter": {"_data": "0000000100000000"}})
    assert (
        "pipeline[0].$source: cannot resume the change stream: config.startAfter (OpLog ts 1.0) is older than "
        "the oldest entry local.oplog.rs still holds" in text
    )


def failed_start(tmp_path: Path, uri: str, db: str, config: dict[str, Any]) -> str:
    """Run a change-stream flow on FerretDB's OpLog that must fail at start; its output."""
    if backend_of(uri) != "oplog":
        pytest.fail("this test needs FerretDB's OpLog (MONGODB_URI names a server with change streams)")
    run = Run(tmp_path, [{"$source": {"connectionName": "fdb", "db": db, "coll": "in", "config": config}}], uri)
    run.start()
    assert run.proc is not None
    run.proc.wait(60)
    assert run.proc.returncode != 0
    return run.text()


def test_oplog_backend_polled_in_a_tight_loop_sees_every_concurrent_write_once(mongodb_uri: str, cs_db: Any) -> None:
    """The OpLog backend itself, polled as fast as it goes while 4 threads insert: entries
    that become visible after a larger ``ts`` was read (it happens on FerretDB) are still
    emitted, once. (Polling in a loop makes that race frequent; the flow's 200 ms sleep
    makes it rare.)"""
    import threading

    from sources.changestream import BACKENDS, ChangeStreamSettings
    from translator import ir
    from translator.connections import Connection
    from translator.options import ProcessorOptions

    if backend_of(mongodb_uri) != "oplog":
        pytest.fail("this test needs FerretDB's OpLog (MONGODB_URI names a server with change streams)")
    conn = Connection(name="fdb", type="mongodb", uri=mongodb_uri)
    settings = ChangeStreamSettings.from_stage(
        ir.SourceStage(path="pipeline[0].$source", connection_name="fdb", documents=None, time_field=None,
                       db=cs_db.name, coll=("c",)),
        conn, ProcessorOptions(batch_size=50),
    )
    backend = BACKENDS["oplog"](cs_db.client, settings, None)

    def writer(k: int) -> None:
        for i in range(150):
            cs_db["c"].insert_one({"_id": f"{k}-{i}"})

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    seen: list[str] = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        writing = any(t.is_alive() for t in threads)
        events, _ = backend.poll(50)
        seen.extend(e["documentKey"]["_id"] for e in events)
        if not writing and len(seen) >= 600:
            events, _ = backend.poll(50)
            seen.extend(e["documentKey"]["_id"] for e in events)
            break
    for t in threads:
        t.join()
    assert sorted(seen) == sorted(f"{k}-{i}" for k in range(4) for i in range(150))


def test_the_readme_example_pipeline(tmp_path: Path, mongodb_uri: str, cs_db: Any) -> None:
    """examples/change_stream_colors.json (its db renamed): six inserts, and without any
    later event the window's idleTimeout gets the per-colour results out."""
    spec = json_util.loads((ROOT / "examples" / "change_stream_colors.json").read_text())
    stages = json_util.loads(json_util.dumps(spec["pipeline"]).replace('"demo"', f'"{cs_db.name}"')
                             .replace("MyOutputGoesHere", "fdb"))
    run = Run(tmp_path, stages, mongodb_uri)
    run.start()
    try:
        run.wait_started(backend_of(mongodb_uri))
        cs_db["atlasToAtlasIn"].insert_many([
            {"color": "red", "x": 1}, {"color": "red", "x": 2}, {"color": "blue", "x": 4},
            {"color": "white", "x": 8}, {"color": "black", "x": 256}, {"color": "green", "x": 32},
        ])
        out = cs_db["atlasToAtlasOut"]
        wait(lambda: {d["_id"] for d in out.find()} == {"red", "blue", "white", "black", "green"}, 60, run,
             "the window results")
        time.sleep(1)
        got: dict[str, list[Any]] = {}
        for d in sorted(out.find(), key=lambda d: d["_stream_meta"]["window"]["start"]):
            s, series = got.get(d["_id"], [0, []])
            got[d["_id"]] = [s + d["sum"], series + d["series"]]
    finally:
        run.kill9()
    assert got == {"red": [3, [1, 2]], "blue": [4, [4]], "white": [8, [8]], "black": [256, [256]], "green": [32, [32]]}


def test_before_images_required_fail_at_start_on_the_oplog(tmp_path: Path, mongodb_uri: str, cs_db: Any) -> None:
    text = failed_start(tmp_path, mongodb_uri, cs_db.name, {"fullDocumentBeforeChange": "required"})
    assert (
        "pipeline[0].$source.config.fullDocumentBeforeChange: 'required' cannot be met: FerretDB's OpLog records "
        "no pre-images (use 'whenAvailable' or 'off')" in text
    )


@pytest.mark.parametrize(("time_field", "moves"), [(None, True), ({"$toDate": "$fullDocument.t"}, False)])
def test_source_progress_moves_the_watermark_only_without_time_field(
    tmp_path: Path, time_field: Any, moves: bool
) -> None:
    """Ingest of a ProgressBatch: the watermark follows the source's bound where the event
    time is the source time, and never where a timeField gives it (any value can come)."""
    from translator.options import ProcessorOptions
    from translator.runtime import IngestLogic, Plan
    from translator.windows import NEG_INF, QUIET, WIN

    src: dict[str, Any] = {"connectionName": "db", "db": "d", "coll": "c"}
    if time_field is not None:
        src["timeField"] = time_field
    pipeline = compile_pipeline([{"$source": src}, WINDOW], registry(tmp_path))
    logic = IngestLogic(Plan.compile(pipeline, ProcessorOptions()), "p", None)
    out = logic.process(ProgressBatch(5000))
    assert logic.process(ProgressBatch(4000)) == []  # never back
    if moves:
        assert logic.wm == 5000
        assert [(tag, msg.watermark, msg.activity) for tag, (_, msg) in out] == [(WIN, 5000, QUIET)] * logic.buckets
    else:
        assert (logic.wm, out) == (NEG_INF, [])
