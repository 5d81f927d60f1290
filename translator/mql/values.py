"""The value model shared by the expression engine, the query engine and accumulators.

Documents are plain ``dict``s as decoded by pymongo's ``bson`` (tz-aware UTC
``datetime``, ``bson.Int64``, ``bson.Decimal128``, ``ObjectId``...). A Python ``int``
that fits in 32 bits is a BSON ``int``; a larger ``int`` or an ``Int64`` is a
``long``. ``MISSING`` stands for an absent field, which MongoDB distinguishes from
``null`` in many places ($ifNull, $exists, $type...).
"""

from __future__ import annotations

import datetime as _dt
import decimal
import re
from typing import Any, Final

from bson import Binary, Decimal128, Int64, MaxKey, MinKey, ObjectId, Regex, Timestamp
from bson.code import Code


class _Missing:
    """Sentinel for an absent field (MongoDB's "missing", distinct from null)."""

    __slots__ = ()
    _inst: _Missing | None = None

    def __new__(cls) -> _Missing:
        if cls._inst is None:
            cls._inst = super().__new__(cls)
        return cls._inst

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False

    def __reduce__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

DECIMAL128_CTX = decimal.Context(
    prec=34,
    rounding=decimal.ROUND_HALF_EVEN,
    Emin=-6143,
    Emax=6144,
    capitals=1,
    traps=[decimal.InvalidOperation, decimal.DivisionByZero],
)

UTC = _dt.UTC
EPOCH = _dt.datetime(1970, 1, 1, tzinfo=UTC)


def is_nullish(v: Any) -> bool:
    """True for null and missing: MongoDB treats both alike in most operators."""
    return v is None or v is MISSING


def is_number(v: Any) -> bool:
    t = type(v)
    return t is int or t is float or t is Int64 or t is Decimal128


def bson_type(v: Any) -> str:
    """The ``$type`` alias of a value ("missing" for MISSING)."""
    t = type(v)
    name = _TYPE_NAMES.get(t)
    if name is not None:
        if name == "int" and not (INT32_MIN <= v <= INT32_MAX):
            return "long"
        return name
    if v is MISSING:
        return "missing"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, Int64):
        return "long"
    if isinstance(v, int):
        return "int" if INT32_MIN <= v <= INT32_MAX else "long"
    if isinstance(v, _dt.datetime):
        return "date"
    if isinstance(v, dict):
        return "object"
    if isinstance(v, (list, tuple)):
        return "array"
    if isinstance(v, (bytes, Binary)):
        return "binData"
    if isinstance(v, (Regex, re.Pattern)):
        return "regex"
    if isinstance(v, str):
        return "string"
    return "object"


_TYPE_NAMES: dict[type, str] = {
    float: "double",
    str: "string",
    dict: "object",
    list: "array",
    bytes: "binData",
    Binary: "binData",
    ObjectId: "objectId",
    bool: "bool",
    _dt.datetime: "date",
    type(None): "null",
    Regex: "regex",
    re.Pattern: "regex",
    Code: "javascript",
    int: "int",
    Timestamp: "timestamp",
    Int64: "long",
    Decimal128: "decimal",
    MinKey: "minKey",
    MaxKey: "maxKey",
}

# $type numeric codes -> alias, as in MongoDB's docs.
TYPE_CODES: dict[int, str] = {
    1: "double",
    2: "string",
    3: "object",
    4: "array",
    5: "binData",
    7: "objectId",
    8: "bool",
    9: "date",
    10: "null",
    11: "regex",
    13: "javascript",
    16: "int",
    17: "timestamp",
    18: "long",
    19: "decimal",
    -1: "minKey",
    127: "maxKey",
}
TYPE_ALIASES: frozenset[str] = frozenset(TYPE_CODES.values()) | {"number"}

# Canonical BSON sort order of types (MongoDB "Comparison/Sort Order").
_TYPE_ORDER: dict[str, int] = {
    "minKey": 1,
    "missing": 2,  # sorts like null but before it for comparisons of missing vs null
    "null": 2,
    "int": 3,
    "long": 3,
    "double": 3,
    "decimal": 3,
    "string": 4,
    "symbol": 4,
    "object": 5,
    "array": 6,
    "binData": 7,
    "objectId": 8,
    "bool": 9,
    "date": 10,
    "timestamp": 11,
    "regex": 12,
    "javascript": 13,
    "maxKey": 14,
}


def type_order(v: Any) -> int:
    return _TYPE_ORDER.get(bson_type(v), 5)


def to_decimal(v: Any) -> decimal.Decimal:
    """A numeric value as ``decimal.Decimal`` (exact for ints, floats and Decimal128)."""
    if type(v) is Decimal128:
        return v.to_decimal()
    if isinstance(v, float):
        return decimal.Decimal(repr(v)) if v == v and v not in (float("inf"), float("-inf")) else decimal.Decimal(str(v))
    return decimal.Decimal(int(v))


def num_key(v: Any) -> float | decimal.Decimal | int:
    """A Python number that compares correctly across int/long/double/decimal."""
    if type(v) is Decimal128:
        d = v.to_decimal()
        if d.is_nan():
            return float("nan")
        if d.is_infinite():
            return float("inf") if d > 0 else float("-inf")
        return d
    return v


def compare(a: Any, b: Any) -> int:
    """MongoDB's total order over BSON values (-1, 0, 1), as used by $cmp, $sort, $min/$max.

    Numbers of different types compare by value; values of different types compare
    by the canonical type order; arrays and documents compare element-wise.
    """
    ta, tb = type_order(a), type_order(b)
    if ta != tb:
        return -1 if ta < tb else 1
    if ta == 2:  # null / missing are equal
        return 0
    if ta == 3:
        x, y = num_key(a), num_key(b)
        x_nan, y_nan = x != x, y != y
        if x_nan or y_nan:  # NaN sorts below every other number and equals NaN
            return 0 if (x_nan and y_nan) else (-1 if x_nan else 1)
        if isinstance(x, decimal.Decimal) and isinstance(y, float):
            y = to_decimal(y)
        elif isinstance(y, decimal.Decimal) and isinstance(x, float):
            x = to_decimal(x)
        return -1 if x < y else (1 if x > y else 0)
    if ta == 5:
        ia, ib = list(a.items()), list(b.items())
        for (ka, va), (kb, vb) in zip(ia, ib, strict=False):
            c = compare(type_order(va), type_order(vb))
            if c:
                return c
            if ka != kb:
                return -1 if ka < kb else 1
            c = compare(va, vb)
            if c:
                return c
        return (len(ia) > len(ib)) - (len(ia) < len(ib))
    if ta == 6:
        for x, y in zip(a, b, strict=False):
            c = compare(x, y)
            if c:
                return c
        return (len(a) > len(b)) - (len(a) < len(b))
    if ta == 4:
        return (a > b) - (a < b)
    if ta == 7:
        ba, bb = bytes(a), bytes(b)
        if len(ba) != len(bb):
            return -1 if len(ba) < len(bb) else 1
        sa, sb = getattr(a, "subtype", 0), getattr(b, "subtype", 0)
        if sa != sb:
            return -1 if sa < sb else 1
        return (ba > bb) - (ba < bb)
    if ta == 8:
        return (a.binary > b.binary) - (a.binary < b.binary)
    if ta in (9, 10, 11):
        return (a > b) - (a < b)
    if ta == 12:
        pa = (a.pattern, str(getattr(a, "flags", "")))
        pb = (b.pattern, str(getattr(b, "flags", "")))
        return (pa > pb) - (pa < pb)
    return 0


def values_equal(a: Any, b: Any) -> bool:
    """Equality as MongoDB's $eq sees it (1 == 1.0 == NumberLong(1); true != 1)."""
    return compare(a, b) == 0


class SortKey:
    """Wraps a value so Python's sort uses MongoDB's order."""

    __slots__ = ("v",)

    def __init__(self, v: Any) -> None:
        self.v = v

    def __lt__(self, other: SortKey) -> bool:
        return compare(self.v, other.v) < 0

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SortKey) and compare(self.v, other.v) == 0

    def __hash__(self) -> int:  # pragma: no cover - not used as dict keys
        return 0


_NAN_KEY: Final = ("$nan",)  # every NaN (double or Decimal128) is one group


def hashable(v: Any) -> Any:
    """A hashable key that groups values as MongoDB's ``$group`` does.

    1, 1.0 and NumberLong(1) are one group, so are 0.5 and Decimal128("0.5") and all
    NaNs; true and 1 are two; null and missing are one group. The result is deterministic across processes (no ``hash()`` of str
    leaks into it), so it can also be used to route groups between workers.
    """
    t = type(v)
    if t is str:
        return v
    if t is int or t is Int64:
        return int(v)
    if t is float:
        if v.is_integer():
            return int(v)
        return v if v == v else _NAN_KEY
    if v is None or v is MISSING:
        return None
    if t is bool:
        return ("$bool", v)
    if t is Decimal128:
        d = v.to_decimal()
        if d.is_nan():
            return _NAN_KEY
        if d.is_finite() and d == d.to_integral_value():
            return int(d)
        # A decimal equal to a double (0.5, Infinity) takes the double's key, so both
        # land in one group and one routing bucket (bucket_of hashes the key's repr).
        f = float(d)
        if decimal.Decimal(f) == d:
            return f
        return ("$dec", d.normalize(DECIMAL128_CTX))
    if isinstance(v, dict):
        return ("$obj", tuple((k, hashable(x)) for k, x in v.items()))
    if isinstance(v, (list, tuple)):
        return ("$arr", tuple(hashable(x) for x in v))
    if isinstance(v, _dt.datetime):
        return ("$date", v)
    if isinstance(v, ObjectId):
        return ("$oid", v.binary)
    if isinstance(v, (bytes, Binary)):
        return ("$bin", getattr(v, "subtype", 0), bytes(v))
    if isinstance(v, Regex):
        return ("$re", v.pattern, str(v.flags))
    return ("$other", repr(v))


def truthy(v: Any) -> bool:
    """MongoDB aggregation truthiness: false, null, missing, 0 are false; all else true."""
    if v is None or v is MISSING or v is False:
        return False
    t = type(v)
    if t is int or t is float or t is Int64:
        return v != 0
    if t is Decimal128:
        return v.to_decimal() != 0
    return True


def datetime_to_ms(d: _dt.datetime) -> int:
    """Milliseconds since the epoch (BSON date resolution)."""
    if d.tzinfo is None:
        d = d.replace(tzinfo=UTC)
    delta = d - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def ms_to_datetime(ms: int) -> _dt.datetime:
    return EPOCH + _dt.timedelta(milliseconds=ms)
