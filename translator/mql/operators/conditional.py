"""MQL conditional expression operators: $cond, $ifNull, $switch.

Only the chosen branch is evaluated (so ``{$cond: [cond, {$divide: [1, 0]}, 0]}``
does not fail when ``cond`` is false). ``$ifNull`` takes any number of inputs
followed by a replacement (MongoDB 5.0+). ``$switch`` without a matching branch
and without ``default`` is a runtime error ($switch docs).
"""

from __future__ import annotations

from typing import Any

from translator.mql.expr import Ctx, Expr, ExprError, Vars, compile_expr, const_value, operator
from translator.mql.operators.arithmetic import arg_list, fold
from translator.mql.values import MISSING, bson_type, truthy


def _cond_expr(test: Expr, then: Expr, else_: Expr) -> Expr:
    c = const_value(test)
    if c is not MISSING:
        return then if truthy(c) else else_

    def cond(doc: Any, v: Vars) -> Any:
        return then(doc, v) if truthy(test(doc, v)) else else_(doc, v)

    return cond


@operator("$cond")
def _cond(args: Any, ctx: Ctx) -> Expr:
    if isinstance(args, dict):
        for k in args:
            if k not in ("if", "then", "else"):
                raise ctx.at(k).error(f"Unrecognized parameter to $cond: {k}")
        for k in ("if", "then", "else"):
            if k not in args:
                raise ctx.error(f"Missing '{k}' parameter to $cond")
        return _cond_expr(
            compile_expr(args["if"], ctx.at("if")),
            compile_expr(args["then"], ctx.at("then")),
            compile_expr(args["else"], ctx.at("else")),
        )
    test, then, else_ = arg_list(args, ctx, 3)
    return _cond_expr(test, then, else_)


@operator("$ifNull")
def _if_null(args: Any, ctx: Ctx) -> Expr:
    if not isinstance(args, list) or len(args) < 2:
        n = len(args) if isinstance(args, list) else 1
        raise ctx.error(f"$ifNull needs at least two arguments, had: {n}")
    parts = arg_list(args, ctx, 2, -1)
    inputs, replacement = parts[:-1], parts[-1]
    if len(inputs) == 1:
        a = inputs[0]

        def if_null1(doc: Any, v: Vars) -> Any:
            x = a(doc, v)
            if x is None or x is MISSING:
                return replacement(doc, v)
            return x

        return fold(if_null1, parts)

    def if_null(doc: Any, v: Vars) -> Any:
        for f in inputs:
            x = f(doc, v)
            if x is not None and x is not MISSING:
                return x
        return replacement(doc, v)

    return fold(if_null, parts)


@operator("$switch")
def _switch(args: Any, ctx: Ctx) -> Expr:
    if not isinstance(args, dict):
        raise ctx.error(f"$switch requires an object as an argument, found: {bson_type(args)}")
    for k in args:
        if k not in ("branches", "default"):
            raise ctx.at(k).error(f"$switch found an unknown argument: {k}")
    branches_spec = args.get("branches")
    if not isinstance(branches_spec, list):
        raise ctx.at("branches").error("$switch expected an array for 'branches'")
    if not branches_spec:
        raise ctx.at("branches").error("$switch requires at least one branch.")
    branches: list[tuple[Expr, Expr]] = []
    for i, br in enumerate(branches_spec):
        bctx = ctx.at("branches").at(i)
        if not isinstance(br, dict):
            raise bctx.error("$switch expected each branch to be an object")
        for k in br:
            if k not in ("case", "then"):
                raise bctx.at(k).error(f"$switch found an unknown argument to a branch: {k}")
        if "case" not in br:
            raise bctx.error("$switch requires each branch have a 'case' expression")
        if "then" not in br:
            raise bctx.error("$switch requires each branch have a 'then' expression.")
        branches.append(
            (compile_expr(br["case"], bctx.at("case")), compile_expr(br["then"], bctx.at("then")))
        )
    default = compile_expr(args["default"], ctx.at("default")) if "default" in args else None
    # Drop branches whose constant case is false; stop at one whose constant case is true.
    live: list[tuple[Expr, Expr]] = []
    for case, then in branches:
        c = const_value(case)
        if c is MISSING:
            live.append((case, then))
        elif truthy(c):
            if not live:
                return then
            default = then
            break
    if not live and default is not None:
        return default
    cases = tuple(live)

    def switch(doc: Any, v: Vars) -> Any:
        for case, then in cases:
            if truthy(case(doc, v)):
                return then(doc, v)
        if default is None:
            raise ExprError(
                "$switch",
                "$switch could not find a matching branch for an input, and no default was specified.",
            )
        return default(doc, v)

    return switch
