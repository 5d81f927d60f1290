"""JavaScript operators ($function, $accumulator, $where): rejected in their own words.

Atlas Stream Processing runs no server-side JavaScript, and mqlflow never turns a
client's text into code, so these fail at create time with a clear reason rather
than as unknown operators.
"""

from __future__ import annotations

from typing import Any

from translator.mql.expr import Ctx, Expr, operator

JAVASCRIPT_UNSUPPORTED = "JavaScript is not supported by stream processors"
# Registered only to be rejected (the operator table lists them as such).
JAVASCRIPT_OPERATORS = ("$function", "$accumulator", "$where")


@operator("$function", "$accumulator")
def _javascript(args: Any, ctx: Ctx) -> Expr:
    op = ctx.path.rsplit(".", 1)[-1]
    raise ctx.error(f"{op}: {JAVASCRIPT_UNSUPPORTED}")
