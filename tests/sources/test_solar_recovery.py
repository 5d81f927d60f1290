"""``sample_stream_solar`` with a virtual clock (``config.startTime``) through a real crash:
``python -m bytewax.run`` with a recovery directory (``-r/-s 1/-b 0``), ``kill -9`` mid-stream,
restart from the checkpoint.

The virtual clock is a position in a deterministic stream, so the source's snapshot holds
it (clock, count, generator state): the restart continues the same stream. Before, the
clock restarted at ``startTime`` behind the restored watermark, and every replayed event
went to the DLQ as late.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from bson import json_util

from sinks.dlq import LATE_REASON
from sources.solar import SolarConfig, SolarSource

pytestmark = [pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
T0 = datetime(2024, 8, 8, 23, 8, 0, tzinfo=UTC)
CONFIG = {"seed": 5, "maxEvents": 1_200_000, "startTime": int(T0.timestamp() * 1000), "rate": 100, "batchSize": 500}
WINDOW_S = 60
PIPELINE = [
    {"$source": {"connectionName": "sample_stream_solar", "config": CONFIG}},
    {"$tumblingWindow": {"interval": {"size": WINDOW_S, "unit": "second"},
                         "pipeline": [{"$group": {"_id": "$group_id", "n": {"$sum": 1}, "watts": {"$sum": "$obs.watts"}}}]}},
]
Key = tuple[int, datetime]


def expected() -> dict[Key, tuple[int, int]]:
    """The windows computed here from the generator itself (an uninterrupted stream)."""
    part = SolarSource(SolarConfig.from_mapping(CONFIG)).build_part("s", "solar-0", None)
    out: dict[Key, list[int]] = {}
    try:
        while True:
            for _, batch in part.next_batch():
                for doc, ms in batch:
                    start = datetime.fromtimestamp((ms - ms % (WINDOW_S * 1000)) / 1000, UTC)
                    r = out.setdefault((doc["group_id"], start), [0, 0])
                    r[0] += 1
                    r[1] += doc["obs"]["watts"]
    except StopIteration:
        pass
    return {k: (v[0], v[1]) for k, v in out.items()}


def read_lines(path: Path) -> tuple[list[dict[str, Any]], int]:
    """JSON lines; a line cut by the SIGKILL (then continued by the restart) is counted."""
    docs, cut = [], 0
    if not path.exists():
        return docs, cut
    for line in path.read_text().splitlines():
        try:
            docs.append(json_util.loads(line, json_options=json_util.JSONOptions(tz_aware=True)))
        except (ValueError, json.JSONDecodeError):
            cut += 1
    return docs, cut


def test_kill9_mid_stream_resumes_the_virtual_clock(tmp_path: Path) -> None:
    spec = tmp_path / "solar.json"
    spec.write_text(json.dumps({"name": "solarcrash", "pipeline": PIPELINE}))
    out_dir, recovery, log = tmp_path / "out", tmp_path / "recovery", tmp_path / "run.log"
    recovery.mkdir()
    subprocess.run([PY, "-m", "bytewax.recovery", str(recovery), "1"], check=True, cwd=ROOT, timeout=60)
    args = [PY, "-m", "bytewax.run", f"flows.pipeline:from_file('{spec}', output_dir='{out_dir}')",
            "-r", str(recovery), "-s", "1", "-b", "0"]
    output = out_dir / "output-0.jsonl"

    def start() -> subprocess.Popen[bytes]:
        with log.open("ab") as f:
            return subprocess.Popen(args, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)

    proc = start()
    first_seen = None
    deadline = time.monotonic() + 120
    while True:  # a few windows out and two checkpoints after the first one: kill
        assert proc.poll() is None, f"the flow ended before the kill:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"no output:\n{log.read_text()[-3000:]}"
        lines = len(read_lines(output)[0])
        if lines and first_seen is None:
            first_seen = time.monotonic()
        if first_seen is not None and lines >= 50 and time.monotonic() - first_seen >= 2.5:
            break
        time.sleep(0.05)
    proc.kill()
    proc.wait(10)
    before, _ = read_lines(output)
    want = expected()
    # Mid-stream whatever the machine's speed: well before the last of the windows.
    assert len(before) < 0.9 * len(want), f"the kill came too late to be mid-stream ({len(before)} of {len(want)})"

    proc = start()
    assert proc.wait(300) == 0, log.read_text()[-3000:]
    docs, cut = read_lines(output)
    dlq, _ = read_lines(out_dir / "dlq-0.jsonl")
    assert dlq == [], f"{len(dlq)} DLQ entries, e.g. {dlq[0]} ({LATE_REASON!r} before the fix)"
    assert cut <= 1
    after = docs[len(before):]
    # The restart resumed from a checkpoint past the first window (not from startTime)...
    first_window = min(d["_stream_meta"]["window"]["start"] for d in after)
    assert first_window > T0, first_window
    # ... and results emitted again after it (at-least-once) are identical: deduplicated
    # by (group, window start), as $merge on _id would, they are an uninterrupted run's.
    got: dict[Key, tuple[int, int]] = {}
    for d in docs:
        k = (d["_id"], d["_stream_meta"]["window"]["start"])
        v = (d["n"], d["watts"])
        assert got.setdefault(k, v) == v, (k, got[k], v)
    assert got == want
    replayed = Counter((d["_id"], d["_stream_meta"]["window"]["start"]) for d in docs)
    print(f"{len(before)} results before the kill, {len(after)} after; {sum(c - 1 for c in replayed.values())} replayed")
