"""Errors raised while translating a pipeline, and the did-you-mean helper.

Atlas rejects a bad pipeline at create time with one message; we do the same, and
every message names the exact path inside the pipeline
(``pipeline[2].$tumblingWindow.interval.unit``).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class TranslateError(ValueError):
    """A pipeline (or option) that cannot be compiled. ``str()`` is the user message."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}" if path else message)


# Long names a user may write for ASP's short ones (``{db, coll}`` in ``$merge.into``,
# the DLQ option, ``$lookup.from``); difflib alone offers 'connectionName' for
# 'collection'.
_SYNONYMS = {"collection": "coll", "database": "db", "connection": "connectionName"}


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return ``"; did you mean '$x'?"`` for the closest choice, or ``""``."""
    choices = set(choices)
    synonym = _SYNONYMS.get(name)
    if synonym in choices:
        return f"; did you mean '{synonym}'?"
    close = difflib.get_close_matches(name, sorted(choices), n=1, cutoff=0.6)
    if not close:
        # Case slips ($Match) are common and difflib scores them low.
        lowered = {c.lower(): c for c in choices}
        if name.lower() in lowered:
            close = [lowered[name.lower()]]
    return f"; did you mean '{close[0]}'?" if close else ""
