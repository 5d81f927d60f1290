"""``mqlflow shell``: start mongosh against ``mqlflow serve`` so the tour runs verbatim.

From mongosh 2.5.10 (``@mongosh/shell-api`` 3.28) on, ``sp.getProcessor`` takes a
document (``sp.getProcessor({name: 'x'})``); given a string it builds a processor
without a name, and ``start()`` then sends ``startStreamProcessor: null``. The tour
(https://www.mongodb.com/docs/atlas/atlas-stream-processing/manage-stream-processor/)
and older shells pass the name as a string. :data:`GET_PROCESSOR_SNIPPET` makes both
forms work on every mongosh 2.x; ``mqlflow shell`` runs it before the user's session,
and the README shows it for ``~/.mongoshrc.js``.

mongosh is started with an argument list (never through a shell), and nothing here comes
from a client of the service: host, port and the extra mongosh arguments are the local
user's own command line.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Kept self-contained (one statement, no top-level names) so it can be pasted into
# ~/.mongoshrc.js unchanged. A probe tells the two shapes apart: old shells build the
# processor from a string (its ``name`` is that string), new ones need ``{name}``; either
# form the user writes is turned into the one the running shell expects.
GET_PROCESSOR_SNIPPET = """\
(() => {
  const proto = Object.getPrototypeOf(sp);
  const original = proto.getProcessor;
  if (typeof original !== 'function' || original.mqlflowAcceptsName) return;
  const getProcessor = function (arg) {
    const byName = original.call(this, 'mqlflow-probe').name === 'mqlflow-probe';
    if (byName && arg && typeof arg === 'object') return original.call(this, arg.name);
    if (!byName && typeof arg === 'string') return original.call(this, { name: arg });
    return original.call(this, arg);
  };
  getProcessor.mqlflowAcceptsName = true;
  proto.getProcessor = getProcessor;
})();
"""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    s = sub.add_parser(
        "shell",
        help="start mongosh against mqlflow serve, with sp.getProcessor('name') working on every mongosh 2.x",
        description=(
            "Start mongosh connected to mqlflow serve. Arguments after '--' go to mongosh "
            "unchanged, e.g. mqlflow shell -- --file tour.js"
        ),
    )
    s.add_argument("--host", default="127.0.0.1", help="service address (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=27117, help="service port (default 27117)")
    s.add_argument("-u", "--username", help="user for SCRAM-SHA-256 (mongosh prompts for the password)")
    s.add_argument("-p", "--password", help="password (prefer the prompt: command lines are visible to ps)")
    s.add_argument(
        "--mongosh",
        help="mongosh executable (default: $MONGOSH, then .cache/run/services.env, then mongosh on PATH)",
    )
    s.add_argument("mongosh_args", nargs=argparse.REMAINDER, help="extra mongosh arguments after --")


def find_mongosh(explicit: str | None) -> str:
    """The mongosh to run, or SystemExit naming how to install one."""
    if explicit:
        if _runnable(explicit):
            return explicit
        raise SystemExit(f"mqlflow shell: --mongosh {explicit} is not an executable file")
    for c in (os.environ.get("MONGOSH"), _services_env_mongosh(), shutil.which("mongosh")):
        if c and _runnable(c):
            return c
    raise SystemExit("mqlflow shell: no mongosh found; install it with scripts/services.sh up mongosh or pass --mongosh")


def _runnable(path: str) -> bool:
    return Path(path).is_file() and os.access(path, os.X_OK)


def _services_env_mongosh() -> str | None:
    env_file = ROOT / ".cache" / "run" / "services.env"
    try:
        lines = env_file.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        key, _, value = line.partition("=")
        if key.strip() == "MONGOSH":
            return value.strip().strip('"').strip("'")
    return None


def build_argv(mongosh: str, args: argparse.Namespace) -> list[str]:
    """mongosh's argument list: the URI, credentials, the snippet, then the user's own arguments.

    Without extra arguments the session is interactive; with ``--file``/``--eval`` mongosh
    runs them after the snippet and exits (pass ``--shell`` to stay)."""
    host = f"[{args.host}]" if ":" in args.host else args.host
    argv = [mongosh, f"mongodb://{host}:{args.port}/"]
    if args.username:
        argv += ["--username", args.username, "--authenticationMechanism", "SCRAM-SHA-256"]
        if args.password is not None:
            argv += ["--password", args.password]
    extra = list(args.mongosh_args)
    if extra[:1] == ["--"]:
        extra = extra[1:]
    argv += ["--eval", GET_PROCESSOR_SNIPPET]
    if not any(a in ("--file", "-f", "--eval") or a.endswith(".js") for a in extra):
        argv.append("--shell")  # --eval alone would exit after the snippet
    return argv + extra


def main(args: argparse.Namespace) -> int:
    argv = build_argv(find_mongosh(args.mongosh), args)
    try:
        return subprocess.call(argv)
    except KeyboardInterrupt:
        return 130
