"""Processor names are data, never paths: hostile names through the real service.

Each measured case (``"/some/dir"``, ``"../../x"``, ``"."``, ``".."``, an absolute path
to a folder of the test's own) is created, started (which writes a definition and
checkpoints) and dropped through a real ``mqlflow serve`` with its real child flow.
Nothing outside ``--state-dir`` may change, and another processor's checkpoints and
``processors.db`` must survive. Names that cannot be data (empty, NUL, control
characters, over-long, the reserved ``sp.process`` prefix) are refused at create."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymongo
import pytest
from svc_secure import RealService, mongodb_uri, start_real

pytestmark = [pytest.mark.mongodb, pytest.mark.slow]

DB = "svc_security_names"


def pipeline() -> list[dict[str, Any]]:
    return [
        {"$source": {"connectionName": "sample_stream_solar"}},
        {"$merge": {"into": {"connectionName": "out", "db": DB, "coll": "solar"}}},
    ]


def snapshot(root: Path, *skip: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under ``root`` but ``skip``: (size, mtime_ns)."""
    out: dict[str, tuple[int, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        dirnames[:] = [n for n in dirnames if d / n not in skip]
        for n in [*dirnames, *filenames]:
            if d / n in skip:
                continue
            st = (d / n).lstat()
            out[str(d / n)] = (st.st_size, st.st_mtime_ns)
    return out


def files_under(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()}


@pytest.fixture
def svc(tmp_path: Path) -> Iterator[RealService]:
    # The service runs in tmp/work/a/b, the state dir is tmp/work/a/b/state: "../../x"
    # relative to processors/ and to the cwd both land inside tmp, where we can watch.
    work = tmp_path / "work" / "a" / "b"
    work.mkdir(parents=True)
    s = start_real(tmp_path, uri=mongodb_uri(), state_dir=work / "state", cwd=work)
    yield s
    s.stop()


def plant(tmp: Path) -> None:
    """Victim folders with files where the measured names pointed to."""
    for rel in ("x", "work/a/x", "work/x", "some/dir", "victim", "work/a/b/keep-me"):
        d = tmp / rel
        d.mkdir(parents=True, exist_ok=True)
        (d / "data.txt").write_text(f"precious {rel}\n")


def test_hostile_names_stay_inside_the_state_dir(svc: RealService, tmp_path: Path) -> None:
    plant(tmp_path)
    c = svc.client()
    try:
        c.admin.command({"createStreamProcessor": "keeper", "pipeline": pipeline()})
        c.admin.command({"startStreamProcessor": "keeper"})
        keeper_id = c.admin.command({"listStreamProcessors": 1})["streamProcessors"][0]["id"]
        keeper_dir = svc.state_dir / "processors" / keeper_id
        assert (keeper_dir / "definition.json").is_file()
        keeper_files = files_under(keeper_dir / "recovery")
        assert keeper_files, "start must initialise the keeper's checkpoints"

        root_some = (Path("/some").exists(), Path("/some/dir").exists())
        before = snapshot(tmp_path, svc.state_dir, svc.log)
        names = ["/some/dir", "../../x", ".", "..", str(tmp_path / "victim"), "a/b", "processors",
                 "../../../../../../tmp", keeper_id]
        for name in names:
            c.admin.command({"createStreamProcessor": name, "pipeline": pipeline()})
            c.admin.command({"startStreamProcessor": name})
            entry = c.admin.command({"listStreamProcessors": 1, "filter": {"name": name}})
            (listed,) = entry["streamProcessors"]
            workdir = svc.state_dir / "processors" / listed["id"]
            assert listed["id"] != keeper_id
            assert (workdir / "definition.json").is_file(), name
            assert files_under(workdir / "recovery"), name
            c.admin.command({"stopStreamProcessor": name})
            c.admin.command({"dropStreamProcessor": name})
            assert not workdir.exists(), name
        after = snapshot(tmp_path, svc.state_dir, svc.log)
        assert after == before
        assert (Path("/some").exists(), Path("/some/dir").exists()) == root_some
        assert (svc.state_dir / "processors.db").is_file()
        assert keeper_files <= files_under(keeper_dir / "recovery")
        assert sorted(os.listdir(svc.state_dir / "processors")) == [keeper_id]
        (keeper,) = c.admin.command({"listStreamProcessors": 1})["streamProcessors"]
        assert (keeper["name"], keeper["state"]) == ("keeper", "STARTED")
        for rel in ("x", "work/a/x", "work/x", "some/dir", "victim", "work/a/b/keep-me"):
            assert (tmp_path / rel / "data.txt").read_text() == f"precious {rel}\n"
    finally:
        c.close()


REFUSED = [
    ("a" * 300, "processor name is 300 bytes long; at most 255 bytes of UTF-8 are allowed"),
    ("é" * 128, "processor name is 256 bytes long; at most 255 bytes of UTF-8 are allowed"),
    ("bad\x00name", "processor name must not contain a NUL character"),
    ("line\nbreak", "processor name must not contain control characters (U+000A at position 4)"),
    ("tab\there", "processor name must not contain control characters (U+0009 at position 3)"),
    ("del\x7f", "processor name must not contain control characters (U+007F at position 3)"),
    ("__process_abc", "processor names starting with '__process_' are reserved for sp.process"),
    ("", "createStreamProcessor must be a non-empty string processor name"),
    ("   ", "createStreamProcessor must be a non-empty string processor name"),
    (42, "createStreamProcessor must be a non-empty string processor name"),
    (["a"], "createStreamProcessor must be a non-empty string processor name"),
]


@pytest.mark.parametrize(("name", "message"), REFUSED, ids=[str(i) for i in range(len(REFUSED))])
def test_bad_names_are_refused_at_create(svc: RealService, name: Any, message: str) -> None:
    with svc.client() as c:
        with pytest.raises(pymongo.errors.OperationFailure) as e:
            c.admin.command({"createStreamProcessor": name, "pipeline": pipeline()})
        assert e.value.code == 9
        assert e.value.details is not None
        assert e.value.details["errmsg"] == message
        assert c.admin.command({"listStreamProcessors": 1})["streamProcessors"] == []
    assert not (svc.state_dir / "processors").exists() or not os.listdir(svc.state_dir / "processors")
    assert "Traceback" not in svc.log.read_text()


def test_longest_name_is_accepted(svc: RealService) -> None:
    name = "é" * 127 + "z"  # 255 bytes of UTF-8
    with svc.client() as c:
        c.admin.command({"createStreamProcessor": name, "pipeline": pipeline()})
        c.admin.command({"startStreamProcessor": name})
        st = c.admin.command({"getStreamProcessorStats": name})["stats"]
        assert (st["name"], st["status"]) == (name, "running")
        c.admin.command({"dropStreamProcessor": name})
        assert c.admin.command({"listStreamProcessors": 1})["streamProcessors"] == []


def test_old_name_keyed_folder_is_moved_to_the_id_folder(tmp_path: Path) -> None:
    """A state dir of the old layout (``processors/<name>``) keeps its checkpoints."""
    uri = mongodb_uri()
    svc = start_real(tmp_path, uri=uri)
    try:
        with svc.client() as c:
            c.admin.command({"createStreamProcessor": "old", "pipeline": pipeline()})
            c.admin.command({"startStreamProcessor": "old"})
            pid = c.admin.command({"listStreamProcessors": 1})["streamProcessors"][0]["id"]
    finally:
        svc.proc.send_signal(signal.SIGTERM)
        svc.proc.wait(30)
    new = svc.state_dir / "processors" / pid
    old = svc.state_dir / "processors" / "old"
    new.rename(old)  # what a service before this change left behind
    (old / "marker").write_text("from the old layout")
    saved = files_under(old / "recovery")
    svc = start_real(tmp_path, uri=uri)  # resumes the STARTED processor
    try:
        assert not old.exists()
        assert (new / "marker").read_text() == "from the old layout"
        assert saved <= files_under(new / "recovery")
        with svc.client() as c:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                st = c.admin.command({"getStreamProcessorStats": "old"})["stats"]
                if st["status"] == "running" and (new / "child.pid").exists():
                    break
                time.sleep(0.2)
            assert st["status"] == "running"
            assert (new / "child.pid").exists()
    finally:
        svc.stop()
