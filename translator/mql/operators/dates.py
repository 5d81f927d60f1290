"""MQL date expression operators ($dateFromString, $dateToString, $dateTrunc, $dateAdd, ...).

BSON dates are UTC instants with millisecond precision; here they are tz-aware UTC
``datetime`` objects truncated to whole milliseconds. A ``timezone`` argument (an Olson
name such as ``"America/New_York"``, a UTC offset ``"+04:45"`` / ``"-0530"`` / ``"+03"``,
or ``"Z"``/``"UTC"``/``"GMT"``) changes only how the instant is read as wall-clock time.

``$dateFromString: {dateString: "$timestamp"}`` is the ASP ``timeField`` idiom and runs
on every event, so its plain form compiles to a closure that goes straight to
``datetime.fromisoformat`` (Python 3.11 accepts ``Z``), falling back to a guarded
python-dateutil parse only for the other formats MongoDB accepts ("oct 20 2020").

Choices where MongoDB's docs are silent (see README):
- ``$dateDiff`` for ``hour`` and smaller units counts boundaries of the timezone's
  offset *at startDate* on the absolute time axis, so DST shifts do not add or lose
  hours; ``day`` and larger units compare local calendar dates.
- A wall-clock time that does not exist or is ambiguous (DST) resolves with
  ``fold=0`` (the offset in force before the transition).
"""

from __future__ import annotations

import datetime as _dt
import re
import warnings
from collections.abc import Callable
from functools import lru_cache
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bson import Int64, ObjectId, Timestamp
from dateutil import parser as _du_parser

from translator.mql.expr import (
    Ctx,
    Expr,
    ExprError,
    Vars,
    compile_expr,
    const_value,
    is_const,
    operator,
)
from translator.mql.operators.arrays import int_value, named_args, one_arg
from translator.mql.values import (
    INT64_MAX,
    INT64_MIN,
    MISSING,
    UTC,
    bson_type,
    datetime_to_ms,
    is_number,
    ms_to_datetime,
)

T = TypeVar("T")
Param = Callable[[Any, Vars], Any]

_REF_2000 = _dt.datetime(2000, 1, 1)  # $dateTrunc bins start here (local wall time)
_REF_2000_MS = 946_684_800_000

# ---- coercions ----------------------------------------------------------------------


def to_date(v: Any, op: str) -> _dt.datetime:
    """A Date, Timestamp or ObjectId as a tz-aware datetime (MongoDB's date inputs)."""
    if isinstance(v, _dt.datetime):
        return v if v.tzinfo is not None else v.replace(tzinfo=UTC)
    if isinstance(v, Timestamp):
        return v.as_datetime()
    if isinstance(v, ObjectId):
        return v.generation_time
    raise ExprError(op, f"can't convert from BSON type {bson_type(v)} to Date")


_OFFSET_RE = re.compile(r"([+-])(\d{2})(?::?(\d{2}))?")


@lru_cache(maxsize=512)
def _lookup_tz(name: str) -> _dt.tzinfo | None:
    if name in ("Z", "UTC", "GMT"):
        return UTC
    m = _OFFSET_RE.fullmatch(name)
    if m:
        hours, minutes = int(m.group(2)), int(m.group(3) or 0)
        if minutes >= 60 or hours >= 24:
            return None
        delta = _dt.timedelta(hours=hours, minutes=minutes)
        if delta == _dt.timedelta(0):
            return UTC
        return _dt.timezone(-delta if m.group(1) == "-" else delta)
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


def resolve_tz(value: Any, op: str) -> _dt.tzinfo:
    """A ``timezone`` argument value as a tzinfo, or an ExprError with MongoDB's wording."""
    if not isinstance(value, str):
        raise ExprError(op, f"timezone must evaluate to a string, found {bson_type(value)}")
    tz = _lookup_tz(value)
    if tz is None:
        raise ExprError(op, f'unrecognized time zone identifier: "{value}"')
    return tz


def _local(d: _dt.datetime, tz: _dt.tzinfo) -> _dt.datetime:
    if tz is UTC and d.tzinfo is UTC:
        return d
    return d.astimezone(tz)


def _to_utc(local_naive: _dt.datetime, tz: _dt.tzinfo) -> _dt.datetime:
    """Wall-clock time in ``tz`` → UTC instant (fold=0 for gaps and overlaps)."""
    if tz is UTC:
        return local_naive.replace(tzinfo=UTC)
    return local_naive.replace(tzinfo=tz).astimezone(UTC)


def _compile_param(
    spec: Any, ctx: Ctx, convert: Callable[[Any], T]
) -> Callable[[Any, Vars], T | None]:
    """Compile an argument validated by ``convert`` (which raises ExprError).

    Null/missing evaluates to ``None`` (the operator then returns null). A constant
    argument is validated once, and a bad one is a compile-time error.
    """
    f = compile_expr(spec, ctx)
    c = const_value(f)
    if is_const(f):
        if c is None:
            return lambda doc, v: None
        try:
            val = convert(c)
        except ExprError as e:
            raise ctx.error(e.message) from None
        return lambda doc, v: val

    def param(doc: Any, v: Vars) -> T | None:
        x = f(doc, v)
        if x is None or x is MISSING:
            return None
        return convert(x)

    return param


def _tz_param(spec: dict[str, Any], ctx: Ctx, op: str) -> Callable[[Any, Vars], _dt.tzinfo | None]:
    if "timezone" not in spec:
        return lambda doc, v: UTC
    return _compile_param(spec["timezone"], ctx.at("timezone"), lambda x: resolve_tz(x, op))


_UNIT_MS = {
    "millisecond": 1,
    "second": 1000,
    "minute": 60_000,
    "hour": 3_600_000,
    "day": 86_400_000,
    "week": 7 * 86_400_000,
}
_UNIT_MONTHS = {"month": 1, "quarter": 3, "year": 12}
_UNITS = frozenset(_UNIT_MS) | frozenset(_UNIT_MONTHS)


def _unit_converter(op: str) -> Callable[[Any], str]:
    def unit(x: Any) -> str:
        if not isinstance(x, str) or x not in _UNITS:
            shown = x if isinstance(x, str) else bson_type(x)
            raise ExprError(op, f"{op} parameter 'unit' value cannot be recognized as a time unit: {shown}")
        return x

    return unit


_WEEKDAYS = {  # name -> Python weekday() (Monday = 0)
    "monday": 0, "mon": 0, "tuesday": 1, "tue": 1, "wednesday": 2, "wed": 2,
    "thursday": 3, "thu": 3, "friday": 4, "fri": 4, "saturday": 5, "sat": 5,
    "sunday": 6, "sun": 6,
}  # fmt: skip


def _start_of_week_converter(op: str) -> Callable[[Any], int]:
    def start_of_week(x: Any) -> int:
        d = _WEEKDAYS.get(x.lower()) if isinstance(x, str) else None
        if d is None:
            shown = x if isinstance(x, str) else bson_type(x)
            raise ExprError(
                op, f"{op} parameter 'startOfWeek' value cannot be recognized as a day of a week: {shown}"
            )
        return d

    return start_of_week


def _long_converter(op: str, name: str) -> Callable[[Any], int]:
    def long_(x: Any) -> int:
        i = int_value(x, INT64_MIN, INT64_MAX) if is_number(x) else None
        if i is None:
            raise ExprError(
                op, f"{op} requires '{name}' to be a 64-bit integer, but got value {x!r} of type {bson_type(x)}"
            )
        return i

    return long_


# ---- date parts ($year, $month, ...) -------------------------------------------------


def _week_sunday(d: _dt.datetime) -> int:
    """``%U``: weeks start on Sunday; days before the year's first Sunday are week 0."""
    yday0 = d.timetuple().tm_yday - 1
    wday = d.isoweekday() % 7  # Sunday = 0
    return (yday0 + 7 - wday) // 7


_PARTS: dict[str, Callable[[_dt.datetime], int]] = {
    "$year": lambda d: d.year,
    "$month": lambda d: d.month,
    "$dayOfMonth": lambda d: d.day,
    "$hour": lambda d: d.hour,
    "$minute": lambda d: d.minute,
    "$second": lambda d: d.second,
    "$millisecond": lambda d: d.microsecond // 1000,
    "$dayOfWeek": lambda d: d.isoweekday() % 7 + 1,  # 1 = Sunday ... 7 = Saturday
    "$dayOfYear": lambda d: d.timetuple().tm_yday,
    "$week": _week_sunday,
    "$isoWeek": lambda d: d.isocalendar()[1],
    "$isoWeekYear": lambda d: d.isocalendar()[0],
    "$isoDayOfWeek": lambda d: d.isoweekday(),
}


def _date_part(op: str, part: Callable[[_dt.datetime], int]) -> None:
    @operator(op)
    def _compile(args: Any, ctx: Ctx) -> Expr:
        """``{$op: <date>}``, ``{$op: [<date>]}`` or ``{$op: {date, timezone}}``."""
        arg = one_arg(args, ctx, op)
        if isinstance(arg, dict) and arg and not any(str(k).startswith("$") for k in arg):
            spec = named_args(arg, ctx, op, ("date",), ("timezone",))
            f_date = compile_expr(spec["date"], ctx.at("date"))
            get_tz = _tz_param(spec, ctx, op)
        else:
            f_date = compile_expr(arg, ctx)
            get_tz = None

        if get_tz is None:

            def date_part_utc(doc: Any, v: Vars) -> Any:
                x = f_date(doc, v)
                if x is None or x is MISSING:
                    return None
                d = to_date(x, op)
                return part(d if d.tzinfo is UTC else d.astimezone(UTC))

            return date_part_utc

        def date_part(doc: Any, v: Vars) -> Any:
            x = f_date(doc, v)
            tz = get_tz(doc, v)
            if x is None or x is MISSING or tz is None:
                return None
            return part(_local(to_date(x, op), tz))

        return date_part


for _name, _fn in _PARTS.items():
    _date_part(_name, _fn)


# ---- $dateToString ------------------------------------------------------------------

_MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip


def _fmt_offset_hhmm(off: _dt.timedelta) -> str:
    minutes = int(off.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    minutes = abs(minutes)
    return f"{sign}{minutes // 60:02d}{minutes % 60:02d}"


Piece = Callable[[_dt.datetime], str]

_FORMATTERS: dict[str, Piece] = {
    "b": lambda d: _MONTHS[d.month - 1][:3],
    "B": lambda d: _MONTHS[d.month - 1],
    "d": lambda d: f"{d.day:02d}",
    "G": lambda d: f"{d.isocalendar()[0]:04d}",
    "H": lambda d: f"{d.hour:02d}",
    "j": lambda d: f"{d.timetuple().tm_yday:03d}",
    "L": lambda d: f"{d.microsecond // 1000:03d}",
    "m": lambda d: f"{d.month:02d}",
    "M": lambda d: f"{d.minute:02d}",
    "S": lambda d: f"{d.second:02d}",
    "u": lambda d: str(d.isoweekday()),
    "U": lambda d: f"{_week_sunday(d):02d}",
    "V": lambda d: f"{d.isocalendar()[1]:02d}",
    "w": lambda d: str(d.isoweekday() % 7 + 1),
    "Y": lambda d: f"{d.year:04d}",
    "z": lambda d: _fmt_offset_hhmm(d.utcoffset() or _dt.timedelta(0)),
    "Z": lambda d: str(int((d.utcoffset() or _dt.timedelta(0)).total_seconds()) // 60),
}


def _split_format(fmt: str, allowed: str) -> list[str | tuple[str]]:
    """Split a format into literal strings and ``(letter,)`` specifiers; ExprError if bad."""
    out: list[str | tuple[str]] = []
    lit: list[str] = []
    i, n = 0, len(fmt)
    while i < n:
        c = fmt[i]
        if c != "%":
            lit.append(c)
            i += 1
            continue
        if i + 1 >= n:
            raise ExprError("", "Unmatched '%' at end of format string")
        s = fmt[i + 1]
        i += 2
        if s == "%":
            lit.append("%")
            continue
        if s not in allowed:
            raise ExprError("", f"Invalid format character '%{s}' in format string")
        if lit:
            out.append("".join(lit))
            lit = []
        out.append((s,))
    if lit:
        out.append("".join(lit))
    return out


def _iso_local(d: _dt.datetime) -> str:
    return (
        f"{d.year:04d}-{d.month:02d}-{d.day:02d}T{d.hour:02d}:{d.minute:02d}:{d.second:02d}"
        f".{d.microsecond // 1000:03d}"
    )


def _iso_utc(d: _dt.datetime) -> str:
    return _iso_local(d) + "Z"


@lru_cache(maxsize=256)
def _formatter(fmt: str) -> Callable[[_dt.datetime], str]:
    if fmt == "%Y-%m-%dT%H:%M:%S.%LZ":  # the defaults, on the per-document path
        return _iso_utc
    if fmt == "%Y-%m-%dT%H:%M:%S.%L":
        return _iso_local
    pieces: list[Piece] = []
    for p in _split_format(fmt, "".join(_FORMATTERS)):
        if isinstance(p, tuple):
            pieces.append(_FORMATTERS[p[0]])
        else:

            def lit(d: _dt.datetime, s: str = p) -> str:
                return s

            pieces.append(lit)
    if len(pieces) == 1:
        return pieces[0]
    return lambda d: "".join([p(d) for p in pieces])


_DEFAULT_FORMAT_UTC = "%Y-%m-%dT%H:%M:%S.%LZ"
_DEFAULT_FORMAT_LOCAL = "%Y-%m-%dT%H:%M:%S.%L"


def _is_utc(tz: _dt.tzinfo) -> bool:
    return tz is UTC or (isinstance(tz, ZoneInfo) and tz.key in ("UTC", "Etc/UTC", "GMT", "Etc/GMT"))


@operator("$dateToString")
def _date_to_string(args: Any, ctx: Ctx) -> Expr:
    """``$dateToString``: format specifiers as in MongoDB's table; ``onNull`` for a null date.

    Without ``format`` the output is ``%Y-%m-%dT%H:%M:%S.%LZ`` in UTC, and without the
    ``Z`` when a non-UTC ``timezone`` is given (MongoDB docs).
    """
    op = "$dateToString"
    spec = named_args(args, ctx, op, ("date",), ("format", "timezone", "onNull"))
    f_date = compile_expr(spec["date"], ctx.at("date"))
    get_tz = _tz_param(spec, ctx, op)
    f_on_null = compile_expr(spec["onNull"], ctx.at("onNull")) if "onNull" in spec else None

    def format_converter(x: Any) -> Callable[[_dt.datetime], str]:
        if not isinstance(x, str):
            raise ExprError(op, f"{op} requires that 'format' be a string, found: {bson_type(x)}")
        try:
            return _formatter(x)
        except ExprError as e:
            raise ExprError(op, e.message) from None

    get_fmt = (
        _compile_param(spec["format"], ctx.at("format"), format_converter)
        if "format" in spec
        else None
    )
    fmt_utc = _formatter(_DEFAULT_FORMAT_UTC)
    fmt_local = _formatter(_DEFAULT_FORMAT_LOCAL)

    def date_to_string(doc: Any, v: Vars) -> Any:
        x = f_date(doc, v)
        if x is None or x is MISSING:
            return None if f_on_null is None else f_on_null(doc, v)
        tz = get_tz(doc, v)
        if tz is None:
            return None
        if get_fmt is None:
            fmt: Callable[[_dt.datetime], str] | None = fmt_utc if _is_utc(tz) else fmt_local
        else:
            fmt = get_fmt(doc, v)
        if fmt is None:
            return None
        return fmt(_local(to_date(x, op), tz))

    return date_to_string


# ---- $dateFromString ----------------------------------------------------------------


def _truncate_ms(d: _dt.datetime) -> _dt.datetime:
    us = d.microsecond % 1000
    return d.replace(microsecond=d.microsecond - us) if us else d


_TZINFOS: dict[str, int] = {
    "UTC": 0, "GMT": 0, "Z": 0, "UT": 0,
    "EST": -5 * 3600, "EDT": -4 * 3600, "CST": -6 * 3600, "CDT": -5 * 3600,
    "MST": -7 * 3600, "MDT": -6 * 3600, "PST": -8 * 3600, "PDT": -7 * 3600,
}  # fmt: skip
_DEFAULT_A = _dt.datetime(1, 1, 1)
_DEFAULT_B = _dt.datetime(4, 2, 2)


class _ParseError(ValueError):
    pass


def _parse_flexible(s: str) -> _dt.datetime:
    """Parse without a format: ISO 8601 first, then MongoDB's other accepted forms.

    Returns a naive datetime (wall time) or an aware one when the string has an offset.
    dateutil is only trusted when the string names a full date: it would otherwise fill
    missing parts from a default, where MongoDB reports "elements missing".
    """
    try:
        return _dt.datetime.fromisoformat(s)
    except ValueError:
        pass
    if not s.strip():
        raise _ParseError("no date found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            a = _du_parser.parse(s, default=_DEFAULT_A, tzinfos=_TZINFOS)
            b = _du_parser.parse(s, default=_DEFAULT_B, tzinfos=_TZINFOS)
    except (ValueError, OverflowError, Warning) as e:
        raise _ParseError(str(e).split(":")[0]) from None
    if (a.year, a.month, a.day) != (b.year, b.month, b.day):
        raise _ParseError("an incomplete date/time string has been found, with elements missing")
    return a


def _parse_error(s: str, detail: str) -> ExprError:
    return ExprError("$dateFromString", f"Error parsing date string '{s}'; {detail}")


def parse_date_string(s: str) -> _dt.datetime:
    """``$dateFromString`` of ``s`` with no format/timezone: a UTC datetime (ms precision).

    A string without an offset is UTC. Raises :class:`ExprError` naming
    ``$dateFromString`` when ``s`` is not a date MongoDB would accept.
    """
    try:
        d = _dt.datetime.fromisoformat(s)
    except ValueError:
        try:
            d = _parse_flexible(s)
        except _ParseError as e:
            raise _parse_error(s, str(e)) from None
    tz = d.tzinfo
    if tz is None:
        d = d.replace(tzinfo=UTC)
    elif tz is not UTC:
        d = d.astimezone(UTC)
    us = d.microsecond % 1000
    return d.replace(microsecond=d.microsecond - us) if us else d


_PARSE_PATTERNS = {
    "Y": r"(\d{4})",
    "G": r"(\d{4})",
    "m": r"(\d{1,2})",
    "d": r"(\d{1,2})",
    "H": r"(\d{1,2})",
    "M": r"(\d{1,2})",
    "S": r"(\d{1,2})",
    "L": r"(\d{1,3})",
    "j": r"(\d{1,3})",
    "V": r"(\d{1,2})",
    "u": r"([1-7])",
    "z": r"(Z|[+-]\d{2}(?::?\d{2})?)",
    "Z": r"([+-]?\d{1,4})",
    "b": r"([A-Za-z]{3})",
    "B": r"([A-Za-z]+)",
}
_MONTH_NUMBERS = {m.lower(): i for i, m in enumerate(_MONTHS, 1)} | {
    m[:3].lower(): i for i, m in enumerate(_MONTHS, 1)
}


_INCOMPLETE = "an incomplete date/time string has been found, with elements missing"


@lru_cache(maxsize=256)
def _format_parser(fmt: str) -> Callable[[str], _dt.datetime]:
    """A parser for ``$dateFromString`` with ``format`` (raises ExprError at build time)."""
    regex: list[str] = []
    order: list[str] = []
    for p in _split_format(fmt, "".join(_PARSE_PATTERNS)):
        if isinstance(p, tuple):
            if p[0] in order:
                raise ExprError("", f"Duplicate format specifier '%{p[0]}' in format string")
            order.append(p[0])
            regex.append(_PARSE_PATTERNS[p[0]])
        else:
            regex.append(re.escape(p))
    pattern = re.compile("".join(regex), re.IGNORECASE)

    def parse(s: str) -> _dt.datetime:
        m = pattern.fullmatch(s)
        if m is None:
            raise _ParseError(f"the string does not match the format '{fmt}'")
        g = dict(zip(order, m.groups(), strict=True))
        try:
            if "Y" in g:
                year = int(g["Y"])
                if "j" in g:
                    day = _dt.date(year, 1, 1) + _dt.timedelta(days=int(g["j"]) - 1)
                    if day.year != year:
                        raise ValueError("day of year out of range")
                else:
                    # Year, month and day must all be present ("%Y-%m" is an error).
                    if "d" not in g or not ("m" in g or "B" in g or "b" in g):
                        raise ValueError(_INCOMPLETE)
                    month = int(g["m"]) if "m" in g else 1
                    name = g.get("B") or g.get("b")
                    if name is not None:
                        mn = _MONTH_NUMBERS.get(name.lower())
                        if mn is None:
                            raise ValueError(f"unknown month name '{name}'")
                        month = mn
                    day = _dt.date(year, month, int(g["d"]) if "d" in g else 1)
            elif "G" in g:
                day = _dt.date.fromisocalendar(
                    int(g["G"]), int(g.get("V", 1)), int(g.get("u", 1))
                )
            else:
                raise ValueError(_INCOMPLETE)
            ms = int(g["L"].ljust(3, "0")) if "L" in g else 0
            d = _dt.datetime(
                day.year, day.month, day.day,
                int(g.get("H", 0)), int(g.get("M", 0)), int(g.get("S", 0)), ms * 1000,
            )  # fmt: skip
        except ValueError as e:
            raise _ParseError(str(e)) from None
        if "z" in g or "Z" in g:
            if "z" in g:
                z = g["z"]
                if z.upper() == "Z":
                    minutes = 0
                else:
                    digits = z[1:].replace(":", "")
                    minutes = int(digits[:2]) * 60 + int(digits[2:] or 0)
                    minutes = -minutes if z[0] == "-" else minutes
            else:
                minutes = int(g["Z"])
            d = d.replace(tzinfo=_dt.timezone(_dt.timedelta(minutes=minutes)))
        return d

    return parse


@operator("$dateFromString")
def _date_from_string(args: Any, ctx: Ctx) -> Expr:
    """``$dateFromString``: string → date; ``onError`` catches parse errors, ``onNull`` null input."""
    op = "$dateFromString"
    spec = named_args(args, ctx, op, ("dateString",), ("format", "timezone", "onError", "onNull"))
    f_str = compile_expr(spec["dateString"], ctx.at("dateString"))
    f_on_error = compile_expr(spec["onError"], ctx.at("onError")) if "onError" in spec else None
    f_on_null = compile_expr(spec["onNull"], ctx.at("onNull")) if "onNull" in spec else None

    if "format" not in spec and "timezone" not in spec and f_on_error is None:
        # The ASP timeField hot path.
        fromiso = _dt.datetime.fromisoformat

        def date_from_string_fast(doc: Any, v: Vars) -> Any:
            s = f_str(doc, v)
            if type(s) is str:
                try:
                    d = fromiso(s)
                except ValueError:
                    return parse_date_string(s)
                tz = d.tzinfo
                if tz is None:
                    d = d.replace(tzinfo=UTC)
                elif tz is not UTC:
                    d = d.astimezone(UTC)
                us = d.microsecond % 1000
                return d.replace(microsecond=d.microsecond - us) if us else d
            if s is None or s is MISSING:
                return None if f_on_null is None else f_on_null(doc, v)
            raise _not_a_string(s)

        return date_from_string_fast

    def format_converter(x: Any) -> Callable[[str], _dt.datetime]:
        if not isinstance(x, str):
            raise ExprError(op, f"{op} requires that 'format' be a string, found: {bson_type(x)}")
        try:
            return _format_parser(x)
        except ExprError as e:
            raise ExprError(op, e.message) from None

    get_fmt = (
        _compile_param(spec["format"], ctx.at("format"), format_converter)
        if "format" in spec
        else None
    )
    get_tz = _tz_param(spec, ctx, op)
    has_tz_arg = "timezone" in spec

    def date_from_string(doc: Any, v: Vars) -> Any:
        s = f_str(doc, v)
        if s is None or s is MISSING:
            return None if f_on_null is None else f_on_null(doc, v)
        tz = get_tz(doc, v)
        if tz is None:
            return None
        parse: Callable[[str], _dt.datetime] = _parse_flexible
        if get_fmt is not None:
            fmt = get_fmt(doc, v)
            if fmt is None:
                return None
            parse = fmt
        try:
            if type(s) is not str:
                raise _not_a_string(s)
            try:
                d = parse(s)
            except _ParseError as e:
                raise _parse_error(s, str(e)) from None
            if d.tzinfo is None:
                d = _to_utc(d, tz)
            elif has_tz_arg:
                raise _parse_error(
                    s,
                    f"you cannot pass in a date/time string with time zone information ('{s}') "
                    "together with a second time zone argument",
                )
            else:
                d = d.astimezone(UTC)
            return _truncate_ms(d)
        except ExprError:
            if f_on_error is None:
                raise
            return f_on_error(doc, v)

    return date_from_string


def _not_a_string(s: Any) -> ExprError:
    return ExprError(
        "$dateFromString",
        f"$dateFromString requires that 'dateString' be a string, found: {bson_type(s)} "
        f"with value {s!r}",
    )


# ---- $dateTrunc / $dateAdd / $dateSubtract / $dateDiff -------------------------------


def _add_months(local: _dt.datetime, months: int) -> _dt.datetime:
    """Calendar month arithmetic, clamping the day to the target month's length."""
    total = local.year * 12 + (local.month - 1) + months
    year, month = divmod(total, 12)
    month += 1
    if not 1 <= year <= 9999:
        raise OverflowError("date out of range")
    if month == 12:
        last = 31
    else:
        last = (_dt.date(year, month + 1, 1) - _dt.timedelta(days=1)).day
    return local.replace(year=year, month=month, day=min(local.day, last))


def _offset_ms(d: _dt.datetime, tz: _dt.tzinfo) -> int:
    if tz is UTC:
        return 0
    off = d.astimezone(tz).utcoffset()
    return int(off.total_seconds() * 1000) if off else 0


def _week_reference(start_of_week: int) -> _dt.date:
    """The first ``start_of_week`` day on or after 2000-01-01 ($dateTrunc's week origin)."""
    ref = _dt.date(2000, 1, 1)
    return ref + _dt.timedelta(days=(start_of_week - ref.weekday()) % 7)


def _trunc(d: _dt.datetime, unit: str, size: int, tz: _dt.tzinfo, sow: int) -> _dt.datetime:
    if unit in ("millisecond", "second", "minute", "hour"):
        # On the absolute time axis, aligned to the zone's offset at ``d``.
        off = _offset_ms(d, tz)
        bin_ms = _UNIT_MS[unit] * size
        rel = datetime_to_ms(d) + off - _REF_2000_MS
        return ms_to_datetime(rel - rel % bin_ms + _REF_2000_MS - off)
    local = _local(d, tz).replace(tzinfo=None)
    if unit == "day":
        days = (local.date() - _REF_2000.date()).days
        start = _REF_2000 + _dt.timedelta(days=days - days % size)
    elif unit == "week":
        ref = _week_reference(sow)
        days = (local.date() - ref).days
        span = 7 * size
        day = ref + _dt.timedelta(days=days - days % span)
        start = _dt.datetime(day.year, day.month, day.day)
    else:
        months = (local.year - 2000) * 12 + (local.month - 1)
        span = _UNIT_MONTHS[unit] * size
        year, month0 = divmod(months - months % span, 12)
        start = _dt.datetime(2000 + year, month0 + 1, 1)
    return _to_utc(start, tz)


@operator("$dateTrunc")
def _date_trunc(args: Any, ctx: Ctx) -> Expr:
    """``$dateTrunc``: the start of the ``binSize``×``unit`` bin holding ``date``.

    Bins count from 2000-01-01 (weeks: the first ``startOfWeek`` on/after it) in the
    given timezone. Null if any argument is null, or if unit is week and
    ``startOfWeek`` is given but null (MongoDB docs).
    """
    op = "$dateTrunc"
    spec = named_args(args, ctx, op, ("date", "unit"), ("binSize", "timezone", "startOfWeek"))
    f_date = compile_expr(spec["date"], ctx.at("date"))
    get_unit = _compile_param(spec["unit"], ctx.at("unit"), _unit_converter(op))
    long_ = _long_converter(op, "binSize")

    def bin_size(x: Any) -> int:
        i = long_(x)
        if i <= 0:
            raise ExprError(op, f"{op} requires 'binSize' to be greater than 0, but got value {i}")
        return i

    get_size: Callable[[Any, Vars], int | None] = (
        _compile_param(spec["binSize"], ctx.at("binSize"), bin_size)
        if "binSize" in spec
        else (lambda doc, v: 1)
    )
    get_tz = _tz_param(spec, ctx, op)
    get_sow: Callable[[Any, Vars], int | None] = (
        _compile_param(spec["startOfWeek"], ctx.at("startOfWeek"), _start_of_week_converter(op))
        if "startOfWeek" in spec
        else (lambda doc, v: 6)
    )

    def date_trunc(doc: Any, v: Vars) -> Any:
        x = f_date(doc, v)
        unit = get_unit(doc, v)
        size = get_size(doc, v)
        tz = get_tz(doc, v)
        if x is None or x is MISSING or unit is None or size is None or tz is None:
            return None
        sow = get_sow(doc, v) if unit == "week" else 6
        if sow is None:
            return None
        d = to_date(x, op)
        try:
            return _trunc(d, unit, size, tz, sow)
        except (OverflowError, ValueError):
            raise ExprError(op, f"{op} result is out of the supported date range") from None

    return date_trunc


def _date_add_common(args: Any, ctx: Ctx, op: str, sign: int) -> Expr:
    spec = named_args(args, ctx, op, ("startDate", "unit", "amount"), ("timezone",))
    f_date = compile_expr(spec["startDate"], ctx.at("startDate"))
    get_unit = _compile_param(spec["unit"], ctx.at("unit"), _unit_converter(op))
    get_amount = _compile_param(spec["amount"], ctx.at("amount"), _long_converter(op, "amount"))
    get_tz = _tz_param(spec, ctx, op)

    def date_add(doc: Any, v: Vars) -> Any:
        x = f_date(doc, v)
        unit = get_unit(doc, v)
        amount = get_amount(doc, v)
        tz = get_tz(doc, v)
        if x is None or x is MISSING or unit is None or amount is None or tz is None:
            return None
        d = to_date(x, op)
        n = sign * amount
        try:
            if unit in ("millisecond", "second", "minute", "hour"):
                # DST changes the length of a day, never of an hour (MongoDB docs).
                return ms_to_datetime(datetime_to_ms(d) + n * _UNIT_MS[unit])
            local = _local(d, tz).replace(tzinfo=None)
            if unit in ("day", "week"):
                local = local + _dt.timedelta(days=n * (7 if unit == "week" else 1))
            else:
                local = _add_months(local, n * _UNIT_MONTHS[unit])
            return _to_utc(local, tz)
        except (OverflowError, ValueError):
            raise ExprError(op, f"{op} overflowed: the result is out of the supported date range") from None

    return date_add


@operator("$dateAdd")
def _date_add(args: Any, ctx: Ctx) -> Expr:
    """``$dateAdd``: calendar arithmetic in ``timezone`` for day and larger units."""
    return _date_add_common(args, ctx, "$dateAdd", 1)


@operator("$dateSubtract")
def _date_subtract(args: Any, ctx: Ctx) -> Expr:
    """``$dateSubtract``: ``$dateAdd`` with the amount negated."""
    return _date_add_common(args, ctx, "$dateSubtract", -1)


def _diff(s: _dt.datetime, e: _dt.datetime, unit: str, tz: _dt.tzinfo, sow: int) -> int:
    if unit in ("millisecond", "second", "minute", "hour"):
        off = _offset_ms(s, tz)
        size = _UNIT_MS[unit]
        return (datetime_to_ms(e) + off) // size - (datetime_to_ms(s) + off) // size
    ls, le = _local(s, tz), _local(e, tz)
    if unit == "year":
        return le.year - ls.year
    if unit == "quarter":
        return (le.year * 4 + (le.month - 1) // 3) - (ls.year * 4 + (ls.month - 1) // 3)
    if unit == "month":
        return (le.year * 12 + le.month) - (ls.year * 12 + ls.month)
    ds, de = ls.date().toordinal(), le.date().toordinal()
    if unit == "day":
        return de - ds
    # week: count week starts crossed; date(1,1,1) (ordinal 1) is a Monday.
    k = 1 + sow
    return (de - k) // 7 - (ds - k) // 7


@operator("$dateDiff")
def _date_diff(args: Any, ctx: Ctx) -> Expr:
    """``$dateDiff``: unit boundaries crossed from startDate to endDate, as a long."""
    op = "$dateDiff"
    spec = named_args(
        args, ctx, op, ("startDate", "endDate", "unit"), ("timezone", "startOfWeek")
    )
    f_start = compile_expr(spec["startDate"], ctx.at("startDate"))
    f_end = compile_expr(spec["endDate"], ctx.at("endDate"))
    get_unit = _compile_param(spec["unit"], ctx.at("unit"), _unit_converter(op))
    get_tz = _tz_param(spec, ctx, op)
    get_sow: Callable[[Any, Vars], int | None] = (
        _compile_param(spec["startOfWeek"], ctx.at("startOfWeek"), _start_of_week_converter(op))
        if "startOfWeek" in spec
        else (lambda doc, v: 6)
    )

    def date_diff(doc: Any, v: Vars) -> Any:
        s = f_start(doc, v)
        e = f_end(doc, v)
        unit = get_unit(doc, v)
        tz = get_tz(doc, v)
        if s is None or s is MISSING or e is None or e is MISSING or unit is None or tz is None:
            return None
        sow = get_sow(doc, v) if unit == "week" else 6
        if sow is None:
            return None
        return Int64(_diff(to_date(s, op), to_date(e, op), unit, tz, sow))

    return date_diff
