"""Entry point for processors run by the service as supervised children:
``python -m bytewax.run "flows.processor:from_definition('<state>/processors/<name>/definition.json')"``.

The definition is canonical Extended JSON ``{name, pipeline, options, connections}``
written by the service, so BSON types survive the trip from mongosh.
"""

from __future__ import annotations

from pathlib import Path

from bson import json_util
from bytewax.dataflow import Dataflow

from flows.pipeline import flow_for


def from_definition(path: str) -> Dataflow:
    d = json_util.loads(Path(path).read_text(), json_options=json_util.JSONOptions(tz_aware=True))
    return flow_for(
        d["pipeline"],
        d.get("options") or {},
        d.get("connections"),
        name=d["name"],
        require_sink=not d.get("sample", False),
    )
