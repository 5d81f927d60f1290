"""Start a real ``mqlflow serve`` process on a free port with its own state dir.

The service runs its real child flow (``flows.processor:from_definition``); the default
connection file points ``out`` at the Kafka broker and ``dlqconn`` at the MongoDB-wire
server of ``scripts/services.sh`` (tests that start processors mark ``kafka``/``mongodb``
so a missing server fails with the command that starts it)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pymongo

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable

SERVICES_ENV = ROOT / ".cache" / "run" / "services.env"


def services_env(key: str) -> str:
    """An endpoint from the environment or ``.cache/run/services.env``."""
    if os.environ.get(key):
        return os.environ[key]
    assert SERVICES_ENV.exists(), f"{SERVICES_ENV} is missing: run scripts/services.sh up"
    for line in SERVICES_ENV.read_text().splitlines():
        k, _, v = line.partition("=")
        if k.strip() == key:
            return v.strip().strip('"').strip("'")
    raise AssertionError(f"no {key}= in {SERVICES_ENV}: run scripts/services.sh up")


# The mongosh releases every end-to-end test runs on (scripts/services.sh installs both):
# the pinned oldest (sp.getProcessor takes a name) and the newest 2.x from npm.
MONGOSH_KEYS = {"pinned": "MONGOSH_PINNED", "newest": "MONGOSH_LATEST"}


def mongosh_path(which: str) -> str:
    key = MONGOSH_KEYS[which]
    path = services_env(key)
    assert Path(path).is_file(), f"{key}={path} does not exist: run scripts/services.sh up mongosh"
    return path


def mongosh_argv(which: str, host: str, port: int, *args: str, via_shell: bool = False) -> list[str]:
    """Direct mongosh, or (``via_shell``) ``mqlflow shell`` running that mongosh."""
    if via_shell:
        return [PY, "-m", "service", "shell", "--host", host, "--port", str(port), "--mongosh", mongosh_path(which), "--", *args]
    return [mongosh_path(which), f"mongodb://{host}:{port}", *args]


def connections_toml() -> str:
    return (
        f'[connections.out]\ntype = "kafka"\nbootstrap_servers = "{services_env("KAFKA_BOOTSTRAP")}"\n\n'
        f'[connections.dlqconn]\ntype = "mongodb"\nuri = "{services_env("MONGODB_URI")}"\n'
    )


@dataclass
class Service:
    proc: subprocess.Popen[str]
    port: int
    state_dir: Path
    log: Path
    args: list[str]

    def client(self, **kw: Any) -> pymongo.MongoClient:  # type: ignore[type-arg]
        return pymongo.MongoClient(
            f"mongodb://127.0.0.1:{self.port}", serverSelectionTimeoutMS=5000, **kw
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_service(tmp: Path, *extra: str, port: int = 0) -> Service:
    state = tmp / "state"
    conns = tmp / "connections.toml"
    conns.write_text(connections_toml())
    log = tmp / f"service-{time.monotonic_ns()}.log"
    args = [
        PY, "-m", "service", "serve", "--port", str(port), "--state-dir", str(state),
        "--connections", str(conns), "--snapshot-interval", "1", *extra,
    ]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    fh = log.open("w")
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=fh, text=True, env=env, cwd=tmp)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("mqlflow listening on "):
        proc.kill()
        raise AssertionError(f"service did not start: {line!r}\n{log.read_text()}")
    got = int(line.rsplit(":", 1)[1])
    return Service(proc, got, state, log, args)
