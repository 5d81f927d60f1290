"""(kf) PyFlink SQL on workload K: the Kafka table connector over the same topic.

Runs in the PyFlink virtualenv of (e) with the connector jar from Maven Central
(``org.apache.flink:flink-sql-connector-kafka``, the newest release for the installed
Flink line; see ``JAR_URL``) in ``.cache/bench-venvs/jars``. Parallelism 1, the topic read
from the earliest offset up to the offsets at the start (``scan.bounded.mode``), so the
job ends by itself; the watermark is ``ts - 3 s`` per Kafka partition (the Kafka
source keeps one per split and forwards the minimum, as ASP does), then (e)'s
``TUMBLE`` query; the end markers' group is filtered out. As in (e), the JVM and table
environment start before the clock; the job (plan, read, parse, window, collect) is timed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pyflink.table import EnvironmentSettings, TableEnvironment

from bench.engines.flink_engine import COLUMNS_DDL, _query
from bench.kafka_topic import END_GROUP, bootstrap
from bench.workloads import LATENESS_MS, Workload

ROOT = Path(__file__).resolve().parents[2]
JAR_VERSION = "5.0.0-2.2"
JAR = ROOT / ".cache" / "bench-venvs" / "jars" / f"flink-sql-connector-kafka-{JAR_VERSION}.jar"
JAR_URL = (
    "https://repo1.maven.org/maven2/org/apache/flink/flink-sql-connector-kafka/"
    f"{JAR_VERSION}/flink-sql-connector-kafka-{JAR_VERSION}.jar"
)

SOURCE_DDL = "CREATE TABLE src_all (" + COLUMNS_DDL + """) WITH (
  'connector' = 'kafka',
  'topic' = '{topic}',
  'properties.bootstrap.servers' = '{bootstrap}',
  'properties.group.id' = 'perf-flink-{stamp}',
  'scan.startup.mode' = 'earliest-offset',
  'scan.bounded.mode' = 'latest-offset',
  'format' = 'json'
)
"""


def prepare(wl: Workload, topic: str) -> TableEnvironment:
    if not JAR.exists():
        raise RuntimeError(f"no Kafka connector jar {JAR}; download it with: curl -fL -o {JAR} {JAR_URL}")
    env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    conf = env.get_config()
    conf.set("parallelism.default", "1")
    conf.set("table.local-time-zone", "UTC")
    conf.set("pipeline.jars", JAR.as_uri())
    env.execute_sql(SOURCE_DDL.format(topic=topic, bootstrap=bootstrap(), stamp=time.time_ns(),
                                      lateness=LATENESS_MS // 1000))
    env.execute_sql(f"CREATE TEMPORARY VIEW src AS SELECT * FROM src_all WHERE group_id <> {END_GROUP}")
    return env


def run(wl: Workload, env: TableEnvironment) -> tuple[list[Any], float, float | None]:
    """-> (result rows, elapsed s, first result s)."""
    out: list[Any] = []
    first = None
    t0 = time.perf_counter()
    with env.execute_sql(_query(wl)).collect() as results:
        for row in results:
            if first is None:
                first = time.perf_counter()
            out.append(tuple(row))
    return out, time.perf_counter() - t0, None if first is None else first - t0
