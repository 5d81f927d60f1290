"""The DLQ collection sink and writer against the real server (docs/semantics.md#dlq)."""

from __future__ import annotations

import datetime as dt
import re
import socket
import threading
import time
from typing import Any

import pytest
from bytewax import operators as op
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSource, run_main

from sinks.dlq import LATE_REASON, dlq_document
from sinks.mongo_dlq import STATS, DlqWriter, MongoDlqSink, dlq_writer_factory
from sinks.mongo_io import SinkStalledError
from translator.compile import compile_pipeline
from translator.connections import Connection, ConnectionRegistry
from translator.errors import TranslateError
from translator.ir import DlqTarget
from translator.options import ProcessorOptions

Doc = dict[str, Any]


def registry(uri: str) -> ConnectionRegistry:
    return ConnectionRegistry({"dlqConn": Connection(name="dlqConn", type="atlas", uri=uri)})


def dlq_conn(reg: ConnectionRegistry, target: DlqTarget) -> Connection:
    """The DLQ's connection as the product resolves it: ``compile_pipeline``, from ``options.dlq``."""
    p = compile_pipeline([{"$source": {"documents": []}}], reg, ProcessorOptions(name="p", dlq=target))
    assert p.connections.dlq is not None
    return p.connections.dlq


@pytest.mark.mongodb
def test_dlq_sink_writes_shaped_documents_and_counts_them(mongodb_uri: str, mongo_db: Any) -> None:
    bad = [{"_id": i, "temp": "hot", "_ts": dt.datetime(2024, 8, 12, 21, 41, i)} for i in range(5)]
    items = [
        [dlq_document("Input document found to be invalid in $validate stage", d, "proc") for d in bad[:3]],
        [],
        [dlq_document(LATE_REASON, d, "proc", missedWindowStartTimes=[dt.datetime(2024, 1, 1)]) for d in bad[3:]],
    ]
    before = STATS.written
    target = DlqTarget("dlqConn", mongo_db.name, "theBadOnes")
    sink = MongoDlqSink(target, dlq_conn(registry(mongodb_uri), target), "proc")
    flow = Dataflow("dlq")
    op.output("dlq", op.input("in", flow, TestingSource(items)), sink)
    run_main(flow)
    assert sink.written == 5 and sink.lost == 0
    assert STATS.written - before == 5
    got = sorted(mongo_db["theBadOnes"].find(), key=lambda d: d["doc"]["_id"])
    assert [d["doc"] for d in got] == bad
    assert [d["errInfo"] for d in got] == [{"reason": "Input document found to be invalid in $validate stage"}] * 3 + [
        {"reason": LATE_REASON}
    ] * 2
    assert all(d["processorName"] == "proc" and isinstance(d["dlqTime"], dt.datetime) for d in got)
    assert [d.get("missedWindowStartTimes") for d in got] == [None] * 3 + [[dt.datetime(2024, 1, 1)]] * 2


@pytest.mark.mongodb
def test_writer_batches_and_a_replayed_batch_counts_as_written(mongodb_uri: str, mongo_db: Any) -> None:
    target = DlqTarget("dlqConn", mongo_db.name, "dlq")
    make = dlq_writer_factory(target, dlq_conn(registry(mongodb_uri), target))
    w = make()
    w.batch_size = 7
    docs = [dlq_document("r", {"i": i}, "p") for i in range(20)]
    w.write(docs)
    assert w.flush(10)
    w.write(docs[:4])  # the same _ids again: duplicates of what is already stored
    w.close()
    assert w.written == 24 and w.lost == 0
    assert sorted(d["doc"]["i"] for d in mongo_db["dlq"].find()) == list(range(20))


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_best_effort_writer_never_blocks_and_counts_what_it_loses() -> None:
    """MQLFLOW_DLQ_MODE=best-effort: an unreachable DLQ server costs nothing to the caller."""
    uri = f"mongodb://127.0.0.1:{_closed_port()}/?serverSelectionTimeoutMS=200"
    w = DlqWriter.to(uri, "db", "dlq", max_queue=200, durable=False)
    w.best_effort_give_up_s = 0.5
    w.backoff_s = 0.01
    lost_before = STATS.lost
    t0 = time.monotonic()
    for i in range(4):  # 2 batches queued, 2 over the bound (max_queue // 100)
        w.write([dlq_document("r", {"i": i, "j": j}, "p") for j in range(2)])
    assert time.monotonic() - t0 < 0.2
    assert w.flush(20)
    w.close()
    assert w.written == 0 and w.lost == 8
    assert STATS.lost - lost_before == 8


def test_durable_writer_retries_then_fails_with_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """The default: the write blocks the caller (so no checkpoint passes it), retries, and
    after the give-up time raises an error naming the processor, the DLQ and the wait."""
    from sinks import mongo_io

    monkeypatch.setenv("MQLFLOW_SINK_GIVE_UP_S", "1.5")
    # The reason is kept for the flow process's last stderr line; keep this test's own
    # list, so the pytest process does not print it at exit.
    monkeypatch.setattr(mongo_io, "_fatal", [])
    port = _closed_port()
    w = DlqWriter.to(f"mongodb://127.0.0.1:{port}/?serverSelectionTimeoutMS=300", "db", "dlq")
    w.processor_name = "proc7"
    w.backoff_s = 0.05
    t0 = time.monotonic()
    with pytest.raises(SinkStalledError) as ei:
        w.write([dlq_document("r", {"i": 1}, "proc7")])
    assert 1.5 <= time.monotonic() - t0 < 10
    msg = str(ei.value)
    assert msg.startswith(
        f"processor 'proc7': DLQ db.dlq (mongodb://127.0.0.1:{port}/?serverSelectionTimeoutMS=300) made no progress for "
    )
    assert "(writing 1 DLQ document(s)); last error: ServerSelectionTimeoutError: " in msg
    assert mongo_io._fatal == [msg]  # printed last by a flow process, for errorMsg
    assert w.written == 0 and w.lost == 0  # not lost: the processor fails and replays it
    w.close()


@pytest.mark.mongodb
def test_processors_share_a_dlq_collection_and_replays_overwrite(mongodb_uri: str, mongo_db: Any) -> None:
    """The processor name is part of a Kafka DLQ entry's ``_id``: two processors reading
    the same topic into one collection keep both entries; a replay of one overwrites."""
    def kafka_doc(off: int) -> Doc:
        return {"x": off, "_stream_meta": {"source": {"type": "kafka", "topic": "t1", "partition": 0, "offset": off}}}

    target = DlqTarget("dlqConn", mongo_db.name, "shared")
    conn = dlq_conn(registry(mongodb_uri), target)
    for name in ("procA", "procB", "procA"):  # procA twice: a replay after a crash
        w = DlqWriter(target, conn, name)
        w.write([dlq_document("bad", kafka_doc(off), name) for off in range(60)])  # > one FerretDB bulk
        w.close()
        assert (w.written, w.lost) == (60, 0)
    got = sorted((d["processorName"], d["doc"]["x"]) for d in mongo_db["shared"].find())
    assert got == sorted([("procA", o) for o in range(60)] + [("procB", o) for o in range(60)])
    ids = {d["_id"] for d in mongo_db["shared"].find()}
    assert len(ids) == 120


def test_dlq_needs_a_mongodb_connection() -> None:
    reg = ConnectionRegistry({"k": Connection(name="k", type="kafka", bootstrap_servers="h:1")})
    with pytest.raises(TranslateError) as ei:
        dlq_conn(reg, DlqTarget("k", "db", "c"))
    assert str(ei.value) == (
        "options.dlq.connectionName: connection 'k' is of type 'kafka'; "
        "a MongoDB connection (type 'atlas' or 'mongodb') is needed"
    )
    with pytest.raises(TranslateError) as ei:
        dlq_conn(reg, DlqTarget("nope", "db", "c"))
    assert str(ei.value) == "options.dlq.connectionName: unknown connection 'nope'; known connections: k, sample_stream_solar"


def test_target_mode_wins_over_the_process_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """``dlq.mode`` is the processor's choice; ``MQLFLOW_DLQ_MODE`` only the default."""
    conn = Connection(name="c", type="mongodb", uri="mongodb://127.0.0.1:1/")
    for env, mode, durable in [
        (None, None, True), ("best-effort", None, False), ("durable", "best-effort", False),
        ("best-effort", "durable", True), (None, "best-effort", False),
    ]:
        if env is None:
            monkeypatch.delenv("MQLFLOW_DLQ_MODE", raising=False)
        else:
            monkeypatch.setenv("MQLFLOW_DLQ_MODE", env)
        w = DlqWriter(DlqTarget("c", "db", "dlq", mode), conn, "p")
        assert w.durable is durable, (env, mode)
        w.close()


@pytest.mark.mongodb
def test_dlq_bulk_halves_after_a_socket_timeout_and_grows_back(
    mongodb_uri: str, mongo_db: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The DLQ writer sizes its bulk writes by the ``$merge`` rule (AdaptiveBulk): a real
    socket timeout (a proxy that stops answering, as in test_sink_stall) halves it from
    FerretDB's cap of 50, the stall shows in ``sinkStalls`` meanwhile, and fast writes
    double it back. Nothing is lost or written twice."""
    from tests.sinks.stall_proxy import PROXY_OPTS, StallProxy, upstream_of
    from translator import metrics

    caplog.set_level("WARNING", logger="mqlflow.sink")
    proxy = StallProxy(upstream_of(mongodb_uri))
    uri = f"mongodb://127.0.0.1:{proxy.port}/?{PROXY_OPTS}"
    w = DlqWriter.to(uri, mongo_db.name, "dlq", durable=True)
    w.processor_name = "adaptP"
    w.backoff_s = 0.05

    def docs(lo: int, hi: int) -> list[Doc]:
        return [dlq_document("bad", {"i": i}, "adaptP") for i in range(lo, hi)]

    try:
        w.write(docs(0, 50))
        assert w._bulk is not None and (w._bulk.max, w._bulk.size) == (50, 50)
        proxy.forwarding.clear()
        failed: list[BaseException] = []

        def stalled_write() -> None:
            try:
                w.write(docs(50, 100))
            except BaseException as exc:  # reported by the assertion below
                failed.append(exc)

        t = threading.Thread(target=stalled_write)
        t.start()
        deadline = time.monotonic() + 30
        while not (stalls := metrics.sink_stalls()) or "25 operation(s)" not in caplog.text:
            assert time.monotonic() < deadline, (stalls, caplog.text[-2000:])
            time.sleep(0.1)
        (stall,) = stalls
        assert stall["processor"] == "adaptP"
        assert stall["sink"] == f"DLQ {mongo_db.name}.dlq ({uri})"
        assert stall["operation"] == "writing 50 DLQ document(s)"
        proxy.forwarding.set()
        t.join(60)
        assert not t.is_alive() and failed == []
        assert metrics.sink_stalls(0) == []
        # Fast writes again: each doubles the bulk back toward the cap (the stall may have
        # halved it more than once).
        n = 100
        while "at most 50 operation(s)" not in caplog.text:
            assert n < 400, caplog.text[-2000:]
            w.write(docs(n, n + 50))
            n += 50
        w.close()
    finally:
        proxy.close()
    sizes = [
        m.groups() for r in caplog.records
        if (m := re.fullmatch(
            rf"processor 'adaptP': DLQ {mongo_db.name}\.dlq \({re.escape(uri)}\): "
            r"bulk writes now hold at most (\d+) operation\(s\) \(last took \d+\.\d s(, timed out)?\)",
            r.getMessage(),
        ))
    ]
    assert sizes[0] == ("25", ", timed out") and sizes[-1] == ("50", None), sizes
    assert (w.written, w.lost) == (n, 0)
    got = list(mongo_db["dlq"].find({}, {"_id": 0, "doc": 1, "errInfo": 1, "processorName": 1}))
    assert sorted(d["doc"]["i"] for d in got) == list(range(n))
    assert all(d["errInfo"] == {"reason": "bad"} and d["processorName"] == "adaptP" for d in got)
