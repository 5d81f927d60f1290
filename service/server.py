"""The thin asyncio server around the sans-I/O codec and the command table.

One task per connection reads a 16-byte header, then exactly the announced
body, parses it with :mod:`service.wire`, dispatches through
:data:`service.commands.COMMANDS` and writes the reply. Requests on one
connection are answered in order, as mongod does. A protocol error closes only
that connection, with a log line; the listener keeps serving everyone else.

Hostile clients are bounded (see :class:`Limits`): a cap on open connections; before
a login (when ``--users`` is given) a small message-size limit and an idle timeout;
and the CRC-32C check and parsing of large messages run in a worker thread, so one
client's 45 MB message never stalls another client's ``ping``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import ssl
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from service import wire
from service.commands import Connection, dispatch
from service.errors import CommandError
from service.supervisor import Supervisor

log = logging.getLogger("mqlflow.server")

# MongoDB 5.1+ accepts only the handshake over OP_QUERY.
OP_QUERY_COMMANDS = frozenset({"hello", "isMaster", "ismaster"})
LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})
# Messages from this size on are checksummed and parsed in a worker thread.
OFFLOAD_BYTES = 1 << 20
# Two at a time: also bounds the memory of large messages being parsed at once.
_PARSERS = ThreadPoolExecutor(2, thread_name_prefix="mqlflow-parse")


@dataclass(frozen=True)
class Limits:
    """Resource bounds per service (the ``serve`` flags of the same names)."""

    max_connections: int = 1000
    # Before a login the handshake and SCRAM messages are small (a mongosh hello is
    # about 1 KB); 64 KiB leaves room for client metadata and stops pre-login floods.
    prelogin_max_message: int = 64 * 1024
    # A connection that has not logged in is closed after this many idle seconds.
    # Drivers' monitoring connections never log in and send a hello every 10 s.
    prelogin_idle_timeout: float = 60.0


class Server:
    def __init__(
        self,
        supervisor: Supervisor,
        host: str = "127.0.0.1",
        port: int = 27117,
        limits: Limits | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.supervisor = supervisor
        self.tls = tls
        self.host = host
        self.port = port
        self.limits = limits or Limits()
        # With users, every client logs in, on loopback too; without users only a
        # loopback bind is allowed (checked in start()).
        self.require_auth = bool(supervisor.users) or host not in LOOPBACK
        self._server: asyncio.AbstractServer | None = None
        self._ids = itertools.count(1)
        self._request_ids = itertools.count(1)
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        if self.require_auth and not self.supervisor.users:
            raise RuntimeError(
                f"binding {self.host} (not loopback) requires users for SCRAM-SHA-256 "
                "authentication; pass --users FILE"
            )
        # The default 64 KiB stream limit: readexactly() still reads larger bodies,
        # but a client cannot make us buffer more than that before we look at it.
        # With TLS, the handshake must finish within the pre-login idle timeout too.
        self._server = await asyncio.start_server(
            self._on_client, self.host, self.port, ssl=self.tls,
            ssl_handshake_timeout=self.limits.prelogin_idle_timeout if self.tls is not None else None,
        )
        sock = self._server.sockets[0]
        self.port = sock.getsockname()[1]
        log.info("listening on %s:%d%s", self.host, self.port, " (TLS)" if self.tls is not None else "")

    async def serve_forever(self) -> None:
        assert self._server is not None
        async with self._server:
            await self._server.serve_forever()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        peer = writer.get_extra_info("peername")
        peer_s = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        if self.supervisor.connection_count >= self.limits.max_connections:
            # As mongod does: accept, log, close at once.
            log.warning(
                "refusing connection from %s: %d connections open (--max-connections)",
                peer_s, self.supervisor.connection_count,
            )
            writer.close()
            if task is not None:
                self._tasks.discard(task)
            return
        conn = Connection(next(self._ids), peer_s, self.supervisor, require_auth=self.require_auth)
        self.supervisor.connection_count += 1
        try:
            await self._serve(conn, reader, writer)
        except wire.ProtocolError as e:
            log.warning("closing connection %d from %s: %s", conn.connection_id, peer_s, e)
        except TimeoutError:
            log.info(
                "closing connection %d from %s: idle %.0f s without a login",
                conn.connection_id, peer_s, self.limits.prelogin_idle_timeout,
            )
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client went away, possibly mid-message
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("closing connection %d from %s after an internal error", conn.connection_id, peer_s)
        finally:
            self.supervisor.connection_count -= 1
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            if task is not None:
                self._tasks.discard(task)

    async def _serve(
        self, conn: Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while True:
            if conn.require_auth and conn.user is None:
                # Header and body of the next message must arrive within the idle timeout.
                async with asyncio.timeout(self.limits.prelogin_idle_timeout):
                    data = await self._read_message(conn, reader)
            else:
                data = await self._read_message(conn, reader)
            if data is None:
                return
            if len(data) >= OFFLOAD_BYTES:
                loop = asyncio.get_running_loop()
                msg = await loop.run_in_executor(_PARSERS, wire.parse_message, data)
            else:
                msg = wire.parse_message(data)
            del data
            reply = await self.handle(conn, msg)
            if reply is not None:
                writer.write(reply)
                await writer.drain()

    async def _read_message(
        self, conn: Connection, reader: asyncio.StreamReader
    ) -> bytes | bytearray | None:
        """One whole message, or ``None`` at a clean end of stream."""
        try:
            head = await reader.readexactly(wire.HEADER_SIZE)
        except asyncio.IncompleteReadError as e:
            if e.partial:
                raise wire.ProtocolError(f"truncated header: {len(e.partial)} bytes") from e
            return None
        header = wire.parse_header(head)
        limit = self.limits.prelogin_max_message
        if conn.require_auth and conn.user is None and header.length > limit:
            raise wire.ProtocolError(
                f"message of {header.length} bytes before authentication exceeds {limit} bytes"
            )
        if header.length >= OFFLOAD_BYTES:
            return await self._read_large(head, header.length, reader)
        try:
            rest = await reader.readexactly(header.length - wire.HEADER_SIZE)
        except asyncio.IncompleteReadError as e:
            raise wire.ProtocolError(
                f"truncated message: header says {header.length} bytes, "
                f"got {wire.HEADER_SIZE + len(e.partial)}"
            ) from e
        return head + rest

    @staticmethod
    async def _read_large(head: bytes, length: int, reader: asyncio.StreamReader) -> bytearray:
        """Fill one preallocated buffer chunk by chunk: no step on the event loop copies
        more than a chunk (``readexactly`` would copy the whole body at once, twice)."""
        buf = bytearray(length)
        view = memoryview(buf)
        view[: wire.HEADER_SIZE] = head
        pos = wire.HEADER_SIZE
        while pos < length:
            chunk = await reader.read(min(length - pos, 1 << 20))
            if not chunk:
                raise wire.ProtocolError(f"truncated message: header says {length} bytes, got {pos}")
            view[pos : pos + len(chunk)] = chunk
            pos += len(chunk)
        view.release()
        return buf

    async def handle(self, conn: Connection, msg: wire.Message) -> bytes | None:
        """Turn one parsed request into the reply bytes (``None``: no reply)."""
        rid = next(self._request_ids) & 0x7FFFFFFF
        if isinstance(msg, wire.OpMsg):
            doc = await dispatch(conn, msg.command)
            if msg.more_to_come:
                return None
            return wire.encode_op_msg(rid, msg.header.request_id, doc)
        if isinstance(msg, wire.OpQuery):
            return await self._op_query(conn, msg, rid)
        raise wire.ProtocolError("clients may not send OP_REPLY")

    async def _op_query(self, conn: Connection, msg: wire.OpQuery, rid: int) -> bytes:
        if not msg.full_collection_name.endswith(".$cmd"):
            doc: dict[str, Any] = {"$err": "OP_QUERY is only supported for commands", "code": 352}
            return wire.encode_op_reply(rid, msg.header.request_id, [doc], flags=wire.QUERY_FAILURE)
        cmd = msg.query
        if "$query" in cmd and isinstance(cmd["$query"], dict):
            cmd = cmd["$query"]
        name = next(iter(cmd), "")
        if name not in OP_QUERY_COMMANDS:
            err = CommandError(
                352,
                f"Unsupported OP_QUERY command: {name}. The client driver may require an upgrade.",
            ).to_reply()
            err["codeName"] = "UnsupportedOpQueryCommand"
            return wire.encode_op_reply(rid, msg.header.request_id, [err])
        doc = await dispatch(conn, cmd)
        return wire.encode_op_reply(rid, msg.header.request_id, [doc])
