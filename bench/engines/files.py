"""Peer engines read the generated documents from a JSON-lines file written before the
clock starts (stdlib only)."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable
from typing import Any


def write_jsonl(batches: Iterable[list[dict[str, Any]]]) -> str:
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", prefix="mqlbench-", delete=False) as f:
        dumps = json.dumps
        for batch in batches:
            f.write("".join(dumps(d) + "\n" for d in batch))
        return f.name
