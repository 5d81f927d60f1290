"""Robustness: 10,000+ random and mutated messages against a running server; it stays
up, logs the bad connections, and still answers ping. Concurrent clients are fine."""

from __future__ import annotations

import asyncio
import contextlib
import random
import struct
import threading
from pathlib import Path

import bson
import pymongo
from svc_helpers import Service

from service import wire

N_MESSAGES = 10_000
PARALLEL = 64


def _valid_messages() -> list[bytes]:
    return [
        wire.encode_op_msg(1, 0, {"ping": 1, "$db": "admin"}),
        wire.encode_op_msg(2, 0, {"hello": 1, "$db": "admin"}, checksum=True),
        wire.encode_op_msg(
            3, 0, {"insert": "c", "$db": "d"}, sequences={"documents": [{"a": 1}, {"b": "x"}]}
        ),
        wire.encode_op_msg(
            4,
            0,
            {"createStreamProcessor": "fz", "pipeline": [{"$source": {"documents": [{"a": 1}]}}], "$db": "admin"},
        ),
        wire.encode_op_query(5, "admin.$cmd", {"isMaster": 1}),
        wire.encode_op_msg(6, 0, {"listStreamProcessors": 1, "filter": {"x": {"$bogus": 1}}, "$db": "admin"}),
    ]


def _mutate(rng: random.Random, base: bytes) -> bytes:
    data = bytearray(base)
    kind = rng.randrange(8)
    if kind == 0:  # random bit flips
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
    elif kind == 1:  # truncate, keep the length field
        data = data[: rng.randrange(len(data))]
    elif kind == 2:  # truncate and fix the length field
        data = data[: rng.randrange(16, len(data) + 1)]
        struct.pack_into("<i", data, 0, len(data))
    elif kind == 3:  # lie about the length
        struct.pack_into("<i", data, 0, rng.choice([0, -1, 15, 17, 2**31 - 1, 48_000_001, len(data) + 5]))
    elif kind == 4:  # random opcode
        struct.pack_into("<i", data, 12, rng.choice([0, 1, 2004, 2012, 2013, 9999, -5]))
    elif kind == 5:  # random flag bits
        if len(data) >= 20:
            struct.pack_into("<I", data, 16, rng.getrandbits(32))
    elif kind == 6:  # overwrite a slice with garbage, fix length
        i = rng.randrange(16, len(data))
        data[i:] = rng.randbytes(rng.randrange(0, 64))
        struct.pack_into("<i", data, 0, max(len(data), 16))
    else:  # pure random bytes
        data = bytearray(rng.randbytes(rng.randrange(0, 200)))
    return bytes(data)


async def _send(port: int, payload: bytes, sem: asyncio.Semaphore, stats: dict[str, int]) -> None:
    async with sem:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            stats["connect_failed"] += 1
            return
        try:
            writer.write(payload)
            await writer.drain()
            writer.write_eof()
            data = await asyncio.wait_for(reader.read(1 << 20), 5)
            stats["replied" if data else "closed"] += 1
        except (TimeoutError, OSError):
            stats["timeout_or_reset"] += 1
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def _fuzz(port: int, seed: int) -> dict[str, int]:
    rng = random.Random(seed)
    valid = _valid_messages()
    sem = asyncio.Semaphore(PARALLEL)
    stats = {"replied": 0, "closed": 0, "timeout_or_reset": 0, "connect_failed": 0}
    payloads = []
    for i in range(N_MESSAGES):
        if i % 10 == 0:
            payloads.append(rng.choice(valid))
        else:
            payloads.append(_mutate(rng, rng.choice(valid)))
    # a few oversized and multi-message payloads too
    payloads.append(struct.pack("<iiii", 48_000_001, 1, 0, 2013))
    payloads.append(valid[0] * 3 + b"\x00" * 7)
    await asyncio.gather(*(_send(port, p, sem, stats) for p in payloads))
    return stats


def test_fuzz_10k_messages_server_stays_up(service: Service) -> None:
    stats = asyncio.run(_fuzz(service.port, seed=20240812))
    assert sum(stats.values()) == N_MESSAGES + 2
    assert stats["connect_failed"] == 0
    assert stats["replied"] >= N_MESSAGES // 10  # every valid message got an answer
    assert service.proc.poll() is None
    c = service.client()
    assert c.admin.command("ping") == {"ok": 1.0}
    c.close()
    log = Path(service.log).read_text()
    assert "closing connection" in log
    assert "checksum mismatch" in log or "invalid BSON" in log


def test_concurrent_clients(service: Service) -> None:
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            c: pymongo.MongoClient = pymongo.MongoClient(  # type: ignore[type-arg]
                f"mongodb://127.0.0.1:{service.port}", serverSelectionTimeoutMS=5000, maxPoolSize=2
            )
            pipe = [{"$source": {"connectionName": "sample_stream_solar"}}, {"$emit": {"connectionName": "out", "topic": "t"}}]
            for j in range(20):
                assert c.admin.command("ping") == {"ok": 1.0}
                c.admin.command({"createStreamProcessor": f"c{i}_{j}", "pipeline": pipe})
            names = {p["name"] for p in c.admin.command({"listStreamProcessors": 1, "filter": {"name": {"$regex": f"^c{i}_"}}})["streamProcessors"]}
            assert names == {f"c{i}_{j}" for j in range(20)}
            c.close()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    c = service.client()
    assert len(c.admin.command({"listStreamProcessors": 1})["streamProcessors"]) == 16 * 20
    c.close()


def test_bson_garbage_inside_valid_frame_gets_logged(service: Service) -> None:
    import socket

    body = b"\x00\x00\x00\x00" + b"\x00" + bson.encode({"ping": 1})[:-1] + b"\x07"
    msg = struct.pack("<iiii", 16 + len(body), 9, 0, 2013) + body
    with socket.create_connection(("127.0.0.1", service.port), timeout=5) as s:
        s.sendall(msg)
        assert s.recv(100) == b""  # closed, no reply
    c = service.client()
    assert c.admin.command("ping") == {"ok": 1.0}
    c.close()
    assert "invalid BSON in OP_MSG body" in Path(service.log).read_text()
