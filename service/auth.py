"""SCRAM-SHA-256 (RFC 5802/7677) as MongoDB runs it through ``saslStart``/``saslContinue``.

With ``--users`` every client logs in (binding a non-loopback address requires
users), so ``mongosh -u USER -p PASS`` and ``MongoClient(username=..., password=...)``
work. Users come from a ``user:password`` file; keys are derived per service start.

An unknown user and a wrong password are indistinguishable: an unknown user gets a
full first round with a salt that is stable per name (an HMAC under a per-start
secret) and random keys, so the proof fails at the same step with the same reply.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bson import Binary

from service.errors import AUTHENTICATION_FAILED, CommandError

if TYPE_CHECKING:
    from service.commands import Connection

ITERATIONS = 15000
MECHANISM = "SCRAM-SHA-256"

log = logging.getLogger(__name__)


class LoginThrottle:
    """Slows password guessing from one address without refusing anyone.

    Only a failed proof counts (a wrong password or unknown user at the last SCRAM step,
    or a wrong HTTP Basic login on the metrics port): a malformed message tests no
    password. After ``free`` failures from one host within ``window_s``, every further
    login from that host is answered only after a delay that doubles per failure, from
    ``first_delay_s`` up to ``max_delay_s``. The wire port waits with an asyncio sleep,
    so other clients are served meanwhile. A success does not clear the record: a
    guesser who owns one account could otherwise reset its own. Hosts and failures
    kept are bounded, so a flood of addresses cannot grow memory without limit."""

    MAX_HOSTS = 4096

    def __init__(self, free: int = 5, window_s: float = 60.0, first_delay_s: float = 0.25,
                 max_delay_s: float = 8.0) -> None:
        self.free, self.window_s = free, window_s
        self.first_delay_s, self.max_delay_s = first_delay_s, max_delay_s
        self._fails: dict[str, deque[float]] = {}
        self._lock = threading.Lock()  # the metrics port checks logins on its own threads

    def _recent(self, host: str, now: float) -> int:
        times = self._fails.get(host)
        if times is None:
            return 0
        while times and now - times[0] > self.window_s:
            times.popleft()
        if not times:
            del self._fails[host]
            return 0
        return len(times)

    def delay(self, host: str, now: float | None = None) -> float:
        """Seconds to wait before answering a login from ``host``."""
        with self._lock:
            n = self._recent(host, time.monotonic() if now is None else now)
        if n < self.free:
            return 0.0
        return float(min(self.first_delay_s * 2 ** (n - self.free), self.max_delay_s))

    def failed(self, host: str, now: float | None = None) -> None:
        t = time.monotonic() if now is None else now
        with self._lock:
            n = self._recent(host, t)
            if n == 0 and len(self._fails) >= self.MAX_HOSTS:
                for old in [h for h in self._fails if self._recent(h, t) == 0]:
                    self._fails.pop(old, None)
                while len(self._fails) >= self.MAX_HOSTS:  # all recent: forget the oldest
                    self._fails.pop(next(iter(self._fails)))
            times = self._fails.setdefault(host, deque(maxlen=self.free + 32))
            times.append(t)
        if n + 1 == self.free:
            log.warning(
                "%d failed logins from %s within %.0f s: its logins are now answered after a "
                "delay (up to %.0f s)", self.free, host, self.window_s, self.max_delay_s,
            )


# Per service process: the wire port and the metrics port share it.
THROTTLE = LoginThrottle()


def peer_host(peer: str) -> str:
    """``host`` of a ``host:port`` peer string (an IPv6 host keeps its colons)."""
    return peer.rpartition(":")[0] or peer


@dataclass
class ScramConversation:
    user: str
    client_first_bare: str
    server_first: str
    nonce: str
    stored_key: bytes
    server_key: bytes
    done: bool = False


def _salted(password: str, salt: bytes) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, ITERATIONS)


def _stored_key(salted: bytes) -> bytes:
    return hashlib.sha256(hmac.digest(salted, b"Client Key", "sha256")).digest()


@cache
def _keys(user: str, password: str, salt: bytes) -> tuple[bytes, bytes]:
    salted = _salted(password, salt)
    return _stored_key(salted), hmac.digest(salted, b"Server Key", "sha256")


_SALTS: dict[str, bytes] = {}
_SECRET = secrets.token_bytes(32)  # per service start: salts of unknown users


class UsersFileError(RuntimeError):
    """The ``--users`` file cannot be used; the service does not start."""


# Roles, from the most to the least allowed. ``owner`` may do everything; ``read`` may
# look (list, stats, sample, connections, metrics, the console) but not change anything.
ROLES = ("owner", "read")


def load_users(path: Path) -> dict[str, str]:
    """``user -> password`` of a users file (see :func:`load_users_and_roles`)."""
    return load_users_and_roles(path)[0]


def load_users_and_roles(path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Parse ``user:password`` lines (``#`` comments and blank lines are skipped), under
    optional ``[owner]`` / ``[read]`` section lines that give the role of the users after
    them (``owner`` until the first section line).

    Any other line stops the start: a line without ``:``, an empty user or password,
    an unknown section or a user named twice would otherwise turn into an account
    nobody meant."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise UsersFileError(f"users file {path} does not exist") from e
    except (OSError, UnicodeDecodeError) as e:
        raise UsersFileError(f"cannot read users file {path}: {e}") from e
    users: dict[str, str] = {}
    roles: dict[str, str] = {}
    role = ROLES[0]
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]") and ":" not in line:
            role = line[1:-1].strip()
            if role not in ROLES:
                raise UsersFileError(
                    f"users file {path} line {n}: unknown role section {line}; roles: "
                    + ", ".join(f"[{r}]" for r in ROLES)
                )
            continue
        user, sep, password = line.partition(":")
        if not sep or not user or not password:
            raise UsersFileError(
                f"users file {path} line {n}: expected 'user:password' with a non-empty "
                "user and password"
            )
        if user in users:
            raise UsersFileError(f"users file {path} line {n}: user '{user}' is listed twice")
        users[user] = password
        roles[user] = role
    if not users:
        raise UsersFileError(f"users file {path} has no 'user:password' line")
    for user, password in users.items():  # derive keys now, not on a first login
        _keys(user, password, _SALTS.setdefault(user, secrets.token_bytes(28)))
    return users, roles


def check_password(users: dict[str, str], user: str, password: str) -> bool:
    """A user and password sent in one piece (HTTP Basic of ``--metrics-port``), checked
    against the same SCRAM-SHA-256 StoredKey a mongosh login proves. An unknown user costs
    the same PBKDF2 round as a known one; nothing per attempt is cached."""
    known = users.get(user)
    if known is None:
        _stored_key(_salted(password, _unknown_salt(user)))
        return False
    stored, _ = _keys(user, known, _SALTS.setdefault(user, secrets.token_bytes(28)))
    return hmac.compare_digest(_stored_key(_salted(password, _SALTS[user])), stored)


def _unknown_salt(user: str) -> bytes:
    """Stable per name for this service start, so an unknown user looks like a known one."""
    return hmac.digest(_SECRET, user.encode("utf-8"), "sha256")[:28]


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
    if not user or not client_nonce:
        raise _fail()
    password = conn.supervisor.users.get(user)
    if password is None:
        # Unknown user: same round, same timing (keys of known users are cached), and
        # a proof that can never match.
        salt = _unknown_salt(user)
        stored_key, server_key = secrets.token_bytes(32), secrets.token_bytes(32)
    else:
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
