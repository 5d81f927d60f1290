"""Non-deterministic MQL operators: ``$currentDate``, ``$createUUID``, ``$rand``.

ASP rejects ``$$NOW`` (there is no single "statement time" in an endless stream), so the
current wall-clock time is exposed as an operator that is evaluated per document.
All three take an empty argument (``{}``; ``[]`` is accepted too) and are never
constant-folded.
"""

from __future__ import annotations

import datetime as _dt
import random
import uuid
from typing import Any

from bson.binary import Binary, UuidRepresentation

from translator.mql.expr import Ctx, Expr, Vars, operator
from translator.mql.values import UTC


def _no_args(args: Any, ctx: Ctx, op: str) -> None:
    if args not in ({}, []):
        raise ctx.error(f"{op} takes no arguments; use {{{op}: {{}}}}")


def now_ms() -> _dt.datetime:
    """The current UTC time truncated to milliseconds (BSON date precision)."""
    now = _dt.datetime.now(UTC)
    return now.replace(microsecond=now.microsecond - now.microsecond % 1000)


@operator("$currentDate")
def _current_date(args: Any, ctx: Ctx) -> Expr:
    """``{$currentDate: {}}``: processing time as a UTC date, ms precision."""
    _no_args(args, ctx, "$currentDate")

    def current_date(doc: Any, v: Vars) -> Any:
        return now_ms()

    return current_date


@operator("$createUUID")
def _create_uuid(args: Any, ctx: Ctx) -> Expr:
    """``{$createUUID: {}}``: a random UUID as BSON binary subtype 4 (MongoDB ``UUID()``)."""
    _no_args(args, ctx, "$createUUID")

    def create_uuid(doc: Any, v: Vars) -> Any:
        return Binary.from_uuid(uuid.uuid4(), UuidRepresentation.STANDARD)

    return create_uuid


@operator("$rand")
def _rand(args: Any, ctx: Ctx) -> Expr:
    """``{$rand: {}}``: a double in [0, 1)."""
    _no_args(args, ctx, "$rand")
    rnd = random.random

    def rand(doc: Any, v: Vars) -> Any:
        return rnd()

    return rand
