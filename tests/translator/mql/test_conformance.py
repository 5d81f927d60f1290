"""The MQL conformance corpus: the manual's examples and BSON edge cases, end to end.

Each ``conformance/<family>.json`` file holds a list of cases (MongoDB Extended JSON, so
``{"$numberLong": "5"}``, ``{"$numberDecimal": "0.5"}``, ``{"$numberDouble": "NaN"}`` and
``{"$date": ...}`` keep their BSON types):

* ``expr``: an expression, run as ``{$project: {_id: 0, r: <expr>}}`` on each ``input``
  document; or ``pipeline``: the stages after ``$source`` (with ``timeField`` for windows);
* ``input``: the source documents (default ``[{}]``);
* ``output``: the exact documents expected (types included, compared as canonical
  Extended JSON); ``errors``: the DLQ reasons expected, in order (the text after the
  stage path); ``compileError``: the create-time error expected instead;
* ``source``: the MongoDB manual page the case comes from (its example or its stated
  rule); ``unordered``: compare output documents, and arrays in ``r``, as sets (where the
  manual says the order is unspecified).

Every case runs through :func:`translator.testing.run_pipeline` twice: as compiled (fast
paths and generated code where they apply) and with both turned off; both runs must
give the expected documents.
"""

from __future__ import annotations

import copy
import datetime as dt
import pathlib
import re
from typing import Any

import pytest
from bson import json_util

from translator.errors import TranslateError
from translator.mql.expr import OPERATORS
from translator.testing import RunResult, run_pipeline

HERE = pathlib.Path(__file__).resolve().parent / "conformance"
_OPTS = json_util.JSONOptions(
    tz_aware=True, tzinfo=dt.UTC, json_mode=json_util.JSONMode.CANONICAL, uuid_representation=4
)


def _load() -> list[Any]:
    cases = []
    for path in sorted(HERE.glob("*.json")):
        for i, case in enumerate(json_util.loads(path.read_text(encoding="utf-8"), json_options=_OPTS)):
            cases.append(pytest.param(case, id=f"{path.stem}:{i}:{case.get('name', '')}"))
    return cases


CASES = _load()


def _canon(v: Any) -> str:
    return json_util.dumps(v, json_options=_OPTS)


def _pipeline(case: dict[str, Any]) -> list[dict[str, Any]]:
    source: dict[str, Any] = {"documents": copy.deepcopy(case.get("input", [{}]))}
    if "timeField" in case:
        source["timeField"] = case["timeField"]
    stages_ = case["pipeline"] if "pipeline" in case else [{"$project": {"_id": 0, "r": case["expr"]}}]
    return [{"$source": source}, *copy.deepcopy(stages_)]


def _normal(docs: list[dict[str, Any]], unordered: bool) -> list[str]:
    out = []
    for d in docs:
        d = {k: v for k, v in d.items() if k not in ("_stream_meta", "_ts")}
        if unordered and isinstance(d.get("r"), list):
            d["r"] = sorted(d["r"], key=_canon)
        out.append(_canon(d))
    return sorted(out) if unordered else out


def _reasons(result: RunResult) -> list[str]:
    return [d["errInfo"]["reason"].split("): ", 1)[-1] for d in result.dlq]


def _run(case: dict[str, Any], plain: bool) -> RunResult:
    """``plain`` runs the reference path only (``fastPaths: false``): no group fast path,
    generated code or fused stages."""
    return run_pipeline(_pipeline(case), {"fastPaths": not plain})


@pytest.mark.parametrize("case", CASES)
def test_conformance(case: dict[str, Any]) -> None:
    assert case.get("source", "").startswith("https://www.mongodb.com/docs/"), "every case names its manual page"
    if "compileError" in case:
        with pytest.raises(TranslateError) as e:
            run_pipeline(_pipeline(case))
        assert case["compileError"] in str(e.value)
        return
    unordered = bool(case.get("unordered"))
    want = _normal(case.get("output", []), unordered)
    for plain in (False, True):
        got = _run(case, plain)
        assert _normal(got.output, unordered) == want, f"plain={plain}"
        assert _reasons(got) == case.get("errors", []), f"plain={plain}"


def test_corpus_uses_every_registered_expression_operator() -> None:
    """A new operator needs its manual examples here (JavaScript ones: their rejection)."""
    import translator.mql.operators  # noqa: F401  (registers every family)

    assert len(OPERATORS) > 150
    text = "".join(p.read_text(encoding="utf-8") for p in HERE.glob("*.json"))
    used = set(re.findall(r'"(\$[A-Za-z0-9]+)"\s*:', text))
    assert sorted(set(OPERATORS) - used) == []


def test_corpus_covers_every_family() -> None:
    families = {p.stem for p in HERE.glob("*.json")}
    assert {"accumulators", "arrays", "bits", "dates", "group", "javascript", "query", "regex", "sets",
            "sizes", "strings", "trig", "types"} <= families
