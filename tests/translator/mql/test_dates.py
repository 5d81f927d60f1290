"""Date expression operators: MongoDB's documented examples, null/missing and errors."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from bson import Int64, ObjectId, Timestamp

from tests.translator.mql.mqlhelpers import compile_error, ev, expr_error
from translator.mql.expr import ExprError
from translator.mql.operators.dates import parse_date_string
from translator.mql.values import UTC


def D(s: str) -> dt.datetime:
    """``ISODate("...")``: a UTC datetime."""
    d = dt.datetime.fromisoformat(s)
    return d.replace(tzinfo=UTC) if d.tzinfo is None else d.astimezone(UTC)


def assert_date(got: Any, expected: dt.datetime) -> None:
    assert type(got) is dt.datetime
    assert got.tzinfo is UTC
    assert got == expected


# ---- $dateFromString ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ({"dateString": "2017-02-08T12:10:40.787"}, "2017-02-08T12:10:40.787"),
        ({"dateString": "2017-02-08T12:10:40.787", "timezone": "America/New_York"}, "2017-02-08T17:10:40.787"),
        ({"dateString": "2017-02-08"}, "2017-02-08T00:00:00"),
        ({"dateString": "oct 20 2020"}, "2020-10-20T00:00:00"),
        ({"dateString": "06-15-2018", "format": "%m-%d-%Y"}, "2018-06-15T00:00:00"),
        ({"dateString": "15-06-2018", "format": "%d-%m-%Y"}, "2018-06-15T00:00:00"),
        ({"dateString": "WED jan 31 12:05:28 +03:30 1996"}, "1996-01-31T08:35:28"),
    ],
)
def test_date_from_string_docs_behaviour_table(args: dict[str, Any], expected: str) -> None:
    assert_date(ev({"$dateFromString": args}), D(expected))


LOGMESSAGES = [
    ({"_id": 1, "date": "2017-02-08T12:10:40.787", "timezone": "America/New_York"}, "2017-02-08T17:10:40.787", "2017-02-08T17:10:40.787"),
    ({"_id": 2, "date": "2017-02-08", "timezone": "-05:00"}, "2017-02-08T05:00:00", "2017-02-08T05:00:00"),
    ({"_id": 3, "message": " Step 1: Ended "}, None, None),
    ({"_id": 4, "date": "2017-02-09", "timezone": "Europe/London"}, "2017-02-09T05:00:00", "2017-02-09T00:00:00"),
    ({"_id": 5, "date": "2017-02-09T03:35:02.055", "timezone": "+0530"}, "2017-02-09T08:35:02.055", "2017-02-08T22:05:02.055"),
]  # fmt: skip


@pytest.mark.parametrize(("doc", "in_new_york", "in_own_zone"), LOGMESSAGES)
def test_date_from_string_docs_logmessages(doc: dict[str, Any], in_new_york: str | None, in_own_zone: str | None) -> None:
    got_ny = ev({"$dateFromString": {"dateString": "$date", "timezone": "America/New_York"}}, doc)
    got_own = ev({"$dateFromString": {"dateString": "$date", "timezone": "$timezone"}}, doc)
    if in_new_york is None:
        assert got_ny is None and got_own is None
    else:
        assert in_own_zone is not None
        assert_date(got_ny, D(in_new_york))
        assert_date(got_own, D(in_own_zone))


def test_date_from_string_docs_on_error() -> None:
    spec = {"$dateFromString": {"dateString": "$date", "timezone": "$timezone", "onError": "$date"}}
    ok = {"_id": 1, "date": "2017-02-08T12:10:40.787", "timezone": "America/New_York"}
    bad = {"_id": 2, "date": "20177-02-09T03:35:02.055", "timezone": "America/New_York"}
    assert_date(ev(spec, ok), D("2017-02-08T17:10:40.787"))
    assert ev(spec, bad) == "20177-02-09T03:35:02.055"


def test_date_from_string_docs_on_null() -> None:
    epoch = dt.datetime(1970, 1, 1, tzinfo=UTC)
    spec = {"$dateFromString": {"dateString": "$date", "timezone": "$timezone", "onNull": epoch}}
    assert_date(ev(spec, {"date": "2017-02-08T12:10:40.787", "timezone": "America/New_York"}), D("2017-02-08T17:10:40.787"))
    assert ev(spec, {"date": None, "timezone": "America/New_York"}) is epoch
    assert ev({"$dateFromString": {"dateString": "$date", "onNull": "n"}}) == "n"
    assert ev({"$dateFromString": {"dateString": "$date"}}) is None


@pytest.mark.parametrize(
    ("s", "expected"),
    [
        ("2024-08-08T23:08:02.881+00:00", "2024-08-08T23:08:02.881"),
        ("2024-08-08T23:08:02.881Z", "2024-08-08T23:08:02.881"),
        ("2024-08-08T23:08:02.881999Z", "2024-08-08T23:08:02.881"),  # ms precision: truncated
        ("2024-08-08T23:08:02+02:00", "2024-08-08T21:08:02"),
        ("2024-08-08T23:08:02.5-0130", "2024-08-09T00:38:02.500"),
        ("2024-08-08 23:08", "2024-08-08T23:08:00"),
        ("Tue, 06 Aug 2024 10:00:00 GMT", "2024-08-06T10:00:00"),
        ("2024-08-08 10:00:00 EST", "2024-08-08T15:00:00"),
    ],
)
def test_date_from_string_hot_path_and_parse_date_string(s: str, expected: str) -> None:
    assert_date(ev({"$dateFromString": {"dateString": "$timestamp"}}, {"timestamp": s}), D(expected))
    assert_date(parse_date_string(s), D(expected))


@pytest.mark.parametrize(
    "s",
    ["20177-02-09T03:35:02.055", "12:05", "5", "hello", "", "2024-13-01", "2024-08-08 10:00:00 XYZ"],
)
def test_date_from_string_parse_errors(s: str) -> None:
    e = expr_error({"$dateFromString": {"dateString": "$s"}}, {"s": s})
    assert e.op == "$dateFromString"
    assert e.message.startswith(f"Error parsing date string '{s}'; ")
    with pytest.raises(ExprError) as ei:
        parse_date_string(s)
    assert ei.value.message == e.message


def test_date_from_string_incomplete_date_wording() -> None:
    e = expr_error({"$dateFromString": {"dateString": "12:05"}})
    assert e.message == (
        "Error parsing date string '12:05'; an incomplete date/time string has been found, "
        "with elements missing"
    )


def test_date_from_string_non_string_input() -> None:
    e = expr_error({"$dateFromString": {"dateString": 5}})
    assert (e.op, e.message) == (
        "$dateFromString",
        "$dateFromString requires that 'dateString' be a string, found: int with value 5",
    )
    assert ev({"$dateFromString": {"dateString": 5, "onError": "bad"}}) == "bad"


def test_date_from_string_offset_in_string_and_timezone_argument_conflict() -> None:
    e = expr_error({"$dateFromString": {"dateString": "2017-02-08T12:10:40.787Z", "timezone": "Europe/London"}})
    assert e.message == (
        "Error parsing date string '2017-02-08T12:10:40.787Z'; you cannot pass in a date/time "
        "string with time zone information ('2017-02-08T12:10:40.787Z') together with a second "
        "time zone argument"
    )


@pytest.mark.parametrize(
    ("s", "fmt", "expected"),
    [
        ("2017-02-08T12:10:40.787+0100", "%Y-%m-%dT%H:%M:%S.%L%z", "2017-02-08T11:10:40.787"),
        ("2017-02-08T12:10:40.7-01:30", "%Y-%m-%dT%H:%M:%S.%L%z", "2017-02-08T13:40:40.700"),
        ("2017-02-08 12:10 +60", "%Y-%m-%d %H:%M %Z", "2017-02-08T11:10:00"),
        ("2017/039", "%Y/%j", "2017-02-08T00:00:00"),
        ("2017-W06-3", "%G-W%V-%u", "2017-02-08T00:00:00"),
        ("8 February 2017", "%d %B %Y", "2017-02-08T00:00:00"),
        ("08-feb-2017 100%", "%d-%b-%Y 100%%", "2017-02-08T00:00:00"),
    ],
)
def test_date_from_string_with_format(s: str, fmt: str, expected: str) -> None:
    assert_date(ev({"$dateFromString": {"dateString": s, "format": fmt}}), D(expected))


def test_date_from_string_format_mismatch_and_bad_format() -> None:
    e = expr_error({"$dateFromString": {"dateString": "2017-02-08", "format": "%d/%m/%Y"}})
    assert e.message == (
        "Error parsing date string '2017-02-08'; the string does not match the format '%d/%m/%Y'"
    )
    assert compile_error({"$dateFromString": {"dateString": "x", "format": "%Y-%q"}}) == (
        "t.$dateFromString.format: Invalid format character '%q' in format string"
    )
    e = expr_error({"$dateFromString": {"dateString": "x", "format": "$f"}}, {"f": "%Y%"})
    assert (e.op, e.message) == ("$dateFromString", "Unmatched '%' at end of format string")


def test_date_from_string_timezone_errors_and_null() -> None:
    assert compile_error({"$dateFromString": {"dateString": "2017-02-08", "timezone": "Mars/Olympus"}}) == (
        't.$dateFromString.timezone: unrecognized time zone identifier: "Mars/Olympus"'
    )
    e = expr_error({"$dateFromString": {"dateString": "2017-02-08", "timezone": "$tz"}}, {"tz": "Nope/Nope"})
    assert (e.op, e.message) == ("$dateFromString", 'unrecognized time zone identifier: "Nope/Nope"')
    assert ev({"$dateFromString": {"dateString": "2017-02-08", "timezone": "$tz"}}) is None
    for bad in ("+25:00", "+3", "america/new_york", "America", ""):
        e = expr_error({"$year": {"date": "$d", "timezone": "$tz"}}, {"d": SALE_DATE, "tz": bad})
        assert (e.op, e.message) == ("$year", f'unrecognized time zone identifier: "{bad}"')
    e = expr_error({"$year": {"date": "$d", "timezone": "$tz"}}, {"d": SALE_DATE, "tz": 5})
    assert e.message == "timezone must evaluate to a string, found int"


def test_date_from_string_unknown_parameter() -> None:
    assert compile_error({"$dateFromString": {"dateString": "x", "timeZone": "UTC"}}) == (
        "t.$dateFromString.timeZone: unrecognized parameter to $dateFromString: 'timeZone'; "
        "did you mean 'timezone'?"
    )


# ---- $dateToString ------------------------------------------------------------------

SALE_DATE = D("2014-01-01T08:15:39.736")


@pytest.mark.parametrize(
    ("fmt", "tz", "expected"),
    [
        ("%Y-%m-%d", None, "2014-01-01"),
        ("%H:%M:%S:%L%z", "America/New_York", "03:15:39:736-0500"),
        ("%H:%M:%S:%L%z", "+04:30", "12:45:39:736+0430"),
        ("%Z", "America/New_York", "-300"),
        ("%Z", "+04:30", "270"),
        ("%b", "+04:30", "Jan"),
        ("%B", "+04:30", "January"),
    ],
)
def test_date_to_string_docs_example(fmt: str, tz: str | None, expected: str) -> None:
    args: dict[str, Any] = {"format": fmt, "date": "$date"}
    if tz is not None:
        args["timezone"] = tz
    assert ev({"$dateToString": args}, {"date": SALE_DATE}) == expected


@pytest.mark.parametrize(
    ("fmt", "date", "expected"),
    [
        ("%j %U %V %G %u %w", "2014-01-01T00:00:00", "001 00 01 2014 3 4"),
        ("%j %U %V %G %u %w", "2016-01-03T00:00:00", "003 01 53 2015 7 1"),
        ("%Y-%m-%dT%H:%M:%S.%LZ", "2024-12-31T23:59:59.999", "2024-12-31T23:59:59.999Z"),
        ("100%% %d", "0005-03-04T00:00:00", "100% 04"),
        ("%Y", "0005-03-04T00:00:00", "0005"),
        ("plain", "2014-01-01T00:00:00", "plain"),
    ],
)
def test_date_to_string_specifiers(fmt: str, date: str, expected: str) -> None:
    assert ev({"$dateToString": {"format": fmt, "date": "$d"}}, {"d": D(date)}) == expected


def test_date_to_string_default_formats() -> None:
    doc = {"d": SALE_DATE}
    assert ev({"$dateToString": {"date": "$d"}}, doc) == "2014-01-01T08:15:39.736Z"
    assert ev({"$dateToString": {"date": "$d", "timezone": "UTC"}}, doc) == "2014-01-01T08:15:39.736Z"
    assert ev({"$dateToString": {"date": "$d", "timezone": "America/New_York"}}, doc) == "2014-01-01T03:15:39.736"


def test_date_to_string_accepts_timestamp_and_object_id() -> None:
    assert ev({"$dateToString": {"date": Timestamp(1_500_000_000, 7)}}) == "2017-07-14T02:40:00.000Z"
    oid = ObjectId.from_datetime(D("2020-01-02T03:04:05"))
    assert ev({"$dateToString": {"date": oid, "format": "%Y-%m-%d %H:%M:%S"}}) == "2020-01-02 03:04:05"


def test_date_to_string_null_rules() -> None:
    assert ev({"$dateToString": {"date": "$nope"}}) is None
    assert ev({"$dateToString": {"date": None, "onNull": "none"}}) == "none"
    assert ev({"$dateToString": {"date": "$d", "timezone": "$tz"}}, {"d": SALE_DATE}) is None
    assert ev({"$dateToString": {"date": "$d", "format": "$f"}}, {"d": SALE_DATE}) is None


def test_date_to_string_errors() -> None:
    e = expr_error({"$dateToString": {"date": "$d"}}, {"d": "2014-01-01"})
    assert (e.op, e.message) == ("$dateToString", "can't convert from BSON type string to Date")
    assert compile_error({"$dateToString": {"date": "$d", "format": "%Q"}}) == (
        "t.$dateToString.format: Invalid format character '%Q' in format string"
    )
    assert compile_error({"$dateToString": {"date": "$d", "format": "50%"}}) == (
        "t.$dateToString.format: Unmatched '%' at end of format string"
    )
    assert compile_error({"$dateToString": {"format": "%Y"}}) == (
        "t.$dateToString: missing 'date' parameter to $dateToString"
    )
    e = expr_error({"$dateToString": {"date": "$d", "format": "$f"}}, {"d": SALE_DATE, "f": 5})
    assert e.message == "$dateToString requires that 'format' be a string, found: int"


# ---- date parts ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "expected"),
    [
        ("$year", 2014),
        ("$month", 1),
        ("$dayOfMonth", 1),
        ("$hour", 8),
        ("$minute", 15),
        ("$second", 39),
        ("$millisecond", 736),
        ("$dayOfYear", 1),
        ("$dayOfWeek", 4),
        ("$week", 0),
        ("$isoWeek", 1),
        ("$isoWeekYear", 2014),
        ("$isoDayOfWeek", 3),
    ],
)
def test_date_parts_docs_example(op: str, expected: int) -> None:
    doc = {"date": SALE_DATE}
    for spec in ({op: "$date"}, {op: ["$date"]}, {op: {"date": "$date"}}):
        got = ev(spec, doc)
        assert type(got) is int and got == expected


@pytest.mark.parametrize(
    ("op", "date", "expected"),
    [
        ("$isoWeek", "2006-10-24T00:00:00", 43),
        ("$isoWeekYear", "2016-01-01T00:00:00", 2015),
        ("$isoDayOfWeek", "1998-11-07T00:00:00", 6),
        ("$week", "2016-01-03T00:00:00", 1),
        ("$week", "2016-12-31T00:00:00", 52),
        ("$dayOfYear", "2016-12-31T00:00:00", 366),
        ("$dayOfWeek", "2016-01-03T00:00:00", 1),
        ("$dayOfWeek", "2016-01-02T00:00:00", 7),
    ],
)
def test_date_parts_calendar_edges(op: str, date: str, expected: int) -> None:
    assert ev({op: "$d"}, {"d": D(date)}) == expected


@pytest.mark.parametrize(
    ("op", "tz", "expected"),
    [
        ("$hour", "America/Chicago", 10),
        ("$minute", "+03:30", 43),
        ("$hour", "+03:30", 18),
        ("$hour", "-0530", 9),
        ("$hour", "+03", 18),
        ("$dayOfMonth", "Pacific/Auckland", 20),
        ("$hour", "Z", 15),
    ],
)
def test_date_parts_with_timezone(op: str, tz: str, expected: int) -> None:
    doc = {"date": D("2017-06-19T15:13:25.713")}
    assert ev({op: {"date": "$date", "timezone": tz}}, doc) == expected


def test_date_parts_null_rules_and_inputs() -> None:
    assert ev({"$year": "$nope"}) is None
    assert ev({"$year": None}) is None
    assert ev({"$year": {"date": "$d", "timezone": "$tz"}}, {"d": SALE_DATE}) is None
    assert ev({"$year": Timestamp(1_500_000_000, 1)}) == 2017
    assert ev({"$month": ObjectId.from_datetime(D("2020-03-02T00:00:00"))}) == 3


def test_date_parts_errors() -> None:
    e = expr_error({"$month": "$d"}, {"d": "2014-01-01"})
    assert (e.op, e.message) == ("$month", "can't convert from BSON type string to Date")
    assert compile_error({"$year": ["$a", "$b"]}) == (
        "t.$year: Expression $year takes exactly 1 arguments. 2 were passed in."
    )
    assert compile_error({"$hour": {"date": "$d", "timezone": "Nowhere"}}) == (
        't.$hour.timezone: unrecognized time zone identifier: "Nowhere"'
    )
    assert compile_error({"$hour": {"dat": "$d"}}).startswith("t.$hour.dat: unrecognized parameter to $hour")


# ---- $dateTrunc ---------------------------------------------------------------------

CAKE_SALES = [
    ("2020-05-18T14:10:30", "2020-05-11T07:00:00", "2020-01-01T00:00:00"),
    ("2021-03-20T11:30:05", "2021-03-15T07:00:00", "2021-01-01T00:00:00"),
    ("2021-01-11T06:31:15", "2021-01-04T08:00:00", "2021-01-01T00:00:00"),
    ("2020-02-08T13:13:23", "2020-02-03T08:00:00", "2020-01-01T00:00:00"),
    ("2019-05-18T16:09:01", "2019-05-13T07:00:00", "2019-01-01T00:00:00"),
    ("2019-01-08T06:12:03", "2019-01-07T08:00:00", "2019-01-01T00:00:00"),
]


@pytest.mark.parametrize(("order_date", "two_weeks", "six_months"), CAKE_SALES)
def test_date_trunc_docs_cake_sales(order_date: str, two_weeks: str, six_months: str) -> None:
    doc = {"orderDate": D(order_date)}
    spec = {
        "$dateTrunc": {
            "date": "$orderDate", "unit": "week", "binSize": 2,
            "timezone": "America/Los_Angeles", "startOfWeek": "Monday",
        }
    }  # fmt: skip
    assert_date(ev(spec, doc), D(two_weeks))
    assert_date(ev({"$dateTrunc": {"date": "$orderDate", "unit": "month", "binSize": 6}}, doc), D(six_months))


@pytest.mark.parametrize(
    ("unit", "bin_size", "extra", "expected"),
    [
        ("hour", 1, {}, "2021-03-20T11:00:00"),
        ("hour", 2, {}, "2021-03-20T10:00:00"),
        ("year", 10, {}, "2020-01-01T00:00:00"),
        ("quarter", 1, {}, "2021-01-01T00:00:00"),
        ("month", 1, {}, "2021-03-01T00:00:00"),
        ("week", 1, {}, "2021-03-14T00:00:00"),
        ("week", 1, {"startOfWeek": "SAT"}, "2021-03-20T00:00:00"),
        ("day", 1, {}, "2021-03-20T00:00:00"),
        ("day", 1, {"timezone": "Asia/Tokyo"}, "2021-03-19T15:00:00"),
        ("minute", 15, {}, "2021-03-20T11:30:00"),
        ("second", 1, {}, "2021-03-20T11:30:05"),
        ("millisecond", 100, {}, "2021-03-20T11:30:05"),
        ("hour", 1, {"timezone": "+05:30"}, "2021-03-20T11:30:00"),  # 17:00:05 local
    ],
)
def test_date_trunc_units(unit: str, bin_size: int, extra: dict[str, Any], expected: str) -> None:
    spec = {"$dateTrunc": {"date": "$d", "unit": unit, "binSize": bin_size, **extra}}
    assert_date(ev(spec, {"d": D("2021-03-20T11:30:05.050")}), D(expected))


def test_date_trunc_before_reference_date() -> None:
    spec = {"$dateTrunc": {"date": "$d", "unit": "day", "binSize": 7}}
    # Bins count from 2000-01-01, also backwards: 1999-12-25 starts the bin before it.
    assert_date(ev(spec, {"d": D("1999-12-31T10:00:00")}), D("1999-12-25T00:00:00"))


def test_date_trunc_null_rules() -> None:
    doc = {"d": D("2021-03-20T11:30:05")}
    assert ev({"$dateTrunc": {"date": "$nope", "unit": "day"}}, doc) is None
    assert ev({"$dateTrunc": {"date": "$d", "unit": "$nope"}}, doc) is None
    assert ev({"$dateTrunc": {"date": "$d", "unit": "day", "binSize": None}}, doc) is None
    assert ev({"$dateTrunc": {"date": "$d", "unit": "day", "timezone": None}}, doc) is None
    assert ev({"$dateTrunc": {"date": "$d", "unit": "week", "startOfWeek": None}}, doc) is None
    # startOfWeek is ignored for other units.
    assert_date(ev({"$dateTrunc": {"date": "$d", "unit": "day", "startOfWeek": None}}, doc), D("2021-03-20"))


def test_date_trunc_errors() -> None:
    assert compile_error({"$dateTrunc": {"date": "$d", "unit": "fortnight"}}) == (
        "t.$dateTrunc.unit: $dateTrunc parameter 'unit' value cannot be recognized as a time unit: fortnight"
    )
    assert compile_error({"$dateTrunc": {"date": "$d", "unit": "day", "binSize": 0}}) == (
        "t.$dateTrunc.binSize: $dateTrunc requires 'binSize' to be greater than 0, but got value 0"
    )
    assert compile_error({"$dateTrunc": {"date": "$d", "unit": "week", "startOfWeek": "caturday"}}) == (
        "t.$dateTrunc.startOfWeek: $dateTrunc parameter 'startOfWeek' value cannot be recognized "
        "as a day of a week: caturday"
    )
    e = expr_error({"$dateTrunc": {"date": "$d", "unit": "$u"}}, {"d": D("2021-03-20"), "u": "eon"})
    assert (e.op, e.message) == ("$dateTrunc", "$dateTrunc parameter 'unit' value cannot be recognized as a time unit: eon")
    e = expr_error({"$dateTrunc": {"date": "$d", "unit": "day"}}, {"d": 5})
    assert e.message == "can't convert from BSON type int to Date"


# ---- $dateAdd / $dateSubtract -------------------------------------------------------


@pytest.mark.parametrize(
    ("purchase", "expected"),
    [
        ("2020-12-31T00:00:00", "2021-01-03T00:00:00"),
        ("2021-02-28T00:00:00", "2021-03-03T00:00:00"),
        ("2021-02-26T00:00:00", "2021-03-01T00:00:00"),
    ],
)
def test_date_add_docs_shipping(purchase: str, expected: str) -> None:
    spec = {"$dateAdd": {"startDate": "$purchaseDate", "unit": "day", "amount": 3}}
    assert_date(ev(spec, {"purchaseDate": D(purchase)}), D(expected))


@pytest.mark.parametrize(
    ("location", "login", "one_day", "hours_24"),
    [
        ("America/New_York", "2021-03-13T15:00:00", "2021-03-14T14:00:00", "2021-03-14T15:00:00"),
        ("America/Mexico_City", "2021-03-13T10:00:00", "2021-03-14T10:00:00", "2021-03-14T10:00:00"),
    ],
)
def test_date_add_docs_daylight_saving(location: str, login: str, one_day: str, hours_24: str) -> None:
    doc = {"location": location, "login": D(login)}
    day = {"$dateAdd": {"startDate": "$login", "unit": "day", "amount": 1, "timezone": "$location"}}
    hours = {"$dateAdd": {"startDate": "$login", "unit": "hour", "amount": 24, "timezone": "$location"}}
    assert_date(ev(day, doc), D(one_day))
    assert_date(ev(hours, doc), D(hours_24))


@pytest.mark.parametrize(
    ("start", "unit", "amount", "expected"),
    [
        ("2020-10-31T12:10:05", "month", 1, "2020-11-30T12:10:05"),
        ("2020-01-31T00:00:00", "month", 1, "2020-02-29T00:00:00"),
        ("2020-02-29T00:00:00", "year", 1, "2021-02-28T00:00:00"),
        ("2020-11-30T00:00:00", "quarter", 1, "2021-02-28T00:00:00"),
        ("2020-01-01T00:00:00", "week", 2, "2020-01-15T00:00:00"),
        ("2020-01-01T00:00:00", "millisecond", 1500, "2020-01-01T00:00:01.500"),
        ("2020-01-01T00:00:00", "minute", -1, "2019-12-31T23:59:00"),
        ("2020-01-01T00:00:00", "second", 2.0, "2020-01-01T00:00:02"),
        ("2020-01-01T00:00:00", "day", Int64(1), "2020-01-02T00:00:00"),
    ],
)
def test_date_add_units(start: str, unit: str, amount: Any, expected: str) -> None:
    spec = {"$dateAdd": {"startDate": "$d", "unit": unit, "amount": amount}}
    assert_date(ev(spec, {"d": D(start)}), D(expected))


def test_date_subtract() -> None:
    spec = {"$dateSubtract": {"startDate": "$d", "unit": "month", "amount": 1}}
    assert_date(ev(spec, {"d": D("2021-03-31T10:00:00")}), D("2021-02-28T10:00:00"))
    spec2 = {"$dateSubtract": {"startDate": "$d", "unit": "hour", "amount": 3, "timezone": "Europe/Paris"}}
    assert_date(ev(spec2, {"d": D("2021-03-28T03:00:00")}), D("2021-03-28T00:00:00"))


def test_date_add_null_and_errors() -> None:
    doc = {"d": D("2021-03-20T00:00:00")}
    assert ev({"$dateAdd": {"startDate": "$nope", "unit": "day", "amount": 1}}, doc) is None
    assert ev({"$dateAdd": {"startDate": "$d", "unit": "day", "amount": "$nope"}}, doc) is None
    assert compile_error({"$dateAdd": {"startDate": "$d", "unit": "day", "amount": 1.5}}) == (
        "t.$dateAdd.amount: $dateAdd requires 'amount' to be a 64-bit integer, but got value 1.5 of type double"
    )
    assert compile_error({"$dateAdd": {"startDate": "$d", "unit": "day"}}) == (
        "t.$dateAdd: missing 'amount' parameter to $dateAdd"
    )
    e = expr_error({"$dateAdd": {"startDate": "$d", "unit": "year", "amount": 10_000}}, doc)
    assert (e.op, e.message) == ("$dateAdd", "$dateAdd overflowed: the result is out of the supported date range")
    e = expr_error({"$dateSubtract": {"startDate": "$d", "unit": "day", "amount": "$n"}}, {**doc, "n": "1"})
    assert e.message == "$dateSubtract requires 'amount' to be a 64-bit integer, but got value '1' of type string"


# ---- $dateDiff ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("purchased", "delivered", "days"),
    [
        ("2020-12-31T00:00:00", "2021-01-05T00:00:00", 5),
        ("2021-02-28T00:00:00", "2021-03-07T00:00:00", 7),
        ("2021-02-16T00:00:00", "2021-02-18T00:00:00", 2),
    ],
)
def test_date_diff_docs_elapsed_time(purchased: str, delivered: str, days: int) -> None:
    spec = {"$dateDiff": {"startDate": "$purchased", "endDate": "$delivered", "unit": "day"}}
    got = ev(spec, {"purchased": D(purchased), "delivered": D(delivered)})
    assert type(got) is Int64 and got == days


@pytest.mark.parametrize(
    ("start", "end", "years", "months", "days"),
    [
        ("2010-01-01", "2011-01-01", 1, 12, 365),
        ("2010-01-01", "2011-07-01", 1, 18, 546),
        ("2010-03-01", "2010-04-30", 0, 1, 60),
    ],
)
def test_date_diff_docs_result_precision(start: str, end: str, years: int, months: int, days: int) -> None:
    doc = {"start": D(start), "end": D(end)}
    got = [
        ev({"$dateDiff": {"startDate": "$start", "endDate": "$end", "unit": u}}, doc)
        for u in ("year", "month", "day")
    ]
    assert got == [years, months, days]


@pytest.mark.parametrize(
    ("start", "end", "sunday", "monday", "friday"),
    [
        ("2021-01-01", "2021-01-31", 5, 4, 4),
        ("2021-02-01", "2021-02-28", 4, 3, 4),
        ("2021-03-01", "2021-03-31", 4, 4, 4),
    ],
)
def test_date_diff_docs_weeks_per_month(start: str, end: str, sunday: int, monday: int, friday: int) -> None:
    doc = {"start": D(start), "end": D(end)}
    base = {"startDate": "$start", "endDate": "$end", "unit": "week"}
    assert ev({"$dateDiff": base}, doc) == sunday
    assert ev({"$dateDiff": {**base, "startOfWeek": "Monday"}}, doc) == monday
    assert ev({"$dateDiff": {**base, "startOfWeek": "fri"}}, doc) == friday


@pytest.mark.parametrize(
    ("start", "end", "unit", "extra", "expected"),
    [
        ("2021-03-20T11:30:00", "2021-03-20T10:59:59", "hour", {}, -1),
        ("2021-03-20T11:59:59.999", "2021-03-20T12:00:00", "millisecond", {}, 1),
        ("2021-03-20T11:59:59.999", "2021-03-20T12:00:00", "second", {}, 1),
        ("2021-03-20T11:59:59", "2021-03-20T12:00:01", "minute", {}, 1),
        ("2020-12-31T23:00:00", "2021-01-01T01:00:00", "year", {}, 1),
        ("2020-12-31T23:00:00", "2021-01-01T01:00:00", "year", {"timezone": "America/New_York"}, 0),
        ("2021-03-31T00:00:00", "2021-04-01T00:00:00", "quarter", {}, 1),
        ("2021-03-20T23:30:00", "2021-03-21T00:30:00", "day", {"timezone": "+01:00"}, 0),
        ("2021-03-20T11:10:00", "2021-03-20T11:50:00", "hour", {"timezone": "+05:30"}, 1),
        # DST spring-forward in New York: 24 real hours, one calendar day.
        ("2021-03-13T15:00:00", "2021-03-14T15:00:00", "hour", {"timezone": "America/New_York"}, 24),
        ("2021-03-13T15:00:00", "2021-03-14T15:00:00", "day", {"timezone": "America/New_York"}, 1),
    ],
)
def test_date_diff_units(start: str, end: str, unit: str, extra: dict[str, Any], expected: int) -> None:
    spec = {"$dateDiff": {"startDate": "$s", "endDate": "$e", "unit": unit, **extra}}
    got = ev(spec, {"s": D(start), "e": D(end)})
    assert type(got) is Int64 and got == expected


def test_date_diff_null_and_errors() -> None:
    doc = {"s": D("2021-03-20")}
    assert ev({"$dateDiff": {"startDate": "$s", "endDate": "$nope", "unit": "day"}}, doc) is None
    assert ev({"$dateDiff": {"startDate": "$s", "endDate": "$s", "unit": "day", "timezone": None}}, doc) is None
    assert compile_error({"$dateDiff": {"startDate": "$s", "endDate": "$s"}}) == (
        "t.$dateDiff: missing 'unit' parameter to $dateDiff"
    )
    e = expr_error({"$dateDiff": {"startDate": "$s", "endDate": "x", "unit": "day"}}, doc)
    assert (e.op, e.message) == ("$dateDiff", "can't convert from BSON type string to Date")
