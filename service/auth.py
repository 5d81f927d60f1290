"""SCRAM-SHA-256 (RFC 5802/7677) as MongoDB runs it through ``saslStart``/``saslContinue``.

Binding a non-loopback address requires it (issue 4 §6), so ``mongosh -u USER -p PASS``
and ``MongoClient(username=..., password=...)`` work. Users come from a
``user:password`` file; keys are derived per service start.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

from bson import Binary

from service.errors import AUTHENTICATION_FAILED, CommandError

if TYPE_CHECKING:
    from service.commands import Connection

ITERATIONS = 15000
MECHANISM = "SCRAM-SHA-256"


@dataclass
class ScramConversation:
    user: str
    client_first_bare: str
    server_first: str
    nonce: str
    stored_key: bytes
    server_key: bytes
    done: bool = False


@cache
def _keys(user: str, password: str, salt: bytes) -> tuple[bytes, bytes]:
    salted = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, ITERATIONS)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    server_key = hmac.digest(salted, b"Server Key", "sha256")
    return hashlib.sha256(client_key).digest(), server_key


_SALTS: dict[str, bytes] = {}


def _fail() -> CommandError:
    return CommandError(AUTHENTICATION_FAILED, "Authentication failed.")


def _payload(cmd: dict[str, Any]) -> str:
    raw = cmd.get("payload")
    if not isinstance(raw, bytes | bytearray):
        raise _fail()
    try:
        return bytes(raw).decode("utf-8")
    except UnicodeDecodeError as e:
        raise _fail() from e


def _attrs(msg: str) -> dict[str, str]:
    out = {}
    for part in msg.split(","):
        key, sep, value = part.partition("=")
        if sep and len(key) == 1:
            out[key] = value
    return out


def sasl_start(conn: Connection, cmd: dict[str, Any]) -> dict[str, Any]:
    if cmd.get("mechanism") != MECHANISM:
        raise CommandError(
            AUTHENTICATION_FAILED,
            f"Unsupported mechanism {cmd.get('mechanism')!r}; supported: {MECHANISM}",
        )
    msg = _payload(cmd)
    if not msg.startswith(("n,,", "y,,")):
        raise _fail()
    bare = msg[3:]
    attrs = _attrs(bare)
    user = attrs.get("n", "").replace("=2C", ",").replace("=3D", "=")
    client_nonce = attrs.get("r", "")
    password = conn.supervisor.users.get(user)
    if password is None or not client_nonce:
        raise _fail()
    salt = _SALTS.setdefault(user, secrets.token_bytes(28))
    stored_key, server_key = _keys(user, password, salt)
    nonce = client_nonce + base64.b64encode(secrets.token_bytes(24)).decode()
    server_first = f"r={nonce},s={base64.b64encode(salt).decode()},i={ITERATIONS}"
    conn.sasl = ScramConversation(user, bare, server_first, nonce, stored_key, server_key)
    return {"conversationId": 1, "done": False, "payload": Binary(server_first.encode())}


def sasl_continue(conn: Connection, cmd: dict[str, Any]) -> dict[str, Any]:
    conv = conn.sasl
    if conv is None:
        raise _fail()
    if conv.done:  # the final empty exchange when skipEmptyExchange was not requested
        conn.sasl = None
        return {"conversationId": 1, "done": True, "payload": Binary(b"")}
    msg = _payload(cmd)
    attrs = _attrs(msg)
    if attrs.get("r") != conv.nonce or "p" not in attrs:
        conn.sasl = None
        raise _fail()
    without_proof = msg[: msg.rindex(",p=")]
    auth_message = f"{conv.client_first_bare},{conv.server_first},{without_proof}".encode()
    signature = hmac.digest(conv.stored_key, auth_message, "sha256")
    try:
        proof = base64.b64decode(attrs["p"])
    except ValueError as e:
        raise _fail() from e
    client_key = bytes(a ^ b for a, b in zip(proof, signature, strict=False))
    if len(proof) != len(signature) or not hmac.compare_digest(
        hashlib.sha256(client_key).digest(), conv.stored_key
    ):
        conn.sasl = None
        raise _fail()
    server_sig = base64.b64encode(hmac.digest(conv.server_key, auth_message, "sha256")).decode()
    conn.user = conv.user
    conv.done = True
    return {"conversationId": 1, "done": False, "payload": Binary(f"v={server_sig}".encode())}
