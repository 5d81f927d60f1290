"""A MongoDB server that accepts connections and then stops answering: a loopback TCP
proxy the test controls, in front of the real FerretDB. A ``$merge`` write that makes no
progress must be logged, show in ``stats().sinkStalls``, be retried, and fail the
processor with a clear ``errorMsg`` once it waited ``MQLFLOW_SINK_GIVE_UP_S``; when the
server answers again before that, the output is complete and exact.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pymongo
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.append(str(Path(__file__).resolve().parents[1]))

from kafka_flows import new_topic, produce

from tests.service import svc_helpers
from tests.service.svc_helpers import start_service
from tests.sinks.stall_proxy import PROXY_OPTS, StallProxy, upstream_of

pytestmark = [pytest.mark.kafka, pytest.mark.mongodb, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable


class Svc:
    """``python -m service serve`` with the stalled connection; children inherit the env."""

    def __init__(self, tmp: Path, bootstrap: str, proxy_uri: str, give_up_s: float) -> None:
        self.service = start_service(
            tmp, "--max-restarts", "0", env={"MQLFLOW_SINK_GIVE_UP_S": str(give_up_s)}, connections=(
                f'[connections.kafka1]\ntype = "kafka"\nbootstrap_servers = "{bootstrap}"\n\n'
                f'[connections.stalled]\ntype = "mongodb"\nuri = "{proxy_uri}"\n'
            ),
        )
        self.log = self.service.log
        self.state = self.service.state_dir
        self.client: pymongo.MongoClient[dict[str, Any]] = self.service.client()

    def stats(self, name: str) -> dict[str, Any]:
        return dict(self.client.admin.command({"getStreamProcessorStats": name})["stats"])

    def child_log(self, name: str = "") -> str:
        return self.service.child_log()

    def stop(self) -> None:
        self.client.close()
        self.service.stop()


@pytest.fixture
def proxy(mongodb_uri: str) -> Iterator[StallProxy]:
    p = StallProxy(upstream_of(mongodb_uri))
    yield p
    p.close()


def wait_until(pred: Callable[[], Any], timeout_s: float, what: str, log: Callable[[], str]) -> Any:
    return svc_helpers.wait_until(pred, timeout_s, what, every=0.25, log=log)


def msgs(lo: int, hi: int) -> list[dict[str, Any]]:
    return [{"partition": 0, "value": {"_id": f"m{i}", "i": i}} for i in range(lo, hi)]


def start(svc: Svc, name: str, topic: str, db: str) -> None:
    pipeline = [
        {"$source": {"connectionName": "kafka1", "topic": topic, "config": {"auto_offset_reset": "earliest"}}},
        {"$merge": {"into": {"connectionName": "stalled", "db": db, "coll": "out"}}},
    ]
    svc.client.admin.command({"createStreamProcessor": name, "pipeline": pipeline})
    svc.client.admin.command({"startStreamProcessor": name})


def test_stalled_server_shows_in_stats_then_fails_the_processor_with_a_clear_error(
    tmp_path: Path, kafka_bootstrap: str, mongo_db: Any, proxy: StallProxy
) -> None:
    svc = Svc(tmp_path, kafka_bootstrap, f"mongodb://127.0.0.1:{proxy.port}/?{PROXY_OPTS}", give_up_s=12)
    try:
        topic = new_topic(kafka_bootstrap, 1, prefix="sinks-stall")
        produce(kafka_bootstrap, topic, msgs(0, 5))
        start(svc, "stallA", topic, mongo_db.name)
        wait_until(lambda: mongo_db.out.count_documents({}) == 5, 60, "the first 5 documents", svc.child_log)

        proxy.forwarding.clear()  # the server still accepts connections, but never answers
        produce(kafka_bootstrap, topic, msgs(5, 10))
        st = wait_until(
            lambda: (s := svc.stats("stallA")).get("sinkStalls") and s["sinkStalls"][0]["retries"] >= 1 and s,
            40, "a sink stall with a retry in stats()", lambda: f"{svc.child_log('stallA')[-2000:]}\n{svc.stats('stallA')}",
        )
        (stall,) = st["sinkStalls"]
        assert stall["processor"] == "stallA"
        assert stall["sink"] == f"$merge connection 'stalled' (mongodb://127.0.0.1:{proxy.port}/?{PROXY_OPTS})"
        assert stall["operation"] == f"writing 5 document(s) to {mongo_db.name}.out"
        assert stall["waitingMillis"] >= 5000
        assert stall["lastError"].startswith("5 pending: ")
        assert st["status"] == "running"

        st = wait_until(
            lambda: (s := svc.stats("stallA"))["status"] == "error" and s, 60, "the processor to fail",
            lambda: f"{svc.child_log('stallA')[-2000:]}\n{svc.stats('stallA')}",
        )
        err = st["errorMsg"]
        prefix = (
            "processor failed after 1 attempt: mqlflow: sink failed: processor 'stallA': $merge connection 'stalled' "
            f"(mongodb://127.0.0.1:{proxy.port}/?{PROXY_OPTS}) made no progress for "
        )
        assert err.startswith(prefix), err
        waited, rest = err[len(prefix):].split(" s ", 1)
        assert 12 <= int(waited) < 30
        assert rest.startswith(f"(writing 5 document(s) to {mongo_db.name}.out); last error: 5 pending: "), rest
        assert "Topology Description" not in rest
        log = svc.child_log("stallA")
        assert f"processor 'stallA': $merge connection 'stalled' (mongodb://127.0.0.1:{proxy.port}/?{PROXY_OPTS}): writing 5 document(s) to {mongo_db.name}.out made no progress for " in log
        assert sorted(d["_id"] for d in mongo_db.out.find()) == [f"m{i}" for i in range(5)]
    finally:
        svc.stop()


def test_a_write_retried_through_a_stall_completes_exactly(
    tmp_path: Path, kafka_bootstrap: str, mongo_db: Any, proxy: StallProxy
) -> None:
    svc = Svc(tmp_path, kafka_bootstrap, f"mongodb://127.0.0.1:{proxy.port}/?{PROXY_OPTS}", give_up_s=300)
    try:
        topic = new_topic(kafka_bootstrap, 1, prefix="sinks-stall")
        produce(kafka_bootstrap, topic, msgs(0, 5))
        start(svc, "stallB", topic, mongo_db.name)
        wait_until(lambda: mongo_db.out.count_documents({}) == 5, 60, "the first 5 documents", svc.child_log)
        proxy.forwarding.clear()
        produce(kafka_bootstrap, topic, msgs(5, 10))
        wait_until(lambda: svc.stats("stallB").get("sinkStalls"), 40, "a sink stall in stats()", svc.child_log)
        time.sleep(3)
        proxy.forwarding.set()
        wait_until(lambda: mongo_db.out.count_documents({}) == 10, 60, "all 10 documents", svc.child_log)
        wait_until(lambda: not svc.stats("stallB").get("sinkStalls"), 20, "the stall to clear", svc.child_log)
        # Fast writes again: the bulk size doubles back to the cap, one fast write at a time
        # (the stall may have halved it more than once, so it may take a few writes).
        n = 10
        while n < 50 and (n == 10 or "bulk writes now hold at most 50 operation(s)" not in svc.child_log("stallB")):
            produce(kafka_bootstrap, topic, msgs(n, n + 5))
            n += 5
            want = n
            wait_until(lambda: mongo_db.out.count_documents({}) == want, 60, f"all {want} documents", svc.child_log)  # noqa: B023
        assert sorted((d["_id"], d["i"]) for d in mongo_db.out.find()) == sorted((f"m{i}", i) for i in range(n))
        st = svc.stats("stallB")
        assert st["status"] == "running" and "errorMsg" not in st
        log = svc.child_log("stallB")
        assert " done after " in log
        # The socket timeout halved the bulk size (FerretDB cap 50); fast writes restored it.
        assert "bulk writes now hold at most 25 operation(s)" in log, log[-3000:]
        assert "bulk writes now hold at most 50 operation(s)" in log, log[-3000:]
    finally:
        svc.stop()
