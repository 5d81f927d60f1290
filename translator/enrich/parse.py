"""Readers for the enrichment stages, in the shape of :mod:`translator.parse` (typed
readers failing with the exact path). :data:`ENRICH_PARSERS` is merged into
:data:`translator.parse.STAGE_PARSERS`.

ASP pages: https://www.mongodb.com/docs/atlas/atlas-stream-processing/sp-agg-lookup/ ,
.../sp-agg-cachedlookup/ , .../sp-agg-setstreammeta/ , .../sp-agg-throttle/ .
"""

from __future__ import annotations

from typing import Any

from bson import Int64

from translator import parse as p
from translator.enrich.spec import HttpsStage, LookupStage, SetStreamMetaStage, ThrottleStage
from translator.errors import TranslateError

# Stages a $lookup's own pipeline may hold (run by mqlflow on the fetched documents).
LOOKUP_PIPELINE_STAGES = frozenset(
    {"$match", "$project", "$addFields", "$set", "$unset", "$replaceRoot", "$replaceWith",
     "$unwind", "$redact", "$sort", "$limit", "$count", "$lookup"}
)
EXTERNAL_FUNCTION_MESSAGE = (
    "$externalFunction calls AWS Lambda, which a self-hosted mqlflow cannot reach; "
    "call your function over HTTP with the $https stage instead"
)


def _set_stream_meta(v: Any, path: str) -> SetStreamMetaStage:
    d = p._obj(v, path)
    if not d:
        raise TranslateError(path, "expected at least one 'stream.<field>' to set")
    fields = []
    for k, spec in d.items():
        parts = k.split(".")
        if len(parts) < 2 or parts[0] != "stream" or any(not x or x.startswith("$") for x in parts):
            raise TranslateError(f"{path}.{k}", f"the field must be 'stream.<field>', got {k!r}")
        fields.append((tuple(parts[1:]), spec))
    return SetStreamMetaStage(path, tuple(fields))


def _external_function(v: Any, path: str) -> Any:
    raise TranslateError(path, EXTERNAL_FUNCTION_MESSAGE)


def _field_name(v: Any, path: str) -> str:
    s = p._str(v, path)
    if not s or s.startswith("$") or any(not x for x in s.split(".")):
        raise TranslateError(path, f"expected a field path without '$', got {s!r}")
    return s


def _lookup_common(d: dict[str, Any], path: str, nested: bool) -> dict[str, Any]:
    """``from``, ``localField``/``foreignField`` (together or not at all) and ``as``."""
    out: dict[str, Any] = {}
    if "from" not in d:
        raise TranslateError(path, "missing required field 'from'")
    frm = d["from"]
    if nested:
        if not isinstance(frm, str) or not frm:
            raise TranslateError(
                f"{path}.from", "a $lookup inside a $lookup pipeline takes the collection name ('from: \"coll\"') "
                "on the enclosing lookup's connection and database"
            )
        out.update(connection_name=None, db=None, coll=frm)
    else:
        if isinstance(frm, str):
            raise TranslateError(
                f"{path}.from", "in stream processing 'from' is {connectionName, db, coll} naming a MongoDB connection"
            )
        f = p._obj(frm, f"{path}.from", "{connectionName, db, coll}")
        p._check_keys(f, f"{path}.from", {"connectionName", "db", "coll"}, ("connectionName", "db", "coll"))
        out.update(
            connection_name=p._str(f["connectionName"], f"{path}.from.connectionName"),
            db=p._str(f["db"], f"{path}.from.db"),
            coll=p._str(f["coll"], f"{path}.from.coll"),
        )
    if ("localField" in d) != ("foreignField" in d):
        missing = "foreignField" if "localField" in d else "localField"
        raise TranslateError(path, f"'localField' and 'foreignField' go together: missing '{missing}'")
    if "localField" in d:
        out["local_field"] = _field_name(d["localField"], f"{path}.localField")
        out["foreign_field"] = _field_name(d["foreignField"], f"{path}.foreignField")
    if "as" not in d:
        raise TranslateError(path, "missing required field 'as'")
    out["as_field"] = _field_name(d["as"], f"{path}.as")
    return out


def _lookup_pipeline(v: Any, path: str) -> tuple[dict[str, Any], ...]:
    if not isinstance(v, list):
        raise TranslateError(path, f"expected an array of stages, got {p._tname(v)}")
    for i, st in enumerate(v):
        spath = f"{path}[{i}]"
        name = p._stage_name(st, spath)
        if name not in LOOKUP_PIPELINE_STAGES:
            raise TranslateError(
                f"{spath}.{name}",
                f"stage '{name}' is not supported inside a $lookup pipeline by mqlflow; "
                f"supported: {', '.join(sorted(LOOKUP_PIPELINE_STAGES))}",
            )
        if name == "$lookup":
            parse_lookup(st[name], f"{spath}.$lookup", nested=True)
        else:
            p.STAGE_PARSERS[name](st[name], f"{spath}.{name}")
    return tuple(v)


def parse_lookup(v: Any, path: str, nested: bool = False) -> LookupStage:
    d = p._obj(v, path)
    allowed = {"from", "localField", "foreignField", "let", "pipeline", "as"} | (set() if nested else {"parallelism"})
    p._check_keys(d, path, allowed)
    common = _lookup_common(d, path, nested)
    pipeline = _lookup_pipeline(d["pipeline"], f"{path}.pipeline") if "pipeline" in d else None
    if "local_field" not in common and pipeline is None:
        raise TranslateError(path, "needs 'localField' and 'foreignField', or 'pipeline' (with 'let'), or both")
    let = p.parse_let(d["let"], f"{path}.let") if "let" in d else ()
    if let and pipeline is None:
        raise TranslateError(f"{path}.let", "'let' needs a 'pipeline' that uses its variables")
    par = p._int(d.get("parallelism", 1), f"{path}.parallelism", 1)
    if par > 16:
        raise TranslateError(f"{path}.parallelism", f"must be at most 16, got {par}")
    return LookupStage(path=path, let=let, pipeline=pipeline, parallelism=par, **common)


def _cached_lookup(v: Any, path: str) -> LookupStage:
    d = p._obj(v, path)
    p._check_keys(
        d, path, {"ttl", "maxMemUsageBytes", "from", "localField", "foreignField", "as"},
        ("ttl", "from", "localField", "foreignField", "as"),
    )
    common = _lookup_common(d, path, nested=False)
    ttl = p.parse_duration(d["ttl"], f"{path}.ttl")
    mem = p._int(d["maxMemUsageBytes"], f"{path}.maxMemUsageBytes", 1) if "maxMemUsageBytes" in d else None
    return LookupStage(path=path, cached=True, ttl_ms=ttl, max_mem_bytes=mem, **common)


def _rate(v: Any, path: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, Int64)):
        raise TranslateError(path, f"expected a positive number, got {p._tname(v)}")
    if not v > 0:
        raise TranslateError(path, f"must be greater than 0, got {v!r}")
    return float(v)


THROTTLE_MISSING = "$throttle requires at least one of 'bytesPerSec' or 'messagesPerSec'"


def _throttle(v: Any, path: str) -> ThrottleStage:
    d = p._obj(v, path)
    p._check_keys(d, path, {"messagesPerSec", "bytesPerSec"})
    if "messagesPerSec" not in d and "bytesPerSec" not in d:
        raise TranslateError(path, THROTTLE_MISSING)
    return ThrottleStage(
        path,
        _rate(d["messagesPerSec"], f"{path}.messagesPerSec") if "messagesPerSec" in d else None,
        _rate(d["bytesPerSec"], f"{path}.bytesPerSec") if "bytesPerSec" in d else None,
    )


HTTPS_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
HTTPS_PAYLOAD_STAGES = frozenset({"$project", "$addFields", "$set", "$replaceRoot", "$replaceWith", "$unset"})


def _exprs(v: Any, path: str) -> tuple[tuple[str, Any], ...]:
    return tuple(p._obj(v, path).items())


def _https(v: Any, path: str) -> HttpsStage:
    d = p._obj(v, path)
    p._check_keys(
        d, path,
        {"connectionName", "path", "method", "parameters", "headers", "payload", "as", "onError", "config"},
        ("connectionName", "as"),
    )
    url_path = d.get("path")
    if url_path is not None and not isinstance(url_path, (str, dict)):
        raise TranslateError(f"{path}.path", f"expected a string or an expression, got {p._tname(url_path)}")
    method = d.get("method", "GET")
    if not isinstance(method, str) or method.upper() not in HTTPS_METHODS:
        raise TranslateError(f"{path}.method", f"expected one of {', '.join(HTTPS_METHODS)}; got {method!r}")
    payload = None
    if "payload" in d:
        raw = d["payload"]
        if not isinstance(raw, list):
            raise TranslateError(f"{path}.payload", f"expected an array of stages, got {p._tname(raw)}")
        for i, st in enumerate(raw):
            name = p._stage_name(st, f"{path}.payload[{i}]")
            if name not in HTTPS_PAYLOAD_STAGES:
                raise TranslateError(
                    f"{path}.payload[{i}].{name}",
                    f"stage '{name}' is not allowed in a $https payload; allowed: {', '.join(sorted(HTTPS_PAYLOAD_STAGES))}",
                )
            p.STAGE_PARSERS[name](st[name], f"{path}.payload[{i}].{name}")
        payload = tuple(raw)
    on_error = d.get("onError", "dlq")
    if not isinstance(on_error, str) or on_error.lower() not in ("dlq", "ignore", "fail"):
        raise TranslateError(f"{path}.onError", f"expected one of dlq, ignore, fail; got {on_error!r}")
    cfg = p._obj(d.get("config", {}), f"{path}.config")
    p._check_keys(cfg, f"{path}.config", {"connectionTimeoutSec", "requestTimeoutSec", "parseJsonStrings"})
    return HttpsStage(
        path=path,
        connection_name=p._str(d["connectionName"], f"{path}.connectionName"),
        url_path=url_path,
        method=method.upper(),
        parameters=_exprs(d.get("parameters", {}), f"{path}.parameters"),
        headers=_exprs(d.get("headers", {}), f"{path}.headers"),
        payload=payload,
        as_field=_field_name(d["as"], f"{path}.as"),
        on_error=on_error.lower(),
        connection_timeout_s=p._int(cfg.get("connectionTimeoutSec", 30), f"{path}.config.connectionTimeoutSec", 1),
        request_timeout_s=p._int(cfg.get("requestTimeoutSec", 60), f"{path}.config.requestTimeoutSec", 1),
        parse_json_strings=p._bool(cfg.get("parseJsonStrings", False), f"{path}.config.parseJsonStrings"),
    )


ENRICH_PARSERS: dict[str, p.StageParser] = {
    "$https": _https,
    "$setStreamMeta": _set_stream_meta,
    "$externalFunction": _external_function,
    "$lookup": parse_lookup,
    "$cachedLookup": _cached_lookup,
    "$throttle": _throttle,
}
