"""One measured run of one engine, in its own process (so peak RSS is its own).

``python -m bench.worker '{"engine": "a", "workload": "A", "spec": {...}, "mode": "mem"}'``
prints one JSON line: elapsed seconds, time to first output, CPU seconds, RSS and the
result digest. ``mode`` is ``mem`` (documents generated before the clock starts, and
frozen out of the garbage collector's way) or ``stream`` (generated while the engine
runs, so memory shows only what the engine keeps).

Stdlib-only at import time: the PyFlink and Pathway engines run this from their own
virtualenvs.
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.digest import Digest, offpath_row, stateless_row, window_row
from bench.gen import GenSpec, iter_batches, materialize
from bench.workloads import WORKLOADS, Workload

ENGINE_MODULES = {
    "a": "bench.engines.mqlflow_engine",
    "c": "bench.engines.bytewax_hand",
    "d": "bench.engines.plain",
    "e": "bench.engines.flink_engine",
    "f": "bench.engines.pathway_engine",
    "gen": "bench.engines.gen_only",
}
BATCH = 1024


def rss_now_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def digest_of(wl: Workload, rows: list[Any]) -> Digest:
    d = Digest()
    if wl.shape == "offpath":
        for r in rows:
            offpath_row(d, *r)
    elif wl.windowed:
        for r in rows:
            window_row(d, *r)
    else:
        for r in rows:
            stateless_row(d, *r)
    return d


def load(spec: GenSpec, mode: str, partition: int = 0) -> Iterator[list[dict[str, Any]]]:
    if mode == "stream":
        return iter_batches(spec, partition, BATCH)
    q = deque(materialize(spec, partition, BATCH))
    gc.collect()
    gc.freeze()  # the loaded documents are not the engine's garbage to scan

    def drain() -> Iterator[list[dict[str, Any]]]:
        while q:
            yield q.popleft()  # the engine may keep a batch, the loader does not

    return drain()


def run_one(cfg: dict[str, Any]) -> dict[str, Any]:
    wl = WORKLOADS[cfg["workload"]]
    spec = GenSpec.from_dict(cfg["spec"])
    mod = importlib.import_module(ENGINE_MODULES[cfg["engine"]])
    batches = load(spec, cfg.get("mode", "mem"))
    prepared = mod.prepare(wl, batches) if hasattr(mod, "prepare") else batches
    rss_loaded = rss_now_kb()
    cpu0 = _cpu()
    t0 = time.perf_counter()
    out, first = mod.run(wl, prepared)
    t1 = time.perf_counter()
    cpu1 = _cpu()
    rows = mod.to_rows(wl, out)
    return {
        "elapsed_s": t1 - t0,
        "first_output_s": None if first is None else first - t0,
        "cpu_s": cpu1 - cpu0,
        "rss_loaded_kb": rss_loaded,
        "digest": digest_of(wl, rows).to_dict(),
        "late": getattr(getattr(mod, "Stats", None), "late", 0),
    }


def _cpu() -> float:
    """CPU seconds of this process, its reaped children and its live descendants (the
    JVM that PyFlink starts is one)."""
    s = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime
    tick = os.sysconf("SC_CLK_TCK")
    stack = _children(os.getpid())
    while stack:
        pid = stack.pop()
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            stack.extend(_children(pid))
        except (OSError, ValueError, IndexError):
            continue
    return total


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out.extend(int(c) for c in f.read().split())
    except OSError:
        pass
    return out


# ---- (b): mqlflow on a 2-process Bytewax cluster on localhost ---------------------------


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def run_cluster(cfg: dict[str, Any]) -> dict[str, Any]:
    """Start ``procs`` processes; each loads its own source partition, waits for the
    others, then runs the same compiled flow with ``cluster_main``."""
    procs = int(cfg.get("procs", 2))
    spec = dict(cfg["spec"], partitions=procs)
    addrs = [f"127.0.0.1:{p}" for p in _free_ports(procs)]
    with tempfile.TemporaryDirectory(prefix="mqlbench-") as tmp:
        children = []
        for i in range(procs):
            sub = dict(cfg, spec=spec, engine="b-proc", proc=i, addresses=addrs, ready_dir=tmp)
            children.append(
                subprocess.Popen([sys.executable, "-m", "bench.worker", json.dumps(sub)], stdout=subprocess.PIPE, text=True)
            )
        results = []
        for ch in children:
            stdout, _ = ch.communicate()
            if ch.returncode != 0:
                raise RuntimeError(f"cluster process exited with {ch.returncode}")
            results.append(json.loads(stdout.strip().splitlines()[-1]))
    if os.environ.get("MQLFLOW_BENCH_DEBUG"):
        for r in results:
            print(f"proc start {r['start']:.3f} end {r['end']:.3f} cpu {r['cpu_s']:.3f}", file=sys.stderr)
    start = min(r["start"] for r in results)  # the first poll of either process
    end = max(r["end"] for r in results)
    firsts = [r["first"] for r in results if r["first"] is not None]
    digest = Digest()
    for r in results:
        digest = digest.merge(Digest.from_dict(r["digest"]))
    return {
        "elapsed_s": end - start,
        "first_output_s": (min(firsts) - start) if firsts else None,
        "cpu_s": sum(r["cpu_s"] for r in results),
        "rss_loaded_kb": sum(r["rss_loaded_kb"] for r in results),
        "digest": digest.to_dict(),
        "late": 0,
    }


def run_cluster_proc(cfg: dict[str, Any]) -> dict[str, Any]:
    from bytewax.testing import cluster_main

    from bench.engines import mqlflow_engine
    from bench.engines.bytewax_io import Collector

    wl = WORKLOADS[cfg["workload"]]
    spec = GenSpec.from_dict(cfg["spec"])
    me, procs = int(cfg["proc"]), int(spec.partitions)
    # Bytewax routes each key of mqlflow's "ingest" step to hash(key) % workers: with the
    # sample source's names ("solar-0", "solar-1") each partition is ingested where it is
    # read; with "p0", "p1" both go to process 1 and p0's documents cross processes.
    parts = [f"{cfg.get('part_prefix', 'solar-')}{i}" for i in range(procs)]
    mine = load(spec, cfg.get("mode", "mem"), me)

    polled: list[float] = []

    def clocked() -> Iterator[list[dict[str, Any]]]:
        # The clock starts at the first poll of the source: cluster_main connects the
        # processes first, and timely retries a refused connection after a fixed 1 s
        # sleep, which is start-up, not throughput.
        polled.append(time.time())
        yield from mine

    def provider(i: int) -> Iterator[list[dict[str, Any]]]:
        # Bytewax gives partition i of a fixed source to process i (checked here).
        if i != me:
            raise RuntimeError(f"process {me} was given partition {parts[i]}; the benchmark loads only {parts[me]}")
        return clocked()

    col, dlq = Collector(), Collector()
    flow = mqlflow_engine.make_flow(wl, parts, provider, col, dlq)
    rss_loaded = rss_now_kb()
    ready = Path(cfg["ready_dir"])
    (ready / f"ready-{me}").write_text("")
    deadline = time.time() + 600
    while len(list(ready.glob("ready-*"))) < procs:
        if time.time() > deadline:
            raise RuntimeError("cluster barrier timed out")
        time.sleep(0.001)
    # perf_counter is per process; wall time is shared by both processes.
    start, perf_start, cpu0 = time.time(), time.perf_counter(), _cpu()
    cluster_main(flow, cfg["addresses"], me)
    end, cpu1 = time.time(), _cpu()
    if polled:
        perf_start += polled[0] - start
        start = polled[0]
    if dlq.items:
        raise RuntimeError(f"mqlflow sent {len(dlq.items)} documents to the DLQ")
    first = None if col.first is None else start + (col.first - perf_start)
    rows = mqlflow_engine.to_rows(wl, col.items)
    return {
        "start": start,
        "end": end,
        "cpu_s": cpu1 - cpu0,
        "first": first,
        "rss_loaded_kb": rss_loaded,
        "digest": digest_of(wl, rows).to_dict(),
    }


# ---- workload K: from a real Kafka topic ---------------------------------------------------

KAFKA_ENGINES = frozenset({"ka", "ks", "kd", "kj", "ka0", "ks0", "kb", "kf"})


def run_kafka(cfg: dict[str, Any]) -> dict[str, Any]:
    """Workload K on the topic the parent filled (``cfg["topic"]``); (ks) and (kj) read
    only, so their digest is empty and they check the message count themselves."""
    from bench.engines import kafka_engines as k

    wl = WORKLOADS["K"]
    spec = GenSpec.from_dict(cfg["spec"])
    engine, topic = cfg["engine"], cfg["topic"]
    if engine.endswith("0"):  # (ka0), (ks0): the reference JSON decoder only
        import sources.kafka

        sources.kafka.FAST_JSON = False
        engine = engine[:-1]
    prepared: Any = None
    if engine == "kf":  # the JVM and table environment start before the clock, as in (e)
        from bench.engines import flink_engine, flink_kafka

        prepared = flink_kafka.prepare(wl, topic)
    cpu0 = _cpu()
    rows: list[Any] = []
    first: float | None = None
    if engine == "kf":
        out, elapsed, first = flink_kafka.run(wl, prepared)
        rows = flink_engine.to_rows(wl, out)
    elif engine == "ka":
        from bench.engines import mqlflow_engine

        docs, elapsed, first = k.run_ka(wl, topic, int(cfg["expect_rows"]))
        rows = mqlflow_engine.to_rows(wl, docs)
    elif engine == "kd":
        rows, elapsed, first = k.run_kd(wl, topic, spec)
    elif engine == "kb":
        rows, elapsed, first = k.run_kb(wl, topic)
    elif engine == "ks":
        elapsed = k.run_ks(topic, spec)
    else:
        elapsed = k.run_kj(topic, spec)
    cpu1 = _cpu()
    return {
        "elapsed_s": elapsed,
        "first_output_s": first,
        "cpu_s": cpu1 - cpu0,
        "rss_loaded_kb": 0,
        "digest": digest_of(wl, rows).to_dict(),
        "late": 0,
    }


def main() -> None:
    cfg = json.loads(sys.argv[1])
    engine = cfg["engine"]
    if engine in KAFKA_ENGINES:
        res = run_kafka(cfg)
    elif engine == "b":
        res = run_cluster(cfg)
    elif engine == "bx":
        res = run_cluster(dict(cfg, part_prefix="p"))
    elif engine == "b-proc":
        res = run_cluster_proc(cfg)
    else:
        res = run_one(cfg)
    res["ru_maxrss_kb"] = max(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    )
    res["pid"] = os.getpid()
    print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
