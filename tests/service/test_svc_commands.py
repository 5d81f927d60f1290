"""pymongo ``client.admin.command(...)`` against a real ``mqlflow serve`` running its real
child flow: every command, reply shape and error path (codes 9/59/72/125 with exact
messages). Started processors ``$emit`` to the Kafka broker of scripts/services.sh."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import Any

import bson
import pymongo
import pytest
from pymongo.errors import OperationFailure
from svc_helpers import Service, connections_toml, start_service

pytestmark = [pytest.mark.kafka, pytest.mark.mongodb]

SOLAR = {"$source": {"connectionName": "sample_stream_solar"}}
EMIT = {"$emit": {"connectionName": "out", "topic": "mqlflow-svc-commands"}}
PIPE = [SOLAR, EMIT]
DLQ = {"connectionName": "dlqconn", "db": "d", "coll": "dlq"}


def fails(client: pymongo.MongoClient, cmd: dict[str, Any], code: int, errmsg: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(OperationFailure) as ei:
        client.admin.command(cmd)
    assert ei.value.code == code, ei.value.details
    assert ei.value.details is not None
    assert ei.value.details["errmsg"] == errmsg
    names = {9: "FailedToParse", 13: "Unauthorized", 59: "CommandNotFound", 72: "InvalidOptions", 125: "CommandFailed"}
    assert ei.value.details["codeName"] == names[code]


def test_handshake_commands(client: pymongo.MongoClient) -> None:  # type: ignore[type-arg]
    hello = client.admin.command("hello")
    assert hello["isWritablePrimary"] is True
    assert hello["maxWireVersion"] == 21
    assert hello["maxMessageSizeBytes"] == 48_000_000
    assert client.admin.command("isMaster")["ismaster"] is True
    assert client.admin.command("ping") == {"ok": 1.0}
    assert client.admin.command("buildInfo")["version"] == "7.0.0"
    assert client.admin.command("getParameter", 1, featureCompatibilityVersion=1)[
        "featureCompatibilityVersion"
    ] == {"version": "7.0"}
    assert client.admin.command("getLog", "startupWarnings")["log"] == []
    assert client.admin.command("atlasVersion")["atlasVersion"] == ""
    assert client.admin.command("connectionStatus")["authInfo"]["authenticatedUsers"] == []
    assert client.admin.command("listDatabases")["databases"][0]["name"] == "admin"
    assert client.admin.command("whatsmyuri")["you"].startswith("127.0.0.1:")
    assert client.admin.command("getCmdLineOpts")["argv"] == ["mqlflow", "serve"]
    assert "system" in client.admin.command("hostInfo")
    assert client.admin.command("serverStatus")["process"] == "mqlflow"
    assert client.admin.command("endSessions", [])["ok"] == 1.0
    assert client.test.command("aggregate", "c", pipeline=[], cursor={})["cursor"]["firstBatch"] == []


def test_unknown_command(client: pymongo.MongoClient) -> None:  # type: ignore[type-arg]
    fails(client, {"fooBar": 1}, 59, "no such command: 'fooBar'")


def test_create_list_and_duplicate(client: pymongo.MongoClient) -> None:  # type: ignore[type-arg]
    assert client.admin.command({"createStreamProcessor": "p1", "pipeline": PIPE}) == {"ok": 1.0}
    # options nested (drivers) and at the top level (mongosh) are both accepted
    client.admin.command({"createStreamProcessor": "p2", "pipeline": PIPE, "options": {"dlq": DLQ}})
    client.admin.command({"createStreamProcessor": "p3", "pipeline": PIPE, "dlq": DLQ})
    fails(client, {"createStreamProcessor": "p1", "pipeline": PIPE}, 125, "stream processor 'p1' already exists")
    listed = client.admin.command({"listStreamProcessors": 1})["streamProcessors"]
    assert [p["name"] for p in listed] == ["p1", "p2", "p3"]
    p1 = listed[0]
    assert set(p1) >= {"id", "name", "pipeline", "state", "errorMsg", "lastModified", "lastStateChange"}
    assert p1["state"] == "CREATED"
    assert p1["errorMsg"] == ""
    assert p1["pipeline"] == PIPE
    assert listed[1]["options"] == {"dlq": DLQ}
    only = client.admin.command({"listStreamProcessors": 1, "filter": {"name": "p2"}})
    assert [p["name"] for p in only["streamProcessors"]] == ["p2"]
    started = client.admin.command({"listStreamProcessors": 1, "filter": {"state": "STARTED"}})
    assert started["streamProcessors"] == []
    some = client.admin.command({"listStreamProcessors": 1, "filter": {"name": {"$in": ["p1", "p3"]}}})
    assert [p["name"] for p in some["streamProcessors"]] == ["p1", "p3"]
    # The filter is a full MongoDB query ($match's engine): operators and $expr work...
    rx = client.admin.command({"listStreamProcessors": 1, "filter": {"$or": [{"name": {"$regex": "1$"}}, {"$expr": {"$eq": ["$name", "p3"]}}]}})
    assert [p["name"] for p in rx["streamProcessors"]] == ["p1", "p3"]
    # ...and a bad one is FailedToParse with its path, even when nothing is listed.
    fails(client, {"listStreamProcessors": 1, "filter": {"name": {"$bogus": 1}}}, 9, "filter.name.$bogus: unknown query operator '$bogus'")
    fails(client, {"listStreamConnections": 1, "filter": {"$or": 5}}, 9, "filter.$or: $or must be an array")


def test_bson_types_survive_storage(client: pymongo.MongoClient) -> None:  # type: ignore[type-arg]
    pipe = [
        {"$source": {"connectionName": "sample_stream_solar"}},
        {"$match": {"group_id": 3, "obs.temp": {"$gt": 1.5}, "l": bson.Int64(7)}},
        EMIT,
    ]
    client.admin.command({"createStreamProcessor": "typed", "pipeline": pipe})
    raw = client.admin.command(
        {"listStreamProcessors": 1},
        codec_options=bson.CodecOptions(document_class=dict),
    )["streamProcessors"][0]["pipeline"]
    match = raw[1]["$match"]
    assert type(match["group_id"]) is int
    assert type(match["obs.temp"]["$gt"]) is float
    assert type(match["l"]) is bson.Int64


def test_bad_pipelines_are_failed_to_parse(client: pymongo.MongoClient) -> None:  # type: ignore[type-arg]
    fails(
        client,
        {"createStreamProcessor": "x", "pipeline": [SOLAR, {"$matc": {}}, EMIT]},
        9,
        "pipeline[1].$matc: unknown stage '$matc'; did you mean '$match'?",
    )
    fails(client, {"createStreamProcessor": "x", "pipeline": []}, 9, "pipeline must be a non-empty array of stages")
    fails(client, {"createStreamProcessor": "x", "pipeline": [1]}, 9, "pipeline[0] must be a document")
    fails(client, {"createStreamProcessor": "", "pipeline": PIPE}, 9, "createStreamProcessor must be a non-empty string processor name")
    with pytest.raises(OperationFailure) as ei:
        client.admin.command({"createStreamProcessor": "x", "pipeline": [SOLAR]})
    assert ei.value.code == 9
    assert client.admin.command({"listStreamProcessors": 1})["streamProcessors"] == []


def test_bad_options_are_invalid_options(client: pymongo.MongoClient) -> None:  # type: ignore[type-arg]
    fails(
        client,
        {"createStreamProcessor": "x", "pipeline": PIPE, "options": {"dlq": {"connectionName": "nope", "db": "d", "coll": "c"}}},
        72,
        "options.dlq.connectionName: unknown connection 'nope'; known connections: dlqconn, out, sample_stream_solar",
    )
    fails(client, {"createStreamProcessor": "x", "pipeline": PIPE, "dlq": 5}, 72, "options.dlq: expected {connectionName, db, coll}, got int")
    fails(
        client, {"createStreamProcessor": "x", "pipeline": PIPE, "dlq": {"connectionName": "dlqconn", "db": "", "coll": "c"}}, 72,
        "options.dlq.db: must be a non-empty string",
    )
    fails(
        client,
        {"createStreamProcessor": "x", "pipeline": PIPE, "dlq": {"connectionName": "dlqconn", "db": "d", "coll": "c", "mode": "besteffort"}},
        72,
        "options.dlq.mode: expected one of durable, best-effort; got 'besteffort'; did you mean 'best-effort'?",
    )
    fails(client, {"createStreamProcessor": "x", "pipeline": PIPE, "tier": "SP99"}, 72, "tier must be one of SP2, SP5, SP10, SP30, SP50, got 'SP99'")
    fails(client, {"createStreamProcessor": "x", "pipeline": PIPE, "options": {"batchSise": 5}}, 72, "options.batchSise: unknown option 'batchSise'; did you mean 'batchSize'?")
    client.admin.command({"createStreamProcessor": "x", "pipeline": PIPE})
    fails(client, {"getStreamProcessorStats": "x", "scale": 0}, 72, "scale must be a number >= 1")
    fails(client, {"startStreamProcessor": "x", "resumeFromCheckpoint": "no"}, 72, "resumeFromCheckpoint must be a boolean")
    fails(
        client,
        {"stopStreamProcessor": "x", "bogus": 1},
        72,
        "stopStreamProcessor: unknown option 'bogus'; allowed: ",
    )


def test_missing_processor_is_command_failed(client: pymongo.MongoClient) -> None:  # type: ignore[type-arg]
    for cmd in ("startStreamProcessor", "stopStreamProcessor", "dropStreamProcessor", "getStreamProcessorStats", "startSampleStreamProcessor"):
        fails(client, {cmd: "ghost"}, 125, "stream processor 'ghost' does not exist")
    fails(client, {"modifyStreamProcessor": "ghost", "pipeline": PIPE}, 125, "stream processor 'ghost' does not exist")
    fails(client, {"getMoreSampleStreamProcessor": "ghost", "cursorId": 5}, 125, "cursor 5 for stream processor 'ghost' does not exist")


def test_lifecycle_stats_sample_modify_drop(client: pymongo.MongoClient, service: Service) -> None:  # type: ignore[type-arg]
    client.admin.command({"createStreamProcessor": "life", "pipeline": PIPE})
    fails(client, {"stopStreamProcessor": "life"}, 125, "stream processor 'life' is not started")
    fails(client, {"startSampleStreamProcessor": "life"}, 125, "stream processor 'life' is not started")
    assert client.admin.command({"startStreamProcessor": "life"}) == {"ok": 1.0}
    fails(client, {"startStreamProcessor": "life"}, 125, "stream processor 'life' is already started")
    fails(client, {"modifyStreamProcessor": "life", "pipeline": PIPE}, 125, "stream processor 'life' must be stopped before it is modified")
    sample = client.admin.command({"startSampleStreamProcessor": "life", "limit": 3})
    got: list[dict[str, Any]] = []
    cursor = sample["cursorId"]
    deadline = time.monotonic() + 60
    while cursor != 0 and time.monotonic() < deadline:
        r = client.admin.command({"getMoreSampleStreamProcessor": "life", "cursorId": cursor})
        got.extend(r["messages"])
        cursor = r["cursorId"]
    assert cursor == 0
    assert len(got) == 3
    assert all(d["_stream_meta"] == {"source": {"type": "generated"}} for d in got)
    deadline = time.monotonic() + 30
    while True:  # figures arrive over the side channel about once a second
        stats = client.admin.command({"getStreamProcessorStats": "life", "options": {"verbose": True}})
        st = stats["stats"]
        if st["outputMessageCount"] >= 3 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert stats["ns"] == "admin.life"
    assert stats["pipeline"] == PIPE
    assert st["name"] == "life"
    assert st["status"] == "running"
    assert st["outputMessageCount"] >= 3
    assert st["operatorStats"] == []
    listed = client.admin.command({"listStreamProcessors": 1})["streamProcessors"][0]
    assert listed["state"] == "STARTED"
    assert client.admin.command({"stopStreamProcessor": "life"}) == {"ok": 1.0}
    assert client.admin.command({"listStreamProcessors": 1})["streamProcessors"][0]["state"] == "STOPPED"
    assert client.admin.command({"getStreamProcessorStats": "life"})["stats"]["status"] == "stopped"
    new_pipe = [SOLAR, {"$match": {"group_id": 1}}, EMIT]
    assert client.admin.command({"modifyStreamProcessor": "life", "pipeline": new_pipe, "resumeFromCheckpoint": False}) == {"ok": 1.0}
    assert client.admin.command({"listStreamProcessors": 1})["streamProcessors"][0]["pipeline"] == new_pipe
    # Folders are keyed by the processor id, never by its name.
    workdir = service.state_dir / "processors" / listed["id"]
    assert (workdir / "definition.json").exists()
    assert client.admin.command({"dropStreamProcessor": "life"}) == {"ok": 1.0}
    assert not workdir.exists()
    assert client.admin.command({"listStreamProcessors": 1})["streamProcessors"] == []


def test_process_streams_documents_then_ends(client: pymongo.MongoClient) -> None:  # type: ignore[type-arg]
    pipe = [{"$source": {"documents": [{"a": 1}, {"a": 2}, {"a": 3}]}}, {"$match": {"a": {"$gte": 2}}}]
    r = client.admin.command({"processStreamProcessor": pipe})
    assert r["name"].startswith("__process_")
    cursor = r["cursorId"]
    assert cursor != 0
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + 60
    while cursor != 0 and time.monotonic() < deadline:
        m = client.admin.command({"getMoreSampleStreamProcessor": r["name"], "cursorId": cursor})
        got.extend(m["messages"])
        cursor = m["cursorId"]
    assert [d["a"] for d in got] == [2, 3]
    assert got[0]["_stream_meta"] == {"source": {"type": "documents"}}
    # mongosh drops the temporary processor afterwards; that must succeed
    assert client.admin.command({"dropStreamProcessor": r["name"]}) == {"ok": 1.0}
    # temporary processors are never listed
    assert client.admin.command({"listStreamProcessors": 1})["streamProcessors"] == []


def test_process_limit_and_bad_pipeline(client: pymongo.MongoClient) -> None:  # type: ignore[type-arg]
    r = client.admin.command({"processStreamProcessor": [SOLAR], "options": {"limit": 2}})
    got: list[dict[str, Any]] = []
    cursor = r["cursorId"]
    while cursor != 0:
        m = client.admin.command({"getMoreSampleStreamProcessor": r["name"], "cursorId": cursor})
        got.extend(m["messages"])
        cursor = m["cursorId"]
    assert len(got) == 2
    assert set(got[0]) >= {"device_id", "group_id", "timestamp", "max_watts", "event_type", "obs", "_ts", "_stream_meta"}
    fails(
        client,
        {"processStreamProcessor": [{"$source": {"connectionName": "sample_stream_solr"}}]},
        9,
        "pipeline[0].$source.connectionName: unknown connection 'sample_stream_solr'; did you mean 'sample_stream_solar'?; known connections: dlqconn, out, sample_stream_solar",
    )


def test_list_connections(client: pymongo.MongoClient) -> None:  # type: ignore[type-arg]
    conns = client.admin.command({"listStreamConnections": 1})["connections"]
    assert conns == [
        {"name": "dlqconn", "type": "atlas"},
        {"name": "out", "type": "kafka"},
        {"name": "sample_stream_solar", "type": "inmemory"},
    ]
    kafka = client.admin.command({"listStreamConnections": 1, "filter": {"type": "kafka"}})
    assert kafka["connections"] == [{"name": "out", "type": "kafka"}]


def wait_state(c: pymongo.MongoClient, name: str, want: str, timeout: float = 90) -> dict[str, Any]:  # type: ignore[type-arg]
    deadline = time.monotonic() + timeout
    while True:
        p: dict[str, Any] = c.admin.command({"listStreamProcessors": 1, "filter": {"name": name}})["streamProcessors"][0]
        if p["state"] == want or time.monotonic() > deadline:
            assert p["state"] == want, p
            return p
        time.sleep(0.3)


def test_child_failing_at_start_goes_failed_with_its_error(tmp_path: Any) -> None:
    """A real start failure: the connection file loses ``out`` after create, so the real
    child (which reads the file again) stops with the compiler's error. Restarting cannot
    help, so the processor fails at the first attempt (not after --max-restarts)."""
    svc = start_service(tmp_path)
    try:
        c = svc.client()
        c.admin.command({"createStreamProcessor": "crashy", "pipeline": PIPE})
        (tmp_path / "connections.toml").write_text(connections_toml().replace("[connections.out]", "[connections.other]"))
        c.admin.command({"startStreamProcessor": "crashy"})
        p = wait_state(c, "crashy", "FAILED")
        assert p["errorMsg"] == (
            "processor failed after 1 attempt: mqlflow: invalid pipeline: pipeline[1].$emit.connectionName: "
            "unknown connection 'out'; known connections: dlqconn, other, sample_stream_solar"
        )
        assert c.admin.command({"stopStreamProcessor": "crashy"}) == {"ok": 1.0}
    finally:
        svc.stop()


def test_killed_child_is_restarted_and_counters_carry_on(tmp_path: Any) -> None:
    """kill -9 of the real child: the supervisor restarts it; the processor stays STARTED
    and its counters continue from where the killed child left them."""
    svc = start_service(tmp_path)
    try:
        c = svc.client()
        c.admin.command({"createStreamProcessor": "victim", "pipeline": PIPE})
        c.admin.command({"startStreamProcessor": "victim"})
        deadline = time.monotonic() + 60
        while True:
            st = c.admin.command({"getStreamProcessorStats": "victim"})["stats"]
            if st["inputMessageCount"] >= 5:
                break
            assert time.monotonic() < deadline, st
            time.sleep(0.3)
        kids = subprocess.run(["pgrep", "-P", str(svc.proc.pid)], capture_output=True, text=True).stdout.split()
        assert len(kids) == 1, kids
        os.kill(int(kids[0]), signal.SIGKILL)
        before = st["inputMessageCount"]
        deadline = time.monotonic() + 60
        new_kids: list[str] = []
        while True:
            new_kids = subprocess.run(["pgrep", "-P", str(svc.proc.pid)], capture_output=True, text=True).stdout.split()
            st = c.admin.command({"getStreamProcessorStats": "victim"})["stats"]
            if new_kids and new_kids != kids and st["inputMessageCount"] > before:
                break
            assert time.monotonic() < deadline, (new_kids, st)
            time.sleep(0.3)
        assert st["status"] == "running"
        assert wait_state(c, "victim", "STARTED")["errorMsg"] == ""
    finally:
        svc.stop()


def test_started_processor_resumes_after_service_restart(tmp_path: Any) -> None:
    svc = start_service(tmp_path)
    c = svc.client()
    c.admin.command({"createStreamProcessor": "keep", "pipeline": PIPE})
    c.admin.command({"createStreamProcessor": "idle", "pipeline": PIPE})
    c.admin.command({"startStreamProcessor": "keep"})
    c.close()
    svc.stop()
    svc2 = start_service(tmp_path)
    try:
        c2 = svc2.client()
        states = {p["name"]: p["state"] for p in c2.admin.command({"listStreamProcessors": 1})["streamProcessors"]}
        assert states == {"keep": "STARTED", "idle": "CREATED"}
        r = c2.admin.command({"startSampleStreamProcessor": "keep", "limit": 1})
        cursor, got = r["cursorId"], []
        deadline = time.monotonic() + 60
        while cursor != 0 and time.monotonic() < deadline:
            m = c2.admin.command({"getMoreSampleStreamProcessor": "keep", "cursorId": cursor})
            got.extend(m["messages"])
            cursor = m["cursorId"]
        assert len(got) == 1  # the resumed child is producing again
    finally:
        svc2.stop()


def test_non_loopback_bind_requires_scram_sha_256(tmp_path: Any) -> None:
    users = tmp_path / "users.txt"
    users.write_text("alice:s3cret\n")
    svc = start_service(tmp_path, "--host", "0.0.0.0", "--users", str(users))
    try:
        anon = svc.client()
        fails(anon, {"listStreamProcessors": 1}, 13, "command listStreamProcessors requires authentication")
        assert anon.admin.command("ping") == {"ok": 1.0}
        good = svc.client(username="alice", password="s3cret", authMechanism="SCRAM-SHA-256")
        assert good.admin.command({"listStreamProcessors": 1})["streamProcessors"] == []
        status = good.admin.command("connectionStatus")["authInfo"]["authenticatedUsers"]
        assert status == [{"user": "alice", "db": "admin"}]
        bad = svc.client(username="alice", password="wrong", authMechanism="SCRAM-SHA-256")
        with pytest.raises(pymongo.errors.OperationFailure) as ei:
            bad.admin.command("ping")
        assert ei.value.code == 18
        assert ei.value.details is not None and ei.value.details["errmsg"] == "Authentication failed."
        assert "serving 0.0.0.0 without TLS: passwords and data cross the network readable" in svc.log.read_text()
    finally:
        svc.stop()


def test_non_loopback_bind_without_users_refuses_to_start(tmp_path: Any) -> None:
    with pytest.raises(AssertionError, match="requires users for SCRAM-SHA-256"):
        start_service(tmp_path, "--host", "0.0.0.0")


def test_process_is_dropped_when_the_client_stops_polling(tmp_path: Any) -> None:
    """sp.process: a temporary processor nobody polls any more is dropped (its child
    stopped), so an abandoned shell leaves nothing running."""
    svc = start_service(tmp_path, "--sample-idle-timeout", "2")
    try:
        with svc.client() as c:
            r = c.admin.command({"processStreamProcessor": [SOLAR]})
            first = c.admin.command({"getMoreSampleStreamProcessor": r["name"], "cursorId": r["cursorId"]})
            assert first["cursorId"] != 0
            kids_before = subprocess.run(["pgrep", "-P", str(svc.proc.pid)], capture_output=True, text=True).stdout.split()
            assert kids_before, "the temporary processor's child is not running"
            deadline = time.monotonic() + 30
            kids: list[str] = kids_before
            while kids and time.monotonic() < deadline:
                time.sleep(0.5)
                kids = subprocess.run(["pgrep", "-P", str(svc.proc.pid)], capture_output=True, text=True).stdout.split()
            assert kids == [], "the abandoned temporary processor is still running"
            with pytest.raises(OperationFailure):
                c.admin.command({"getMoreSampleStreamProcessor": r["name"], "cursorId": r["cursorId"]})
    finally:
        svc.stop()


def test_source_problems_fail_at_create_with_the_compilers_path(tmp_path: Any) -> None:
    """The service builds the source with the child's own function at create time: an
    unsupported source kind, an unknown or mistyped ``$source.config`` key fail there with
    the path, and a date string is accepted where the sample source expects a time."""
    web = tmp_path / "web.toml"
    web.write_text(connections_toml() + '\n[connections.web]\ntype = "https"\nurl = "https://example.invalid/hook"\n')
    svc = start_service(tmp_path, "--connections", str(web))
    try:
        c = svc.client()
        fails(c, {"createStreamProcessor": "x", "pipeline": [{"$source": {"connectionName": "web"}}, EMIT]}, 9,
              "pipeline[0].$source.connectionName: connections of type 'https' cannot be used as a $source yet")
        solar = {"connectionName": "sample_stream_solar"}
        fails(c, {"createStreamProcessor": "x", "pipeline": [{"$source": {**solar, "config": {"rat": 5}}}, EMIT]}, 9,
              "pipeline[0].$source.config.rat: unknown sample source option 'rat'; did you mean 'rate'?; allowed: "
              "batchSize, devices, faultRate, groups, maxEvents, max_events, partitions, rate, seed, startTime, start_time_ms")
        fails(c, {"createStreamProcessor": "x", "pipeline": [{"$source": {**solar, "config": {"startTime": "1st of May"}}}, EMIT]}, 9,
              "pipeline[0].$source.config.startTime: expected an ISO-8601 date such as '2024-01-01T00:00:00Z', got '1st of May'")
        fails(c, {"processStreamProcessor": [{"$source": {**solar, "config": {"rate": "fast"}}}]}, 9,
              "pipeline[0].$source.config.rate: expected a number, got string")
        fails(c, {"createStreamProcessor": "x", "pipeline": [{"$source": {"connectionName": "out"}}, EMIT]}, 9,
              "pipeline[0].$source.topic: a Kafka $source needs 'topic' (a string or an array of strings)")
        assert c.admin.command({"listStreamProcessors": 1})["streamProcessors"] == []
        # a date string (or $date) where a time is expected: the virtual clock starts there
        r = c.admin.command({"processStreamProcessor": [
            {"$source": {**solar, "config": {"startTime": "2024-01-01T00:00:00Z", "maxEvents": 2, "rate": 1000, "seed": 7}}},
            {"$project": {"timestamp": 1, "_id": 0}}]})
        got: list[dict[str, Any]] = []
        cursor = r["cursorId"]
        deadline = time.monotonic() + 60
        while cursor != 0 and time.monotonic() < deadline:
            m = c.admin.command({"getMoreSampleStreamProcessor": r["name"], "cursorId": cursor})
            got.extend(m["messages"])
            cursor = m["cursorId"]
        assert got == [{"timestamp": "2024-01-01T00:00:00.000+00:00"}, {"timestamp": "2024-01-01T00:00:00.001+00:00"}]
    finally:
        svc.stop()
