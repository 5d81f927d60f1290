"""The ``dlq`` processor option, mqlflow's ``mode`` field included: every bad shape fails
with its exact path (and a did-you-mean where one is close). docs/semantics.md#dlq."""

from __future__ import annotations

from typing import Any

import pytest

from translator.errors import TranslateError
from translator.ir import DlqTarget
from translator.loader import options_from_mapping

BASE = {"connectionName": "dlqConn", "db": "d", "coll": "c"}


def test_mode_is_optional_and_read_when_given() -> None:
    assert options_from_mapping({"dlq": BASE}).dlq == DlqTarget("dlqConn", "d", "c", None)
    assert options_from_mapping({"dlq": {**BASE, "mode": "best-effort"}}).dlq == DlqTarget("dlqConn", "d", "c", "best-effort")
    assert options_from_mapping({"dlq": {**BASE, "mode": "durable"}}).dlq == DlqTarget("dlqConn", "d", "c", "durable")


@pytest.mark.parametrize(
    ("dlq", "error"),
    [
        (5, "options.dlq: expected {connectionName, db, coll}, got int"),
        ("dlqConn", "options.dlq: expected {connectionName, db, coll}, got string"),
        ({"connectionName": "dlqConn", "db": "d"}, "options.dlq: missing required field 'coll'"),
        ({**BASE, "db": ""}, "options.dlq.db: must be a non-empty string"),
        ({**BASE, "coll": 7}, "options.dlq.coll: expected a string, got int"),
        ({**BASE, "connectionName": None}, "options.dlq.connectionName: expected a string, got null"),
        (
            {**BASE, "mdoe": "best-effort"},
            "options.dlq.mdoe: unknown field 'mdoe'; did you mean 'mode'?; allowed: coll, connectionName, db, mode",
        ),
        (
            {**BASE, "colls": "c"},
            "options.dlq.colls: unknown field 'colls'; did you mean 'coll'?; allowed: coll, connectionName, db, mode",
        ),
        (
            {"connectionName": "dlqConn", "db": "d", "collection": "c"},
            "options.dlq.collection: unknown field 'collection'; did you mean 'coll'?; allowed: coll, connectionName, db, mode",
        ),
        (
            {"connectionName": "dlqConn", "database": "d", "coll": "c"},
            "options.dlq.database: unknown field 'database'; did you mean 'db'?; allowed: coll, connectionName, db, mode",
        ),
        (
            {**BASE, "mode": "best_effort"},
            "options.dlq.mode: expected one of durable, best-effort; got 'best_effort'; did you mean 'best-effort'?",
        ),
        ({**BASE, "mode": "Durable"}, "options.dlq.mode: expected one of durable, best-effort; got 'Durable'; did you mean 'durable'?"),
        ({**BASE, "mode": "fast"}, "options.dlq.mode: expected one of durable, best-effort; got 'fast'"),
        ({**BASE, "mode": True}, "options.dlq.mode: expected a string, got bool"),
    ],
)
def test_bad_dlq_option_names_its_path(dlq: Any, error: str) -> None:
    with pytest.raises(TranslateError) as ei:
        options_from_mapping({"dlq": dlq})
    assert str(ei.value) == error


def test_a_top_level_dlq_mode_is_an_unknown_option_pointing_nowhere_else() -> None:
    """The mode lives inside ``dlq`` (beside the collection it applies to), not beside it."""
    with pytest.raises(TranslateError) as ei:
        options_from_mapping({"dlq": BASE, "dlqMode": "best-effort"})
    assert str(ei.value) == "options.dlqMode: unknown option 'dlqMode'; did you mean 'dlq'?"
