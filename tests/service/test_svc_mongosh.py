"""Real mongosh (the copy ``scripts/services.sh up mongosh`` installs) driving the service
in ``--eval`` mode. Missing mongosh is a failure, not a skip."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from svc_helpers import ROOT, Service, start_service

pytestmark = pytest.mark.mongosh

SEED_PROCESS = 'sp.process([{ "$source": { "connectionName": "sample_stream_solar" } }])'


def mongosh_path() -> str:
    env_file = ROOT / ".cache" / "run" / "services.env"
    assert env_file.exists(), f"{env_file} is missing: run scripts/services.sh up mongosh"
    for line in env_file.read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "MONGOSH":
            path = value.strip().strip('"').strip("'")
            assert Path(path).exists(), f"MONGOSH={path} does not exist"
            return path
    raise AssertionError(f"no MONGOSH= line in {env_file}")


def run_mongosh(svc: Service, script: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["HOME"] = str(svc.state_dir.parent)  # keep mongosh's history/telemetry files out of ~
    return subprocess.run(
        [mongosh_path(), f"mongodb://127.0.0.1:{svc.port}", "--quiet", "--norc", "--eval", script],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def test_list_stream_processors_connects_without_errors(service: Service) -> None:
    r = run_mongosh(service, "sp.listStreamProcessors()")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
    assert r.stderr == ""


ISO_MS = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}"
# How mongosh prints one sample-source document (the seed's "output looks like this").
SOLAR_DOC = re.compile(
    r"""\{
  device_id: 'device_(?P<dev>\d+)',
  group_id: (?P<group>\d+),
  timestamp: '(?P<ts>""" + ISO_MS + r""")\+00:00',
  max_watts: (?P<max>250|450),
  event_type: (?P<et>[01]),
  obs: \{
    watts: (?P<watts>\d+),
    temp: (?P<temp>\d+)
  \},
  _ts: ISODate\('(?P<ts2>""" + ISO_MS + r""")Z'\),
  _stream_meta: \{
    source: \{
      type: 'generated'
    \}
  \}
\}
"""
)


def printed_blocks(out: str) -> list[str]:
    """Top-level documents mongosh printed: from a ``{`` line to the next ``}`` line."""
    return [b + "}\n" for b in re.split(r"(?m)^\}\n", out) if b.strip()]


def test_seed_sp_process_prints_solar_documents(tmp_path: Path) -> None:
    """The seed's very first command, verbatim: a sink-less pipeline on the sample source."""
    svc = start_service(tmp_path, "--process-max-seconds", "6")
    try:
        r = run_mongosh(svc, SEED_PROCESS)
        assert r.returncode == 0, r.stderr
        assert r.stderr == ""
        blocks = printed_blocks(r.stdout)
        assert len(blocks) >= 10, r.stdout  # 10 events/s for about 5 s
        for b in blocks:
            m = SOLAR_DOC.fullmatch(b)
            assert m, b
            assert m["ts"] == m["ts2"]  # _ts is the event's own time
            assert 0 <= int(m["dev"]) <= 10 and int(m["group"]) == int(m["dev"]) % 10
            assert int(m["watts"]) <= int(m["max"]) and 8 <= int(m["temp"]) <= 24
    finally:
        svc.stop()


def test_sp_process_prints_documents_source_then_ends(service: Service) -> None:
    r = run_mongosh(
        service,
        'sp.process([{ $source: { documents: [{a: 1}, {a: 2, b: "x"}, {a: 3}] } }, { $match: { a: { $gte: 2 } } }])',
    )
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    ts = re.findall(r"_ts: ISODate\('(" + ISO_MS + r")Z'\)", r.stdout)
    assert len(ts) == 2
    meta = "  _stream_meta: {\n    source: {\n      type: 'documents'\n    }\n  }\n}\n"
    assert r.stdout == (
        f"{{\n  a: 2,\n  b: 'x',\n  _ts: ISODate('{ts[0]}Z'),\n{meta}"
        f"{{\n  a: 3,\n  _ts: ISODate('{ts[1]}Z'),\n{meta}"
    )


@pytest.mark.mongodb
def test_sp_process_with_merge_prints_and_writes(service: Service, mongo_db: Any) -> None:
    """A pipeline with a sink keeps working in sp.process: documents print and reach $merge."""
    r = run_mongosh(
        service,
        "sp.process([{ $source: { documents: [{_id: 1, v: 'a'}, {_id: 2, v: 'b'}] } }, "
        "{ $project: { v: 1 } }, "
        f"{{ $merge: {{ into: {{ connectionName: 'dlqconn', db: '{mongo_db.name}', coll: 'sink' }} }} }}])",
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout == "{\n  _id: 1,\n  v: 'a'\n}\n{\n  _id: 2,\n  v: 'b'\n}\n"
    assert list(mongo_db.sink.find({}, sort=[("_id", 1)])) == [{"_id": 1, "v": "a"}, {"_id": 2, "v": "b"}]


@pytest.mark.kafka
def test_processor_lifecycle_from_mongosh(service: Service) -> None:
    script = """
    let p = sp.createStreamProcessor("shellProc", [
      { $source: { connectionName: "sample_stream_solar" } },
      { $emit: { connectionName: "out", topic: "mqlflow-svc-mongosh" } }
    ]);
    print("created " + p.name);
    let q = sp.getProcessor('shellProc');
    q.start();
    print("state " + sp.listStreamProcessors()[0].name);
    """
    r = run_mongosh(service, script)
    assert r.returncode == 0, r.stderr
    assert "created shellProc" in r.stdout
    # the shell has exited; the processor is still running
    c = service.client()
    assert c.admin.command({"listStreamProcessors": 1})["streamProcessors"][0]["state"] == "STARTED"
    r2 = run_mongosh(
        service,
        "let q = sp.getProcessor('shellProc'); printjson(q.stats().stats.status); q.stop(); q.drop(); "
        "printjson(sp.listStreamProcessors().length)",
    )
    assert r2.returncode == 0, r2.stderr
    assert r2.stdout.split() == ["running", "0"]
    c.close()


def test_bad_pipeline_error_reaches_the_shell(service: Service) -> None:
    r = run_mongosh(
        service,
        'sp.createStreamProcessor("bad", [{ $source: { connectionName: "sample_stream_solar" } }, { $matc: {} }])',
    )
    assert r.returncode == 1
    assert "MongoServerError" in r.stderr
    assert "pipeline[1].$matc: unknown stage '$matc'; did you mean '$match'?" in r.stderr
