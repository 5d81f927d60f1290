"""Roles of ``--users``: a ``[read]`` section gives users that may look (list, stats,
sample, connections, the console) but not change processors; ``owner`` (the default)
may do everything. Through the real service: pymongo, real mongosh (newest) and the
console's HTTP API."""

from __future__ import annotations

import http.cookiejar
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pymongo
import pytest

from tests.service.svc_helpers import Service, mongosh_path, start_service
from tests.service.svc_helpers import http_request as _http

USERS = "# owners first\nalice:s3cret-Pa55\n\n[read]\nviewer:look-0nly\n"
PIPELINE: list[dict[str, Any]] = [
    {"$source": {"connectionName": "sample_stream_solar"}},
    {"$merge": {"into": {"connectionName": "out", "db": "svc_roles", "coll": "x"}}},
]
CONNECTIONS = '[connections.out]\ntype = "mongodb"\nuri = "mongodb://127.0.0.1:1/"\n'


@pytest.fixture
def svc(tmp_path: Path) -> Any:
    users = tmp_path / "users.txt"
    users.write_text(USERS)
    s = start_service(tmp_path, "--users", str(users), "--http-port", "0", connections=CONNECTIONS)
    yield s
    s.stop()


def _denied(name: str) -> dict[str, Any]:
    return {
        "ok": 0.0, "code": 13, "codeName": "Unauthorized",
        "errmsg": f"not authorized to execute command {name}: user 'viewer' has the role 'read', "
                  "and only 'owner' may change processors",
    }


def test_read_role_looks_but_does_not_change(svc: Service) -> None:
    with svc.client("alice", "s3cret-Pa55") as owner:
        owner.admin.command({"createStreamProcessor": "p", "pipeline": PIPELINE})
        status = owner.admin.command("connectionStatus")["authInfo"]
        assert status["authenticatedUserRoles"] == [{"role": "owner", "db": "admin"}]
    with svc.client("viewer", "look-0nly") as viewer:
        assert [p["name"] for p in viewer.admin.command({"listStreamProcessors": 1})["streamProcessors"]] == ["p"]
        assert viewer.admin.command({"getStreamProcessorStats": "p"})["stats"]["name"] == "p"
        assert [c["name"] for c in viewer.admin.command({"listStreamConnections": 1})["connections"]][:1] == ["out"]
        status = viewer.admin.command("connectionStatus")["authInfo"]
        assert status["authenticatedUserRoles"] == [{"role": "read", "db": "admin"}]
        for cmd in [
            {"createStreamProcessor": "q", "pipeline": PIPELINE},
            {"startStreamProcessor": "p"},
            {"stopStreamProcessor": "p"},
            {"modifyStreamProcessor": "p", "pipeline": PIPELINE},
            {"dropStreamProcessor": "p"},
            {"processStreamProcessor": PIPELINE},
        ]:
            name = next(iter(cmd))
            with pytest.raises(pymongo.errors.OperationFailure) as e:
                viewer.admin.command(cmd)
            assert e.value.details == _denied(name), name
    # Nothing changed.
    with svc.client("alice", "s3cret-Pa55") as owner:
        assert [(p["name"], p["state"]) for p in owner.admin.command({"listStreamProcessors": 1})["streamProcessors"]] == [
            ("p", "CREATED")
        ]


def test_read_role_in_mongosh(svc: Service, tmp_path: Path) -> None:
    r = subprocess.run(
        [mongosh_path("newest"), f"mongodb://127.0.0.1:{svc.port}/", "--quiet", "--norc", "-u", "viewer", "-p", "look-0nly",
         "--eval", "print(sp.listStreamProcessors().length); sp.createStreamProcessor('q', "
                   "[{$source: {connectionName: 'sample_stream_solar'}}, "
                   "{$merge: {into: {connectionName: 'out', db: 'd', coll: 'c'}}}])"],
        capture_output=True, text=True, timeout=120, env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert r.stdout == "0\n", (r.stdout, r.stderr)
    assert "not authorized to execute command createStreamProcessor: user 'viewer' has the role 'read'" in r.stderr


def test_console_needs_a_login_on_loopback_with_users_and_read_users_cannot_act(svc: Service) -> None:
    with svc.client("alice", "s3cret-Pa55") as owner:
        owner.admin.command({"createStreamProcessor": "p", "pipeline": PIPELINE})
    assert svc.console_url is not None
    base = svc.console_url
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    assert _http(opener, base + "api/processors") == (401, '{"error": "log in first"}')
    _http(opener, base + "login", urllib.parse.urlencode({"user": "viewer", "password": "look-0nly"}).encode())
    status, body = _http(opener, base + "api/processors")
    assert status == 200 and '"name": "p"' in body
    token = _http(opener, base)[1].split('name="csrf-token" content="', 1)[1].split('"', 1)[0]
    assert _http(opener, base + "api/processors/p/drop", b"", {"X-CSRF-Token": token}) == (
        403, '{"error": "user \'viewer\' has the role \'read\'; only \'owner\' may drop processors"}'
    )
    with svc.client("alice", "s3cret-Pa55") as owner:
        assert [p["name"] for p in owner.admin.command({"listStreamProcessors": 1})["streamProcessors"]] == ["p"]
