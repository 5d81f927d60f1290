"""Sizes, timestamps and hashing: $binarySize, $bsonSize, $tsSecond, $tsIncrement,
$toUUID and $toHashedIndexKey.

Null or missing gives null; a wrong type is an error with MongoDB's wording. Sizes are
of the BSON encoding (pymongo's ``bson``), as the server measures them.
``$toHashedIndexKey`` is the hashed-index hash: MD5 over seed 0, each element's
canonical type, its value (numbers squashed to a 64-bit int) and, inside documents and
arrays, field names; the first 8 digest bytes are the little-endian long.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import math
import struct
import uuid
from typing import Any

import bson
from bson import Binary, Decimal128, Int64, MaxKey, MinKey, ObjectId, Regex, Timestamp
from bson.binary import UuidRepresentation

from translator.mql.expr import Ctx, Expr, ExprError, Vars, operator
from translator.mql.operators.arithmetic import _unary, arg_list, fold, num_kind
from translator.mql.values import INT64_MAX, INT64_MIN, MISSING, bson_type


def _unary_op(op: str, impl: Any) -> None:
    """Register ``op`` as a one-operand operator: null/missing in, null out."""

    @operator(op)
    def compile_(args: Any, ctx: Ctx) -> Expr:
        return _unary(ctx, args, impl)


def _binary_size(x: Any) -> Any:
    if type(x) is str:
        return len(x.encode("utf-8"))
    if isinstance(x, (bytes, Binary)):
        return len(x)
    raise ExprError("$binarySize", f"$binarySize requires a string or BinData argument, found: {bson_type(x)}")


def _bson_size(x: Any) -> Any:
    if not isinstance(x, dict):
        raise ExprError("$bsonSize", f"$bsonSize requires a document input, found: {bson_type(x)}")
    return len(bson.encode(x))


def _timestamp(op: str, part: str) -> Any:
    def impl(x: Any) -> Any:
        if not isinstance(x, Timestamp):
            raise ExprError(op, f"{op} expects argument of type timestamp but received {bson_type(x)}")
        return Int64(getattr(x, part))

    return impl


def _to_uuid(x: Any) -> Any:
    if type(x) is not str:
        raise ExprError("$toUUID", f"Unsupported conversion from {bson_type(x)} to UUID in $toUUID")
    try:
        u = uuid.UUID(x)
    except ValueError:
        raise ExprError("$toUUID", f"Failed to parse UUID string: {x!r} in $toUUID") from None
    return Binary.from_uuid(u, UuidRepresentation.STANDARD)


_unary_op("$binarySize", _binary_size)
_unary_op("$bsonSize", _bson_size)
_unary_op("$tsSecond", _timestamp("$tsSecond", "time"))
_unary_op("$tsIncrement", _timestamp("$tsIncrement", "inc"))
_unary_op("$toUUID", _to_uuid)


# ---- $toHashedIndexKey -------------------------------------------------------------------


def _canonical_type(v: Any) -> int:
    """The server's ``canonicalizeBSONType`` (numbers share 10, strings 15...)."""
    if v is None or v is MISSING:
        return 5
    if isinstance(v, MinKey):
        return -1
    if isinstance(v, MaxKey):
        return 127
    if num_kind(v) >= 0:
        return 10
    if isinstance(v, str):
        return 15
    if isinstance(v, dict):
        return 20
    if isinstance(v, list):
        return 25
    if isinstance(v, (bytes, Binary)):
        return 30
    if isinstance(v, ObjectId):
        return 35
    if isinstance(v, bool):
        return 40
    if isinstance(v, _dt.datetime):
        return 45
    if isinstance(v, Timestamp):
        return 47
    if isinstance(v, Regex):
        return 50
    return 60


def _safe_long(v: Any) -> int:
    f: Any = float(v.to_decimal()) if type(v) is Decimal128 else v
    if isinstance(f, float) and math.isnan(f):
        return 0
    if isinstance(f, float) and math.isinf(f):
        return INT64_MAX if f > 0 else INT64_MIN
    return max(INT64_MIN, min(INT64_MAX, int(f)))


_EOO = struct.pack("<i", 0) + b"\x00"  # the end-of-object element: type 0, empty name


def _hash_element(h: Any, name: str | None, v: Any) -> None:
    h.update(struct.pack("<i", _canonical_type(v)))
    if name is not None:
        h.update(name.encode("utf-8") + b"\x00")
    if isinstance(v, dict):
        for k, x in v.items():
            _hash_element(h, k, x)
        h.update(_EOO)
    elif isinstance(v, list):
        for i, x in enumerate(v):
            _hash_element(h, str(i), x)
        h.update(_EOO)
    elif num_kind(v) >= 0 and type(v) is not bool:
        h.update(struct.pack("<q", _safe_long(v)))
    elif v is not None and v is not MISSING:
        raw = bson.encode({"": v})
        h.update(raw[6:-1])  # the element's value bytes (after type byte and empty name)


def hashed_index_key(v: Any) -> Int64:
    h = hashlib.md5(struct.pack("<i", 0), usedforsecurity=False)
    _hash_element(h, None, v)
    return Int64(struct.unpack("<q", h.digest()[:8])[0])


@operator("$toHashedIndexKey")
def _to_hashed_index_key(args: Any, ctx: Ctx) -> Expr:
    (a,) = arg_list(args, ctx, 1)

    def to_hashed(doc: Any, v: Vars) -> Any:
        return hashed_index_key(a(doc, v))

    return fold(to_hashed, (a,))
