"""Prometheus metrics (``mqlflow serve --metrics-port``): the same side-channel figures
as ``stats()`` (docs/semantics.md#stats), scraped over HTTP."""

from __future__ import annotations

import socket
import time
import urllib.request
from datetime import UTC
from pathlib import Path
from typing import Any

import pymongo
import pytest
from prometheus_client.parser import text_string_to_metric_families
from svc_helpers import start_service

pytestmark = [pytest.mark.mongodb, pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> dict[tuple[str, str], float]:
    """``{(sample name, processor label): value}``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        assert r.status == 200
        text = r.read().decode()
    out: dict[tuple[str, str], float] = {}
    for fam in text_string_to_metric_families(text):
        if fam.name.startswith("mqlflow_"):
            for s in fam.samples:
                out[(s.name, s.labels.get("processor", ""))] = s.value
    return out


def stats(client: pymongo.MongoClient[dict[str, Any]], name: str) -> dict[str, Any]:
    st: dict[str, Any] = client.admin.command({"getStreamProcessorStats": name})["stats"]
    return st


def test_metrics_endpoint_exposes_running_processor_figures(tmp_path: Path, mongodb_uri: str, mongo_db: Any) -> None:
    conns = tmp_path / "real-connections.toml"
    conns.write_text(f'[connections.mongo1]\ntype = "mongodb"\nuri = "{mongodb_uri}"\n')
    mport = free_port()
    svc = start_service(
        tmp_path, "--connections", str(conns),
        "--metrics-port", str(mport),
    )
    client: pymongo.MongoClient[dict[str, Any]] = svc.client()
    try:
        pipeline = [
            {"$source": {"connectionName": "sample_stream_solar", "config": {"seed": 3, "rate": 400, "faultRate": 0.0}}},
            {"$tumblingWindow": {"interval": {"size": 1, "unit": "day"},
                                 "pipeline": [{"$group": {"_id": "$group_id", "n": {"$sum": 1}}}]}},
            {"$merge": {"into": {"connectionName": "mongo1", "db": mongo_db.name, "coll": "m"}}},
        ]
        client.admin.command({"createStreamProcessor": "prom", "pipeline": pipeline})
        client.admin.command({"createStreamProcessor": "idle", "pipeline": pipeline})  # never started
        client.admin.command({"startStreamProcessor": "prom"})

        deadline = time.monotonic() + 60
        while stats(client, "prom")["stateSize"] != 10 or stats(client, "prom")["inputMessageCount"] < 400:
            assert time.monotonic() < deadline, stats(client, "prom")
            time.sleep(0.3)

        before = stats(client, "prom")
        m = scrape(mport)
        after = stats(client, "prom")
        # Counters are cumulative: the scrape lies between two stats() calls.
        got_in = m[("mqlflow_input_messages_total", "prom")]
        assert before["inputMessageCount"] <= got_in <= after["inputMessageCount"]
        got_bytes = m[("mqlflow_input_bytes_total", "prom")]
        assert before["inputMessageSize"] <= got_bytes <= after["inputMessageSize"]
        assert got_bytes > got_in * 100  # solar documents are well over 100 BSON bytes
        # A daily window has closed nothing yet; nothing failed.
        assert m[("mqlflow_output_messages_total", "prom")] == 0
        assert m[("mqlflow_dlq_messages_total", "prom")] == 0
        assert m[("mqlflow_dlq_bytes_total", "prom")] == 0
        assert m[("mqlflow_state_entries", "prom")] == 10  # 10 groups in the open window
        assert m[("mqlflow_processor_running", "prom")] == 1
        wm = m[("mqlflow_watermark_seconds", "prom")]
        assert abs(wm - before["watermark"].replace(tzinfo=UTC).timestamp()) < 10
        assert abs(wm - time.time()) < 30
        # Only running processors are exported.
        assert not any(label == "idle" for _, label in m)

        client.admin.command({"stopStreamProcessor": "prom"})
        m = scrape(mport)
        assert not any(label == "prom" for _, label in m)
        assert ("mqlflow_processor_running", "prom") not in m
    finally:
        client.close()
        svc.stop()
