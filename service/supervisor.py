"""Processor lifecycle: validation, persistence, supervised Bytewax children, samples.

A started processor is its own process (``python -m bytewax.run ...`` with a
recovery directory and snapshot interval), not tied to any client connection
(docs/semantics.md#lifecycle); its checkpoints make a restart resume where it
left off (docs/semantics.md#checkpoints).

The child reports output/DLQ documents and its figures over a side channel whose
protocol is defined in :mod:`service.protocol`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import datetime as _dt
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bson
from bson import Int64, json_util
from bson.json_util import CANONICAL_JSON_OPTIONS

from service.cluster import ENV_CLUSTER_PEERS, peers_env
from service.errors import COMMAND_FAILED, FAILED_TO_PARSE, INVALID_OPTIONS, CommandError
from service.names import check_processor_name
from service.protocol import (
    COUNTER_FIELDS,
    COUNTERS,
    DOC_KINDS,
    ENV_PROCESSOR_NAME,
    ENV_SOCKET,
    SIZE_FIELDS,
    STATS,
    encode_control,
)
from service.store import ProcessorRecord, ProcessorStore, State, utcnow
from translator.connections import ConnectionRegistry, load_registry

log = logging.getLogger("mqlflow.service")

# A compiled ``filter`` of listStreamProcessors/listStreamConnections (see commands.py).
Filter = Callable[[dict[str, Any]], bool]

TIER_WORKERS = {"SP2": 1, "SP5": 1, "SP10": 2, "SP30": 4, "SP50": 8}
STATUS_NAMES: dict[str, str] = {
    "CREATED": "created",
    "STARTED": "running",
    "STOPPED": "stopped",
    "FAILED": "error",
}
BATCH_MAX_DOCS = 100
BATCH_MAX_BYTES = 4 * 1024 * 1024
SAMPLE_BUFFER = 10_000
TEMP_PREFIX = "__process_"
_ID_RE = re.compile(r"[0-9a-f]{24}")  # ProcessorStore ids: ObjectId hex
# How flows.processor reports a definition it cannot compile (then exits with code 2).
INVALID_PIPELINE_PREFIX = "mqlflow: invalid pipeline: "
# Options the service consumes itself; everything else goes to the translator.
SERVICE_OPTIONS = frozenset({"limit", "timeoutSeconds", "workers", "tier", "resumeFromCheckpoint"})


@dataclass
class SupervisorConfig:
    state_dir: Path
    connections: str | None = None
    snapshot_interval: float = 5.0
    flow_target: str = "flows.processor:from_definition"
    python: str = sys.executable
    max_restarts: int = 5
    restart_backoff: float = 1.0
    healthy_after: float = 60.0
    stop_timeout: float = 10.0
    sample_idle_timeout: float = 30.0
    process_max_seconds: float = 600.0
    get_more_wait: float = 0.5
    reap_interval: float = 2.0
    extra_pythonpath: tuple[str, ...] = ()
    users: dict[str, str] = field(default_factory=dict)
    roles: dict[str, str] = field(default_factory=dict)  # user -> role (service/auth.py ROLES)


@dataclass(eq=False)
class SampleCursor:
    """A ``sample()``/``sp.process`` cursor: a bounded buffer fed by the side channel."""

    id: int
    processor: str
    limit: int | None
    deadline: float | None
    buffer: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=SAMPLE_BUFFER))
    queued: int = 0  # documents accepted so far (against ``limit``)
    last_poll: float = field(default_factory=time.monotonic)
    ended: bool = False
    error: str | None = None
    event: asyncio.Event = field(default_factory=asyncio.Event)

    def push(self, doc: dict[str, Any]) -> None:
        if self.ended or (self.limit is not None and self.queued >= self.limit):
            return
        self.buffer.append(doc)
        self.queued += 1
        self.event.set()

    def end(self, error: str | None = None) -> None:
        if not self.ended:
            self.ended = True
            self.error = self.error or error
        self.event.set()

    @property
    def exhausted(self) -> bool:
        return (self.ended or (self.limit is not None and self.queued >= self.limit)) and not self.buffer


def _pdeathsig() -> None:
    """Child dies with the service (Linux): a restarted service resumes it from its checkpoint."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _free_ports(n: int) -> list[int]:
    """``n`` loopback ports free right now (bound together, so they differ)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for sk in socks:
            sk.bind(("127.0.0.1", 0))
        return [sk.getsockname()[1] for sk in socks]
    finally:
        for sk in socks:
            sk.close()


_CAUSE = "The above exception was the direct cause of the following exception:"


def _last_error_line(lines: Iterable[str]) -> str:
    """The most telling stderr line of a failed child, for ``errorMsg``.

    mqlflow's own final line (``mqlflow: ...``) wins. Otherwise the root cause: Bytewax
    re-raises a step's exception as its own ``RuntimeError`` ("error calling ..."), so the
    last line of a chained traceback names Bytewax's wrapper, not what went wrong; the
    exception line before the first "direct cause" separator does.
    """
    tail = [ln.rstrip() for ln in lines if ln.strip()]
    found: list[str] = []
    for ln in tail:
        if ln == _CAUSE and found:
            cause = found[-1]
            break
        if not ln.startswith((" ", "\t", "Traceback", "The above exception", "During handling")):
            found.append(ln)
    else:
        cause = ""
    last = next((ln for ln in reversed(tail) if not ln.startswith(
        (" ", "\t", "Traceback", "The above exception", "During handling"))), "")
    if last.startswith("mqlflow: ") or not cause:
        return last or (tail[-1] if tail else "")
    return cause


class Run:
    """The running side of one processor: a child process, its channel and its samplers."""

    def __init__(
        self,
        sup: Supervisor,
        name: str,
        workdir: Path,
        definition: dict[str, Any],
        workers: int,
        *,
        temporary: bool,
    ) -> None:
        self.sup = sup
        self.name = name
        self.workdir = workdir
        self.definition = definition
        self.workers = workers
        self.temporary = temporary
        self.proc: asyncio.subprocess.Process | None = None  # the first of procs
        self.procs: list[asyncio.subprocess.Process] = []  # one per Bytewax process
        self.task: asyncio.Task[None] | None = None
        self.stopping = asyncio.Event()
        self.stderr_tail: deque[str] = deque(maxlen=60)
        self.cursors: set[SampleCursor] = set()
        self.sock_path = sup.sock_dir / f"{secrets.token_hex(6)}.sock"
        self.server: asyncio.AbstractServer | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.conn_stats: dict[int, dict[str, Any]] = {}
        self.closed_ops: list[list[Any]] = []  # final operatorStats of closed connections
        self.base: dict[str, int] = sup.load_counters(workdir)
        self.watermark: _dt.datetime | None = None
        self.exit_error: str | None = None
        self.finished = False

    # --- channel -----------------------------------------------------------------
    @property
    def sampling(self) -> bool:
        return self.temporary or bool(self.cursors)

    async def open_channel(self) -> None:
        self.server = await asyncio.start_unix_server(
            self._on_channel, path=str(self.sock_path), limit=64 * 1024 * 1024
        )

    async def _on_channel(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        key = id(writer)
        self.writers.add(writer)
        try:
            writer.write(encode_control(self.sampling))
            while True:
                line = await reader.readline()
                if not line:
                    break
                try:
                    msg = json_util.loads(line)
                except Exception:
                    log.warning("processor %s: bad side-channel line %r", self.name, line[:200])
                    continue
                self._on_message(key, msg)
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            self.writers.discard(writer)
            # Keep the final counters of this connection in the totals.
            last = self.conn_stats.pop(key, None)
            if last and isinstance(last.get("operatorStats"), list):
                self.closed_ops.append(last["operatorStats"])
            if last:
                for f in COUNTER_FIELDS:
                    self.base[f] = self.base.get(f, 0) + int(last.get(f, 0) or 0)
            writer.close()

    def _on_message(self, key: int, msg: Any) -> None:
        if not isinstance(msg, dict):
            return
        kind = msg.get("type")
        if kind in DOC_KINDS:
            doc = msg.get("doc")
            if isinstance(doc, dict):
                for c in list(self.cursors):
                    c.push(doc)
        elif kind == STATS and isinstance(msg.get(STATS), dict):
            st = msg[STATS]
            self.conn_stats[key] = st
            # Persist the totals at every report, so they survive even a kill -9 of the service.
            self.sup.save_counters(self)
            wm = st.get("watermark")
            if isinstance(wm, _dt.datetime) and (self.watermark is None or wm > self.watermark):
                self.watermark = wm

    def broadcast_sampling(self) -> None:
        line = encode_control(self.sampling)
        for w in list(self.writers):
            with contextlib.suppress(Exception):
                w.write(line)

    async def close_channel(self) -> None:
        for w in list(self.writers):
            w.close()
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await self.server.wait_closed()
            self.server = None
        with contextlib.suppress(FileNotFoundError):
            self.sock_path.unlink()

    # --- figures -----------------------------------------------------------------
    def counters(self) -> dict[str, int]:
        out = {f: int(self.base.get(f, 0)) for f in COUNTER_FIELDS}
        for st in self.conn_stats.values():
            for f in COUNTER_FIELDS:
                out[f] += int(st.get(f, 0) or 0)
        return out

    def state_size(self) -> int:
        return sum(int(st.get("stateSize", 0) or 0) for st in self.conn_stats.values())

    def operator_stats(self) -> list[Any]:
        """Per-stage figures summed over the child's processes (and restarts of it)."""
        lists = [st["operatorStats"] for st in self.conn_stats.values() if isinstance(st.get("operatorStats"), list)]
        return _merge_operator_stats([*self.closed_ops, *lists])

    # --- child process -----------------------------------------------------------
    def command(self, index: int = 0, addresses: list[str] | None = None) -> list[str]:
        """One process of the processor's Bytewax cluster: ``-i index -a addresses`` when
        there are several (one worker each: threads in one process share the GIL), else
        ``-w workers`` (1)."""
        cfg = self.sup.config
        target = f"{cfg.flow_target}({str(self.workdir / 'definition.json')!r})"
        cmd = [cfg.python, "-m", "bytewax.run", target]
        if addresses:
            cmd += ["-i", str(index), "-a", ";".join(addresses)]
        else:
            cmd += ["-w", str(self.workers)]
        if not self.temporary:
            cmd += ["-r", str(self.workdir / "recovery"), "-s", str(max(1, round(cfg.snapshot_interval))), "-b", "0"]
        return cmd

    def env(self, index: int = 0, addresses: list[str] | None = None) -> dict[str, str]:
        """The child's environment; process ``index`` of a cluster also gets the addresses
        it must wait for before joining (:mod:`service.cluster`)."""
        env = dict(os.environ)
        env.pop(ENV_CLUSTER_PEERS, None)
        env.update(peers_env(addresses or [], index))
        env[ENV_SOCKET] = str(self.sock_path)
        env[ENV_PROCESSOR_NAME] = self.name
        env["PYTHONUNBUFFERED"] = "1"
        if self.sup.config.connections:
            env["MQLFLOW_CONNECTIONS"] = self.sup.config.connections
        if self.sup.config.extra_pythonpath:
            parts = [*self.sup.config.extra_pythonpath]
            if env.get("PYTHONPATH"):
                parts.append(env["PYTHONPATH"])
            env["PYTHONPATH"] = os.pathsep.join(parts)
        return env

    async def _read_stderr(self, stream: asyncio.StreamReader, logfile: Path) -> None:
        with logfile.open("ab") as fh:
            while True:
                line = await stream.readline()
                if not line:
                    return
                fh.write(line)
                fh.flush()
                self.stderr_tail.append(line.decode("utf-8", "replace"))

    async def _spawn(self, index: int = 0, addresses: list[str] | None = None) -> asyncio.subprocess.Process:
        logfile = self.workdir / "child.log"
        out = logfile.open("ab")
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.command(index, addresses),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.PIPE,
                env=self.env(index, addresses),
                start_new_session=True,
                preexec_fn=_pdeathsig,
            )
        finally:
            out.close()
        return proc

    async def _spawn_cluster(self) -> list[asyncio.subprocess.Process]:
        """``workers`` processes joined as one Bytewax cluster on loopback ports chosen
        now (a fresh set at every restart), or one process for one worker."""
        addresses = [f"127.0.0.1:{p}" for p in _free_ports(self.workers)] if self.workers > 1 else None
        procs = [await self._spawn(i, addresses) for i in range(len(addresses or [None]))]
        (self.workdir / "child.pid").write_text("".join(f"{p.pid}\n" for p in procs))
        return procs

    async def _wait_cluster(self, procs: list[asyncio.subprocess.Process]) -> int:
        """0 when every process ended cleanly (a finite source); else the first failure's
        code, after killing the others: a cluster missing a process cannot go on, so the
        whole cluster restarts from the last checkpoint."""
        pending = {asyncio.ensure_future(p.wait()) for p in procs}
        rc = 0
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            failed = [t.result() for t in done if t.result() != 0]
            if failed and rc == 0:
                rc = failed[0]
                for p in procs:
                    if p.returncode is None:
                        with contextlib.suppress(ProcessLookupError):
                            p.kill()
        return rc

    async def supervise(self) -> None:
        """Run the child; restart it with backoff when it crashes; FAILED after repeats."""
        failures = 0
        try:
            while not self.stopping.is_set():
                began = time.monotonic()
                self.stderr_tail.clear()
                self.procs = await self._spawn_cluster()
                self.proc = self.procs[0]
                readers = [
                    asyncio.create_task(self._read_stderr(p.stderr, self.workdir / "child.log"))
                    for p in self.procs
                    if p.stderr is not None
                ]
                rc = await self._wait_cluster(self.procs)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.gather(*readers), 5)
                self.proc = None
                self.procs = []
                with contextlib.suppress(FileNotFoundError):
                    (self.workdir / "child.pid").unlink()
                if self.stopping.is_set():
                    return
                if rc == 0:
                    # A finite source ($source.documents) reached its end.
                    log.info("processor %s: finished", self.name)
                    self.finished = True
                    await self.sup.on_finished(self)
                    return
                err = _last_error_line(self.stderr_tail) or f"exit code {rc}"
                log.warning("processor %s: child exited with %s: %s", self.name, rc, err)
                if time.monotonic() - began > self.sup.config.healthy_after:
                    failures = 0
                failures += 1
                # The child rejected its own definition (e.g. the connection file changed
                # since create): a restart would fail the same way, so fail now.
                rejected = err.startswith(INVALID_PIPELINE_PREFIX)
                if self.temporary or rejected or failures > self.sup.config.max_restarts:
                    self.exit_error = err
                    await self.sup.on_failed(self, err, failures)
                    return
                delay = min(self.sup.config.restart_backoff * 2 ** (failures - 1), 30.0)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), delay)
        finally:
            self.sup.save_counters(self)

    async def terminate(self) -> None:
        """Graceful stop: SIGINT, then SIGTERM, then SIGKILL."""
        self.stopping.set()
        procs = [p for p in self.procs if p.returncode is None]
        if procs:
            for sig, wait in (
                (signal.SIGINT, self.sup.config.stop_timeout),
                (signal.SIGTERM, 5.0),
                (signal.SIGKILL, 5.0),
            ):
                for proc in procs:
                    with contextlib.suppress(ProcessLookupError):
                        proc.send_signal(sig)
                try:
                    await asyncio.wait_for(asyncio.gather(*(p.wait() for p in procs)), wait)
                    break
                except TimeoutError:
                    continue
        if self.task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self.task, 10)
        await self.close_channel()


class Supervisor:
    """Owns the store, the connection registry, the running children and the cursors."""

    def __init__(self, config: SupervisorConfig) -> None:
        self.config = config
        self.started = time.monotonic()
        self.connection_count = 0
        self.users = config.users
        self.roles = config.roles
        self.final_ops: dict[str, list[Any]] = {}
        config.state_dir.mkdir(parents=True, exist_ok=True)
        self.store = ProcessorStore(config.state_dir / "processors.db")
        self.sock_dir = Path(tempfile.mkdtemp(prefix="mqlflow-"))
        self.runs: dict[str, Run] = {}
        self.cursors: dict[int, SampleCursor] = {}
        self._registry: ConnectionRegistry | None = None
        self._reaper: asyncio.Task[None] | None = None
        self._locks: dict[str, asyncio.Lock] = {}

    # --- lifecycle -----------------------------------------------------------------
    def processor_dir(self, name: str) -> Path:
        """A processor's folder, keyed by its store id (an ObjectId in hex), never by its
        name: names are client data. A folder of the old name-keyed layout is moved once."""
        rec = self._record(name)
        if not _ID_RE.fullmatch(rec.id):
            raise CommandError(COMMAND_FAILED, f"stream processor '{name}' has a malformed id")
        workdir = self.config.state_dir / "processors" / rec.id
        legacy = self._legacy_dir(name)
        if legacy is not None and not workdir.exists():
            log.info("moving %s to the id-keyed folder %s", legacy, workdir)
            legacy.rename(workdir)
        return workdir

    def _legacy_dir(self, name: str) -> Path | None:
        """``processors/<name>`` of state dirs written before folders were keyed by id;
        only a plain, existing folder directly under ``processors/``, never ``.``/``..``."""
        if name in (".", "..") or "/" in name or "\0" in name or _ID_RE.fullmatch(name):
            return None
        if len(name.encode("utf-8", "surrogatepass")) > 255:
            return None
        path = self.config.state_dir / "processors" / name
        if path.is_symlink() or not path.is_dir() or path.parent.name != "processors":
            return None
        return path

    async def startup(self) -> None:
        """Resume processors that were STARTED when the service went down."""
        self._reaper = asyncio.create_task(self._reap_loop())
        for rec in self.store.all():
            if rec.state == "STARTED":
                log.info("resuming processor %s from its checkpoint", rec.name)
                self._kill_stale_child(rec.name)
                try:
                    await self._launch(rec, resume=True)
                except CommandError as e:
                    self.store.set_state(rec.name, "FAILED", e.errmsg)

    async def shutdown(self) -> None:
        """Stop children but keep their STARTED state: the next start resumes them."""
        if self._reaper is not None:
            self._reaper.cancel()
        await asyncio.gather(*(r.terminate() for r in list(self.runs.values())), return_exceptions=True)
        for r in list(self.runs.values()):
            if r.temporary:
                shutil.rmtree(r.workdir, ignore_errors=True)
        self.runs.clear()
        self.store.close()
        shutil.rmtree(self.sock_dir, ignore_errors=True)

    def _kill_stale_child(self, name: str) -> None:
        """A child left by a killed service must not share the recovery dir with a new one."""
        legacy = self._legacy_dir(name)
        workdir = self.processor_dir(name)
        pidfile = workdir / "child.pid"
        try:
            pids = [int(x) for x in pidfile.read_text().split()]  # one per cluster process
        except (OSError, ValueError):
            return
        ours = [d / "definition.json" for d in (workdir, legacy) if d is not None]
        for pid in pids:
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if any(str(p).encode() in cmdline for p in ours):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                for _ in range(50):
                    if not Path(f"/proc/{pid}").exists():
                        break
                    time.sleep(0.05)
        with contextlib.suppress(FileNotFoundError):
            pidfile.unlink()

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    # --- registry and validation -------------------------------------------------------
    @property
    def registry(self) -> ConnectionRegistry:
        if self._registry is None:
            self._registry = load_registry(self.config.connections)
        return self._registry

    def _workers(self, options: dict[str, Any], default: int = 1) -> int:
        workers = default
        tier = options.get("tier")
        if tier is not None:
            if tier not in TIER_WORKERS:
                raise CommandError(
                    INVALID_OPTIONS, f"tier must be one of {', '.join(TIER_WORKERS)}, got {tier!r}"
                )
            workers = TIER_WORKERS[tier]
        w = options.get("workers")
        if w is not None:
            if isinstance(w, bool) or not isinstance(w, int) or not 1 <= w <= 64:
                raise CommandError(INVALID_OPTIONS, "workers must be an integer from 1 to 64")
            workers = w
        return workers

    def validate(
        self, name: str, pipeline: list[dict[str, Any]], options: dict[str, Any], *, require_sink: bool
    ) -> dict[str, Any]:
        """Compile once at create time, so a bad pipeline fails here
        (docs/semantics.md#lifecycle).

        Returns the options the flow needs (``dlq`` and the translator's tuning knobs),
        i.e. ``options`` without the service's own keys. The translator checks them all,
        ``dlq`` included; an error about them (path ``options.*``) is InvalidOptions."""
        from translator.compile import compile_pipeline
        from translator.errors import TranslateError
        from translator.loader import options_from_mapping

        flow_options = {k: v for k, v in options.items() if k not in SERVICE_OPTIONS}
        try:
            popts = options_from_mapping(dict(flow_options), name=name)
        except TranslateError as e:
            raise CommandError(INVALID_OPTIONS, str(e)) from e
        try:
            # The child compiles with the same function: unsupported source kinds, bad
            # $source.config keys or types and bad sink settings fail here, not in a crash loop.
            compile_pipeline(pipeline, self.registry, popts, require_sink=require_sink)
        except TranslateError as e:
            code = INVALID_OPTIONS if e.path.startswith("options.") else FAILED_TO_PARSE
            raise CommandError(code, str(e)) from e
        return flow_options

    # --- queries -------------------------------------------------------------------
    def list_processors(self, keep: Filter) -> list[dict[str, Any]]:
        entries = [r.to_list_entry() for r in self.store.all()]
        return [e for e in entries if keep(e)]

    def list_connections(self, keep: Filter) -> list[dict[str, Any]]:
        kinds = {"sample": "inmemory", "mongodb": "atlas", "atlas": "atlas"}
        out = []
        for c in self.registry.all():
            out.append({"name": c.name, "type": kinds.get(c.type, c.type)})
        return [e for e in out if keep(e)]

    def _record(self, name: str) -> ProcessorRecord:
        rec = self.store.get(name)
        if rec is None:
            raise CommandError(COMMAND_FAILED, f"stream processor '{name}' does not exist")
        return rec

    # --- commands ------------------------------------------------------------------------
    async def create(self, name: str, pipeline: list[dict[str, Any]], options: dict[str, Any]) -> None:
        check_processor_name(name)
        self._workers(options)
        if self.store.get(name) is not None:
            raise CommandError(COMMAND_FAILED, f"stream processor '{name}' already exists")
        self.validate(name, pipeline, options, require_sink=True)
        if self.store.create(name, pipeline, options) is None:
            raise CommandError(COMMAND_FAILED, f"stream processor '{name}' already exists")

    async def start(self, name: str, options: dict[str, Any]) -> None:
        async with self._lock(name):
            rec = self._record(name)
            if rec.state == "STARTED":
                raise CommandError(COMMAND_FAILED, f"stream processor '{name}' is already started")
            self.final_ops.pop(name, None)
            resume = options.get("resumeFromCheckpoint", True)
            if not isinstance(resume, bool):
                raise CommandError(INVALID_OPTIONS, "resumeFromCheckpoint must be a boolean")
            workers = self._workers(options, self._workers(rec.options))
            await self._launch(rec, resume=resume, workers=workers)
            self.store.set_state(name, "STARTED")

    async def _launch(self, rec: ProcessorRecord, *, resume: bool, workers: int | None = None) -> None:
        workers = workers or self._workers(rec.options)
        workdir = self.processor_dir(rec.name)
        workdir.mkdir(parents=True, exist_ok=True)
        flow_options = {k: v for k, v in rec.options.items() if k not in SERVICE_OPTIONS}
        self._write_definition(workdir, rec.name, rec.pipeline, flow_options)
        recovery = workdir / "recovery"
        if not resume and recovery.exists():
            shutil.rmtree(recovery)
        if not recovery.exists() or not any(recovery.iterdir()):
            await self._init_recovery(recovery, max(1, workers))
        run = Run(self, rec.name, workdir, {}, workers, temporary=False)
        await run.open_channel()
        self.runs[rec.name] = run
        run.task = asyncio.create_task(run.supervise())

    def _write_definition(
        self,
        workdir: Path,
        name: str,
        pipeline: list[dict[str, Any]],
        flow_options: dict[str, Any],
        *,
        sample: bool = False,
    ) -> None:
        """``sample`` marks an ``sp.process`` run: its pipeline may end without a sink
        (the child then sends output to the cursor), as validated with ``require_sink=False``."""
        definition = {
            "name": name,
            "pipeline": pipeline,
            "options": flow_options,
            "connections": self.config.connections,
            "sample": sample,
        }
        text = json_util.dumps(definition, json_options=CANONICAL_JSON_OPTIONS)
        tmp = workdir / "definition.json.tmp"
        tmp.write_text(text)
        tmp.replace(workdir / "definition.json")

    async def _init_recovery(self, recovery: Path, partitions: int) -> None:
        """One empty recovery partition per process (``python -m bytewax.recovery``'s
        work), done in a thread of the service: a Python process of its own would add its
        start-up to every start of the processor, before its own processes can begin."""
        from bytewax.recovery import init_db_dir

        try:
            recovery.mkdir(parents=True, exist_ok=True)
            await asyncio.to_thread(init_db_dir, recovery, partitions)
        except Exception as e:
            raise CommandError(COMMAND_FAILED, f"cannot initialise checkpoints in {recovery}: {e}") from e

    async def stop(self, name: str) -> None:
        async with self._lock(name):
            rec = self._record(name)
            run = self.runs.pop(name, None)
            if rec.state not in ("STARTED", "FAILED") and run is None:
                raise CommandError(COMMAND_FAILED, f"stream processor '{name}' is not started")
            if run is not None:
                for c in list(run.cursors):
                    c.end()
                await run.terminate()
            self.store.set_state(name, "STOPPED")

    async def drop(self, name: str) -> None:
        self.final_ops.pop(name, None)
        run = self.runs.get(name)
        if run is not None and run.temporary:
            await self._drop_temporary(run)
            return
        if name.startswith(TEMP_PREFIX) and self.store.get(name) is None:
            return  # sp.process's own cleanup after the temporary processor already ended
        async with self._lock(name):
            workdir = self.processor_dir(name)
            run = self.runs.pop(name, None)
            if run is not None:
                for c in list(run.cursors):
                    c.end()
                await run.terminate()
            self.store.delete(name)
            shutil.rmtree(workdir, ignore_errors=True)
        self._locks.pop(name, None)

    async def modify(
        self, name: str, pipeline: list[dict[str, Any]] | None, options: dict[str, Any]
    ) -> None:
        async with self._lock(name):
            rec = self._record(name)
            if rec.state == "STARTED":
                raise CommandError(
                    COMMAND_FAILED, f"stream processor '{name}' must be stopped before it is modified"
                )
            resume = options.pop("resumeFromCheckpoint", None)
            if resume is not None and not isinstance(resume, bool):
                raise CommandError(INVALID_OPTIONS, "resumeFromCheckpoint must be a boolean")
            new_options = {**rec.options, **options}
            self._workers(new_options)
            new_pipeline = pipeline if pipeline is not None else rec.pipeline
            self.validate(name, new_pipeline, new_options, require_sink=True)
            self.store.update_definition(name, new_pipeline, new_options)
            changed = pipeline is not None and bson.encode({"p": pipeline}) != bson.encode(
                {"p": rec.pipeline}
            )
            # A changed pipeline has different operator state; keep the checkpoint only
            # when the user explicitly asks for it.
            if resume is False or (changed and resume is not True):
                shutil.rmtree(self.processor_dir(name) / "recovery", ignore_errors=True)

    def stats(self, name: str, scale: float, verbose: bool) -> dict[str, Any]:
        rec = self._record(name)
        run = self.runs.get(name)
        counters = run.counters() if run else self._stored_counters(name)
        state_size = run.state_size() if run else 0
        st: dict[str, Any] = {"name": name, "processorId": rec.id, "status": STATUS_NAMES[rec.state]}
        groups = {"throttle"} if _has_stage(rec.pipeline, "$throttle") else set()
        st["scaleFactor"] = Int64(int(scale)) if float(scale).is_integer() else float(scale)
        for c in COUNTERS:
            v = counters[c.field]
            if c.group is None:
                st[c.field] = Int64(v) if c.field not in SIZE_FIELDS else _scaled(v, scale)
            elif c.group in groups:
                st.setdefault(c.group, {})[c.field] = Int64(v)
        st["stateSize"] = _scaled(state_size, scale)
        st["watermark"] = _naive(run.watermark) if run and run.watermark else None
        kparts = [p for c in (run.conn_stats.values() if run else ()) for p in c.get("kafkaPartitions") or ()]
        if kparts:
            st["kafkaPartitions"] = kparts
        stalls = [w for c in (run.conn_stats.values() if run else ()) for w in c.get("sinkStalls") or ()]
        if stalls:
            st["sinkStalls"] = stalls
        if rec.error_msg:
            st["errorMsg"] = rec.error_msg
        if verbose:
            st["operatorStats"] = run.operator_stats() if run else self.final_ops.get(name, [])
        return {"ns": f"admin.{name}", "stats": st, "pipeline": rec.pipeline}

    def _stored_counters(self, name: str) -> dict[str, int]:
        base = self.load_counters(self.processor_dir(name))
        return {f: int(base.get(f, 0)) for f in COUNTER_FIELDS}

    def load_counters(self, workdir: Path) -> dict[str, int]:
        try:
            data = json.loads((workdir / "counters.json").read_text())
        except (OSError, ValueError):
            return {}
        return {k: int(v) for k, v in data.items() if k in COUNTER_FIELDS}

    def save_counters(self, run: Run) -> None:
        if run.temporary or not run.workdir.exists():
            return
        counters = run.counters()
        tmp = run.workdir / "counters.json.tmp"
        with contextlib.suppress(OSError):
            tmp.write_text(json.dumps(counters))
            tmp.replace(run.workdir / "counters.json")  # atomic: a crash leaves old or new

    # --- child events ------------------------------------------------------------------
    async def on_finished(self, run: Run) -> None:
        for c in list(run.cursors):
            c.end()
        if not run.temporary and self.runs.get(run.name) is run:
            # A finished processor keeps its final per-stage figures for verbose stats();
            # the child has exited, so its channel lines end promptly: read them first.
            for _ in range(40):
                if not run.writers:
                    break
                await asyncio.sleep(0.05)
            self.final_ops[run.name] = run.operator_stats()
            self.runs.pop(run.name, None)
            self.store.set_state(run.name, "STOPPED")
            await run.close_channel()

    async def on_failed(self, run: Run, err: str, attempts: int) -> None:
        for c in list(run.cursors):
            c.end(err)
        if not run.temporary and self.runs.get(run.name) is run:
            self.runs.pop(run.name, None)
            msg = f"processor failed after {attempts} attempt{'' if attempts == 1 else 's'}: {err}"
            self.store.set_state(run.name, "FAILED", msg)
            await run.close_channel()

    # --- samples ----------------------------------------------------------------------------
    def _new_cursor(self, processor: str, limit: Any, deadline: float | None) -> SampleCursor:
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise CommandError(INVALID_OPTIONS, "limit must be a positive integer")
        cid = secrets.randbelow(2**62) + 1
        cursor = SampleCursor(cid, processor, limit, deadline)
        self.cursors[cid] = cursor
        return cursor

    async def process(self, pipeline: list[dict[str, Any]], options: dict[str, Any]) -> tuple[str, int]:
        """``sp.process``: a temporary processor whose output comes back through a cursor."""
        workers = self._workers(options)
        timeout = options.get("timeoutSeconds", self.config.process_max_seconds)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise CommandError(INVALID_OPTIONS, "timeoutSeconds must be a positive number")
        timeout = min(float(timeout), self.config.process_max_seconds)
        name = f"{TEMP_PREFIX}{secrets.token_hex(6)}"
        flow_options = self.validate(name, pipeline, options, require_sink=False)
        cursor = self._new_cursor(name, options.get("limit"), time.monotonic() + timeout)
        workdir = self.config.state_dir / "tmp" / name
        workdir.mkdir(parents=True, exist_ok=True)
        self._write_definition(workdir, name, pipeline, flow_options, sample=True)
        run = Run(self, name, workdir, {}, workers, temporary=True)
        run.cursors.add(cursor)
        await run.open_channel()
        self.runs[name] = run
        run.task = asyncio.create_task(run.supervise())
        return name, cursor.id

    async def _drop_temporary(self, run: Run) -> None:
        self.runs.pop(run.name, None)
        for c in list(run.cursors):
            c.end()
            self.cursors.pop(c.id, None)
        await run.terminate()
        shutil.rmtree(run.workdir, ignore_errors=True)

    def start_sample(self, name: str, limit: Any) -> int:
        rec = self._record(name)
        run = self.runs.get(name)
        if rec.state != "STARTED" or run is None:
            raise CommandError(COMMAND_FAILED, f"stream processor '{name}' is not started")
        cursor = self._new_cursor(name, limit, None)
        run.cursors.add(cursor)
        run.broadcast_sampling()
        return cursor.id

    async def get_more(self, name: str, cursor_id: int) -> tuple[list[dict[str, Any]], int]:
        cursor = self.cursors.get(cursor_id)
        if cursor is None or cursor.processor != name:
            raise CommandError(
                COMMAND_FAILED, f"cursor {cursor_id} for stream processor '{name}' does not exist"
            )
        cursor.last_poll = time.monotonic()
        if not cursor.buffer and not cursor.exhausted:
            cursor.event.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(cursor.event.wait(), self.config.get_more_wait)
        cursor.last_poll = time.monotonic()
        batch: list[dict[str, Any]] = []
        size = 0
        while cursor.buffer and len(batch) < BATCH_MAX_DOCS and size < BATCH_MAX_BYTES:
            doc = cursor.buffer.popleft()
            batch.append(doc)
            size += len(bson.encode(doc))
        if cursor.exhausted:
            self._close_cursor(cursor)
            if cursor.error and not batch:
                raise CommandError(COMMAND_FAILED, f"stream processor '{name}' failed: {cursor.error}")
            return batch, 0
        return batch, cursor.id

    def _close_cursor(self, cursor: SampleCursor) -> None:
        self.cursors.pop(cursor.id, None)
        run = self.runs.get(cursor.processor)
        if run is not None:
            run.cursors.discard(cursor)
            if not run.temporary:
                run.broadcast_sampling()
            elif not run.cursors:
                # The only reader is done (limit reached): stop the child now.
                run.stopping.set()
                asyncio.get_running_loop().create_task(self._drop_temporary(run))

    async def _reap_loop(self) -> None:
        """Drop abandoned cursors (no getMore for a while) and expired ``sp.process`` runs."""
        while True:
            await asyncio.sleep(self.config.reap_interval)
            now = time.monotonic()
            for cursor in list(self.cursors.values()):
                if cursor.deadline is not None and now > cursor.deadline:
                    cursor.end()
                if now - cursor.last_poll > self.config.sample_idle_timeout:
                    log.info("closing idle sample cursor %s of %s", cursor.id, cursor.processor)
                    cursor.end()
                    self._close_cursor(cursor)


def _merge_operator_stats(lists: list[list[Any]]) -> list[Any]:
    """Same pipeline, same stage order: add counts, widen the open-window range."""
    if not lists:
        return []
    out = [dict(e) for e in lists[0] if isinstance(e, dict)]
    for other in lists[1:]:
        for e, o in zip(out, other, strict=False):
            if not isinstance(o, dict):
                continue
            for k, v in o.items():
                cur = e.get(k)
                if k == "minOpenWindowStartTime":
                    e[k] = v if cur is None else cur if v is None else min(cur, v)
                elif k == "maxOpenWindowStartTime":
                    e[k] = v if cur is None else cur if v is None else max(cur, v)
                elif k == "openWindowCount":
                    e[k] = max(int(cur or 0), int(v or 0))
                elif isinstance(v, int) and not isinstance(v, bool) and isinstance(cur, int):
                    e[k] = cur + v
    for e in out:
        for k, v in e.items():
            if isinstance(v, int) and not isinstance(v, bool):
                e[k] = Int64(v)
    return out


def _scaled(v: int, scale: float) -> Int64 | float:
    if scale == 1:
        return Int64(v)
    return v / scale


def _naive(d: _dt.datetime) -> _dt.datetime:
    return d.astimezone(_dt.UTC).replace(tzinfo=None) if d.tzinfo else d


def _has_stage(pipeline: Any, name: str) -> bool:
    """Whether a stage ``name`` appears in ``pipeline``, inside window pipelines too."""
    if isinstance(pipeline, dict):
        return name in pipeline or any(_has_stage(v, name) for v in pipeline.values())
    if isinstance(pipeline, list):
        return any(_has_stage(v, name) for v in pipeline)
    return False


__all__ = ["Filter", "State", "Supervisor", "SupervisorConfig", "utcnow"]
