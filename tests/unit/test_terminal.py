"""archiver.terminal: archived text never drives the terminal; emphasis only on a terminal."""

from __future__ import annotations

import json
import unicodedata

import pytest

from archiver import terminal


@pytest.mark.parametrize("raw, shown", [
    ("\x1b]0;title\x07", "\\x1b]0;title\\x07"),
    ("a\rb\nc\td", "a\\x0db\\x0ac\\x09d"),
    ("\x9b31m", "\\x9b31m"),
    ("\u202eevil", "\\u202eevil"),
    ("line\u2028sep", "line\\u2028sep"),
    ("plain résumé 🙏", "plain résumé 🙏"),
])
def test_clean_escapes_every_control_character(raw: str, shown: str) -> None:
    assert terminal.clean(raw) == shown


def test_no_control_character_survives_clean() -> None:
    every = "".join(chr(c) for c in range(0x110000) if unicodedata.category(chr(c)) == "Cc")
    assert not any(unicodedata.category(ch) == "Cc" for ch in terminal.clean(every))


def test_snippet_decodes_entities_and_emphasises_matches_only_on_a_terminal() -> None:
    marked = "a &lt;b&gt; &amp; <mark>refund</mark> \x1b[2J"
    assert terminal.snippet(marked, tty=False) == "a <b> & refund \\x1b[2J"
    assert terminal.snippet(marked, tty=True) == "a <b> & \x1b[1;7mrefund\x1b[0m \\x1b[2J"
    assert terminal.snippet("<mark>&lt;\x1b</mark>", tty=True) == "\x1b[1;7m<\\x1b\x1b[0m"


def test_plurals() -> None:
    assert [terminal.plural(n, "result") for n in (0, 1, 2)] == ["0 results", "1 result", "2 results"]


def test_say_json_escapes_what_json_leaves_raw(capsys: pytest.CaptureFixture[str]) -> None:
    terminal.say_json({"t": "\x1b]0;x\x07 \x9b \u202e é"})
    out = capsys.readouterr().out
    assert not any(ch in out for ch in "\x1b\x07\x9b\u202e")
    assert json.loads(out) == {"t": "\x1b]0;x\x07 \x9b \u202e é"}
    terminal.say_json({"t": "a\u2028b", "n": [1]}, indent=2)
    pretty = capsys.readouterr().out
    assert json.loads(pretty) == {"t": "a\u2028b", "n": [1]} and "\n  " in pretty and "\u2028" not in pretty
