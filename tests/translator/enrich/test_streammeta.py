"""$setStreamMeta and the create-time rejection of $externalFunction."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from translator.errors import TranslateError
from translator.testing import run_pipeline


def _docs(*docs: dict[str, Any]) -> dict[str, Any]:
    return {"$source": {"documents": list(docs)}}


def test_set_stream_meta_is_read_by_meta_later() -> None:
    r = run_pipeline([
        _docs({"_id": 1, "kind": "a"}, {"_id": 2, "kind": "b"}),
        {"$setStreamMeta": {"stream.coll": {"$concat": ["out_", "$kind"]}, "stream.x.y": 5}},
        {"$project": {"_id": 1, "coll": {"$meta": "stream.coll"}, "y": {"$meta": "stream.x.y"},
                      "src": {"$meta": "stream.source.type"}}},
    ])
    assert r.output == [
        {"_id": 1, "coll": "out_a", "y": 5, "src": "documents"},
        {"_id": 2, "coll": "out_b", "y": 5, "src": "documents"},
    ]
    assert r.dlq == []


def test_set_stream_meta_failure_goes_to_the_dlq() -> None:
    r = run_pipeline([
        _docs({"_id": 1, "n": 4}, {"_id": 2, "n": "four"}),
        {"$setStreamMeta": {"stream.half": {"$divide": ["$n", 2]}}},
        {"$project": {"_id": 1, "half": {"$meta": "stream.half"}}},
    ])
    assert r.output == [{"_id": 1, "half": 2.0}]
    assert len(r.dlq) == 1
    assert r.dlq[0]["doc"]["_id"] == 2
    reason = r.dlq[0]["errInfo"]["reason"]
    assert reason.startswith("Failed to process input document in $setStreamMeta stage (pipeline[1].$setStreamMeta): $divide")


@pytest.mark.parametrize(
    ("spec", "path", "message"),
    [
        ({"coll": 1}, "pipeline[1].$setStreamMeta.coll", "the field must be 'stream.<field>', got 'coll'"),
        ({}, "pipeline[1].$setStreamMeta", "expected at least one 'stream.<field>' to set"),
        ({"stream.": 1}, "pipeline[1].$setStreamMeta.stream.", "the field must be 'stream.<field>', got 'stream.'"),
    ],
)
def test_set_stream_meta_errors(spec: Any, path: str, message: str) -> None:
    with pytest.raises(TranslateError) as e:
        run_pipeline([_docs({"a": 1}), {"$setStreamMeta": spec}])
    assert e.value.path == path
    assert e.value.message == message


def test_set_stream_meta_inside_a_window() -> None:
    r = run_pipeline([
        _docs(*({"_id": i, "g": i % 2, "ts": f"2024-01-01T00:00:0{i}Z"} for i in range(4))),
        {"$tumblingWindow": {
            "interval": {"size": 10, "unit": "second"},
            "pipeline": [
                {"$setStreamMeta": {"stream.tag": "$g"}},
                {"$group": {"_id": "$g", "n": {"$sum": 1}}},
            ],
        }},
    ])
    assert sorted((d["_id"], d["n"]) for d in r.output) == [(0, 2), (1, 2)]


def test_external_function_is_rejected_naming_https() -> None:
    with pytest.raises(TranslateError) as e:
        run_pipeline([_docs({"a": 1}), {"$externalFunction": {"functionName": "f", "as": "r"}}])
    assert e.value.path == "pipeline[1].$externalFunction"
    assert e.value.message == (
        "$externalFunction calls AWS Lambda, which a self-hosted mqlflow cannot reach; "
        "call your function over HTTP with the $https stage instead"
    )


def test_meta_in_a_window_reads_what_set_stream_meta_set_there() -> None:
    """Inside a window's pipeline ``$meta`` reads the window's bounds and what a
    ``$setStreamMeta`` of that pipeline set; metadata set before the window is each
    input document's, seen before the ``$group`` and not by the window's results."""
    r = run_pipeline([
        {"$source": {"documents": [{"_id": i, "g": i % 2, "ts": datetime(2024, 1, 1, 0, 0, i, tzinfo=UTC)} for i in range(4)],
                     "timeField": {"$toDate": "$ts"}}},
        {"$setStreamMeta": {"stream.before": {"$multiply": ["$_id", 10]}}},
        {"$tumblingWindow": {
            "interval": {"size": 10, "unit": "second"},
            "pipeline": [
                {"$setStreamMeta": {"stream.tag": {"$concat": ["g", {"$toString": "$g"}]}}},
                {"$match": {"$expr": {"$and": [{"$eq": [{"$meta": "stream.tag"}, "g1"]},
                                               {"$gte": [{"$meta": "stream.before"}, 0]}]}}},
                {"$group": {"_id": "$g", "n": {"$sum": 1}, "tags": {"$push": {"$meta": "stream.tag"}},
                            "before": {"$push": {"$meta": "stream.before"}}}},
                {"$setStreamMeta": {"stream.label": {"$concat": ["n=", {"$toString": "$n"}]}}},
                {"$addFields": {"label": {"$meta": "stream.label"},
                              "start": {"$meta": "stream.window.start"},
                              "seenBefore": {"$ifNull": [{"$meta": "stream.before"}, "missing"]},
                              "tag": {"$ifNull": [{"$meta": "stream.tag"}, "missing"]}}},
            ],
        }},
    ], options={"name": "w"})
    assert r.dlq == []
    assert [{k: v for k, v in d.items() if k not in ("_stream_meta", "_ts")} for d in r.output] == [
        {"_id": 1, "n": 2, "tags": ["g1", "g1"], "before": [10, 30], "label": "n=2",
         "start": datetime(2024, 1, 1, tzinfo=UTC), "seenBefore": "missing", "tag": "missing"},
    ]
    assert r.output[0]["_stream_meta"] == {
        "label": "n=2", "window": {"start": datetime(2024, 1, 1, tzinfo=UTC), "end": datetime(2024, 1, 1, 0, 0, 10, tzinfo=UTC)},
    }
