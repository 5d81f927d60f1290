"""`$merge` against the real MongoDB-wire server of scripts/services.sh (docs/semantics.md#sinks, docs/semantics.md#checkpoints)."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from bytewax import operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import DynamicSource, StatelessSourcePartition
from bytewax.testing import TestingSource, run_main
from pymongo import MongoClient

from sinks.mongo import MergeSink, MergeUnreachableError
from tests.service.svc_helpers import PrivateFerretDB, private_ferretdb
from translator.compile import compile_pipeline, make_sinks
from translator.connections import Connection, ConnectionRegistry
from translator.errors import TranslateError
from translator.ir import DlqTarget
from translator.options import ProcessorOptions

pytestmark = pytest.mark.mongodb

REPO = Path(__file__).resolve().parents[2]
Doc = dict[str, Any]
# Two stages before the $merge: its path is pipeline[3], as in the messages below.
BEFORE: list[Doc] = [{"$source": {"documents": []}}, {"$match": {}}, {"$match": {}}]


def registry(uri: str) -> ConnectionRegistry:
    return ConnectionRegistry({"out": Connection(name="out", type="mongodb", uri=uri)})


def stage(db: Any, coll: Any = "c", *, conn: str = "out", on: tuple[str, ...] | None = None,
          when_matched: Any = None, when_not_matched: Any = None, let: Doc | None = None) -> Doc:
    """A ``$merge`` stage document."""
    spec: Doc = {"into": {"connectionName": conn, "db": db, "coll": coll}}
    if on is not None:
        spec["on"] = list(on)
    if when_matched is not None:
        spec["whenMatched"] = list(when_matched) if isinstance(when_matched, tuple) else when_matched
    if when_not_matched is not None:
        spec["whenNotMatched"] = when_not_matched
    if let is not None:
        spec["let"] = let
    return {"$merge": spec}


def merge_sink(reg: ConnectionRegistry, st: Doc, *, dlq_db: str | None = None, batch_size: int = 1000,
               flush_interval_s: float = 0.05) -> MergeSink:
    """The sink the product builds: ``compile_pipeline`` checks the stage and types its
    settings, ``make_sinks`` builds the sink (and its DLQ writer) from them."""
    options = ProcessorOptions(name="proc1", dlq=DlqTarget("out", dlq_db, "dlq") if dlq_db else None,
                               sink_batch_size=batch_size, sink_flush_interval_s=flush_interval_s)
    sink, _ = make_sinks(compile_pipeline([*BEFORE, st], reg, options))
    assert isinstance(sink, MergeSink)
    return sink


def make_sink(uri: str, st: Doc, db: Any, **kw: Any) -> MergeSink:
    return merge_sink(registry(uri), st, dlq_db=db.name, **kw)


def run(sink: MergeSink, batches: list[list[Doc]]) -> MergeSink:
    flow = Dataflow("merge_test")
    s = op.input("in", flow, TestingSource(batches))
    op.output("out", s, sink)
    run_main(flow)
    return sink


def contents(coll: Any) -> list[Doc]:
    return sorted(coll.find(), key=lambda d: repr(d["_id"]))


def dlq_entries(db: Any) -> list[tuple[str, Doc]]:
    return sorted(((d["errInfo"]["reason"], d["doc"]) for d in db["dlq"].find()), key=repr)


EXISTING = [{"_id": 1, "a": 1, "b": 1}, {"_id": 2, "a": 2, "b": 2}]
INCOMING = [{"_id": 1, "a": 10, "c": 10}, {"_id": 3, "a": 3}]


def seeded(mongo_db: Any) -> Any:
    mongo_db["c"].insert_many([dict(d) for d in EXISTING])
    return mongo_db["c"]


# ---- every whenMatched x whenNotMatched ------------------------------------------------------

MODES: list[tuple[Any, str, list[Doc]]] = [
    ("replace", "insert", [{"_id": 1, "a": 10, "c": 10}, EXISTING[1], {"_id": 3, "a": 3}]),
    ("replace", "discard", [{"_id": 1, "a": 10, "c": 10}, EXISTING[1]]),
    ("merge", "insert", [{"_id": 1, "a": 10, "b": 1, "c": 10}, EXISTING[1], {"_id": 3, "a": 3}]),
    ("merge", "discard", [{"_id": 1, "a": 10, "b": 1, "c": 10}, EXISTING[1]]),
    ("keepExisting", "insert", [EXISTING[0], EXISTING[1], {"_id": 3, "a": 3}]),
    ("keepExisting", "discard", EXISTING),
    ("delete", "insert", [EXISTING[1], {"_id": 3, "a": 3}]),
    ("delete", "discard", [EXISTING[1]]),
    (
        ({"$set": {"a": {"$add": ["$a", "$$new.a"]}, "last": "$$new.c"}},),
        "insert",
        [{"_id": 1, "a": 11, "b": 1, "last": 10}, EXISTING[1], {"_id": 3, "a": 3}],
    ),
    (
        ({"$set": {"a": {"$add": ["$a", "$$new.a"]}, "last": "$$new.c"}},),
        "discard",
        [{"_id": 1, "a": 11, "b": 1, "last": 10}, EXISTING[1]],
    ),
]


@pytest.mark.parametrize(("when_matched", "when_not_matched", "expected"), MODES)
def test_when_matched_when_not_matched(
    mongodb_uri: str, mongo_db: Any, when_matched: Any, when_not_matched: str, expected: list[Doc]
) -> None:
    coll = seeded(mongo_db)
    st = stage(mongo_db.name, when_matched=when_matched, when_not_matched=when_not_matched)
    sink = run(make_sink(mongodb_uri, st, mongo_db), [[dict(d) for d in INCOMING]])
    assert contents(coll) == expected
    assert dlq_entries(mongo_db) == []
    assert sink.dlq_count == 0


@pytest.mark.parametrize(("when_not_matched", "expected"), [
    ("insert", [EXISTING[0], EXISTING[1], {"_id": 3, "a": 3}]),
    ("discard", EXISTING),
])
def test_fail_sends_the_matched_document_to_the_dlq(
    mongodb_uri: str, mongo_db: Any, when_not_matched: str, expected: list[Doc]
) -> None:
    coll = seeded(mongo_db)
    st = stage(mongo_db.name, when_matched="fail", when_not_matched=when_not_matched)
    sink = run(make_sink(mongodb_uri, st, mongo_db), [[dict(d) for d in INCOMING]])
    assert contents(coll) == expected
    [(reason, doc)] = dlq_entries(mongo_db)
    assert doc == {"_id": 1, "a": 10, "c": 10}
    if when_not_matched == "insert":  # the server's own duplicate key message
        assert reason.startswith("$merge write error: ")
        assert "duplicate key" in reason.lower()
    else:
        assert reason == "$merge whenMatched 'fail': a document with {_id: 1} already exists"
    assert sink.dlq_count == 1
    assert sink.written == (1 if when_not_matched == "insert" else 0)
    dlq_doc = mongo_db["dlq"].find_one()
    assert dlq_doc is not None
    assert dlq_doc["processorName"] == "proc1"
    assert set(dlq_doc) == {"_id", "errInfo", "doc", "processorName", "dlqTime"}


def test_merge_is_the_default_and_on_takes_several_fields(mongodb_uri: str, mongo_db: Any) -> None:
    coll = mongo_db["c"]
    coll.insert_one({"_id": "x1", "k1": "x", "k2": 1, "v": 1, "keep": True})
    st = stage(mongo_db.name, on=("k1", "k2"))
    run(make_sink(mongodb_uri, st, mongo_db), [[{"k1": "x", "k2": 1, "v": 2}, {"k1": "x", "k2": 2, "v": 3}]])
    docs = list(coll.find({}, {"_id": 0}).sort("k2", 1))
    assert docs == [{"k1": "x", "k2": 1, "v": 2, "keep": True}, {"k1": "x", "k2": 2, "v": 3}]


def test_missing_on_field_goes_to_the_dlq(mongodb_uri: str, mongo_db: Any) -> None:
    st = stage(mongo_db.name, on=("k",))
    run(make_sink(mongodb_uri, st, mongo_db), [[{"k": 1, "v": 1}, {"v": 2}, {"k": None, "v": 3}]])
    assert list(mongo_db["c"].find({}, {"_id": 0})) == [{"k": 1, "v": 1}]
    msg = "$merge write error: 'on' field 'k' cannot be missing, null, undefined or an array"
    assert dlq_entries(mongo_db) == [(msg, {"k": None, "v": 3}), (msg, {"v": 2})]


def test_same_key_twice_in_one_batch_applies_in_arrival_order(mongodb_uri: str, mongo_db: Any) -> None:
    st = stage(mongo_db.name, when_matched="replace")
    batch = [{"_id": 5, "v": 1}, {"_id": 6, "v": 1}, {"_id": 5, "v": 2}, {"_id": 5, "v": 3}]
    run(make_sink(mongodb_uri, st, mongo_db), [batch])
    assert contents(mongo_db["c"]) == [{"_id": 5, "v": 3}, {"_id": 6, "v": 1}]
    # delete + insert: the first occurrence inserts, the second deletes it again.
    st = stage(mongo_db.name, coll="d", when_matched="delete")
    run(make_sink(mongodb_uri, st, mongo_db), [[{"_id": 7}, {"_id": 8}, {"_id": 7}]])
    assert contents(mongo_db["d"]) == [{"_id": 8}]


def test_document_without_id_gets_one(mongodb_uri: str, mongo_db: Any) -> None:
    st = stage(mongo_db.name, when_matched="replace")
    run(make_sink(mongodb_uri, st, mongo_db), [[{"v": 1}, {"v": 2}]])
    docs = list(mongo_db["c"].find())
    assert sorted(d["v"] for d in docs) == [1, 2]
    assert all(type(d["_id"]).__name__ == "ObjectId" for d in docs)


def test_replay_of_window_results_keyed_by_id_is_idempotent(mongodb_uri: str, mongo_db: Any) -> None:
    """At-least-once (docs/semantics.md#checkpoints) + $merge on _id = effectively exactly once."""
    windows = [{"_id": {"g": g, "start": s}, "avg": g * 10 + s} for g in range(3) for s in range(4)]
    for mode in ("replace", "merge", "keepExisting"):
        st = stage(mongo_db.name, coll=mode, when_matched=mode)
        run(make_sink(mongodb_uri, st, mongo_db, batch_size=5), [windows[:7], windows[3:], windows])
        got = list(mongo_db[mode].find())
        assert sorted(got, key=repr) == sorted(windows, key=repr), mode


def test_whenmatched_pipeline_project_unset_replace_with(mongodb_uri: str, mongo_db: Any) -> None:
    coll = mongo_db["c"]
    coll.insert_many([{"_id": 1, "n": 1, "hist": [1], "junk": 1}, {"_id": 2, "n": 5, "junk": 2}])
    pipeline = (
        {"$addFields": {"n": {"$add": ["$n", "$$new.n"]}, "hist": {"$concatArrays": [{"$ifNull": ["$hist", []]}, ["$$new.n"]]}}},
        {"$unset": "junk"},
        {"$project": {"n": 1, "hist": 1, "seen.by": "$$new.src"}},
    )
    st = stage(mongo_db.name, when_matched=pipeline)
    run(make_sink(mongodb_uri, st, mongo_db), [[{"_id": 1, "n": 2, "src": "a"}, {"_id": 2, "n": 1, "src": "b"}]])
    assert contents(coll) == [
        {"_id": 1, "n": 3, "hist": [1, 2], "seen": {"by": "a"}},
        {"_id": 2, "n": 6, "hist": [1], "seen": {"by": "b"}},
    ]
    st = stage(mongo_db.name, when_matched=({"$replaceWith": {"$mergeObjects": ["$$ROOT", "$$new", {"k": "v"}]}},))
    run(make_sink(mongodb_uri, st, mongo_db), [[{"_id": 2, "src": "c"}]])
    assert coll.find_one({"_id": 2}) == {"_id": 2, "n": 6, "hist": [1], "seen": {"by": "b"}, "src": "c", "k": "v"}


def test_whenmatched_pipeline_failure_goes_to_the_dlq(mongodb_uri: str, mongo_db: Any) -> None:
    mongo_db["c"].insert_many([{"_id": 1, "n": 1}, {"_id": 2, "n": 2}])
    st = stage(mongo_db.name, when_matched=({"$replaceWith": "$$new.inner"},))
    run(make_sink(mongodb_uri, st, mongo_db), [[{"_id": 1, "inner": {"n": 9}}, {"_id": 2, "inner": 4}]])
    assert contents(mongo_db["c"]) == [{"_id": 1, "n": 9}, {"_id": 2, "n": 2}]
    assert dlq_entries(mongo_db) == [(
        "Failed to apply $merge whenMatched pipeline: $replaceWith: 'replacement document' must evaluate to an object, but resulting value was: int 4",
        {"_id": 2, "inner": 4},
    )]


def test_whenmatched_pipeline_unsupported_stage_is_a_create_time_error(mongodb_uri: str) -> None:
    st = stage("db", when_matched=({"$set": {"a": 1}}, {"$group": {"_id": None}}))
    with pytest.raises(TranslateError) as ei:
        merge_sink(registry(mongodb_uri), st)
    assert str(ei.value) == (
        "pipeline[3].$merge.whenMatched[1].$group: stage '$group' is not supported in a $merge "
        "whenMatched pipeline; supported: $set, $addFields, $unset, $project, $replaceWith, $replaceRoot"
    )
    with pytest.raises(TranslateError) as ei:
        merge_sink(registry(mongodb_uri), stage("db", when_matched=({"$set": {"a": "$$old"}},)))
    assert str(ei.value).startswith("pipeline[3].$merge.whenMatched[0].$set.a: use of undefined variable '$$old'")


# ---- dynamic db / coll -------------------------------------------------------------------------


def test_dynamic_db_and_coll(mongodb_uri: str, mongo_db: Any) -> None:
    other = f"{mongo_db.name}_b"
    client: MongoClient[Doc] = MongoClient(mongodb_uri)
    try:
        st = stage({"$concat": [mongo_db.name, "$suffix"]}, coll={"$toLower": "$kind"})
        docs = [
            {"_id": 1, "suffix": "", "kind": "Alpha"},
            {"_id": 2, "suffix": "_b", "kind": "beta"},
            {"_id": 3, "suffix": "", "kind": 7},  # $toLower of a number is "7": a string
            {"_id": 4, "suffix": "", "kind": None},  # null -> "" -> invalid name
            {"_id": 5, "suffix": 5, "kind": "x"},  # $concat of a number fails
        ]
        sink = run(make_sink(mongodb_uri, st, mongo_db), [docs])
        assert contents(mongo_db["alpha"]) == [docs[0]]
        assert contents(client[other]["beta"]) == [docs[1]]
        assert contents(mongo_db["7"]) == [docs[2]]
        reasons = dict((d["_id"], r) for r, d in dlq_entries(mongo_db))
        assert reasons[4] == "$merge into.coll evaluated to an invalid name '': it is empty"
        assert reasons[5].startswith("Failed to evaluate $merge into.db: $concat")
        assert sink.dlq_count == 2 and sink.written == 3
    finally:
        client.drop_database(other)
        client.close()


def test_dynamic_coll_non_string_goes_to_the_dlq(mongodb_uri: str, mongo_db: Any) -> None:
    st = stage(mongo_db.name, coll="$target")
    docs: list[Doc] = [{"_id": 1, "target": "ok"}, {"_id": 2, "target": 42}, {"_id": 3}, {"_id": 4, "target": {"a": 1}}]
    run(make_sink(mongodb_uri, st, mongo_db), [docs])
    assert contents(mongo_db["ok"]) == [docs[0]]
    assert dlq_entries(mongo_db) == sorted([
        ("$merge into.coll must evaluate to a string, but it evaluated to int", docs[1]),
        ("$merge into.coll must evaluate to a string, but it evaluated to missing", docs[2]),
        ("$merge into.coll must evaluate to a string, but it evaluated to dict", docs[3]),
    ], key=repr)


def test_constant_non_string_coll_is_a_create_time_error(mongodb_uri: str) -> None:
    with pytest.raises(TranslateError) as ei:
        merge_sink(registry(mongodb_uri), stage("db", coll={"$literal": 3}))
    assert str(ei.value) == "pipeline[3].$merge.into.coll: expected a string or an expression, got int"
    with pytest.raises(TranslateError) as ei:
        merge_sink(registry(mongodb_uri), stage("a.b"))
    assert str(ei.value) == "pipeline[3].$merge.into.db: invalid database name 'a.b': it contains '.'"


def test_unknown_or_wrong_kind_of_connection(mongodb_uri: str) -> None:
    reg = ConnectionRegistry({"k": Connection(name="k", type="kafka", bootstrap_servers="h:1")})
    with pytest.raises(TranslateError) as ei:
        merge_sink(reg, stage("db", conn="k"))
    assert str(ei.value) == (
        "pipeline[3].$merge.into.connectionName: connection 'k' is of type 'kafka'; "
        "a MongoDB connection (type 'atlas' or 'mongodb') is needed"
    )
    with pytest.raises(TranslateError) as ei:
        merge_sink(reg, stage("db", conn="nope"))
    assert str(ei.value) == (
        "pipeline[3].$merge.into.connectionName: unknown connection 'nope'; known connections: k, sample_stream_solar"
    )


# ---- permanent errors -------------------------------------------------------------------------


@pytest.mark.parametrize("when_matched", ["replace", "merge", "keepExisting", "fail"])
def test_server_rejected_document_goes_to_the_dlq_and_the_rest_is_written(
    mongodb_uri: str, mongo_db: Any, when_matched: str
) -> None:
    """An array _id is refused by the server (MongoDB and FerretDB alike): that document goes
    to the DLQ with the server's message; the documents around it are written."""
    st = stage(mongo_db.name, on=("k",), when_matched=when_matched)
    batch: list[Doc] = [{"_id": 1, "k": 1}, {"_id": [1, 2], "k": 2}, {"_id": 3, "k": 3}, {"_id": 4, "k": 4}]
    sink = run(make_sink(mongodb_uri, st, mongo_db), [batch])
    assert contents(mongo_db["c"]) == [batch[0], batch[2], batch[3]]
    assert dlq_entries(mongo_db) == [("$merge write error: The '_id' value cannot be of type array", batch[1])]
    assert sink.written == 3 and sink.dlq_count == 1


def test_unencodable_document_goes_to_the_dlq(mongodb_uri: str, mongo_db: Any) -> None:
    st = stage(mongo_db.name, when_matched="replace")
    batch: list[Doc] = [{"_id": 1}, {"_id": 2, "bad": {1, 2}}, {"_id": 3}]
    sink = run(make_sink(mongodb_uri, st, mongo_db), [batch])
    assert contents(mongo_db["c"]) == [{"_id": 1}, {"_id": 3}]
    assert sink.written == 2 and sink.dlq_count == 1
    # The DLQ document holds the same unencodable value: best effort, logged and counted as lost.
    assert mongo_db["dlq"].count_documents({}) == 0


def test_duplicate_key_error_goes_to_the_dlq_with_the_rest_written(mongodb_uri: str, mongo_db: Any) -> None:
    coll = mongo_db["c"]
    coll.insert_many([{"_id": 2, "v": "old"}, {"_id": 4, "v": "old"}])
    st = stage(mongo_db.name, when_matched="fail")
    batch = [{"_id": i, "v": "new"} for i in range(1, 6)]
    sink = run(make_sink(mongodb_uri, st, mongo_db, batch_size=3), [batch])
    assert contents(coll) == [
        {"_id": 1, "v": "new"}, {"_id": 2, "v": "old"}, {"_id": 3, "v": "new"}, {"_id": 4, "v": "old"}, {"_id": 5, "v": "new"},
    ]
    entries = dlq_entries(mongo_db)
    assert [d for _, d in entries] == [{"_id": 2, "v": "new"}, {"_id": 4, "v": "new"}]
    assert all("duplicate key" in r.lower() for r, _ in entries)
    assert sink.written == 3 and sink.dlq_count == 2


# ---- batching and the flush timer ------------------------------------------------------------


class _HoldOpen(StatelessSourcePartition[list[Doc]]):
    """Emits its batches, then stays open (no items) until ``release`` is set."""

    def __init__(self, batches: list[list[Doc]], release: threading.Event) -> None:
        self.batches = list(batches)
        self.release = release

    def next_batch(self) -> list[list[Doc]]:
        if self.batches:
            return [self.batches.pop(0)]
        if self.release.is_set():
            raise StopIteration
        time.sleep(0.01)
        return []


class HoldOpenSource(DynamicSource[list[Doc]]):
    def __init__(self, batches: list[list[Doc]], release: threading.Event) -> None:
        self.batches = batches
        self.release = release

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _HoldOpen:
        return _HoldOpen(self.batches, self.release)


def test_partial_batch_is_flushed_by_the_timer(mongodb_uri: str, mongo_db: Any) -> None:
    release = threading.Event()
    st = stage(mongo_db.name, when_matched="replace")
    sink = make_sink(mongodb_uri, st, mongo_db, batch_size=1000, flush_interval_s=0.3)
    flow = Dataflow("timer")
    op.output("out", op.input("in", flow, HoldOpenSource([[{"_id": 1}, {"_id": 2}], [{"_id": 3}]], release)), sink)
    t0 = time.monotonic()
    runner = threading.Thread(target=run_main, args=(flow,), daemon=True)
    runner.start()
    try:
        while mongo_db["c"].count_documents({}) < 3 and time.monotonic() - t0 < 10:
            time.sleep(0.02)
        elapsed = time.monotonic() - t0
        # Written while the flow is still open, i.e. by the timer, not at close.
        assert runner.is_alive()
        assert contents(mongo_db["c"]) == [{"_id": 1}, {"_id": 2}, {"_id": 3}]
        assert 0.25 <= elapsed < 5, elapsed
    finally:
        release.set()
        runner.join(10)
    assert not runner.is_alive()


def test_full_batches_are_written_without_waiting_for_the_timer(mongodb_uri: str, mongo_db: Any) -> None:
    release = threading.Event()
    st = stage(mongo_db.name, when_matched="replace")
    sink = make_sink(mongodb_uri, st, mongo_db, batch_size=4, flush_interval_s=60)
    flow = Dataflow("full")
    op.output("out", op.input("in", flow, HoldOpenSource([[{"_id": i} for i in range(10)]], release)), sink)
    runner = threading.Thread(target=run_main, args=(flow,), daemon=True)
    runner.start()
    try:
        t0 = time.monotonic()
        while mongo_db["c"].count_documents({}) < 8 and time.monotonic() - t0 < 10:
            time.sleep(0.02)
        time.sleep(0.3)
        assert mongo_db["c"].count_documents({}) == 8  # two full batches; 2 wait for timer/close
    finally:
        release.set()
        runner.join(10)
    assert mongo_db["c"].count_documents({}) == 10  # close() flushes the rest


# ---- an unreachable server at start ----------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_server_fails_fast_with_the_documented_message() -> None:
    port = _closed_port()
    uri = f"mongodb://alice:s3cret@127.0.0.1:{port}/?authSource=admin"
    reg = ConnectionRegistry({"MyOutputGoesHere": Connection(name="MyOutputGoesHere", type="mongodb", uri=uri)})
    sink = merge_sink(reg, stage("db", conn="MyOutputGoesHere"))
    sink.server_timeout_ms = 1000
    expected = (
        f"pipeline[3].$merge: cannot reach MongoDB for $merge connection 'MyOutputGoesHere' at "
        f"mongodb://alice:***@127.0.0.1:{port}/?authSource=admin (ServerSelectionTimeoutError); "
        f"start one with scripts/services.sh up mongodb or point the connection at a running server"
    )
    t0 = time.monotonic()
    with pytest.raises(MergeUnreachableError) as ei:
        sink.connect()
    assert str(ei.value) == expected
    assert "s3cret" not in str(ei.value)
    # Through a dataflow, the same message stops it (no retry loop at start).
    flow = Dataflow("unreachable")
    op.output("out", op.input("in", flow, TestingSource([[{"_id": 1}]])), sink)
    with pytest.raises(Exception) as ei2:
        run_main(flow)
    chain: list[BaseException] = []
    exc: BaseException | None = ei2.value
    while exc is not None and len(chain) < 10:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    assert [str(e) for e in chain if isinstance(e, MergeUnreachableError)] == [expected]
    assert time.monotonic() - t0 < 10


# ---- a server outage while writing -------------------------------------------------------------


class _Paced(StatelessSourcePartition[list[Doc]]):
    """One batch per ``gap_s``; after ``hold_after`` batches it waits for ``gate`` (the test
    sets it once the outage has begun, so later batches are written during the outage
    however slow the machine is)."""

    def __init__(self, batches: list[list[Doc]], gap_s: float, gate: threading.Event | None, hold_after: int) -> None:
        self.batches = list(batches)
        self.gap_s = gap_s
        self.next_at = time.monotonic()
        self.gate, self.left_before_gate = gate, hold_after

    def next_batch(self) -> list[list[Doc]]:
        if not self.batches:
            raise StopIteration
        if self.gate is not None and self.left_before_gate <= 0 and not self.gate.is_set():
            time.sleep(0.005)
            return []
        if time.monotonic() < self.next_at:
            time.sleep(0.005)
            return []
        self.next_at = time.monotonic() + self.gap_s
        self.left_before_gate -= 1
        return [self.batches.pop(0)]


class PacedSource(DynamicSource[list[Doc]]):
    def __init__(self, batches: list[list[Doc]], gap_s: float, gate: threading.Event | None = None, hold_after: int = 0) -> None:
        self.batches = batches
        self.gap_s = gap_s
        self.gate, self.hold_after = gate, hold_after

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Paced:
        return _Paced(self.batches, self.gap_s, self.gate, self.hold_after)


@pytest.mark.slow
def test_outage_mid_stream_loses_nothing_and_duplicates_nothing(tmp_path: Path, mongodb_uri: str) -> None:
    """Stop FerretDB with scripts/services.sh while a flow writes, restart it: every window
    document is there exactly once. A private FerretDB (own port) keeps other tests' server up."""
    with private_ferretdb(tmp_path) as ferretdb:
        _outage_mid_stream(ferretdb)


def _outage_mid_stream(ferretdb: PrivateFerretDB) -> None:
    uri = ferretdb.uri
    client: MongoClient[Doc] = MongoClient(uri, serverSelectionTimeoutMS=5000)
    try:
        assert ferretdb.services_env.read_text() == f"MONGODB_URI={uri}\n"
        db = client["outage_test"]
        client.drop_database("outage_test")
        # Window results keyed by (group, window start), not _id: a duplicate would show.
        windows = [[{"group": g, "start": b, "avg": b * 10 + g} for g in range(10)] for b in range(60)]
        replays = windows[10:15]  # an at-least-once source replays some windows
        batches = windows[:30] + replays + windows[30:]
        reg = ConnectionRegistry({"out": Connection(name="out", type="mongodb", uri=uri)})
        sink = merge_sink(reg, stage("outage_test", "w", on=("group", "start"), when_matched="replace"), batch_size=10)
        sink.backoff_max_s = 0.5
        flow = Dataflow("outage")
        outage = threading.Event()
        op.output("out", op.input("in", flow, PacedSource(batches, 0.05, outage, hold_after=20)), sink)
        errors: list[BaseException] = []

        def go() -> None:
            try:
                run_main(flow)
            except BaseException as exc:
                errors.append(exc)

        runner = threading.Thread(target=go, daemon=True)
        runner.start()
        t0 = time.monotonic()
        while db["w"].count_documents({}) < 50 and time.monotonic() - t0 < 20:
            time.sleep(0.02)
        ferretdb.down()
        outage.set()
        time.sleep(2.0)  # the flow keeps producing; the sink retries
        assert runner.is_alive()
        ferretdb.up()
        runner.join(120)
        assert not runner.is_alive() and errors == []
        assert sink.retries > 0  # the outage was really hit
        got = list(db["w"].find({}, {"_id": 0}))
        assert len(got) == 600
        assert sorted(got, key=lambda d: (d["group"], d["start"])) == sorted(
            (d for b in windows for d in b), key=lambda d: (d["group"], d["start"])
        )
        assert sink.dlq_count == 0 and sink.dlq_dropped == 0
    finally:
        client.close()


def test_whenmatched_pipeline_reads_let_variables(mongodb_uri: str, mongo_db: Any) -> None:
    """``let`` variables are evaluated on the incoming document; with ``let``, ``$$new``
    exists only when ``let`` binds it to ``$$ROOT`` (MongoDB's $merge ``let``)."""
    coll = mongo_db["c"]
    coll.insert_many([{"_id": 1, "n": 1}, {"_id": 2, "n": 5}])
    st = stage(
        mongo_db.name,
        when_matched=({"$set": {"n": {"$add": ["$n", "$$inc"]}, "by": "$$who", "src": "$$new.src"}},),
        let={"inc": "$n", "who": {"$toUpper": "$src"}, "new": "$$ROOT"},
    )
    run(make_sink(mongodb_uri, st, mongo_db), [[{"_id": 1, "n": 2, "src": "a"}, {"_id": 2, "n": 1, "src": "b"}]])
    assert contents(coll) == [{"_id": 1, "n": 3, "by": "A", "src": "a"}, {"_id": 2, "n": 6, "by": "B", "src": "b"}]


def test_whenmatched_let_failure_goes_to_the_dlq(mongodb_uri: str, mongo_db: Any) -> None:
    mongo_db["c"].insert_many([{"_id": 1, "n": 1}, {"_id": 2, "n": 2}])
    st = stage(mongo_db.name, when_matched=({"$set": {"n": "$$q"}},), let={"q": {"$divide": [10, "$d"]}})
    run(make_sink(mongodb_uri, st, mongo_db), [[{"_id": 1, "d": 5}, {"_id": 2, "d": 0}]])
    assert contents(mongo_db["c"]) == [{"_id": 1, "n": 2.0}, {"_id": 2, "n": 2}]
    assert dlq_entries(mongo_db) == [("Failed to apply $merge whenMatched pipeline: $merge let variable 'q': $divide: can't $divide by zero", {"_id": 2, "d": 0})]


def test_whenmatched_let_hides_new(mongodb_uri: str, mongo_db: Any) -> None:
    st = stage(mongo_db.name, when_matched=({"$set": {"a": "$$new.a"}},), let={"x": 1})
    with pytest.raises(TranslateError) as ei:
        make_sink(mongodb_uri, st, mongo_db)
    assert str(ei.value).startswith("pipeline[3].$merge.whenMatched[0].$set.a: use of undefined variable '$$new'")


def test_whenmatched_and_whennotmatched_as_expressions(mongodb_uri: str, mongo_db: Any) -> None:
    """ASP's $merge takes expressions for both modes, evaluated per document; a value
    outside the allowed names sends that document to the DLQ."""
    coll = mongo_db["c"]
    coll.insert_many([{"_id": 1, "a": 1, "b": 1}, {"_id": 2, "a": 2, "b": 2}, {"_id": 3, "a": 3}, {"_id": 4, "a": 4}])
    st = stage(
        mongo_db.name,
        when_matched="$how",
        when_not_matched={"$cond": [{"$eq": ["$keep", True]}, "insert", "discard"]},
    )
    incoming = [
        {"_id": 1, "a": 10, "how": "replace"},
        {"_id": 2, "a": 20, "how": "keepExisting"},
        {"_id": 3, "c": 30, "how": "merge"},
        {"_id": 4, "how": "delete"},
        {"_id": 5, "how": "merge", "keep": True},  # not matched: inserted
        {"_id": 6, "how": "merge", "keep": False},  # not matched: discarded
        {"_id": 7, "how": "upsert", "keep": True},
        {"_id": 8, "keep": True},
    ]
    run(make_sink(mongodb_uri, st, mongo_db), [incoming])
    assert contents(coll) == [
        {"_id": 1, "a": 10, "how": "replace"},
        {"_id": 2, "a": 2, "b": 2},
        {"_id": 3, "a": 3, "c": 30, "how": "merge"},
        {"_id": 5, "how": "merge", "keep": True},
    ]
    allowed = "'merge', 'replace', 'keepExisting', 'delete'"
    assert dlq_entries(mongo_db) == [
        (f"$merge whenMatched must evaluate to one of {allowed}, but resulting value was: missing", {"_id": 8, "keep": True}),
        (f"$merge whenMatched must evaluate to one of {allowed}, but resulting value was: string 'upsert'",
         {"_id": 7, "how": "upsert", "keep": True}),
    ]
