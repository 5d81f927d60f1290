"""The console's data views without a browser: dataflow picture, masking, rate history."""

from __future__ import annotations

import datetime as _dt
import shutil
from collections import deque
from pathlib import Path
from typing import Any

from service.supervisor import Supervisor, SupervisorConfig
from service.web import model

CONNECTIONS = """
[connections.db]
type = "mongodb"
uri = "mongodb://app:pa55word@db.example:27017/?authSource=admin"

[connections.bus]
type = "kafka"
bootstrap_servers = "k1:9092"
[connections.bus.security]
"security.protocol" = "SASL_SSL"
"sasl.username" = "alice"
"sasl.password" = "kafka-secret"

[connections.api]
type = "https"
url = "https://api.example/v1"
headers = { Authorization = "Bearer abc", "X-Tenant" = "t1" }
"""


def _sup(tmp_path: Path) -> Supervisor:
    conns = tmp_path / "connections.toml"
    conns.write_text(CONNECTIONS)
    sup = Supervisor(SupervisorConfig(state_dir=tmp_path / "state", connections=str(conns)))
    shutil.rmtree(sup.sock_dir)  # no children here: no side-channel sockets either
    return sup


def test_connections_mask_secrets(tmp_path: Path) -> None:
    by_name = {c["name"]: c for c in model.connections(_sup(tmp_path))}
    assert by_name["db"] == {"name": "db", "type": "mongodb", "uri": "mongodb://app:***@db.example:27017/?authSource=admin"}
    assert by_name["bus"]["security"] == {"security.protocol": "SASL_SSL", "sasl.username": "alice", "sasl.password": "***"}
    assert by_name["api"]["headers"] == {"Authorization": "***", "X-Tenant": "***"}
    assert "kafka-secret" not in model.ext_json(list(by_name.values()))


def test_dataflow_picture(tmp_path: Path) -> None:
    sup = _sup(tmp_path)
    pipeline: list[dict[str, Any]] = [
        {"$source": {"connectionName": "bus", "topic": "events"}},
        {"$match": {"ok": True}},
        {
            "$hoppingWindow": {
                "interval": {"size": 1, "unit": "minute"},
                "hopSize": {"size": 10, "unit": "second"},
                "pipeline": [{"$group": {"_id": "$k", "n": {"$sum": 1}}}, {"$sort": {"n": -1}}],
            }
        },
        {"$merge": {"into": {"connectionName": "db", "db": "d", "coll": "c"}}},
    ]
    assert model.dataflow(pipeline, {}, sup) == [
        {"kind": "source", "label": "$source", "detail": "bus; Kafka topic(s) events"},
        {"kind": "stage", "label": "$match", "detail": ""},
        {
            "kind": "window",
            "label": "$hoppingWindow",
            "detail": "hopping, size 1 min, hop 10 s, allowed lateness 3 s, eventTime",
            "inner": ["$group", "$sort"],
        },
        {"kind": "sink", "label": "sink", "detail": '$merge into db: "d"."c"'},
    ]
    stats = {"kafkaPartitions": [{"partition": 0}, {"partition": 1}]}
    assert model.dataflow(pipeline, stats, sup)[0]["detail"] == "bus; 2 Kafka partition(s)"
    solar = [
        {"$source": {"connectionName": "sample_stream_solar", "config": {"partitions": 4}}},
        {"$sessionWindow": {"partitionBy": "$k", "gap": {"size": 500, "unit": "ms"}, "pipeline": [{"$group": {"_id": None, "n": {"$sum": 1}}}]}},
        {"$emit": {"connectionName": "bus", "topic": "out"}},
    ]
    flow = model.dataflow(solar, {}, sup)
    assert flow[0]["detail"] == "sample_stream_solar; 4 partition(s)"
    assert flow[1]["detail"] == "session, gap 500 ms, allowed lateness 3 s, eventTime"
    assert flow[2]["detail"] == '$emit to bus, topic "out"'


def test_history_rates_from_counter_differences(tmp_path: Path) -> None:
    h = model.History(_sup(tmp_path))
    q = h.points.setdefault("p", deque(maxlen=900))
    for t, n, lag in ((100.0, 0, None), (101.0, 10, 2.0), (103.0, 50, 1.5), (104.0, 50, 1.0)):
        q.append(model.Point(t, n, n // 2, 0, lag))
    # "p" is not running: the series ends with an empty point at now (a gap).
    assert h.series("p", 900, now=110.0) == {
        "t": [101.0, 103.0, 104.0, 110.0],
        "input": [10.0, 20.0, 0.0, None],
        "output": [5.0, 10.0, 0.0, None],
        "dlq": [0.0, 0.0, 0.0, None],
        "lag": [2.0, 1.5, 1.0, None],
    }
    assert h.series("p", 1.5, now=104.5)["t"] == [103.0, 104.0]
    empty: dict[str, list[Any]] = {"t": [], "input": [], "output": [], "dlq": [], "lag": []}
    assert h.series("p", 60, now=1000.0) == empty  # all aged out
    assert h.series("missing", 60) == empty
    assert model._lag(_dt.datetime(2000, 1, 1)) > 0


def test_chart_assets_are_found_or_reported_missing(tmp_path: Path, monkeypatch: Any) -> None:
    from service.web import ASSETS_ENV, find_assets

    monkeypatch.setenv(ASSETS_ENV, str(tmp_path))
    assert find_assets() is None  # the console then says to run scripts/browser.sh assets
    (tmp_path / "uPlot.iife.min.js").write_text("/* uPlot */")
    assert find_assets() == tmp_path
