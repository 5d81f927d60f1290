"""Authentication means authentication: with ``--users`` every command but the handshake,
the SASL exchange and mongod's harmless probes needs a login, on loopback too; an
unknown user and a wrong password get the same reply; a broken users file or a missing
connections file stops the start. Real ``mqlflow serve``, real pymongo, real mongosh."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymongo
import pytest
from bson import Binary
from svc_secure import (
    ROOT,
    RealService,
    command,
    connect,
    scram_login,
    serve_args,
    start_real,
    write_connections,
)

USERS = "# user:password\nalice:s3cret-Pa55\nbob:other:with:colons\n"
PIPELINE: list[dict[str, Any]] = [
    {"$source": {"connectionName": "sample_stream_solar"}},
    {"$merge": {"into": {"connectionName": "out", "db": "svc_security_auth", "coll": "x"}}},
]
# Everything a client can do to processors, plus admin commands that tell about the host.
GUARDED: list[dict[str, Any]] = [
    {"createStreamProcessor": "p", "pipeline": PIPELINE},
    {"listStreamProcessors": 1},
    {"startStreamProcessor": "p"},
    {"stopStreamProcessor": "p"},
    {"dropStreamProcessor": "p"},
    {"modifyStreamProcessor": "p", "pipeline": PIPELINE},
    {"getStreamProcessorStats": "p"},
    {"processStreamProcessor": PIPELINE},
    {"startSampleStreamProcessor": "p"},
    {"getMoreSampleStreamProcessor": "p", "cursorId": 1},
    {"listStreamConnections": 1},
    {"serverStatus": 1},
    {"hostInfo": 1},
    {"getCmdLineOpts": 1},
    {"listDatabases": 1},
    {"getLog": "global"},
    {"atlasVersion": 1},
]


@pytest.fixture
def svc(tmp_path: Path) -> Iterator[RealService]:
    users = tmp_path / "users.txt"
    users.write_text(USERS)
    s = start_real(tmp_path, "--users", str(users))  # loopback, 127.0.0.1
    yield s
    s.stop()


@pytest.mark.parametrize("cmd", GUARDED, ids=lambda c: next(iter(c)))
def test_anonymous_client_on_loopback_is_refused(svc: RealService, cmd: dict[str, Any]) -> None:
    with svc.client() as c:
        with pytest.raises(pymongo.errors.OperationFailure) as e:
            c.admin.command(cmd)
        name = next(iter(cmd))
        assert e.value.details == {
            "ok": 0.0, "errmsg": f"command {name} requires authentication",
            "code": 13, "codeName": "Unauthorized",
        }
    assert not (svc.state_dir / "processors").exists()


def test_handshake_and_probes_need_no_login(svc: RealService) -> None:
    with svc.client() as c:
        assert c.admin.command("ping") == {"ok": 1.0}
        assert c.admin.command("hello")["isWritablePrimary"] is True
        assert c.admin.command("buildInfo")["version"] == "7.0.0"
        status = c.admin.command("connectionStatus")
        assert status["authInfo"] == {"authenticatedUsers": [], "authenticatedUserRoles": []}


def test_login_runs_commands(svc: RealService) -> None:
    with svc.client("alice", "s3cret-Pa55") as c:
        c.admin.command({"createStreamProcessor": "p", "pipeline": PIPELINE})
        assert [p["name"] for p in c.admin.command({"listStreamProcessors": 1})["streamProcessors"]] == ["p"]
        c.admin.command({"dropStreamProcessor": "p"})
    # The password is everything after the first colon.
    with svc.client("bob", "other:with:colons", authMechanism="SCRAM-SHA-256") as c:
        assert c.admin.command({"listStreamProcessors": 1})["streamProcessors"] == []


def _auth_failure(svc: RealService, user: str, password: str, **kw: Any) -> tuple[str, Any]:
    with svc.client(user, password, **kw) as c, pytest.raises(pymongo.errors.OperationFailure) as e:
        c.admin.command("ping")
    return str(e.value), e.value.details


@pytest.mark.parametrize("mech", [{}, {"authMechanism": "SCRAM-SHA-256"}], ids=["negotiated", "explicit"])
def test_unknown_user_and_wrong_password_look_the_same(svc: RealService, mech: dict[str, str]) -> None:
    wrong = _auth_failure(svc, "alice", "wrong", **mech)
    unknown = _auth_failure(svc, "mallory", "wrong", **mech)
    assert wrong == unknown
    assert wrong[1] == {
        "ok": 0.0, "errmsg": "Authentication failed.", "code": 18, "codeName": "AuthenticationFailed",
    }


def test_hello_does_not_tell_which_users_exist(svc: RealService) -> None:
    sock = connect(svc.port)
    try:
        known = command(sock, {"hello": 1, "saslSupportedMechs": "admin.alice"})
        unknown = command(sock, {"hello": 1, "saslSupportedMechs": "admin.mallory"})
    finally:
        sock.close()
    assert known["saslSupportedMechs"] == unknown["saslSupportedMechs"] == ["SCRAM-SHA-256"]


def test_scram_first_round_is_the_same_for_unknown_users(svc: RealService) -> None:
    """The salt of an unknown user is stable too, so repeating saslStart tells nothing."""
    from bson import Binary

    def salt(user: str) -> str:
        sock = connect(svc.port)
        try:
            r = command(sock, {"saslStart": 1, "mechanism": "SCRAM-SHA-256",
                               "payload": Binary(f"n,,n={user},r=abcdefgh".encode())})
        finally:
            sock.close()
        assert r["ok"] == 1.0, r
        attrs = dict(kv.split("=", 1) for kv in bytes(r["payload"]).decode().split(","))
        assert attrs["i"] == "15000" and attrs["r"].startswith("abcdefgh")
        return attrs["s"]

    assert salt("alice") == salt("alice")
    assert salt("mallory") == salt("mallory")
    assert len(salt("mallory")) == len(salt("alice"))


def test_logout_ends_the_login(svc: RealService) -> None:
    sock = connect(svc.port)
    try:
        scram_login(sock, "alice", "s3cret-Pa55")
        assert command(sock, {"listStreamProcessors": 1})["ok"] == 1.0
        assert command(sock, {"logout": 1})["ok"] == 1.0
        r = command(sock, {"listStreamProcessors": 1})
        assert (r["ok"], r["code"]) == (0.0, 13)
    finally:
        sock.close()


# --- mongosh -------------------------------------------------------------------------------


@pytest.mark.mongosh
def test_mongosh_without_login_cannot_touch_processors(svc: RealService) -> None:
    r = svc.mongosh(script="print(db.runCommand({ping: 1}).ok); sp.listStreamProcessors()")
    assert r.returncode != 0
    assert r.stdout == "1\n"
    assert r.stderr == "MongoServerError: command listStreamProcessors requires authentication\n"
    r = svc.mongosh(script="sp.createStreamProcessor('p', " + _js(PIPELINE) + ")")
    assert r.returncode != 0
    assert r.stderr == "MongoServerError: command createStreamProcessor requires authentication\n"
    assert not (svc.state_dir / "processors").exists()


@pytest.mark.mongosh
def test_mongosh_login_works_and_failures_look_the_same(svc: RealService) -> None:
    r = svc.mongosh("-u", "alice", "-p", "s3cret-Pa55", script=(
        "sp.createStreamProcessor('p', " + _js(PIPELINE) + ");"
        "print(JSON.stringify(db.runCommand({connectionStatus: 1}).authInfo.authenticatedUsers));"
        "print(sp.listStreamProcessors().map(p => p.name).join(','));"
        "sp.p.drop(); print(sp.listStreamProcessors().length)"
    ))
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ['[{"user":"alice","db":"admin"}]', "p", "0"]
    wrong = svc.mongosh("-u", "alice", "-p", "nope", script="print('connected')")
    unknown = svc.mongosh("-u", "mallory", "-p", "nope", script="print('connected')")
    assert (wrong.returncode, wrong.stdout, wrong.stderr) == (
        unknown.returncode, unknown.stdout, unknown.stderr
    )
    assert wrong.returncode != 0
    assert wrong.stderr == "MongoServerError: Authentication failed.\n"


def _js(value: Any) -> str:
    import json

    return json.dumps(value)


# --- the start refuses what it cannot use ------------------------------------------------------


def _start_fails(tmp: Path, *extra: str, connections: Path | None = None) -> subprocess.CompletedProcess[str]:
    conns = connections or write_connections(tmp)
    r = subprocess.run(serve_args(tmp / "state", conns, *extra), capture_output=True, text=True,
                       timeout=60, cwd=tmp, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert r.stdout == ""
    return r


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("alice:pw\nbadline\n", "line 2: expected 'user:password' with a non-empty user and password"),
        ("alice:\n", "line 1: expected 'user:password' with a non-empty user and password"),
        (":pw\n", "line 1: expected 'user:password' with a non-empty user and password"),
        ("# only a comment\n\n", "has no 'user:password' line"),
        ("alice:a\nalice:b\n", "line 2: user 'alice' is listed twice"),
        ("alice:a\n[read]\nbob:b\n[admin]\ncarol:c\n", "line 4: unknown role section [admin]; roles: [owner], [read]"),
        ("[read]\nalice:a\n[owner]\nalice:b\n", "line 4: user 'alice' is listed twice"),
    ],
    ids=["no-colon", "no-password", "no-user", "empty", "twice", "unknown-role", "twice-across-roles"],
)
def test_bad_users_file_stops_the_start(tmp_path: Path, text: str, line: str) -> None:
    users = tmp_path / "users.txt"
    users.write_text(text)
    r = _start_fails(tmp_path, "--users", str(users))
    assert r.stderr == f"mqlflow: users file {users} {line}\n"


def test_missing_users_file_stops_the_start(tmp_path: Path) -> None:
    r = _start_fails(tmp_path, "--users", str(tmp_path / "nope.txt"))
    assert r.stderr == f"mqlflow: users file {tmp_path / 'nope.txt'} does not exist\n"


def test_missing_connections_file_stops_the_start(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    r = _start_fails(tmp_path, connections=missing)
    assert r.stderr == f"mqlflow: connections file {missing} does not exist\n"


def test_broken_connections_file_stops_the_start(tmp_path: Path) -> None:
    conns = tmp_path / "c.toml"
    conns.write_text('[connections.x]\ntype = "nosuch"\n')
    r = _start_fails(tmp_path, connections=conns)
    assert r.stderr == (
        f"mqlflow: {conns}: connections.x.type: unknown connection type 'nosuch'; "
        "expected one of atlas, mongodb, kafka, https, sample\n"
    )


def test_non_loopback_bind_without_users_stops_the_start(tmp_path: Path) -> None:
    r = _start_fails(tmp_path, "--host", "127.0.0.2")
    assert r.stderr == (
        "mqlflow: binding 127.0.0.2 (not loopback) requires users for SCRAM-SHA-256 "
        "authentication; pass --users FILE\n"
    )


def _timed_sasl_start(svc: RealService, user: str = "alice") -> tuple[socket.socket, float]:
    """Open a connection, send saslStart, and return it with the seconds the reply took."""
    sock = connect(svc.port)
    t = time.monotonic()
    r = command(sock, {"saslStart": 1, "mechanism": "SCRAM-SHA-256",
                       "payload": Binary(f"n,,n={user},r=abcdefghijkl".encode())})
    took = time.monotonic() - t
    assert r["ok"] == 1.0, r
    return sock, took


def test_failed_logins_slow_that_host_down_without_stalling_others(svc: RealService) -> None:
    """After 5 failed proofs from one address its logins wait 0.25 s, then 0.5 s, ...; a
    logged-in client is answered meanwhile, and the right password still logs in."""
    good = connect(svc.port)
    scram_login(good, "alice", "s3cret-Pa55")
    for _ in range(5):
        assert _auth_failure(svc, "alice", "wrong")[1]["code"] == 18
    sock, took = _timed_sasl_start(svc)
    sock.close()
    assert took >= 0.25, took
    assert _auth_failure(svc, "mallory", "guess")[1]["code"] == 18  # 6 failures: 0.5 s
    assert _auth_failure(svc, "alice", "wrong")[1]["code"] == 18  # 7: 1 s

    # A login now waits about 1 s on its own connection; the event loop serves others.
    waited: list[float] = []
    slow = threading.Thread(target=lambda: waited.append(_timed_sasl_start(svc)[1]))
    slow.start()
    time.sleep(0.1)
    assert command(good, {"listStreamProcessors": 1})["streamProcessors"] == []
    assert slow.is_alive(), "the logged-in client was answered only after the throttled login"
    slow.join(30)
    assert waited and waited[0] >= 1.0, waited
    good.close()

    # The right password still works (after the wait), and the service says why it waited.
    with svc.client("alice", "s3cret-Pa55") as c:
        assert c.admin.command({"listStreamProcessors": 1})["streamProcessors"] == []
    assert "5 failed logins from 127.0.0.1 within 60 s" in svc.log.read_text()


def test_login_throttle_forgets_old_failures_and_bounds_hosts() -> None:
    from service.auth import LoginThrottle

    t = LoginThrottle(free=2, window_s=10, first_delay_s=1, max_delay_s=4)
    t.failed("a", now=0)
    t.failed("a", now=1)
    assert t.delay("a", now=1) == 1.0 and t.delay("b", now=1) == 0.0
    t.failed("a", now=2)
    t.failed("a", now=3)
    t.failed("a", now=4)
    assert t.delay("a", now=4) == 4.0  # 1, 2, 4, capped at 4
    assert t.delay("a", now=12.5) == 1.0  # failures at 0, 1 and 2 are out of the window
    assert t.delay("a", now=100) == 0.0
    t.MAX_HOSTS = 3
    for i, h in enumerate(["h1", "h2", "h3", "h4"]):
        t.failed(h, now=200 + i)
    assert len(t._fails) == 3 and "h1" not in t._fails  # the oldest host is forgotten
