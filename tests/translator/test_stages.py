"""The stateless-stage runner: fused $match + $addFields + $project (benchmark workload C)
gives the same documents, key order and DLQ reasons as the stages run one by one."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from bson import Decimal128, Int64

from translator import metrics
from translator.compile import compile_pipeline
from translator.options import ProcessorOptions
from translator.stages import Step, compile_steps, run_chain, run_chain_docs

TS = datetime(2024, 7, 26, 13, 20, tzinfo=UTC)
C_STAGES: list[dict[str, Any]] = [
    {"$match": {"event_type": 0, "obs.temp": {"$gte": 12}}},
    {
        "$addFields": {
            "wattsPct": {"$divide": ["$obs.watts", "$max_watts"]},
            "hot": {"$gte": ["$obs.temp", 20]},
        }
    },
    {
        "$project": {
            "_id": 0,
            "device_id": 1,
            "group_id": 1,
            "ts": "$_ts",
            "temp": "$obs.temp",
            "wattsPct": 1,
            "hot": 1,
        }
    },
]
ADD = "Failed to process input document in $addFields stage (pipeline[2].$addFields): "


def steps_of(stages: list[dict[str, Any]]) -> tuple[Step, ...]:
    p = compile_pipeline([{"$source": {"documents": []}}, *stages], options=ProcessorOptions(name="t"), check_sink_connection=False)
    return compile_steps(p.stages)


def run(stages: list[dict[str, Any]], docs: list[dict[str, Any]]) -> tuple[list[Any], list[tuple[str, Any]]]:
    dlq: list[tuple[str, Any]] = []
    out = run_chain(steps_of(stages), [(d, i) for i, d in enumerate(docs)], lambda r, d: dlq.append((r, d)))
    return out, dlq


@pytest.fixture
def unfused() -> Iterator[None]:
    """With metrics on, the runner takes one step at a time (no fusion)."""
    metrics.reset()
    metrics.enable()
    yield
    metrics.disable()
    metrics.reset()


def reading(i: int, **kw: Any) -> dict[str, Any]:
    d: dict[str, Any] = {
        "_id": i,
        "device_id": f"device_{i}",
        "group_id": i % 3,
        "timestamp": "x",
        "max_watts": 400,
        "event_type": 0,
        "obs": {"watts": 100, "temp": 21},
        "_ts": TS,
    }
    d.update(kw)
    return d


def test_workload_c_exact_documents_and_order() -> None:
    out, dlq = run(
        C_STAGES,
        [
            reading(1),
            reading(2, event_type=1),
            reading(3, obs={"watts": 50, "temp": 12.5}, max_watts=Int64(200)),
            reading(4, obs={"watts": 50, "temp": 11}),
        ],
    )
    assert dlq == []
    assert out == [
        ({"device_id": "device_1", "group_id": 1, "ts": TS, "temp": 21, "wattsPct": 0.25, "hot": True}, 0),
        ({"device_id": "device_3", "group_id": 0, "ts": TS, "temp": 12.5, "wattsPct": 0.25, "hot": False}, 2),
    ]
    assert [list(d) for d, _ in out] == [["device_id", "group_id", "ts", "temp", "wattsPct", "hot"]] * 2
    assert type(out[1][0]["wattsPct"]) is float


def test_workload_c_bad_documents_go_to_the_dlq_with_the_stage_reason() -> None:
    docs = [
        reading(1, max_watts=0),
        reading(2),
        reading(3, max_watts="400"),
        reading(4, max_watts=True),
        reading(5, max_watts=0.0),
        reading(6, obs=[{"watts": 100, "temp": 21}]),
        reading(7, max_watts=Decimal128("0")),
    ]
    out, dlq = run(C_STAGES, docs)
    assert [d["device_id"] for d, _ in out] == ["device_2"]
    assert [(r, d["_id"]) for r, d in dlq] == [
        (ADD + "$divide: can't $divide by zero", 1),
        (ADD + "$divide only supports numeric types, not int and string", 3),
        (ADD + "$divide only supports numeric types, not int and bool", 4),
        (ADD + "$divide: can't $divide by zero", 5),
        (ADD + "$divide only supports numeric types, not array and int", 6),
        (ADD + "$divide: can't $divide by zero", 7),
    ]
    # The DLQ gets the document as $addFields received it (no wattsPct/hot added).
    assert dlq[0][1] == reading(1, max_watts=0)


def test_workload_c_edge_values() -> None:
    out, dlq = run(
        C_STAGES,
        [
            reading(1, obs={"watts": 10, "temp": 20}, max_watts=Decimal128("40")),
            reading(2, obs={"watts": None, "temp": 30}),
            reading(3, obs={"temp": 30}),
            reading(4, obs={"watts": 1, "temp": [10, 13]}),  # leaf array: an element matches
            reading(5, event_type=Int64(0), obs={"watts": 2**53 + 1, "temp": 12}, max_watts=3),
            reading(6, event_type=False),
            reading(7, obs={"watts": 1, "temp": float("nan")}),
        ],
    )
    assert dlq == []
    assert [d for d, _ in out] == [
        {"device_id": "device_1", "group_id": 1, "ts": TS, "temp": 20, "wattsPct": Decimal128("0.25"), "hot": True},
        {"device_id": "device_2", "group_id": 2, "ts": TS, "temp": 30, "wattsPct": None, "hot": True},
        {"device_id": "device_3", "group_id": 0, "ts": TS, "temp": 30, "wattsPct": None, "hot": True},
        # An array sorts after every number, so {$gte: [[10, 13], 20]} is true.
        {"device_id": "device_4", "group_id": 1, "ts": TS, "temp": [10, 13], "wattsPct": 0.0025, "hot": True},
        {"device_id": "device_5", "group_id": 2, "ts": TS, "temp": 12, "wattsPct": float(2**53) / 3.0, "hot": False},
    ]


def test_array_along_the_project_path() -> None:
    out, dlq = run(
        [
            {"$addFields": {"n": 1}},
            {"$project": {"t": "$obs.temp", "n": 1}},
        ],
        [{"_id": 9, "obs": [{"temp": 1}, {"x": 2}, {"temp": 3}]}, {"obs": 5}],
    )
    assert dlq == []
    assert [list(d.items()) for d, _ in out] == [[("_id", 9), ("t", [1, 3]), ("n", 1)], [("n", 1)]]


def test_fused_project_reads_added_and_removed_fields() -> None:
    stages = [
        {"$addFields": {"o": [{"t": 1}, {"t": 2}], "a": "$$REMOVE", "_id": "$k"}},
        {"$project": {"ot": "$o.t", "a": 1, "b": 1, "k": 1}},
    ]
    docs = [{"_id": 1, "a": 5, "b": 6, "k": "x"}, {"a": 5, "o": 3}]
    out, dlq = run(stages, docs)
    assert dlq == []
    assert [list(d.items()) for d, _ in out] == [
        [("_id", "x"), ("ot", [1, 2]), ("b", 6), ("k", "x")],
        [("ot", [1, 2])],
    ]


def test_project_keeps_id_first_and_spec_order() -> None:
    out, _ = run([{"$project": {"b": 1, "x": "$a", "a": 1}}], [{"a": 1, "b": 2, "_id": 3, "c": 4}])
    assert [list(d.items()) for d, _ in out] == [[("_id", 3), ("b", 2), ("x", 1), ("a", 1)]]


def test_add_fields_removal_and_overwrite_keep_position() -> None:
    out, _ = run([{"$addFields": {"a": "$$REMOVE", "b": {"$add": ["$b", 1]}, "z": 0}}], [{"a": 1, "b": 2, "c": 3}])
    assert [list(d.items()) for d, _ in out] == [[("b", 3), ("c", 3), ("z", 0)]]


def test_first_failing_add_field_names_the_error() -> None:
    stages = [{"$addFields": {"x": {"$divide": ["$a", 0]}, "y": {"$multiply": ["$a", "s"]}, "w": 1}}]
    _, dlq = run(stages, [{"a": 1}])
    assert [r for r, _ in dlq] == [
        "Failed to process input document in $addFields stage (pipeline[1].$addFields): $divide: can't $divide by zero"
    ]


def test_a_failing_project_is_named_after_a_fused_add_fields() -> None:
    stages = [
        {"$match": {"k": {"$gt": 0}}},
        {"$addFields": {"x": {"$multiply": ["$k", 2]}}},
        {"$project": {"y": {"$divide": [1, "$z"]}, "x": 1}},
    ]
    out, dlq = run(stages, [{"k": 1, "z": 0}, {"k": 2, "z": 4}, {"k": -1, "z": 0}])
    assert [d for d, _ in out] == [{"y": 0.25, "x": 4}]
    assert [(r, d) for r, d in dlq] == [
        (
            "Failed to process input document in $project stage (pipeline[3].$project): $divide: can't $divide by zero",
            {"k": 1, "z": 0, "x": 2},
        )
    ]


def test_fused_and_unfused_runs_agree(unfused: None) -> None:
    docs = [
        reading(i, obs={"watts": i, "temp": (i * 7) % 30}, max_watts=(0 if i % 11 == 0 else 100 + i))
        for i in range(60)
    ]
    steps = steps_of(C_STAGES)
    dlq1: list[tuple[str, Any]] = []
    one_by_one = run_chain(steps, [(d, 0) for d in docs], lambda r, d: dlq1.append((r, d)))
    metrics.disable()
    dlq2: list[tuple[str, Any]] = []
    fused = run_chain(steps, [(d, 0) for d in docs], lambda r, d: dlq2.append((r, d)))
    assert fused == one_by_one
    assert [list(d) for d, _ in fused] == [list(d) for d, _ in one_by_one]
    assert dlq1 == dlq2
    assert [d["_id"] for _, d in dlq1] == [11, 33, 55]  # warm enough, and divide by zero
    assert len(fused) == 33
    assert math.isclose(fused[0][0]["wattsPct"], 2 / 102)


def test_steps_record_the_fusion() -> None:
    steps = steps_of(C_STAGES)
    assert steps[0].pred is not None
    assert steps[1].fused_next is not None
    assert steps[2].fused_next is None
    # $project then $addFields is not the fused shape.
    other = steps_of([{"$project": {"a": 1}}, {"$addFields": {"b": 1}}])
    assert other[0].fused_next is None


def test_workload_c_runs_as_generated_code() -> None:
    """The tests above go through translator.codegen's loop (and its fallbacks)."""
    steps = steps_of(C_STAGES)
    assert steps[0].chain is not None and steps[0].chain_len == 3
    assert steps[1].chain is None and steps[2].chain is None


def test_run_chain_docs_gives_the_documents_and_the_same_dlq() -> None:
    docs = [reading(1), reading(2, max_watts=0), reading(3, event_type=1), reading(4, obs={"watts": 1, "temp": 30})]
    steps = steps_of(C_STAGES)
    dlq: list[tuple[str, Any]] = []
    out = run_chain_docs(steps, [(d, i) for i, d in enumerate(docs)], lambda r, d: dlq.append((r, d)))
    assert out == [
        {"device_id": "device_1", "group_id": 1, "ts": TS, "temp": 21, "wattsPct": 0.25, "hot": True},
        {"device_id": "device_4", "group_id": 1, "ts": TS, "temp": 30, "wattsPct": 0.0025, "hot": True},
    ]
    assert [(r, d["_id"]) for r, d in dlq] == [(ADD + "$divide: can't $divide by zero", 2)]
    # Without generated code for the last span (a $match alone), the same documents.
    only = steps_of([{"$match": {"event_type": 0}}])
    assert run_chain_docs(only, [(d, i) for i, d in enumerate(docs)], lambda r, d: None) == [docs[0], docs[1], docs[3]]
    assert run_chain_docs(steps, [], lambda r, d: None) == []


def test_run_chain_docs_with_metrics(unfused: None) -> None:
    out = run_chain_docs(steps_of(C_STAGES), [(reading(1), 0)], lambda r, d: None)
    assert out == [{"device_id": "device_1", "group_id": 1, "ts": TS, "temp": 21, "wattsPct": 0.25, "hot": True}]
    assert metrics.stage_figures()["pipeline[3].$project"][1:4] == (1, 1, 0)
