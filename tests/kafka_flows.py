"""Test-only helpers for the Kafka tests: topics, producing/consuming against the real
broker, a stoppable wrapper around a never-ending source, and a flow entry point for
``python -m bytewax.run "kafka_flows:flow_from_spec('<spec.json>')"``.

The flow entry point is the product path (``compile_pipeline`` then ``build_flow``, which
builds the Kafka source and an ``$emit`` sink); other output and the DLQ go to JSON lines.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bson import json_util
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.testing import AbortExecution  # type: ignore[attr-defined]
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from sinks.jsonl import JsonlDirSink
from translator import ir
from translator.compile import build_flow, compile_pipeline
from translator.connections import Connection, ConnectionRegistry
from translator.loader import options_from_mapping

ROOT = Path(__file__).resolve().parents[1]
CONN = "kafka1"


def registry(bootstrap: str) -> ConnectionRegistry:
    return ConnectionRegistry({CONN: Connection(name=CONN, type="kafka", bootstrap_servers=bootstrap)})


def new_topic(bootstrap: str, partitions: int = 3, config: dict[str, str] | None = None, prefix: str = "t") -> str:
    """Create a uniquely named topic and wait until its metadata shows every partition."""
    name = f"mqlflow-{prefix}-{uuid.uuid4().hex[:12]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    fut = admin.create_topics([NewTopic(name, partitions, 1, config=config or {})], operation_timeout=30)
    fut[name].result(timeout=30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        md = admin.list_topics(topic=name, timeout=10).topics.get(name)
        if md is not None and md.error is None and len(md.partitions) == partitions:
            return name
        time.sleep(0.1)
    raise TimeoutError(f"topic {name} did not appear")


def produce(
    bootstrap: str,
    topic: str,
    records: list[dict[str, Any]],
) -> None:
    """Produce ``{partition?, key?, value, headers?, timestamp?}`` records; fail on any error.

    ``value`` may be bytes, str, or a dict (dumped as relaxed Extended JSON).
    """
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True})
    errors: list[KafkaError] = []

    def cb(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            errors.append(err)

    for r in records:
        v = r.get("value")
        if isinstance(v, dict):
            v = json_util.dumps(v)
        if isinstance(v, str):
            v = v.encode()
        kw: dict[str, Any] = {"value": v, "on_delivery": cb}
        for k in ("partition", "key", "headers", "timestamp"):
            if r.get(k) is not None:
                kw[k] = r[k]
        p.produce(topic, **kw)
        p.poll(0)
    left = p.flush(30)
    assert left == 0 and not errors, (left, errors)


def consume_all(bootstrap: str, topic: str, n: int, timeout_s: float = 30.0, partitions: int | None = None) -> list[Message]:
    """Read ``n`` messages of ``topic`` from the beginning (all partitions)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"test-{uuid.uuid4().hex}", "enable.auto.commit": False})
    try:
        if partitions is None:
            md = c.list_topics(topic, timeout=10).topics[topic]
            partitions = len(md.partitions)
        c.assign([TopicPartition(topic, i, 0) for i in range(partitions)])
        out: list[Message] = []
        deadline = time.monotonic() + timeout_s
        while len(out) < n and time.monotonic() < deadline:
            for m in c.consume(n - len(out), timeout=0.5):
                if m.error() is None:
                    out.append(m)
        return out
    finally:
        c.close()


# ---- a stoppable wrapper -------------------------------------------------------------------


class Until(FixedPartitionedSource[Any, Any]):
    """Delegates to ``inner`` and aborts the execution once ``stop()`` is true (checked on
    every poll) or ``timeout_s`` passed: Kafka sources never end by themselves."""

    def __init__(self, inner: FixedPartitionedSource[Any, Any], stop: Callable[[], bool], timeout_s: float = 30.0) -> None:
        self.inner = inner
        self.stop = stop
        self.deadline = time.monotonic() + timeout_s
        self.timed_out = False

    def list_parts(self) -> list[str]:
        return self.inner.list_parts()

    def build_part(self, step_id: str, for_part: str, resume_state: Any) -> StatefulSourcePartition[Any, Any]:
        part = self.inner.build_part(step_id, for_part, resume_state)
        outer = self

        class Part(StatefulSourcePartition[Any, Any]):
            def next_batch(self) -> Any:
                if outer.stop():
                    raise AbortExecution()
                if time.monotonic() > outer.deadline:
                    outer.timed_out = True
                    raise AbortExecution()
                return part.next_batch()

            def next_awake(self) -> Any:
                return part.next_awake()

            def snapshot(self) -> Any:
                return part.snapshot()

            def close(self) -> None:
                part.close()

        return Part()


# ---- subprocess entry point ---------------------------------------------------------------


def write_spec(path: Path, bootstrap: str, pipeline: list[dict[str, Any]], output_dir: Path, options: dict[str, Any] | None = None) -> Path:
    spec = {
        "bootstrap": bootstrap,
        "pipeline": json.loads(json_util.dumps(pipeline)),
        "options": options or {},
        "output_dir": str(output_dir),
    }
    path.write_text(json.dumps(spec))
    return path


def flow_from_spec(spec_path: str) -> Dataflow:
    """Kafka source -> pipeline -> ($emit | JSON lines in ``output_dir``); DLQ -> JSON lines."""
    spec = json.loads(Path(spec_path).read_text())
    reg = registry(spec["bootstrap"])
    o = dict(spec["options"])
    name = o.pop("name", "kafkatest")
    opts = options_from_mapping(o, name=name)
    pipeline = compile_pipeline(json_util.loads(json.dumps(spec["pipeline"])), reg, opts)
    out_dir = Path(spec["output_dir"])
    output = {} if isinstance(pipeline.sink, ir.EmitStage) else {"output_sink": JsonlDirSink(out_dir)}
    return build_flow(pipeline, dlq_sink=JsonlDirSink(out_dir, "dlq"), flow_id="kafkatest", **output)


def read_jsonl(directory: Path, prefix: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for f in sorted(directory.glob(f"{prefix}-*.jsonl")):
        for line in f.read_text().splitlines():
            if line.strip():
                out.append(json_util.loads(line, json_options=json_util.JSONOptions(tz_aware=True)))
    return out


class RecoveringRun:
    """``python -m bytewax.run <target>`` with a recovery directory (checkpoint every
    second), started, and killed with SIGKILL, by pid: the crash-recovery tests' processor."""

    def __init__(self, target: str, recovery: Path, log: Path) -> None:
        self.target = target
        self.recovery = recovery
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        if not recovery.exists():
            recovery.mkdir(parents=True)
            subprocess.run([sys.executable, "-m", "bytewax.recovery", str(recovery), "1"], check=True, cwd=ROOT)

    def start(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "tests"), env.get("PYTHONPATH", "")])
        with self.log.open("ab") as logf:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bytewax.run", self.target, "-r", str(self.recovery), "-s", "1", "-b", "0"],
                cwd=ROOT, env=env, stdout=logf, stderr=subprocess.STDOUT,
            )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        assert self.proc is not None
        assert self.proc.poll() is None, f"processor exited early:\n{self.log.read_text()[-3000:]}"
        self.proc.kill()  # SIGKILL: no snapshot, no close, no flush
        self.proc.wait(10)


def wait_for(pred: Callable[[], bool], timeout_s: float, proc: RecoveringRun, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return
        assert proc.alive(), f"processor died while waiting for {what}:\n{proc.log.read_text()[-3000:]}"
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}:\n{proc.log.read_text()[-3000:]}")


# ---- reading what JSON-lines flows wrote ----------------------------------------------------

JSON_LINES_OPTS = json_util.JSONOptions(tz_aware=True)


def read_docs(directory: Path, prefix: str) -> list[dict[str, Any]]:
    """JSON lines of every worker file; a line torn by ``kill -9`` is cut at the last
    complete document it holds (the restarted process appends after it)."""
    out: list[dict[str, Any]] = []
    for f in sorted(directory.glob(f"{prefix}-*.jsonl")):
        for line in f.read_text().splitlines():
            if not line.strip():
                continue
            try:
                out.append(json_util.loads(line, json_options=JSON_LINES_OPTS))
            except ValueError:
                cut = line.rfind('{"_id"')
                if cut > 0:
                    out.append(json_util.loads(line[cut:], json_options=JSON_LINES_OPTS))
    return out


def window_results(docs: list[dict[str, Any]], fields: tuple[str, ...]) -> tuple[dict[tuple[Any, Any], dict[str, Any]], int]:
    """Window results deduplicated by (_id, window start) as ``$merge`` would, checking
    that every replayed copy carries the same ``fields``. Returns (results, duplicates)."""
    out: dict[tuple[Any, Any], dict[str, Any]] = {}
    dups = 0
    for d in docs:
        key = (d["_id"], d["_stream_meta"]["window"]["start"])
        vals = {f: d[f] for f in fields}
        if key in out:
            dups += 1
            assert out[key] == vals, f"a replayed window result differs: {key}: {out[key]} vs {vals}"
        out[key] = vals
    return out, dups


def kill_while_producing(
    bootstrap: str, topic: str, records: Callable[[int, int], list[dict[str, Any]]],
    lo: int, hi: int, step: int, kill: Callable[[], None],
) -> None:
    """Produce ``records(lo, hi)`` ``step`` at a time every 0.1 s on a thread and call
    ``kill`` 1.5 s in: a crash mid-stream, with windows closing and offsets moving."""

    def steady() -> None:
        for a in range(lo, hi, step):
            produce(bootstrap, topic, records(a, a + step))
            time.sleep(0.1)

    t = threading.Thread(target=steady)
    t.start()
    time.sleep(1.5)
    kill()
    t.join()
