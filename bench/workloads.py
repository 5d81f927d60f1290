"""The three workloads, as Atlas pipelines (for mqlflow) and as parameters (for the others).

A: the seed — ``$dateFromString`` timeField, 3 s ``$tumblingWindow``, ``$group`` by
   ``group_id`` with ``$min``/``$max``/``$avg``/``$stdDevPop`` of ``obs.temp``.
B: the same ``$group`` in a ``$hoppingWindow`` of 10 s advancing by 2 s (Nexmark q5-like).
C: stateless ``$match`` + ``$addFields`` + ``$project``.
D: many devices: A's window grouped by ``device_id``, 10,000 devices at 100,000 events per
   second of event time (about 30 events per device per 3 s window).
E: a pipeline off the seed's shape: ``$match`` and ``$addFields`` before the window, a
   computed ``_id`` (``$concat`` of ``device_id`` and ``$toString`` of ``group_id``),
   ``$sum: 1``, ``$max`` of the added field, ``$addToSet`` and ``$push``.
K: A read from a real Kafka topic with 4 partitions, results to ``$emit``.

Stdlib only (the peer-engine virtualenvs import it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

LATENESS_MS = 3000  # ASP's default allowedLateness

SOURCE: dict[str, Any] = {
    "$source": {"documents": [], "timeField": {"$dateFromString": {"dateString": "$timestamp"}}}
}
GROUP: dict[str, Any] = {
    "$group": {
        "_id": "$group_id",
        "minTemp": {"$min": "$obs.temp"},
        "maxTemp": {"$max": "$obs.temp"},
        "avgTemp": {"$avg": "$obs.temp"},
        "stdevPTemp": {"$stdDevPop": "$obs.temp"},
    }
}

# Workload C: keep healthy, warm-enough readings, derive two fields, reshape.
C_MIN_TEMP = 12
C_HOT_TEMP = 20
C_STAGES: list[dict[str, Any]] = [
    {"$match": {"event_type": 0, "obs.temp": {"$gte": C_MIN_TEMP}}},
    {
        "$addFields": {
            "wattsPct": {"$divide": ["$obs.watts", "$max_watts"]},
            "hot": {"$gte": ["$obs.temp", C_HOT_TEMP]},
        }
    },
    {
        "$project": {
            "_id": 0,
            "device_id": 1,
            "group_id": 1,
            "ts": "$_ts",
            "temp": "$obs.temp",
            "wattsPct": 1,
            "hot": 1,
        }
    },
]


# Workload D: the seed's accumulators, one group per device.
D_GROUP: dict[str, Any] = {"$group": {**GROUP["$group"], "_id": "$device_id"}}

# Workload E: stages before the window, a computed _id, array accumulators.
E_PRE: list[dict[str, Any]] = [
    {"$match": {"event_type": 0}},
    {"$addFields": {"wattsPct": {"$divide": ["$obs.watts", "$max_watts"]}}},
]
E_GROUP: dict[str, Any] = {
    "$group": {
        "_id": {"$concat": ["$device_id", "-", {"$toString": "$group_id"}]},
        "n": {"$sum": 1},
        "maxPct": {"$max": "$wattsPct"},
        "temps": {"$addToSet": "$obs.temp"},
        "watts": {"$push": "$obs.watts"},
    }
}


@dataclass(frozen=True)
class Workload:
    name: str
    kind: str  # "tumbling" | "hopping" | "stateless"
    size_ms: int = 0
    hop_ms: int = 0
    shape: str = "seed"  # "seed" (A, B, K), "devices" (D), "offpath" (E)
    # Generator settings this workload always uses (over the command line's).
    gen: tuple[tuple[str, Any], ...] = ()

    @property
    def key(self) -> str:
        """The document field the windows group by (E's ``_id`` is computed)."""
        return "device_id" if self.shape == "devices" else "group_id"

    def pipeline(self) -> list[dict[str, Any]]:
        if self.kind == "tumbling":
            group = {"devices": D_GROUP, "offpath": E_GROUP}.get(self.shape, GROUP)
            w = {"$tumblingWindow": {"interval": {"size": self.size_ms // 1000, "unit": "second"}, "pipeline": [group]}}
            if self.shape == "offpath":
                return [SOURCE, *E_PRE, w]
            return [SOURCE, w]
        if self.kind == "hopping":
            w = {
                "$hoppingWindow": {
                    "interval": {"size": self.size_ms // 1000, "unit": "second"},
                    "hopSize": {"size": self.hop_ms // 1000, "unit": "second"},
                    "pipeline": [GROUP],
                }
            }
            return [SOURCE, w]
        return [SOURCE, *C_STAGES]

    @property
    def windowed(self) -> bool:
        return self.kind != "stateless"

    @property
    def step_ms(self) -> int:
        """Distance between window starts."""
        return self.hop_ms if self.kind == "hopping" else self.size_ms


WORKLOADS: dict[str, Workload] = {
    "A": Workload("A", "tumbling", 3000, 3000),
    "B": Workload("B", "hopping", 10_000, 2000),
    "C": Workload("C", "stateless"),
    "D": Workload("D", "tumbling", 3000, 3000, "devices", (("devices", 10_000), ("rate", 100_000.0))),
    "E": Workload("E", "tumbling", 3000, 3000, "offpath"),
    # A's pipeline from a real Kafka topic (bench/kafka_topic.py, bench/engines/kafka_engines.py)
    "K": Workload("K", "tumbling", 3000, 3000),
}
