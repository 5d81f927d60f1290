"""$lookup against the real FerretDB: the three syntaxes, nested $lookup, windows,
create-time errors, one $in query per batch, DLQ for failing let expressions."""

from __future__ import annotations

import gc
import threading
import warnings
from typing import Any

import pytest
from pymongo import MongoClient, monitoring

from tests.translator.enrich.enrichhelpers import make_registry
from translator.enrich.lookup import LookupServer
from translator.errors import TranslateError
from translator.testing import run_pipeline

pytestmark = pytest.mark.mongodb






class FindCounter(monitoring.CommandListener):
    """Counts the find commands mqlflow's lookup client sends (command monitoring)."""

    def __init__(self) -> None:
        self.finds: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "find" and str(event.command.get("find", "")).startswith("devices"):
            with self.lock:
                self.finds.append(dict(event.command))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


@pytest.fixture(scope="module")
def counter() -> FindCounter:
    c = FindCounter()
    monitoring.register(c)  # applies to clients created afterwards (the lookup's own)
    return c


def _src(*docs: dict[str, Any]) -> dict[str, Any]:
    return {"$source": {"documents": list(docs)}}


def _strip(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in d.items() if k not in ("_ts", "_stream_meta")} for d in docs]


DEVICES = [
    {"_id": "d1", "site": "north", "model": "X", "tags": ["a", "b"]},
    {"_id": "d2", "site": "south", "model": "Y", "tags": ["b"]},
    {"_id": "d3", "site": "north", "model": "Z"},
    {"_id": "d4", "model": "nosite"},
]


def test_equality_lookup_one_in_query_per_batch(mongodb_uri: str, db: Any, counter: FindCounter) -> None:
    db.devices.insert_many(DEVICES)
    events = [{"_id": i, "dev": d} for i, d in enumerate(["d1", "d2", "d1", "zz", "d3", "d2"])]
    events.append({"_id": 6})  # missing local field matches a foreign doc without the field? no: d4 has _id
    before = len(counter.finds)
    r = run_pipeline(
        [_src(*events),
         {"$lookup": {"from": {"connectionName": "meta", "db": db.name, "coll": "devices"},
                      "localField": "dev", "foreignField": "_id", "as": "device"}},
         {"$project": {"_id": 1, "device": 1}}],
        registry=make_registry(mongodb_uri),
    )
    by_id = {d["_id"]: d["device"] for d in r.output}
    assert by_id[0] == [DEVICES[0]] and by_id[2] == [DEVICES[0]]
    assert by_id[1] == [DEVICES[1]] and by_id[5] == [DEVICES[1]]
    assert by_id[3] == [] and by_id[4] == [DEVICES[2]] and by_id[6] == []
    assert r.dlq == []
    finds = counter.finds[before:]
    assert len(finds) == 1  # the whole batch: one $in with the distinct keys
    assert sorted(map(str, finds[0]["filter"]["_id"]["$in"])) == ["None", "d1", "d2", "d3", "zz"]


def test_null_and_missing_match_and_arrays_match_by_element(mongodb_uri: str, db: Any) -> None:
    db.devices.insert_many(DEVICES)
    r = run_pipeline(
        [_src({"_id": 1, "site": None}, {"_id": 2, "sites": ["south", "north"]}, {"_id": 3, "tag": "a"}),
         {"$lookup": {"from": {"connectionName": "meta", "db": db.name, "coll": "devices"},
                      "localField": "site", "foreignField": "site", "as": "bySite"}},
         {"$lookup": {"from": {"connectionName": "meta", "db": db.name, "coll": "devices"},
                      "localField": "sites", "foreignField": "site", "as": "bySites"}},
         {"$lookup": {"from": {"connectionName": "meta", "db": db.name, "coll": "devices"},
                      "localField": "tag", "foreignField": "tags", "as": "byTag"}},
         {"$project": {"_id": 1, "s": "$bySite._id", "ss": "$bySites._id", "t": "$byTag._id"}}],
        registry=make_registry(mongodb_uri),
    )
    out = {d["_id"]: d for d in r.output}
    assert out[1]["s"] == ["d4"]  # null matches a missing foreign field
    assert sorted(out[2]["ss"]) == ["d1", "d2", "d3"]
    assert out[3]["t"] == ["d1"]
    assert out[3]["s"] == ["d4"]  # a missing local field is null too


def test_let_pipeline_form_and_equality_plus_pipeline(mongodb_uri: str, db: Any) -> None:
    db.devices.insert_many(DEVICES)
    db.readings.insert_many([
        {"_id": 1, "dev": "d1", "v": 5}, {"_id": 2, "dev": "d1", "v": 50}, {"_id": 3, "dev": "d2", "v": 7},
    ])
    frm = {"connectionName": "meta", "db": db.name, "coll": "readings"}
    r = run_pipeline(
        [_src({"_id": "e1", "dev": "d1", "min": 10}, {"_id": "e2", "dev": "d2", "min": 1}, {"_id": "e3", "dev": "d9", "min": 0}),
         {"$lookup": {"from": frm, "let": {"d": "$dev", "lo": "$min"},
                      "pipeline": [
                          {"$match": {"$expr": {"$and": [{"$eq": ["$dev", "$$d"]}, {"$gte": ["$v", "$$lo"]}]}}},
                          {"$project": {"_id": 0, "v": 1, "lo": "$$lo"}}],
                      "as": "big"}},
         {"$lookup": {"from": frm, "localField": "dev", "foreignField": "dev",
                      "pipeline": [{"$sort": {"v": -1}}, {"$limit": 1}, {"$project": {"_id": 1}}],
                      "as": "top"}},
         {"$project": {"big": 1, "top": 1}}],
        registry=make_registry(mongodb_uri),
    )
    assert r.output == [
        {"_id": "e1", "big": [{"v": 50, "lo": 10}], "top": [{"_id": 2}]},
        {"_id": "e2", "big": [{"v": 7, "lo": 1}], "top": [{"_id": 3}]},
        {"_id": "e3", "big": [], "top": []},
    ]


def test_leading_match_the_server_rejects_is_applied_in_mqlflow(mongodb_uri: str, db: Any) -> None:
    db.devices.insert_many(DEVICES)
    r = run_pipeline(
        [_src({"_id": 1, "site": "north"}),
         {"$lookup": {"from": {"connectionName": "meta", "db": db.name, "coll": "devices"},
                      "localField": "site", "foreignField": "site",
                      # FerretDB v1 has no $jsonSchema in queries
                      "pipeline": [{"$match": {"$jsonSchema": {"required": ["tags"]}}}, {"$project": {"_id": 1}}],
                      "as": "d"}},
         {"$project": {"d": 1}}],
        registry=make_registry(mongodb_uri),
    )
    assert r.output == [{"_id": 1, "d": [{"_id": "d1"}]}]
    assert r.dlq == []


def test_nested_lookup_uses_the_same_connection(mongodb_uri: str, db: Any) -> None:
    db.devices.insert_many(DEVICES)
    db.sites.insert_many([{"_id": "north", "country": "NO"}, {"_id": "south", "country": "ZA"}])
    r = run_pipeline(
        [_src({"_id": 1, "dev": "d2"}),
         {"$lookup": {"from": {"connectionName": "meta", "db": db.name, "coll": "devices"},
                      "let": {"dv": "$dev"},
                      "pipeline": [
                          {"$match": {"$expr": {"$eq": ["$_id", "$$dv"]}}},
                          {"$lookup": {"from": "sites", "localField": "site", "foreignField": "_id", "as": "siteDoc"}},
                          {"$project": {"_id": 1, "country": {"$first": "$siteDoc.country"}}}],
                      "as": "d"}},
         {"$project": {"d": 1}}],
        registry=make_registry(mongodb_uri),
    )
    assert r.output == [{"_id": 1, "d": [{"_id": "d2", "country": "ZA"}]}]


def test_let_failure_goes_to_the_dlq(mongodb_uri: str, db: Any) -> None:
    db.devices.insert_many(DEVICES)
    r = run_pipeline(
        [_src({"_id": 1, "dev": "d1", "n": 2}, {"_id": 2, "dev": "d2", "n": "x"}),
         {"$lookup": {"from": {"connectionName": "meta", "db": db.name, "coll": "devices"},
                      "let": {"half": {"$divide": ["$n", 2]}, "dv": "$dev"},
                      "pipeline": [{"$match": {"$expr": {"$eq": ["$_id", "$$dv"]}}}, {"$project": {"_id": 1, "h": "$$half"}}],
                      "as": "d"}},
         {"$project": {"d": 1}}],
        registry=make_registry(mongodb_uri),
    )
    assert r.output == [{"_id": 1, "d": [{"_id": "d1", "h": 1.0}]}]
    assert [d["doc"]["_id"] for d in r.dlq] == [2]
    assert r.dlq[0]["errInfo"]["reason"].startswith(
        "Failed to process input document in $lookup stage (pipeline[1].$lookup.let): $divide"
    )


def test_lookup_inside_a_window(mongodb_uri: str, db: Any) -> None:
    db.devices.insert_many(DEVICES)
    events = [{"_id": i, "dev": d, "ts": f"2024-01-01T00:00:0{i}Z"} for i, d in enumerate(["d1", "d2", "d3", "d1"])]
    r = run_pipeline(
        [{"$source": {"documents": events, "timeField": {"$dateFromString": {"dateString": "$ts"}}}},
         {"$tumblingWindow": {"interval": {"size": 1, "unit": "minute"}, "pipeline": [
             {"$lookup": {"from": {"connectionName": "meta", "db": db.name, "coll": "devices"},
                          "localField": "dev", "foreignField": "_id", "as": "d"}},
             {"$group": {"_id": {"$first": "$d.site"}, "n": {"$sum": 1}}},
             {"$sort": {"_id": 1}}]}}],
        registry=make_registry(mongodb_uri),
    )
    assert [(d["_id"], d["n"]) for d in r.output] == [("north", 3), ("south", 1)]


@pytest.mark.parametrize(
    ("spec", "path", "message"),
    [
        ({"from": {"connectionName": "kafka1", "db": "x", "coll": "y"}, "localField": "a", "foreignField": "b", "as": "c"},
         "pipeline[1].$lookup.from.connectionName",
         "connection 'kafka1' is of type 'kafka'; a MongoDB connection (type 'atlas' or 'mongodb') is needed"),
        ({"from": {"connectionName": "sample_stream_solar", "db": "x", "coll": "y"}, "localField": "a", "foreignField": "b", "as": "c"},
         "pipeline[1].$lookup.from.connectionName",
         "connection 'sample_stream_solar' is of type 'sample'; a MongoDB connection (type 'atlas' or 'mongodb') is needed"),
        ({"from": {"connectionName": "meta", "db": "x", "coll": "y"}, "localField": "a", "foreignField": "b", "as": "c", "bogus": 1},
         "pipeline[1].$lookup.bogus",
         "unknown field 'bogus'; allowed: as, foreignField, from, let, localField, parallelism, pipeline"),
        ({"from": "y", "localField": "a", "foreignField": "b", "as": "c"},
         "pipeline[1].$lookup.from",
         "in stream processing 'from' is {connectionName, db, coll} naming a MongoDB connection"),
        ({"from": {"connectionName": "meta", "db": "x", "coll": "y"}, "localField": "a", "as": "c"},
         "pipeline[1].$lookup", "'localField' and 'foreignField' go together: missing 'foreignField'"),
        ({"from": {"connectionName": "meta", "db": "x", "coll": "y"}, "as": "c", "pipeline": [{"$group": {"_id": 1}}]},
         "pipeline[1].$lookup.pipeline[0].$group",
         "stage '$group' is not supported inside a $lookup pipeline by mqlflow; supported: $addFields, $count, "
         "$limit, $lookup, $match, $project, $redact, $replaceRoot, $replaceWith, $set, $sort, $unset, $unwind"),
        ({"from": {"connectionName": "meta", "db": "x", "coll": "y"}, "as": "c", "let": {"v": "$a"},
          "pipeline": [{"$project": {"x": {"$nope": "$$v"}}}]},
         "pipeline[1].$lookup.pipeline[0].$project.x.$nope", None),
        ({"from": {"connectionName": "meta", "db": "x", "coll": "y"}, "localField": "a", "foreignField": "b", "as": "c",
          "pipeline": [{"$lookup": {"from": {"connectionName": "meta", "db": "x", "coll": "z"}, "localField": "a",
                                    "foreignField": "b", "as": "d"}}]},
         "pipeline[1].$lookup.pipeline[0].$lookup.from", None),
        ({"from": {"connectionName": "meta", "db": "a/b", "coll": "y"}, "localField": "a", "foreignField": "b", "as": "c"},
         "pipeline[1].$lookup.from.db", "the database name 'a/b' contains '/'"),
        ({"from": {"connectionName": "meta", "db": "x", "coll": "y"}, "as": "c", "pipeline": [
            {"$lookup": {"from": "system.users", "localField": "a", "foreignField": "b", "as": "d"}}]},
         "pipeline[1].$lookup.pipeline[0].$lookup.from", "the collection name 'system.users' names a system collection"),
    ],
)
def test_create_time_errors(spec: dict[str, Any], path: str, message: str | None) -> None:
    with pytest.raises(TranslateError) as e:
        run_pipeline([_src({"a": 1}), {"$lookup": spec}], registry=make_registry("mongodb://127.0.0.1:1/"))
    assert e.value.path == path
    if message is not None:
        assert e.value.message == message


# ---- a server outage: retried with backoff, nothing lost ------------------------------------


@pytest.mark.slow
def test_server_down_then_up_retries_and_loses_nothing(own_ferretdb: Any, mongodb_uri: str) -> None:
    """A private FerretDB (own port): filled, stopped, the flow starts and retries, the
    server comes back, every document gets its lookup."""
    import time

    from translator.enrich import lookup

    uri = own_ferretdb.uri
    client: MongoClient[dict[str, Any]] = MongoClient(uri, serverSelectionTimeoutMS=5000)
    client["enrich_outage"].devices.insert_many([{"_id": f"d{i}", "n": i} for i in range(50)])
    client.close()
    own_ferretdb.down()
    retries0 = lookup.STATS["retries"]
    result: list[Any] = []

    def go() -> None:
        result.append(run_pipeline(
            [_src(*({"_id": i, "dev": f"d{i % 50}"} for i in range(200))),
             {"$lookup": {"from": {"connectionName": "meta", "db": "enrich_outage", "coll": "devices"},
                          "localField": "dev", "foreignField": "_id", "as": "d"}},
             {"$project": {"n": {"$first": "$d.n"}}}],
            registry=make_registry(uri),
        ))

    runner = threading.Thread(target=go, daemon=True)
    runner.start()
    # Down for longer than one server-selection timeout (5 s): at least one retry.
    time.sleep(lookup.SERVER_TIMEOUT_MS / 1000 + 2.0)
    assert runner.is_alive() and not result  # waiting for the server, not failing
    own_ferretdb.up()
    runner.join(120)
    assert not runner.is_alive()
    assert lookup.STATS["retries"] > retries0
    (r,) = result
    assert sorted((d["_id"], d["n"]) for d in r.output) == [(i, i % 50) for i in range(200)]
    assert r.dlq == []


def test_parallelism_splits_the_keys_over_concurrent_queries(mongodb_uri: str, db: Any, counter: FindCounter) -> None:
    """``parallelism: 4``: a batch's 20 distinct keys go to the server as four ``$in``
    queries of five; the results are those of one query, in the input's order, and a
    foreign document that several queries return (an array field) is joined once."""
    devices = [{"_id": f"d{i:02}", "n": i, "tags": [f"t{i:02}", f"t{(i + 10) % 20:02}"]} for i in range(20)]
    db.devices.insert_many(devices)
    events = [{"_id": i, "dev": f"d{(i * 7) % 20:02}", "tag": [f"t{i % 20:02}", f"t{(i + 10) % 20:02}"]}
              for i in range(40)]

    def run(par: int, local: str, foreign: str) -> list[dict[str, Any]]:
        before = len(counter.finds)
        r = run_pipeline(
            [_src(*events),
             {"$lookup": {"from": {"connectionName": "meta", "db": db.name, "coll": "devices"},
                          "localField": local, "foreignField": foreign, "as": "j", "parallelism": par}},
             {"$project": {"_id": 1, "j": "$j._id"}}],
            registry=make_registry(mongodb_uri),
        )
        assert r.dlq == []
        finds = counter.finds[before:]
        sizes = sorted(len(f["filter"][foreign]["$in"]) for f in finds)
        assert sizes == ([5, 5, 5, 5] if par == 4 else [20])
        return r.output

    by_id = run(4, "dev", "_id")
    assert by_id == [{"_id": i, "j": [f"d{(i * 7) % 20:02}"]} for i in range(40)]
    assert by_id == run(1, "dev", "_id")
    by_tag = run(4, "tag", "tags")
    # t(i) and t(i+10) are the tags of documents i % 20 and (i + 10) % 20, each joined once
    assert [sorted(d["j"]) for d in by_tag] == [sorted({f"d{i % 20:02}", f"d{(i + 10) % 20:02}"}) for i in range(40)]
    assert [d["_id"] for d in by_tag] == list(range(40))
    assert [sorted(d["j"]) for d in run(1, "tag", "tags")] == [sorted(d["j"]) for d in by_tag]


def _unclosed_lookup_clients(seen: list[warnings.WarningMessage]) -> int:
    """pymongo's ResourceWarning for a collected, unclosed client, with the stack that
    opened it: those opened by the lookup module."""
    return sum(
        1 for w in seen
        if issubclass(w.category, ResourceWarning) and "Unclosed MongoClient" in str(w.message)
        and "translator/enrich/lookup.py" in str(w.message)
    )


def test_a_finished_flow_closes_its_lookup_clients_and_threads(mongodb_uri: str, db: Any) -> None:
    db.devices.insert_many(DEVICES)
    db.sites.insert_many([{"_id": "north"}, {"_id": "south"}])
    frm = {"connectionName": "meta", "db": db.name, "coll": "devices"}
    pipeline = [
        _src({"_id": 1, "dev": "d1"}, {"_id": 2, "dev": "d2"}),
        {"$lookup": {"from": frm, "localField": "dev", "foreignField": "_id", "as": "a", "parallelism": 2}},
        {"$cachedLookup": {"from": frm, "localField": "dev", "foreignField": "_id", "as": "b",
                           "ttl": {"size": 60, "unit": "second"}}},
        {"$lookup": {"from": frm, "let": {"dv": "$dev"},
                     "pipeline": [{"$match": {"$expr": {"$eq": ["$_id", "$$dv"]}}},
                                  {"$lookup": {"from": "sites", "localField": "site", "foreignField": "_id", "as": "s"}}],
                     "as": "c"}},
        {"$project": {"a._id": 1, "b._id": 1, "c.s._id": 1}},
    ]
    gc.collect()  # clients other tests left behind warn now, not below
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always", ResourceWarning)
        r = run_pipeline(pipeline, registry=make_registry(mongodb_uri))
        assert r.output == [
            {"_id": 1, "a": [{"_id": "d1"}], "b": [{"_id": "d1"}], "c": [{"s": [{"_id": "north"}]}]},
            {"_id": 2, "a": [{"_id": "d2"}], "b": [{"_id": "d2"}], "c": [{"s": [{"_id": "south"}]}]},
        ]
        # The parallel $lookup's threads are stopped, not left to the interpreter's exit.
        assert [t.name for t in threading.enumerate() if t.name.startswith("mqlflow-lookup")] == []
        del r  # the result holds the compiled pipeline, and so the stages and their clients
        gc.collect()
        assert _unclosed_lookup_clients(seen) == 0

        # The same check sees a lookup client that is not closed.
        leak = LookupServer(mongodb_uri, db.name, "devices", "leak")
        assert leak.find({"_id": "d1"}) == [DEVICES[0]]
        del leak
        gc.collect()
        assert _unclosed_lookup_clients(seen) == 1
