"""A processor on 1 and on 2 Bytewax processes, through ``mqlflow serve``.

``.venv/bin/python -m bench.service_scale --events 250000 --reps 2``

Starts a real service (its own state dir, a free port) and creates the seed's window over
``sample_stream_solar`` on a virtual clock (4 partitions of ``--events`` each, so it runs
at full speed and ends by itself), emitting its results to the Kafka topic
``perf_scale_out``. Each run starts it with ``workers: 1`` or ``workers: 2`` and times
from ``startStreamProcessor`` until ``stats()`` says ``stopped``; start-up (launching the
processes, the cluster connecting) is inside the clock. Both must count every event and
the same number of results (exact equality is ``tests/service/test_svc_cluster.py``'s).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pymongo

ROOT = Path(__file__).resolve().parents[1]
T0_MS = 1_700_000_000_000


def pipeline(events: int) -> list[dict[str, Any]]:
    cfg = {"seed": 3, "rate": 10000, "startTime": T0_MS, "faultRate": 0.0, "partitions": 4, "maxEvents": events}
    return [
        {"$source": {"connectionName": "sample_stream_solar", "config": cfg}},
        {"$tumblingWindow": {"interval": {"size": 3, "unit": "second"}, "pipeline": [{"$group": {
            "_id": "$group_id", "minTemp": {"$min": "$obs.temp"}, "maxTemp": {"$max": "$obs.temp"},
            "avgTemp": {"$avg": "$obs.temp"}, "stdevPTemp": {"$stdDevPop": "$obs.temp"}}}]}},
        {"$emit": {"connectionName": "out", "topic": "perf_scale_out"}},
    ]


def start(tmp: Path) -> tuple[subprocess.Popen[str], int]:
    from bench.kafka_topic import bootstrap

    conns = tmp / "connections.toml"
    conns.write_text(f'[connections.out]\ntype = "kafka"\nbootstrap_servers = "{bootstrap()}"\n')
    args = [sys.executable, "-m", "service", "serve", "--port", "0", "--state-dir", str(tmp / "state"),
            "--connections", str(conns), "--snapshot-interval", "5"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=(tmp / "service.log").open("w"), text=True, env=env, cwd=tmp)
    line = proc.stdout.readline() if proc.stdout else ""
    if not line.startswith("mqlflow listening on "):
        proc.kill()
        raise RuntimeError(f"service did not start: {line!r}")
    return proc, int(line.rsplit(":", 1)[1])


def run_once(client: Any, name: str, events: int, workers: int) -> tuple[float, dict[str, Any]]:
    client.admin.command({"createStreamProcessor": name, "pipeline": pipeline(events)})
    t0 = time.perf_counter()
    client.admin.command({"startStreamProcessor": name, "options": {"workers": workers}})
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        st = client.admin.command({"getStreamProcessorStats": name})["stats"]
        if st["status"] != "running":
            break
        time.sleep(0.05)
    elapsed = time.perf_counter() - t0
    if st["status"] != "stopped" or st["inputMessageCount"] != 4 * events:
        raise RuntimeError(f"{name}: {st}")
    return elapsed, st


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--events", type=int, default=250_000, help="events per partition (4 partitions)")
    ap.add_argument("--reps", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="perf-scale-") as d:
        proc, port = start(Path(d))
        try:
            client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(f"mongodb://127.0.0.1:{port}", serverSelectionTimeoutMS=5000)
            times: dict[int, list[float]] = {1: [], 2: []}
            outputs: dict[int, int] = {}
            for rep in range(args.reps):
                for workers in (1, 2):
                    el, st = run_once(client, f"scale_{workers}_{rep}", args.events, workers)
                    times[workers].append(el)
                    outputs[workers] = st["outputMessageCount"]
                    print(f"workers {workers} run {rep + 1}: {el:.2f} s ({4 * args.events / el:,.0f} events/s)", file=sys.stderr)
            if outputs[1] != outputs[2]:
                raise RuntimeError(f"result counts differ: {outputs}")
            m1, m2 = statistics.median(times[1]), statistics.median(times[2])
            n = 4 * args.events
            print(f"| processes | events | median s | events/s |\n|---:|---:|---:|---:|\n"
                  f"| 1 | {n:,} | {m1:.2f} | {n / m1:,.0f} |\n| 2 | {n:,} | {m2:.2f} | {n / m2:,.0f} |\n\n2 / 1: {m1 / m2:.2f}x")
        finally:
            proc.terminate()
            proc.wait(30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
