"""What the console shows, as plain data: rate history, processor views, the dataflow
picture, masked connections and DLQ entries.

Nothing here renders HTML: the browser builds every element with ``textContent``, so
a pipeline or a document can never become markup. Figures come from the same places
as ``stats()`` (:meth:`service.supervisor.Supervisor.stats`), so the console and
mongosh never disagree.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import re
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bson import json_util
from bson.json_util import RELAXED_JSON_OPTIONS

if TYPE_CHECKING:
    from service.supervisor import Supervisor

HISTORY_SECONDS = 15 * 60
SAMPLE_EVERY = 1.0
DLQ_LIMIT = 50
DLQ_TIMEOUT_MS = 3000
# Keys whose values are credentials (librdkafka settings, HTTP headers, extra fields).
_SECRET_KEY = re.compile(r"pass|secret|token|key|jaas|auth|credential|cookie", re.IGNORECASE)
MASK = "***"


class NotFound(LookupError):
    """No processor of that name (the console answers 404)."""


def ext_json(value: Any, indent: int | None = 2) -> str:
    """Relaxed Extended JSON: how mongosh users read documents."""
    return json_util.dumps(value, json_options=RELAXED_JSON_OPTIONS, indent=indent)


@dataclass(frozen=True)
class Point:
    t: float  # unix seconds
    input: int
    output: int
    dlq: int
    lag: float | None  # wall clock minus watermark, seconds


class History:
    """One point per second per running processor, 15 minutes deep.

    Rates are the differences between neighbouring points, computed when asked; a
    processor that is not running gets no points, so its charts show a gap."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.sup = supervisor
        self.points: dict[str, deque[Point]] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            self.sample(time.time())
            await asyncio.sleep(SAMPLE_EVERY)

    def sample(self, now: float) -> None:
        for name, run in list(self.sup.runs.items()):
            if run.temporary:
                continue
            c = run.counters()
            lag = now - run.watermark.timestamp() if run.watermark is not None else None
            q = self.points.setdefault(name, deque(maxlen=int(HISTORY_SECONDS / SAMPLE_EVERY)))
            q.append(Point(now, c["inputMessageCount"], c["outputMessageCount"], c["dlqMessageCount"], lag))
        for name in list(self.points):
            if self.sup.store.get(name) is None and name not in self.sup.runs:
                del self.points[name]

    def series(self, name: str, seconds: float, now: float | None = None) -> dict[str, list[Any]]:
        """Columns for a chart: ``t`` and per-second ``input``/``output``/``dlq`` rates, ``lag``,
        over the ``seconds`` before ``now``. A processor that is not running ends with an
        empty point at ``now``, so its chart shows the gap up to the present."""
        now = time.time() if now is None else now
        q = self.points.get(name)
        out: dict[str, list[Any]] = {"t": [], "input": [], "output": [], "dlq": [], "lag": []}
        if not q:
            return out
        cutoff = now - seconds
        prev: Point | None = None
        for p in q:
            if prev is not None and p.t >= cutoff:
                dt = max(p.t - prev.t, 1e-6)
                out["t"].append(round(p.t, 3))
                out["input"].append(round(max(0, p.input - prev.input) / dt, 2))
                out["output"].append(round(max(0, p.output - prev.output) / dt, 2))
                out["dlq"].append(round(max(0, p.dlq - prev.dlq) / dt, 2))
                out["lag"].append(None if p.lag is None else round(p.lag, 3))
            prev = p
        if out["t"] and name not in self.sup.runs and now > out["t"][-1] + SAMPLE_EVERY:
            out["t"].append(round(now, 3))
            for k in ("input", "output", "dlq", "lag"):
                out[k].append(None)
        return out


def _lag(watermark: Any) -> float | None:
    if not isinstance(watermark, _dt.datetime):
        return None
    wm = watermark if watermark.tzinfo else watermark.replace(tzinfo=_dt.UTC)
    return round(time.time() - wm.timestamp(), 3)


def processor_rows(sup: Supervisor, history: History) -> list[dict[str, Any]]:
    """The processors page: one row per processor with the last minute's input rate."""
    rows = []
    for rec in sup.store.all():
        st = sup.stats(rec.name, 1, False)["stats"]
        rows.append(
            {
                "name": rec.name,
                "state": rec.state,
                "errorMsg": rec.error_msg,
                "inputMessageCount": int(st["inputMessageCount"]),
                "outputMessageCount": int(st["outputMessageCount"]),
                "dlqMessageCount": int(st["dlqMessageCount"]),
                "watermark": st["watermark"],
                "watermarkLagSeconds": _lag(st["watermark"]) if rec.state == "STARTED" else None,
                "rate": {k: v for k, v in history.series(rec.name, 60).items() if k in ("t", "input")},
            }
        )
    return rows


def processor_detail(sup: Supervisor, history: History, name: str) -> dict[str, Any]:
    """One processor: definition, verbose stats, dataflow picture and 15 minutes of rates."""
    rec = sup.store.get(name)
    if rec is None:
        raise NotFound(f"stream processor '{name}' does not exist")
    stats = sup.stats(name, 1, True)["stats"]
    if rec.state == "STARTED":
        stats["watermarkLagSeconds"] = _lag(stats.get("watermark"))
    return {
        "name": name,
        "state": rec.state,
        "errorMsg": rec.error_msg,
        "options": rec.options,
        "pipelineText": ext_json(rec.pipeline),
        "stats": stats,
        "dataflow": dataflow(rec.pipeline, stats, sup),
        "history": history.series(name, HISTORY_SECONDS),
    }


def _duration(ms: int) -> str:
    for unit, size in (("h", 3_600_000), ("min", 60_000), ("s", 1000)):
        if ms and ms % size == 0:
            return f"{ms // size} {unit}"
    return f"{ms} ms"


def _window_detail(w: Any) -> str:
    if w.kind == "tumbling":
        text = f"tumbling, size {_duration(w.interval_ms)}"
    elif w.kind == "hopping":
        text = f"hopping, size {_duration(w.interval_ms)}, hop {_duration(w.hop_ms)}"
    else:
        text = f"session, gap {_duration(w.gap_ms)}"
    return f"{text}, allowed lateness {_duration(w.allowed_lateness_ms)}, {w.boundary}"


def _source_partitions(source: Any, stats: dict[str, Any], sup: Supervisor) -> str:
    kparts = stats.get("kafkaPartitions")
    if kparts:
        return f"{len(kparts)} Kafka partition(s)"
    if source.documents is not None:
        return "1 partition (documents)"
    if source.topic:
        return f"Kafka topic(s) {', '.join(source.topic)}"
    config = dict(source.config or {})
    with contextlib.suppress(Exception):
        conn = sup.registry.get(source.connection_name, "source")
        config = {**(getattr(conn, "config", None) or {}), **config}
    return f"{int(config.get('partitions', 1))} partition(s)"


def _sink_detail(sink: Any) -> str:
    if sink is None:
        return "none (sample only)"
    if hasattr(sink, "topic"):
        return f"$emit to {sink.connection_name}, topic {ext_json(sink.topic, None)}"
    return f"$merge into {sink.connection_name}: {ext_json(sink.db, None)}.{ext_json(sink.coll, None)}"


def dataflow(pipeline: list[dict[str, Any]], stats: dict[str, Any], sup: Supervisor) -> list[dict[str, Any]]:
    """The compiled dataflow as boxes in order: source, stages (a window lists its inner
    stages), sink. Parsed with the translator, so it shows what actually runs."""
    from translator.parse import parse_pipeline

    try:
        parsed = parse_pipeline(pipeline)
    except Exception as e:  # a stored pipeline always parsed once; say so if it no longer does
        return [{"kind": "error", "label": "pipeline", "detail": str(e)}]
    src = parsed.source
    nodes: list[dict[str, Any]] = [
        {
            "kind": "source",
            "label": "$source",
            "detail": f"{src.connection_name or 'documents'}; {_source_partitions(src, stats, sup)}",
        }
    ]
    raw = list(pipeline)[1:]
    for i, stage in enumerate(parsed.stages):
        key = next(iter(raw[i])) if i < len(raw) and isinstance(raw[i], dict) else type(stage).__name__
        node: dict[str, Any] = {"kind": "stage", "label": key, "detail": ""}
        if key.endswith("Window"):
            node["kind"] = "window"
            node["detail"] = _window_detail(stage)
            inner = raw[i][key].get("pipeline", []) if isinstance(raw[i][key], dict) else []
            node["inner"] = [next(iter(s)) for s in inner if isinstance(s, dict) and s]
        nodes.append(node)
    nodes.append({"kind": "sink", "label": "sink", "detail": _sink_detail(parsed.sink)})
    return nodes


def _mask_map(values: dict[str, Any], *, all_values: bool = False) -> dict[str, Any]:
    return {k: MASK if all_values or _SECRET_KEY.search(str(k)) else v for k, v in values.items()}


def connections(sup: Supervisor) -> list[dict[str, Any]]:
    """The registry with credentials masked: URI passwords, secret-looking settings, all
    HTTP header values."""
    from translator.connections import mask_uri

    out = []
    for c in sup.registry.all():
        entry: dict[str, Any] = {"name": c.name, "type": c.type}
        if c.uri:
            entry["uri"] = mask_uri(c.uri)
        if c.bootstrap_servers:
            entry["bootstrap_servers"] = c.bootstrap_servers
        if c.url:
            entry["url"] = c.url
        if c.security:
            entry["security"] = _mask_map(c.security)
        if c.config:
            entry["config"] = _mask_map(c.config)
        if c.headers:
            entry["headers"] = _mask_map(c.headers, all_values=True)
        out.append(entry)
    return out


def _when(value: Any) -> str:
    """A DLQ entry's time as ISO-8601 text (other types as Extended JSON)."""
    if isinstance(value, _dt.datetime):
        return value.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"
    return ext_json(value, None)


class DlqReader:
    """Reads the last DLQ entries from a processor's DLQ collection, one cached client per URI."""

    def __init__(self) -> None:
        self._clients: dict[str, Any] = {}

    def close(self) -> None:
        for c in self._clients.values():
            c.close()
        self._clients.clear()

    def _client(self, uri: str) -> Any:
        import pymongo

        if uri not in self._clients:
            self._clients[uri] = pymongo.MongoClient(
                uri,
                serverSelectionTimeoutMS=DLQ_TIMEOUT_MS,
                connectTimeoutMS=DLQ_TIMEOUT_MS,
                socketTimeoutMS=DLQ_TIMEOUT_MS * 2,
                tz_aware=False,
            )
        return self._clients[uri]

    async def last(self, sup: Supervisor, name: str) -> dict[str, Any]:
        rec = sup.store.get(name)
        if rec is None:
            raise NotFound(f"stream processor '{name}' does not exist")
        dlq = rec.options.get("dlq")
        if not isinstance(dlq, dict):
            return {"configured": False, "entries": []}
        conn = sup.registry.get(dlq["connectionName"], "options.dlq.connectionName")
        target = f"{dlq['connectionName']}: {dlq['db']}.{dlq['coll']}"

        def read() -> list[dict[str, Any]]:
            coll = self._client(conn.uri or "")[dlq["db"]][dlq["coll"]]
            cur = coll.find({}, sort=[("dlqTime", -1)], limit=DLQ_LIMIT, max_time_ms=DLQ_TIMEOUT_MS)
            return list(cur)

        try:
            docs = await asyncio.to_thread(read)
        except Exception as e:
            return {"configured": True, "target": target, "entries": [], "error": f"cannot read the DLQ: {e}"}
        entries = []
        for d in docs:
            info = d.get("errInfo")
            err: dict[str, Any] = info if isinstance(info, dict) else {}
            entries.append(
                {
                    "dlqTime": _when(d.get("dlqTime")),
                    "reason": str(err.get("reason", "")),
                    "doc": ext_json(d.get("doc")),
                }
            )
        return {"configured": True, "target": target, "entries": entries}
