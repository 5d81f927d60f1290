"""The side channel between a processor child and the service: the one definition.

The child side (:mod:`service.channel`, :mod:`flows.processor`) and the service side
(:mod:`service.supervisor`, :mod:`service.metrics`) both import their names from here;
this module imports nothing heavy (no Bytewax), so both ends can load it.

Child -> service: the service sets :data:`ENV_SOCKET` to the path of a Unix stream
socket. The child connects (one connection per child process, shared by its workers;
restarts and several processes give several connections) and writes
newline-terminated canonical Extended JSON objects:

* ``{"type": "output", "doc": <document>}`` -- a document the pipeline emits;
* ``{"type": "dlq", "doc": <DLQ document>}`` -- a document sent to the DLQ;
* ``{"type": "stats", "stats": {...}}`` -- cumulative figures since the child
  started (:class:`Stats`), sent about once a second and once more at exit. With
  several connections the service sums the :data:`COUNTERS` over connections and
  takes the latest (max) watermark.

Service -> child: on the same connection the service writes ``{"sample": true}`` or
``{"sample": false}`` lines telling the child whether anyone is sampling; the child
skips ``output``/``dlq`` messages while sampling is off. For ``sp.process`` (temporary
processors) sampling is always on. The figures are those of ``sp.<name>.stats()``,
see docs/semantics.md#stats.
"""

from __future__ import annotations

import datetime as _dt
import json
from typing import Any, Literal, NamedTuple, TypedDict

from bson import json_util
from bson.json_util import CANONICAL_JSON_OPTIONS

ENV_SOCKET = "MQLFLOW_SAMPLE_SOCKET"
ENV_PROCESSOR_NAME = "MQLFLOW_PROCESSOR_NAME"
STATS_INTERVAL_S = 1.0

DocKind = Literal["output", "dlq"]
DOC_KINDS: tuple[DocKind, ...] = ("output", "dlq")
STATS = "stats"
SAMPLE = "sample"  # the key of service -> child control lines


class Counter(NamedTuple):
    """A cumulative ``stats()`` figure and the Prometheus counter that exports it;
    ``group``: the ``stats()`` subdocument it is shown in (``throttle.throttleEvents``)."""

    field: str
    metric: str
    help: str
    group: str | None = None


COUNTERS: tuple[Counter, ...] = (
    Counter("inputMessageCount", "mqlflow_input_messages", "Documents read by the $source"),
    Counter("inputMessageSize", "mqlflow_input_bytes", "Bytes read by the $source"),
    Counter("outputMessageCount", "mqlflow_output_messages", "Documents written by the sink"),
    Counter("outputMessageSize", "mqlflow_output_bytes", "Bytes written by the sink"),
    Counter("dlqMessageCount", "mqlflow_dlq_messages", "Documents sent to the DLQ"),
    Counter("dlqMessageSize", "mqlflow_dlq_bytes", "Bytes sent to the DLQ"),
    # $throttle's figures over all its stages, shown when the pipeline has one (ASP:
    # https://www.mongodb.com/docs/atlas/atlas-stream-processing/sp-agg-throttle/).
    Counter("throttledTimeMs", "mqlflow_throttled_ms", "Milliseconds $throttle stages waited", "throttle"),
    Counter("throttleEvents", "mqlflow_throttle_events", "Times $throttle stages waited", "throttle"),
)
COUNTER_FIELDS: tuple[str, ...] = tuple(c.field for c in COUNTERS)
# (count field, size field) a sink of each document kind adds to.
KIND_COUNTERS: dict[DocKind, tuple[str, str]] = {
    "output": ("outputMessageCount", "outputMessageSize"),
    "dlq": ("dlqMessageCount", "dlqMessageSize"),
}
# Figures in bytes: ``stats(scale)`` divides them by the scale.
SIZE_FIELDS = frozenset({"inputMessageSize", "outputMessageSize", "dlqMessageSize", "stateSize"})


class Stats(TypedDict, total=False):
    """The ``stats`` payload: the :data:`COUNTERS` (ints) plus these gauges."""

    inputMessageCount: int
    inputMessageSize: int
    outputMessageCount: int
    outputMessageSize: int
    dlqMessageCount: int
    dlqMessageSize: int
    throttledTimeMs: int
    throttleEvents: int
    stateSize: int
    watermark: _dt.datetime | None
    operatorStats: list[dict[str, Any]]
    kafkaPartitions: list[dict[str, Any]]
    sinkStalls: list[dict[str, Any]]


def encode_docs(kind: DocKind, docs: list[dict[str, Any]]) -> list[str]:
    return [json_util.dumps({"type": kind, "doc": d}, json_options=CANONICAL_JSON_OPTIONS) for d in docs]


def encode_stats(stats: Stats | dict[str, Any]) -> str:
    return json_util.dumps({"type": STATS, "stats": stats}, json_options=CANONICAL_JSON_OPTIONS)


def encode_control(sampling: bool) -> bytes:
    return json.dumps({SAMPLE: sampling}).encode() + b"\n"


def decode_control(line: bytes) -> bool | None:
    """``{"sample": bool}`` -> the flag; anything else -> ``None``."""
    try:
        msg = json.loads(line)
    except ValueError:
        return None
    return bool(msg[SAMPLE]) if isinstance(msg, dict) and SAMPLE in msg else None
