"""Sans-I/O codec for the MongoDB wire protocol: pure parse/serialize functions.

mongosh and drivers speak ``OP_MSG`` (opcode 2013) once connected, and may open
with a legacy ``OP_QUERY`` (2004) ``isMaster`` on ``admin.$cmd`` that must be
answered with ``OP_REPLY`` (1). Nothing here touches a socket, so every rule is
tested byte by byte. Any malformed, truncated or oversized input raises
:class:`ProtocolError`; the server closes only that connection.

References: MongoDB wire protocol spec (``OP_MSG``: flagBits, kind-0 body and
kind-1 document sequences, optional trailing CRC-32C checksum).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

import bson
import crc32c as _crc32c_c
from bson.codec_options import CodecOptions

OP_REPLY = 1
OP_QUERY = 2004
OP_COMPRESSED = 2012
OP_MSG = 2013

HEADER_SIZE = 16
MAX_MESSAGE_SIZE = 48_000_000  # maxMessageSizeBytes advertised in hello
MAX_BSON_SIZE = 16 * 1024 * 1024 + 16 * 1024  # a command document plus server slack
# maxWriteBatchSize: no command takes more documents in one sequence, and the cap
# bounds the work a sequence of tiny documents can cause.
MAX_SEQUENCE_DOCS = 100_000

# OP_MSG flag bits
CHECKSUM_PRESENT = 1 << 0
MORE_TO_COME = 1 << 1
EXHAUST_ALLOWED = 1 << 16
_KNOWN_FLAGS = CHECKSUM_PRESENT | MORE_TO_COME | EXHAUST_ALLOWED
_REQUIRED_MASK = 0xFFFF  # bits 0-15 must be understood by the receiver

# OP_REPLY responseFlags
QUERY_FAILURE = 1 << 1
AWAIT_CAPABLE = 1 << 3

CODEC_OPTIONS: CodecOptions[dict[str, Any]] = CodecOptions(document_class=dict)

_HEADER = struct.Struct("<iiii")
_INT32 = struct.Struct("<i")
_UINT32 = struct.Struct("<I")


class ProtocolError(ValueError):
    """The peer sent bytes that are not a valid message we accept."""


# --- CRC-32C (Castagnoli, reflected polynomial 0x82F63B78) -----------------


def _make_crc_table() -> tuple[int, ...]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return tuple(table)


_CRC_TABLE = _make_crc_table()


def crc32c(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """CRC-32C as OP_MSG's checksum uses it (``crc32c(b"123456789") == 0xE3069283``).

    The ``crc32c`` package computes it in C (SSE4.2/ARMv8 instructions where present),
    about a thousand times faster than :func:`crc32c_reference`."""
    return int(_crc32c_c.crc32c(data, crc))


def crc32c_reference(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """Table-driven pure-Python CRC-32C: the reference the C path is tested against."""
    c = crc ^ 0xFFFFFFFF
    table = _CRC_TABLE
    for b in bytes(data):
        c = table[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


# --- messages ----------------------------------------------------------------


@dataclass(frozen=True)
class Header:
    length: int
    request_id: int
    response_to: int
    op_code: int


@dataclass
class OpMsg:
    """A decoded OP_MSG. ``command`` is the body with document sequences merged in."""

    header: Header
    flags: int
    body: dict[str, Any]
    sequences: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def command(self) -> dict[str, Any]:
        merged = dict(self.body)
        for ident, docs in self.sequences.items():
            merged[ident] = docs
        return merged

    @property
    def more_to_come(self) -> bool:
        return bool(self.flags & MORE_TO_COME)


@dataclass
class OpQuery:
    header: Header
    flags: int
    full_collection_name: str
    number_to_skip: int
    number_to_return: int
    query: dict[str, Any]
    return_fields: dict[str, Any] | None = None


@dataclass
class OpReply:
    header: Header
    flags: int
    cursor_id: int
    starting_from: int
    documents: list[dict[str, Any]]


Message = OpMsg | OpQuery | OpReply


def parse_header(data: bytes | bytearray | memoryview) -> Header:
    """Decode and sanity-check the 16-byte header (length bounds, known opcode)."""
    if len(data) < HEADER_SIZE:
        raise ProtocolError(f"truncated header: {len(data)} bytes")
    length, request_id, response_to, op_code = _HEADER.unpack_from(data, 0)
    if length < HEADER_SIZE:
        raise ProtocolError(f"message length {length} is smaller than the header")
    if length > MAX_MESSAGE_SIZE:
        raise ProtocolError(f"message length {length} exceeds {MAX_MESSAGE_SIZE} bytes")
    if op_code not in (OP_MSG, OP_QUERY, OP_REPLY):
        if op_code == OP_COMPRESSED:
            raise ProtocolError("OP_COMPRESSED is not supported (no compressors negotiated)")
        raise ProtocolError(f"unsupported opcode {op_code}")
    return Header(length, request_id, response_to, op_code)


def _decode_doc(buf: memoryview, pos: int, end: int, what: str) -> tuple[dict[str, Any], int]:
    if end - pos < 5:
        raise ProtocolError(f"truncated {what}: need a BSON document at offset {pos}")
    (size,) = _INT32.unpack_from(buf, pos)
    if size < 5 or pos + size > end:
        raise ProtocolError(f"invalid BSON document length {size} in {what} at offset {pos}")
    if size > MAX_BSON_SIZE:
        raise ProtocolError(f"BSON document of {size} bytes in {what} is too large")
    try:
        doc = bson.decode(buf[pos : pos + size], CODEC_OPTIONS)  # no copy of the slice
    except Exception as e:  # bson raises InvalidBSON, but also ValueError/OverflowError
        raise ProtocolError(f"invalid BSON in {what}: {e}") from e
    return doc, pos + size


MAX_CSTRING = 4096  # identifiers and namespaces: mongod caps namespaces at 255 bytes


def _read_cstring(buf: memoryview, pos: int, end: int, what: str) -> tuple[str, int]:
    # Look for the NUL in a bounded window: copying the rest of a 45 MB message to find
    # a short identifier would hold the GIL for nothing.
    raw = bytes(buf[pos : min(end, pos + MAX_CSTRING)])
    nul = raw.find(b"\x00")
    if nul < 0:
        raise ProtocolError(f"unterminated string in {what}")
    try:
        text = raw[:nul].decode("utf-8")
    except UnicodeDecodeError as e:
        raise ProtocolError(f"invalid UTF-8 in {what}") from e
    return text, pos + nul + 1


def _parse_op_msg(header: Header, buf: memoryview) -> OpMsg:
    end = header.length
    if end < HEADER_SIZE + 4:
        raise ProtocolError("truncated OP_MSG: no flagBits")
    (flags,) = _UINT32.unpack_from(buf, HEADER_SIZE)
    unknown_required = flags & _REQUIRED_MASK & ~_KNOWN_FLAGS
    if unknown_required:
        raise ProtocolError(f"OP_MSG has unknown required flag bits {unknown_required:#x}")
    if flags & CHECKSUM_PRESENT:
        if end < HEADER_SIZE + 4 + 4:
            raise ProtocolError("truncated OP_MSG: checksum flag set but no checksum")
        end -= 4
        (expected,) = _UINT32.unpack_from(buf, end)
        actual = crc32c(buf[:end])
        if actual != expected:
            raise ProtocolError(f"OP_MSG checksum mismatch: got {expected:#010x}, computed {actual:#010x}")
    pos = HEADER_SIZE + 4
    body: dict[str, Any] | None = None
    sequences: dict[str, list[dict[str, Any]]] = {}
    while pos < end:
        kind = buf[pos]
        pos += 1
        if kind == 0:
            if body is not None:
                raise ProtocolError("OP_MSG has more than one kind-0 body section")
            body, pos = _decode_doc(buf, pos, end, "OP_MSG body")
        elif kind == 1:
            if end - pos < 4:
                raise ProtocolError("truncated OP_MSG document sequence size")
            (size,) = _INT32.unpack_from(buf, pos)
            seq_end = pos + size
            if size < 5 or seq_end > end:
                raise ProtocolError(f"invalid OP_MSG document sequence size {size}")
            ident, p = _read_cstring(buf, pos + 4, seq_end, "document sequence identifier")
            if not ident:
                raise ProtocolError("empty document sequence identifier")
            if ident in sequences:
                raise ProtocolError(f"duplicate document sequence '{ident}'")
            docs: list[dict[str, Any]] = []
            while p < seq_end:
                if len(docs) >= MAX_SEQUENCE_DOCS:
                    raise ProtocolError(
                        f"document sequence '{ident}' has more than {MAX_SEQUENCE_DOCS} documents"
                    )
                doc, p = _decode_doc(buf, p, seq_end, f"document sequence '{ident}'")
                docs.append(doc)
            sequences[ident] = docs
            pos = seq_end
        else:
            raise ProtocolError(f"unknown OP_MSG section kind {kind}")
    if body is None:
        raise ProtocolError("OP_MSG has no kind-0 body section")
    for ident in sequences:
        if ident in body:
            raise ProtocolError(f"document sequence '{ident}' duplicates a body field")
    return OpMsg(header, flags, body, sequences)


def _parse_op_query(header: Header, buf: memoryview) -> OpQuery:
    end = header.length
    if end < HEADER_SIZE + 4:
        raise ProtocolError("truncated OP_QUERY")
    (flags,) = _INT32.unpack_from(buf, HEADER_SIZE)
    name, pos = _read_cstring(buf, HEADER_SIZE + 4, end, "OP_QUERY fullCollectionName")
    if end - pos < 8:
        raise ProtocolError("truncated OP_QUERY numberToSkip/numberToReturn")
    skip, nret = struct.unpack_from("<ii", buf, pos)
    pos += 8
    query, pos = _decode_doc(buf, pos, end, "OP_QUERY query")
    fields: dict[str, Any] | None = None
    if pos < end:
        fields, pos = _decode_doc(buf, pos, end, "OP_QUERY returnFieldsSelector")
    if pos != end:
        raise ProtocolError(f"{end - pos} trailing bytes after OP_QUERY")
    return OpQuery(header, flags, name, skip, nret, query, fields)


def _parse_op_reply(header: Header, buf: memoryview) -> OpReply:
    end = header.length
    if end < HEADER_SIZE + 20:
        raise ProtocolError("truncated OP_REPLY")
    flags, cursor_id, start, n = struct.unpack_from("<iqii", buf, HEADER_SIZE)
    if n < 0:
        raise ProtocolError(f"negative numberReturned {n}")
    pos = HEADER_SIZE + 20
    docs: list[dict[str, Any]] = []
    for _ in range(n):
        doc, pos = _decode_doc(buf, pos, end, "OP_REPLY document")
        docs.append(doc)
    if pos != end:
        raise ProtocolError(f"{end - pos} trailing bytes after OP_REPLY")
    return OpReply(header, flags, cursor_id, start, docs)


_PARSERS = {OP_MSG: _parse_op_msg, OP_QUERY: _parse_op_query, OP_REPLY: _parse_op_reply}


def parse_message(data: bytes | bytearray | memoryview) -> Message:
    """Parse one complete message (header included). The length must match exactly."""
    header = parse_header(data)
    if len(data) != header.length:
        raise ProtocolError(f"message length field says {header.length} bytes, got {len(data)}")
    parser: Any = _PARSERS[header.op_code]
    msg: Message = parser(header, memoryview(data))
    return msg


# --- serialization -------------------------------------------------------------


def _header(length: int, request_id: int, response_to: int, op_code: int) -> bytes:
    if length > MAX_MESSAGE_SIZE:
        raise ProtocolError(f"reply of {length} bytes exceeds {MAX_MESSAGE_SIZE}")
    return _HEADER.pack(length, request_id, response_to, op_code)


def encode_op_msg(
    request_id: int,
    response_to: int,
    body: dict[str, Any],
    *,
    flags: int = 0,
    sequences: dict[str, list[dict[str, Any]]] | None = None,
    checksum: bool = False,
) -> bytes:
    """Serialize an OP_MSG; ``checksum=True`` appends a CRC-32C and sets bit 0."""
    if checksum:
        flags |= CHECKSUM_PRESENT
    else:
        flags &= ~CHECKSUM_PRESENT
    parts = [_UINT32.pack(flags), b"\x00", bson.encode(body, codec_options=CODEC_OPTIONS)]
    for ident, docs in (sequences or {}).items():
        payload = ident.encode("utf-8") + b"\x00" + b"".join(
            bson.encode(d, codec_options=CODEC_OPTIONS) for d in docs
        )
        parts.append(b"\x01" + _INT32.pack(len(payload) + 4) + payload)
    payload = b"".join(parts)
    length = HEADER_SIZE + len(payload) + (4 if checksum else 0)
    msg = _header(length, request_id, response_to, OP_MSG) + payload
    if checksum:
        msg += _UINT32.pack(crc32c(msg))
    return msg


def encode_op_query(
    request_id: int,
    full_collection_name: str,
    query: dict[str, Any],
    *,
    flags: int = 0,
    number_to_skip: int = 0,
    number_to_return: int = -1,
) -> bytes:
    """Serialize an OP_QUERY (used by tests and the fuzzer; drivers send it for the handshake)."""
    payload = (
        _INT32.pack(flags)
        + full_collection_name.encode("utf-8")
        + b"\x00"
        + struct.pack("<ii", number_to_skip, number_to_return)
        + bson.encode(query, codec_options=CODEC_OPTIONS)
    )
    return _header(HEADER_SIZE + len(payload), request_id, 0, OP_QUERY) + payload


def encode_op_reply(
    request_id: int,
    response_to: int,
    documents: list[dict[str, Any]],
    *,
    flags: int = AWAIT_CAPABLE,
    cursor_id: int = 0,
    starting_from: int = 0,
) -> bytes:
    """Serialize an OP_REPLY, the answer to a legacy OP_QUERY command."""
    docs = b"".join(bson.encode(d, codec_options=CODEC_OPTIONS) for d in documents)
    payload = struct.pack("<iqii", flags, cursor_id, starting_from, len(documents)) + docs
    return _header(HEADER_SIZE + len(payload), request_id, response_to, OP_REPLY) + payload
