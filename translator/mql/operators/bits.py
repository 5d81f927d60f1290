"""MQL bitwise operators ($bitAnd, $bitOr, $bitXor, $bitNot) on int and long only.

MongoDB docs ("$bitAnd"): operands must be int or long (a double, even integral, is an
error); null or missing gives null; the result is a long if any operand is a long,
else an int. With no operands the identity of the operation is returned.
"""

from __future__ import annotations

import operator as _op
from collections.abc import Callable
from typing import Any

from bson import Int64

from translator.mql.expr import Ctx, Expr, ExprError, Vars, operator
from translator.mql.operators.arithmetic import INT, LONG, arg_list, fold, num_kind
from translator.mql.values import MISSING


def _operand(op: str, x: Any) -> int:
    k = num_kind(x)
    if k != INT and k != LONG:
        raise ExprError(op, f"{op} only supports int and long operands.")
    return k


def _typed(r: int, is_long: bool) -> Any:
    """Wrap to 32 or 64 bits two's complement, typed int or long."""
    if is_long:
        r &= (1 << 64) - 1
        return Int64(r - (1 << 64) if r >= 1 << 63 else r)
    r &= (1 << 32) - 1
    return r - (1 << 32) if r >= 1 << 31 else r


def _bitwise(op: str, fn: Callable[[int, int], int], identity: int) -> None:
    @operator(op)
    def compile_(args: Any, ctx: Ctx) -> Expr:
        fs = arg_list(args, ctx, 0, -1)

        def bitwise(doc: Any, v: Vars) -> Any:
            acc = identity
            is_long = False
            vals = [f(doc, v) for f in fs]
            if any(x is None or x is MISSING for x in vals):
                return None
            for x in vals:
                is_long |= _operand(op, x) == LONG
                acc = fn(acc, int(x))
            return _typed(acc, is_long)

        return fold(bitwise, fs)


_bitwise("$bitAnd", _op.and_, -1)
_bitwise("$bitOr", _op.or_, 0)
_bitwise("$bitXor", _op.xor, 0)


@operator("$bitNot")
def _bit_not(args: Any, ctx: Ctx) -> Expr:
    (a,) = arg_list(args, ctx, 1)

    def bit_not(doc: Any, v: Vars) -> Any:
        x = a(doc, v)
        if x is None or x is MISSING:
            return None
        return _typed(~int(x), _operand("$bitNot", x) == LONG)

    return fold(bit_not, (a,))
