"""MongoDB's regular expressions, run on PCRE2 itself (the ``pcre2`` package).

MongoDB 8.0 compiles ``$regex`` and the ``$regex*`` expression operators with PCRE2 in
UTF mode *without* Unicode properties: ``\\w``, ``\\d``, ``\\s``, ``\\b`` and POSIX
classes are ASCII-only, while ``.`` and case-insensitive matching work on code points.
The full PCRE syntax is available: named groups ``(?<n>...)``, ``\\Q...\\E``,
``\\x{41}``, inline option changes ``a(?i)b``, ``\\Z`` before a final newline.

The ``pcre2`` wrapper always adds ``PCRE2_ALT_BSUX`` (Python-style ``\\uhhhh``, which
turns off ``\\x{...}``) and ``PCRE2_UCP`` for ``str`` patterns; its low-level
``compile`` takes a mask of options to clear, which is how both are turned off here.
Match offsets come back in code points. Patterns are compiled once per
(pattern, options) and cached.
"""

from __future__ import annotations

import re
import warnings
from functools import lru_cache
from typing import Any

import pcre2
from pcre2 import _cy

# Option bits from pcre2.h (the wrapper exposes no names for these two).
_PCRE2_ALT_BSUX = 0x00000002
_PCRE2_UCP = 0x00020000

_OPTIONS: dict[str, int] = {
    "i": int(pcre2.IGNORECASE),
    "m": int(pcre2.MULTILINE),
    "s": int(pcre2.DOTALL),
    "x": int(pcre2.VERBOSE),
    "u": 0,  # UTF is always on
}
OPTION_LETTERS = frozenset(_OPTIONS)


class RegexError(ValueError):
    """An invalid pattern or option letter (message in MongoDB's spirit, without the op)."""


@lru_cache(maxsize=1024)
def compile_pcre(pattern: str, options: str = "") -> Any:
    """The compiled pattern (``.search(s[, pos])`` -> match with ``span``/``group``/``groups``).

    PCRE2 is the reference. A pattern in the small subset where Python's ``re`` (with
    ``re.ASCII``) provably behaves the same is compiled with ``re`` instead: a PCRE2 call
    through the wrapper costs about seven times a ``re`` call, which matters in a
    ``$match`` run on every event. ``tests/translator/mql/test_pcre.py`` checks the two
    engines agree on that subset.
    """
    fast = python_equivalent(pattern, options)
    return fast if fast is not None else compile_pcre2(pattern, options)


@lru_cache(maxsize=1024)
def compile_pcre2(pattern: str, options: str = "") -> Any:
    """The pattern compiled on PCRE2 (UTF, no UCP, no ALT_BSUX), always."""
    flags = 0
    for c in options:
        f = _OPTIONS.get(c)
        if f is None:
            raise RegexError(f"invalid flag in regex options: {c}")
        flags |= f
    if "\x00" in pattern:
        raise RegexError("regular expression cannot contain an embedded null byte")
    try:
        code = _cy.compile(pattern, flags | int(pcre2.UNICODE), _PCRE2_ALT_BSUX | _PCRE2_UCP)
        _cy.jit_compile(code)
    except pcre2.PatternError as e:
        # "compilation failed at position 1; missing closing parenthesis": keep PCRE2's text.
        raise RegexError(str(e).split("; ", 1)[-1]) from None
    return pcre2.Pattern(code, pattern, pcre2.RegexFlag(flags), True, None)


# The subset handed to Python's re: ASCII pattern text; escapes only from this list (with
# re.ASCII, \d \w \s \b \D \W \S are PCRE's non-UCP classes; \B is not: it differs on
# an empty subject); groups only (?: (?= (?! (?<= (?<!; braces only as {n} {n,} {n,m};
# no POSIX class; option s only (m: PCRE2's ^ does not match after a final newline;
# i and x: caseless non-ASCII letters and extended mode are left to PCRE2).
_SAFE_ESCAPES = frozenset("dwsbDWS.\\-^$*+?()[]{}|/tnrf")
_SAFE_GROUPS = ("(?:", "(?=", "(?!", "(?<=", "(?<!")
_RE_FLAGS = {"s": re.DOTALL}  # not m: PCRE2's ^ does not match after a final newline
_QUANTIFIER = re.compile(r"\{[0-9]+(?:,[0-9]*)?\}")


def python_equivalent(pattern: str, options: str) -> re.Pattern[str] | None:
    """``pattern`` compiled with Python's ``re`` if both engines agree on it, else None."""
    if not pattern.isascii() or any(c not in _RE_FLAGS for c in options):
        return None
    if "[:" in pattern or "{," in pattern or "\x00" in pattern:
        return None
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\":
            if i + 1 >= n or pattern[i + 1] not in _SAFE_ESCAPES:
                return None
            i += 2
            continue
        if c == "(" and pattern.startswith("(?", i) and not pattern.startswith(_SAFE_GROUPS, i):
            return None
        if c == "{" and _QUANTIFIER.match(pattern, i) is None:
            return None  # PCRE2 and re differ on what a brace that is no quantifier means
        i += 1
    flags = re.ASCII
    for c in options:
        flags |= _RE_FLAGS[c]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            return re.compile(pattern, flags)
    except (re.error, FutureWarning, DeprecationWarning):
        return None
