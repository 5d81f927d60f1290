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

from service.auth import load_users_and_roles
from service.server import LOOPBACK, Limits, Server
from service.supervisor import Supervisor, SupervisorConfig


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mqlflow", description="Self-hosted Atlas Stream Processing")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser(
        "serve",
        help="run the MongoDB-wire stream processing service",
        description="Run the MongoDB-wire stream processing service that mongosh's sp.* "
        "commands drive. Every option below has a default; none is required.",
    )
    d = Limits()
    s.add_argument(
        "--host", default="127.0.0.1",
        help="bind address; anything but loopback requires --users (default: %(default)s)",
    )
    s.add_argument(
        "--port", type=int, default=27117,
        help="TCP port of the MongoDB wire protocol; 0 picks a free one (default: %(default)s)",
    )
    s.add_argument(
        "--connections",
        default=os.environ.get("MQLFLOW_CONNECTIONS"),
        help="connection registry TOML; must exist when given "
        "(default: $MQLFLOW_CONNECTIONS, else ./connections.toml if present)",
    )
    s.add_argument(
        "--state-dir", default=".mqlflow", type=Path,
        help="where processors.db, checkpoints and logs live (default: %(default)s)",
    )
    s.add_argument(
        "--snapshot-interval", type=float, default=5.0,
        help="checkpoint every N seconds (default: %(default)s)",
    )
    s.add_argument(
        "--max-restarts", type=int, default=5,
        help="crashes in a row before a processor turns FAILED (default: %(default)s)",
    )
    s.add_argument(
        "--process-max-seconds",
        type=float,
        default=600.0,
        help="lifetime cap of an sp.process temporary processor (default: %(default)s)",
    )
    s.add_argument(
        "--sample-idle-timeout", type=float, default=30.0,
        help="close a sample()/sp.process cursor nobody polled for N seconds "
        "(default: %(default)s)",
    )
    s.add_argument(
        "--users", type=Path,
        help="file of 'user:password' lines; when given, every client must log in with "
        "SCRAM-SHA-256, on loopback too (default: none, no login on loopback)",
    )
    s.add_argument(
        "--max-connections", type=_positive_int, default=d.max_connections,
        help="open client connections at most; more are closed at once (default: %(default)s)",
    )
    s.add_argument(
        "--prelogin-max-message", type=_positive_int, default=d.prelogin_max_message,
        help="largest message in bytes a client may send before it logs in; with --users "
        "only (default: %(default)s)",
    )
    s.add_argument(
        "--prelogin-idle-timeout", type=_positive_float, default=d.prelogin_idle_timeout,
        help="close a connection that has not logged in after N idle seconds; with --users "
        "only (default: %(default)s)",
    )
    s.add_argument(
        "--metrics-port", type=int,
        help="serve Prometheus metrics on this port, on --host (loopback by default); with "
        "--users every scrape logs in with HTTP Basic as one of those users "
        "(default: none, no metrics endpoint)",
    )
    s.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        type=str.upper, help="service log level on stderr (default: %(default)s)",
    )
    s.add_argument(
        "--tls-certificate-key-file", type=Path,
        help="PEM file with the server certificate (chain) and its private key, as mongod's "
        "--tlsCertificateKeyFile: every port (wire, --metrics-port, --http-port) then "
        "requires TLS (default: none, plain TCP)",
    )
    s.add_argument(
        "--tls-ca-file", type=Path,
        help="with --tls-certificate-key-file: CA certificates; clients must then present a "
        "certificate this CA signed (mutual TLS)",
    )
    s.add_argument(
        "--http-port", type=int,
        help="serve the web console on this port, on --host (default: none, no console)",
    )
    _add_shell(sub)
    return p


def _add_shell(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from service import shell

    shell.add_parser(sub)


async def serve(args: argparse.Namespace) -> None:
    connections = args.connections
    if connections is None and Path("connections.toml").exists():
        connections = str(Path("connections.toml").resolve())
    elif connections is not None:
        if not Path(connections).is_file():
            raise RuntimeError(f"connections file {connections} does not exist")
        connections = str(Path(connections).resolve())
    users, roles = load_users_and_roles(args.users) if args.users is not None else ({}, {})
    tls = None
    if args.tls_certificate_key_file is not None:
        from service.tls import server_context

        tls = server_context(args.tls_certificate_key_file, args.tls_ca_file)
    elif args.tls_ca_file is not None:
        raise RuntimeError("--tls-ca-file needs --tls-certificate-key-file")
    config = SupervisorConfig(
        state_dir=args.state_dir.resolve(),
        connections=connections,
        snapshot_interval=args.snapshot_interval,
        max_restarts=args.max_restarts,
        process_max_seconds=args.process_max_seconds,
        sample_idle_timeout=args.sample_idle_timeout,
        users=users,
        roles=roles,
    )
    supervisor = Supervisor(config)
    try:
        supervisor.registry  # noqa: B018 -- a broken registry stops the start, not a create
    except Exception as e:
        msg = str(e)
        raise RuntimeError(msg if str(connections) in msg else f"connections file {connections}: {msg}") from e
    limits = Limits(args.max_connections, args.prelogin_max_message, args.prelogin_idle_timeout)
    server = Server(supervisor, args.host, args.port, limits, tls)
    await server.start()
    if tls is None and args.host not in LOOPBACK:
        logging.getLogger("mqlflow.service").warning(
            "serving %s without TLS: passwords and data cross the network readable; "
            "pass --tls-certificate-key-file", args.host,
        )
    if args.metrics_port is not None:
        from service.metrics import start_metrics

        start_metrics(supervisor, args.metrics_port, args.host, users, tls)
    console = None
    if args.http_port is not None:
        from service.web import start_console

        console = await start_console(supervisor, args.host, args.http_port, tls)
    await supervisor.startup()
    print(f"mqlflow listening on {args.host}:{server.port}", flush=True)
    if console is not None:
        print(f"mqlflow console at {console.url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    serving = asyncio.create_task(server.serve_forever())
    await stop.wait()
    logging.getLogger("mqlflow.service").info("shutting down")
    await server.close()
    if console is not None:
        await console.close()
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
