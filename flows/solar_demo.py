"""The seed's long-running processor: 3-second tumbling windows of temperature statistics
per ``group_id`` from ``sample_stream_solar``, merged into
``demo.groupTempStatsFromStreamProcessor``.

Run it:  ``python -m bytewax.run "flows.solar_demo:demo()"``

If the connection registry (``connections.toml`` / ``MQLFLOW_CONNECTIONS``) defines
``MyOutputGoesHere``, results go to MongoDB with ``$merge``; otherwise (the embedded
default) the ``$merge`` stage is left out and window results print to the console.
"""

from __future__ import annotations

import sys
from typing import Any

from bytewax.dataflow import Dataflow

from flows.pipeline import flow_for, registry_from

SOURCE: dict[str, Any] = {
    "$source": {
        "connectionName": "sample_stream_solar",
        "timeField": {"$dateFromString": {"dateString": "$timestamp"}},
    }
}
GROUP_TEMP: dict[str, Any] = {
    "$group": {
        "_id": "$group_id",
        "minTemp": {"$min": "$obs.temp"},
        "maxTemp": {"$max": "$obs.temp"},
        "avgTemp": {"$avg": "$obs.temp"},
        "stdevPTemp": {"$stdDevPop": "$obs.temp"},
    }
}
WINDOW: dict[str, Any] = {
    "$tumblingWindow": {"interval": {"size": 3, "unit": "second"}, "pipeline": [GROUP_TEMP]}
}
MERGE: dict[str, Any] = {
    "$merge": {
        "into": {
            "connectionName": "MyOutputGoesHere",
            "db": "demo",
            "coll": "groupTempStatsFromStreamProcessor",
        }
    }
}
PIPELINE = [SOURCE, WINDOW, MERGE]


def pipeline(sample_config: dict[str, Any] | None = None, with_merge: bool = True) -> list[dict[str, Any]]:
    src = {"$source": {**SOURCE["$source"], **({"config": sample_config} if sample_config else {})}}
    return [src, WINDOW, MERGE] if with_merge else [src, WINDOW]


def demo(
    connections: str | None = None,
    rate: float = 20.0,
    max_events: int | None = None,
    seed: int | None = None,
    start_time_ms: int | None = None,
) -> Dataflow:
    cfg: dict[str, Any] = {"rate": rate}
    if max_events is not None:
        cfg["maxEvents"] = max_events
    if seed is not None:
        cfg["seed"] = seed
    if start_time_ms is not None:
        cfg["startTime"] = start_time_ms
    with_merge = "MyOutputGoesHere" in registry_from(connections)
    if not with_merge:
        print(
            "mqlflow demo: no 'MyOutputGoesHere' connection configured; window results print to the console",
            file=sys.stderr,
        )
    return flow_for(pipeline(cfg, with_merge), {}, connections, name="myGroupTempStatsProcessor")


def __getattr__(name: str) -> Any:
    # `python -m bytewax.run flows.solar_demo:flow` builds the default demo lazily.
    if name == "flow":
        return demo()
    raise AttributeError(name)
