"""The sample source's settings: typed readers with path-named errors, dates in any form."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from bson.int64 import Int64

from sources.solar import SolarConfig
from translator.errors import TranslateError

P = "pipeline[0].$source.config"
JAN1_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z


@pytest.mark.parametrize(
    "start",
    [
        "2024-01-01T00:00:00Z",
        "2024-01-01T01:00:00+01:00",
        "2024-01-01T00:00:00",  # no offset: UTC
        {"$date": "2024-01-01T00:00:00Z"},
        {"$date": {"$numberLong": str(JAN1_MS)}},
        {"$date": JAN1_MS},
        datetime(2024, 1, 1, tzinfo=UTC),
        JAN1_MS,
        Int64(JAN1_MS),
    ],
)
def test_start_time_accepts_every_date_form(start: Any) -> None:
    assert SolarConfig.from_mapping({"startTime": start}, P).start_time_ms == JAN1_MS


def test_settings_are_typed() -> None:
    cfg = SolarConfig.from_mapping({"rate": 5, "devices": 3, "groups": 2, "partitions": 2, "seed": Int64(9),
                                    "maxEvents": 10.0, "batchSize": 7, "faultRate": 0}, P)
    assert cfg == SolarConfig(rate=5.0, devices=3, groups=2, partitions=2, seed=9, max_events=10,
                              start_time_ms=None, batch_size=7, fault_rate=0.0)
    assert type(cfg.seed) is int and type(cfg.max_events) is int and type(cfg.rate) is float


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"startTime": "yesterday"}, f"{P}.startTime: expected an ISO-8601 date such as '2024-01-01T00:00:00Z', got 'yesterday'"),
        ({"startTime": True}, f"{P}.startTime: expected a date (ISO-8601 string, $date or epoch milliseconds), got bool"),
        ({"startTime": {"$date": {"$numberLong": "x1"}}}, f"{P}.startTime: expected $numberLong digits, got 'x1'"),
        ({"rate": "5"}, f"{P}.rate: expected a number, got string"),
        ({"rate": 0}, f"{P}.rate: must be greater than 0, got 0"),
        ({"faultRate": 1.5}, f"{P}.faultRate: must be at least 0 and at most 1, got 1.5"),
        ({"devices": 1.5}, f"{P}.devices: expected an integer, got 1.5"),
        ({"devices": "3"}, f"{P}.devices: expected an integer, got string"),
        ({"partitions": 0}, f"{P}.partitions: must be at least 1, got 0"),
        ({"maxEvents": -1}, f"{P}.maxEvents: must be at least 0, got -1"),
        ({"batchsize": 3}, f"{P}.batchsize: unknown sample source option 'batchsize'; did you mean 'batchSize'?; allowed: "
                           "batchSize, devices, faultRate, groups, maxEvents, max_events, partitions, rate, seed, startTime, start_time_ms"),
    ],
)
def test_wrong_types_fail_with_the_path(config: dict[str, Any], message: str) -> None:
    with pytest.raises(TranslateError) as ei:
        SolarConfig.from_mapping(config, P)
    assert str(ei.value) == message
