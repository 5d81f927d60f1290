"""Flow factory used by the service tests in place of ``flows.processor`` (lead's file):
the real translator, with output and DLQ documents sent over the service side channel
(``service.channel``). ``name`` starting with ``crash`` makes the child fail at start."""

from __future__ import annotations

from typing import Any

from bson import json_util
from bytewax.dataflow import Dataflow

from service.channel import ChannelSink, channel
from translator.compile import build_flow, compile_pipeline
from translator.loader import options_from_mapping


def _registry(path: str | None) -> Any:
    try:
        from translator.connections import load_registry  # type: ignore[attr-defined]
    except ImportError:
        from service.supervisor import _toml_registry

        return _toml_registry(path)
    return load_registry(path)


def from_definition(path: str) -> Dataflow:
    with open(path) as fh:
        d = json_util.loads(fh.read())
    if d["name"].startswith("crash"):
        raise RuntimeError(f"boom: processor {d['name']} cannot start")
    registry = _registry(d.get("connections"))
    opts = options_from_mapping(dict(d.get("options") or {}), name=d["name"])
    pipeline = compile_pipeline(d["pipeline"], registry, opts, require_sink=False)
    pipeline = type(pipeline)(pipeline.source, pipeline.stages, None, pipeline.raw)
    channel()  # connect early so stats flow even before output
    return build_flow(
        pipeline, opts, registry, output_sink=ChannelSink("output"), dlq_sink=ChannelSink("dlq")
    )
