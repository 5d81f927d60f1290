"""Entry point for processors run by the service as supervised children:
``python -m bytewax.run "flows.processor:from_definition('<state>/processors/<name>/definition.json')"``.

The definition is canonical Extended JSON ``{name, pipeline, options, connections,
sample}`` written by the service (``sample`` is true for ``sp.process``, whose pipeline
may end without a sink), so BSON types survive the trip from mongosh. Output
and DLQ documents are also tapped to the service's side channel (``sp.process``,
``sample()``), and per-batch figures feed ``stats()``.
"""

from __future__ import annotations

import functools
import sys
import threading
from itertools import repeat
from operator import contains
from pathlib import Path
from typing import Any

import bson
from bson import json_util
from bson.int64 import Int64
from bytewax.dataflow import Dataflow

from flows.pipeline import registry_from, tune_gc
from service.cluster import wait_for_peers
from service.protocol import Stats
from sources.base import DeferredMetaBatch, RawBatch
from translator import metrics
from translator.compile import build_flow, compile_pipeline
from translator.errors import TranslateError
from translator.loader import options_from_mapping
from translator.mql.values import ms_to_datetime
from translator.windows import NEG_INF

# How ``inputMessageSize`` of a batch whose envelopes were deferred was counted: from the
# envelope's parts, or (a document that already has ``_stream_meta``, one BSON cannot
# encode, an odd header) by completing the batch.
INPUT_SIZE_COUNTS: dict[str, int] = {"arithmetic": 0, "completed": 0}


def input_size(batch: RawBatch, missing_stamp: str | None = None) -> int:
    """``stats()`` ``inputMessageSize`` of one source batch: the BSON size of each document
    as the pipeline's first stage sees it, with its ``_stream_meta`` envelope and its
    ``_ts`` stamp. A :class:`DeferredMetaBatch` not completed yet stays so (the window's
    fast path never builds the envelopes): its size is that of the documents as ingested
    plus what the source says the envelopes add. ``missing_stamp`` names the stamp's field
    when the documents do not carry it (the fast paths never write it): its bytes are added."""
    from service.channel import bson_size, bson_size_exact

    docs = [d for d, _ in batch]
    if type(batch) is DeferredMetaBatch and batch.attach is not None:
        meta = batch.meta_size(batch) if batch.meta_size is not None else None
        if meta is not None:
            size = bson_size_exact(docs)
            if size is not None:
                INPUT_SIZE_COUNTS["arithmetic"] += 1
                return size + meta + _stamp_bytes(docs, missing_stamp)
        INPUT_SIZE_COUNTS["completed"] += 1
        batch.complete()
        docs = [d for d, _ in batch]
    if missing_stamp is not None:
        size = bson_size_exact(docs)
        if size is not None:
            return size + _stamp_bytes(docs, missing_stamp)
        # A document BSON cannot encode adds no bytes (bson_size): size stamped copies.
        docs = [{**d, missing_stamp: _A_DATE} if type(d) is dict else d for d in docs]
    return bson_size(docs)


_A_DATE = ms_to_datetime(0)


def _stamp_bytes(docs: list[Any], field: str | None) -> int:
    """What writing a date under ``field`` adds to these (encodable) documents' BSON
    size: an element (type byte, name, NUL, 8 bytes) each, less the element it replaces
    where a document has a value of its own there."""
    if field is None:
        return 0
    added = (len(field.encode()) + 10) * len(docs)
    if any(map(contains, docs, repeat(field))):  # rare; the check runs in C
        for d in docs:
            if field in d:  # the stamp replaces this element
                added -= len(bson.encode({field: d[field]})) - 5
    return added


def _observer(batch: RawBatch, wm: int, missing_stamp: str | None) -> None:
    from service.channel import channel

    ch = channel()
    ch.add_counts(inputMessageCount=len(batch), inputMessageSize=input_size(batch, missing_stamp))
    if wm > NEG_INF:
        ch.set_gauges(watermark=ms_to_datetime(wm))


_kafka_parts: dict[tuple[str, int], dict[str, Any]] = {}
_kafka_lock = threading.Lock()


def _kafka_partition_observer(report: dict[str, Any]) -> None:
    """``stats().kafkaPartitions[]`` (docs/semantics.md#stats): merge one partition's report into
    the gauge; each worker thread reports only its own partitions."""
    from service.channel import channel

    ckpt = report["checkpointOffset"]
    entry = {
        "partition": report["partition"],
        "currentOffset": Int64(report["currentOffset"]),
        "checkpointOffset": None if ckpt is None else Int64(ckpt),
        "isIdle": bool(report["isIdle"]),
    }
    with _kafka_lock:
        _kafka_parts[(report["topic"], report["partition"])] = entry
        parts = [_kafka_parts[k] for k in sorted(_kafka_parts)]
    channel().set_gauges(kafkaPartitions=parts)


def from_definition(path: str) -> Dataflow:
    from service.channel import ChannelSink, channel

    d = json_util.loads(Path(path).read_text(), json_options=json_util.JSONOptions(tz_aware=True))
    sample = bool(d.get("sample", False))
    try:
        registry = registry_from(d.get("connections"))
        opts = options_from_mapping(dict(d.get("options") or {}), name=d["name"])
        # Connections, source and sink settings, the plan: all resolved and compiled once here
        # (the service ran the same compilation at create).
        pipeline = compile_pipeline(d["pipeline"], registry, opts, require_sink=not sample)
    except TranslateError as exc:
        print(f"mqlflow: invalid pipeline: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    enabled = channel().enabled
    kwargs: dict[str, Any] = {}
    if pipeline.sink is None:
        kwargs = {"output_sink": ChannelSink("output"), "dlq_sink": ChannelSink("dlq")} if enabled else {}
    elif enabled:
        kwargs = {"taps": (ChannelSink("output"), ChannelSink("dlq"))}
    if enabled:
        import sources.kafka

        sources.kafka.PARTITION_OBSERVER = _kafka_partition_observer
    flow = build_flow(pipeline, flow_id="processor", observer=_observer if enabled else None, **kwargs)
    if enabled:
        # stateSize and operatorStats (docs/semantics.md#stats): per-stage counters kept by the
        # translator's hooks, read by the channel once a second and at exit.
        metrics.enable()
        channel().add_gauge_provider(functools.partial(_gauges, pipeline))
    tune_gc()
    # Last, once everything else is ready: join the cluster without Timely's 1 s retry.
    wait_for_peers()
    return flow


def _gauges(pipeline: Any) -> Stats:
    throttled_ms, throttle_events = metrics.throttle_totals()  # cumulative, like the counters
    return {
        "throttledTimeMs": throttled_ms,
        "throttleEvents": throttle_events,
        "stateSize": metrics.state_size(),
        "operatorStats": metrics.operator_stats(pipeline),
        "sinkStalls": metrics.sink_stalls(),
    }
