"""Window semantics as ASP defines them (docs/windows.md): per-partition watermarks,
allowedLateness, late data to the DLQ, hopping overlap, session merging, and the seed's
group-temperature pipeline against an independent computation."""

from __future__ import annotations

import statistics
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from bson import json_util
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.testing import (
    AbortExecution,  # type: ignore[attr-defined]
    TestingSink,
    TestingSource,
    run_main,
)

from sinks.dlq import LATE_REASON
from sources.base import IdleBatch
from sources.solar import SolarConfig, SolarSource
from translator.compile import build_flow, compile_pipeline
from translator.options import ProcessorOptions
from translator.testing import run_pipeline

T0 = datetime(2024, 8, 8, 23, 8, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(milliseconds=int(seconds * 1000))


def strip(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(docs, key=repr)


def window_of(d: dict[str, Any]) -> tuple[datetime, datetime]:
    w = d["_stream_meta"]["window"]
    return w["start"], w["end"]


def tumbling(size_s: int = 3, **kw: Any) -> dict[str, Any]:
    spec = {
        "interval": {"size": size_s, "unit": "second"},
        "pipeline": [{"$group": {"_id": "$g", "n": {"$sum": 1}, "xs": {"$push": "$x"}}}],
    }
    spec.update(kw)
    return {"$tumblingWindow": spec}


def src(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return {"$source": {"documents": docs, "timeField": {"$toDate": "$t"}}}


# ---- the seed pipeline ---------------------------------------------------------------


def solar_docs(cfg: SolarConfig) -> list[dict[str, Any]]:
    part = SolarSource(cfg).build_part("s", "solar-0", None)
    out: list[dict[str, Any]] = []
    try:
        while True:
            for _, batch in part.next_batch():
                out.extend(d for d, _ in batch)
    except StopIteration:
        return out


def test_seed_group_temp_pipeline_matches_independent_computation() -> None:
    cfg = {"seed": 7, "rate": 50, "maxEvents": 3000, "startTime": int(T0.timestamp() * 1000), "batchSize": 97}
    from flows.solar_demo import pipeline

    result = run_pipeline(pipeline(cfg, with_merge=True))
    assert result.dlq == []

    docs = solar_docs(SolarConfig.from_mapping(cfg))
    assert len(docs) == 3000
    expected: dict[tuple[datetime, int], list[int]] = {}
    for d in docs:
        ts = datetime.fromisoformat(d["timestamp"])
        start = datetime.fromtimestamp((int(ts.timestamp() * 1000) // 3000) * 3, UTC)
        expected.setdefault((start, d["group_id"]), []).append(d["obs"]["temp"])

    got = {(window_of(d)[0], d["_id"]): d for d in result.output}
    assert set(got) == set(expected)
    for key, temps in expected.items():
        d = got[key]
        assert window_of(d) == (key[0], key[0] + timedelta(seconds=3))
        assert d["minTemp"] == min(temps) and type(d["minTemp"]) is int
        assert d["maxTemp"] == max(temps)
        assert d["avgTemp"] == pytest.approx(statistics.fmean(temps), rel=1e-12)
        assert d["stdevPTemp"] == pytest.approx(statistics.pstdev(temps), rel=1e-9, abs=1e-12)
        assert list(d) == ["_id", "minTemp", "maxTemp", "avgTemp", "stdevPTemp", "_stream_meta"]


def test_sample_source_documents_have_the_seed_shape() -> None:
    result = run_pipeline(
        [{"$source": {"connectionName": "sample_stream_solar", "config": {"seed": 1, "maxEvents": 5, "startTime": 0}}}]
    )
    assert len(result.output) == 5
    d = result.output[0]
    assert list(d) == ["device_id", "group_id", "timestamp", "max_watts", "event_type", "obs", "_ts", "_stream_meta"]
    assert d["_stream_meta"] == {"source": {"type": "generated"}}
    assert d["timestamp"] == "1970-01-01T00:00:00.000+00:00"
    assert d["_ts"] == datetime(1970, 1, 1, tzinfo=UTC)
    assert d["max_watts"] in (250, 450) and 0 <= d["obs"]["watts"] <= d["max_watts"]


# ---- the DLQ demo --------------------------------------------------------------------


def test_dlq_demo_four_bad_documents_and_a_window_summing_to_ten() -> None:
    xs: list[Any] = [0, 1, 3.14, 2, "22", 3, None, 4]
    docs = [({"x": x} if x is not None else {"text": "yo"}) | {"t": at(0.1 * i)} for i, x in enumerate(xs)]
    result = run_pipeline(
        [
            src(docs),
            {"$validate": {"validator": {"$jsonSchema": {"required": ["x"], "properties": {
                "x": {"bsonType": "int", "minimum": 1, "maximum": 42}}}}, "validationAction": "dlq"}},
            {"$tumblingWindow": {"interval": {"size": 3, "unit": "second"}, "pipeline": [
                {"$group": {"_id": None, "sum": {"$sum": "$x"}, "all": {"$push": "$x"}}}]}},
        ]
    )
    assert [(d["_id"], d["sum"], d["all"]) for d in result.output] == [(None, 10, [1, 2, 3, 4])]
    assert len(result.dlq) == 4
    bad = [d["doc"].get("x", d["doc"].get("text")) for d in result.dlq]
    assert bad == [0, 3.14, "22", "yo"]
    for d in result.dlq:
        assert d["errInfo"]["reason"].startswith("Input document found to be invalid in $validate stage")
        assert d["processorName"] == "run_pipeline"
        assert isinstance(d["dlqTime"], datetime)
        assert d["doc"]["_stream_meta"] == {"source": {"type": "documents"}}


# ---- watermarks, lateness ------------------------------------------------------------


def test_late_document_goes_to_dlq_with_missed_window() -> None:
    docs = [
        {"g": "a", "x": 1, "t": at(0.5)},
        {"g": "a", "x": 2, "t": at(7.0)},  # watermark 7 s: window [0,3) closed (3 + 3 <= 7)
        {"g": "a", "x": 3, "t": at(1.0)},  # late for [0,3)
        {"g": "a", "x": 4, "t": at(4.5)},  # window [3,6) still open (6 + 3 > 7)
    ]
    result = run_pipeline([src(docs), tumbling()])
    assert strip([(window_of(d)[0], d["xs"]) for d in result.output]) == strip(  # type: ignore[arg-type]
        [(at(0), [1]), (at(3), [4]), (at(6), [2])]
    )
    assert len(result.dlq) == 1
    late = result.dlq[0]
    assert late["errInfo"] == {"reason": LATE_REASON}
    assert late["missedWindowStartTimes"] == [at(0)]
    assert late["doc"]["x"] == 3 and late["doc"]["_ts"] == at(1.0)


def test_allowed_lateness_zero_and_custom() -> None:
    docs = [{"g": "a", "x": 1, "t": at(3.5)}, {"g": "a", "x": 2, "t": at(2.0)}]
    # lateness 0: window [0,3) is closed once the watermark reaches 3 s
    r0 = run_pipeline([src(docs), tumbling(allowedLateness=0)])
    assert [d["doc"]["x"] for d in r0.dlq] == [2]
    r1 = run_pipeline([src(docs), tumbling(allowedLateness={"size": 1, "unit": "second"})])
    assert r1.dlq == [] and sorted(d["n"] for d in r1.output) == [1, 1]


def _flow_without_eof(pipeline: list[dict[str, Any]], batches: list[list[dict[str, Any]]], **opts: Any) -> tuple[list[Any], list[Any]]:
    """Run with a source that aborts instead of ending: only watermark-closed windows come out."""
    options = ProcessorOptions(name="t", **opts)
    p = compile_pipeline(pipeline, options=options, check_sink_connection=False)
    part = TestingSource([]).list_parts()[0]
    items: list[Any] = [(part, [(d, 0) for d in b]) for b in batches]
    items.append(TestingSource.ABORT())
    out: list[list[dict[str, Any]]] = []
    dlq: list[list[dict[str, Any]]] = []
    flow = build_flow(p, options, source=TestingSource(items), output_sink=TestingSink(out), dlq_sink=TestingSink(dlq))
    run_main(flow)
    return [d for b in out for d in b], [d for b in dlq for d in b]


@pytest.mark.parametrize("buckets", [1, 4])
def test_silent_group_window_closes_when_the_partition_watermark_passes(buckets: int) -> None:
    """Group 'quiet' gets one event and then nothing; its window still closes, with no
    end of input, because the watermark belongs to the source partition (not the key)."""
    pipeline = [{"$source": {"documents": [], "timeField": {"$toDate": "$t"}}}, tumbling()]
    batches = [
        [{"g": "quiet", "x": 1, "t": at(1)}, {"g": "busy", "x": 1, "t": at(1.5)}],
        [{"g": "busy", "x": 2, "t": at(4)}],
        [{"g": "busy", "x": 3, "t": at(6.0)}],  # watermark 6 = 3 + 3: [0,3) closes
    ]
    out, dlq = _flow_without_eof(pipeline, batches, window_buckets=buckets)
    assert dlq == []
    assert strip([(d["_id"], window_of(d)[0], d["xs"]) for d in out]) == strip(  # type: ignore[arg-type]
        [("quiet", at(0), [1]), ("busy", at(0), [1])]
    )


def test_window_stays_open_until_watermark_passes_end_plus_lateness() -> None:
    pipeline = [{"$source": {"documents": [], "timeField": {"$toDate": "$t"}}}, tumbling()]
    out, _ = _flow_without_eof(pipeline, [[{"g": "a", "x": 1, "t": at(1)}], [{"g": "a", "x": 2, "t": at(5.999)}]])
    assert out == []


# ---- hopping and session windows ---------------------------------------------------


def test_hopping_windows_overlap() -> None:
    docs = [{"g": "a", "x": i, "t": at(i)} for i in range(0, 10)]
    result = run_pipeline(
        [
            src(docs),
            {"$hoppingWindow": {"interval": {"size": 4, "unit": "second"}, "hopSize": {"size": 2, "unit": "second"},
                                "pipeline": [{"$group": {"_id": "$g", "xs": {"$push": "$x"}}}]}},
        ]
    )
    got = sorted((window_of(d)[0], d["xs"]) for d in result.output)
    assert got == [
        (at(-2), [0, 1]),
        (at(0), [0, 1, 2, 3]),
        (at(2), [2, 3, 4, 5]),
        (at(4), [4, 5, 6, 7]),
        (at(6), [6, 7, 8, 9]),
        (at(8), [8, 9]),
    ]
    assert all(window_of(d)[1] - window_of(d)[0] == timedelta(seconds=4) for d in result.output)


def test_hopping_with_gaps_drops_documents_in_no_window() -> None:
    docs = [{"g": "a", "x": i, "t": at(i)} for i in range(0, 6)]
    result = run_pipeline(
        [
            src(docs),
            {"$hoppingWindow": {"interval": {"size": 1, "unit": "second"}, "hopSize": {"size": 3, "unit": "second"},
                                "pipeline": [{"$group": {"_id": "$g", "xs": {"$push": "$x"}}}]}},
        ]
    )
    assert sorted((window_of(d)[0], d["xs"]) for d in result.output) == [(at(0), [0]), (at(3), [3])]


def test_session_windows_merge_when_an_event_bridges_them() -> None:
    docs = [
        {"u": "a", "x": 1, "t": at(0)},
        {"u": "a", "x": 2, "t": at(1)},
        {"u": "b", "x": 10, "t": at(1)},
        {"u": "a", "x": 3, "t": at(5)},  # gap 3 s: a new session for 'a' (1 -> 5)
        {"u": "a", "x": 4, "t": at(3)},  # out of order, bridges [0,1] and [5]
        {"u": "a", "x": 5, "t": at(20)},
    ]
    result = run_pipeline(
        [
            src(docs),
            {"$sessionWindow": {"partitionBy": "$u", "gap": {"size": 3, "unit": "second"}, "allowedLateness": {"size": 10, "unit": "second"},
                                "pipeline": [{"$group": {"_id": "$u", "xs": {"$push": "$x"}, "n": {"$sum": 1}}}]}},
        ]
    )
    got = sorted(
        ((d["_id"], d["_stream_meta"]["window"]["start"], d["_stream_meta"]["window"]["end"], sorted(d["xs"])) for d in result.output),
        key=repr,
    )
    assert got == sorted(
        [
            ("a", at(0), at(8), [1, 2, 3, 4]),
            ("b", at(1), at(4), [10]),
            ("a", at(20), at(23), [5]),
        ],
        key=repr,
    )
    assert {d["_stream_meta"]["window"]["partition"] for d in result.output} == {"a", "b"}


def test_window_without_group_keeps_documents_and_sorts_limits() -> None:
    docs = [{"g": "a", "x": x, "t": at(0.1 * i)} for i, x in enumerate([5, 3, 9, 1])]
    result = run_pipeline(
        [src(docs), {"$tumblingWindow": {"interval": {"size": 3, "unit": "second"}, "pipeline": [
            {"$project": {"_id": 0, "x": 1}}, {"$sort": {"x": -1}}, {"$limit": 2}]}}]
    )
    assert [d["x"] for d in result.output] == [9, 5]
    assert all(window_of(d) == (at(0), at(3)) for d in result.output)


def test_meta_window_start_as_group_key_and_after_window_stage() -> None:
    docs = [{"g": "a", "x": 1, "t": at(0.5)}, {"g": "b", "x": 2, "t": at(3.5)}]
    result = run_pipeline(
        [
            src(docs),
            {"$tumblingWindow": {"interval": {"size": 3, "unit": "second"}, "pipeline": [
                {"$group": {"_id": {"$meta": "stream.window.start"}, "total": {"$sum": "$x"}}}]}},
            {"$project": {"total": 1, "start": {"$meta": "stream.window.start"}}},
        ]
    )
    assert sorted((d["_id"], d["total"], d["start"]) for d in result.output) == [(at(0), 1, at(0)), (at(3), 2, at(3))]


def test_expression_error_goes_to_dlq_naming_stage_and_operator() -> None:
    docs = [{"a": 1, "b": 0, "t": at(0)}, {"a": 4, "b": 2, "t": at(1)}]
    result = run_pipeline([src(docs), {"$addFields": {"r": {"$divide": ["$a", "$b"]}}}, {"$project": {"_id": 0, "r": 1}}])
    assert result.output == [{"r": 2.0}]
    assert len(result.dlq) == 1
    reason = result.dlq[0]["errInfo"]["reason"]
    assert reason.startswith("Failed to process input document in $addFields stage (pipeline[1].$addFields): $divide:")
    assert result.dlq[0]["doc"]["a"] == 1


def test_bad_time_field_goes_to_dlq() -> None:
    docs = [{"ts": "2024-08-08T23:08:02.881+00:00"}, {"ts": "not a date"}, {"other": 1}]
    result = run_pipeline([{"$source": {"documents": docs, "timeField": {"$dateFromString": {"dateString": "$ts"}}}}])
    assert [d["_ts"] for d in result.output] == [datetime(2024, 8, 8, 23, 8, 2, 881000, tzinfo=UTC)]
    reasons = [d["errInfo"]["reason"] for d in result.dlq]
    assert len(reasons) == 2
    assert all(r.startswith("Failed to process input document in $source stage (pipeline[0].$source.timeField): ") for r in reasons)


class _Scripted(FixedPartitionedSource[Any, None]):
    """Two partitions replaying scripted batches, then aborting (no end-of-input flush)."""

    def __init__(self, script: dict[str, list[Any]]) -> None:
        self.script = script

    def list_parts(self) -> list[str]:
        return list(self.script)

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> StatefulSourcePartition[Any, None]:
        script = list(self.script[for_part])

        class Part(StatefulSourcePartition[Any, None]):
            def next_batch(self) -> list[Any]:
                if not script:
                    raise AbortExecution()
                return [(for_part, script.pop(0))]

            def snapshot(self) -> None:
                return None

        return Part()


def _run_scripted(script: dict[str, list[Any]], dlq: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    options = ProcessorOptions(name="t")
    p = compile_pipeline([{"$source": {"documents": [], "timeField": {"$toDate": "$t"}}}, tumbling()], options=options)
    out: list[list[dict[str, Any]]] = []
    dlq_batches: list[list[dict[str, Any]]] = []
    flow = build_flow(p, options, source=_Scripted(script), output_sink=TestingSink(out), dlq_sink=TestingSink(dlq_batches))
    run_main(flow)
    if dlq is not None:
        dlq.extend(d for b in dlq_batches for d in b)
    return [d for b in out for d in b]


def rec(g: str, x: int, s: float) -> tuple[dict[str, Any], int]:
    return ({"g": g, "x": x, "t": at(s)}, 0)


def test_processor_watermark_is_the_minimum_over_partitions() -> None:
    """Partition p1 is silent after one event: without partitionIdleTimeout it holds
    the window back even though p0's watermark is far past it."""
    out = _run_scripted({"p0": [[rec("a", 1, 1)], [rec("a", 2, 20)]], "p1": [[rec("b", 3, 1)]]})
    assert out == []


def test_idle_partition_stops_holding_windows_back() -> None:
    out = _run_scripted(
        {"p0": [[rec("a", 1, 1)], [], [rec("a", 2, 20)], [], [], []], "p1": [[rec("b", 3, 1)], IdleBatch(), [], [], [], []]}
    )
    assert strip([(d["_id"], window_of(d)[0], d["xs"]) for d in out]) == strip(  # type: ignore[arg-type]
        [("a", at(0), [1]), ("b", at(0), [3])]
    )


def test_when_every_partition_is_idle_one_that_never_reported_holds_nothing_back() -> None:
    """p2 never sends a document and goes idle after p0 and p1 did: the windows p0 and p1
    have passed close (before, the silent p2 held them back whenever its idle marker
    came last, so a real Kafka test passed or failed with the markers' order)."""
    gap: list[Any] = [[], [], []]
    out = _run_scripted({
        "p0": [[rec("a", 1, 1)], [rec("a", 2, 20)], IdleBatch(), *gap, *gap],
        "p1": [[rec("b", 3, 1)], [rec("b", 4, 20)], IdleBatch(), *gap, *gap],
        "p2": [[], [], *gap, IdleBatch(), *gap],
    })
    assert strip([(d["_id"], window_of(d)[0], d["xs"]) for d in out]) == strip(  # type: ignore[arg-type]
        [("a", at(0), [1]), ("b", at(0), [3])]
    )


def _run_items(pipeline: list[dict[str, Any]], items: list[Any], dlq: list[dict[str, Any]] | None = None,
               fast: bool = True) -> list[dict[str, Any]]:
    options = ProcessorOptions(name="t", fast_paths=fast)
    p = compile_pipeline(pipeline, options=options)
    part = TestingSource([]).list_parts()[0]
    out: list[list[dict[str, Any]]] = []
    dlq_batches: list[list[dict[str, Any]]] = []
    src_items = [it if isinstance(it, (TestingSource.PAUSE, TestingSource.ABORT)) else (part, it) for it in items]
    flow = build_flow(p, options, source=TestingSource(src_items), output_sink=TestingSink(out),
                      dlq_sink=TestingSink(dlq_batches))
    run_main(flow)
    if dlq is not None:
        dlq.extend(d for b in dlq_batches for d in b)
    return [d for b in out for d in b]


def test_idle_timeout_closes_windows_of_a_paused_source() -> None:
    """ASP idleTimeout: a source with no new data still gets its open windows out."""
    pipeline = [{"$source": {"documents": [], "timeField": {"$toDate": "$t"}}},
                tumbling(idleTimeout={"size": 300, "unit": "ms"})]
    items = [[({"g": "a", "x": 1, "t": at(1)}, 0)], TestingSource.PAUSE(timedelta(seconds=1.5)), TestingSource.ABORT()]
    out = _run_items(pipeline, items)
    assert [(d["_id"], d["xs"], window_of(d)[0]) for d in out] == [("a", [1], at(0))]


@pytest.mark.parametrize("fast", [True, False])
def test_documents_of_a_window_closed_by_idle_timeout_go_to_the_dlq_one_by_one(fast: bool) -> None:
    """After idleTimeout closed [0,3) by the wall clock, the source resumes with a
    document of it (late: its own DLQ entry) and one of [3,6) (a result at the end)."""
    pipeline = [{"$source": {"documents": [], "timeField": {"$toDate": "$t"}}},
                tumbling(idleTimeout={"size": 300, "unit": "ms"})]
    items = [[({"g": "a", "x": 1, "t": at(1)}, 0)], TestingSource.PAUSE(timedelta(seconds=1.5)),
             [({"g": "b", "x": 2, "t": at(2)}, 0), ({"g": "b", "x": 3, "t": at(4)}, 0)],
             TestingSource.PAUSE(timedelta(seconds=1.5)), TestingSource.ABORT()]
    dlq: list[dict[str, Any]] = []
    out = _run_items(pipeline, items, dlq, fast)
    assert [(d["_id"], d["xs"], window_of(d)[0]) for d in out] == [("a", [1], at(0)), ("b", [3], at(3))]
    assert [_late_entry(d) for d in dlq] == [_late_entry_of(_late_doc("b", 2, 2), [at(0)])]


def test_without_idle_timeout_a_paused_source_keeps_its_window_open() -> None:
    pipeline = [{"$source": {"documents": [], "timeField": {"$toDate": "$t"}}}, tumbling()]
    items = [[({"g": "a", "x": 1, "t": at(1)}, 0)], TestingSource.PAUSE(timedelta(seconds=1)), TestingSource.ABORT()]
    assert _run_items(pipeline, items) == []


def test_processing_time_windows_close_by_wall_clock() -> None:
    pipeline = [{"$source": {"documents": []}},
                tumbling(size_s=1, boundary="processingTime")]
    items = [[({"g": "a", "x": 1}, 0), ({"g": "a", "x": 2}, 0)], TestingSource.PAUSE(timedelta(seconds=2.2)), TestingSource.ABORT()]
    before = datetime.now(UTC)
    out = _run_items(pipeline, items)
    assert [(d["_id"], d["xs"]) for d in out] == [("a", [1, 2])]
    start, end = window_of(out[0])
    assert end - start == timedelta(seconds=1)
    assert before - timedelta(seconds=1) <= start <= datetime.now(UTC)


def test_tumbling_offset_shifts_window_alignment() -> None:
    docs = [{"g": "a", "x": i, "t": at(i)} for i in range(0, 6)]
    result = run_pipeline([src(docs), tumbling(offset={"offsetFromUtc": 1, "unit": "second"})])
    assert sorted((window_of(d)[0], d["xs"]) for d in result.output) == [
        (at(-2), [0]), (at(1), [1, 2, 3]), (at(4), [4, 5])
    ]


def test_meta_reads_source_envelope() -> None:
    result = run_pipeline([src([{"t": at(0)}]), {"$project": {"_id": 0, "type": {"$meta": "stream.source.type"}}}])
    assert result.output == [{"type": "documents"}]


def test_partial_for_an_already_closed_window_goes_to_dlq_not_a_second_result() -> None:
    """p1 goes idle, p0 moves the watermark past [0,3); p1 then resumes with t=2 s: the
    document goes to the DLQ on its own, not as a second result for [0,3)."""
    dlq: list[dict[str, Any]] = []
    out = _run_scripted(
        {
            "p0": [[rec("a", 1, 1)], [rec("a", 2, 20)], [], [], []],
            "p1": [[rec("b", 3, 1)], IdleBatch(), [], [rec("b", 4, 2)], []],
        },
        dlq,
    )
    assert strip([(d["_id"], window_of(d)[0], d["xs"]) for d in out]) == strip(  # type: ignore[arg-type]
        [("a", at(0), [1]), ("b", at(0), [3])]
    )
    assert [_late_entry(d) for d in dlq] == [_late_entry_of({"g": "b", "x": 4, "t": at(2), "_ts": at(2)}, [at(0)])]


# ---- late data from a partition that was idle -------------------------------------------

GROUP_PUSH = {"$group": {"_id": "$g", "n": {"$sum": 1}, "xs": {"$push": "$x"}}}
GROUP_SUM = {"$group": {"_id": "$g", "n": {"$sum": 1}, "s": {"$sum": "$x"}}}
LATE_WINDOWS: dict[str, dict[str, Any]] = {
    "tumbling-group": tumbling(),
    "tumbling-no-group": {"$tumblingWindow": {"interval": {"size": 3, "unit": "second"}, "pipeline": [{"$sort": {"x": 1}}]}},
    "tumbling-match-group": tumbling(pipeline=[{"$match": {"x": {"$ne": 5}}}, GROUP_PUSH]),
    "hopping-panes": {"$hoppingWindow": {"interval": {"size": 4, "unit": "second"}, "hopSize": {"size": 2, "unit": "second"},
                                         "allowedLateness": 0, "pipeline": [GROUP_SUM]}},
    "hopping-by-window": {"$hoppingWindow": {"interval": {"size": 4, "unit": "second"}, "hopSize": {"size": 2, "unit": "second"},
                                             "allowedLateness": 0, "pipeline": [GROUP_PUSH]}},
    "hopping-no-group": {"$hoppingWindow": {"interval": {"size": 4, "unit": "second"}, "hopSize": {"size": 2, "unit": "second"},
                                            "allowedLateness": 0, "pipeline": [{"$sort": {"x": 1}}]}},
    # Sessions (gap 2 s, 3 s lateness): at watermark 20 s the sessions of t=2 and 2.5 s
    # had closed, that of 19 s had not.
    "session-group": {"$sessionWindow": {"partitionBy": "$g", "gap": {"size": 2, "unit": "second"}, "pipeline": [GROUP_PUSH]}},
    "session-match-group": {"$sessionWindow": {"partitionBy": "$g", "gap": {"size": 2, "unit": "second"},
                                               "pipeline": [{"$match": {"x": {"$ne": 5}}}, GROUP_PUSH]}},
}


class _ScriptedToEnd(_Scripted):
    """:class:`_Scripted` whose partitions end (end of input closes every open window)."""

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> StatefulSourcePartition[Any, None]:
        script = list(self.script[for_part])

        class Part(StatefulSourcePartition[Any, None]):
            def next_batch(self) -> list[Any]:
                if not script:
                    raise StopIteration()
                return [(for_part, script.pop(0))]

            def snapshot(self) -> None:
                return None

        return Part()


def _late_script(idle: bool) -> dict[str, list[Any]]:
    """p0 moves its watermark to 20 s. p1 sends t=1 s, then goes idle (or, ``idle``
    False, moves its own watermark to 20 s), then sends t=2, 2.5 and 19 s: late for the
    windows the watermark 20 s closed, on time for the later ones."""
    second = IdleBatch() if idle else [rec("z", 0, 20)]
    return {
        "p0": [[rec("a", 1, 1)], [rec("a", 2, 20)], [], [], [], [], []],
        "p1": [[rec("b", 3, 1)], second, [], [], [rec("b", 4, 2), rec("c", 5, 2.5), rec("b", 6, 19)], [], []],
    }


def _run_late(window: dict[str, Any], idle: bool, fast: bool, buckets: int = 4) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    options = ProcessorOptions(name="t", fast_paths=fast, window_buckets=buckets)
    p = compile_pipeline([{"$source": {"documents": [], "timeField": {"$toDate": "$t"}}}, window], options=options)
    out: list[list[dict[str, Any]]] = []
    dlq: list[list[dict[str, Any]]] = []
    flow = build_flow(p, options, source=_ScriptedToEnd(_late_script(idle)), output_sink=TestingSink(out),
                      dlq_sink=TestingSink(dlq))
    run_main(flow)
    return [d for b in out for d in b], [d for b in dlq for d in b]


def _late_entry(d: dict[str, Any]) -> str:
    """A DLQ entry as canonical JSON in its own field order, without its fresh ``_id``
    and ``dlqTime`` (checked apart): the bytes a DLQ collection would hold otherwise."""
    assert list(d)[:5] == ["_id", "errInfo", "doc", "processorName", "dlqTime"]
    assert type(d["dlqTime"]) is datetime
    return json_util.dumps({k: v for k, v in d.items() if k not in ("_id", "dlqTime")})


def _late_entry_of(doc: dict[str, Any], missed: list[datetime]) -> str:
    return json_util.dumps({"errInfo": {"reason": LATE_REASON}, "doc": doc, "processorName": "t",
                            "missedWindowStartTimes": missed})


def _late_doc(g: str, x: int, s: float) -> dict[str, Any]:
    return {"g": g, "x": x, "t": at(s), "_ts": at(s)}


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("case", sorted(LATE_WINDOWS))
def test_late_documents_of_a_resumed_idle_partition_go_to_the_dlq_one_by_one(case: str, fast: bool) -> None:
    """ASP sends each late document to the DLQ (docs/windows.md): a partition that was
    idle while the processor watermark closed windows, and resumes with documents of
    those windows, gives the same DLQ entries, byte for byte, as a partition whose own
    watermark already made them late at ingest; on-time windows are unchanged."""
    window = LATE_WINDOWS[case]
    out, dlq = _run_late(window, idle=True, fast=fast)
    _, at_ingest = _run_late(window, idle=False, fast=fast)
    assert sorted(map(_late_entry, dlq)) == sorted(map(_late_entry, at_ingest))
    hopping = case.startswith("hopping")
    # Tumbling [0,3) closed at 20 s (3 s lateness); hopping [0,4), [2,6) and [16,20) closed;
    # a session names the event time of the late document, as ingest does.
    session = case.startswith("session")
    expected = [
        _late_entry_of(_late_doc("b", 4, 2), [at(2)] if session else [at(0), at(2)] if hopping else [at(0)]),
        _late_entry_of(_late_doc("c", 5, 2.5), [at(2.5)] if session else [at(0), at(2)] if hopping else [at(0)]),
    ]
    if hopping:
        expected.append(_late_entry_of(_late_doc("b", 6, 19), [at(16)]))
    assert sorted(map(_late_entry, dlq)) == sorted(expected)
    if session:
        # The old sessions of the resumed partition are no results of their own.
        assert sorted((d["_id"], window_of(d), d["xs"]) for d in out) == [
            ("a", (at(1), at(3)), [1]), ("a", (at(20), at(22)), [2]),
            ("b", (at(1), at(3)), [3]), ("b", (at(19), at(21)), [6]),
        ]
    if case == "tumbling-group":
        assert strip([(d["_id"], window_of(d)[0], d["xs"]) for d in out]) == strip(  # type: ignore[arg-type]
            [("a", at(0), [1]), ("b", at(0), [3]), ("a", at(18), [2]), ("b", at(18), [6])]
        )
    if case == "tumbling-no-group":
        assert [(window_of(d)[0], d["x"]) for d in out] == [(at(0), 1), (at(0), 3), (at(18), 2), (at(18), 6)]
    if case == "hopping-panes":
        # t=19 s counts in [18,22), the window of it that was still open.
        assert sorted((window_of(d)[0], d["_id"], d["s"]) for d in out if window_of(d)[0] >= at(16)) == [
            (at(18), "a", 2), (at(18), "b", 6), (at(20), "a", 2)
        ]


@pytest.mark.parametrize("fast", [True, False])
def test_a_resumed_partition_late_for_a_window_this_bucket_never_saw_goes_to_the_dlq(fast: bool) -> None:
    """The watermark closes windows without documents too: a late document for one is
    late, not a result of its own (one bucket, so every group shares its state)."""
    window = tumbling()
    options = ProcessorOptions(name="t", fast_paths=fast, window_buckets=1)
    p = compile_pipeline([{"$source": {"documents": [], "timeField": {"$toDate": "$t"}}}, window], options=options)
    out: list[list[dict[str, Any]]] = []
    dlq: list[list[dict[str, Any]]] = []
    script = {
        "p0": [[rec("a", 1, 1)], [rec("a", 2, 20)], [], [], [], [], []],
        "p1": [[rec("b", 3, 1)], IdleBatch(), [], [], [rec("b", 4, 7)], [], []],
    }
    run_main(build_flow(p, options, source=_ScriptedToEnd(script), output_sink=TestingSink(out), dlq_sink=TestingSink(dlq)))
    assert strip([(d["_id"], window_of(d)[0], d["xs"]) for b in out for d in b]) == strip(  # type: ignore[arg-type]
        [("a", at(0), [1]), ("b", at(0), [3]), ("a", at(18), [2])]
    )
    assert [_late_entry(d) for b in dlq for d in b] == [_late_entry_of(_late_doc("b", 4, 7), [at(6)])]


# Fails for x = 4 (late after the idle partition resumes) and x = 6 (t = 19 s: on time
# in tumbling windows and sessions, late for one of its hopping windows).
FAILING_SET = {"$set": {"r": {"$divide": [1, {"$multiply": [{"$subtract": ["$x", 4]}, {"$subtract": ["$x", 6]}]}]}}}
HOP_4_2 = {"interval": {"size": 4, "unit": "second"}, "hopSize": {"size": 2, "unit": "second"}, "allowedLateness": 0}
FAILING_WINDOWS: dict[str, dict[str, Any]] = {
    "tumbling": tumbling(pipeline=[FAILING_SET, GROUP_PUSH]),
    "tumbling-no-group": {"$tumblingWindow": {"interval": {"size": 3, "unit": "second"}, "pipeline": [FAILING_SET]}},
    "hopping-panes": {"$hoppingWindow": {**HOP_4_2, "pipeline": [FAILING_SET, GROUP_SUM]}},
    "hopping-by-window": {"$hoppingWindow": {**HOP_4_2, "pipeline": [FAILING_SET, GROUP_PUSH]}},
    "session": {"$sessionWindow": {"partitionBy": "$g", "gap": {"size": 2, "unit": "second"},
                                   "pipeline": [FAILING_SET, GROUP_PUSH]}},
}


def _dlq_summary(entries: list[dict[str, Any]]) -> list[tuple[int, str]]:
    return sorted((d["doc"]["x"], "late" if d["errInfo"]["reason"] == LATE_REASON else "error") for d in entries)


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("case", sorted(FAILING_WINDOWS))
def test_a_late_document_that_a_window_stage_fails_on_gets_only_its_late_entry(case: str, fast: bool) -> None:
    """At ingest lateness is judged before the window's stages run, so a late document
    gets one DLQ entry, the late one. A partition that resumes after an idle marker runs
    those stages before the close step can tell; their errors wait for it and go out
    only for documents that still count somewhere: the same entries, byte for byte."""
    window = FAILING_WINDOWS[case]
    _, dlq = _run_late(window, idle=True, fast=fast)
    _, at_ingest = _run_late(window, idle=False, fast=fast)
    assert sorted(map(_late_entry, dlq)) == sorted(map(_late_entry, at_ingest))
    expected = [(4, "late"), (5, "late"), (6, "error")]
    if case.startswith("hopping"):
        expected.append((6, "late"))  # [16,20) closed, [18,22) open: late and an error, once each
    assert _dlq_summary(dlq) == sorted(expected)
    err = next(d for d in dlq if d["errInfo"]["reason"] != LATE_REASON)
    assert err["doc"] == _late_doc("b", 6, 19)
    assert err["errInfo"]["reason"].startswith("Failed to process input document in $set stage (pipeline[1].")


@pytest.mark.parametrize("fast", [True, False])
def test_a_hopping_window_grouping_by_its_start_sends_each_late_document_once(fast: bool) -> None:
    """A ``$group`` ``_id`` reading the window's ``$meta`` puts one document in a group
    per window, in as many close buckets: the document is kept in one of them, so it is
    one DLQ entry naming every window it missed, as at ingest."""
    group = {"$group": {"_id": {"g": "$g", "w": {"$meta": "stream.window.start"}}, "xs": {"$push": "$x"}}}
    window = {"$hoppingWindow": {**HOP_4_2, "pipeline": [group]}}
    for buckets in (4, 16):
        _, dlq = _run_late(window, idle=True, fast=fast, buckets=buckets)
        _, at_ingest = _run_late(window, idle=False, fast=fast, buckets=buckets)
        assert sorted(map(_late_entry, dlq)) == sorted(map(_late_entry, at_ingest)) == sorted([
            _late_entry_of(_late_doc("b", 4, 2), [at(0), at(2)]),
            _late_entry_of(_late_doc("c", 5, 2.5), [at(0), at(2)]),
            _late_entry_of(_late_doc("b", 6, 19), [at(16)]),
        ])


@pytest.mark.parametrize("fast", [True, False])
def test_a_late_session_past_the_kept_documents_goes_to_the_dlq_as_its_partial_result(
        fast: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past ``KEEP_DOCS`` documents after the idle marker, a late session (as a late
    tumbling window's share) reaches the DLQ as the group's partial result, with the
    session's bounds; it is no result of its own."""
    from translator import runtime

    monkeypatch.setattr(runtime, "KEEP_DOCS", 0)
    out, dlq = _run_late(LATE_WINDOWS["session-group"], idle=True, fast=fast)
    assert sorted(json_util.dumps(d) for d in out if d["_stream_meta"]["window"]["start"] >= at(2)) == sorted(
        json_util.dumps(d) for d in [
            {"_id": "a", "n": 1, "xs": [2], "_stream_meta": {"window": {"start": at(20), "end": at(22), "partition": "a"}}},
            {"_id": "b", "n": 1, "xs": [6], "_stream_meta": {"window": {"start": at(19), "end": at(21), "partition": "b"}}},
        ])
    assert sorted(map(_late_entry, dlq)) == sorted(
        json_util.dumps({"errInfo": {"reason": LATE_REASON}, "doc": {
            "_id": g, "n": 1, "xs": [x], "_stream_meta": {"window": {"start": at(s), "end": at(s + 2), "partition": g}}},
            "processorName": "t", "missedWindowStartTimes": [at(s)]})
        for g, x, s in [("b", 4, 2), ("c", 5, 2.5)])


# ---- n computed from the group _id -----------------------------------------------------

GAMESCORES = [
    ("PlayerA", "G1", 31), ("PlayerB", "G1", 33), ("PlayerC", "G1", 99), ("PlayerD", "G1", 1),
    ("PlayerA", "G2", 10), ("PlayerB", "G2", 14), ("PlayerC", "G2", 66), ("PlayerD", "G2", 80),
]


@pytest.mark.parametrize("fast", [True, False])
def test_n_computed_from_the_group_id_as_in_the_manual(fast: bool) -> None:
    """The manual's $firstN example with ``n: {$cond: ...}`` on the ``_id`` document
    (https://www.mongodb.com/docs/manual/reference/operator/aggregation/firstN/), and the
    other N accumulators with the same ``n``; ``_id`` and ``n`` as in MongoDB."""
    docs = [{"playerId": p, "gameId": g, "score": s, "t": at(i * 0.1)} for i, (p, g, s) in enumerate(GAMESCORES)]
    n = {"$cond": {"if": {"$eq": ["$gameId", "G2"]}, "then": 1, "else": 3}}
    group = {"$group": {
        "_id": {"gameId": "$gameId"},
        "gamescores": {"$firstN": {"input": "$score", "n": n}},
        "last": {"$lastN": {"input": "$score", "n": n}},
        "top": {"$topN": {"n": n, "sortBy": {"score": -1}, "output": "$playerId"}},
        "bottom": {"$bottomN": {"n": n, "sortBy": {"score": -1}, "output": "$playerId"}},
        "max": {"$maxN": {"input": "$score", "n": n}},
        "min": {"$minN": {"input": "$score", "n": n}},
    }}
    r = run_pipeline([src(docs), tumbling(pipeline=[group]), {"$project": {"_stream_meta": 0}}], {"fastPaths": fast})
    assert r.dlq == []
    assert sorted(r.output, key=lambda d: d["_id"]["gameId"]) == [
        {"_id": {"gameId": "G1"}, "gamescores": [31, 33, 99], "last": [33, 99, 1], "top": ["PlayerC", "PlayerB", "PlayerA"],
         "bottom": ["PlayerB", "PlayerA", "PlayerD"], "max": [99, 33, 31], "min": [1, 31, 33]},
        {"_id": {"gameId": "G2"}, "gamescores": [10], "last": [80], "top": ["PlayerD"], "bottom": ["PlayerA"],
         "max": [80], "min": [10]},
    ]


def test_n_of_a_group_that_is_not_a_positive_integer_sends_its_documents_to_the_dlq() -> None:
    docs = [{"g": g, "k": k, "x": i, "t": at(i * 0.1)} for i, (g, k) in enumerate([("a", 2), ("a", 2), ("a", 2), ("b", 0), ("c", "x")])]
    group = {"$group": {"_id": {"g": "$g", "k": "$k"}, "xs": {"$firstN": {"input": "$x", "n": "$k"}}}}
    r = run_pipeline([src(docs), tumbling(pipeline=[group]), {"$project": {"_stream_meta": 0}}])
    assert r.output == [{"_id": {"g": "a", "k": 2}, "xs": [0, 1]}]
    assert [(d["doc"]["x"], d["errInfo"]["reason"]) for d in r.dlq] == [
        (3, "Failed to process input document in $group stage (pipeline[1].$tumblingWindow): "
            "$firstN: 'n' must be greater than 0, found 0"),
        (4, "Failed to process input document in $group stage (pipeline[1].$tumblingWindow): "
            "$firstN: Value for 'n' must be of integral type, but found 'x'"),
    ]
