"""Prometheus metrics (``mqlflow serve --metrics-port``): the same side-channel figures
as ``stats()`` (docs/semantics.md#stats), scraped over HTTP; with ``--users`` behind HTTP
Basic against the same users, on loopback unless ``--host`` says otherwise."""

from __future__ import annotations

import base64
import socket
import time
import urllib.error
import urllib.request
from datetime import UTC
from pathlib import Path
from typing import Any

import pymongo
import pytest
from prometheus_client.parser import text_string_to_metric_families
from svc_helpers import free_port, start_service

pytestmark = [pytest.mark.mongodb, pytest.mark.slow]


def scrape(port: int) -> dict[tuple[str, str], float]:
    """``{(sample name, processor label): value}``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        assert r.status == 200
        text = r.read().decode()
    out: dict[tuple[str, str], float] = {}
    for fam in text_string_to_metric_families(text):
        if fam.name.startswith("mqlflow_"):
            for s in fam.samples:
                out[(s.name, s.labels.get("processor", ""))] = s.value
    return out


def stats(client: pymongo.MongoClient[dict[str, Any]], name: str) -> dict[str, Any]:
    st: dict[str, Any] = client.admin.command({"getStreamProcessorStats": name})["stats"]
    return st


def test_metrics_endpoint_exposes_running_processor_figures(tmp_path: Path, mongodb_uri: str, mongo_db: Any) -> None:
    conns = tmp_path / "real-connections.toml"
    conns.write_text(f'[connections.mongo1]\ntype = "mongodb"\nuri = "{mongodb_uri}"\n')
    mport = free_port()
    svc = start_service(
        tmp_path, "--connections", str(conns),
        "--metrics-port", str(mport),
    )
    client: pymongo.MongoClient[dict[str, Any]] = svc.client()
    try:
        pipeline = [
            {"$source": {"connectionName": "sample_stream_solar", "config": {"seed": 3, "rate": 400, "faultRate": 0.0}}},
            {"$tumblingWindow": {"interval": {"size": 1, "unit": "day"},
                                 "pipeline": [{"$group": {"_id": "$group_id", "n": {"$sum": 1}}}]}},
            {"$merge": {"into": {"connectionName": "mongo1", "db": mongo_db.name, "coll": "m"}}},
        ]
        client.admin.command({"createStreamProcessor": "prom", "pipeline": pipeline})
        client.admin.command({"createStreamProcessor": "idle", "pipeline": pipeline})  # never started
        client.admin.command({"startStreamProcessor": "prom"})

        deadline = time.monotonic() + 60
        while stats(client, "prom")["stateSize"] != 10 or stats(client, "prom")["inputMessageCount"] < 400:
            assert time.monotonic() < deadline, stats(client, "prom")
            time.sleep(0.3)

        before = stats(client, "prom")
        m = scrape(mport)
        after = stats(client, "prom")
        # Counters are cumulative: the scrape lies between two stats() calls.
        got_in = m[("mqlflow_input_messages_total", "prom")]
        assert before["inputMessageCount"] <= got_in <= after["inputMessageCount"]
        got_bytes = m[("mqlflow_input_bytes_total", "prom")]
        assert before["inputMessageSize"] <= got_bytes <= after["inputMessageSize"]
        assert got_bytes > got_in * 100  # solar documents are well over 100 BSON bytes
        # A daily window has closed nothing yet; nothing failed.
        assert m[("mqlflow_output_messages_total", "prom")] == 0
        assert m[("mqlflow_dlq_messages_total", "prom")] == 0
        assert m[("mqlflow_dlq_bytes_total", "prom")] == 0
        assert m[("mqlflow_state_entries", "prom")] == 10  # 10 groups in the open window
        assert m[("mqlflow_processor_running", "prom")] == 1
        wm = m[("mqlflow_watermark_seconds", "prom")]
        assert abs(wm - before["watermark"].replace(tzinfo=UTC).timestamp()) < 10
        assert abs(wm - time.time()) < 30
        # Only running processors are exported.
        assert not any(label == "idle" for _, label in m)

        client.admin.command({"stopStreamProcessor": "prom"})
        m = scrape(mport)
        assert not any(label == "prom" for _, label in m)
        assert ("mqlflow_processor_running", "prom") not in m
    finally:
        client.close()
        svc.stop()


def get(port: int, auth: tuple[str, str] | None = None, header: str | None = None) -> tuple[int, dict[str, str], str]:
    """A real HTTP GET of /metrics: status, headers, body (an error status is an answer too)."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}/metrics")
    if auth is not None:
        req.add_header("Authorization", "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
    if header is not None:
        req.add_header("Authorization", header)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as e:
        with e:
            return e.code, dict(e.headers), e.read().decode()


def listening_addresses(port: int) -> set[str]:
    """Local addresses of the sockets listening on ``port`` (from /proc/net/tcp and tcp6)."""
    out: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, _, hexport = local.partition(":")
            if state == "0A" and int(hexport, 16) == port:  # 0A: LISTEN
                out.add(socket.inet_ntop(socket.AF_INET, bytes.fromhex(addr)[::-1]) if len(addr) == 8 else addr)
    return out


def test_metrics_with_users_need_a_login_and_bind_loopback(tmp_path: Path) -> None:
    users = tmp_path / "users.txt"
    users.write_text("scraper:s3cret-Pa55\nbob:other:with:colons\n")
    mport = free_port()
    svc = start_service(tmp_path, "--users", str(users), "--metrics-port", str(mport))
    try:
        assert listening_addresses(mport) == {"127.0.0.1"}
        denied = (401, 'Basic realm="mqlflow metrics", charset="UTF-8"',
                  "401: log in with HTTP Basic as a user of mqlflow serve --users\n")
        for auth, header in [
            (None, None),                            # no credentials
            (("scraper", "wrong"), None),            # wrong password
            (("scraper", "s3cret-Pa5"), None),       # a prefix of the password
            (("mallory", "s3cret-Pa55"), None),      # unknown user, a known password
            (("bob", "other"), None),                # the password is all after the first ':'
            (None, "Bearer s3cret-Pa55"),            # not Basic
            (None, "Basic not*base64"),
        ]:
            status, headers, body = get(mport, auth, header)
            assert (status, headers.get("WWW-Authenticate"), body) == denied, (auth, header)
        for auth in [("scraper", "s3cret-Pa55"), ("bob", "other:with:colons")]:
            status, headers, body = get(mport, auth)
            assert status == 200, (auth, body)
            assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
            names = {f.name for f in text_string_to_metric_families(body)}
            assert {"mqlflow_input_messages", "mqlflow_state_entries", "mqlflow_processor_running"} <= names
        # Four wrong logins above, a fifth now: the wire port's login throttle covers this
        # port too, so the next check from this address waits before it is answered.
        assert get(mport, ("scraper", "wrong"))[0] == 401
        t = time.monotonic()
        assert get(mport, ("scraper", "s3cret-Pa55"))[0] == 200
        assert time.monotonic() - t >= 0.25
    finally:
        svc.stop()


def test_metrics_bind_the_service_host(tmp_path: Path) -> None:
    """``--host 0.0.0.0`` (which requires ``--users``) opens the metrics port there too,
    still behind the login."""
    users = tmp_path / "users.txt"
    users.write_text("scraper:s3cret-Pa55\n")
    mport = free_port()
    svc = start_service(tmp_path, "--host", "0.0.0.0", "--users", str(users), "--metrics-port", str(mport))
    try:
        assert listening_addresses(mport) == {"0.0.0.0"}
        assert get(mport)[0] == 401
        assert get(mport, ("scraper", "s3cret-Pa55"))[0] == 200
    finally:
        svc.stop()
