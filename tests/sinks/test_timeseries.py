"""``$emit`` to a time series collection against the real FerretDB of scripts/services.sh,
built the way the product builds it (``compile_pipeline`` then ``make_sinks``). FerretDB v1
has no time series collections, so these tests also pin the documented fallback: a
plain collection, and a repeated ``_id`` to the DLQ."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from bytewax import operators as op
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSource, run_main

from sinks.timeseries import TimeSeriesSink
from translator.compile import compile_pipeline, make_sinks
from translator.connections import Connection, ConnectionRegistry
from translator.errors import TranslateError
from translator.ir import DlqTarget
from translator.options import ProcessorOptions
from translator.parse import parse_pipeline

pytestmark = pytest.mark.mongodb
Doc = dict[str, Any]
T0 = datetime(2024, 8, 8, 23, 8, 0, tzinfo=UTC)
SRC: Doc = {"$source": {"documents": []}}


def emit(db: Any, coll: Any = "readings", **ts: Any) -> Doc:
    return {"$emit": {"connectionName": "out", "db": db, "coll": coll, "timeseries": {"timeField": "ts", **ts}}}


def sink_for(uri: str, stage: Doc, dlq_db: str) -> TimeSeriesSink:
    reg = ConnectionRegistry({"out": Connection(name="out", type="mongodb", uri=uri)})
    options = ProcessorOptions(name="tsproc", dlq=DlqTarget("out", dlq_db, "dlq"), sink_flush_interval_s=0.05)
    sink, _ = make_sinks(compile_pipeline([SRC, stage], reg, options))
    assert isinstance(sink, TimeSeriesSink)
    return sink


def run(sink: TimeSeriesSink, batches: list[list[Doc]]) -> None:
    flow = Dataflow("ts_test")
    op.output("out", op.input("in", flow, TestingSource(batches)), sink)
    run_main(flow)


def at(s: int) -> datetime:
    return T0 + timedelta(seconds=s)


def test_documents_are_inserted_and_bad_time_fields_go_to_the_dlq(
    mongodb_uri: str, mongo_db: Any, caplog: pytest.LogCaptureFixture
) -> None:
    sink = sink_for(mongodb_uri, emit(mongo_db.name, metaField="device", granularity="seconds"), mongo_db.name)
    docs = [
        {"device": "a", "ts": at(0), "v": 1},
        {"device": "b", "ts": at(1), "v": 2},
        {"device": "c", "v": 3},  # no time field
        {"device": "d", "ts": "2024-08-08T23:08:03Z", "v": 4},  # a string, not a date
        {"_id": 7, "device": "e", "ts": at(4), "v": 5},
        {"_id": 7, "device": "e", "ts": at(5), "v": 6},  # a repeated _id: fine in MongoDB, not on FerretDB
    ]
    with caplog.at_level(logging.WARNING, logger="mqlflow.sink"):
        run(sink, [docs[:3], docs[3:]])
    got = sorted(({k: v for k, v in d.items() if k != "_id"} for d in mongo_db["readings"].find()), key=lambda d: d["v"])
    naive = [d.replace(tzinfo=None) for d in (at(0), at(1), at(4))]
    assert got == [
        {"device": "a", "ts": naive[0], "v": 1},
        {"device": "b", "ts": naive[1], "v": 2},
        {"device": "e", "ts": naive[2], "v": 5},
    ]
    reasons = sorted((d["doc"]["v"], d["errInfo"]["reason"]) for d in mongo_db["dlq"].find())
    assert reasons[:2] == [
        (3, "'ts' must be present and contain a valid BSON UTC datetime value"),
        (4, "'ts' must be present and contain a valid BSON UTC datetime value"),
    ]
    assert reasons[2][0] == 6 and reasons[2][1].startswith("$emit write error: E11000 duplicate key error"), reasons
    assert any("has no time series collections" in r.getMessage() and "readings is a plain collection" in r.getMessage()
               for r in caplog.records)


def test_dynamic_collection_names(mongodb_uri: str, mongo_db: Any) -> None:
    sink = sink_for(mongodb_uri, emit(mongo_db.name, {"$concat": ["site_", "$site"]}), mongo_db.name)
    run(sink, [[{"site": "n", "ts": at(0)}, {"site": "s", "ts": at(1)}, {"site": 5, "ts": at(2)}]])
    assert [d["site"] for d in mongo_db["site_n"].find()] == ["n"]
    assert [d["site"] for d in mongo_db["site_s"].find()] == ["s"]
    assert [d["errInfo"]["reason"] for d in mongo_db["dlq"].find()] == [
        "Failed to evaluate $emit coll: $concat only supports strings, not int"
    ]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"connectionName": "out", "db": "d", "coll": "c"}, "pipeline[1].$emit: missing required field 'timeseries'"),
        ({"connectionName": "out", "db": "d", "coll": "c", "timeseries": {}}, "pipeline[1].$emit.timeseries: missing required field 'timeField'"),
        ({"connectionName": "out", "db": "d", "coll": "c", "timeseries": {"timeField": "ts", "granularity": "days"}},
         "pipeline[1].$emit.timeseries.granularity: expected one of seconds, minutes, hours; got 'days'"),
        ({"connectionName": "out", "db": "d", "coll": "c", "timeseries": {"timeField": "ts", "bucket": 1}},
         "pipeline[1].$emit.timeseries.bucket: unknown field 'bucket'; allowed: bucketMaxSpanSeconds, "),
        ({"connectionName": "out", "topic": "t", "db": "d"}, "pipeline[1].$emit.db: 'db' is for $emit to a time series collection, which has no 'topic'"),
        ({"connectionName": "out", "db": 5, "coll": "c", "timeseries": {"timeField": "ts"}}, "pipeline[1].$emit.db: expected a string or an expression, got int"),
    ],
)
def test_time_series_emit_errors(spec: Doc, message: str) -> None:
    with pytest.raises(TranslateError) as e:
        parse_pipeline([SRC, {"$emit": spec}])
    assert str(e.value).startswith(message), str(e.value)


def test_a_kafka_connection_is_refused_for_a_time_series_emit() -> None:
    reg = ConnectionRegistry({"k": Connection(name="k", type="kafka", bootstrap_servers="127.0.0.1:1")})
    with pytest.raises(TranslateError) as e:
        compile_pipeline([SRC, {"$emit": {"connectionName": "k", "db": "d", "coll": "c", "timeseries": {"timeField": "ts"}}}], reg)
    assert str(e.value).startswith("pipeline[1].$emit.connectionName: connection 'k' is of type 'kafka'"), str(e.value)
