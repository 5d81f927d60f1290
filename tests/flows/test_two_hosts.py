"""One processor's Bytewax cluster over two "hosts" (the README's real-hosts recipe).

Two ``python -m bytewax.run "flows.pipeline:from_file(...)" -i <i> -a <addresses>``
processes, one bound to 127.0.0.1 and one to 127.0.0.2 (two loopback addresses stand in
for two machines), each with its own output directory and its own recovery directory
holding only its own recovery partition, read one real Kafka topic's 4 partitions
between them and run a 1 s tumbling window. Asserted:

- the window results equal an independent computation exactly; each host read a
  non-empty share of the partitions (one unparsable message per partition lands in
  the DLQ file of the host that read it), so the per-partition watermarks and window
  state were exchanged between the processes;
- after ``kill -9`` of one host mid-stream and a restart of both from their own
  recovery directories, the results, deduplicated by ``(_id, window start)`` as
  ``$merge`` does, equal the uninterrupted run's, and every replayed copy is identical
  (docs/semantics.md#checkpoints: at-least-once).
"""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from bson import json_util

sys.path.append(str(Path(__file__).resolve().parents[1]))

from kafka_flows import kill_while_producing, new_topic, produce, read_docs, window_results

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
HOSTS = ("127.0.0.1", "127.0.0.2")
PARTITIONS = 4
T0 = datetime(2024, 8, 8, 23, 8, 0, tzinfo=UTC)
N = 4000  # events 10 ms apart: 40 one-second windows
KEYS = 8
STEP_MS = 10


def event(i: int) -> dict[str, Any]:
    return {"i": i, "k": f"g{i % KEYS}", "v": (i * 7) % 11, "t": T0 + timedelta(milliseconds=i * STEP_MS)}


def bad_records() -> list[dict[str, Any]]:
    """One unparsable message per partition: the worker that reads a partition sends it
    to its own host's DLQ file, which shows which host read which partition."""
    return [{"partition": p, "value": f"not json {p}"} for p in range(PARTITIONS)]


def records(lo: int, hi: int) -> list[dict[str, Any]]:
    return [{"partition": i % PARTITIONS, "value": event(i)} for i in range(lo, hi)]


def flush_records() -> list[dict[str, Any]]:
    """One event per partition an hour later: every partition's watermark passes every
    data window, so all of them close (its own window never does)."""
    far = T0 + timedelta(hours=1)
    return [{"partition": p, "value": {"i": -1, "k": "flush", "v": 0, "t": far}} for p in range(PARTITIONS)]


def expected() -> dict[tuple[str, datetime], dict[str, Any]]:
    """The windows computed directly from the events, without mqlflow."""
    out: dict[tuple[str, datetime], dict[str, Any]] = {}
    for i in range(N):
        e = event(i)
        start = T0 + timedelta(seconds=(i * STEP_MS) // 1000)
        r = out.setdefault((e["k"], start), {"n": 0, "total": 0, "max": None})
        r["n"] += 1
        r["total"] += e["v"]
        r["max"] = e["v"] if r["max"] is None else max(r["max"], e["v"])
    return out


def pipeline_file(path: Path, topic: str) -> Path:
    doc = {
        "name": "twohosts",
        "pipeline": [
            {"$source": {"connectionName": "kafka1", "topic": topic, "timeField": {"$toDate": "$t"},
                         "config": {"auto_offset_reset": "earliest"}}},
            {"$tumblingWindow": {"interval": {"size": 1, "unit": "second"}, "allowedLateness": 0, "pipeline": [
                {"$group": {"_id": "$k", "n": {"$sum": 1}, "total": {"$sum": "$v"}, "max": {"$max": "$v"}}}]}},
        ],
    }
    path.write_text(json_util.dumps(doc))
    return path


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class Host:
    """One "machine": its own process, output directory, recovery directory and log."""

    def __init__(self, index: int, base: Path, pipeline: Path, connections: Path, recovery: bool) -> None:
        self.index = index
        self.out = base / f"host{index}-out"
        self.rec = base / f"host{index}-rec" if recovery else None
        self.log = base / f"host{index}.log"
        self.target = f"flows.pipeline:from_file('{pipeline}', connections='{connections}', output_dir='{self.out}')"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, addresses: str) -> None:
        cmd = [sys.executable, "-m", "bytewax.run", self.target, "-i", str(self.index), "-a", addresses]
        if self.rec is not None:
            cmd += ["-r", str(self.rec), "-s", "1", "-b", "0"]
        with self.log.open("ab") as logf:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=logf, stderr=subprocess.STDOUT, env=dict(os.environ))

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(10)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:] if self.log.exists() else "(no log)"


def init_recovery(hosts: list[Host]) -> None:
    """The README's layout: ``python -m bytewax.recovery`` creates one partition per
    process; each host keeps only its own ``part-<i>.sqlite3``."""
    for h in hosts:
        assert h.rec is not None
        h.rec.mkdir()
        subprocess.run([sys.executable, "-m", "bytewax.recovery", str(h.rec), str(len(hosts))], check=True, cwd=ROOT)
        for f in h.rec.glob("part-*.sqlite3"):
            if f.name != f"part-{h.index}.sqlite3":
                f.unlink()
    assert [sorted(p.name for p in h.rec.iterdir()) for h in hosts if h.rec] == [["part-0.sqlite3"], ["part-1.sqlite3"]]


class Cluster:
    def __init__(self, base: Path, pipeline: Path, connections: Path, recovery: bool) -> None:
        self.hosts = [Host(i, base, pipeline, connections, recovery) for i in range(len(HOSTS))]
        if recovery:
            init_recovery(self.hosts)

    def start(self) -> None:
        # New ports at each start, as the service does: a killed process's port may linger.
        addresses = ";".join(f"{h}:{free_port(h)}" for h in HOSTS)
        for h in self.hosts:
            h.start(addresses)

    def kill9(self) -> None:
        for h in self.hosts:
            h.kill9()

    def wait(self, pred: Callable[[], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if pred():
                return
            dead = [h for h in self.hosts if not h.alive()]
            assert not dead, f"host {dead[0].index} exited while waiting for {what}:\n{dead[0].tail()}"
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}:\n" + "\n".join(h.tail() for h in self.hosts))

    def docs(self, prefix: str) -> list[list[dict[str, Any]]]:
        return [read_docs(h.out, prefix) for h in self.hosts]



def results(docs: list[dict[str, Any]]) -> tuple[dict[tuple[Any, Any], dict[str, Any]], int]:
    """Deduplicated by (_id, window start) as ``$merge`` would; replays must be identical."""
    return window_results(docs, ("n", "total", "max"))


def all_results(c: Cluster) -> dict[tuple[str, datetime], dict[str, Any]]:
    return results([d for docs in c.docs("output") for d in docs])[0]


def read_by_host(c: Cluster) -> list[int]:
    """From the DLQ files: each host read a non-empty, disjoint share of the partitions,
    together all of them. Returns how often each bad message was written (the most)."""
    shares: list[set[int]] = []
    copies: dict[Any, int] = {}
    for docs in c.docs("dlq"):
        share = set()
        for d in docs:
            src = d["doc"]["_stream_meta"]["source"]
            assert d["errInfo"]["reason"].startswith("Failed to parse the Kafka message as JSON or Extended JSON: ")
            assert base64.b64decode(d["doc"]["rawValue"]) == f"not json {src['partition']}".encode()
            share.add(src["partition"])
            copies[d["_id"]] = copies.get(d["_id"], 0) + 1
        shares.append(share)
    assert all(shares), f"a host read no partition: {shares}"
    assert shares[0].isdisjoint(shares[1]) and shares[0] | shares[1] == set(range(PARTITIONS)), shares
    assert len(copies) == PARTITIONS  # deterministic DLQ _id: a replayed copy has the same one
    return [min(copies.values()), max(copies.values())]


@pytest.fixture
def connections(tmp_path: Path, kafka_bootstrap: str) -> Path:
    path = tmp_path / "connections.toml"
    path.write_text(f'[connections.kafka1]\ntype = "kafka"\nbootstrap_servers = "{kafka_bootstrap}"\n')
    return path


def test_two_hosts_split_a_topic_and_compute_exact_windows(kafka_bootstrap: str, tmp_path: Path, connections: Path) -> None:
    topic = new_topic(kafka_bootstrap, PARTITIONS, prefix="hosts-a")
    produce(kafka_bootstrap, topic, bad_records() + records(0, N) + flush_records())
    c = Cluster(tmp_path, pipeline_file(tmp_path / "p.json", topic), connections, recovery=False)
    want = expected()
    c.start()
    try:
        c.wait(lambda: len(all_results(c)) >= len(want), 120, "every window")
        time.sleep(1.0)  # anything extra (a duplicate, a stray window) would show now
    finally:
        c.kill9()
    per_host = c.docs("output")
    got, dups = results([d for docs in per_host for d in docs])
    assert got == want
    assert dups == 0
    assert read_by_host(c) == [1, 1]


def test_two_hosts_kill9_one_then_restart_both_equals_uninterrupted(kafka_bootstrap: str, tmp_path: Path,
                                                                    connections: Path) -> None:
    topic = new_topic(kafka_bootstrap, PARTITIONS, prefix="hosts-b")
    c = Cluster(tmp_path, pipeline_file(tmp_path / "p.json", topic), connections, recovery=True)
    want = expected()
    produce(kafka_bootstrap, topic, bad_records() + records(0, 1600))
    c.start()
    try:
        c.wait(lambda: bool(all_results(c)), 90, "first window results")
        time.sleep(3.0)  # several checkpoints (-s 1)
        # One machine dies mid-stream: windows closing, offsets moving.
        kill_while_producing(kafka_bootstrap, topic, records, 1600, 2800, 40, c.hosts[1].kill9)
        c.kill9()  # the survivor cannot go on without its peer: both are restarted
        produce(kafka_bootstrap, topic, records(2800, N) + flush_records())
        c.start()
        c.wait(lambda: len(all_results(c)) >= len(want), 120, "every window after the restart")
        time.sleep(1.0)
    finally:
        c.kill9()
    per_host = c.docs("output")
    got, dups = results([d for docs in per_host for d in docs])
    assert got == want
    # The bad messages are at offset 0, read seconds before the crash: a restart that
    # resumed from the checkpoints (not from the beginning) writes them once.
    assert read_by_host(c) == [1, 1]
    assert dups < len(want)
    print(f"replayed window results after the crash: {dups}")
