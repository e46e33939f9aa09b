"""Everything the CLI prints for a human goes through here: archived text is hostile.

A message can carry an OSC or CSI sequence (``\\x1b]0;title\\x07`` retitles the terminal,
others rewrite the screen or the clipboard), a carriage return that hides what came before,
or a bidi override that reorders what follows. :func:`clean` shows every such character as a
visible escape (``\\x1b``, ``\\u202e``) instead; :func:`say` and :func:`say_json` print
only cleaned text, and the only escape sequences that reach the terminal are the archiver's
own emphasis (:func:`emphasis`), and only when the output is a terminal.
"""

from __future__ import annotations

import html
import json
import re
import sys
import unicodedata
from collections.abc import Sequence
from typing import Any

import click

#: Format characters that reorder or hide text (bidi embeddings, overrides and isolates).
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_MARK = re.compile(r"<mark>(.*?)</mark>", re.S)
BOLD_REVERSE = "\x1b[1;7m"
RESET = "\x1b[0m"


def _unsafe(ch: str) -> bool:
    return ch in _BIDI or unicodedata.category(ch) in ("Cc", "Zl", "Zp")


def _escape(ch: str) -> str:
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def clean(text: str) -> str:
    """``text`` with every control character (newlines and tabs too) shown as an escape, and a
    lone surrogate (not writable as UTF-8) as U+FFFD."""
    if not any(_unsafe(ch) or _surrogate(ch) for ch in text):
        return text
    return "".join(_escape(ch) if _unsafe(ch) else "\ufffd" if _surrogate(ch) else ch for ch in text)


def _surrogate(ch: str) -> bool:
    return "\ud800" <= ch <= "\udfff"


def say(text: str = "", *, err: bool = False) -> None:
    """Print ``text`` (its lines kept apart, every control character in them escaped)."""
    click.echo("\n".join(clean(line) for line in text.split("\n")), err=err)


def say_json(data: Any, *, indent: int | None = None) -> None:
    """Print ``data`` as JSON. JSON escapes C0 controls itself; C1 controls, line separators
    and bidi overrides (legal in a JSON string, live on a terminal) are escaped too."""
    click.echo(json_safe(json.dumps(data, ensure_ascii=False, indent=indent)))


def json_safe(text: str) -> str:
    """JSON text with what a terminal would act on (C1 controls, line separators, bidi
    overrides, lone surrogates) as ``\\uXXXX`` escapes: the same JSON value, inert on screen."""
    # A raw newline is indentation (json escapes those inside strings); any other is in a string.
    return "".join(f"\\u{ord(ch):04x}" if (ch != "\n" and _unsafe(ch)) or _surrogate(ch) else ch for ch in text)


def is_tty(err: bool = False) -> bool:
    """True when standard output (or error) is a terminal."""
    stream = sys.stderr if err else sys.stdout
    return bool(getattr(stream, "isatty", lambda: False)())


def emphasis(text: str, on: bool) -> str:
    """``text`` (already cleaned) in bold reverse video when ``on``, else as it is."""
    return f"{BOLD_REVERSE}{text}{RESET}" if on and text else text


def snippet(marked: str, tty: bool) -> str:
    """A search snippet (HTML-escaped, matches in ``<mark>``) as terminal text: entities decoded,
    every control character escaped, matches emphasised on a terminal."""
    out, pos = [], 0
    for m in _MARK.finditer(marked):
        out.append(clean(html.unescape(marked[pos:m.start()])))
        out.append(emphasis(clean(html.unescape(m.group(1))), tty))
        pos = m.end()
    out.append(clean(html.unescape(marked[pos:])))
    return "".join(out)


def plural(n: int, one: str, many: str | None = None) -> str:
    """``1 result``, ``2 results``, ``0 results``."""
    return f"{n} {one if n == 1 else (many or one + 's')}"


def table(header: Sequence[str], rows: Sequence[Sequence[str]], *, raw_last: bool = False) -> None:
    """Print ``rows`` under ``header`` in aligned columns, every cell cleaned.

    ``raw_last``: the last column is already cleaned (and may hold :func:`emphasis`); it is
    printed as it is and not padded.
    """
    cells = [[clean(c) for c in (row[:-1] if raw_last else row)] for row in rows]
    lead = len(header) - 1 if raw_last else len(header)
    widths = [max([len(header[i])] + [len(r[i]) for r in cells]) for i in range(lead)]

    def line(parts: Sequence[str], last: str | None) -> str:
        text = "  ".join(p.ljust(w) for p, w in zip(parts, widths))
        return f"{text}  {last}".rstrip() if last is not None else text.rstrip()

    click.echo(line(header[:lead], header[-1] if raw_last else None))
    for row, cleaned in zip(rows, cells):
        click.echo(line(cleaned, row[-1] if raw_last else None))
