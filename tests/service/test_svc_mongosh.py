"""Real mongosh (both copies ``scripts/services.sh up mongosh`` installs: the pinned 2.5.0
and the newest 2.x) driving the service in ``--eval`` mode. Missing mongosh is a failure,
not a skip."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from svc_helpers import Service, mongosh_argv, start_service

pytestmark = pytest.mark.mongosh

SEED_PROCESS = 'sp.process([{ "$source": { "connectionName": "sample_stream_solar" } }])'


def run_mongosh(
    svc: Service, version: str, script: str, timeout: float = 120, *, via_shell: bool = False
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["HOME"] = str(svc.state_dir.parent)  # keep mongosh's history/telemetry files out of ~
    return subprocess.run(
        mongosh_argv(version, "127.0.0.1", svc.port, "--quiet", "--norc", "--eval", script, via_shell=via_shell),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def test_list_stream_processors_connects_without_errors(service: Service, mongosh_version: str) -> None:
    r = run_mongosh(service, mongosh_version, "sp.listStreamProcessors()")
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


def test_seed_sp_process_prints_solar_documents(tmp_path: Path, mongosh_version: str) -> None:
    """The seed's very first command, verbatim: a sink-less pipeline on the sample source."""
    svc = start_service(tmp_path, "--process-max-seconds", "6")
    try:
        r = run_mongosh(svc, mongosh_version, SEED_PROCESS)
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


def test_sp_process_prints_documents_source_then_ends(service: Service, mongosh_version: str) -> None:
    r = run_mongosh(
        service,
        mongosh_version,
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
def test_sp_process_with_merge_prints_and_writes(service: Service, mongosh_version: str, mongo_db: Any) -> None:
    """A pipeline with a sink keeps working in sp.process: documents print and reach $merge."""
    r = run_mongosh(
        service,
        mongosh_version,
        "sp.process([{ $source: { documents: [{_id: 1, v: 'a'}, {_id: 2, v: 'b'}] } }, "
        "{ $project: { v: 1 } }, "
        f"{{ $merge: {{ into: {{ connectionName: 'dlqconn', db: '{mongo_db.name}', coll: 'sink' }} }} }}])",
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout == "{\n  _id: 1,\n  v: 'a'\n}\n{\n  _id: 2,\n  v: 'b'\n}\n"
    assert list(mongo_db.sink.find({}, sort=[("_id", 1)])) == [{"_id": 1, "v": "a"}, {"_id": 2, "v": "b"}]


@pytest.mark.kafka
def test_processor_lifecycle_from_mongosh(service: Service, mongosh_version: str) -> None:
    """The tour's ``sp.getProcessor('name')`` form: direct on the pinned shell, through
    ``mqlflow shell`` on the newest (whose getProcessor wants a document)."""
    via_shell = mongosh_version == "newest"
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
    r = run_mongosh(service, mongosh_version, script, via_shell=via_shell)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n") == ["created shellProc", "state shellProc", ""]
    # the shell has exited; the processor is still running
    c = service.client()
    assert c.admin.command({"listStreamProcessors": 1})["streamProcessors"][0]["state"] == "STARTED"
    r2 = run_mongosh(
        service,
        mongosh_version,
        "let q = sp.getProcessor('shellProc'); printjson(q.stats().stats.status); q.stop(); q.drop(); "
        "printjson(sp.listStreamProcessors().length)",
        via_shell=via_shell,
    )
    assert r2.returncode == 0, r2.stderr
    assert r2.stdout.split() == ["running", "0"]
    c.close()


def test_bad_pipeline_error_reaches_the_shell(service: Service, mongosh_version: str) -> None:
    r = run_mongosh(
        service,
        mongosh_version,
        'sp.createStreamProcessor("bad", [{ $source: { connectionName: "sample_stream_solar" } }, { $matc: {} }])',
    )
    assert r.returncode == 1
    assert "MongoServerError" in r.stderr
    assert "pipeline[1].$matc: unknown stage '$matc'; did you mean '$match'?" in r.stderr


NULL_NAME_HINT = (
    "startStreamProcessor: the processor name is null. mongosh 2.5.10 and later need a document in "
    "sp.getProcessor: use sp.<name>.start() or sp.getProcessor({name: '<name>'}).start(), "
    "or start the shell with `mqlflow shell`, which accepts sp.getProcessor('<name>')"
)


@pytest.mark.kafka
def test_newest_mongosh_get_processor_by_name_gets_the_fix_in_its_error(service: Service) -> None:
    """mongosh >= 2.5.10 sends ``startStreamProcessor: null`` for the tour's
    ``sp.getProcessor('name').start()``; the reply says what works instead, and both
    suggested forms do work on that shell."""
    c = service.client()
    c.admin.command({"createStreamProcessor": "tourProc", "pipeline": [
        {"$source": {"documents": [{"a": 1}]}}, {"$emit": {"connectionName": "out", "topic": "mqlflow-svc-mongosh"}}]})
    r = run_mongosh(service, "newest", "sp.getProcessor('tourProc').start()")
    assert r.returncode == 1
    assert r.stdout == ""
    assert r.stderr == f"MongoServerError: {NULL_NAME_HINT}\n"
    r = run_mongosh(service, "newest", "sp.tourProc.start(); sp.getProcessor({name: 'tourProc'}).stop(); print('ok')")
    assert (r.returncode, r.stdout, r.stderr) == (0, "ok\n", "")
    assert c.admin.command({"listStreamProcessors": 1})["streamProcessors"][0]["state"] == "STOPPED"
    c.close()


def test_mqlflow_shell_snippet_accepts_both_forms(service: Service, mongosh_version: str) -> None:
    """``mqlflow shell`` (and the same snippet in ~/.mongoshrc.js) makes
    ``sp.getProcessor('name')`` and ``sp.getProcessor({name})`` work on every mongosh 2.x."""
    script = "print(sp.getProcessor('a1').name, sp.getProcessor({name: 'b2'}).name, sp.c3.name)"
    r = run_mongosh(service, mongosh_version, script, via_shell=True)
    assert (r.returncode, r.stdout, r.stderr) == (0, "a1 b2 c3\n", "")
    home = service.state_dir.parent
    from service.shell import GET_PROCESSOR_SNIPPET

    (home / ".mongoshrc.js").write_text(GET_PROCESSOR_SNIPPET)
    # mongosh reads ~/.mongoshrc.js in interactive sessions only: feed the session on stdin
    argv = mongosh_argv(mongosh_version, "127.0.0.1", service.port, "--quiet")
    got = subprocess.run(argv, input=script + "\n", capture_output=True, text=True, timeout=120,
                         env={**os.environ, "HOME": str(home)})
    assert got.returncode == 0, got.stderr
    assert "> a1 b2 c3\n" in got.stdout, got.stdout


def test_readme_shows_the_snippet_mqlflow_shell_runs() -> None:
    from service.shell import GET_PROCESSOR_SNIPPET

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert f"```javascript\n{GET_PROCESSOR_SNIPPET}```" in readme
