"""The regex engine: PCRE2 as MongoDB runs it, and Python's re only where both agree.

``compile_pcre`` hands a pattern to Python's ``re`` when :func:`python_equivalent`
accepts it; these tests run every accepted pattern (a fixed list plus random ones built
from the accepted tokens) on both engines over strings with ASCII, Latin-1, CJK,
Arabic-Indic digits, no-break spaces and newlines, and require identical match spans and
groups at every start position; and they check what must stay on PCRE2.
"""

from __future__ import annotations

import random

import pytest

from translator.mql.pcre import compile_pcre, compile_pcre2, python_equivalent

SUBJECTS = [
    "", "a", "abc", "a1_b2", "device_17", "x y\tz\n", "line\n", "line\n\n", "\n", "é", "café 12", "٣٤",
    "a\u00a0b", "寿司 sushi", "AbC", "aaa", "abab", "{2}", "a{2}", "a.b", "a-b/c", "[x]", "x|y", "$^", "\r\n",
]

ACCEPTED = [
    r"^dev", r"\d+$", r"\w+", r"\s", r"\bfoo\b", r"^.*$", r"a.b", r"a\.b", r"[a-c]+", r"[^a-c]",
    r"[\w-]+", r"(a)(b)?", r"(?:ab)+", r"a(?=b)", r"a(?!b)", r"(?<=a)b", r"(?<!a)b", r"a{2}", r"a{1,2}", r"a{1,}",
    r"x|y", r"\$\^", r"\[x\]", r"a\-b\/c", r"\t", r"\n$", r"^$", r"a*?", r"a++", r"\D\W\S", r"[\d\s]",
]


def _spans(p: object, s: str) -> list[tuple[tuple[int, int], tuple[str | None, ...]] | None]:
    out = []
    for pos in range(len(s) + 1):
        m = p.search(s, pos)  # type: ignore[attr-defined]
        out.append(None if m is None else (m.span(), m.groups()))
    return out


@pytest.mark.parametrize("options", ["", "s"])
@pytest.mark.parametrize("pattern", ACCEPTED)
def test_accepted_patterns_match_identically_on_both_engines(pattern: str, options: str) -> None:
    fast = python_equivalent(pattern, options)
    assert fast is not None, pattern
    ref = compile_pcre2(pattern, options)
    for s in SUBJECTS:
        assert _spans(fast, s) == _spans(ref, s), (pattern, options, s)


_TOKENS = ["a", "b", "1", "_", ".", r"\d", r"\w", r"\s", r"\b", r"\W", "^", "$", "[ab]", "[^a]", r"[\w.]",
           "*", "+", "?", "*?", "{2}", "{1,2}", "|", "(", ")", "(?:", "(?=", "(?!", "(?<=a)", r"\.", r"\n"]


def test_random_accepted_patterns_agree() -> None:
    rng = random.Random(11)
    checked = 0
    for _ in range(3000):
        pattern = "".join(rng.choice(_TOKENS) for _ in range(rng.randrange(1, 7)))
        options = rng.choice(["", "s"])
        fast = python_equivalent(pattern, options)
        if fast is None:
            continue
        try:
            ref = compile_pcre2(pattern, options)
        except ValueError:
            pytest.fail(f"re accepted {pattern!r} but PCRE2 rejects it")
        for s in SUBJECTS:
            assert _spans(fast, s) == _spans(ref, s), (pattern, options, s)
        checked += 1
    assert checked > 500


@pytest.mark.parametrize(
    ("pattern", "options"),
    [
        (r"a\Z", ""), (r"\Qa.b\E", ""), (r"\x{41}", ""), (r"(?<n>a)", ""), (r"a(?i)b", ""), (r"[[:alpha:]]", ""),
        (r"\v", ""), (r"\h", ""), (r"\1", ""), (r"a{,2}", ""), (r"a{ 2}", ""), (r"é", ""), (r"abc", "i"), (r"a b", "x"),
        (r"(?>a)", ""), (r"\A", ""), (r"\p{L}", ""), (r"\N", ""), (r"\u0041", ""), (r"^a$", "m"), (r"\B", ""),
    ],
)
def test_patterns_outside_the_subset_stay_on_pcre2(pattern: str, options: str) -> None:
    assert python_equivalent(pattern, options) is None
    try:
        compiled = compile_pcre(pattern, options)
    except ValueError:
        return  # PCRE2 rejects it (\1 without a group, \u): MongoDB does too
    assert type(compiled).__module__.startswith("pcre2")
