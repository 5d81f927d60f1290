"""``$merge`` whenMatched pipelines follow the ``fastPaths`` option: the same documents and
DLQ entries either way, against the real MongoDB-wire server (docs/semantics.md#sinks)."""

from __future__ import annotations

from typing import Any

import pytest
from bytewax.testing import run_main

from translator.compile import build_flow, compile_pipeline
from translator.connections import Connection, ConnectionRegistry
from translator.ir import DlqTarget
from translator.options import ProcessorOptions

pytestmark = pytest.mark.mongodb

EXISTING = [{"_id": 1, "n": 1, "keep": "x"}, {"_id": 3, "n": 1}]
INCOMING = [{"_id": 1, "n": 10}, {"_id": 2, "n": 5}, {"_id": 3, "n": "bad"}]
# An $addFields then an inclusion $project: the pair the stage compiler fuses.
WHEN_MATCHED = [{"$addFields": {"total": {"$add": ["$n", "$$new.n"]}}}, {"$project": {"n": 1, "total": 1}}]


def _run(mongodb_uri: str, db: Any, coll: str, fast: bool) -> tuple[list[Any], list[Any], int]:
    db[coll].insert_many([dict(d) for d in EXISTING])
    reg = ConnectionRegistry({"out": Connection(name="out", type="mongodb", uri=mongodb_uri)})
    opts = ProcessorOptions(name="wm", dlq=DlqTarget("out", db.name, f"{coll}_dlq"), fast_paths=fast)
    p = compile_pipeline(
        [{"$source": {"documents": INCOMING}},
         {"$merge": {"into": {"connectionName": "out", "db": db.name, "coll": coll}, "whenMatched": WHEN_MATCHED}}],
        reg, opts, require_sink=True,
    )
    run_main(build_flow(p))
    docs = sorted(db[coll].find({}, {"_stream_meta": 0, "_ts": 0}), key=lambda d: d["_id"])
    dlq = sorted(((d["doc"]["_id"], d["errInfo"]["reason"]) for d in db[f"{coll}_dlq"].find()), key=repr)
    return docs, dlq, p.sink_settings.mode.fn.fused


def test_when_matched_pipeline_same_results_with_and_without_fast_paths(mongodb_uri: str, mongo_db: Any) -> None:
    fast = _run(mongodb_uri, mongo_db, "fast", True)
    slow = _run(mongodb_uri, mongo_db, "slow", False)
    assert fast[2] == 1 and slow[2] == 0  # the fused pair only with fastPaths on
    expected_docs = [{"_id": 1, "n": 1, "total": 11}, {"_id": 2, "n": 5}, {"_id": 3, "n": 1}]
    expected_dlq = [(3, "Failed to apply $merge whenMatched pipeline: $add only supports numeric or date types, not string")]
    assert fast[:2] == slow[:2] == (expected_docs, expected_dlq)
