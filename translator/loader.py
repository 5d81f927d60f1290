"""Load pipelines and processor options from Extended JSON, keeping BSON types exact.

``bson.json_util`` turns ``{"$numberLong": "5"}`` into ``Int64``, ``{"$date": ...}``
into a tz-aware ``datetime`` and ``{"$numberDecimal": ...}`` into ``Decimal128``, so an
int stays an int and a double stays a double (docs/semantics.md#types).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bson import json_util

from translator.errors import TranslateError, did_you_mean
from translator.ir import DlqTarget
from translator.options import ProcessorOptions
from translator.parse import _check_keys, _obj, _str

JSON_OPTIONS = json_util.JSONOptions(tz_aware=True, tzinfo=None)


def loads(text: str, where: str = "pipeline") -> Any:
    try:
        return json_util.loads(text, json_options=json_util.JSONOptions(tz_aware=True))
    except (ValueError, TypeError) as exc:
        raise TranslateError(where, f"not valid Extended JSON: {exc}") from None


def load_pipeline_file(path: str | Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Return ``(pipeline, options)`` from a file holding either a stage array or
    ``{"pipeline": [...], "options": {...}}``."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise TranslateError(str(p), f"cannot read pipeline file: {exc.strerror}") from None
    data = loads(text, str(p))
    if isinstance(data, list):
        return data, {}
    if isinstance(data, dict) and "pipeline" in data:
        opts = data.get("options", {})
        if not isinstance(opts, dict):
            raise TranslateError(f"{p}: options", "expected an object")
        extra = {k: v for k, v in data.items() if k not in ("pipeline", "options")}
        if "name" in extra:
            opts = {"name": extra["name"], **opts}
        return data["pipeline"], opts
    raise TranslateError(str(p), "expected an array of stages or {pipeline: [...], options: {...}}")


_OPTION_FIELDS = {
    "name": str,
    "batchSize": int,
    "sinkBatchSize": int,
    "sinkFlushIntervalSeconds": float,
    "windowBuckets": int,
}
_IGNORED = {"tier", "workers", "resumeFromCheckpoint", "streamMetaFieldName", "enableAutoScaling"}


_DLQ_FIELDS = ("connectionName", "db", "coll")
# mqlflow's own field of the ``dlq`` option (ASP has no such choice: its DLQ is best effort).
DLQ_MODES = ("durable", "best-effort")


def dlq_target(v: Any) -> DlqTarget:
    """The ``dlq`` option's shape, checked here only (the service and ``mqlflow run``
    both come through :func:`options_from_mapping`); whether the connection exists is
    the registry's check in ``compile_pipeline``. See docs/semantics.md#dlq.

    ``mode`` (``"durable"`` or ``"best-effort"``) picks the DLQ writer's trade-off for
    this processor; without it the process default (``MQLFLOW_DLQ_MODE``) applies."""
    d = _obj(v, "options.dlq", "{connectionName, db, coll}")
    _check_keys(d, "options.dlq", {*_DLQ_FIELDS, "mode"}, _DLQ_FIELDS)
    for f in _DLQ_FIELDS:
        if not _str(d[f], f"options.dlq.{f}"):
            raise TranslateError(f"options.dlq.{f}", "must be a non-empty string")
    mode = None
    if "mode" in d:
        mode = _str(d["mode"], "options.dlq.mode")
        if mode not in DLQ_MODES:
            raise TranslateError(
                "options.dlq.mode", f"expected one of {', '.join(DLQ_MODES)}; got {mode!r}{did_you_mean(mode, DLQ_MODES)}"
            )
    return DlqTarget(d["connectionName"], d["db"], d["coll"], mode)


def options_from_mapping(m: dict[str, Any], name: str = "mqlflow") -> ProcessorOptions:
    """Processor options as mongosh/drivers send them (``{dlq: {connectionName, db, coll}}``)."""
    kwargs: dict[str, Any] = {"name": name}
    for k, v in m.items():
        if k == "dlq":
            kwargs["dlq"] = dlq_target(v)
        elif k == "fastPaths":
            if not isinstance(v, bool):
                raise TranslateError("options.fastPaths", f"expected bool, got {type(v).__name__}")
            kwargs["fast_paths"] = v
        elif k in _OPTION_FIELDS:
            typ = _OPTION_FIELDS[k]
            if isinstance(v, bool) or not isinstance(v, (int, float, str)) or (typ is not str and isinstance(v, str)):
                raise TranslateError(f"options.{k}", f"expected {typ.__name__}, got {type(v).__name__}")
            key = {"batchSize": "batch_size", "sinkBatchSize": "sink_batch_size",
                   "sinkFlushIntervalSeconds": "sink_flush_interval_s", "windowBuckets": "window_buckets"}.get(k, k)
            kwargs[key] = typ(v)
        elif k in _IGNORED:
            continue
        else:
            allowed = sorted({"dlq", "fastPaths", *_OPTION_FIELDS, *_IGNORED})
            raise TranslateError(f"options.{k}", f"unknown option '{k}'{did_you_mean(k, allowed)}")
    return ProcessorOptions(**kwargs)
