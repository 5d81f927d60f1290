"""A 30 s database outage mid-run, with both ``$merge`` and DLQ traffic: Kafka (3
partitions) -> ``$validate`` (dlq) -> 1 s windows -> ``$merge``, the ``dlq`` option into the
same server. The server is a PRIVATE FerretDB on a free port of its own
(``scripts/services.sh`` with ``MQLFLOW_FERRETDB_PORT``; the shared one on 27018 is never
stopped), stopped (SIGKILL) for 30 s while data keeps arriving, then started again on the same files. The final window and DLQ collections must equal an
uninterrupted run's: nothing lost, duplicates only as idempotent rewrites (the DLQ is
durable by default; before, entries written during an outage of 10 s or more were lost).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.append(str(Path(__file__).resolve().parent))

from kafka_flows import new_topic, produce, wait_for
from test_kafka_merge_recovery import (
    INVALID,
    N,
    Processor,
    check_dlq,
    expected,
    flush_records,
    records,
    source_checkpointed,
    windows,
    write_files,
)

from tests.service.svc_helpers import PrivateFerretDB, private_ferretdb

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

OUTAGE_S = 30.0


@pytest.fixture
def ferretdb(tmp_path: Path) -> Iterator[PrivateFerretDB]:
    with private_ferretdb(tmp_path) as f:
        yield f


@pytest.fixture
def processors() -> Iterator[list[Any]]:
    """Processors a failing test leaves running are killed (SIGKILL, by pid)."""
    started: list[Any] = []
    yield started
    for p in started:
        if p.alive():
            p.proc.kill()
            p.proc.wait(10)


def test_30s_database_outage_loses_no_window_and_no_dlq_entry(
    kafka_bootstrap: str, ferretdb: PrivateFerretDB, tmp_path: Path, processors: list[Any]
) -> None:
    client: MongoClient[dict[str, Any]] = MongoClient(ferretdb.uri, tz_aware=True, serverSelectionTimeoutMS=5000)
    dbname = f"sinks_outage_{os.getpid()}_{int(time.time())}"
    db = client[dbname]
    want = expected()

    # -- uninterrupted run ------------------------------------------------------------------
    topic_a = new_topic(kafka_bootstrap, 3, prefix="sinks-out-a")
    spec, conns = write_files(tmp_path, "outa", topic_a, kafka_bootstrap, ferretdb.uri, dbname, "win_a", "dlq_a")
    a = Processor(spec, conns, tmp_path / "a-rec", tmp_path / "a.log")
    processors.append(a)
    a.start()
    wait_for(lambda: source_checkpointed(a.recovery, topic_a), 30, a, "the first checkpoint (uninterrupted)")
    produce(kafka_bootstrap, topic_a, records(0, N) + flush_records())
    wait_for(lambda: db.win_a.count_documents({}) >= len(want) and db.dlq_a.count_documents({}) >= len(INVALID),
             120, a, "all windows and DLQ entries (uninterrupted)")
    time.sleep(1.0)
    a.kill9()
    baseline = windows(db.win_a)
    assert baseline == want
    check_dlq(db.dlq_a, topic_a)

    # -- outage run: the database goes away for 30 s while data keeps coming ------------------
    topic_b = new_topic(kafka_bootstrap, 3, prefix="sinks-out-b")
    spec, conns = write_files(tmp_path, "outb", topic_b, kafka_bootstrap, ferretdb.uri, dbname, "win_b", "dlq_b")
    b = Processor(spec, conns, tmp_path / "b-rec", tmp_path / "b.log")
    processors.append(b)
    b.start()
    wait_for(lambda: source_checkpointed(b.recovery, topic_b), 30, b, "the first checkpoint")
    produce(kafka_bootstrap, topic_b, records(0, 1200))
    wait_for(lambda: db.win_b.count_documents({}) > 0 and db.dlq_b.count_documents({}) > 0, 60, b, "first results")
    client.close()
    ferretdb.kill()
    down_at = time.monotonic()

    def steady() -> None:  # windows close and invalid documents arrive during the outage
        for lo in range(1200, 2100, 30):
            produce(kafka_bootstrap, topic_b, records(lo, lo + 30))
            time.sleep(0.3)

    t = threading.Thread(target=steady)
    t.start()
    t.join()
    time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down_at)))
    assert b.alive(), f"the processor gave up during a {OUTAGE_S:.0f} s outage:\n{b.log.read_text()[-3000:]}"
    ferretdb.up()
    client = MongoClient(ferretdb.uri, tz_aware=True, serverSelectionTimeoutMS=5000)
    db = client[dbname]
    produce(kafka_bootstrap, topic_b, records(2100, N) + flush_records())
    wait_for(lambda: db.win_b.count_documents({}) >= len(want) and db.dlq_b.count_documents({}) >= len(INVALID),
             180, b, "all windows and DLQ entries after the outage")
    time.sleep(1.0)
    b.kill9()
    log = b.log.read_text()
    assert "made no progress for" in log  # the outage was seen, logged and retried
    assert windows(db.win_b) == baseline
    check_dlq(db.dlq_b, topic_b)
    client.drop_database(dbname)
    client.close()
