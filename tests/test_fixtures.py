"""End-to-end fixture folders: ``tests/fixtures/<case>/`` holds ``pipeline.json`` (Extended
JSON: a stage array or ``{pipeline, options}``), ``input.jsonl`` (fed as
``$source.documents``), ``expected.jsonl`` and ``dlq.jsonl``. Each case runs the real
compiled Bytewax dataflow through ``translator.testing.run_pipeline``.

Every case runs twice: with the accelerators (group fast path, generated code, fused
stages, batch stamping) and with ``fastPaths: false`` (the reference path only); both
must give the expected output and DLQ exactly.

Outputs compare exactly, as canonical Extended JSON, order-insensitively (windows of
different groups close together, in no promised order). DLQ documents compare without
their ``_id`` and ``dlqTime``, which are generated.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from bson import json_util

from translator.loader import load_pipeline_file
from translator.testing import run_pipeline

FIXTURES = Path(__file__).parent / "fixtures"
CANONICAL = json_util.JSONOptions(json_mode=json_util.JSONMode.CANONICAL, tz_aware=True)
CASES = sorted(p.name for p in FIXTURES.iterdir() if (p / "pipeline.json").exists())


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json_util.loads(line) for line in path.read_text().splitlines() if line.strip()]


def canon(docs: list[dict[str, Any]]) -> list[str]:
    return sorted(json_util.dumps(d, json_options=CANONICAL) for d in docs)


def test_there_are_fixtures() -> None:
    assert len(CASES) >= 6


@pytest.mark.parametrize("fast_paths", [True, False], ids=["fast", "reference"])
@pytest.mark.parametrize("case", CASES)
def test_fixture(case: str, fast_paths: bool) -> None:
    folder = FIXTURES / case
    stages, options = load_pipeline_file(folder / "pipeline.json")
    source = stages[0]["$source"]
    if "documents" not in source and "connectionName" not in source:
        source["documents"] = read_jsonl(folder / "input.jsonl")
    result = run_pipeline(stages, {"name": case, **options, "fastPaths": fast_paths})
    assert canon(result.output) == canon(read_jsonl(folder / "expected.jsonl"))
    got_dlq = [{k: v for k, v in d.items() if k not in ("_id", "dlqTime")} for d in result.dlq]
    assert canon(got_dlq) == canon(read_jsonl(folder / "dlq.jsonl"))
