"""`$group` accumulators with MongoDB's null/missing/type rules, built to be *mergeable*.

A window keeps per-group accumulator states. Stage 1 (per source partition) folds a
batch of documents into states; stage 2 merges those partial states across batches
and partitions, and finalizes them when the window closes. So every accumulator is:

- ``extract(doc, vars) -> value``: the per-document argument (compiled once);
- ``init() -> state``: a fresh state (plain picklable Python data: lists/tuples/dicts/numbers);
- ``add(state, value) -> state``: fold one extracted value (may mutate and return ``state``);
- ``merge(a, b) -> state``: combine two states, ``b`` holding *later* documents than ``a``;
- ``final(state) -> value``: the result document field.

The registry :data:`ACCUMULATORS` maps ``"$sum"`` etc. to a compile function
``(arg_spec, ctx) -> AccSpec``; no if-chains over names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from translator.errors import TranslateError, did_you_mean
from translator.mql.expr import Ctx, Expr


@dataclass(frozen=True)
class AccSpec:
    name: str
    extract: Expr
    init: Callable[[], Any]
    add: Callable[[Any, Any], Any]
    merge: Callable[[Any, Any], Any]
    final: Callable[[Any], Any]


AccCompiler = Callable[[Any, Ctx], AccSpec]
ACCUMULATORS: dict[str, AccCompiler] = {}


def accumulator(*names: str) -> Callable[[AccCompiler], AccCompiler]:
    def deco(fn: AccCompiler) -> AccCompiler:
        for n in names:
            ACCUMULATORS[n] = fn
        return fn

    return deco


def compile_accumulator(op: str, arg: Any, ctx: Ctx) -> AccSpec:
    fn = ACCUMULATORS.get(op)
    if fn is None:
        raise TranslateError(
            ctx.path, f"unknown group accumulator '{op}'{did_you_mean(op, ACCUMULATORS)}"
        )
    return fn(arg, ctx)
