"""$currentDate, $createUUID and $rand: types, ranges, and that they are never folded."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from bson.binary import Binary, UuidRepresentation

from translator.errors import TranslateError
from translator.mql.expr import EMPTY_VARS, Ctx, compile_expr, is_const
from translator.mql.values import UTC


def test_current_date_is_now_in_utc_with_ms_precision() -> None:
    fn = compile_expr({"$currentDate": {}}, Ctx("t"))
    before = dt.datetime.now(UTC).replace(microsecond=0)
    got = fn({}, EMPTY_VARS)
    after = dt.datetime.now(UTC)
    assert type(got) is dt.datetime
    assert got.tzinfo is UTC
    assert got.microsecond % 1000 == 0
    assert before <= got <= after
    assert not is_const(fn)


def test_current_date_is_evaluated_per_document() -> None:
    fn = compile_expr({"$currentDate": []}, Ctx("t"))
    first = fn({}, EMPTY_VARS)
    later = first
    deadline = dt.datetime.now(UTC) + dt.timedelta(seconds=1)
    while later == first and dt.datetime.now(UTC) < deadline:
        later = fn({}, EMPTY_VARS)
    assert later > first


def test_create_uuid_is_a_random_subtype_4_binary() -> None:
    fn = compile_expr({"$createUUID": {}}, Ctx("t"))
    a, b = fn({}, EMPTY_VARS), fn({}, EMPTY_VARS)
    assert isinstance(a, Binary)
    assert a.subtype == 4
    assert len(bytes(a)) == 16
    u = a.as_uuid(UuidRepresentation.STANDARD)
    assert u.version == 4 and u.variant == uuid.RFC_4122
    assert a != b


def test_rand_is_a_double_in_unit_interval_and_not_folded() -> None:
    fn = compile_expr({"$rand": {}}, Ctx("t"))
    values = [fn({}, EMPTY_VARS) for _ in range(200)]
    assert all(type(x) is float and 0.0 <= x < 1.0 for x in values)
    assert len(set(values)) > 190


@pytest.mark.parametrize("op", ["$currentDate", "$createUUID", "$rand"])
def test_arguments_are_rejected_at_compile_time(op: str) -> None:
    with pytest.raises(TranslateError) as ei:
        compile_expr({op: {"x": 1}}, Ctx("t"))
    assert str(ei.value) == f"t.{op}: {op} takes no arguments; use {{{op}: {{}}}}"
