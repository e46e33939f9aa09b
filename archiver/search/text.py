"""Text folding shared by both search backends: one tokenizer, run in the application.

The OpenSearch integration-test distribution has no ``analysis-common`` module, so no
``lowercase`` or ``asciifolding`` filter can run in the server. We therefore fold and
tokenize here, store the result as space-separated terms, and let each backend only split
on spaces (OpenSearch's core ``whitespace`` analyzer, FTS5's ``ascii`` tokenizer, which
keeps every non-ASCII character and lowercases only ASCII, a no-op on folded terms).
Documents and query words go through the same :func:`analyze`, so both backends see the
same terms and give the same answers.

Folding of one character: NFKD, casefold, drop nonspacing and enclosing marks (accents,
Arabic harakat, emoji variation selectors) except the kana voicing marks, then NFC.
Terms:

- letters, digits and spacing marks form words, cut every :data:`MAX_TERM` code points
  (Lucene's whitespace tokenizer cuts at 255 UTF-16 units; we stay well below it);
- each Han, Hiragana, Katakana or Hangul character is a term of its own, so a two- or
  three-character word inside an unspaced sentence is found as a phrase of single
  characters;
- each other symbol (emoji, ``So``) is a term of its own;
- format characters (ZWJ, ZWNJ, soft hyphen) and the Arabic tatweel vanish without
  splitting a word; everything else separates terms.

This module is pure: strings in, strings out.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Sequence
from functools import lru_cache
from typing import NamedTuple

MAX_TERM = 100

# Kana voicing marks change the word (カ/ガ), unlike Latin accents, so they stay.
_KEPT_MARKS = frozenset("\u3099\u309a")
_VANISH = frozenset("\u0640")  # Arabic tatweel only stretches a word

# Han (with radicals and iteration marks), Hiragana, Katakana, Hangul.
_CJK_RANGES = (
    (0x1100, 0x11FF), (0x2E80, 0x2FDF), (0x3005, 0x3007), (0x3021, 0x3029),
    (0x3038, 0x303B), (0x3040, 0x30FF), (0x3130, 0x318F), (0x31F0, 0x31FF),
    (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xA960, 0xA97F), (0xAC00, 0xD7FF),
    (0xF900, 0xFAFF), (0xFF66, 0xFF9F), (0x20000, 0x3FFFF),
)

WORD, SINGLE, MARK, VANISH, SEPARATOR = range(5)


class Token(NamedTuple):
    """One folded term and the span ``[start, end)`` it came from in the NFC text."""

    term: str
    start: int
    end: int


Pattern = tuple[tuple[str, ...], bool]
"""Terms to find next to each other; the bool says the last one is a prefix."""


def _is_cjk(ch: str) -> bool:
    """True for a character of a script written without spaces between words."""
    cp = ord(ch)
    return any(lo <= cp <= hi for lo, hi in _CJK_RANGES)


@lru_cache(maxsize=65536)
def fold_char(ch: str) -> str:
    """Fold one character: NFKD, casefold, drop marks (except kana voicing), NFC."""
    # Casefold between two NFKDs: compatibility forms may decompose to capitals (№ -> No).
    decomposed = unicodedata.normalize("NFKD", unicodedata.normalize("NFKD", ch).casefold())
    kept = "".join(
        c for c in decomposed
        if c in _KEPT_MARKS or unicodedata.category(c) not in ("Mn", "Me")
    )
    return unicodedata.normalize("NFC", kept)


@lru_cache(maxsize=65536)
def _classify(ch: str) -> int:
    """Which role a folded character plays in splitting text into terms."""
    if ch in _KEPT_MARKS:
        return MARK
    if _is_cjk(ch):
        return SINGLE
    if ch in _VANISH:
        return VANISH
    category = unicodedata.category(ch)
    if category[0] in "LN" or category == "Mc":
        return WORD
    if category == "So":
        return SINGLE
    if category == "Cf":
        return VANISH
    return SEPARATOR


def analyze(text: str) -> list[Token]:
    """Split ``text`` into folded terms with their spans in ``nfc(text)``."""
    splitter = _Splitter()
    for i, ch in enumerate(nfc(text)):
        for c in fold_char(ch):
            splitter.feed(c, i)
    splitter.flush()
    return splitter.tokens


class _Splitter:
    """Accumulates folded characters into terms, remembering where each came from."""

    def __init__(self) -> None:
        self.tokens: list[Token] = []
        self.word: list[str] = []
        self.start = 0
        self.end = 0

    def feed(self, c: str, i: int) -> None:
        """Take folded character ``c`` that came from position ``i``."""
        role = _classify(c)
        if role == WORD:
            self._grow(c, i)
        elif role == SINGLE:
            self.flush()
            self.tokens.append(Token(c, i, i + 1))
        elif role == MARK:
            self._attach_mark(c, i)
        elif role == SEPARATOR:
            self.flush()

    def _grow(self, c: str, i: int) -> None:
        if not self.word:
            self.start = i
        self.word.append(c)
        self.end = i + 1
        if len(self.word) >= MAX_TERM:
            self.flush()

    def _attach_mark(self, mark: str, i: int) -> None:
        """Join a kana voicing mark to the character before it (halfwidth ｶﾞ -> ガ)."""
        if self.word:
            self.word.append(mark)
            self.end = i + 1
        elif self.tokens and self.tokens[-1].end == i:
            last = self.tokens[-1]
            term = unicodedata.normalize("NFC", last.term + mark)
            self.tokens[-1] = Token(term, last.start, i + 1)

    def flush(self) -> None:
        """End the current word, if any."""
        if self.word:
            self.tokens.append(Token("".join(self.word), self.start, self.end))
            self.word.clear()


def nfc(text: str) -> str:
    """Canonical composition; spans from :func:`analyze` index into this string."""
    return unicodedata.normalize("NFC", text)


def terms(text: str) -> list[str]:
    """The folded terms of ``text``, in order (what :func:`analyze` gives, without spans)."""
    quick = _quick_terms(text)
    return [t.term for t in analyze(text)] if quick is None else quick


def _quick_terms(text: str) -> list[str] | None:
    """:func:`terms` by the shortcuts below, or None when a kana voicing mark needs :func:`analyze`."""
    if text.isascii():
        return _ASCII_TERM.findall(text.lower())
    spaced = nfc(text).translate(_SPACED)
    if _NEEDS_SPANS in spaced:  # a kana voicing mark to join to the character before it
        return None
    words = spaced.split()
    if max(map(len, words), default=0) <= MAX_TERM:
        return words
    return [word[i:i + MAX_TERM] for word in words for i in range(0, len(word), MAX_TERM)]


# Indexing folds every message, so terms() takes two shortcuts that give analyze()'s terms:
# ASCII folds to lower case and only letters and digits make words; any other text is
# translated character by character (each character's replacement computed once) into its
# folded form with terms separated by spaces, then split.
_ASCII_TERM = re.compile(f"[a-z0-9]{{1,{MAX_TERM}}}")
_NEEDS_SPANS = "\uf8ff"  # private use: never a replacement of its own


def _spaced(ch: str) -> str:
    """What character ``ch`` (NFC) becomes in the spaced form: folded word characters, a
    lone character between spaces, a space, nothing, or :data:`_NEEDS_SPANS`."""
    out = []
    for c in fold_char(ch):
        role = _classify(c)
        if role == MARK:
            return _NEEDS_SPANS
        out.append({WORD: c, SINGLE: f" {c} ", VANISH: "", SEPARATOR: " "}[role])
    return "".join(out)


class _SpacedTable(dict[int, str]):
    """``str.translate`` table that fills itself: code point -> :func:`_spaced`."""

    def __missing__(self, cp: int) -> str:
        self[cp] = _spaced(chr(cp))
        return self[cp]


_SPACED = _SpacedTable()


def folded(text: str) -> str:
    """The folded terms of ``text`` joined by single spaces: what the backends index."""
    return " ".join(terms(text))


#: A snippet looks for its first match in this many characters from the start of the text
#: (a longer message shows its start when its first match lies further on)...
SCAN_CHARS = 1 << 20
#: ... in chunks this long, each folded by the shortcuts of :func:`terms` and tested for the
#: patterns' terms as plain substrings; chunks overlap so that a phrase across two is seen.
CHUNK = 8192
CHUNK_OVERLAP = 256
#: At most this many characters per snippet go through :func:`analyze` (the only per-character
#: Python loop): a few candidate chunks, then the window shown.
MAX_ANALYSED = 32768
# Analysed on both sides of a region, so the words at its edges are whole (> MAX_TERM).
_MARGIN = 128


class Excerpt(NamedTuple):
    """A snippet and the work it took: characters folded by the scan and analysed for spans."""

    html: str
    scanned: int
    analysed: int


def snippet(text: str, patterns: Sequence[Pattern], width: int = 240) -> str:
    """An HTML-escaped excerpt of ``text`` with matches wrapped in ``<mark>``…``</mark>``.

    The excerpt is about ``width`` characters around the first match (or the start of
    the text when nothing matches, e.g. for a query of only filters). The work is bounded
    whatever the text's size: see :func:`excerpt`.
    """
    return excerpt(text, patterns, width).html


def excerpt(text: str, patterns: Sequence[Pattern], width: int = 240) -> Excerpt:
    """:func:`snippet` with its work counted.

    Linear in at most :data:`SCAN_CHARS` characters, and at most :data:`MAX_ANALYSED` of them
    analysed (plus the window shown): when no candidate chunk within that budget holds a
    match, the excerpt is the start of the text, unmarked.
    """
    cut = len(text) > SCAN_CHARS
    source = nfc(text[:SCAN_CHARS] if cut else text)
    work = _Work(budget=MAX_ANALYSED - width - 2 * _MARGIN)
    patterns = [(words, prefix) for words, prefix in patterns if words]
    first = _first_match(source, patterns, work) if patterns else None
    lo = max(0, first - width // 4) if first is not None else 0
    hi = min(len(source), lo + width)
    lo = max(0, min(lo, hi - width))
    spans = _spans(source, lo, hi, patterns, work) if first is not None else []
    out = ["…" if lo else ""]
    cursor = lo
    for start, end in spans:
        start, end = max(start, lo), min(end, hi)
        out += [html.escape(source[cursor:start]), "<mark>", html.escape(source[start:end]), "</mark>"]
        cursor = end
    out += [html.escape(source[cursor:hi]), "…" if hi < len(source) or cut else ""]
    return Excerpt("".join(out), work.scanned, work.analysed)


class _Work:
    """Characters scanned and analysed so far, and how many more may be analysed for candidates."""

    def __init__(self, budget: int) -> None:
        self.scanned = 0
        self.analysed = 0
        self.budget = budget


def _first_match(source: str, patterns: Sequence[Pattern], work: _Work) -> int | None:
    """Where the first match of any pattern starts, or None (none, or the budget spent first)."""
    needles = [" " + " ".join(words) + ("" if prefix else " ") for words, prefix in patterns]
    for start in range(0, len(source), CHUNK):
        stop = min(len(source), start + CHUNK + CHUNK_OVERLAP)
        chunk = source[start:stop]
        work.scanned += len(chunk)
        quick = _quick_terms(chunk)
        if quick is not None:
            folded_chunk = " " + " ".join(quick) + " "
            if not any(needle in folded_chunk for needle in needles):
                continue
        if work.analysed + (stop - start) + 2 * _MARGIN > work.budget:
            return None
        spans = _spans(source, start, stop, patterns, work)
        if spans:
            return spans[0][0]
    return None


def _spans(source: str, lo: int, hi: int, patterns: Sequence[Pattern], work: _Work) -> list[tuple[int, int]]:
    """The merged match spans that overlap ``source[lo:hi]``, from analysing just around it."""
    a, b = max(0, lo - _MARGIN), min(len(source), hi + _MARGIN)
    tokens = [Token(t.term, t.start + a, t.end + a) for t in analyze(source[a:b])]
    work.analysed += b - a
    # A word cut by the region's edge is not a word of the text.
    if tokens and a > 0 and tokens[0].start == a:
        tokens.pop(0)
    if tokens and b < len(source) and tokens[-1].end == b:
        tokens.pop()
    return [(start, end) for start, end in _merge(_find(tokens, patterns)) if end > lo and start < hi]


def _find(tokens: list[Token], patterns: Sequence[Pattern]) -> list[tuple[int, int]]:
    """Spans where a pattern's terms occur next to each other."""
    spans = []
    for words, prefix in patterns:
        n = len(words)
        for i in range(len(tokens) - n + 1):
            if _matches(tokens[i:i + n], words, prefix):
                spans.append((tokens[i].start, tokens[i + n - 1].end))
    return spans


def _matches(window: Sequence[Token], words: Sequence[str], prefix: bool) -> bool:
    """True if ``window`` holds ``words`` (the last one as a prefix if asked)."""
    if prefix:
        return all(t.term == w for t, w in zip(window[:-1], words[:-1], strict=True)) and \
            window[-1].term.startswith(words[-1])
    return all(t.term == w for t, w in zip(window, words, strict=True))


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sort spans and merge the overlapping or touching ones."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged
