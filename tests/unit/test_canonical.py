"""canonical.canonical (the one definition; chain and items use it) is defined as
json.dumps(sort_keys, compact, ensure_ascii=False); the orjson fast path must write exactly
those bytes for every value a record can hold."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from archiver import canonical, chain, items


def reference(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


# Any Unicode text except lone surrogates (not encodable as UTF-8 by either serializer).
texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
scalars = st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | texts
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(texts, inner, max_size=5),
                      max_leaves=30)


@settings(max_examples=400)
@given(values)
def test_fast_path_writes_the_reference_bytes(obj: Any) -> None:
    assert chain.canonical(obj) == reference(obj)


def test_escapes_and_big_integers_match() -> None:
    obj = {"é": "\x00\x1f\x7f\u2028\"\\\n\t", "big": 2**64 + 1, "neg": -(2**63), "e": "😀", "\uffff": [True, None]}
    assert chain.canonical(obj) == reference(obj)


def test_a_lone_surrogate_is_written_as_its_escape() -> None:
    got = chain.canonical({"type": "te\ud800xt"})
    assert got == b'{"type":"te\\ud800xt"}'
    assert json.loads(got) == {"type": "te\ud800xt"}  # reads back as the same string


# The sealer writes payloads (parts of bodies items' parser read) with chain.canonical: for
# whatever JSON text arrives, the bytes must be json's (floats included).
numbers = st.integers(min_value=-(2**70), max_value=2**70) | st.floats(allow_nan=False, allow_infinity=False)
bodies = st.recursive(st.none() | st.booleans() | numbers | texts,
                      lambda inner: st.lists(inner, max_size=5) | st.dictionaries(texts, inner, max_size=5),
                      max_leaves=30)


@settings(max_examples=400)
@given(bodies)
def test_payloads_from_parsed_bodies_get_the_reference_bytes(obj: Any) -> None:
    parsed, reason = items._parse(json.dumps(obj).encode())
    assert reason is None
    assert chain.canonical(parsed) == reference(json.loads(json.dumps(obj)))
    assert chain.canonical is canonical.canonical and items.canonical is canonical.canonical  # one definition


def test_exponent_floats_are_written_as_json_writes_them() -> None:
    parsed, _ = items._parse(b'{"lat": 1e16, "tiny": 1e-07, "x": [0.1, 2.5e+20], "n": 10}')
    assert chain.canonical(parsed) == b'{"lat":1e+16,"n":10,"tiny":1e-07,"x":[0.1,2.5e+20]}'
