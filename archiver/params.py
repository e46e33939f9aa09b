"""Request parameters that are numbers or JSON, parsed within bounds.

Every route and CLI argument that takes a number reads it through :func:`bounded_int`
(or one of its named forms), so a value too large for SQLite's or PostgreSQL's 64-bit
integers, or for ``range``, is a :class:`ValidationError` naming the field, never an
``OverflowError`` deep in a driver. Deeply nested JSON bodies are refused before parsing
(:func:`check_json_depth`), so Python's recursion limit is never reached.
This module imports no Flask: views pass it the raw text.
"""

from __future__ import annotations

import re

from archiver.errors import ValidationError

SEQ_MAX = 2**63 - 1  # a signed 64-bit integer: SQLite's INTEGER, PostgreSQL's BIGINT
MAX_BODY_DEPTH = 64  # capture and consent bodies are 3 levels deep; Meta's webhooks about 8
_DIGITS = 20  # more digits than any bound here has: refused before int() reads them

# A JSON string (with its escapes) or one bracket: strings are skipped whole, so a bracket
# inside one does not count, and the scan stays in the regex engine (linear, in C).
_JSON_TOKENS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.DOTALL)


def bounded_int(raw: str | None, field: str, default: int, low: int, high: int) -> int:
    """``raw`` as an int in ``[low, high]``; ``default`` when ``raw`` is None or blank.

    Raises ValidationError naming ``field`` for anything else.
    """
    if raw is None or not raw.strip():
        return default
    text = raw.strip()
    if not re.fullmatch(r"[+-]?[0-9]{1,%d}" % _DIGITS, text, re.ASCII):
        raise ValidationError(field, f"must be an integer between {low} and {high}")
    value = int(text)
    if not low <= value <= high:
        raise ValidationError(field, f"must be between {low} and {high}")
    return value


def seq_arg(raw: str | None, field: str = "seq") -> int:
    """A record's seq (1 .. 2**63-1). Raises ValidationError naming ``field``."""
    if raw is None or not raw.strip():
        raise ValidationError(field, "is required")
    return bounded_int(raw, field, 0, 1, SEQ_MAX)


def check_json_depth(raw: bytes, limit: int = MAX_BODY_DEPTH) -> None:
    """Raise ValidationError("body") if JSON ``raw`` nests arrays/objects deeper than ``limit``.

    Only brackets outside strings count; malformed JSON is left for the parser to refuse.
    """
    depth = 0
    for match in _JSON_TOKENS.finditer(raw):
        token = match.group()
        if token in (b"[", b"{"):
            depth += 1
            if depth > limit:
                raise ValidationError("body", f"nests deeper than {limit} levels")
        elif token in (b"]", b"}"):
            depth -= 1
