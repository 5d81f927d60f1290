"""How a processor's later Bytewax processes wait for the earlier ones to listen
(:mod:`service.cluster`), on real loopback sockets: never by connecting to them."""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from service import cluster
from service.cluster import ENV_CLUSTER_PEERS, listening_ports, peers_env, wait_for_peers


@pytest.fixture
def bound() -> Iterator[socket.socket]:
    """A loopback socket with a port of its own, not listening yet."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    yield s
    s.close()


def addr(s: socket.socket) -> str:
    host, port = s.getsockname()[:2]
    return f"{host}:{port}"


def test_each_process_waits_for_the_ones_before_it() -> None:
    addrs = ["127.0.0.1:1001", "127.0.0.1:1002", "127.0.0.1:1003"]
    assert [peers_env(addrs, i) for i in range(3)] == [
        {},
        {ENV_CLUSTER_PEERS: "127.0.0.1:1001"},
        {ENV_CLUSTER_PEERS: "127.0.0.1:1001;127.0.0.1:1002"},
    ]


def test_the_socket_tables_show_listeners_only(bound: socket.socket) -> None:
    key = (ipaddress.ip_address("127.0.0.1"), bound.getsockname()[1])
    assert key not in (listening_ports() or set())
    bound.listen()
    assert key in (listening_ports() or set())
    six = socket.socket(socket.AF_INET6)
    try:
        six.bind(("::1", 0))
        six.listen()
        assert (ipaddress.ip_address("::1"), six.getsockname()[1]) in (listening_ports() or set())
    finally:
        six.close()


def test_wait_ends_when_the_peer_listens_and_never_connects(bound: socket.socket, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_CLUSTER_PEERS, addr(bound))
    threading.Timer(0.3, bound.listen).start()
    waited = wait_for_peers(timeout=10)
    assert 0.25 < waited < 5
    bound.settimeout(0.2)
    with pytest.raises(TimeoutError):  # nobody connected to it (Timely would take that for a peer)
        bound.accept()


def test_wait_needs_every_earlier_peer(bound: socket.socket, monkeypatch: pytest.MonkeyPatch) -> None:
    first = socket.socket()
    first.bind(("127.0.0.1", 0))
    first.listen()
    try:
        monkeypatch.setenv(ENV_CLUSTER_PEERS, f"{addr(first)};{addr(bound)}")
        threading.Timer(0.3, bound.listen).start()
        assert 0.25 < wait_for_peers(timeout=10) < 5
    finally:
        first.close()


def test_wait_gives_up_after_its_timeout(bound: socket.socket, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_CLUSTER_PEERS, addr(bound))
    t0 = time.monotonic()
    assert wait_for_peers(timeout=0.3) >= 0.3
    assert time.monotonic() - t0 < 5


@pytest.mark.parametrize("spec", ["", "localhost:1234", "127.0.0.1:x;127.0.0.1:1"])
def test_no_wait_without_numeric_peers(spec: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_CLUSTER_PEERS, spec)
    assert wait_for_peers(timeout=5) == 0.0


def test_no_wait_without_socket_tables(bound: socket.socket, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Off Linux (no /proc/net/tcp) Timely's own retry is all there is."""
    monkeypatch.setattr(cluster, "TCP_TABLES", (tmp_path / "tcp",))
    monkeypatch.setenv(ENV_CLUSTER_PEERS, addr(bound))
    assert listening_ports() is None
    assert wait_for_peers(timeout=5) < 1
