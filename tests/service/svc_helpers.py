"""Start a real ``mqlflow serve`` process on a free port with its own state dir."""

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
HERE = Path(__file__).resolve().parent
PY = sys.executable

CONNECTIONS_TOML = """
[connections.out]
type = "kafka"
bootstrap_servers = "127.0.0.1:1"

[connections.dlqconn]
type = "mongodb"
uri = "mongodb://127.0.0.1:1"
"""


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
    conns.write_text(CONNECTIONS_TOML)
    log = tmp / f"service-{time.monotonic_ns()}.log"
    args = [
        PY, "-m", "service", "serve", "--port", str(port), "--state-dir", str(state),
        "--connections", str(conns), "--flow-target", "svcflow:from_definition",
        "--snapshot-interval", "1", *extra,
    ]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(ROOT), env.get("PYTHONPATH", "")])
    fh = log.open("w")
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=fh, text=True, env=env, cwd=tmp)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("mqlflow listening on "):
        proc.kill()
        raise AssertionError(f"service did not start: {line!r}\n{log.read_text()}")
    got = int(line.rsplit(":", 1)[1])
    return Service(proc, got, state, log, args)
