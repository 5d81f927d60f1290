"""Real mongosh (the copy ``scripts/services.sh up mongosh`` installs) driving the service
in ``--eval`` mode. Missing mongosh is a failure, not a skip."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

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


def test_seed_sp_process_prints_solar_documents(tmp_path: Path) -> None:
    svc = start_service(tmp_path, "--process-max-seconds", "4")
    try:
        r = run_mongosh(svc, SEED_PROCESS)
        assert r.returncode == 0, r.stderr
        out = r.stdout
        assert "device_id: 'device_" in out
        assert "_ts: ISODate(" in out
        assert "type: 'generated'" in out
        assert "max_watts:" in out and "obs: {" in out
    finally:
        svc.stop()


def test_processor_lifecycle_from_mongosh(service: Service) -> None:
    script = """
    let p = sp.createStreamProcessor("shellProc", [
      { $source: { connectionName: "sample_stream_solar" } },
      { $emit: { connectionName: "out", topic: "t" } }
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
