"""Run the benchmark: ``.venv/bin/python -m bench.run --quick [--json out.json]``.

Every run of every engine is a fresh subprocess (``bench.worker``): its peak RSS is its
own (the process tree's resident memory, sampled every 20 ms, plus ``ru_maxrss``), and its
CPU time comes from ``wait4``. A run counts only if its result digest equals the plain
Python reference (d) on the same data; each figure is the median over ``--reps`` runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.digest import Digest
from bench.gen import GenSpec

ROOT = Path(__file__).resolve().parents[1]
VENVS = ROOT / ".cache" / "bench-venvs"

ENGINE_NAMES = {
    "a": "mqlflow compiled, 1 worker",
    "b": "mqlflow, 2 processes",
    "bx": "mqlflow, 2 processes, partitions named p0/p1",
    "c": "hand-written Bytewax",
    "d": "plain Python loop (reference)",
    "e": "PyFlink SQL TUMBLE/HOP",
    "f": "Pathway windowby",
    "gen": "generator only",
    "ka": "mqlflow, Kafka $source -> window -> $emit, 1 worker",
    "ks": "mqlflow Kafka $source alone",
    "kd": "plain confluent-kafka consume + json + windows (reference)",
    "kj": "plain confluent-kafka consume + json only",
    "ka0": "(ka) with the fast JSON decoder off (MQLFLOW_FAST_JSON=0)",
    "ks0": "(ks) with the fast JSON decoder off (MQLFLOW_FAST_JSON=0)",
    "kb": "hand-written Bytewax, bytewax.connectors.kafka",
    "kf": "PyFlink SQL, Kafka table connector + TUMBLE",
}
KAFKA_ENGINES = ("kd", "ka", "ka0", "kb", "kf", "ks", "ks0", "kj")  # workload K only; (kd) first: the reference
SOURCE_ONLY = frozenset({"gen", "ks", "ks0", "kj"})  # no results to check: they count messages
# Engine -> (python, number of cores it may use)
CORES = {"a": 1, "b": 2, "bx": 2, "c": 1, "d": 1, "e": 1, "f": 1, "gen": 1, "ka": 1, "ks": 1, "kd": 1, "kj": 1, "ka0": 1, "ks0": 1, "kb": 1, "kf": 1}
PEER_VENV = {"e": "flink", "f": "pathway", "kf": "flink"}
PEER_INSTALL = {
    "e": "python3.11 -m venv .cache/bench-venvs/flink && .cache/bench-venvs/flink/bin/pip install apache-flink (needs Java 17)",
    "f": "python3.11 -m venv .cache/bench-venvs/pathway && .cache/bench-venvs/pathway/bin/pip install pathway",
    "kf": "(e)'s virtualenv, and the jar bench/engines/flink_kafka.py names (JAR_URL) in .cache/bench-venvs/jars",
}


# Workloads an engine has no code for (D and E came after the peer engines were written).
NOT_WRITTEN = {"e": ("D", "E"), "f": ("D", "E"), "c": ("E",), "b": ("E",)}


def workload_spec(workload: str, spec: GenSpec) -> GenSpec:
    """The command line's generator settings with the workload's own on top (D's devices
    and rate): every engine of a workload gets the same documents."""
    from bench.workloads import WORKLOADS

    wl = WORKLOADS.get(workload)
    return dataclasses.replace(spec, **dict(wl.gen)) if wl is not None else spec


def python_for(engine: str) -> tuple[str | None, str | None]:
    """The interpreter for an engine, or why there is none."""
    venv = PEER_VENV.get(engine)
    if venv is None:
        return sys.executable, None
    py = VENVS / venv / "bin" / "python"
    if not py.exists():
        return None, f"no virtualenv {py.parent.parent}; install with: {PEER_INSTALL[engine]}"
    mod = {"e": "pyflink", "f": "pathway", "kf": "pyflink"}[engine]
    probe = subprocess.run([str(py), "-c", f"import {mod}"], capture_output=True, text=True, timeout=120)
    if probe.returncode != 0:
        return None, f"'import {mod}' fails: {probe.stderr.strip().splitlines()[-1] if probe.stderr.strip() else probe.returncode}"
    return str(py), None


# ---- one measured subprocess ------------------------------------------------------------


def _tree_rss_kb(pid: int) -> int:
    total = 0
    stack = [pid]
    while stack:
        p = stack.pop()
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    stack.extend(int(c) for c in f.read().split())
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue
    return total


def measure(engine: str, python: str, cfg: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run one worker; add ``peak_tree_rss_kb`` and the ``wait4`` CPU time."""
    env = dict(os.environ, PYTHONHASHSEED="0", PATHWAY_THREADS="1", PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [python, "-m", "bench.worker", json.dumps(cfg)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _tree_rss_kb(proc.pid))
            stop.wait(0.02)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    out: list[str] = []
    err: list[str] = []
    readers = [
        threading.Thread(target=lambda: out.append(proc.stdout.read()), daemon=True),  # type: ignore[union-attr]
        threading.Thread(target=lambda: err.append(proc.stderr.read()), daemon=True),  # type: ignore[union-attr]
    ]
    for r in readers:
        r.start()
    deadline = time.monotonic() + timeout
    while True:
        pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            proc.kill()
            pid, status, ru = os.wait4(proc.pid, 0)
            stop.set()
            raise RuntimeError(f"timed out after {timeout:.0f} s")
        time.sleep(0.01)
    stop.set()
    th.join()
    for r in readers:
        r.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = (err[0] if err else "").strip().splitlines()[-1:]
        raise RuntimeError(f"exit {proc.returncode}: {' | '.join(tail)[-400:]}")
    res = json.loads((out[0] if out else "").strip().splitlines()[-1])
    res["peak_tree_rss_kb"] = peak[0]
    res["wait4_cpu_s"] = ru.ru_utime + ru.ru_stime
    return res


# ---- a cell: one engine x workload x data, several runs ----------------------------------


@dataclass
class Cell:
    engine: str
    workload: str
    spec: dict[str, Any]
    mode: str
    status: str = "ok"
    runs: list[dict[str, Any]] = field(default_factory=list)

    def med(self, key: str) -> float | None:
        vals = [r[key] for r in self.runs if r.get(key) is not None]
        return statistics.median(vals) if vals else None

    def summary(self) -> dict[str, Any]:
        n = self.spec["n"]
        el, cpu = self.med("elapsed_s"), self.med("cpu_s")
        return {
            "engine": self.engine,
            "engine_name": ENGINE_NAMES[self.engine],
            "workload": self.workload,
            "n": n,
            "groups": self.spec["groups"],
            "devices": self.spec.get("devices", 64),
            "mode": self.mode,
            "status": self.status,
            "runs": len(self.runs),
            "elapsed_s": el,
            "events_per_s": n / el if el else None,
            "events_per_cpu_s": n / cpu if cpu else None,
            "cores": CORES[self.engine],
            "first_output_ms": None if self.med("first_output_s") is None else 1000 * self.med("first_output_s"),  # type: ignore[operator]
            "peak_rss_mb": None if self.med("peak_tree_rss_kb") is None else self.med("peak_tree_rss_kb") / 1024,  # type: ignore[operator]
            "ru_maxrss_mb": None if self.med("ru_maxrss_kb") is None else self.med("ru_maxrss_kb") / 1024,  # type: ignore[operator]
            "loaded_rss_mb": None if self.med("rss_loaded_kb") is None else self.med("rss_loaded_kb") / 1024,  # type: ignore[operator]
            "result_rows": self.runs[0]["digest"]["rows"] if self.runs else None,
            "all_runs": self.runs,
        }


def run_cell(
    engine: str,
    workload: str,
    spec: GenSpec,
    mode: str,
    reps: int,
    ref: dict[tuple[str, str], Digest],
    timeout: float,
    log: Any,
    extra: dict[str, Any] | None = None,
) -> Cell:
    cell = Cell(engine, workload, spec.to_dict(), mode)
    python, why = python_for(engine)
    if python is None:
        cell.status = f"not run: {why}"
        log(f"  {engine} {workload}: {cell.status}")
        return cell
    key = (workload, json.dumps(spec.to_dict(), sort_keys=True))
    cfg = {"engine": engine, "workload": workload, "spec": spec.to_dict(), "mode": mode, **(extra or {})}
    if engine in KAFKA_ENGINES:
        want = ref.get(("A", key[1]))
        if want is None:
            cell.status = "not run: no reference result for the same data (run (d) on workload A first)"
            return cell
        cfg["expect_rows"] = want.rows
    for i in range(reps):
        try:
            res = measure(engine, python, cfg, timeout)
        except Exception as exc:
            cell.status = f"failed: {exc}"
            log(f"  {engine} {workload} run {i + 1}: {cell.status}")
            return cell
        got = Digest.from_dict(res["digest"])
        if engine in ("d",) and key not in ref:
            ref[key] = got
        if engine not in SOURCE_ONLY:
            # Workload K's windows are workload A's on the same documents.
            want = ref.get(("A", key[1]) if engine in KAFKA_ENGINES else key)
            problem = "no reference result" if want is None else got.diff(want)
            if problem is not None:
                cell.status = f"results differ from (d): {problem}"
                log(f"  {engine} {workload}: {cell.status}")
                return cell
        cell.runs.append(res)
        log(f"  {engine} {workload} n={spec.n} k={spec.groups} run {i + 1}: {res['elapsed_s']:.3f} s ({spec.n / res['elapsed_s']:,.0f} ev/s)")
    return cell


# ---- the whole benchmark ----------------------------------------------------------------


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform(), "cores": os.cpu_count()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
        info["mem_gb"] = round(int(mem) / 1024 / 1024, 1)
    except OSError:
        pass
    return info


def loadavg() -> list[float]:
    return list(os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small N, 2 runs each, no growth table (< 1 minute)")
    ap.add_argument("--json", type=Path, help="write every figure and every run here")
    ap.add_argument("--engines", default="a,b,bx,c,d,e,f", help="comma list of a,b,bx,c,d,e,f")
    ap.add_argument("--workloads", default="A,B,C")
    ap.add_argument("--n", type=int, help="events in the main table (default 1e6, --quick 20000)")
    ap.add_argument("--groups", type=int, default=10, help="distinct group_id values (the seed has 10)")
    ap.add_argument("--ooo", type=float, default=0.05, help="fraction of events out of order")
    ap.add_argument("--reps", type=int, help="runs per cell, median reported (default 5, --quick 2)")
    ap.add_argument("--peer-reps", type=int, help="runs per cell for (e) and (f) (default 3, --quick 1)")
    ap.add_argument("--growth", action=argparse.BooleanOptionalAction, default=None, help="growth table (default: on unless --quick)")
    ap.add_argument("--max-growth-n", type=int, default=10_000_000, help="largest N in the growth table")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per run")
    args = ap.parse_args(argv)

    quick = args.quick
    n = args.n or (20_000 if quick else 1_000_000)
    reps = args.reps or (2 if quick else 5)
    peer_reps = args.peer_reps or (1 if quick else 3)
    growth = (not quick) if args.growth is None else args.growth
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731

    started = time.time()
    report: dict[str, Any] = {"machine": machine(), "load_before": loadavg(), "quick": quick, "main": [], "growth": []}
    ref: dict[tuple[str, str], Digest] = {}
    spec = GenSpec(n=n, groups=args.groups, ooo=args.ooo)
    log(f"main table: n={n} groups={args.groups} ooo={args.ooo} reps={reps}")
    for wl in workloads:
        if wl == "K":
            from bench.kafka_topic import ensure_topic

            # (d) on workload A gives the reference windows for the same documents.
            if ("A", json.dumps(spec.to_dict(), sort_keys=True)) not in ref:
                run_cell("d", "A", spec, "mem", 1, ref, args.timeout, log)
            try:
                topic = ensure_topic(spec, log)
            except Exception as exc:
                log(f"  workload K: not run: {exc} (start Kafka with: scripts/services.sh up kafka)")
                continue
            for eng in [e for e in KAFKA_ENGINES if e in engines]:
                cell = run_cell(eng, "K", spec, "kafka", reps, ref, args.timeout, log, {"topic": topic})
                report["main"].append(cell.summary())
            continue
        order = ["d", *[e for e in engines if e != "d" and e not in KAFKA_ENGINES]]  # the reference first
        wspec = workload_spec(wl, spec)
        for eng in order:
            if eng == "bx" and (quick or wl != "A"):
                continue
            if quick and wl != "A" and eng in ("b", "e", "f"):
                continue  # --quick keeps to one minute: cluster and JVM start-ups only once
            r = peer_reps if eng in PEER_VENV else reps
            if wl in NOT_WRITTEN.get(eng, ()):
                cell = Cell(eng, wl, wspec.to_dict(), "mem", status=f"not run: workload {wl} is not written for ({eng})")
                report["main"].append(cell.summary())
                continue
            cell = run_cell(eng, wl, wspec, "mem", r, ref, args.timeout, log)
            if eng == "d" and "d" not in engines:
                continue
            report["main"].append(cell.summary())
    if growth:
        gspecs = [GenSpec(n=x, groups=10, ooo=args.ooo) for x in (100_000, 1_000_000, 10_000_000) if x <= args.max_growth_n]
        gspecs += [GenSpec(n=1_000_000, groups=k, ooo=args.ooo) for k in (10_000, 1_000_000)]
        log("growth table (workload A, documents generated while the engine runs)")
        for gs in gspecs:
            for eng in ["d", "gen", *[e for e in ("a", "c") if e in engines]]:
                r = 1 if gs.n >= 10_000_000 else min(reps, 3)
                cell = run_cell(eng, "A", gs, "stream", r, ref, args.timeout, log)
                report["growth"].append(cell.summary())
    report["load_after"] = loadavg()
    report["wall_s"] = time.time() - started
    text = render(report)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str))
        log(f"wrote {args.json}")
    return 0


# ---- rendering --------------------------------------------------------------------------


def _kd(c: dict[str, Any]) -> str:
    """Groups, and devices where a workload groups by device (D)."""
    return f"devices={c['devices']:,}" if c["workload"] == "D" else f"k={c['groups']:,}"


def _f(x: float | None, fmt: str = "{:,.0f}") -> str:
    return "-" if x is None else fmt.format(x)


def render(report: dict[str, Any]) -> str:
    lines = []
    m = report["machine"]
    lines.append(
        f"machine: {m.get('cpu', '?')}, {m.get('cores')} cores, {m.get('mem_gb', '?')} GB, Python {m['python']}; "
        f"load average before {report['load_before'][0]:.2f}, after {report['load_after'][0]:.2f}"
    )
    main = report["main"]
    by = {(c["engine"], c["workload"]): c for c in main}
    lines.append("")
    lines.append("| workload | engine | events/s | events/CPU-s | vs (c) | first output ms | peak RSS MB | status |")
    lines.append("|---|---|---:|---:|---:|---:|---:|---|")
    for c in main:
        base = by.get(("c", c["workload"]))
        ratio = None
        if c["events_per_s"] and base and base.get("events_per_s"):
            ratio = c["events_per_s"] / base["events_per_s"]
        lines.append(
            f"| {c['workload']} (n={c['n']:,}, {_kd(c)}) | ({c['engine']}) {c['engine_name']} | {_f(c['events_per_s'])} | "
            f"{_f(c['events_per_cpu_s'])} | {_f(ratio, '{:.2f}x')} | {_f(c['first_output_ms'], '{:,.1f}')} | "
            f"{_f(c['peak_rss_mb'], '{:,.0f}')} | {c['status']} |"
        )
    a, b = by.get(("a", "A")), by.get(("b", "A"))
    if a and b and a.get("events_per_s") and b.get("events_per_s"):
        lines.append("")
        lines.append(f"(b)/(a) on workload A: {b['events_per_s'] / a['events_per_s']:.2f}x")
    if report["growth"]:
        lines.append("")
        lines.append("growth (workload A, generated while running; events/s include generation):")
        lines.append("")
        lines.append("| n | k | engine | events/s | peak RSS MB | result rows | status |")
        lines.append("|---:|---:|---|---:|---:|---:|---|")
        for c in report["growth"]:
            lines.append(
                f"| {c['n']:,} | {c['groups']:,} | ({c['engine']}) {c['engine_name']} | {_f(c['events_per_s'])} | "
                f"{_f(c['peak_rss_mb'], '{:,.0f}')} | {_f(c['result_rows'])} | {c['status']} |"
            )
    lines.append("")
    lines.append(f"total wall time {report['wall_s']:.0f} s")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
