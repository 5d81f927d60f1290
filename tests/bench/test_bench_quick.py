"""The benchmark harness is correct on tiny inputs: every engine's window (and stateless)
results equal the plain-Python reference (d), and the checks would catch a difference.

Not a timed test: it asserts results, never speed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # bench/ is a tool beside the packages, not installed

from bench.digest import Digest  # noqa: E402
from bench.engines import bytewax_hand, mqlflow_engine, plain  # noqa: E402
from bench.gen import START_MS, GenSpec, iter_batches, materialize, parse_ms  # noqa: E402
from bench.worker import digest_of  # noqa: E402
from bench.workloads import WORKLOADS, Workload  # noqa: E402

SPEC = GenSpec(n=6000, groups=7, ooo=0.2, rate=1000.0, seed=5)


def digest(engine: Any, wl: Workload, spec: GenSpec = SPEC) -> Digest:
    out, first = engine.run(wl, iter(materialize(spec, 0, 256)))
    assert first is not None
    return digest_of(wl, engine.to_rows(wl, out))


def test_generator_is_deterministic_and_out_of_order() -> None:
    a = [d for b in iter_batches(SPEC, 0, 100) for d in b]
    b = [d for b in iter_batches(SPEC, 0, 333) for d in b]
    assert a == b and len(a) == 6000
    times = [parse_ms(d["timestamp"]) for d in a]
    back = sum(1 for i in range(1, len(times)) if times[i] < max(times[:i][-50:]))
    assert 0.15 * len(a) < back < 0.25 * len(a)
    # never further back than ooo_max_ms from its in-order time: nothing is ever late
    assert all(times[i] >= START_MS + i - SPEC.ooo_max_ms for i in range(len(times)))
    assert a[0]["timestamp"].endswith("+00:00") and set(a[0]) == {
        "device_id", "group_id", "timestamp", "max_watts", "event_type", "obs"
    }
    assert Counter(d["group_id"] for d in a).keys() == set(range(7))


def test_partitions_split_one_stream() -> None:
    spec2 = GenSpec(n=1000, groups=3, partitions=2, seed=9)
    one = [d for b in iter_batches(GenSpec(n=1000, groups=3, seed=9)) for d in b]
    p0 = [d for b in iter_batches(spec2, 0) for d in b]
    p1 = [d for b in iter_batches(spec2, 1) for d in b]
    assert p0 == one[0::2] and p1 == one[1::2]


def test_reference_windows_by_hand() -> None:
    """(d) on four documents: ASP's [start, start + 3 s) windows and population stddev."""
    docs = [
        {"group_id": 1, "timestamp": "2024-07-26T13:20:00.000+00:00", "obs": {"temp": 10}},
        {"group_id": 1, "timestamp": "2024-07-26T13:20:02.999+00:00", "obs": {"temp": 20}},
        {"group_id": 2, "timestamp": "2024-07-26T13:20:01.000+00:00", "obs": {"temp": 9}},
        {"group_id": 1, "timestamp": "2024-07-26T13:20:03.000+00:00", "obs": {"temp": 7}},
    ]
    rows, _ = plain.run(WORKLOADS["A"], iter([docs]))
    assert sorted(rows) == [
        (START_MS, 1, 10, 20, 15.0, 5.0),
        (START_MS, 2, 9, 9, 9.0, 0.0),
        (START_MS + 3000, 1, 7, 7, 7.0, 0.0),
    ]


def test_reference_drops_late_documents_like_asp() -> None:
    """A document whose window ended more than allowedLateness (3 s) before the
    watermark is late: (d) counts it and leaves it out."""
    docs = [
        {"group_id": 1, "timestamp": "2024-07-26T13:20:10.000+00:00", "obs": {"temp": 10}},
        {"group_id": 1, "timestamp": "2024-07-26T13:20:02.000+00:00", "obs": {"temp": 99}},  # [0,3)+3 <= 10
        {"group_id": 1, "timestamp": "2024-07-26T13:20:04.000+00:00", "obs": {"temp": 5}},  # [3,6)+3 = 9 <= 10
        {"group_id": 1, "timestamp": "2024-07-26T13:20:07.500+00:00", "obs": {"temp": 6}},  # [6,9)+3 = 12 > 10
    ]
    rows, _ = plain.run(WORKLOADS["A"], iter([docs]))
    assert plain.Stats.late == 2
    assert sorted(r[:4] for r in rows) == [(START_MS + 6000, 1, 6, 6), (START_MS + 9000, 1, 10, 10)]


@pytest.mark.parametrize("name", ["A", "B", "C"])
def test_mqlflow_and_hand_bytewax_equal_reference(name: str) -> None:
    wl = WORKLOADS[name]
    ref = digest(plain, wl)
    assert ref.rows > (20 if wl.windowed else 3000)
    assert plain.Stats.late == 0 or not wl.windowed
    assert digest(mqlflow_engine, wl).diff(ref) is None
    assert digest(bytewax_hand, wl).diff(ref) is None


def test_digest_catches_a_wrong_value() -> None:
    wl = WORKLOADS["A"]
    rows, _ = plain.run(wl, iter(materialize(SPEC, 0, 256)))
    ref = digest_of(wl, rows)
    start, g, mn, mx, avg, std = rows[3]
    bad_avg = [*rows[:3], (start, g, mn, mx, avg + 1e-6, std), *rows[4:]]
    assert digest_of(wl, bad_avg).diff(ref) == f"float field 0: {digest_of(wl, bad_avg).floats[0]!r} != reference {ref.floats[0]!r}"
    bad_max = [*rows[:3], (start, g, mn, mx + 1, avg, std), *rows[4:]]
    assert digest_of(wl, bad_max).diff(ref) == "same row count but different exact fields (window, group, min, max, strings)"
    assert digest_of(wl, rows[1:]).diff(ref) == f"{len(rows) - 1} result rows, reference has {len(rows)}"
    assert digest_of(wl, list(reversed(rows))).diff(ref) is None


def _worker(python: str, cfg: dict[str, Any]) -> Digest:
    env = dict(os.environ, PYTHONHASHSEED="0", PATHWAY_THREADS="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [python, "-m", "bench.worker", json.dumps(cfg)], cwd=ROOT, capture_output=True, text=True, timeout=280, env=env
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return Digest.from_dict(json.loads(proc.stdout.strip().splitlines()[-1])["digest"])


@pytest.mark.slow
def test_two_process_mqlflow_equals_reference() -> None:
    spec = GenSpec(n=6000, groups=7, ooo=0.2, rate=1000.0, seed=5)
    ref = _worker(sys.executable, {"engine": "d", "workload": "A", "spec": spec.to_dict()})
    got = _worker(sys.executable, {"engine": "b", "workload": "A", "spec": spec.to_dict()})
    assert got.diff(ref) is None


@pytest.mark.peers
@pytest.mark.parametrize("engine", ["e", "f"])
def test_peer_engines_equal_reference(engine: str) -> None:
    """Deselected by default (`-m peers` runs it): PyFlink and Pathway need 2.4 GB of
    separate virtualenvs that the test set-up does not install."""
    from bench.run import python_for

    python, why = python_for(engine)
    if python is None:
        pytest.fail(f"peer engine ({engine}) not installed: {why}")
    spec = GenSpec(n=3000, groups=5, ooo=0.2, rate=1000.0, seed=5)
    for name in ("A", "C"):
        ref = _worker(sys.executable, {"engine": "d", "workload": name, "spec": spec.to_dict()})
        assert _worker(python, {"engine": engine, "workload": name, "spec": spec.to_dict()}).diff(ref) is None


@pytest.mark.kafka
def test_kafka_workload_equals_reference(kafka_bootstrap: str) -> None:
    """Workload K on the real broker: the topic is filled from the shared generator (4
    partitions plus end markers); (ka) through ``$emit`` and the plain consumer (kd)
    give (d)'s windows, and the source-only engines read every message."""
    from bench.kafka_topic import ensure_topic, messages_in

    spec = GenSpec(n=6000, groups=7, ooo=0.2, rate=1000.0, seed=5)
    topic = ensure_topic(spec)
    assert topic.startswith("perf_k_") and messages_in(spec) == 6004
    ref = _worker(sys.executable, {"engine": "d", "workload": "A", "spec": spec.to_dict()})
    assert ref.rows > 0
    for engine in ("ka", "ka0", "kd"):
        cfg = {"engine": engine, "workload": "K", "spec": spec.to_dict(), "topic": topic, "expect_rows": ref.rows}
        assert _worker(sys.executable, cfg).diff(ref) is None, engine
    for engine in ("ks", "kj"):  # they raise unless they read exactly every message
        _worker(sys.executable, {"engine": engine, "workload": "K", "spec": spec.to_dict(), "topic": topic})
