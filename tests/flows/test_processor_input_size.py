"""``stats()`` ``inputMessageSize`` (``flows.processor.input_size``) is the same with the
fast paths on and off. The reference path counts each document as its first stage sees it:
with the ``_ts`` stamp and the ``_stream_meta`` envelope. The window fast path and the
stateless fast path never write the stamp, so the observer is told its field and adds it."""

from __future__ import annotations

from typing import Any

import pytest
from bytewax.testing import TestingSink, run_main

from flows.processor import input_size
from sources.base import RawBatch
from translator.compile import build_flow, compile_pipeline
from translator.options import ProcessorOptions

SAMPLE = {"$source": {"connectionName": "sample_stream_solar",
                      "config": {"seed": 5, "maxEvents": 2000, "startTime": "2024-01-01T00:00:00Z", "rate": 100,
                                 "partitions": 2, "batchSize": 97}}}
SEED_WINDOW = {"$tumblingWindow": {"interval": {"size": 3, "unit": "second"}, "pipeline": [
    {"$group": {"_id": "$group_id", "avg": {"$avg": "$obs.watts"}, "n": {"$count": {}}}}]}}
STATELESS = [{"$match": {"obs.watts": {"$gte": 100}}}, {"$addFields": {"pct": {"$divide": ["$obs.watts", "$max_watts"]}}},
             {"$project": {"_id": 0, "device_id": 1, "pct": 1, "t": "$_ts"}}]


def _documents(ts_field: str | None) -> dict[str, Any]:
    docs: list[dict[str, Any]] = []
    for i in range(300):
        d: dict[str, Any] = {"_id": i, "device_id": f"d{i % 7}", "group_id": i % 5, "obs": {"watts": i * 3}, "max_watts": 900}
        if i % 50 == 3:  # a document with its own value under the stamp's field: the stamp replaces it
            d[ts_field or "_ts"] = "mine, longer than a date" if i % 100 == 3 else 7
        if i == 10:  # BSON cannot encode it: a message that adds no bytes, either way
            d["big"] = 2**64
        docs.append(d)
    src: dict[str, Any] = {"documents": docs}
    if ts_field is not None:
        src["tsFieldName"] = ts_field
    return {"$source": src}


def _sizes(pipeline: list[dict[str, Any]], fast: bool) -> tuple[list[int], list[Any], list[str]]:
    """Per-batch sizes the observer counts, the output and which observer calls said
    the documents lack the stamp."""
    seen: list[int] = []
    unstamped: list[str] = []

    def observer(batch: RawBatch, wm: int, missing_stamp: str | None) -> None:
        seen.append(input_size(batch, missing_stamp))
        if missing_stamp is not None:
            unstamped.append(missing_stamp)

    compiled = compile_pipeline(pipeline, None, ProcessorOptions(name="size", fast_paths=fast),
                                check_sink_connection=False, require_sink=False)
    out: list[list[Any]] = []
    dlq: list[list[Any]] = []
    run_main(build_flow(compiled, output_sink=TestingSink(out), dlq_sink=TestingSink(dlq), observer=observer))
    return seen, [d for b in out for d in b], unstamped


def _canonical(docs: list[Any], ts_field: str) -> list[str]:
    return sorted(repr({k: v for k, v in d.items() if k != ts_field}) for d in docs)


@pytest.mark.parametrize(
    ("name", "pipeline", "fast_field"),
    [
        ("seed window, sample source", [SAMPLE, SEED_WINDOW], "_ts"),
        ("stateless, sample source", [SAMPLE, *STATELESS], "_ts"),
        ("window, documents with their own _ts", [_documents(None), SEED_WINDOW], "_ts"),
        ("stateless, tsFieldName", [_documents("eventTime"), *STATELESS], "eventTime"),
    ],
)
def test_input_size_is_the_same_with_fast_paths_on_and_off(name: str, pipeline: list[dict[str, Any]],
                                                           fast_field: str) -> None:
    ref, ref_out, ref_unstamped = _sizes(pipeline, fast=False)
    got, out, unstamped = _sizes(pipeline, fast=True)
    # A documents source's time is the wall clock's; two partitions' windows may close in
    # another order.
    assert _canonical(out, fast_field) == _canonical(ref_out, fast_field)
    assert len(out) > 0
    assert ref_unstamped == []  # the reference path stamps before it observes
    assert unstamped and set(unstamped) == {fast_field}  # the case reaches a fast path
    assert sum(got) == sum(ref) > 0
