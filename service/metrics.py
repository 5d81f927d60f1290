"""Prometheus metrics for running processors, from the children's side-channel figures.

Served on ``--host`` (loopback by default) like the wire port. With ``--users`` every
scrape logs in with HTTP Basic as one of those users, checked against the same
SCRAM-SHA-256 credentials (Prometheus' ``basic_auth`` scrape setting sends it; see
https://prometheus.io/docs/prometheus/latest/configuration/configuration/#scrape_config).
"""

from __future__ import annotations

import base64
import binascii
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app
from prometheus_client.core import REGISTRY, CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from service.auth import THROTTLE, check_password
from service.protocol import COUNTERS

if TYPE_CHECKING:
    from service.supervisor import Supervisor

REALM = 'Basic realm="mqlflow metrics", charset="UTF-8"'


class ProcessorCollector(Collector):
    """Reads live figures at scrape time; nothing is copied per document."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        runs = [r for r in self.supervisor.runs.values() if not r.temporary]
        for c in COUNTERS:
            fam = CounterMetricFamily(c.metric, c.help, labels=["processor"])
            for r in runs:
                fam.add_metric([r.name], r.counters()[c.field])
            yield fam
        state = GaugeMetricFamily("mqlflow_state_entries", "Open window state: (window, group) entries", labels=["processor"])
        wm = GaugeMetricFamily(
            "mqlflow_watermark_seconds", "Event-time watermark (Unix seconds)", labels=["processor"]
        )
        for r in runs:
            state.add_metric([r.name], r.state_size())
            if r.watermark is not None:
                wm.add_metric([r.name], r.watermark.timestamp())
        yield state
        yield wm
        up = GaugeMetricFamily(
            "mqlflow_processor_running", "1 when the processor's child process is up", labels=["processor"]
        )
        for r in runs:
            up.add_metric([r.name], 1.0 if r.proc is not None else 0.0)
        yield up


StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def basic_auth_user(header: str, users: dict[str, str], host: str = "") -> str | None:
    """The user an ``Authorization: Basic`` header logs in as, or None.

    A wrong user or password counts against ``host`` in the shared login throttle
    (service/auth.py ``LoginThrottle``), and a throttled host waits on this request's
    own thread before its check."""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(token.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    if not sep:
        return None
    wait = THROTTLE.delay(host)
    if wait:
        time.sleep(wait)
    if check_password(users, user, password):
        return user
    THROTTLE.failed(host)
    return None


def with_login(app: WsgiApp, users: dict[str, str]) -> WsgiApp:
    """``app`` behind HTTP Basic against ``users``; a missing or wrong login gets 401."""

    def guarded(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        header, host = environ.get("HTTP_AUTHORIZATION", ""), environ.get("REMOTE_ADDR", "")
        if basic_auth_user(header, users, host) is None:
            body = b"401: log in with HTTP Basic as a user of mqlflow serve --users\n"
            start_response("401 Unauthorized", [
                ("WWW-Authenticate", REALM), ("Content-Type", "text/plain; charset=utf-8"),
                ("Content-Length", str(len(body))),
            ])
            return [body]
        return app(environ, start_response)

    return guarded


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    # A client that stalls (mid-request, or mid-TLS-handshake) holds only its own thread,
    # and only this long.
    timeout = 30

    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes every few seconds would flood the service log."""


def start_metrics(supervisor: Supervisor, port: int, host: str = "127.0.0.1",
                  users: dict[str, str] | None = None, tls: ssl.SSLContext | None = None) -> WSGIServer:
    """Serve ``/metrics`` on ``host:port`` in a daemon thread; with ``users``, behind a
    login; with ``tls``, over HTTPS (the handshake runs in each request's own thread,
    not in the accepting one, so a stalled client cannot hold up the others)."""
    REGISTRY.register(ProcessorCollector(supervisor))
    app: WsgiApp = make_wsgi_app(REGISTRY)
    if users:
        app = with_login(app, users)
    server_cls = _Server6 if ":" in host else _Server  # an IPv6 address has colons
    httpd = make_server(host, port, app, server_cls, handler_class=_QuietHandler)
    if tls is not None:
        httpd.socket = tls.wrap_socket(httpd.socket, server_side=True, do_handshake_on_connect=False)
    threading.Thread(target=httpd.serve_forever, name="mqlflow-metrics", daemon=True).start()
    return httpd
