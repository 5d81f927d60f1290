"""The one way tests start a real ``mqlflow serve`` and a private FerretDB.

``start_service`` runs the service on a free port with its own state dir and its real
child flow (``flows.processor:from_definition``); the default connection file points
``out`` at the Kafka broker and ``dlqconn`` at the MongoDB-wire server of
``scripts/services.sh`` (tests that start processors mark ``kafka``/``mongodb`` so a
missing server fails with the command that starts it). ``launch`` starts it without
waiting, for tests that expect it to refuse to start; ``wait_ready`` reads the lines it
prints once it listens; ``Service.stop`` is the one cleanup path.

``PrivateFerretDB`` is a FerretDB of ``scripts/services.sh`` on a free port of its own,
for tests that stop the server: the shared one on 27018 is never stopped."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, ClassVar

import pymongo

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable

SERVICES_ENV = ROOT / ".cache" / "run" / "services.env"
SERVICES_SH = ROOT / "scripts" / "services.sh"


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


def reachable_mongodb_uri() -> str:
    """The shared MongoDB-wire server; a test that cannot reach it fails with how to start it."""
    uri = services_env("MONGODB_URI")
    c: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(uri, serverSelectionTimeoutMS=5000)
    try:
        c.admin.command("ping")
    except pymongo.errors.PyMongoError as e:
        raise AssertionError(
            f"MongoDB is not reachable at {uri} ({e}); start it with scripts/services.sh up mongodb"
        ) from e
    finally:
        c.close()
    return uri


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


def mongodb_connections(uri: str, *names: str) -> str:
    """A connection file whose ``names`` are all ``mongodb`` connections to ``uri``."""
    return "".join(f'[connections.{n}]\ntype = "mongodb"\nuri = "{uri}"\n\n' for n in names)


@dataclass
class Service:
    proc: subprocess.Popen[str]
    port: int
    state_dir: Path
    log: Path
    args: list[str]
    console_url: str | None = None  # with --http-port: the URL the service printed
    users: dict[str, str] = field(default_factory=dict)
    selection_timeout_ms: ClassVar[int] = 5000

    def client(self, user: str | None = None, password: str | None = None, **kw: Any) -> pymongo.MongoClient[dict[str, Any]]:
        if user is not None:
            kw["username"] = user
        if password is not None:  # also when the caller named it with username=
            kw["password"] = password
        kw.setdefault("serverSelectionTimeoutMS", self.selection_timeout_ms)
        return pymongo.MongoClient(f"mongodb://127.0.0.1:{self.port}", **kw)

    def child_log(self) -> str:
        """Every processor child's log under the state dir."""
        return "\n".join(p.read_text(errors="replace") for p in self.state_dir.rglob("child.log"))

    def stop(self) -> None:
        """The one cleanup path: SIGTERM, then SIGKILL after 30 s."""
        stop_process(self.proc)


def stop_process(proc: subprocess.Popen[str], grace_s: float = 30.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def serve_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The test's environment with the project root first on PYTHONPATH (children inherit it)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(ROOT), env.get("PYTHONPATH", "")] if p)
    env.update(extra or {})
    return env


def serve_args(state_dir: Path, connections: Path, *extra: str, port: int = 0) -> list[str]:
    """``mqlflow serve`` as a user runs it: the real child flow; later flags win."""
    return [
        PY, "-m", "service", "serve", "--port", str(port), "--state-dir", str(state_dir),
        "--connections", str(connections), "--snapshot-interval", "1", *extra,
    ]


@dataclass
class Launched:
    """A ``mqlflow serve`` process not yet known to listen (``wait_ready`` tells)."""

    proc: subprocess.Popen[str]
    state_dir: Path
    log: Path
    args: list[str]
    _log_fh: IO[str]

    def wait_ready(self, console: bool = False) -> tuple[int, str | None]:
        return wait_ready(self.proc, self.log, console=console)

    def exit_code(self, timeout: float = 30.0) -> int:
        """For a start that must fail: its exit code once it ended."""
        code = self.proc.wait(timeout)
        self._log_fh.close()
        return code


def launch(tmp: Path, *extra: str, port: int = 0, connections: str | None = None,
           state_dir: Path | None = None, cwd: Path | None = None,
           env: dict[str, str] | None = None) -> Launched:
    """Start ``mqlflow serve`` (stdout piped, stderr to a log under ``tmp``) and return at once.

    ``connections`` is the text of the connection file (default ``connections_toml()``);
    ``env`` adds variables to the service's (and its children's) environment."""
    tmp.mkdir(parents=True, exist_ok=True)
    state = state_dir or tmp / "state"
    conns = tmp / "connections.toml"
    conns.write_text(connections_toml() if connections is None else connections)
    log = tmp / f"service-{time.monotonic_ns()}.log"
    args = serve_args(state, conns, *extra, port=port)
    fh = log.open("w")
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=fh, text=True, env=serve_env(env), cwd=cwd or tmp)
    return Launched(proc, state, log, args, fh)


def wait_ready(proc: subprocess.Popen[str], log: Path, console: bool = False) -> tuple[int, str | None]:
    """The wire port (and with ``console`` the console URL) once the service printed them;
    a service that exits or prints anything else first is killed and the test fails with its log."""
    assert proc.stdout is not None
    want = ["mqlflow listening on ", *(["mqlflow console at "] if console else [])]
    lines = [proc.stdout.readline() for _ in want]
    if not all(line.startswith(w) for line, w in zip(lines, want, strict=True)):
        proc.kill()
        proc.wait()
        raise AssertionError(f"service did not start: {lines!r}\n{log.read_text()}")
    port = int(lines[0].rsplit(":", 1)[1])
    return port, (lines[1].split(" at ", 1)[1].strip() if console else None)


def start_service(tmp: Path, *extra: str, port: int = 0, connections: str | None = None,
                  state_dir: Path | None = None, cwd: Path | None = None,
                  env: dict[str, str] | None = None, cls: type[Service] = Service) -> Service:
    """A listening ``mqlflow serve``; with ``--http-port`` in ``extra`` its console too."""
    started = launch(tmp, *extra, port=port, connections=connections, state_dir=state_dir, cwd=cwd, env=env)
    got, url = started.wait_ready(console="--http-port" in extra)
    return cls(started.proc, got, started.state_dir, started.log, started.args, console_url=url)


def wait_until(pred: Any, timeout: float, what: str, every: float = 0.5, log: Any = None) -> Any:
    """``pred()`` once it is truthy; after ``timeout`` seconds the test fails naming ``what``
    (and the tail of ``log()`` when given)."""
    deadline = time.monotonic() + timeout
    got = None
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(every)
    tail = f"\n{log()[-4000:]}" if log is not None else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value {got!r}{tail}")


# --- a private FerretDB -----------------------------------------------------------------


class PrivateFerretDB:
    """``scripts/services.sh up mongodb`` on a port of its own (``MQLFLOW_FERRETDB_PORT``),
    with its endpoint file under ``tmp``; ``cleanup`` stops it and removes its files."""

    def __init__(self, tmp: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.env = {k: v for k, v in os.environ.items() if k != "MONGODB_URI"}
        self.env["MQLFLOW_FERRETDB_PORT"] = str(self.port)
        self.env["MQLFLOW_SERVICES_ENV"] = str(tmp / "services.env")
        self.services_env = tmp / "services.env"
        self.pidfile = ROOT / ".cache" / "run" / f"ferretdb-{self.port}.pid"
        self.uri = f"mongodb://127.0.0.1:{self.port}/"

    def _run(self, action: str) -> None:
        r = subprocess.run(["bash", str(SERVICES_SH), action, "mongodb"],
                           env=self.env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, (
            f"MQLFLOW_FERRETDB_PORT={self.port} scripts/services.sh {action} mongodb failed:\n{r.stderr}"
        )

    def up(self) -> None:
        self._run("up")

    def down(self) -> None:
        self._run("down")

    def kill(self) -> None:
        """SIGKILL, as a crash: the files stay for the next ``up``."""
        pid = int(self.pidfile.read_text().strip())
        os.kill(pid, signal.SIGKILL)
        for _ in range(100):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)

    def cleanup(self) -> None:
        with contextlib.suppress(AssertionError):
            self.down()
        cache = ROOT / ".cache"
        for leftover in (f"ferretdb-data-{self.port}", f"ferretdb-state-{self.port}"):
            shutil.rmtree(cache / leftover, ignore_errors=True)
        for leftover in (f"logs/ferretdb-{self.port}.log", f"run/ferretdb-{self.port}.pid"):
            (cache / leftover).unlink(missing_ok=True)


@contextlib.contextmanager
def private_ferretdb(tmp: Path) -> Iterator[PrivateFerretDB]:
    """A started ``PrivateFerretDB``, cleaned up afterwards whatever the test did."""
    f = PrivateFerretDB(tmp)
    try:
        f.up()
        yield f
    finally:
        f.cleanup()


def http_request(opener: Any, url: str, data: bytes | None = None,
                 headers: dict[str, str] | None = None) -> tuple[int, str]:
    """``(status, body)`` of a GET (or, with ``data``, a POST) through ``opener``; HTTP
    errors are answers too."""
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, data=data, headers=headers or {}, method="POST" if data is not None else "GET")
    try:
        with opener.open(req, timeout=10) as r:
            return int(r.status), str(r.read().decode())
    except urllib.error.HTTPError as e:
        return e.code, str(e.read().decode())
