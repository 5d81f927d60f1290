"""``dlq: {connectionName, db, coll, mode}`` per processor, end to end: real mongosh
creates the processors on ``mqlflow serve``, whose real child flows write to a DLQ
database that is down (a closed port) or up (the shared FerretDB).

The service runs with the process default (``MQLFLOW_DLQ_MODE`` unset: durable). The
processor that says ``mode: "best-effort"`` writes its whole output, gives its DLQ entries
up after 10 s and ends cleanly; the one that says nothing holds its checkpoint on the DLQ,
shows the stall in ``stats().sinkStalls`` and fails with the DLQ named in ``errorMsg``.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from svc_helpers import Service, free_port, mongosh_argv, start_service, wait_until

pytestmark = [pytest.mark.mongodb, pytest.mark.mongosh, pytest.mark.slow]

GIVE_UP_S = 15
DOCS = "[{_id: 1, t: 20}, {_id: 2, t: 'hot'}, {_id: 3, t: 21}, {_id: 4, t: 'cold'}, {_id: 5, t: 22}]"


def pipeline_js(db: str, coll: str) -> str:
    return (
        f"[{{ $source: {{ documents: {DOCS} }} }}, "
        "{ $validate: { validator: { t: { $type: 'int' } }, validationAction: 'dlq' } }, "
        f"{{ $merge: {{ into: {{ connectionName: 'up', db: '{db}', coll: '{coll}' }} }} }}]"
    )


def mongosh(svc: Service, which: str, script: str) -> str:
    env = dict(os.environ)
    env["HOME"] = str(svc.state_dir.parent)  # mongosh's history/telemetry files stay out of ~
    r = subprocess.run(
        mongosh_argv(which, "127.0.0.1", svc.port, "--quiet", "--norc", "--eval", script),
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert r.returncode == 0 and r.stderr == "", (r.stdout, r.stderr)
    return r.stdout


def test_best_effort_option_beats_the_durable_default_with_the_dlq_down(
    tmp_path: Path, mongodb_uri: str, mongo_db: Any
) -> None:
    down = f"mongodb://127.0.0.1:{free_port()}/?serverSelectionTimeoutMS=500&connectTimeoutMS=500"
    svc = start_service(
        tmp_path, "--max-restarts", "0",
        env={"MQLFLOW_SINK_GIVE_UP_S": str(GIVE_UP_S), "MQLFLOW_DLQ_MODE": ""},
        connections=(
            f'[connections.up]\ntype = "mongodb"\nuri = "{mongodb_uri}"\n\n'
            f'[connections.down]\ntype = "mongodb"\nuri = "{down}"\n'
        ),
    )
    client = svc.client()
    db = mongo_db.name
    try:
        # The pinned mongosh creates the two processors on the DLQ that is down ...
        out = mongosh(svc, "pinned", f"""
            sp.createStreamProcessor("be", {pipeline_js(db, "outBe")},
              {{dlq: {{connectionName: "down", db: "{db}", coll: "dlq", mode: "best-effort"}}}});
            sp.createStreamProcessor("du", {pipeline_js(db, "outDu")},
              {{dlq: {{connectionName: "down", db: "{db}", coll: "dlq"}}}});
            sp.be.start(); sp.du.start();
            print(EJSON.stringify(db.adminCommand({{listStreamProcessors: 1}}).streamProcessors.map(p => [p.name, p.options])));
        """)
        assert json.loads(out) == [
            ["be", {"dlq": {"connectionName": "down", "db": db, "coll": "dlq", "mode": "best-effort"}}],
            ["du", {"dlq": {"connectionName": "down", "db": db, "coll": "dlq"}}],
        ]
        # ... and the newest one a best-effort processor whose DLQ is up: entries still land.
        mongosh(svc, "newest", f"""
            sp.createStreamProcessor("beUp", {pipeline_js(db, "outBeUp")},
              {{dlq: {{connectionName: "up", db: "{db}", coll: "dlqUp", mode: "best-effort"}}}});
            sp.beUp.start();
        """)

        def stats(name: str) -> dict[str, Any]:
            return dict(client.admin.command({"getStreamProcessorStats": name})["stats"])

        def log() -> str:
            return svc.child_log()

        good = [{"_id": 1, "t": 20}, {"_id": 3, "t": 21}, {"_id": 5, "t": 22}]
        bad = [{"_id": 2, "t": "hot"}, {"_id": 4, "t": "cold"}]
        # Durable (the default): the DLQ write holds the processor; the stall shows, then it fails.
        st = wait_until(lambda: (s := stats("du")).get("sinkStalls") and s, 30, "the DLQ stall of 'du'", log=log)
        (stall,) = [s for s in st["sinkStalls"] if s["processor"] == "du"]
        assert stall["sink"] == f"DLQ {db}.dlq ({down})"
        assert stall["operation"] == "writing 2 DLQ document(s)"
        assert stall["lastError"].startswith("ServerSelectionTimeoutError: 127.0.0.1:"), stall
        st = wait_until(lambda: (s := stats("du"))["status"] == "error" and s, 60, "'du' to fail", log=log)
        prefix = (
            f"processor failed after 1 attempt: mqlflow: sink failed: processor 'du': DLQ {db}.dlq ({down}) "
            "made no progress for "
        )
        assert st["errorMsg"].startswith(prefix), st["errorMsg"]
        waited, rest = st["errorMsg"][len(prefix):].split(" s ", 1)
        assert GIVE_UP_S <= int(waited) < GIVE_UP_S + 15
        assert rest.startswith("(writing 2 DLQ document(s)); last error: ServerSelectionTimeoutError: "), rest

        # Best effort (the option): all output written, the 2 entries given up and counted
        # as lost, and the processor ends without an error.
        wait_until(lambda: stats("be")["status"] == "stopped", 60, "'be' to finish", log=log)
        st = stats("be")
        assert "errorMsg" not in st and st["dlqMessageCount"] == 2 and st["outputMessageCount"] == 3
        assert list(mongo_db.outBe.find({}, {"_id": 1, "t": 1}, sort=[("_id", 1)])) == good
        assert f"DLQ {db}.dlq ({down}): 2 document(s) lost: processor 'be': DLQ {db}.dlq ({down}) made no progress for " in log()
        assert "dlq" not in mongo_db.list_collection_names()

        wait_until(lambda: stats("beUp")["status"] == "stopped", 60, "'beUp' to finish", log=log)
        assert "errorMsg" not in stats("beUp")
        assert list(mongo_db.outBeUp.find({}, {"_id": 1, "t": 1}, sort=[("_id", 1)])) == good
        got = sorted(mongo_db.dlqUp.find({}, {"doc._id": 1, "doc.t": 1, "errInfo": 1, "processorName": 1, "_id": 0}), key=lambda d: d["doc"]["_id"])
        why = 'Input document found to be invalid in $validate stage: t: $type "int" failed for '
        assert got == [
            {"doc": d, "errInfo": {"reason": f'{why}"{d["t"]}"'}, "processorName": "beUp"} for d in bad
        ], got
    finally:
        client.close()
        svc.stop()
