"""Joining a processor's Bytewax processes into one cluster without Timely's 1 s retry.

With ``-i/-a``, Bytewax (Timely dataflow underneath) makes process ``i`` connect to every
process ``j < i``, and process ``j`` listens only once its own flow is built. The service
starts all of them together, so process ``i`` often gets there first: its connect is
refused, and Timely sleeps a whole second before trying again ("error connecting to
worker 0 ... retrying" in ``child.log``), a second of start-up for the whole processor.

So the service gives process ``i`` the addresses of processes ``0 .. i-1``
(:data:`ENV_CLUSTER_PEERS`), and the child's flow entry (:mod:`flows.processor`) waits
until each of them listens before it hands its flow to Bytewax. It looks in the kernel's
socket tables (``/proc/net/tcp``), never by connecting: Timely would take any accepted
connection for a peer's. Anywhere else (no table, a host name, a timeout) it simply goes
on, and Timely's own retry still applies.
"""

from __future__ import annotations

import ipaddress
import os
import sys
import time
from pathlib import Path

ENV_CLUSTER_PEERS = "MQLFLOW_CLUSTER_PEERS"
TCP_TABLES = (Path("/proc/net/tcp"), Path("/proc/net/tcp6"))
LISTEN = "0A"  # the TCP_LISTEN state in /proc/net/tcp
POLL_S = 0.005
WAIT_S = 30.0  # the peer may still be importing on a loaded machine

Endpoint = tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]


def peers_env(addresses: list[str], index: int) -> dict[str, str]:
    """The environment for process ``index`` of a cluster on ``addresses``."""
    return {ENV_CLUSTER_PEERS: ";".join(addresses[:index])} if index > 0 else {}


def _address(text: str) -> Endpoint | None:
    """``127.0.0.1:4000`` or ``[::1]:4000``; None for anything else (a host name)."""
    host, _, port = text.strip().rpartition(":")
    try:
        return ipaddress.ip_address(host.strip("[]")), int(port)
    except ValueError:
        return None


def _decode(hex_addr: str) -> Endpoint:
    """``0100007F:1F90`` -> (127.0.0.1, 8080): the address in 32-bit words of host order."""
    ip_hex, port_hex = hex_addr.split(":")
    raw = bytes.fromhex(ip_hex)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4)) if sys.byteorder == "little" else raw
    return ipaddress.ip_address(words), int(port_hex, 16)


def listening_ports() -> set[Endpoint] | None:
    """Every (address, port) with a listening TCP socket, or None without the tables."""
    found: set[Endpoint] = set()
    seen = False
    for table in TCP_TABLES:
        try:
            lines = table.read_text().splitlines()[1:]
        except OSError:
            continue
        seen = True
        for line in lines:
            cols = line.split()
            if len(cols) > 3 and cols[3] == LISTEN:
                found.add(_decode(cols[1]))
    return found if seen else None


def _listens(addr: Endpoint, table: set[Endpoint]) -> bool:
    ip, port = addr
    any_ip = ipaddress.ip_address("0.0.0.0" if ip.version == 4 else "::")
    return (ip, port) in table or (any_ip, port) in table


def wait_for_peers(timeout: float = WAIT_S) -> float:
    """Block until every address in :data:`ENV_CLUSTER_PEERS` listens; the seconds waited.

    Returns at once without the variable, without socket tables, or when an address is
    not a numeric ``ip:port``; after ``timeout`` it returns anyway."""
    spec = os.environ.get(ENV_CLUSTER_PEERS, "")
    addrs = [_address(a) for a in spec.split(";") if a.strip()]
    if not addrs or any(a is None for a in addrs):
        return 0.0
    want = [a for a in addrs if a is not None]
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        table = listening_ports()
        if table is None or all(_listens(a, table) for a in want):
            break
        time.sleep(POLL_S)
    return time.monotonic() - t0
