"""One in-process run of (a) mqlflow on a workload, for profilers.

``python -m bench.profile_run E 100000 [groups] [--cprofile]`` generates the workload's
documents (the shared generator, before anything is measured), then runs the compiled
flow once. Under callgrind, count only the run (repeatable on a noisy machine)::

    valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*run_main*' \\
        .venv/bin/python -m bench.profile_run E 100000

``--cprofile`` prints the 25 functions with the most own time instead. ``--engine c``
runs hand-written Bytewax (c) on the same documents instead of (a), to compare
instruction counts (``--toggle-collect='*run_main*'`` counts both the same way).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import sys
import time

from bench.engines import bytewax_hand, mqlflow_engine
from bench.gen import GenSpec, materialize
from bench.run import workload_spec
from bench.workloads import WORKLOADS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workload")
    ap.add_argument("n", type=int)
    ap.add_argument("groups", type=int, nargs="?", default=10)
    ap.add_argument("--cprofile", action="store_true")
    ap.add_argument("--engine", choices=("a", "c"), default="a")
    args = ap.parse_args()
    wl = WORKLOADS[args.workload]
    batches = materialize(workload_spec(args.workload, GenSpec(n=args.n, groups=args.groups)))
    gc.collect()
    gc.freeze()
    run = mqlflow_engine.run if args.engine == "a" else bytewax_hand.run
    t0 = time.perf_counter()
    if args.cprofile:
        prof = cProfile.Profile()
        out, _ = prof.runcall(run, wl, iter(batches))
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
    else:
        out, _ = run(wl, iter(batches))
    print(f"{len(out)} results in {time.perf_counter() - t0:.2f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
