"""``translator.testing.run_pipeline``: a production pipeline file runs unchanged in a unit
test, its sink and DLQ connections unresolved (nothing is written anywhere)."""

from __future__ import annotations

from typing import Any

from translator.testing import run_pipeline

PIPELINE: list[dict[str, Any]] = [
    {"$source": {"documents": [{"x": 1}, {"x": "two"}, {"x": 3}]}},
    {"$validate": {"validator": {"x": {"$type": "int"}}, "validationAction": "dlq"}},
    {"$merge": {"into": {"connectionName": "MyOutputGoesHere", "db": "demo", "coll": "good"}}},
]


def test_dlq_option_without_registry_collects_dlq_documents() -> None:
    result = run_pipeline(
        PIPELINE,
        options={"dlq": {"connectionName": "MyOutputGoesHere", "db": "demo", "coll": "bad"}, "name": "prod"},
    )
    assert [{k: v for k, v in d.items() if k != "_ts"} for d in result.output] == [
        {"x": 1, "_stream_meta": {"source": {"type": "documents"}}},
        {"x": 3, "_stream_meta": {"source": {"type": "documents"}}},
    ]
    [entry] = result.dlq
    assert sorted(entry) == ["_id", "dlqTime", "doc", "errInfo", "processorName"]
    assert entry["errInfo"] == {"reason": 'Input document found to be invalid in $validate stage: x: $type "int" failed for "two"'}
    assert entry["processorName"] == "prod"
    assert {k: v for k, v in entry["doc"].items() if k != "_ts"} == {"x": "two", "_stream_meta": {"source": {"type": "documents"}}}
