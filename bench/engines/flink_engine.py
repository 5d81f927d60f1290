"""(e) PyFlink SQL: window table functions ``TUMBLE`` / ``HOP`` over the same documents.

Runs in its own virtualenv (``.cache/bench-venvs/flink``, ``pip install apache-flink``,
Java 17). Streaming mode, parallelism 1, the filesystem JSON source, a watermark of
``ts - 3 s`` (ASP's default allowedLateness), results collected into Python. The JVM
and the table environment start before the clock; the job (plan, read, parse, window,
collect) is timed.
"""

from __future__ import annotations

import calendar
import csv
import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from pyflink.table import EnvironmentSettings, TableEnvironment

from bench.engines.files import write_jsonl
from bench.workloads import C_HOT_TEMP, C_MIN_TEMP, LATENESS_MS, Workload

# The seed-shaped columns and event-time watermark every Flink peer reads (files or Kafka).
COLUMNS_DDL = """
  device_id STRING,
  group_id BIGINT,
  `timestamp` STRING,
  max_watts INT,
  event_type INT,
  obs ROW<watts INT, temp INT>,
  ts AS TO_TIMESTAMP(`timestamp`, 'yyyy-MM-dd''T''HH:mm:ss.SSSXXX'),
  WATERMARK FOR ts AS ts - INTERVAL '{lateness}' SECOND
"""

SOURCE_DDL = (
    "CREATE TABLE src (" + COLUMNS_DDL + ") WITH ('connector' = 'filesystem', 'path' = '{path}', 'format' = 'json')"
)


def prepare(wl: Workload, batches: Iterator[list[dict[str, Any]]]) -> tuple[TableEnvironment, str]:
    path = write_jsonl(batches)
    env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    conf = env.get_config()
    conf.set("parallelism.default", "1")
    conf.set("table.local-time-zone", "UTC")
    env.execute_sql(SOURCE_DDL.format(path=path, lateness=LATENESS_MS // 1000))
    return env, path


def _query(wl: Workload) -> str:
    stats = (
        "SELECT window_start, group_id, MIN(obs.temp), MAX(obs.temp), AVG(CAST(obs.temp AS DOUBLE)), "
        "STDDEV_POP(CAST(obs.temp AS DOUBLE)) FROM TABLE({win}) GROUP BY window_start, window_end, group_id"
    )
    if wl.kind == "tumbling":
        return stats.format(win=f"TUMBLE(TABLE src, DESCRIPTOR(ts), INTERVAL '{wl.size_ms // 1000}' SECOND)")
    if wl.kind == "hopping":
        return stats.format(
            win=f"HOP(TABLE src, DESCRIPTOR(ts), INTERVAL '{wl.hop_ms // 1000}' SECOND, INTERVAL '{wl.size_ms // 1000}' SECOND)"
        )
    return (
        f"SELECT device_id, group_id, ts, obs.temp, obs.temp >= {C_HOT_TEMP}, CAST(obs.watts AS DOUBLE) / max_watts "
        f"FROM src WHERE event_type = 0 AND obs.temp >= {C_MIN_TEMP}"
    )


SINK_DDL = """
CREATE TABLE out_c (
  device_id STRING, group_id BIGINT, ts TIMESTAMP(3), temp INT, hot BOOLEAN, pct DOUBLE
) WITH ('connector' = 'filesystem', 'path' = '{path}', 'format' = 'csv')
"""


def run(wl: Workload, prepared: tuple[TableEnvironment, str]) -> tuple[list[Any], float | None]:
    """Window results (a few rows) are collected into Python; workload C's rows go to a
    CSV sink read back after the clock stops (PyFlink's ``collect`` costs milliseconds
    per row)."""
    env, path = prepared
    out: list[Any] = []
    first = None
    try:
        if wl.windowed:
            with env.execute_sql(_query(wl)).collect() as results:
                for row in results:
                    if first is None:
                        first = time.perf_counter()
                    out.append(tuple(row))
        else:
            out_dir = tempfile.mkdtemp(prefix="mqlbench-flink-")
            env.execute_sql(SINK_DDL.format(path=out_dir))
            env.execute_sql(f"INSERT INTO out_c {_query(wl)}").wait()
            out.append(out_dir)
    finally:
        os.unlink(path)
    return out, first


def _ms(dt: datetime) -> int:
    return calendar.timegm(dt.timetuple()) * 1000 + dt.microsecond // 1000


def to_rows(wl: Workload, out: list[Any]) -> list[Any]:
    if not wl.windowed:
        rows = []
        for root, _, files in os.walk(out[0]):
            for name in files:
                if name.startswith("."):
                    continue
                with open(os.path.join(root, name), newline="") as f:
                    for dev, g, ts, temp, hot, pct in csv.reader(f):
                        ms = _ms(datetime.fromisoformat(ts))
                        rows.append((dev, int(g), ms, int(temp), hot == "true", float(pct)))
        shutil.rmtree(out[0], ignore_errors=True)
        return rows
    wrows: list[Any] = []
    for start, g, mn, mx, avg, std in out:
        wrows.append((_ms(start), int(g), int(mn), int(mx), float(avg), float(std) if not math.isnan(std) else 0.0))
    return wrows
