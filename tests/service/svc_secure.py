"""Helpers of the security tests: a real ``mqlflow serve`` (with its real child flow,
``flows.processor:from_definition``), real mongosh, and a raw wire client that can log in
with SCRAM-SHA-256 and then send messages no driver would send."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bson
import pymongo
from bson import Binary

ROOT = Path(__file__).resolve().parents[2]
MONGOSH = ROOT / ".cache" / "node" / "node_modules" / ".bin" / "mongosh"


def services_env(key: str) -> str:
    if os.environ.get(key):
        return os.environ[key]
    env_file = ROOT / ".cache" / "run" / "services.env"
    assert env_file.exists(), f"{env_file} is missing: run scripts/services.sh up"
    for line in env_file.read_text().splitlines():
        k, _, v = line.partition("=")
        if k.strip() == key:
            return v.strip().strip('"')
    raise AssertionError(f"no {key}= in {env_file}: run scripts/services.sh up")


def mongodb_uri() -> str:
    """The shared MongoDB-wire server; a test that cannot reach it fails with how to start it."""
    uri = services_env("MONGODB_URI")
    try:
        c: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(uri, serverSelectionTimeoutMS=5000)
        with c:
            c.admin.command("ping")
    except pymongo.errors.PyMongoError as e:
        raise AssertionError(
            f"MongoDB is not reachable at {uri} ({e}); start it with scripts/services.sh up mongodb"
        ) from e
    return uri


def mongosh_path() -> str:
    assert MONGOSH.exists(), f"{MONGOSH} is missing: run scripts/services.sh up mongosh"
    return str(MONGOSH)


@dataclass
class RealService:
    proc: subprocess.Popen[str]
    port: int
    state_dir: Path
    log: Path
    users: dict[str, str] = field(default_factory=dict)

    def client(self, user: str | None = None, password: str | None = None, **kw: Any) -> Any:
        if user is not None:
            kw.update(username=user, password=password)
        return pymongo.MongoClient(
            f"mongodb://127.0.0.1:{self.port}", serverSelectionTimeoutMS=10000, **kw
        )

    def mongosh(self, *args: str, script: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "HOME": str(self.state_dir.parent)}
        return subprocess.run(
            [mongosh_path(), f"mongodb://127.0.0.1:{self.port}", "--quiet", "--norc", *args,
             "--eval", script],
            capture_output=True, text=True, timeout=timeout, env=env,
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def serve_args(state_dir: Path, connections: Path, *extra: str) -> list[str]:
    """``mqlflow serve`` as a user runs it: the default (real) flow target."""
    return [
        sys.executable, "-m", "service", "serve", "--port", "0", "--state-dir", str(state_dir),
        "--connections", str(connections), "--snapshot-interval", "1", *extra,
    ]


def write_connections(tmp: Path, uri: str = "mongodb://127.0.0.1:1/") -> Path:
    conns = tmp / "connections.toml"
    conns.write_text(f'[connections.out]\ntype = "mongodb"\nuri = "{uri}"\n')
    return conns


def start_real(tmp: Path, *extra: str, uri: str = "mongodb://127.0.0.1:1/",
               state_dir: Path | None = None, cwd: Path | None = None) -> RealService:
    state = state_dir or tmp / "state"
    conns = write_connections(tmp, uri)
    log = tmp / f"service-{time.monotonic_ns()}.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        serve_args(state, conns, *extra), stdout=subprocess.PIPE, stderr=log.open("w"),
        text=True, env=env, cwd=cwd or tmp,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("mqlflow listening on "):
        proc.kill()
        raise AssertionError(f"service did not start: {line!r}\n{log.read_text()}")
    return RealService(proc, int(line.rsplit(":", 1)[1]), state, log)


# --- a raw wire client ------------------------------------------------------------------

_HEADER = struct.Struct("<iiii")


def op_msg(body: dict[str, Any], *, sequences: dict[str, bytes] | None = None,
           checksum: bool = False, request_id: int = 1) -> bytes:
    """An OP_MSG built by hand; ``sequences`` maps an identifier to concatenated BSON."""
    import crc32c

    flags = 1 if checksum else 0
    parts = [struct.pack("<I", flags), b"\x00", bson.encode(body)]
    for ident, docs in (sequences or {}).items():
        payload = ident.encode() + b"\x00" + docs
        parts.append(b"\x01" + struct.pack("<i", len(payload) + 4) + payload)
    payload = b"".join(parts)
    length = 16 + len(payload) + (4 if checksum else 0)
    msg = _HEADER.pack(length, request_id, 0, 2013) + payload
    if checksum:
        msg += struct.pack("<I", crc32c.crc32c(msg))
    return msg


def recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError(f"closed by the server after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def read_reply(sock: socket.socket) -> dict[str, Any]:
    head = recv_exact(sock, 16)
    length, _, _, opcode = _HEADER.unpack(head)
    rest = recv_exact(sock, length - 16)
    assert opcode == 2013, opcode
    doc: dict[str, Any] = bson.decode(rest[5:])  # flagBits, kind 0, the body
    return doc


def command(sock: socket.socket, body: dict[str, Any]) -> dict[str, Any]:
    sock.sendall(op_msg({**body, "$db": "admin"}))
    return read_reply(sock)


def connect(port: int, timeout: float = 30.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def scram_login(sock: socket.socket, user: str, password: str) -> None:
    """SCRAM-SHA-256 (RFC 7677) client side, as drivers run it over saslStart/saslContinue."""
    nonce = base64.b64encode(secrets.token_bytes(24)).decode()
    first_bare = f"n={user},r={nonce}"
    r = command(sock, {"saslStart": 1, "mechanism": "SCRAM-SHA-256",
                       "payload": Binary(f"n,,{first_bare}".encode())})
    assert r.get("ok") == 1.0, r
    server_first = bytes(r["payload"]).decode()
    attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
    salted = hashlib.pbkdf2_hmac(
        "sha256", password.encode(), base64.b64decode(attrs["s"]), int(attrs["i"])
    )
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    stored_key = hashlib.sha256(client_key).digest()
    without_proof = f"c=biws,r={attrs['r']}"
    auth_message = f"{first_bare},{server_first},{without_proof}".encode()
    signature = hmac.digest(stored_key, auth_message, "sha256")
    proof = base64.b64encode(bytes(a ^ b for a, b in zip(client_key, signature, strict=True)))
    r = command(sock, {"saslContinue": 1, "conversationId": 1,
                       "payload": Binary(f"{without_proof},p={proof.decode()}".encode())})
    assert r.get("ok") == 1.0, r
    while not r.get("done"):
        r = command(sock, {"saslContinue": 1, "conversationId": 1, "payload": Binary(b"")})
        assert r.get("ok") == 1.0, r


def closed_by_peer(sock: socket.socket, within: float) -> bool:
    """True when the server closes the connection within ``within`` seconds."""
    sock.settimeout(within)
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False
