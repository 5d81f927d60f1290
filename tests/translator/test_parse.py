"""Bad pipelines fail at create time with one message naming the path (docs/semantics.md#pipeline)."""

from __future__ import annotations

from typing import Any

import pytest

from translator import ir
from translator.compile import compile_pipeline
from translator.connections import Connection, ConnectionRegistry
from translator.errors import TranslateError
from translator.options import ProcessorOptions
from translator.parse import parse_pipeline

SRC = {"$source": {"connectionName": "sample_stream_solar"}}
GROUP = {"$group": {"_id": "$g", "n": {"$sum": 1}}}


def window(**kw: Any) -> dict[str, Any]:
    spec = {"interval": {"size": 3, "unit": "second"}, "pipeline": [GROUP]}
    spec.update(kw)
    return {"$tumblingWindow": spec}


def err(stages: Any, **kw: Any) -> str:
    with pytest.raises(TranslateError) as info:
        compile_pipeline(stages, **kw)
    return str(info.value)


@pytest.mark.parametrize(
    ("stages", "message"),
    [
        ({"$source": {}}, "pipeline: expected an array of stages, got object"),
        ([], "pipeline: a pipeline needs at least a $source stage"),
        ([{"$match": {}}], "pipeline[0]: the first stage must be $source, got $match"),
        ([SRC, SRC], "pipeline[1].$source: $source may appear only once, as the first stage"),
        (
            [SRC, window(interval={"size": 3, "unit": "seconds"})],
            "pipeline[1].$tumblingWindow.interval.unit: expected one of ms, second, minute, hour, day; got 'seconds'",
        ),
        (
            [SRC, {"$match": {}}, window(interval={"size": 3, "unit": "seconds"})],
            "pipeline[2].$tumblingWindow.interval.unit: expected one of ms, second, minute, hour, day; got 'seconds'",
        ),
        ([SRC, {"$mach": {"a": 1}}], "pipeline[1].$mach: unknown stage '$mach'; did you mean '$match'?"),
        ([SRC, {"$Match": {"a": 1}}], "pipeline[1].$Match: unknown stage '$Match'; did you mean '$match'?"),
        ([SRC, {"$skip": 3}], "pipeline[1].$skip: stage '$skip' is not supported in stream processing"),
        ([SRC, {"$facet": {}}], "pipeline[1].$facet: stage '$facet' is not supported in stream processing"),
        (
            [SRC, GROUP],
            "pipeline[1].$group: $group is only allowed inside a window's pipeline ($tumblingWindow, $hoppingWindow, $sessionWindow)",
        ),
        (
            [SRC, window(), window()],
            "pipeline[2].$tumblingWindow: only one window stage is allowed; another one is at pipeline[1]",
        ),
        (
            [SRC, {"$merge": {"into": {"connectionName": "c", "db": "d", "coll": "c"}}}, {"$match": {}}],
            "pipeline[1].$merge: $merge must be the last stage",
        ),
        (
            [SRC, window(pipeline=[{"$validate": {"validator": {}}}])],
            "pipeline[1].$tumblingWindow.pipeline[0].$validate: stage '$validate' is not allowed inside a window pipeline",
        ),
        (
            [SRC, window(interval={"size": 0, "unit": "second"})],
            "pipeline[1].$tumblingWindow.interval.size: must be at least 1, got 0",
        ),
        (
            [SRC, window(interval={"size": "3", "unit": "second"})],
            "pipeline[1].$tumblingWindow.interval.size: expected an integer, got string",
        ),
        (
            [SRC, window(intervall={"size": 3, "unit": "second"})],
            "pipeline[1].$tumblingWindow.intervall: unknown field 'intervall'; did you mean 'interval'?; "
            "allowed: allowedLateness, boundary, idleTimeout, interval, offset, pipeline",
        ),
        (
            [SRC, window(boundary="processingTime", allowedLateness={"size": 1, "unit": "second"})],
            "pipeline[1].$tumblingWindow.allowedLateness: is not allowed with boundary: 'processingTime'",
        ),
        (
            [SRC, window(pipeline=[{"$group": {"_id": "$g", "n": {"$summ": 1}}}])],
            "pipeline[1].$tumblingWindow.pipeline[0].$group.n.$summ: unknown group accumulator '$summ'; did you mean '$sum'?",
        ),
        (
            [SRC, window(pipeline=[{"$group": {"n": {"$sum": 1}}}])],
            "pipeline[1].$tumblingWindow.pipeline[0].$group: a group specification must include an _id",
        ),
        (
            [SRC, {"$addFields": {"y": {"$addd": [1, 2]}}}],
            "pipeline[1].$addFields.y.$addd: unknown expression operator '$addd'; did you mean '$add'?",
        ),
        (
            [SRC, {"$addFields": {"y": "$$NOW"}}],
            "pipeline[1].$addFields.y: variable '$$NOW' is not supported in stream processing",
        ),
        (
            [SRC, {"$project": {"a": 1, "b": 0}}],
            "pipeline[1].$project: cannot mix inclusion and exclusion in one $project (except for _id)",
        ),
        (
            [{"$source": {"connectionName": "MyInputComesFromHere"}}],
            "pipeline[0].$source.connectionName: unknown connection 'MyInputComesFromHere'; "
            "known connections: sample_stream_solar",
        ),
        (
            [{"$source": {"connectionName": "sample_stream_solr"}}],
            "pipeline[0].$source.connectionName: unknown connection 'sample_stream_solr'; "
            "did you mean 'sample_stream_solar'?; known connections: sample_stream_solar",
        ),
        (
            [{"$source": {"connectionName": "sample_stream_solar", "timeField": "$timestamp"}}],
            "pipeline[0].$source.timeField: expected an expression such as {$dateFromString: ...} or {$toDate: ...}, got string",
        ),
        ([SRC, {"$unwind": "tags"}], "pipeline[1].$unwind: must be a field path starting with '$', got 'tags'"),
        (
            [SRC, {"$validate": {"validator": {}, "validationAction": "drop"}}],
            "pipeline[1].$validate.validationAction: expected one of discard, dlq; got 'drop'",
        ),
    ],
)
def test_bad_pipelines(stages: Any, message: str) -> None:
    assert err(stages) == message


def test_processor_needs_a_sink() -> None:
    assert err([SRC], require_sink=True) == (
        "pipeline: a stream processor needs a $merge or $emit stage as its last stage"
    )


def test_validation_dlq_needs_a_configured_dlq() -> None:
    reg = ConnectionRegistry({"out": Connection(name="out", type="mongodb", uri="mongodb://x")})
    stages = [
        SRC,
        {"$validate": {"validator": {"a": 1}, "validationAction": "dlq"}},
        {"$merge": {"into": {"connectionName": "out", "db": "d", "coll": "c"}}},
    ]
    assert err(stages, registry=reg, require_sink=True) == (
        "pipeline[1].$validate.validationAction: validationAction 'dlq' needs a dead letter queue: "
        "pass {dlq: {connectionName, db, coll}} in the processor options"
    )
    opts = ProcessorOptions(dlq=ir.DlqTarget("out", "d", "dlq"))
    assert compile_pipeline(stages, reg, opts, require_sink=True).sink is not None


def test_ir_is_typed_and_frozen() -> None:
    p = parse_pipeline(
        [
            {"$source": {"documents": [{"a": 1}], "timeField": {"$toDate": "$t"}}},
            {"$hoppingWindow": {"interval": {"size": 10, "unit": "second"}, "hopSize": {"size": 2, "unit": "second"},
                                "allowedLateness": 0, "pipeline": [GROUP]}},
        ]
    )
    w = p.window
    assert isinstance(w, ir.WindowStage)
    assert (w.kind, w.interval_ms, w.hop_ms, w.allowed_lateness_ms) == ("hopping", 10_000, 2_000, 0)
    assert isinstance(w.pipeline[0], ir.GroupStage)
    with pytest.raises(AttributeError):
        w.interval_ms = 1  # type: ignore[misc]


def test_default_allowed_lateness_is_three_seconds() -> None:
    p = parse_pipeline([SRC, window()])
    assert p.window is not None and p.window.allowed_lateness_ms == 3000


def _merge(**kw: Any) -> list[dict[str, Any]]:
    return [SRC, {"$merge": {"into": {"connectionName": "c", "db": "d", "coll": "c"}, **kw}}]


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"let": {"x": 1}}, "pipeline[1].$merge.let: 'let' is only allowed when whenMatched is a pipeline, which reads its variables"),
        ({"let": {"x": 1}, "whenMatched": "replace"}, "pipeline[1].$merge.let: 'let' is only allowed when whenMatched is a pipeline, which reads its variables"),
        ({"let": {"new": "$n"}, "whenMatched": [{"$set": {"a": 1}}]},
         "pipeline[1].$merge.let.new: 'let' may not define a value for the reserved 'new' variable other than '$$ROOT'"),
        ({"let": {"Bad": 1}, "whenMatched": [{"$set": {"a": 1}}]},
         "pipeline[1].$merge.let.Bad: variable names must begin with a lowercase letter and hold letters, digits or '_'"),
        ({"let": [1], "whenMatched": [{"$set": {"a": 1}}]}, "pipeline[1].$merge.let: expected an object, got array"),
    ],
)
def test_merge_let_errors(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(TranslateError) as info:
        parse_pipeline(_merge(**kw))
    assert str(info.value) == message


def test_merge_let_is_kept_in_the_ir() -> None:
    p = parse_pipeline(_merge(let={"inc": "$n", "new": "$$ROOT"}, whenMatched=[{"$set": {"a": "$$inc"}}]))
    assert isinstance(p.sink, ir.MergeStage)
    assert p.sink.let == (("inc", "$n"), ("new", "$$ROOT"))
    plain = parse_pipeline(_merge()).sink
    assert isinstance(plain, ir.MergeStage) and plain.let is None


def test_merge_modes_as_expressions_are_kept_for_the_sink() -> None:
    p = parse_pipeline(_merge(whenMatched={"$cond": ["$x", "merge", "replace"]}, whenNotMatched={"$literal": "discard"}))
    assert isinstance(p.sink, ir.MergeStage)
    assert p.sink.when_matched == ir.ModeExpr({"$cond": ["$x", "merge", "replace"]})
    assert p.sink.when_not_matched == ir.ModeExpr({"$literal": "discard"})
    with pytest.raises(TranslateError) as info:
        parse_pipeline(_merge(whenNotMatched="fail"))
    assert str(info.value).startswith("pipeline[1].$merge.whenNotMatched: ")
    field = parse_pipeline(_merge(whenMatched="$mode")).sink
    assert isinstance(field, ir.MergeStage) and field.when_matched == ir.ModeExpr("$mode")
