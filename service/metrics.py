"""Prometheus metrics for running processors, from the children's side-channel figures."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import start_http_server
from prometheus_client.core import REGISTRY, CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from service.protocol import COUNTERS

if TYPE_CHECKING:
    from service.supervisor import Supervisor


class ProcessorCollector(Collector):
    """Reads live figures at scrape time; nothing is copied per document."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        runs = [r for r in self.supervisor.runs.values() if not r.temporary]
        for c in COUNTERS:
            fam = CounterMetricFamily(c.metric, c.help, labels=["processor"])
            for r in runs:
                fam.add_metric([r.name], r.counters()[c.field])
            yield fam
        state = GaugeMetricFamily("mqlflow_state_entries", "Open window state: (window, group) entries", labels=["processor"])
        wm = GaugeMetricFamily(
            "mqlflow_watermark_seconds", "Event-time watermark (Unix seconds)", labels=["processor"]
        )
        for r in runs:
            state.add_metric([r.name], r.state_size())
            if r.watermark is not None:
                wm.add_metric([r.name], r.watermark.timestamp())
        yield state
        yield wm
        up = GaugeMetricFamily(
            "mqlflow_processor_running", "1 when the processor's child process is up", labels=["processor"]
        )
        for r in runs:
            up.add_metric([r.name], 1.0 if r.proc is not None else 0.0)
        yield up


def start_metrics(supervisor: Supervisor, port: int, host: str = "127.0.0.1") -> None:
    REGISTRY.register(ProcessorCollector(supervisor))
    start_http_server(port, addr=host)
