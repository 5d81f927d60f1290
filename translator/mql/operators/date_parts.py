"""$dateFromParts and $dateToParts: dates to and from calendar or ISO-week fields.

MongoDB docs ("$dateFromParts"): either the calendar form (``year`` required, then
``month``, ``day``, ``hour``, ``minute``, ``second``, ``millisecond``) or the ISO form
(``isoWeekYear`` required, ``isoWeek``, ``isoDayOfWeek``), never a mix. Values outside
a field's usual range carry into the next field (``month: 14`` is February of the
next year; ``hour: -1`` is the previous day); every field but the year accepts
-32768..32767 and the year 1..9999. Null or missing in any field gives null. The
parts are wall-clock time in ``timezone`` (default UTC).
"""

from __future__ import annotations

import datetime as _dt
from typing import Any

from translator.mql.expr import Ctx, Expr, ExprError, Vars, compile_expr, operator
from translator.mql.operators.arrays import int_value, named_args
from translator.mql.operators.dates import _local, _to_utc, _tz_param, to_date
from translator.mql.values import MISSING, bson_type, is_number

_CALENDAR = ("year", "month", "day")
_ISO = ("isoWeekYear", "isoWeek", "isoDayOfWeek")
_TIME = ("hour", "minute", "second", "millisecond")
_DEFAULTS = {"month": 1, "day": 1, "isoWeek": 1, "isoDayOfWeek": 1}


def _field(name: str, x: Any) -> int:
    i = int_value(x, -(2**63), 2**63 - 1) if is_number(x) else None
    if i is None:
        shown = f"{bson_type(x)} with value {x}" if is_number(x) else bson_type(x)
        raise ExprError("$dateFromParts", f"'{name}' must evaluate to an integer, found {shown}")
    if name in ("year", "isoWeekYear"):
        if not 1 <= i <= 9999:
            raise ExprError(
                "$dateFromParts", f"'{name}' must evaluate to an integer in the range 1 to 9999, found {i}"
            )
    elif not -32768 <= i <= 32767:
        raise ExprError(
            "$dateFromParts",
            f"'{name}' must evaluate to a value in the range [-32768, 32767]; value {i} is not in range",
        )
    return i


def _local_time(iso: bool, p: dict[str, int]) -> _dt.datetime:
    """The wall-clock time the parts describe, carrying out-of-range fields."""
    if iso:
        base = _dt.datetime.fromisocalendar(p["isoWeekYear"], 1, 1)
        days = (p["isoWeek"] - 1) * 7 + (p["isoDayOfWeek"] - 1)
    else:
        months = p["year"] * 12 + (p["month"] - 1)
        y, m = divmod(months, 12)
        if not 1 <= y <= 9999:
            raise OverflowError
        base = _dt.datetime(y, m + 1, 1)
        days = p["day"] - 1
    return base + _dt.timedelta(
        days=days, hours=p["hour"], minutes=p["minute"], seconds=p["second"], milliseconds=p["millisecond"]
    )


@operator("$dateFromParts")
def _date_from_parts(args: Any, ctx: Ctx) -> Expr:
    op = "$dateFromParts"
    d = named_args(args, ctx, op, (), _CALENDAR + _ISO + _TIME + ("timezone",))
    iso = any(k in d for k in _ISO)
    if iso and any(k in d for k in _CALENDAR):
        raise ctx.error(f"{op}: pass either the calendar fields or the ISO week-date fields, not both")
    names = (_ISO if iso else _CALENDAR) + _TIME
    if names[0] not in d:
        raise ctx.error(f"{op} requires '{names[0]}'")
    fields = [(n, compile_expr(d[n], ctx.at(n))) for n in names if n in d]
    tz_f = _tz_param(d, ctx, op)

    def date_from_parts(doc: Any, v: Vars) -> Any:
        parts = {n: _DEFAULTS.get(n, 0) for n in names}
        for n, f in fields:
            x = f(doc, v)
            if x is None or x is MISSING:
                return None
            parts[n] = _field(n, x)
        tz = tz_f(doc, v)
        if tz is None:
            return None
        try:
            return _to_utc(_local_time(iso, parts), tz)
        except (OverflowError, ValueError):
            raise ExprError(op, f"{op} resulted in a date out of the supported range") from None

    return date_from_parts


@operator("$dateToParts")
def _date_to_parts(args: Any, ctx: Ctx) -> Expr:
    op = "$dateToParts"
    d = named_args(args, ctx, op, ("date",), ("timezone", "iso8601"))
    date_f = compile_expr(d["date"], ctx.at("date"))
    iso_f = compile_expr(d.get("iso8601", False), ctx.at("iso8601"))
    tz_f = _tz_param(d, ctx, op)

    def date_to_parts(doc: Any, v: Vars) -> Any:
        x = date_f(doc, v)
        tz = tz_f(doc, v)
        iso = iso_f(doc, v)
        if x is None or x is MISSING or tz is None or iso is None or iso is MISSING:
            return None
        if type(iso) is not bool:
            raise ExprError(op, f"iso8601 must evaluate to a bool, found {bson_type(iso)}")
        local = _local(to_date(x, op), tz)
        ms = local.microsecond // 1000
        if iso:
            y, w, wd = local.isocalendar()
            head = {"isoWeekYear": y, "isoWeek": w, "isoDayOfWeek": wd}
        else:
            head = {"year": local.year, "month": local.month, "day": local.day}
        return {**head, "hour": local.hour, "minute": local.minute, "second": local.second, "millisecond": ms}

    return date_to_parts
