"""README command 1: ``scripts/demo.sh`` runs the seed's demo on the embedded default
(sample source, console output)."""

from __future__ import annotations

import os
import subprocess
from datetime import timedelta
from pathlib import Path

from bson import json_util

ROOT = Path(__file__).resolve().parents[2]


def test_demo_script_prints_window_statistics(tmp_path: Path) -> None:
    empty = tmp_path / "no-connections.toml"
    empty.write_text("")
    env = {**os.environ, "MQLFLOW_CONNECTIONS": str(empty)}
    r = subprocess.run(
        ["bash", "scripts/demo.sh", "max_events=400, rate=2000, seed=3"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=env,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "no 'MyOutputGoesHere' connection configured; window results print to the console" in r.stderr
    lines = [line for line in r.stdout.splitlines() if line.strip()]
    assert lines and not any(line.startswith("[dlq]") for line in lines)
    docs = [json_util.loads(line) for line in lines]
    assert sum(1 for _ in docs) >= 1
    for d in docs:
        assert set(d) == {"_id", "minTemp", "maxTemp", "avgTemp", "stdevPTemp", "_stream_meta"}
        assert d["minTemp"] <= d["avgTemp"] <= d["maxTemp"]
        w = d["_stream_meta"]["window"]
        assert w["end"] - w["start"] == timedelta(seconds=3)
