"""Parse and validate an Atlas stream pipeline (a list of stage documents) into IR.

Placement rules follow ASP (docs/semantics.md#pipeline): ``$source`` first and exactly once, at most
one window, the sink (``$merge``/``$emit``) last, window-only stages only inside a
window's ``pipeline``, and ASP's unsupported stages named as such. Each stage is parsed
by one function in :data:`STAGE_PARSERS`; every error is a :class:`TranslateError`
naming its path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, cast

from bson import Int64

from translator import ir
from translator.errors import TranslateError, did_you_mean

UNITS_MS: dict[str, int] = {
    "ms": 1,
    "second": 1000,
    "minute": 60_000,
    "hour": 3_600_000,
    "day": 86_400_000,
}
UNITS_TEXT = ", ".join(UNITS_MS)

# ASP stages we know about but do not (yet) run, or that ASP itself rejects.
ASP_UNSUPPORTED = frozenset(
    {
        "$skip", "$bucket", "$bucketAuto", "$facet", "$setWindowFields", "$densify", "$fill",
        "$sample", "$unionWith", "$graphLookup", "$documents", "$changeStream", "$out",
        "$geoNear", "$indexStats", "$collStats", "$currentOp", "$listSessions", "$search",
        "$searchMeta", "$vectorSearch", "$sortByCount", "$lookup_", "$changeStreamSplitLargeEvent",
    }
)
NOT_YET: frozenset[str] = frozenset()
WINDOW_STAGES = {"$tumblingWindow": "tumbling", "$hoppingWindow": "hopping", "$sessionWindow": "session"}
WINDOW_ONLY = frozenset({"$group", "$sort", "$limit", "$count"})
INNER_ALLOWED = frozenset(
    {"$group", "$sort", "$limit", "$count", "$match", "$project", "$addFields", "$set",
     "$unset", "$replaceRoot", "$replaceWith", "$unwind", "$lookup", "$cachedLookup", "$setStreamMeta", "$https"}
)
SINKS = frozenset({"$merge", "$emit"})


# ---- small typed readers ---------------------------------------------------------------


def _obj(v: Any, path: str, what: str = "an object") -> dict[str, Any]:
    if not isinstance(v, dict):
        raise TranslateError(path, f"expected {what}, got {_tname(v)}")
    return v


def _tname(v: Any) -> str:
    from translator.mql.values import bson_type

    return bson_type(v)


def _check_keys(d: dict[str, Any], path: str, allowed: set[str] | frozenset[str], required: tuple[str, ...] = ()) -> None:
    for k in d:
        if k not in allowed:
            raise TranslateError(
                f"{path}.{k}", f"unknown field '{k}'{did_you_mean(k, allowed)}; allowed: {', '.join(sorted(allowed))}"
            )
    for r in required:
        if r not in d:
            raise TranslateError(path, f"missing required field '{r}'")


def _str(v: Any, path: str) -> str:
    if not isinstance(v, str):
        raise TranslateError(path, f"expected a string, got {_tname(v)}")
    return v


def _int(v: Any, path: str, minimum: int | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, Int64, float)):
        raise TranslateError(path, f"expected an integer, got {_tname(v)}")
    if isinstance(v, float):
        if not v.is_integer():
            raise TranslateError(path, f"expected an integer, got {v!r}")
        v = int(v)
    if minimum is not None and v < minimum:
        raise TranslateError(path, f"must be at least {minimum}, got {int(v)}")
    return int(v)


def _bool(v: Any, path: str) -> bool:
    if not isinstance(v, bool):
        raise TranslateError(path, f"expected a boolean, got {_tname(v)}")
    return v


def _enum(v: Any, path: str, choices: tuple[str, ...]) -> str:
    if v not in choices:
        raise TranslateError(path, f"expected one of {', '.join(choices)}; got {v!r}")
    return cast(str, v)


def parse_duration(v: Any, path: str, *, allow_zero: bool = False) -> int:
    """``{size, unit}`` -> milliseconds (ASP units: ms, second, minute, hour, day)."""
    if allow_zero and not isinstance(v, (dict, bool)) and isinstance(v, (int, float, Int64)) and v == 0:
        return 0
    d = _obj(v, path, "{size, unit}")
    _check_keys(d, path, {"size", "unit"}, ("size", "unit"))
    size = _int(d["size"], f"{path}.size", 0 if allow_zero else 1)
    unit = d["unit"]
    if unit not in UNITS_MS:
        raise TranslateError(f"{path}.unit", f"expected one of {UNITS_TEXT}; got {unit!r}")
    return size * UNITS_MS[unit]


# ---- stage parsers ---------------------------------------------------------------------

StageParser = Callable[[Any, str], Any]


def _p_source(v: Any, path: str) -> ir.SourceStage:
    d = _obj(v, path)
    _check_keys(
        d, path,
        {"connectionName", "documents", "timeField", "tsFieldName", "topic", "partitionIdleTimeout",
         "config", "db", "coll", "initialSync", "readPreference", "readPreferenceTags"},
    )
    conn = d.get("connectionName")
    docs = d.get("documents")
    if conn is None and docs is None:
        raise TranslateError(path, "needs either 'connectionName' or 'documents'")
    if conn is not None and docs is not None:
        raise TranslateError(path, "takes 'connectionName' or 'documents', not both")
    if conn is not None:
        _str(conn, f"{path}.connectionName")
    if docs is not None:
        if not isinstance(docs, list):
            raise TranslateError(f"{path}.documents", f"expected an array, got {_tname(docs)}")
        for i, doc in enumerate(docs):
            _obj(doc, f"{path}.documents[{i}]", "a document")
    time_field = d.get("timeField")
    if time_field is not None:
        tf = _obj(time_field, f"{path}.timeField", "an expression such as {$dateFromString: ...} or {$toDate: ...}")
        if len(tf) != 1 or next(iter(tf)) not in ("$dateFromString", "$toDate", "$convert", "$dateAdd", "$dateTrunc"):
            raise TranslateError(
                f"{path}.timeField",
                "must be a $dateFromString or $toDate expression (ASP), got "
                + ", ".join(map(str, tf)),
            )
    topic = d.get("topic")
    topics: tuple[str, ...] = ()
    if topic is not None:
        if isinstance(topic, list):
            topics = tuple(_str(t, f"{path}.topic[{i}]") for i, t in enumerate(topic))
        else:
            topics = (_str(topic, f"{path}.topic"),)
    idle = d.get("partitionIdleTimeout")
    coll = d.get("coll")
    colls: tuple[str, ...] = ()
    if coll is not None:
        if isinstance(coll, list):
            colls = tuple(_str(c, f"{path}.coll[{i}]") for i, c in enumerate(coll))
        else:
            colls = (_str(coll, f"{path}.coll"),)
    return ir.SourceStage(
        path=path,
        connection_name=conn,
        documents=tuple(docs) if docs is not None else None,
        time_field=time_field,
        ts_field_name=_str(d.get("tsFieldName", "_ts"), f"{path}.tsFieldName"),
        topic=topics,
        partition_idle_timeout_ms=parse_duration(idle, f"{path}.partitionIdleTimeout") if idle is not None else None,
        config=dict(_obj(d.get("config", {}), f"{path}.config")),
        db=_str(d["db"], f"{path}.db") if "db" in d else None,
        coll=colls,
        initial_sync=d.get("initialSync"),
        read_preference=d.get("readPreference"),
        read_preference_tags=d.get("readPreferenceTags"),
    )


def _p_validate(v: Any, path: str) -> ir.ValidateStage:
    d = _obj(v, path)
    _check_keys(d, path, {"validator", "validationAction"}, ("validator",))
    action = _enum(d.get("validationAction", "discard"), f"{path}.validationAction", ("discard", "dlq"))
    return ir.ValidateStage(path, _obj(d["validator"], f"{path}.validator"), cast(Literal["discard", "dlq"], action))


def _p_match(v: Any, path: str) -> ir.MatchStage:
    return ir.MatchStage(path, _obj(v, path, "a query document"))


def _p_project(v: Any, path: str) -> ir.ProjectStage:
    d = _obj(v, path, "a projection document")
    if not d:
        raise TranslateError(path, "$project requires at least one output field")
    return ir.ProjectStage(path, d)


def _p_add_fields(v: Any, path: str) -> ir.AddFieldsStage:
    return ir.AddFieldsStage(path, _obj(v, path))


def _p_unset(v: Any, path: str) -> ir.UnsetStage:
    if isinstance(v, str):
        return ir.UnsetStage(path, (v,))
    if isinstance(v, list) and v:
        return ir.UnsetStage(path, tuple(_str(x, f"{path}[{i}]") for i, x in enumerate(v)))
    raise TranslateError(path, f"expected a field name or a non-empty array of field names, got {_tname(v)}")


def _p_replace_root(v: Any, path: str) -> ir.ReplaceRootStage:
    d = _obj(v, path)
    _check_keys(d, path, {"newRoot"}, ("newRoot",))
    return ir.ReplaceRootStage(path, d["newRoot"])


def _p_replace_with(v: Any, path: str) -> ir.ReplaceRootStage:
    return ir.ReplaceRootStage(path, v)


def _p_unwind(v: Any, path: str) -> ir.UnwindStage:
    if isinstance(v, str):
        d: dict[str, Any] = {"path": v}
    else:
        d = _obj(v, path, "a field path or {path, includeArrayIndex, preserveNullAndEmptyArrays}")
        _check_keys(d, path, {"path", "includeArrayIndex", "preserveNullAndEmptyArrays"}, ("path",))
    p = _str(d["path"], f"{path}.path" if not isinstance(v, str) else path)
    if not p.startswith("$") or p.startswith("$$") or len(p) < 2:
        raise TranslateError(f"{path}.path" if not isinstance(v, str) else path, f"must be a field path starting with '$', got {p!r}")
    idx = d.get("includeArrayIndex")
    if idx is not None:
        idx = _str(idx, f"{path}.includeArrayIndex")
        if idx.startswith("$"):
            raise TranslateError(f"{path}.includeArrayIndex", "must be a field name without '$'")
    return ir.UnwindStage(
        path, p[1:], idx, _bool(d.get("preserveNullAndEmptyArrays", False), f"{path}.preserveNullAndEmptyArrays")
    )


def _p_redact(v: Any, path: str) -> ir.RedactStage:
    return ir.RedactStage(path, v)


def _p_group(v: Any, path: str) -> ir.GroupStage:
    from translator.accumulators import ACCUMULATORS

    d = _obj(v, path)
    if "_id" not in d:
        raise TranslateError(path, "a group specification must include an _id")
    accs = []
    for name, spec in d.items():
        if name == "_id":
            continue
        if "." in name:
            raise TranslateError(f"{path}.{name}", "the field name may not contain '.'")
        if not isinstance(spec, dict) or len(spec) != 1:
            raise TranslateError(f"{path}.{name}", "must be an accumulator object such as {$sum: <expression>}")
        (op,) = spec
        if op not in ACCUMULATORS:
            raise TranslateError(
                f"{path}.{name}.{op}", f"unknown group accumulator '{op}'{did_you_mean(op, ACCUMULATORS)}"
            )
        accs.append(ir.Accumulation(name, op, spec[op]))
    return ir.GroupStage(path, d["_id"], tuple(accs))


def _p_sort(v: Any, path: str) -> ir.SortStage:
    d = _obj(v, path)
    if not d:
        raise TranslateError(path, "$sort needs at least one sort key")
    keys = []
    for k, direction in d.items():
        if isinstance(direction, bool) or direction not in (1, -1):
            raise TranslateError(f"{path}.{k}", f"sort direction must be 1 or -1, got {direction!r}")
        keys.append((k, int(direction)))
    return ir.SortStage(path, tuple(keys))


def _p_limit(v: Any, path: str) -> ir.LimitStage:
    return ir.LimitStage(path, _int(v, path, 1))


def _p_count(v: Any, path: str) -> ir.CountStage:
    name = _str(v, path)
    if not name or name.startswith("$") or "." in name:
        raise TranslateError(path, "the count field must be a non-empty name without '$' or '.'")
    return ir.CountStage(path, name)


def _p_window(kind: str) -> StageParser:
    def parse(v: Any, path: str) -> ir.WindowStage:
        d = _obj(v, path)
        common = {"pipeline", "allowedLateness", "idleTimeout", "boundary", "offset"}
        required: tuple[str, ...]
        if kind == "tumbling":
            allowed, required = common | {"interval"}, ("interval", "pipeline")
        elif kind == "hopping":
            allowed, required = common | {"interval", "hopSize"}, ("interval", "hopSize", "pipeline")
        else:
            allowed, required = {"partitionBy", "gap", "pipeline", "allowedLateness"}, ("partitionBy", "gap", "pipeline")
        _check_keys(d, path, allowed, required)
        boundary = _enum(d.get("boundary", "eventTime"), f"{path}.boundary", ("eventTime", "processingTime"))
        if boundary == "processingTime":
            for k in ("allowedLateness", "idleTimeout"):
                if k in d:
                    raise TranslateError(f"{path}.{k}", "is not allowed with boundary: 'processingTime'")
        inner = d["pipeline"]
        if not isinstance(inner, list) or not inner:
            raise TranslateError(f"{path}.pipeline", "expected a non-empty array of stages")
        stages = tuple(_parse_inner(s, f"{path}.pipeline[{i}]") for i, s in enumerate(inner))
        groups = [s for s in stages if isinstance(s, ir.GroupStage)]
        if len(groups) > 1:
            raise TranslateError(f"{path}.pipeline", "a window pipeline may contain at most one $group")
        offset_ms = 0
        if "offset" in d:
            off = _obj(d["offset"], f"{path}.offset", "{offsetFromUtc, unit}")
            _check_keys(off, f"{path}.offset", {"offsetFromUtc", "unit"}, ("offsetFromUtc", "unit"))
            unit = off["unit"]
            if unit not in UNITS_MS:
                raise TranslateError(f"{path}.offset.unit", f"expected one of {UNITS_TEXT}; got {unit!r}")
            offset_ms = _int(off["offsetFromUtc"], f"{path}.offset.offsetFromUtc") * UNITS_MS[unit]
        lateness = 3000
        if "allowedLateness" in d:
            lateness = parse_duration(d["allowedLateness"], f"{path}.allowedLateness", allow_zero=True)
        idle = parse_duration(d["idleTimeout"], f"{path}.idleTimeout") if "idleTimeout" in d else None
        interval = parse_duration(d["interval"], f"{path}.interval") if "interval" in d else 0
        hop = parse_duration(d["hopSize"], f"{path}.hopSize") if "hopSize" in d else 0
        gap = parse_duration(d["gap"], f"{path}.gap") if "gap" in d else 0
        return ir.WindowStage(
            path=path,
            kind=cast(ir.WindowKind, kind),
            pipeline=stages,
            interval_ms=interval,
            hop_ms=hop,
            offset_ms=offset_ms,
            allowed_lateness_ms=lateness,
            idle_timeout_ms=idle,
            boundary=cast(Literal["eventTime", "processingTime"], boundary),
            partition_by=d.get("partitionBy"),
            gap_ms=gap,
        )

    return parse


def parse_let(v: Any, path: str) -> tuple[tuple[str, Any], ...]:
    """A ``let`` document of user variables (``$lookup``, ``$merge``), names checked."""
    d = _obj(v, path)
    for n in d:
        if not n or not (n[0].islower() or n[0] == "_") or not all(c.isalnum() or c == "_" for c in n):
            raise TranslateError(f"{path}.{n}", "variable names must begin with a lowercase letter and hold letters, digits or '_'")
    return tuple(d.items())


def _merge_let(d: dict[str, Any], path: str) -> tuple[tuple[str, Any], ...] | None:
    """``$merge.let``: variables for the whenMatched pipeline only, as in MongoDB's $merge
    (https://www.mongodb.com/docs/manual/reference/operator/aggregation/merge/); ``new``
    is reserved and may only be ``"$$ROOT"``."""
    if "let" not in d:
        return None
    if not isinstance(d.get("whenMatched"), list):
        raise TranslateError(f"{path}.let", "'let' is only allowed when whenMatched is a pipeline, which reads its variables")
    let = parse_let(d["let"], f"{path}.let")
    for n, x in let:
        if n == "new" and x != "$$ROOT":
            raise TranslateError(f"{path}.let.new", "'let' may not define a value for the reserved 'new' variable other than '$$ROOT'")
    return let


def _is_mode_expr(v: Any) -> bool:
    """An operator object or a ``$field`` path: a whenMatched/whenNotMatched chosen per document."""
    return isinstance(v, dict) or (isinstance(v, str) and v.startswith("$"))


def _p_merge(v: Any, path: str) -> ir.MergeStage:
    d = _obj(v, path)
    _check_keys(d, path, {"into", "on", "whenMatched", "whenNotMatched", "parallelism", "let"}, ("into",))
    into = _obj(d["into"], f"{path}.into", "{connectionName, db, coll}")
    _check_keys(into, f"{path}.into", {"connectionName", "db", "coll"}, ("connectionName", "db", "coll"))
    for k in ("db", "coll"):
        if not isinstance(into[k], (str, dict)):
            raise TranslateError(f"{path}.into.{k}", f"expected a string or an expression, got {_tname(into[k])}")
    on = d.get("on", "_id")
    if isinstance(on, str):
        on_t: tuple[str, ...] = (on,)
    elif isinstance(on, list) and on:
        on_t = tuple(_str(x, f"{path}.on[{i}]") for i, x in enumerate(on))
    else:
        raise TranslateError(f"{path}.on", "expected a field name or a non-empty array of field names")
    wm = d.get("whenMatched", "merge")
    when_matched: str | tuple[dict[str, Any], ...] | ir.ModeExpr
    if isinstance(wm, list):
        when_matched = tuple(_obj(s, f"{path}.whenMatched[{i}]", "a stage") for i, s in enumerate(wm))
    elif _is_mode_expr(wm):  # per document, resolved by the sink
        when_matched = ir.ModeExpr(wm)
    else:
        when_matched = _enum(wm, f"{path}.whenMatched", ("replace", "keepExisting", "merge", "delete", "fail"))
    raw_wnm = d.get("whenNotMatched", "insert")
    wnm: Literal["insert", "discard"] | ir.ModeExpr
    if _is_mode_expr(raw_wnm):
        wnm = ir.ModeExpr(raw_wnm)
    else:
        wnm = cast(Literal["insert", "discard"], _enum(raw_wnm, f"{path}.whenNotMatched", ("insert", "discard")))
    return ir.MergeStage(
        path=path,
        connection_name=_str(into["connectionName"], f"{path}.into.connectionName"),
        db=into["db"],
        coll=into["coll"],
        on=on_t,
        when_matched=when_matched,
        when_not_matched=wnm,
        parallelism=_int(d.get("parallelism", 1), f"{path}.parallelism", 1),
        let=_merge_let(d, path),
    )


TIMESERIES_KEYS = frozenset({"timeField", "metaField", "granularity", "bucketMaxSpanSeconds", "bucketRoundingSeconds"})


def _p_emit_timeseries(d: dict[str, Any], path: str) -> ir.EmitTimeSeriesStage:
    """``{connectionName, db, coll, timeseries: {timeField, metaField?, granularity?, ...}}``."""
    _check_keys(d, path, {"connectionName", "db", "coll", "timeseries"}, ("connectionName", "db", "coll", "timeseries"))
    for k in ("db", "coll"):
        if not isinstance(d[k], (str, dict)):
            raise TranslateError(f"{path}.{k}", f"expected a string or an expression, got {_tname(d[k])}")
    ts = _obj(d["timeseries"], f"{path}.timeseries", "{timeField, metaField, granularity}")
    _check_keys(ts, f"{path}.timeseries", TIMESERIES_KEYS, ("timeField",))
    time_field = _str(ts["timeField"], f"{path}.timeseries.timeField")
    if "metaField" in ts:
        _str(ts["metaField"], f"{path}.timeseries.metaField")
    if "granularity" in ts:
        _enum(ts["granularity"], f"{path}.timeseries.granularity", ("seconds", "minutes", "hours"))
    for k in ("bucketMaxSpanSeconds", "bucketRoundingSeconds"):
        if k in ts:
            _int(ts[k], f"{path}.timeseries.{k}", 1)
    return ir.EmitTimeSeriesStage(
        path, _str(d["connectionName"], f"{path}.connectionName"), d["db"], d["coll"], time_field, tuple(ts.items())
    )


def _p_emit(v: Any, path: str) -> ir.EmitStage | ir.EmitTimeSeriesStage:
    d = _obj(v, path)
    _check_keys(d, path, {"connectionName", "topic", "config", "db", "coll", "timeseries"}, ("connectionName",))
    if "topic" not in d and ("db" in d or "coll" in d or "timeseries" in d):
        return _p_emit_timeseries(d, path)
    if "topic" not in d:
        raise TranslateError(path, "missing required field 'topic'")
    for k in ("db", "coll", "timeseries"):
        if k in d:
            raise TranslateError(f"{path}.{k}", f"'{k}' is for $emit to a time series collection, which has no 'topic'")
    if not isinstance(d["topic"], (str, dict)):
        raise TranslateError(f"{path}.topic", f"expected a string or an expression, got {_tname(d['topic'])}")
    return ir.EmitStage(
        path, _str(d["connectionName"], f"{path}.connectionName"), d["topic"],
        dict(_obj(d.get("config", {}), f"{path}.config")),
    )


STAGE_PARSERS: dict[str, StageParser] = {
    "$source": _p_source,
    "$validate": _p_validate,
    "$match": _p_match,
    "$project": _p_project,
    "$addFields": _p_add_fields,
    "$set": _p_add_fields,
    "$unset": _p_unset,
    "$replaceRoot": _p_replace_root,
    "$replaceWith": _p_replace_with,
    "$unwind": _p_unwind,
    "$redact": _p_redact,
    "$group": _p_group,
    "$sort": _p_sort,
    "$limit": _p_limit,
    "$count": _p_count,
    "$tumblingWindow": _p_window("tumbling"),
    "$hoppingWindow": _p_window("hopping"),
    "$sessionWindow": _p_window("session"),
    "$merge": _p_merge,
    "$emit": _p_emit,
}
# The enrichment stages live in translator/enrich (their readers use the ones above).
from translator.enrich.parse import ENRICH_PARSERS  # noqa: E402

STAGE_PARSERS.update(ENRICH_PARSERS)
KNOWN_STAGES = frozenset(STAGE_PARSERS) | ASP_UNSUPPORTED | NOT_YET


def _stage_name(stage: Any, path: str) -> str:
    if not isinstance(stage, dict):
        raise TranslateError(path, f"each stage must be a document, got {_tname(stage)}")
    if len(stage) != 1:
        keys = ", ".join(map(str, stage)) or "nothing"
        raise TranslateError(path, f"a stage must have exactly one field (its name), got {keys}")
    (name,) = stage
    if name in ASP_UNSUPPORTED:
        raise TranslateError(f"{path}.{name}", f"stage '{name}' is not supported in stream processing")
    if name in NOT_YET:
        raise TranslateError(f"{path}.{name}", f"stage '{name}' is not supported by mqlflow yet")
    if name not in STAGE_PARSERS:
        raise TranslateError(f"{path}.{name}", f"unknown stage '{name}'{did_you_mean(str(name), KNOWN_STAGES)}")
    return cast(str, name)


def _parse_inner(stage: Any, path: str) -> ir.Stage:
    name = _stage_name(stage, path)
    if name not in INNER_ALLOWED:
        raise TranslateError(f"{path}.{name}", f"stage '{name}' is not allowed inside a window pipeline")
    return cast(ir.Stage, STAGE_PARSERS[name](stage[name], f"{path}.{name}"))


def parse_pipeline(stages: Any, *, require_sink: bool = False) -> ir.Pipeline:
    """Validate the placement rules and parse each stage. Raises TranslateError."""
    if not isinstance(stages, list):
        raise TranslateError("pipeline", f"expected an array of stages, got {_tname(stages)}")
    if not stages:
        raise TranslateError("pipeline", "a pipeline needs at least a $source stage")
    names = [_stage_name(s, f"pipeline[{i}]") for i, s in enumerate(stages)]
    if names[0] != "$source":
        raise TranslateError("pipeline[0]", f"the first stage must be $source, got {names[0]}")
    source = _p_source(stages[0]["$source"], "pipeline[0].$source")
    body: list[ir.Stage] = []
    sink: ir.SinkStage | None = None
    window_at: int | None = None
    for i in range(1, len(stages)):
        name, path = names[i], f"pipeline[{i}].{names[i]}"
        if name == "$source":
            raise TranslateError(path, "$source may appear only once, as the first stage")
        if name in SINKS:
            if i != len(stages) - 1:
                raise TranslateError(path, f"{name} must be the last stage")
            sink = cast(ir.SinkStage, STAGE_PARSERS[name](stages[i][name], path))
            continue
        if name in WINDOW_ONLY:
            raise TranslateError(path, f"{name} is only allowed inside a window's pipeline ($tumblingWindow, $hoppingWindow, $sessionWindow)")
        if name in WINDOW_STAGES:
            if window_at is not None:
                raise TranslateError(path, f"only one window stage is allowed; another one is at pipeline[{window_at}]")
            window_at = i
        body.append(cast(ir.Stage, STAGE_PARSERS[name](stages[i][name], path)))
    if require_sink and sink is None:
        raise TranslateError("pipeline", "a stream processor needs a $merge or $emit stage as its last stage")
    return ir.Pipeline(source=source, stages=tuple(body), sink=sink, raw=tuple(stages))
