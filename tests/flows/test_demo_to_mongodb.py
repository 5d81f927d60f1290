"""The seed demo and a pipeline file writing with $merge into the real MongoDB-wire
server (FerretDB from scripts/services.sh, or MONGODB_URI), run as users run them:
``python -m bytewax.run``, with one worker and with two."""

from __future__ import annotations

import statistics
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pymongo
import pytest
from bson import json_util

from sources.solar import SolarConfig, SolarSource

pytestmark = [pytest.mark.mongodb, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
T0 = int(datetime(2024, 8, 8, 23, 8, 0, tzinfo=UTC).timestamp() * 1000)


def connections(tmp: Path, uri: str) -> Path:
    p = tmp / "connections.toml"
    p.write_text(f'[connections.MyOutputGoesHere]\ntype = "mongodb"\nuri = "{uri}"\n')
    return p


def bytewax_run(target: str, *args: str) -> None:
    r = subprocess.run([sys.executable, "-m", "bytewax.run", target, *args], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-4000:]


def generated(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    src = SolarSource(SolarConfig.from_mapping(cfg))
    out: list[dict[str, Any]] = []
    for part in src.list_parts():
        p = src.build_part("s", part, None)
        try:
            while True:
                for _, batch in p.next_batch():
                    out.extend(d for d, _ in batch)
        except StopIteration:
            pass
    return out


def test_seed_demo_writes_window_statistics(tmp_path: Path, mongodb_uri: str) -> None:
    client: pymongo.MongoClient[Any] = pymongo.MongoClient(mongodb_uri)
    coll = client["demo"]["groupTempStatsFromStreamProcessor"]
    coll.drop()
    conns = connections(tmp_path, mongodb_uri)
    bytewax_run(f"flows.solar_demo:demo(connections={str(conns)!r}, max_events=900, seed=11, start_time_ms={T0}, rate=30)")

    # Independent computation: the merge key is the group id, so each group's document
    # holds the statistics of the last window that group appeared in.
    windows: dict[tuple[int, int], list[int]] = {}
    for d in generated({"seed": 11, "maxEvents": 900, "startTime": T0, "rate": 30}):
        ms = int(datetime.fromisoformat(d["timestamp"]).timestamp() * 1000)
        windows.setdefault((d["group_id"], ms - ms % 3000), []).append(d["obs"]["temp"])
    last: dict[int, tuple[int, list[int]]] = {}
    for (g, start), temps in sorted(windows.items()):
        last[g] = (start, temps)
    got = {d["_id"]: d for d in coll.find()}
    assert set(got) == set(last)
    for g, (start, temps) in last.items():
        d = got[g]
        assert (d["minTemp"], d["maxTemp"]) == (min(temps), max(temps))
        assert d["avgTemp"] == pytest.approx(statistics.fmean(temps), rel=1e-12)
        assert d["stdevPTemp"] == pytest.approx(statistics.pstdev(temps), rel=1e-9, abs=1e-12)
        w = d["_stream_meta"]["window"]
        assert w["start"].replace(tzinfo=UTC) == datetime.fromtimestamp(start / 1000, UTC)
        assert w["end"] - w["start"] == timedelta(seconds=3)
    client.close()


def pipeline_file(tmp: Path, coll: str, db: str) -> Path:
    stages = [
        {"$source": {"connectionName": "sample_stream_solar",
                     "timeField": {"$dateFromString": {"dateString": "$timestamp"}},
                     "config": {"seed": 4, "maxEvents": 1500, "startTime": T0, "rate": 50, "partitions": 2, "batchSize": 100}}},
        {"$tumblingWindow": {"interval": {"size": 2, "unit": "second"}, "pipeline": [
            {"$group": {"_id": {"g": "$group_id", "start": {"$meta": "stream.window.start"}},
                        "n": {"$sum": 1}, "maxWatts": {"$max": "$obs.watts"}, "temps": {"$addToSet": "$obs.temp"}}}]}},
        {"$merge": {"into": {"connectionName": "MyOutputGoesHere", "db": db, "coll": coll}}},
    ]
    p = tmp / f"{coll}.json"
    p.write_text(json_util.dumps(stages))
    return p


def test_two_workers_write_the_same_collection_as_one(tmp_path: Path, mongodb_uri: str, mongo_db: Any) -> None:
    conns = connections(tmp_path, mongodb_uri)
    for coll, workers in (("one", "1"), ("two", "2")):
        path = pipeline_file(tmp_path, coll, mongo_db.name)
        bytewax_run(f"flows.pipeline:from_file({str(path)!r}, connections={str(conns)!r})", "-w", workers)

    def dump(c: str) -> list[tuple[Any, ...]]:
        return sorted(
            (d["_id"]["g"], d["_id"]["start"], d["n"], d["maxWatts"], sorted(d["temps"]), d["_stream_meta"]["window"]["end"])
            for d in mongo_db[c].find()
        )

    one = dump("one")
    assert len(one) > 100
    assert sum(r[2] for r in one) == 3000  # every event counted exactly once
    assert dump("two") == one


def test_unreachable_server_fails_fast_with_a_clear_message(tmp_path: Path) -> None:
    conns = tmp_path / "c.toml"
    conns.write_text('[connections.MyOutputGoesHere]\ntype = "mongodb"\nuri = "mongodb://user:secret@127.0.0.1:1/"\n')
    path = pipeline_file(tmp_path, "x", "y")
    r = subprocess.run(
        [sys.executable, "-m", "bytewax.run", f"flows.pipeline:from_file({str(path)!r}, connections={str(conns)!r})"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert r.returncode != 0
    assert "MyOutputGoesHere" in r.stderr
    assert "secret" not in r.stderr
    assert "scripts/services.sh up mongodb" in r.stderr
