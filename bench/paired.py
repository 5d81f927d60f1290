"""Paired runs on a shared machine: engines take turns, and each round's ratio counts.

``bench.run`` runs every rep of one engine before the next, so a load that changes
during the run (other sessions, CI) lands on one engine more than another. Here each
round runs every engine once, one after the other, and the figure is the median over
rounds of each engine's time against the last engine's in the same round::

    .venv/bin/python -m bench.paired --workload C --n 300000 --rounds 10 a c
    .venv/bin/python -m bench.paired --workload C --n 300000 --rounds 10 a a@../main c

``ENGINE@TREE`` runs the engine from another checkout (its own ``.venv``), e.g. the
commit before a change. Results are checked against nothing here: use ``bench.run``
for the digest check.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from bench import run as runner
from bench.gen import GenSpec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("engines", nargs="+", help="ENGINE or ENGINE@TREE; the last one is the base of the ratios")
    ap.add_argument("--workload", default="C")
    ap.add_argument("--n", type=int, default=300_000)
    ap.add_argument("--groups", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--timeout", type=float, default=600)
    args = ap.parse_args()
    here = runner.ROOT
    spec = GenSpec(n=args.n, groups=args.groups).to_dict()
    runs: dict[str, list[tuple[float, float]]] = {e: [] for e in args.engines}
    for r in range(args.rounds):
        for name in args.engines:
            engine, _, tree = name.partition("@")
            root = Path(tree).resolve() if tree else here
            runner.ROOT = root  # measure() runs the worker from this checkout
            try:
                cfg = {"engine": engine, "workload": args.workload, "spec": spec, "mode": "mem"}
                res = runner.measure(engine, str(root / ".venv" / "bin" / "python"), cfg, args.timeout)
            finally:
                runner.ROOT = here
            runs[name].append((res["elapsed_s"], res["cpu_s"]))
        print(f"round {r + 1}: " + ", ".join(f"{e} {v[-1][0]:.3f} s" for e, v in runs.items()), flush=True)
    base = args.engines[-1]
    for name, v in runs.items():
        wall = [b[0] / x[0] for x, b in zip(v, runs[base], strict=True)]
        cpu = [b[1] / x[1] for x, b in zip(v, runs[base], strict=True)]
        print(
            f"{name}: median {args.n / statistics.median(x for x, _ in v):,.0f} events/s; per round vs {base}: "
            f"median {statistics.median(wall):.3f}x wall, {statistics.median(cpu):.3f}x CPU"
        )


if __name__ == "__main__":
    main()
