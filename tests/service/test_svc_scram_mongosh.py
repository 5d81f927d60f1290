"""Real mongosh with ``-u USER -p PASS`` against a service bound to a non-loopback
address (such a bind requires users and SCRAM-SHA-256; README "Security and limits of `mqlflow serve`").

``127.0.0.2`` is not in the service's loopback set (only ``127.0.0.1``, ``::1`` and
``localhost`` are), so binding it turns authentication on while staying local."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from svc_helpers import Service, mongosh_argv, start_service

pytestmark = pytest.mark.mongosh

HOST = "127.0.0.2"


@pytest.fixture
def auth_service(tmp_path: Path) -> Iterator[Service]:
    users = tmp_path / "users.txt"
    users.write_text("# user:password\nalice:s3cret-Pa55\nbob:other\n")
    svc = start_service(tmp_path, "--host", HOST, "--users", str(users))
    yield svc
    svc.stop()


def mongosh(svc: Service, version: str, *args: str, script: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["HOME"] = str(svc.state_dir.parent)
    return subprocess.run(
        mongosh_argv(version, HOST, svc.port, "--quiet", "--norc", *args, "--eval", script),
        capture_output=True, text=True, timeout=120, env=env,
    )


def test_login_with_right_password_runs_commands(auth_service: Service, mongosh_version: str) -> None:
    r = mongosh(
        auth_service, mongosh_version, "-u", "alice", "-p", "s3cret-Pa55",
        script="print(JSON.stringify(db.runCommand({connectionStatus: 1}).authInfo.authenticatedUsers));"
               "print(JSON.stringify(sp.listStreamProcessors()))",
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ['[{"user":"alice","db":"admin"}]', "[]"]
    assert r.stderr == ""


def test_login_with_explicit_mechanism(auth_service: Service, mongosh_version: str) -> None:
    r = mongosh(
        auth_service, mongosh_version, "-u", "bob", "-p", "other", "--authenticationMechanism", "SCRAM-SHA-256",
        "--authenticationDatabase", "admin", script="print(sp.listStreamProcessors().length)",
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "0"


def test_wrong_password_fails_with_authentication_error(auth_service: Service, mongosh_version: str) -> None:
    r = mongosh(auth_service, mongosh_version, "-u", "alice", "-p", "wrong", script="print('connected')")
    assert r.returncode != 0
    assert r.stdout == ""
    assert r.stderr == "MongoServerError: Authentication failed.\n"


def test_unknown_user_fails_with_authentication_error(auth_service: Service, mongosh_version: str) -> None:
    r = mongosh(auth_service, mongosh_version, "-u", "mallory", "-p", "s3cret-Pa55", script="print('connected')")
    assert r.returncode != 0
    assert r.stderr == "MongoServerError: Authentication failed.\n"


def test_no_credentials_cannot_run_commands(auth_service: Service, mongosh_version: str) -> None:
    r = mongosh(auth_service, mongosh_version, script="sp.listStreamProcessors()")
    assert r.returncode != 0
    assert r.stderr == "MongoServerError: command listStreamProcessors requires authentication\n"
