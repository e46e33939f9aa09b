"""Snippets are bounded work: linear in a capped head of the text, a capped window analysed.

A signed 15 MB text message once made every search that hit it analyse all of it, character
by character, for its snippet (9-11 s per search, with intake waiting behind it). These tests
count the characters that go through ``text.analyze`` (the per-character loop) instead of
timing anything.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator, Sequence

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from archiver.search import text

FIFTEEN_MB = 15 * 1024 * 1024
FILLER = "Bonjour, the parcel left Zürich on Tuesday; 东京 next week, merci! "


@pytest.fixture
def analysed(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The length of every text handed to ``text.analyze`` while the test runs."""
    lengths: list[int] = []
    real = text.analyze

    def counting(source: str) -> list[text.Token]:
        lengths.append(len(source))
        return real(source)

    monkeypatch.setattr(text, "analyze", counting)
    yield lengths


def _big(at: int, needle: str) -> str:
    """A 15 MB message with ``needle`` inserted at character ``at`` (and once more near the end)."""
    body = (FILLER * (FIFTEEN_MB // len(FILLER) + 1))[:FIFTEEN_MB]
    return f"{body[:at]} {needle} {body[at:-1000]} {needle} {body[-1000:]}"


def test_a_15_mb_message_gets_its_window_from_a_bounded_amount_of_work(analysed: list[int]) -> None:
    big = _big(700_001, "Remboursement refusé")
    out = text.snippet(big, [(("remboursement", "refuse"), False)])
    assert "<mark>Remboursement refusé</mark>" in out
    assert out.startswith("…") and out.endswith("…") and len(out) < 300
    assert html.unescape(re.sub("</?mark>", "", out)).strip("…") in big
    assert 0 < sum(analysed) <= text.MAX_ANALYSED
    got = text.excerpt(big, [(("remboursement", "refuse"), False)])
    assert got.html == out and got.analysed == sum(analysed) // 2
    # The scan stopped at the chunk holding the match.
    assert got.scanned <= 700_001 + text.CHUNK + text.CHUNK_OVERLAP + (700_001 // text.CHUNK + 1) * text.CHUNK_OVERLAP


def test_prefix_and_cjk_patterns_over_15_mb_are_bounded_too(analysed: list[int]) -> None:
    big = _big(123_457, "zzyzx-remboursements")
    assert "<mark>zzyzx</mark>-<mark>remboursements</mark>" in text.snippet(big, [(("zzyzx",), False), (("rembours",), True)])
    assert "<mark>东京</mark>" in text.snippet(big, [(("东", "京"), False)])
    assert all(n <= text.MAX_ANALYSED for n in analysed) and sum(analysed) <= 2 * text.MAX_ANALYSED


def test_a_match_only_beyond_the_scanned_head_shows_the_start_having_analysed_nothing(analysed: list[int]) -> None:
    big = _big(FIFTEEN_MB - 5000, "kangaroo")
    got = text.excerpt(big, [(("kangaroo",), False)])
    assert got.html == html.escape(big[:240]) + "…"
    assert analysed == [] and got.analysed == 0
    assert got.scanned <= text.SCAN_CHARS + (text.SCAN_CHARS // text.CHUNK + 1) * text.CHUNK_OVERLAP


def test_without_patterns_nothing_is_scanned_or_analysed(analysed: list[int]) -> None:
    big = _big(10, "x")
    got = text.excerpt(big, [])
    assert got.html == html.escape(big[:240]) + "…" and got.scanned == got.analysed == 0 and analysed == []


def test_candidates_that_do_not_match_spend_a_budget_then_the_start_is_shown(analysed: list[int]) -> None:
    # Kana voicing marks make every chunk a candidate (the shortcut cannot fold them).
    big = ("ｶﾞ " * 8_000_000)[:FIFTEEN_MB]
    got = text.excerpt(big, [(("absent",), False)])
    assert got.html == html.escape(big[:240]) + "…"
    assert 0 < got.analysed <= text.MAX_ANALYSED and sum(analysed) == got.analysed


# --- the same snippet as analysing the whole text, wherever the chunks fall --------------------


def _reference(source: str, patterns: Sequence[text.Pattern], width: int) -> str:
    """The unbounded snippet: analyse everything, window around the first match."""
    source = text.nfc(source)
    spans = text._merge(text._find(text.analyze(source), [p for p in patterns if p[0]]))
    lo = max(0, spans[0][0] - width // 4) if spans else 0
    hi = min(len(source), lo + width)
    lo = max(0, min(lo, hi - width))
    out = ["…" if lo else ""]
    cursor = lo
    for start, end in spans:
        if end <= lo or start >= hi:
            continue
        start, end = max(start, lo), min(end, hi)
        out += [html.escape(source[cursor:start]), "<mark>", html.escape(source[start:end]), "</mark>"]
        cursor = end
    out += [html.escape(source[cursor:hi]), "…" if hi < len(source) else ""]
    return "".join(out)


_WORDS = st.sampled_from(["ab", "abc", "b", "é", "Ébc", "东", "京", "ｶﾞ", "x1", "ß"])
_SEPARATORS = st.sampled_from([" ", ", ", "-", "\n", "", " 🎉 "])


@settings(max_examples=500, deadline=None)
@given(st.lists(st.tuples(_WORDS, _SEPARATORS), min_size=20, max_size=120), st.data(),
       st.integers(min_value=8, max_value=80))
def test_chunked_snippet_equals_analysing_everything(pieces: list[tuple[str, str]], data: st.DataObject,
                                                     width: int) -> None:
    source = "".join(w + s for w, s in pieces)
    terms = text.terms(source)
    assume(terms and all(len(t) < 20 for t in terms))
    patterns = []  # runs of the text's own terms, so matches fall anywhere, chunk edges included
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(terms) - 1))
        run = tuple(terms[at:at + data.draw(st.integers(1, 3))])
        prefix = data.draw(st.booleans())
        patterns.append((run[:-1] + (run[-1][:data.draw(st.integers(1, len(run[-1])))],) if prefix else run, prefix))
    with pytest.MonkeyPatch.context() as mp:  # small chunks, so matches fall across their edges
        mp.setattr(text, "CHUNK", 16)
        mp.setattr(text, "CHUNK_OVERLAP", 80)
        assert text.snippet(source, patterns, width) == _reference(source, patterns, width)
