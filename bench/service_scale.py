"""A processor on 1 and on 2 Bytewax processes, through ``mqlflow serve``.

``.venv/bin/python -m bench.service_scale --events 250000 --reps 3``

Starts a real service the way the tests do (``tests/service/svc_helpers.start_service``:
its own state dir, a free port, the tests' connection file, ``--snapshot-interval 5``) and
creates the seed's window over ``sample_stream_solar`` on a virtual clock (4 partitions
of ``--events`` each, so it runs at full speed and ends by itself), emitting its results
to a Kafka topic of its own per run (``perf_scale_out_<run>``). Each run starts it with
``workers: 1`` or ``workers: 2``.

What is timed, per run:

- ``total``: from ``startStreamProcessor`` until ``stats()`` says ``stopped``, what a user
  of a finite run sees; start-up (launching the processes, imports, compiling the
  pipeline, the cluster connecting) and shut-down are inside it.
- ``fixed``: the same for the same processor with ``maxEvents: 0`` (no event at all),
  run just before: the start-up and shut-down cost on its own.
- ``stream``: ``total - fixed``, the time the events themselves take; ``events / stream``
  is the rate a long-running processor sustains.
- ``last out``: from ``startStreamProcessor`` to the Kafka timestamp of the run's last
  result (``CreateTime``, set by the producer when the sink writes it).
- ``cpu``: CPU seconds of the service and every process it started for the run (its
  ``cutime``/``cstime`` once it has reaped them), and the split between the children
  (sampled from ``/proc`` every 50 ms, so a child's last few ms may be missing). Events per
  CPU-second and the split tell whether a second process adds work or only spreads it,
  which wall-clock figures on a loaded machine cannot.

Both process counts must count every event and give the same number of results (exact
equality of the results is ``tests/service/test_svc_cluster.py``'s).

``--py-spy DIR`` records each full run with py-spy (``pip install py-spy``; the service
and its children, samples holding the GIL, raw collapsed stacks in ``DIR/<run>.txt``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "service"))

from svc_helpers import Service, start_service  # noqa: E402

T0_MS = 1_700_000_000_000
TICK = os.sysconf("SC_CLK_TCK")


def pipeline(events: int, topic: str) -> list[dict[str, Any]]:
    cfg = {"seed": 3, "rate": 10000, "startTime": T0_MS, "faultRate": 0.0, "partitions": 4, "maxEvents": events}
    return [
        {"$source": {"connectionName": "sample_stream_solar", "config": cfg}},
        {"$tumblingWindow": {"interval": {"size": 3, "unit": "second"}, "pipeline": [{"$group": {
            "_id": "$group_id", "minTemp": {"$min": "$obs.temp"}, "maxTemp": {"$max": "$obs.temp"},
            "avgTemp": {"$avg": "$obs.temp"}, "stdevPTemp": {"$stdDevPop": "$obs.temp"}}}]}},
        {"$emit": {"connectionName": "out", "topic": topic}},
    ]


def proc_cpu(pid: int) -> tuple[float, float]:
    """(own, reaped children's) CPU seconds of ``pid`` from ``/proc/<pid>/stat``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return (utime + stime) / TICK, (cutime + cstime) / TICK


@dataclass
class Result:
    workers: int
    events: int
    total: float
    last_out: float | None
    service_cpu: float
    children_cpu: float
    per_child: list[float] = field(default_factory=list)
    outputs: int = 0

    @property
    def cpu(self) -> float:
        return self.service_cpu + self.children_cpu


def child_pids(svc: Service, pid_id: str) -> list[int]:
    try:
        return [int(x) for x in (svc.state_dir / "processors" / pid_id / "child.pid").read_text().split()]
    except (OSError, ValueError):
        return []


def last_result_time(topic: str, want: int) -> float | None:
    """``time.time()`` of the last result's Kafka CreateTime, once ``want`` are there."""
    from confluent_kafka import Consumer, TopicPartition

    from bench.kafka_topic import bootstrap

    c = Consumer({"bootstrap.servers": bootstrap(), "group.id": f"scale-{time.monotonic_ns()}",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    try:
        parts = c.list_topics(topic, timeout=30).topics[topic].partitions
        c.assign([TopicPartition(topic, p, 0) for p in parts])
        got, last = 0, 0
        deadline = time.monotonic() + 60
        while got < want and time.monotonic() < deadline:
            for m in c.consume(1000, timeout=1.0):
                if m.error() is None:
                    got += 1
                    last = max(last, m.timestamp()[1])
        return last / 1000 if got >= want else None
    finally:
        c.close()


def run_once(svc: Service, client: Any, name: str, events: int, workers: int, spy: Path | None = None) -> Result:
    topic = f"perf_scale_out_{name}_{time.monotonic_ns()}"
    definition = pipeline(events, topic)
    want = events * definition[0]["$source"]["config"]["partitions"]
    client.admin.command({"createStreamProcessor": name, "pipeline": definition})
    pid_id = client.admin.command({"getStreamProcessorStats": name})["stats"]["processorId"]
    own0, reaped0 = proc_cpu(svc.proc.pid)
    seen: dict[int, float] = {}
    wall0 = time.time()
    t0 = time.perf_counter()
    spy_proc = None
    if spy is not None:
        spy.mkdir(parents=True, exist_ok=True)
        spy_proc = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--subprocesses", "--format", "raw",
                                     "--gil", "--function", "--rate", "200", "-o", str(spy / f"{name}.txt"),
                                     "-p", str(svc.proc.pid)], stdout=subprocess.DEVNULL, stderr=(spy / f"{name}.log").open("w"))
        time.sleep(0.5)
    client.admin.command({"startStreamProcessor": name, "options": {"workers": workers}})
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        for pid in child_pids(svc, pid_id):
            with contextlib.suppress(OSError, ValueError, IndexError):  # it ended meanwhile
                seen[pid] = sum(proc_cpu(pid))
        st = client.admin.command({"getStreamProcessorStats": name})["stats"]
        if st["status"] != "running":
            break
        time.sleep(0.05)
    total = time.perf_counter() - t0
    own1, reaped1 = proc_cpu(svc.proc.pid)
    if spy_proc is not None:
        spy_proc.send_signal(signal.SIGINT)
        spy_proc.wait(60)
    if st["status"] != "stopped" or st["inputMessageCount"] != want:
        raise RuntimeError(f"{name}: {st}")
    outputs = int(st["outputMessageCount"])
    last = last_result_time(topic, outputs) if outputs else None
    client.admin.command({"dropStreamProcessor": name})
    return Result(workers, want, total, None if last is None else last - wall0,
                  own1 - own0, reaped1 - reaped0, list(seen.values()), outputs)


def show(r: Result, label: str) -> str:
    split = "/".join(f"{c:.1f}" for c in r.per_child)
    lo = "-" if r.last_out is None else f"{r.last_out:.2f}"
    return (f"{label} workers {r.workers}: total {r.total:.2f} s, last out {lo} s, cpu service {r.service_cpu:.2f} s"
            f" + children {r.children_cpu:.2f} s (split {split})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=250_000, help="events per partition (4 partitions)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--workers", default="1,2", help="process counts to compare")
    ap.add_argument("--py-spy", type=Path, help="record each full run with py-spy (raw stacks, service and children) here")
    args = ap.parse_args()
    counts = [int(w) for w in args.workers.split(",")]
    # A run in the background ignores SIGINT; SIGTERM still stops the service it started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with tempfile.TemporaryDirectory(prefix="perf-scale-") as d:
        svc = start_service(Path(d), "--snapshot-interval", "5")
        try:
            client = svc.client()
            runs: dict[int, list[tuple[Result, Result]]] = {w: [] for w in counts}
            for rep in range(args.reps):
                for w in counts:
                    empty = run_once(svc, client, f"scale_{w}_{rep}_empty", 0, w)
                    full = run_once(svc, client, f"scale_{w}_{rep}", args.events, w, args.py_spy)
                    runs[w].append((empty, full))
                    print(show(empty, "  fixed"), file=sys.stderr)
                    print(show(full, f"run {rep + 1}"), file=sys.stderr)
            if len({runs[w][0][1].outputs for w in counts}) != 1:
                raise RuntimeError(f"result counts differ: { {w: runs[w][0][1].outputs for w in counts} }")
            n = 4 * args.events
            print("| processes | events | total s | fixed s | stream s | events/s (total) | events/s (stream)"
                  " | stream CPU s | events per CPU-s | CPU split |")
            print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
            med: dict[int, tuple[float, float, float]] = {}
            for w in counts:
                total = statistics.median(f.total for _, f in runs[w])
                fixed = statistics.median(e.total for e, _ in runs[w])
                stream = statistics.median(f.total - e.total for e, f in runs[w])
                cpu = statistics.median(f.cpu - e.cpu for e, f in runs[w])
                split = [sum(x) for x in zip(*(f.per_child for _, f in runs[w]), strict=True)]
                share = "/".join(f"{c / sum(split):.2f}" for c in split)
                med[w] = (total, stream, cpu)
                print(f"| {w} | {n:,} | {total:.2f} | {fixed:.2f} | {stream:.2f} | {n / total:,.0f} | {n / stream:,.0f}"
                      f" | {cpu:.2f} | {n / cpu:,.0f} | {share} |")
            base = counts[0]
            for w in counts[1:]:
                (t1, s1, c1), (tw, sw, cw) = med[base], med[w]
                print(f"\n{w} / {base}: total {t1 / tw:.2f}x, stream {s1 / sw:.2f}x, CPU per event {cw / c1:.2f}x")
            client.close()
        finally:
            svc.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
