"""scripts/services.sh: idempotent `up`, clear failures, usage."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "services.sh"


def sh(*args: str, env: dict[str, str] | None = None, cwd: str = "/") -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300)


def base_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MONGODB_URI", "KAFKA_BOOTSTRAP")}
    env["MQLFLOW_SERVICES_ENV"] = str(tmp_path / "services.env")
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_usage() -> None:
    res = sh("start")
    assert res.returncode == 2
    assert res.stderr.strip().endswith("up|down|status [mongodb|kafka|mongosh|all]")
    assert sh("up", "postgres").returncode == 2


@pytest.mark.mongodb
def test_up_is_idempotent_from_any_directory(tmp_path: Path, mongodb_uri: str) -> None:
    env = base_env(tmp_path)
    if os.environ.get("MONGODB_URI"):
        env["MONGODB_URI"] = os.environ["MONGODB_URI"]
    first = sh("up", "mongodb", env=env, cwd=str(tmp_path))
    second = sh("up", "mongodb", env=env, cwd="/")
    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert (tmp_path / "services.env").read_text() == f"MONGODB_URI={mongodb_uri}\n"
    if "MONGODB_URI" not in env:
        assert "FerretDB already running" in second.stderr
    status = sh("status", "mongodb", env=env)
    assert status.returncode == 0
    assert status.stdout.startswith("mongodb: ")
    assert " at " in status.stdout or "external" in status.stdout


def test_external_uri_that_does_not_answer_is_a_clear_error(tmp_path: Path) -> None:
    port = free_port()
    env = base_env(tmp_path, MONGODB_URI=f"mongodb://bob:pw@127.0.0.1:{port}/")
    res = sh("up", "mongodb", env=env)
    assert res.returncode == 1
    assert res.stderr.strip() == (
        f"[services] ERROR: mongodb: MONGODB_URI=mongodb://bob:***@127.0.0.1:{port}/ does not answer ping; "
        "unset it to use the local FerretDB"
    )
    assert not (tmp_path / "services.env").exists()


def test_external_kafka_that_does_not_answer_is_a_clear_error(tmp_path: Path) -> None:
    port = free_port()
    res = sh("up", "kafka", env=base_env(tmp_path, KAFKA_BOOTSTRAP=f"127.0.0.1:{port}"))
    assert res.returncode == 1
    assert res.stderr.strip() == (
        f"[services] ERROR: kafka: KAFKA_BOOTSTRAP=127.0.0.1:{port} does not answer metadata requests; "
        "unset it to use the local broker"
    )


def test_port_taken_by_someone_else(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        res = sh("up", "mongodb", env=base_env(tmp_path, MQLFLOW_FERRETDB_PORT=str(port)))
    assert res.returncode == 1
    assert res.stderr.strip() == (
        f"[services] ERROR: mongodb: port {port} is taken by a process this script did not start; "
        "stop it or set MQLFLOW_FERRETDB_PORT"
    )


def test_status_of_a_stopped_private_instance(tmp_path: Path) -> None:
    res = sh("status", "mongodb", env=base_env(tmp_path, MQLFLOW_FERRETDB_PORT=str(free_port())))
    assert res.returncode == 1
    assert res.stdout.startswith("mongodb: stopped (")
