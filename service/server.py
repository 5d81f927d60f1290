"""The thin asyncio server around the sans-I/O codec and the command table.

One task per connection reads a 16-byte header, then exactly the announced
body, parses it with :mod:`service.wire`, dispatches through
:data:`service.commands.COMMANDS` and writes the reply. Requests on one
connection are answered in order, as mongod does. A protocol error closes only
that connection, with a log line; the listener keeps serving everyone else.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from typing import Any

from service import wire
from service.commands import Connection, dispatch
from service.errors import CommandError
from service.supervisor import Supervisor

log = logging.getLogger("mqlflow.server")

# MongoDB 5.1+ accepts only the handshake over OP_QUERY.
OP_QUERY_COMMANDS = frozenset({"hello", "isMaster", "ismaster"})
LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


class Server:
    def __init__(
        self, supervisor: Supervisor, host: str = "127.0.0.1", port: int = 27117
    ) -> None:
        self.supervisor = supervisor
        self.host = host
        self.port = port
        self.require_auth = host not in LOOPBACK
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
        self._server = await asyncio.start_server(
            self._on_client, self.host, self.port, limit=wire.MAX_MESSAGE_SIZE
        )
        sock = self._server.sockets[0]
        self.port = sock.getsockname()[1]
        log.info("listening on %s:%d", self.host, self.port)

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
        conn = Connection(next(self._ids), peer_s, self.supervisor, require_auth=self.require_auth)
        self.supervisor.connection_count += 1
        try:
            await self._serve(conn, reader, writer)
        except wire.ProtocolError as e:
            log.warning("closing connection %d from %s: %s", conn.connection_id, peer_s, e)
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
            try:
                head = await reader.readexactly(wire.HEADER_SIZE)
            except asyncio.IncompleteReadError as e:
                if e.partial:
                    raise wire.ProtocolError(f"truncated header: {len(e.partial)} bytes") from e
                return
            header = wire.parse_header(head)
            try:
                rest = await reader.readexactly(header.length - wire.HEADER_SIZE)
            except asyncio.IncompleteReadError as e:
                raise wire.ProtocolError(
                    f"truncated message: header says {header.length} bytes, "
                    f"got {wire.HEADER_SIZE + len(e.partial)}"
                ) from e
            msg = wire.parse_message(head + rest)
            reply = await self.handle(conn, msg)
            if reply is not None:
                writer.write(reply)
                await writer.drain()

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
