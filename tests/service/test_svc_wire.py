"""Byte-level tests of the sans-I/O wire codec, with messages built by hand."""

from __future__ import annotations

import struct

import bson
import pytest

from service import wire
from service.wire import ProtocolError


def header(length: int, req: int, resp: int, op: int) -> bytes:
    return struct.pack("<iiii", length, req, resp, op)


def op_msg_bytes(sections: bytes, flags: int = 0, req: int = 7, checksum: bool = False) -> bytes:
    body = struct.pack("<I", flags) + sections
    length = 16 + len(body) + (4 if checksum else 0)
    msg = header(length, req, 0, 2013) + body
    if checksum:
        msg += struct.pack("<I", wire.crc32c(msg))
    return msg


def kind0(doc: dict) -> bytes:
    return b"\x00" + bson.encode(doc)


def kind1(ident: str, docs: list[dict]) -> bytes:
    payload = ident.encode() + b"\x00" + b"".join(bson.encode(d) for d in docs)
    return b"\x01" + struct.pack("<i", len(payload) + 4) + payload


def test_crc32c_known_vectors() -> None:
    # RFC 3720 check value and the iSCSI test vector of 32 zero bytes.
    assert wire.crc32c(b"123456789") == 0xE3069283
    assert wire.crc32c(bytes(32)) == 0x8A9136AA
    assert wire.crc32c(b"") == 0


def test_parse_op_msg_body_only() -> None:
    data = op_msg_bytes(kind0({"ping": 1, "$db": "admin"}), req=42)
    msg = wire.parse_message(data)
    assert isinstance(msg, wire.OpMsg)
    assert msg.header == wire.Header(len(data), 42, 0, 2013)
    assert msg.flags == 0
    assert msg.command == {"ping": 1, "$db": "admin"}
    assert not msg.more_to_come


def test_parse_op_msg_document_sequence_merged_into_command() -> None:
    data = op_msg_bytes(
        kind0({"insert": "c", "$db": "d"}) + kind1("documents", [{"a": 1}, {"a": 2}])
    )
    msg = wire.parse_message(data)
    assert isinstance(msg, wire.OpMsg)
    assert msg.sequences == {"documents": [{"a": 1}, {"a": 2}]}
    assert msg.command == {"insert": "c", "$db": "d", "documents": [{"a": 1}, {"a": 2}]}


def test_sequence_before_body_is_accepted() -> None:
    data = op_msg_bytes(kind1("documents", [{"x": 1}]) + kind0({"insert": "c"}))
    assert wire.parse_message(data).command == {"insert": "c", "documents": [{"x": 1}]}  # type: ignore[union-attr]


def test_parse_op_msg_with_valid_checksum() -> None:
    data = op_msg_bytes(kind0({"hello": 1}), flags=1, checksum=True)
    msg = wire.parse_message(data)
    assert isinstance(msg, wire.OpMsg)
    assert msg.command == {"hello": 1}
    assert msg.flags == 1


def test_checksum_mismatch_rejected() -> None:
    data = bytearray(op_msg_bytes(kind0({"hello": 1}), flags=1, checksum=True))
    data[-1] ^= 0xFF
    with pytest.raises(ProtocolError, match="checksum mismatch"):
        wire.parse_message(bytes(data))


def test_checksum_flag_without_room_rejected() -> None:
    data = header(20, 1, 0, 2013) + struct.pack("<I", 1)
    with pytest.raises(ProtocolError, match="no checksum"):
        wire.parse_message(data)


def test_more_to_come_and_exhaust_flags() -> None:
    msg = wire.parse_message(op_msg_bytes(kind0({"x": 1}), flags=(1 << 1) | (1 << 16)))
    assert isinstance(msg, wire.OpMsg)
    assert msg.more_to_come


def test_unknown_required_flag_rejected() -> None:
    with pytest.raises(ProtocolError, match="unknown required flag bits 0x4"):
        wire.parse_message(op_msg_bytes(kind0({"x": 1}), flags=1 << 2))


def test_unknown_optional_flag_ignored() -> None:
    msg = wire.parse_message(op_msg_bytes(kind0({"x": 1}), flags=1 << 20))
    assert msg.command == {"x": 1}  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x10\x00\x00", "truncated header: 3 bytes"),
        (header(15, 1, 0, 2013), "message length 15 is smaller than the header"),
        (header(48_000_001, 1, 0, 2013), "message length 48000001 exceeds 48000000 bytes"),
        (header(16, 1, 0, 2010), "unsupported opcode 2010"),
        (header(16, 1, 0, 2012), "OP_COMPRESSED is not supported"),
        (header(16, 1, 0, 2013), "truncated OP_MSG: no flagBits"),
        (header(20, 1, 0, 2013) + b"\x00\x00\x00\x00", "OP_MSG has no kind-0 body section"),
        (op_msg_bytes(b"\x02" + bson.encode({})), "unknown OP_MSG section kind 2"),
        (op_msg_bytes(kind0({"a": 1}) + kind0({"b": 1})), "more than one kind-0 body"),
        (op_msg_bytes(b"\x00\x05\x00\x00"), "truncated OP_MSG body"),
        (op_msg_bytes(b"\x00\x30\x00\x00\x00\x00"), "invalid BSON document length 48"),
        (op_msg_bytes(b"\x00\x06\x00\x00\x00\x7f\x00"), "invalid BSON in OP_MSG body"),
        (
            op_msg_bytes(kind0({"a": 1}) + b"\x01\x09\x00\x00\x00abcd"),
            "invalid OP_MSG document sequence size 9",
        ),
        (
            op_msg_bytes(kind0({"a": 1}) + b"\x01\x08\x00\x00\x00abcd"),
            "unterminated string in document sequence identifier",
        ),
        (
            op_msg_bytes(kind0({"a": 1}) + kind1("docs", [{}]) + kind1("docs", [{}])),
            "duplicate document sequence 'docs'",
        ),
        (
            op_msg_bytes(kind0({"docs": 1}) + kind1("docs", [{}])),
            "document sequence 'docs' duplicates a body field",
        ),
    ],
)
def test_malformed_op_msg(data: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        wire.parse_message(data)


def test_length_field_must_match_buffer() -> None:
    data = op_msg_bytes(kind0({"ping": 1}))
    with pytest.raises(ProtocolError, match=f"says {len(data)} bytes, got {len(data) - 1}"):
        wire.parse_message(data[:-1])
    with pytest.raises(ProtocolError, match=f"says {len(data)} bytes, got {len(data) + 1}"):
        wire.parse_message(data + b"\x00")


def test_parse_op_query_handshake() -> None:
    q = bson.encode({"isMaster": 1, "client": {"driver": {"name": "x"}}})
    body = struct.pack("<i", 0) + b"admin.$cmd\x00" + struct.pack("<ii", 0, -1) + q
    data = header(16 + len(body), 3, 0, 2004) + body
    msg = wire.parse_message(data)
    assert isinstance(msg, wire.OpQuery)
    assert msg.full_collection_name == "admin.$cmd"
    assert (msg.number_to_skip, msg.number_to_return) == (0, -1)
    assert msg.query == {"isMaster": 1, "client": {"driver": {"name": "x"}}}
    assert msg.return_fields is None


def test_op_query_with_field_selector_and_trailing_bytes() -> None:
    q = bson.encode({"isMaster": 1})
    f = bson.encode({"a": 1})
    body = struct.pack("<i", 0) + b"admin.$cmd\x00" + struct.pack("<ii", 0, 1) + q + f
    msg = wire.parse_message(header(16 + len(body), 3, 0, 2004) + body)
    assert isinstance(msg, wire.OpQuery)
    assert msg.return_fields == {"a": 1}
    body2 = body + b"\x01"
    with pytest.raises(ProtocolError, match="1 trailing bytes after OP_QUERY"):
        wire.parse_message(header(16 + len(body2), 3, 0, 2004) + body2)


def test_op_query_unterminated_name() -> None:
    body = struct.pack("<i", 0) + b"admin.$cmd"
    with pytest.raises(ProtocolError, match="unterminated string in OP_QUERY fullCollectionName"):
        wire.parse_message(header(16 + len(body), 3, 0, 2004) + body)


def test_encode_op_msg_exact_bytes() -> None:
    doc = {"ok": 1.0}
    out = wire.encode_op_msg(5, 9, doc)
    expected_body = struct.pack("<I", 0) + b"\x00" + bson.encode(doc)
    assert out == header(16 + len(expected_body), 5, 9, 2013) + expected_body


def test_encode_op_msg_checksum_and_sequences_round_trip() -> None:
    out = wire.encode_op_msg(
        1, 2, {"insert": "c"}, sequences={"documents": [{"a": 1}]}, checksum=True
    )
    assert struct.unpack_from("<I", out, 16)[0] == 1
    assert struct.unpack_from("<I", out, len(out) - 4)[0] == wire.crc32c(out[:-4])
    msg = wire.parse_message(out)
    assert isinstance(msg, wire.OpMsg)
    assert msg.header.response_to == 2
    assert msg.command == {"insert": "c", "documents": [{"a": 1}]}


def test_encode_op_reply_exact_bytes_and_round_trip() -> None:
    doc = {"ismaster": True, "ok": 1.0}
    out = wire.encode_op_reply(11, 3, [doc])
    payload = struct.pack("<iqii", 8, 0, 0, 1) + bson.encode(doc)
    assert out == header(16 + len(payload), 11, 3, 1) + payload
    msg = wire.parse_message(out)
    assert isinstance(msg, wire.OpReply)
    assert msg.documents == [doc]


def test_bson_types_kept_exact() -> None:
    doc = {"i": 1, "l": bson.Int64(2), "d": 1.0}
    msg = wire.parse_message(wire.encode_op_msg(1, 0, doc))
    cmd = msg.command  # type: ignore[union-attr]
    assert type(cmd["i"]) is int
    assert type(cmd["l"]) is bson.Int64
    assert type(cmd["d"]) is float
