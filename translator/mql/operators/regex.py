"""$regexFind and $regexFindAll: the first or every match with its position and groups.

Each match is ``{match, idx, captures}``: ``idx`` counts code points and ``captures``
holds one entry per group, null for a group that did not take part (MongoDB 8.0).
A null/missing ``input`` or ``regex`` gives null ($regexFind) or ``[]``
($regexFindAll). After an empty match the search resumes one code point later, so
``$regexFindAll`` always terminates. Patterns run on PCRE2 like ``$regexMatch``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from translator.mql.expr import Ctx, Expr, ExprError, Vars, compile_expr, const_value, operator
from translator.mql.operators.arrays import named_args
from translator.mql.operators.strings import resolve_regex
from translator.mql.values import MISSING


def _match_doc(m: Any) -> dict[str, Any]:
    return {"match": m.group(0), "idx": m.start(), "captures": list(m.groups())}


def _find_all(pattern: Any, s: str) -> list[dict[str, Any]]:
    out = []
    pos = 0
    search = pattern.search
    while pos <= len(s):
        m = search(s, pos)
        if m is None:
            break
        out.append(_match_doc(m))
        pos = m.end() + 1 if m.end() == m.start() else m.end()
    return out


def _find_first(pattern: Any, s: str) -> Any:
    m = pattern.search(s)
    return None if m is None else _match_doc(m)


def _regex_find(op: str, run: Callable[[Any, str], Any], empty: Callable[[], Any]) -> None:
    @operator(op)
    def compile_(args: Any, ctx: Ctx) -> Expr:
        d = named_args(args, ctx, op, ("input", "regex"), ("options",))
        inp = compile_expr(d["input"], ctx.at("input"))
        rx = compile_expr(d["regex"], ctx.at("regex"))
        opts = compile_expr(d["options"], ctx.at("options")) if "options" in d else None
        rx_c, opts_c = const_value(rx), (const_value(opts) if opts is not None else None)
        if rx_c is not MISSING and opts_c is not MISSING:
            try:
                resolve_regex(op, rx_c, opts_c)  # a bad constant pattern is a create-time error
            except ExprError as e:
                raise ctx.at("regex").error(e.message) from None

        def find(doc: Any, v: Vars) -> Any:
            s = inp(doc, v)
            pattern = resolve_regex(op, rx(doc, v), opts(doc, v) if opts is not None else None)
            if s is None or s is MISSING or pattern is None:
                return empty()
            if type(s) is not str:
                raise ExprError(op, f"{op} needs 'input' to be of type string")
            return run(pattern, s)

        return find


_regex_find("$regexFind", _find_first, lambda: None)
_regex_find("$regexFindAll", _find_all, list)
