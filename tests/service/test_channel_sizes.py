"""``stats()`` sizes (``*MessageSize``) sized in chunks equal one ``bson.encode`` per
document, whatever the documents: the sample source's, odd ones, ones BSON cannot encode."""

from __future__ import annotations

import datetime as dt
from collections import OrderedDict
from typing import Any

import bson
import pytest
from bson import SON, Decimal128, Int64, ObjectId
from bson.raw_bson import RawBSONDocument

from service.channel import SIZE_CHUNK, bson_size
from sources.solar import SolarConfig, SolarSource


def reference(docs: list[Any]) -> int:
    """The definition: each document's own BSON size; one that cannot be encoded adds 0."""
    total = 0
    for d in docs:
        try:
            total += len(bson.encode(d))
        except Exception:
            continue
    return total


def solar_docs(n: int) -> list[dict[str, Any]]:
    if n == 0:
        return []
    cfg = SolarConfig(seed=5, rate=1000, start_time_ms=1_700_000_000_000, fault_rate=0.2, max_events=n, batch_size=n)
    return [d for d, _ in SolarSource(cfg).build_part("s", "solar-0", None).next_batch()[0][1]]


@pytest.mark.parametrize("n", [0, 1, 2, 10, SIZE_CHUNK - 1, SIZE_CHUNK, SIZE_CHUNK + 1, 3 * SIZE_CHUNK + 7, 1024])
def test_sample_documents(n: int) -> None:
    docs = solar_docs(n)
    assert len(docs) == n
    assert bson_size(docs) == reference(docs)


def test_every_kind_of_value() -> None:
    docs: list[Any] = [
        {"a": 1, "_id": ObjectId("65f0c0ffee0000000000beef")},  # _id goes first at the top level only
        {"n": None, "b": True, "f": 1.5, "i64": Int64(2**40), "dec": Decimal128("1.10"),
         "d": dt.datetime(2024, 1, 1, tzinfo=dt.UTC), "s": "é" * 40, "bin": b"\x00\x01",
         "arr": [1, [2, {"x": "y"}]], "sub": {"deep": {"deeper": {}}}},
        {},
        {"$weird.key": 1, "": 2},
        {"big": "x" * 100_000},
    ]
    assert bson_size(docs) == reference(docs)
    assert bson_size(docs * 20) == reference(docs * 20)


def test_documents_bson_cannot_encode_add_nothing() -> None:
    good = solar_docs(40)
    bad: list[Any] = [{"s": {1, 2}}, {1: "int key"}, {"o": object()}, {"big": 2**70}]
    for at in (0, 5, SIZE_CHUNK - 1, SIZE_CHUNK, 39):
        docs: list[Any] = [*good[:at], *bad, *good[at:]]
        assert bson_size(docs) == reference(docs) == reference(good)


def test_mappings_that_are_not_plain_dicts() -> None:
    raw = RawBSONDocument(bson.encode({"r": 1, "s": "raw"}))
    docs: list[Any] = [SON([("b", 1), ("a", 2)]), OrderedDict(c=3), raw, {"plain": 1}, [1, 2], "text", 7]
    for k in (1, 3, 40):
        assert bson_size(docs * k) == reference(docs * k)
