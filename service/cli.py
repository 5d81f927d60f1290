"""``mqlflow serve``: run the stream processing service."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path

from service.server import Server
from service.supervisor import Supervisor, SupervisorConfig


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mqlflow", description="Self-hosted Atlas Stream Processing")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run the MongoDB-wire stream processing service")
    s.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=27117)
    s.add_argument(
        "--connections",
        default=os.environ.get("MQLFLOW_CONNECTIONS"),
        help="connection registry TOML (default: $MQLFLOW_CONNECTIONS or connections.toml)",
    )
    s.add_argument("--state-dir", default=".mqlflow", type=Path)
    s.add_argument("--snapshot-interval", type=float, default=5.0, help="checkpoint every N seconds")
    s.add_argument("--max-restarts", type=int, default=5, help="crashes before FAILED")
    s.add_argument(
        "--process-max-seconds",
        type=float,
        default=600.0,
        help="lifetime cap of an sp.process temporary processor",
    )
    s.add_argument("--sample-idle-timeout", type=float, default=30.0)
    s.add_argument(
        "--flow-target",
        default="flows.processor:from_definition",
        help="bytewax import target called with the definition.json path",
    )
    s.add_argument("--users", type=Path, help="file of 'user:password' lines for SCRAM-SHA-256")
    s.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port")
    s.add_argument("--log-level", default="INFO")
    _add_shell(sub)
    return p


def _add_shell(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from service import shell

    shell.add_parser(sub)


def _load_users(path: Path | None) -> dict[str, str]:
    if path is None:
        return {}
    users: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            user, _, password = line.partition(":")
            users[user] = password
    return users


async def serve(args: argparse.Namespace) -> None:
    connections = args.connections
    if connections is None and Path("connections.toml").exists():
        connections = str(Path("connections.toml").resolve())
    elif connections is not None:
        connections = str(Path(connections).resolve())
    config = SupervisorConfig(
        state_dir=args.state_dir.resolve(),
        connections=connections,
        snapshot_interval=args.snapshot_interval,
        max_restarts=args.max_restarts,
        process_max_seconds=args.process_max_seconds,
        sample_idle_timeout=args.sample_idle_timeout,
        users=_load_users(args.users),
        flow_target=args.flow_target,
    )
    supervisor = Supervisor(config)
    server = Server(supervisor, args.host, args.port)
    await server.start()
    if args.metrics_port is not None:
        from service.metrics import start_metrics

        start_metrics(supervisor, args.metrics_port, args.host)
    await supervisor.startup()
    print(f"mqlflow listening on {args.host}:{server.port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    serving = asyncio.create_task(server.serve_forever())
    await stop.wait()
    logging.getLogger("mqlflow.service").info("shutting down")
    await server.close()
    serving.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await serving
    await supervisor.shutdown()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "shell":
        from service import shell

        return shell.main(args)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        asyncio.run(serve(args))
    except RuntimeError as e:
        print(f"mqlflow: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"mqlflow: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
