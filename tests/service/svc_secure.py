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
from pathlib import Path
from typing import Any

import bson
from bson import Binary
from svc_helpers import ROOT, Service, reachable_mongodb_uri, serve_args, start_service
from svc_helpers import mongosh_path as _mongosh_path

__all__ = ["ROOT", "RealService", "mongodb_uri", "serve_args", "start_real", "write_connections"]

mongodb_uri = reachable_mongodb_uri


def mongosh_path() -> str:
    """The pinned mongosh (the oldest release the service supports)."""
    return _mongosh_path("pinned")


class RealService(Service):
    """A ``Service`` with a longer server selection (the security tests load the machine)
    and mongosh on it."""

    selection_timeout_ms = 10000

    def mongosh(self, *args: str, script: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "HOME": str(self.state_dir.parent)}
        return subprocess.run(
            [mongosh_path(), f"mongodb://127.0.0.1:{self.port}", "--quiet", "--norc", *args,
             "--eval", script],
            capture_output=True, text=True, timeout=timeout, env=env,
        )


def connections_text(uri: str = "mongodb://127.0.0.1:1/") -> str:
    return f'[connections.out]\ntype = "mongodb"\nuri = "{uri}"\n'


def write_connections(tmp: Path, uri: str = "mongodb://127.0.0.1:1/") -> Path:
    conns = tmp / "connections.toml"
    conns.write_text(connections_text(uri))
    return conns


def start_real(tmp: Path, *extra: str, uri: str = "mongodb://127.0.0.1:1/",
               state_dir: Path | None = None, cwd: Path | None = None) -> RealService:
    """``mqlflow serve`` whose only connection ``out`` points at ``uri`` (by default a closed port)."""
    svc = start_service(tmp, *extra, connections=connections_text(uri), state_dir=state_dir, cwd=cwd, cls=RealService)
    assert isinstance(svc, RealService)
    return svc


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
