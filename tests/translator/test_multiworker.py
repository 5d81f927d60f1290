"""Several Bytewax workers, threads or processes, give the same results as one
(windows exchange per-batch partials keyed by group bucket, see docs/windows.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from bson import json_util
from bytewax.testing import TestingSink, cluster_main

from translator.compile import build_flow, compile_pipeline
from translator.options import ProcessorOptions
from translator.testing import run_pipeline

ROOT = Path(__file__).resolve().parents[2]


def seed_pipeline(partitions: int) -> list[dict[str, Any]]:
    from flows.solar_demo import pipeline

    return pipeline(
        {"seed": 3, "rate": 40, "maxEvents": 2000, "startTime": 1_700_000_000_000, "partitions": partitions, "batchSize": 64},
        with_merge=False,
    )


def canon(docs: list[dict[str, Any]]) -> list[str]:
    out = []
    for d in docs:
        d = dict(d)
        for k in ("avgTemp", "stdevPTemp"):
            d[k] = round(d[k], 9)
        out.append(json_util.dumps(d, sort_keys=True))
    return sorted(out)


def run_threads(pipeline: list[dict[str, Any]], workers: int) -> list[dict[str, Any]]:
    opts = ProcessorOptions(name="mw")
    p = compile_pipeline(pipeline, options=opts)
    out: list[list[dict[str, Any]]] = []
    dlq: list[list[dict[str, Any]]] = []
    flow = build_flow(p, opts, output_sink=TestingSink(out), dlq_sink=TestingSink(dlq))
    cluster_main(flow, [], 0, worker_count_per_proc=workers)
    assert dlq == []
    return [d for b in out for d in b]


def test_two_worker_threads_equal_one_worker() -> None:
    pipeline = seed_pipeline(partitions=3)
    one = run_pipeline(pipeline).output
    assert len(one) > 100
    assert canon(run_threads(pipeline, 2)) == canon(one)


def test_two_processes_equal_one_worker(tmp_path: Path) -> None:
    pipeline = seed_pipeline(partitions=2)
    path = tmp_path / "p.json"
    path.write_text(json_util.dumps(pipeline))
    out_dir = tmp_path / "out"
    cmd = [sys.executable, "-m", "bytewax.testing", f"flows.pipeline:from_file({str(path)!r}, output_dir={str(out_dir)!r})", "-p", "2"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = sorted(out_dir.glob("output-*.jsonl"))
    assert len(files) >= 1
    got = [json_util.loads(line) for f in files for line in f.read_text().splitlines()]
    assert canon(got) == canon(run_pipeline(pipeline).output)
    assert not list(out_dir.glob("dlq-*.jsonl")) or all(f.read_text() == "" for f in out_dir.glob("dlq-*.jsonl"))
