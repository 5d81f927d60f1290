"""`$merge` sized to the server it has, run as users run it (``python -m bytewax.run``).

FerretDB v1 on SQLite freezes a database when one bulk write matches 100 or more
existing documents; the sink reads ``buildInfo`` and caps its bulk writes there. The
reproduction: 2 windows x 150 groups keyed by ``_id: "$group_id"``, the default
``$merge`` (whenMatched merge), so the second window updates 150 existing documents.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient

from sinks.mongo_io import (
    SERVER_PROFILES,
    bulk_size,
    make_client,
    server_kind,
    server_profile,
    uri_options,
)

pytestmark = pytest.mark.mongodb

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2024, 8, 8, 23, 8, 0, tzinfo=UTC)
GROUPS = 150


def xjson_date(t: datetime) -> dict[str, str]:
    return {"$date": t.isoformat().replace("+00:00", "Z")}


def write_spec(tmp: Path, uri: str, db: str, coll: str) -> tuple[Path, Path]:
    docs = [
        {"group_id": g, "v": w * 1000 + g, "t": xjson_date(T0 + timedelta(seconds=w, milliseconds=100 + g))}
        for w in range(2)
        for g in range(GROUPS)
    ]
    pipeline = [
        {"$source": {"documents": docs, "timeField": {"$toDate": "$t"}}},
        {"$tumblingWindow": {"interval": {"size": 1, "unit": "second"}, "pipeline": [
            {"$group": {"_id": "$group_id", "total": {"$sum": "$v"}, "n": {"$sum": 1}}}]}},
        {"$merge": {"into": {"connectionName": "out", "db": db, "coll": coll}}},
    ]
    spec = tmp / "groups150.json"
    spec.write_text(json.dumps({"name": "sinksGroups150", "pipeline": pipeline}))
    conns = tmp / "connections.toml"
    conns.write_text(f'[connections.out]\ntype = "mongodb"\nuri = "{uri}"\n')
    return spec, conns


def test_ferretdb_two_windows_of_150_groups_finish_with_150_documents(
    mongodb_uri: str, mongo_db: Any, tmp_path: Path
) -> None:
    spec, conns = write_spec(tmp_path, mongodb_uri, mongo_db.name, "win")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # Before the cap this never finished (FerretDB froze the database); 240 s is generous
    # for 300 upserts on a loaded machine, and a timeout fails the test.
    proc = subprocess.run(
        [sys.executable, "-m", "bytewax.run", f"flows.pipeline:from_file('{spec}', connections='{conns}')"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = sorted(({k: v for k, v in d.items() if k != "_stream_meta"} for d in mongo_db["win"].find()), key=lambda d: d["_id"])
    assert got == [{"_id": g, "total": 1000 + g, "n": 1} for g in range(GROUPS)]


def test_buildinfo_decides_the_bulk_size(mongodb_uri: str) -> None:
    client: MongoClient[dict[str, Any]] = make_client(mongodb_uri, "mqlflow-test")
    try:
        info = client.admin.command("buildInfo")
        profile = server_profile(client)
    finally:
        client.close()
    kind = "ferretdb" if "ferretdbVersion" in info else "mongodb"
    assert profile == SERVER_PROFILES[kind]
    if kind == "ferretdb":
        assert bulk_size(1000, profile) == 50  # below FerretDB's ~100 connections per database
    else:
        assert bulk_size(1000, profile) == 1000  # a real mongod keeps big batches
    assert server_kind({"version": "7.0.14"}) == "mongodb"
    assert server_kind({"version": "7.0.42", "ferretdbVersion": "v1.24.2"}) == "ferretdb"


def test_client_timeouts_default_unless_the_uri_sets_them() -> None:
    c: MongoClient[dict[str, Any]] = make_client("mongodb://127.0.0.1:1/?socketTimeoutMS=1234", "t")
    try:
        assert c.options.pool_options.socket_timeout == 1.234
        assert c.options.pool_options.connect_timeout == 10.0
        assert c.options.server_selection_timeout == 10.0
    finally:
        c.close()
    assert uri_options("mongodb://h/db?SocketTimeoutMS=5&w=1") == frozenset({"sockettimeoutms", "w"})
