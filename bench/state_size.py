"""Bytes per open (window, group) state entry: ``python -m bench.state_size``.

Compiles a workload's pipeline, folds one 3 s window of its shared generator's documents
through the ingest step's fast path (as a partition does before sending its partials),
and divides the memory ``tracemalloc`` sees allocated by the number of group entries.
The documents themselves are allocated before the measurement starts; group keys that
are strings are shared with the documents (as in a real run, where they come from the
decoded messages), so what is counted is the state: the table's slot, the entry list,
the accumulator states, plus the ingest's small per-group cache of close-step buckets.
"""

from __future__ import annotations

import argparse
import tracemalloc
from typing import Any

from bench.gen import GenSpec, iter_batches
from bench.run import workload_spec
from bench.workloads import WORKLOADS
from translator.compile import compile_pipeline
from translator.options import ProcessorOptions
from translator.runtime import IngestLogic, Plan


def measure(workload: str, groups: int) -> dict[str, Any]:
    wl = WORKLOADS[workload]
    spec = workload_spec(workload, GenSpec(n=0, groups=groups))
    # One window of event time, a little less so that no document reaches the next one.
    n = int(spec.rate * (wl.size_ms / 1000) * 0.95)
    spec = workload_spec(workload, GenSpec(n=n, groups=groups, ooo=0.0))
    opts = ProcessorOptions(name="state")
    plan = Plan.compile(compile_pipeline(wl.pipeline(), options=opts, check_sink_connection=False), opts)
    logic = IngestLogic(plan, "p0", None)
    batches = [[(d, 0) for d in b] for b in iter_batches(spec, 0, 1024)]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for b in batches:
        logic.process(b)
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    entries = sum(len(t) for panes in logic.held.values() for t in panes.values())
    return {"workload": workload, "events": n, "entries": entries, "bytes_per_entry": (after - before) / max(entries, 1),
            "fast_path": plan.fast_fold is not None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--workloads", default="D,A")
    ap.add_argument("--groups", type=int, default=10_000, help="group_id values for workload A (E keeps the generator's 10)")
    args = ap.parse_args()
    print("| workload | events in the window | entries | bytes per entry | fast path |")
    print("|---|---:|---:|---:|---|")
    for w in args.workloads.split(","):
        r = measure(w.strip(), args.groups if w.strip() == "A" else 10)
        print(f"| {r['workload']} | {r['events']:,} | {r['entries']:,} | {r['bytes_per_entry']:,.0f} | {r['fast_path']} |")


if __name__ == "__main__":
    main()
