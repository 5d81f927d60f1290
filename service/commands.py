"""The command table: handshake/admin commands and ASP's stream commands.

Every command is one entry in :data:`COMMANDS` (name -> async handler), so the
server dispatches with a dict lookup. Handlers get the decoded command document
and return the reply document (without ``ok`` for success; ``ok: 1`` is added).
Failures raise :class:`~service.errors.CommandError`.

mongosh sends stream commands to ``admin``; ``sp.x.start(opts)`` etc. merge the
options into the top level, ``sp.process``/``sp.createStreamProcessor`` and
drivers nest them under ``options`` (docs/semantics.md#commands). :func:`_options` accepts both.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import logging
import os
import platform
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bson import Int64

from service.errors import (
    COMMAND_NOT_FOUND,
    FAILED_TO_PARSE,
    INTERNAL_ERROR,
    INVALID_OPTIONS,
    UNAUTHORIZED,
    CommandError,
)

if TYPE_CHECKING:
    from service.auth import ScramConversation
    from service.supervisor import Supervisor

log = logging.getLogger("mqlflow.commands")

SERVER_VERSION = "7.0.0"
MAX_WIRE_VERSION = 21  # MongoDB 7.0: inside pymongo 4.x's and mongosh 2.x's ranges
MAX_BSON_OBJECT_SIZE = 16 * 1024 * 1024
MAX_MESSAGE_SIZE_BYTES = 48_000_000
MAX_WRITE_BATCH_SIZE = 100_000

# Fields any driver may add to any command; never treated as stream options.
GENERIC_FIELDS = frozenset(
    {
        "$db",
        "lsid",
        "txnNumber",
        "autocommit",
        "startTransaction",
        "$readPreference",
        "$clusterTime",
        "$audit",
        "apiVersion",
        "apiStrict",
        "apiDeprecationErrors",
        "maxTimeMS",
        "comment",
        "writeConcern",
        "readConcern",
        "$client",
        "options",
    }
)

# Commands that change processors: only the ``owner`` role may run them (service/auth.py
# ROLES). ``sp.process`` is one too: its pipeline may write to any connection.
OWNER_ONLY = frozenset(
    {
        "createStreamProcessor",
        "startStreamProcessor",
        "stopStreamProcessor",
        "dropStreamProcessor",
        "modifyStreamProcessor",
        "processStreamProcessor",
    }
)

# Commands that run before authentication: the handshake, the SASL exchange, and the
# harmless probes mongod also answers without a login (ping, buildInfo,
# connectionStatus, whatsmyuri), plus the session/logout calls drivers send on close.
UNAUTHENTICATED_OK = frozenset(
    {
        "hello",
        "isMaster",
        "ismaster",
        "ping",
        "buildInfo",
        "buildinfo",
        "saslStart",
        "saslContinue",
        "endSessions",
        "logout",
        "whatsmyuri",
        "connectionStatus",
    }
)


@dataclass
class Connection:
    """Per-connection state the handlers may read or change."""

    connection_id: int
    peer: str
    supervisor: Supervisor
    started: float = field(default_factory=time.monotonic)
    user: str | None = None
    require_auth: bool = False
    sasl: ScramConversation | None = None

    @property
    def role(self) -> str:
        """``owner`` without logins (loopback, no ``--users``); else the user's role."""
        if not self.require_auth:
            return "owner"
        if self.user is None:
            return ""
        return self.supervisor.roles.get(self.user, "owner")


Handler = Callable[[Connection, dict[str, Any]], Awaitable[dict[str, Any]]]
COMMANDS: dict[str, Handler] = {}


def command(*names: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        for n in names:
            COMMANDS[n] = fn
        return fn

    return register


async def dispatch(conn: Connection, cmd: dict[str, Any]) -> dict[str, Any]:
    """Run one command document; always returns a reply document."""
    if not cmd:
        return CommandError(FAILED_TO_PARSE, "empty command document").to_reply()
    name = next(iter(cmd))
    handler = COMMANDS.get(name)
    if handler is None:
        log.info("unknown command %r", name)
        return CommandError(COMMAND_NOT_FOUND, f"no such command: '{name}'").to_reply()
    if conn.require_auth and conn.user is None and name not in UNAUTHENTICATED_OK:
        return CommandError(
            UNAUTHORIZED, f"command {name} requires authentication"
        ).to_reply()
    if name in OWNER_ONLY and conn.role != "owner":
        return CommandError(
            UNAUTHORIZED,
            f"not authorized to execute command {name}: user '{conn.user}' has the role "
            f"'{conn.role}', and only 'owner' may change processors",
        ).to_reply()
    try:
        reply = await handler(conn, cmd)
    except CommandError as e:
        return e.to_reply()
    except Exception as e:
        log.exception("command %s failed", name)
        return CommandError(INTERNAL_ERROR, f"internal error in {name}: {e!r}").to_reply()
    out = dict(reply)
    out.setdefault("ok", 1.0)
    return out


# --- handshake and admin commands ----------------------------------------------


def _now() -> _dt.datetime:
    now = _dt.datetime.now(_dt.UTC).replace(tzinfo=None)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def _hello_fields(conn: Connection, cmd: dict[str, Any]) -> dict[str, Any]:
    reply: dict[str, Any] = {
        "helloOk": True,
        "maxBsonObjectSize": MAX_BSON_OBJECT_SIZE,
        "maxMessageSizeBytes": MAX_MESSAGE_SIZE_BYTES,
        "maxWriteBatchSize": MAX_WRITE_BATCH_SIZE,
        "localTime": _now(),
        "logicalSessionTimeoutMinutes": 30,
        "connectionId": conn.connection_id,
        "minWireVersion": 0,
        "maxWireVersion": MAX_WIRE_VERSION,
        "readOnly": False,
    }
    # Advertised for any name asked about, so that the reply does not tell which users exist.
    if isinstance(cmd.get("saslSupportedMechs"), str) and conn.supervisor.users:
        reply["saslSupportedMechs"] = ["SCRAM-SHA-256"]
    return reply


@command("hello")
async def _hello(conn: Connection, cmd: dict[str, Any]) -> dict[str, Any]:
    return {"isWritablePrimary": True, **_hello_fields(conn, cmd)}


@command("isMaster", "ismaster")
async def _is_master(conn: Connection, cmd: dict[str, Any]) -> dict[str, Any]:
    return {"ismaster": True, **_hello_fields(conn, cmd)}


@command("ping")
async def _ping(conn: Connection, cmd: dict[str, Any]) -> dict[str, Any]:
    return {}


@command("buildInfo", "buildinfo")
async def _build_info(conn: Connection, cmd: dict[str, Any]) -> dict[str, Any]:
    return {
        "version": SERVER_VERSION,
        "gitVersion": "mqlflow",
        "versionArray": [7, 0, 0, 0],
        "modules": [],
        "allocator": "system",
        "javascriptEngine": "none",
        "sysInfo": "deprecated",
        "bits": 64,
        "debug": False,
        "maxBsonObjectSize": MAX_BSON_OBJECT_SIZE,
        "storageEngines": [],
        "buildEnvironment": {"target_os": platform.system().lower(), "target_arch": platform.machine()},
        "mqlflow": True,
    }


@command("atlasVersion")
async def _atlas_version(conn: Connection, cmd: dict[str, Any]) -> dict[str, Any]:
    # Self-hosted, so not Atlas: an empty version keeps mongosh from treating us as Atlas.
    return {"atlasVersion": "", "gitVersion": ""}


@command("getParameter")
async def _get_parameter(conn: Connection, cmd: dict[str, Any]) -> dict[str, Any]:
    known: dict[str, Any] = {
        "featureCompatibilityVersion": {"version": "7.0"},
        "authenticationMechanisms": ["SCRAM-SHA-256"],
        "quiet": False,
    }
    if cmd.get("getParameter") == "*":
        return dict(known)
    wanted = [k for k in cmd if k not in GENERIC_FIELDS and k != "getParameter"]
    missing = [k for k in wanted if k not in known]
    if missing:
        raise CommandError(INVALID_OPTIONS, f"no option found to get: {missing[0]}")
    return {k: known[k] for k in wanted}


@command("getLog")
async def _get_log(conn: Connection, cmd: dict[str, Any]) -> dict[str, Any]:
    which = cmd.get("getLog")
    if which == "*":
        return {"names": ["global", "startupWarnings"]}
    if which in ("global", "startupWarnings"):
        return {"totalLinesWritten": 0, "log": []}
    raise CommandError(INVALID_OPTIONS, f"No log named '{which}'")


@command("getCmdLineOpts")
async def _cmd_line_opts(conn: Connection, cmd: dict[str, Any]) -> dict[str, Any]:
    return {"argv": ["mqlflow", "serve"], "parsed": {}}


@command("connectionStatus")
async def _connection_status(conn: Connection, cmd: dict[str, Any]) -> dict[str, Any]:
    users = [{"user": conn.user, "db": "admin"}] if conn.user else []
    roles = [{"role": conn.role, "db": "admin"}] if conn.user else []
    return {"authInfo": {"authenticatedUsers": users, "authenticatedUserRoles": roles}}


@command("endSessions", "killSessions", "refreshSessions", "startSession")
async def _sessions(conn: Connection, cmd: dict[str, Any]) -> dict[str, Any]:
    return {}


@command("logout")
async def _logout(conn: Connection, cmd: dict[str, Any]) -> dict[str, Any]:
    conn.user = None
    conn.sasl = None
    return {}


@command("listDatabases")
async def _list_databases(conn: Connection, cmd: dict[str, Any]) -> dict[str, Any]:
    if cmd.get("nameOnly"):
        return {"databases": [{"name": "admin"}]}
    return {"databases": [{"name": "admin", "sizeOnDisk": 0, "empty": True}], "totalSize": 0}


@command("listCollections")
async def _list_collections(conn: Connection, cmd: dict[str, Any]) -> dict[str, Any]:
    db = cmd.get("$db", "admin")
    return {"cursor": {"id": Int64(0), "ns": f"{db}.$cmd.listCollections", "firstBatch": []}}


@command("aggregate", "find")
async def _empty_cursor(conn: Connection, cmd: dict[str, Any]) -> dict[str, Any]:
    """No collections live here; mongosh's autocompletion and probes get an empty cursor."""
    db = cmd.get("$db", "admin")
    name = next(iter(cmd))
    coll = cmd[name] if isinstance(cmd[name], str) else "$cmd.aggregate"
    return {"cursor": {"id": Int64(0), "ns": f"{db}.{coll}", "firstBatch": []}}


@command("whatsmyuri")
async def _whatsmyuri(conn: Connection, cmd: dict[str, Any]) -> dict[str, Any]:
    return {"you": conn.peer}


@command("hostInfo")
async def _host_info(conn: Connection, cmd: dict[str, Any]) -> dict[str, Any]:
    return {
        "system": {
            "currentTime": _now(),
            "hostname": socket.gethostname(),
            "cpuAddrSize": 64,
            "numCores": os.cpu_count() or 1,
            "cpuArch": platform.machine(),
        },
        "os": {"type": platform.system(), "name": platform.platform(), "version": platform.release()},
        "extra": {},
    }


@command("serverStatus")
async def _server_status(conn: Connection, cmd: dict[str, Any]) -> dict[str, Any]:
    sup = conn.supervisor
    return {
        "host": socket.gethostname(),
        "version": SERVER_VERSION,
        "process": "mqlflow",
        "pid": Int64(os.getpid()),
        "uptime": float(time.monotonic() - sup.started),
        "localTime": _now(),
        "connections": {"current": sup.connection_count},
    }


@command("getFreeMonitoringStatus")
async def _free_monitoring(conn: Connection, cmd: dict[str, Any]) -> dict[str, Any]:
    return {"state": "disabled"}


@command("saslStart")
async def _sasl_start(conn: Connection, cmd: dict[str, Any]) -> dict[str, Any]:
    from service.auth import THROTTLE, peer_host, sasl_start

    wait = THROTTLE.delay(peer_host(conn.peer))
    if wait:
        await asyncio.sleep(wait)  # this connection waits; the loop serves the others
    return sasl_start(conn, cmd)


@command("saslContinue")
async def _sasl_continue(conn: Connection, cmd: dict[str, Any]) -> dict[str, Any]:
    from service.auth import THROTTLE, peer_host, sasl_continue

    had_proof = conn.sasl is not None and not conn.sasl.done
    try:
        return sasl_continue(conn, cmd)
    except CommandError:
        if had_proof:
            THROTTLE.failed(peer_host(conn.peer))
        raise


# --- stream commands -------------------------------------------------------------


def _options(cmd: dict[str, Any], *, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """Options from the top level (mongosh) merged with ``options`` (drivers)."""
    out = {k: v for k, v in cmd.items() if k not in GENERIC_FIELDS and k not in exclude}
    nested = cmd.get("options")
    if nested is not None:
        if not isinstance(nested, dict):
            raise CommandError(INVALID_OPTIONS, "options must be a document")
        out.update(nested)
    return out


# The ``sp.getProcessor(...)`` method behind each named command, for the null-name hint.
SHELL_METHODS = {
    "startStreamProcessor": "start()",
    "stopStreamProcessor": "stop()",
    "dropStreamProcessor": "drop()",
    "modifyStreamProcessor": "modify(...)",
    "getStreamProcessorStats": "stats()",
    "startSampleStreamProcessor": "sample()",
    "getMoreSampleStreamProcessor": "sample()",
}


def _null_name(key: str) -> CommandError:
    """mongosh >= 2.5.10 sends a null name for ``sp.getProcessor('name').start()`` (its
    ``getProcessor`` takes a document there): say what works instead."""
    method = SHELL_METHODS.get(key, "start()")
    return CommandError(
        FAILED_TO_PARSE,
        f"{key}: the processor name is null. mongosh 2.5.10 and later need a document in "
        f"sp.getProcessor: use sp.<name>.{method} or sp.getProcessor({{name: '<name>'}}).{method}, "
        "or start the shell with `mqlflow shell`, which accepts sp.getProcessor('<name>')",
    )


def _name(cmd: dict[str, Any], key: str) -> str:
    name = cmd[key]
    if name is None:
        raise _null_name(key)
    if not isinstance(name, str) or not name.strip():
        raise CommandError(FAILED_TO_PARSE, f"{key} must be a non-empty string processor name")
    return name


def _pipeline(value: Any, what: str) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise CommandError(FAILED_TO_PARSE, f"{what} must be a non-empty array of stages")
    for i, stage in enumerate(value):
        if not isinstance(stage, dict):
            raise CommandError(FAILED_TO_PARSE, f"pipeline[{i}] must be a document")
    return value


def _check_known(options: dict[str, Any], allowed: frozenset[str], cmd: str) -> None:
    for key in options:
        if key not in allowed:
            raise CommandError(
                INVALID_OPTIONS,
                f"{cmd}: unknown option '{key}'; allowed: {', '.join(sorted(allowed))}",
            )


_START_OPTIONS = frozenset({"resumeFromCheckpoint", "workers", "tier", "startAtOperationTime"})
_STATS_OPTIONS = frozenset({"scale", "verbose"})
_SAMPLE_OPTIONS = frozenset({"limit"})


@command("processStreamProcessor")
async def _process(conn: Connection, cmd: dict[str, Any]) -> dict[str, Any]:
    pipeline = _pipeline(cmd["processStreamProcessor"], "processStreamProcessor")
    options = _options(cmd, exclude=("processStreamProcessor",))
    name, cursor_id = await conn.supervisor.process(pipeline, options)
    return {"name": name, "cursorId": Int64(cursor_id)}


@command("createStreamProcessor")
async def _create(conn: Connection, cmd: dict[str, Any]) -> dict[str, Any]:
    name = _name(cmd, "createStreamProcessor")
    pipeline = _pipeline(cmd.get("pipeline"), "pipeline")
    options = _options(cmd, exclude=("createStreamProcessor", "pipeline"))
    await conn.supervisor.create(name, pipeline, options)
    return {}


def _filter(cmd: dict[str, Any]) -> Callable[[dict[str, Any]], bool]:
    """``filter`` compiled once per request by the same query engine as ``$match``,
    so list filters have full MongoDB query semantics."""
    from translator.errors import TranslateError
    from translator.mql.expr import Ctx
    from translator.mql.query import ExprError, compile_query

    flt = cmd.get("filter") or {}
    if not isinstance(flt, dict):
        raise CommandError(FAILED_TO_PARSE, "filter must be a document")
    try:
        match = compile_query(flt, Ctx("filter"))
    except TranslateError as e:
        raise CommandError(FAILED_TO_PARSE, str(e)) from e

    def keep(doc: dict[str, Any]) -> bool:
        try:
            return match(doc)
        except ExprError as e:  # a runtime $expr error, e.g. {$expr: {$divide: [1, 0]}}
            raise CommandError(FAILED_TO_PARSE, f"filter: {e}") from e

    return keep


@command("listStreamProcessors")
async def _list(conn: Connection, cmd: dict[str, Any]) -> dict[str, Any]:
    return {"streamProcessors": conn.supervisor.list_processors(_filter(cmd))}


@command("listStreamConnections")
async def _list_connections(conn: Connection, cmd: dict[str, Any]) -> dict[str, Any]:
    return {"connections": conn.supervisor.list_connections(_filter(cmd))}


@command("startStreamProcessor")
async def _start(conn: Connection, cmd: dict[str, Any]) -> dict[str, Any]:
    name = _name(cmd, "startStreamProcessor")
    options = _options(cmd, exclude=("startStreamProcessor",))
    _check_known(options, _START_OPTIONS, "startStreamProcessor")
    await conn.supervisor.start(name, options)
    return {}


@command("stopStreamProcessor")
async def _stop(conn: Connection, cmd: dict[str, Any]) -> dict[str, Any]:
    name = _name(cmd, "stopStreamProcessor")
    _check_known(_options(cmd, exclude=("stopStreamProcessor",)), frozenset(), "stopStreamProcessor")
    await conn.supervisor.stop(name)
    return {}


@command("dropStreamProcessor")
async def _drop(conn: Connection, cmd: dict[str, Any]) -> dict[str, Any]:
    name = _name(cmd, "dropStreamProcessor")
    _check_known(_options(cmd, exclude=("dropStreamProcessor",)), frozenset(), "dropStreamProcessor")
    await conn.supervisor.drop(name)
    return {}


@command("modifyStreamProcessor")
async def _modify(conn: Connection, cmd: dict[str, Any]) -> dict[str, Any]:
    name = _name(cmd, "modifyStreamProcessor")
    options = _options(cmd, exclude=("modifyStreamProcessor",))
    pipeline = options.pop("pipeline", None)
    if pipeline is not None:
        pipeline = _pipeline(pipeline, "pipeline")
    await conn.supervisor.modify(name, pipeline, options)
    return {}


@command("getStreamProcessorStats")
async def _stats(conn: Connection, cmd: dict[str, Any]) -> dict[str, Any]:
    name = _name(cmd, "getStreamProcessorStats")
    options = _options(cmd, exclude=("getStreamProcessorStats",))
    _check_known(options, _STATS_OPTIONS, "getStreamProcessorStats")
    scale = options.get("scale", 1)
    if isinstance(scale, bool) or not isinstance(scale, int | float) or scale < 1:
        raise CommandError(INVALID_OPTIONS, "scale must be a number >= 1")
    verbose = options.get("verbose", False)
    if not isinstance(verbose, bool):
        raise CommandError(INVALID_OPTIONS, "verbose must be a boolean")
    return conn.supervisor.stats(name, scale, verbose)


@command("startSampleStreamProcessor")
async def _start_sample(conn: Connection, cmd: dict[str, Any]) -> dict[str, Any]:
    name = _name(cmd, "startSampleStreamProcessor")
    options = _options(cmd, exclude=("startSampleStreamProcessor",))
    _check_known(options, _SAMPLE_OPTIONS, "startSampleStreamProcessor")
    cursor_id = conn.supervisor.start_sample(name, options.get("limit"))
    return {"name": name, "cursorId": Int64(cursor_id)}


@command("getMoreSampleStreamProcessor")
async def _get_more_sample(conn: Connection, cmd: dict[str, Any]) -> dict[str, Any]:
    name = _name(cmd, "getMoreSampleStreamProcessor")
    # mongosh 2.x sends ``cursorId``; early releases sent ``cursorID``.
    cursor_id = cmd.get("cursorId", cmd.get("cursorID"))
    if isinstance(cursor_id, bool) or not isinstance(cursor_id, int | float):
        raise CommandError(FAILED_TO_PARSE, "getMoreSampleStreamProcessor needs a numeric cursorId")
    messages, next_id = await conn.supervisor.get_more(name, int(cursor_id))
    return {"messages": messages, "cursorId": Int64(next_id)}
