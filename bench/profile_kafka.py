"""Workload K's per-message work in mqlflow, in isolation, for profilers.

``python -m bench.profile_kafka [N] [--cprofile] [--reference]`` reads workload K's
topic (the n = 300,000 seed messages ``bench.run`` fills, 4 partitions) with
``consume(1024)`` into memory, then times what the flow does with each batch: the Kafka
source's records (``_records``) and the ingest step (``IngestLogic.process``, the seed's
window). Consuming is timed apart (librdkafka's fetch threads run meanwhile). Figures are
CPU microseconds per message (``time.process_time``), best of 5 passes, so they hold up
on a loaded machine better than wall time. ``--reference`` uses ``fastPaths: false``;
``--cprofile`` prints the 20 functions with the most own time of one pass instead.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import time
from typing import Any

from bench.engines.kafka_engines import _options_and_registry, _pipeline
from bench.gen import GenSpec
from bench.kafka_topic import PARTITIONS, ensure_topic
from bench.workloads import Workload


def _consume(topic: str, n: int) -> tuple[list[tuple[int, list[Any]]], float]:
    """``[(partition, batch)]`` of the first ``n`` messages, and the CPU s it took."""
    from bench.engines.kafka_engines import _plain_consumer

    c = _plain_consumer(topic)
    out: list[tuple[int, list[Any]]] = []
    got = 0
    t0 = time.process_time()
    deadline = time.monotonic() + 120
    while got < n and time.monotonic() < deadline:
        msgs = [m for m in c.consume(1024, timeout=0.1) if m.error() is None]
        by_part: dict[int, list[Any]] = {}
        for m in msgs:
            by_part.setdefault(m.partition(), []).append(m)
        out.extend(by_part.items())
        got += len(msgs)
    cpu = time.process_time() - t0
    c.close()
    return out, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("n", type=int, nargs="?", default=200_000)
    ap.add_argument("--cprofile", action="store_true")
    ap.add_argument("--reference", action="store_true", help="fastPaths: false")
    args = ap.parse_args()
    from dataclasses import replace

    from sources.kafka import _batch_decoder
    from translator.compile import compile_pipeline, make_source
    from translator.runtime import IngestLogic

    topic = ensure_topic(GenSpec(n=300_000, groups=10, ooo=0.05))
    batches, consume_cpu = _consume(topic, args.n)
    n = sum(len(b) for _, b in batches)
    opts, reg = _options_and_registry()
    opts = replace(opts, fast_paths=not args.reference)
    pipeline = compile_pipeline(_pipeline(Workload("K", "tumbling", 3000, 3000), topic, None), reg, opts)
    source = make_source(pipeline)
    assert pipeline.plan is not None
    parts = [source.build_part("in", f"{topic}-{p}", 0) for p in range(PARTITIONS)]  # type: ignore[attr-defined]
    fast = pipeline.source_settings.fast_json

    def one_pass(ingest: bool) -> None:
        plan = pipeline.plan
        assert plan is not None
        logics = [IngestLogic(plan, f"{topic}-{p}", None) for p in range(PARTITIONS)]
        for p, msgs in batches:
            part = parts[p]
            records = part._records if fast else part._records_reference
            batch = records(msgs, _batch_decoder(msgs, fast))
            if ingest:
                logics[p].process(batch)

    gc.collect()
    gc.freeze()
    if args.cprofile:
        prof = cProfile.Profile()
        prof.runcall(one_pass, True)
        pstats.Stats(prof).sort_stats("tottime").print_stats(20)
        return
    us = {}
    for name, ingest in (("records", False), ("records + ingest", True)):
        best = float("inf")
        for _ in range(5):
            t0 = time.process_time()
            one_pass(ingest)
            best = min(best, time.process_time() - t0)
        us[name] = best / n * 1e6
    # What a stateless Kafka -> $emit pipeline's sink does per document: each message's
    # document with its envelope, written as relaxed Extended JSON.
    from sinks.kafka import dump_relaxed, dump_relaxed_reference

    dump = dump_relaxed_reference if args.reference else dump_relaxed
    docs = []
    for p, msgs in batches[: max(1, len(batches) // 10)]:
        batch = parts[p]._records_reference(msgs, _batch_decoder(msgs, fast))
        docs.extend(d for d, _ in batch)
    best = float("inf")
    for _ in range(5):
        t0 = time.process_time()
        for d in docs:
            dump(d)
        best = min(best, time.process_time() - t0)
    us["$emit writer, a document with its envelope"] = best / len(docs) * 1e6
    print(f"{n} messages ({'fastPaths: false' if args.reference else 'fast paths'}), CPU us per message:")
    print(f"  consume(1024), once: {consume_cpu / n * 1e6:.2f}")
    for name, v in us.items():
        print(f"  {name}: {v:.2f}")
    for part in parts:
        part.close()


if __name__ == "__main__":
    main()
