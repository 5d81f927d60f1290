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
    """The compiled PCRE2 pattern (``.search(s)`` -> match with ``span``/``groups``)."""
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
