"""jsonview: the parsed view of a body is strict JSON and keeps every digit and every key."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from archiver import jsonview
from tests.evidence import body_form, shown_form, strict_loads


def shown(body: bytes) -> dict[str, Any]:
    """The view as a client gets it: written out as JSON, read back strictly."""
    out = strict_loads(json.dumps(jsonview.view(body), allow_nan=False))
    assert isinstance(out, dict)
    return out


def check(body: bytes) -> dict[str, Any]:
    got = shown(body)
    assert got["format"] == "json"
    assert shown_form(got["value"], got) == body_form(body)
    return got


@pytest.mark.parametrize(("text", "expected"), [
    ("Infinity", {"$number": "Infinity"}), ("-Infinity", {"$number": "-Infinity"}), ("NaN", {"$number": "NaN"}),
    ("1e400", {"$number": "1e400"}), ("-1e400", {"$number": "-1e400"}),
    ("1.2345678901234567890123456789012345678901", {"$number": "1.2345678901234567890123456789012345678901"}),
    ("123456789012345678901234567890", {"$number": "123456789012345678901234567890"}),
    ("9007199254740992", {"$number": "9007199254740992"}),  # 2**53: beyond what every reader holds exactly
    ("9007199254740991", 9007199254740991), ("-0", {"$number": "-0"}), ("0.10", {"$number": "0.10"}),
    ("1E5", {"$number": "1E5"}), ("1.5", 1.5), ("-0.0", -0.0), ("42", 42), ("0", 0),
])
def test_numbers_are_json_numbers_only_when_they_write_back_exactly(text: str, expected: Any) -> None:
    got = check(f'{{"n": {text}, "list": [{text}]}}'.encode())
    assert got["value"] == {"n": expected, "list": [expected]}
    marked = isinstance(expected, dict)
    assert got["numbers_as_text"] == (["/n", "/list/0"] if marked else [])
    assert got["rfc8259"] is (text not in ("Infinity", "-Infinity", "NaN"))


def test_duplicate_keys_are_all_listed_and_the_last_stays_in_place() -> None:
    body = b'{"a": 1, "b": {"x": 1e400, "x": 2, "y/~": [3, 3]}, "a": {"z": 0.10, "z": true}, "b": 5}'
    got = check(body)
    assert got["value"]["a"] == {"z": True} and got["value"]["b"] == 5
    by_ptr = {d["pointer"]: d for d in got["duplicate_keys"]}
    # /a/z: the kept occurrence of "a" has a duplicate of its own, listed with its pointer in value
    assert set(by_ptr) == {"/a", "/a/z", "/b"}
    assert by_ptr["/a/z"]["values"] == [{"$number": "0.10"}, True]
    assert by_ptr["/a"]["values"] == [1, {"z": True}]
    assert by_ptr["/a"]["duplicate_keys"] == [{"pointer": "/1/z", "values": [{"$number": "0.10"}, True],
                                               "numbers_as_text": ["/0"], "duplicate_keys": []}]
    assert by_ptr["/b"]["values"][0] == {"x": 2, "y/~": [3, 3]}
    assert by_ptr["/b"]["duplicate_keys"][0]["pointer"] == "/0/x"
    assert by_ptr["/b"]["duplicate_keys"][0]["numbers_as_text"] == ["/0"]


def test_a_body_that_spells_the_marker_itself_is_not_taken_for_one() -> None:
    got = check(b'{"$number": "12"}')
    assert got["value"] == {"$number": "12"} and got["numbers_as_text"] == []


@pytest.mark.parametrize(("body", "fmt"), [
    (b'{"x": "\xff\xfe"}', "not-utf8"), ("{\"x\": \"\u00e9t\u00e9\"}".encode("latin-1"), "not-utf8"),
    (b"", "empty"), (b"  \n", "empty"), (b"{not json", "not-json"), (b'{"a": 1} x', "not-json"),
    (b"\xef\xbb\xbf{}", "not-json"), (b"[" * 5000 + b"]" * 5000, "too-deep"),
    (b"[" * (jsonview.MAX_DEPTH + 1) + b"]" * (jsonview.MAX_DEPTH + 1), "too-deep"),
])
def test_bodies_without_a_parsed_view_say_why(body: bytes, fmt: str) -> None:
    got = shown(body)
    assert got["format"] == fmt and got["value"] is None and got["rfc8259"] is False and got["note"]


def test_lone_surrogates_and_controls_survive_as_escapes() -> None:
    got = check(b'{"s": "\\ud800 \\u001b]0;t\\u0007"}')
    assert got["value"]["s"] == "\ud800 \x1b]0;t\x07"
    text = jsonview.dumps(got)
    text.encode("utf-8")  # printable as UTF-8
    assert "\x1b" not in text and strict_loads(text) == got


# Arbitrary JSON documents written with arbitrary number spellings and duplicate keys.
_ints = st.from_regex(r"-?(0|[1-9][0-9]{0,40})", fullmatch=True)
_floats = st.from_regex(r"-?(0|[1-9][0-9]{0,25})(\.[0-9]{1,25})?([eE][+-]?[0-9]{1,4})?", fullmatch=True)
_numbers = _ints | _floats | st.sampled_from(["NaN", "Infinity", "-Infinity"])
_strings = st.text(max_size=8).map(lambda s: json.dumps(s))
_keys = st.sampled_from(['"a"', '"b"', '"a/b"', '"~0"', '"$number"', '""'])


def _documents() -> st.SearchStrategy[str]:
    scalars = _numbers | _strings | st.sampled_from(["true", "false", "null"])
    return st.recursive(scalars, lambda inner: (
        st.lists(inner, max_size=4).map(lambda xs: "[" + ",".join(xs) + "]")
        | st.lists(st.tuples(_keys, inner), max_size=5).map(
            lambda kvs: "{" + ",".join(f"{k}:{v}" for k, v in kvs) + "}")
    ), max_leaves=25)


@settings(max_examples=300)
@given(_documents())
def test_any_document_keeps_every_digit_and_key(doc: str) -> None:
    check(doc.encode())
