"""Pure: a strict-JSON view of a body that never loses a digit or a key.

Evidence is the raw bytes (``records`` serves them, base64 in the API, ``show --raw`` on the
CLI). Beside them a reader wants the body parsed, and a plain ``json.loads`` + ``dumps``
round trip would lie: ``Infinity`` comes back as bare ``Infinity`` (not JSON), a 40-digit
decimal loses digits, the first of two duplicate keys vanishes. :func:`view` gives instead:

``value``
    The body as strict JSON (RFC 8259). Every number is written as a JSON number only when
    that writes exactly the body's text for it (and an integer within ±(2**53 - 1), which
    every JSON reader holds exactly); any other number (``1e400``, ``0.10``, a 40-digit
    decimal, a huge integer, ``-0``, and the non-JSON ``NaN``, ``Infinity``, ``-Infinity``)
    becomes ``{"$number": "<its text in the body>"}``. Of duplicate keys, the last one's
    value stays in place (as most JSON readers do).
``numbers_as_text``
    JSON Pointers (RFC 6901) into ``value`` of every ``$number`` object, so an object the
    body itself spelled ``{"$number": ...}`` is never mistaken for one.
``duplicate_keys``
    One entry per key that occurs more than once in an object: ``pointer`` (the member in
    ``value``), ``values`` (every occurrence, in body order) and, for those, their own
    ``numbers_as_text`` and ``duplicate_keys`` (pointers into ``values``).
``format``
    ``json`` when the body parsed; ``not-utf8``, ``not-json``, ``empty`` or ``too-deep``
    (nested deeper than ``MAX_DEPTH``) when it did not (``value`` is None then: the raw bytes are the evidence).
``rfc8259``
    Whether the body is RFC 8259 JSON text (False for ``NaN``/``Infinity`` and unparsed bodies).

Imports only the standard library. :func:`view` never raises.
"""

from __future__ import annotations

import json
import re
from typing import Any

NUMBER_KEY = "$number"
SAFE_INT = 2**53 - 1
_INT_TEXT = re.compile(r"-?(0|[1-9][0-9]{0,15})")  # 16 digits > 2**53: longer ones never qualify
_MAX_FLOAT_TEXT = 32  # float.__repr__ never writes more characters than this
#: Deeper bodies get no parsed view: writing one out (json, Flask) must not hit the recursion limit.
MAX_DEPTH = 200


class _Pairs(list[tuple[str, Any]]):
    """An object as parsed: its members in body order, duplicates included."""


class _Number:
    """A number as its body text, until the walk decides how to write it."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


class _Constant(_Number):
    """``NaN``, ``Infinity`` or ``-Infinity``: accepted by Python, not JSON (RFC 8259)."""


def view(body: bytes) -> dict[str, Any]:
    """The strict-JSON view of ``body`` (see the module docstring). Never raises."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return _unparsed("not-utf8", "the body is not UTF-8; its exact bytes are the raw evidence")
    if not text.strip():
        return _unparsed("empty", "the body is empty")
    constants: list[str] = []

    def constant(name: str) -> _Constant:
        constants.append(name)
        return _Constant(name)

    try:
        parsed = json.loads(text, object_pairs_hook=_Pairs, parse_float=_Number, parse_int=_Number,
                            parse_constant=constant)
        walk = _Walk()
        value = walk.value(parsed, "")
    except (RecursionError, _TooDeep):
        return _unparsed("too-deep", "the body nests too deeply to show parsed; its raw bytes are the evidence")
    except ValueError:
        return _unparsed("not-json", "the body is not JSON; its raw bytes are the evidence")
    out: dict[str, Any] = {"format": "json", "rfc8259": not constants, "value": value,
                           "numbers_as_text": walk.numbers, "duplicate_keys": walk.duplicates}
    if constants:
        out["note"] = "NaN and Infinity are not JSON (RFC 8259); they are shown as $number"
    return out


def _unparsed(fmt: str, note: str) -> dict[str, Any]:
    return {"format": fmt, "rfc8259": False, "value": None, "numbers_as_text": [], "duplicate_keys": [],
            "note": note}


def number_value(text: str) -> int | float | None:
    """The JSON number that writes back exactly as ``text``, or None if there is none."""
    if _INT_TEXT.fullmatch(text):
        n = int(text)
        return n if abs(n) <= SAFE_INT and str(n) == text else None
    if len(text) > _MAX_FLOAT_TEXT:
        return None
    try:
        f = float(text)
    except ValueError:
        return None
    return f if repr(f) == text else None  # inf, nan and any rewritten text fail here


def pointer(parent: str, key: str | int) -> str:
    """The RFC 6901 pointer of ``key`` under ``parent``."""
    return f"{parent}/{str(key).replace('~', '~0').replace('/', '~1')}"


class _TooDeep(Exception):
    """The parsed body nests deeper than MAX_DEPTH."""


class _Walk:
    """Turns the parsed tree into plain values, noting $number pointers and duplicate keys."""

    def __init__(self) -> None:
        self.numbers: list[str] = []
        self.duplicates: list[dict[str, Any]] = []

    def value(self, node: Any, at: str, depth: int = 0) -> Any:
        if isinstance(node, (_Pairs, list)) and depth >= MAX_DEPTH:
            raise _TooDeep
        if isinstance(node, _Pairs):
            return self._object(node, at, depth + 1)
        if isinstance(node, list):
            return [self.value(v, pointer(at, i), depth + 1) for i, v in enumerate(node)]
        if isinstance(node, _Number):
            exact = None if isinstance(node, _Constant) else number_value(node.text)
            if exact is not None:
                return exact
            self.numbers.append(at)
            return {NUMBER_KEY: node.text}
        return node  # str, bool, None

    def _object(self, pairs: _Pairs, at: str, depth: int) -> dict[str, Any]:
        seen: dict[str, list[Any]] = {}
        for key, node in pairs:
            seen.setdefault(key, []).append(node)
        out: dict[str, Any] = {}
        for key, nodes in seen.items():
            here = pointer(at, key)
            if len(nodes) > 1:
                inner = _Walk()
                values = [inner.value(n, pointer("", i), depth) for i, n in enumerate(nodes)]
                self.duplicates.append({"pointer": here, "values": values, "numbers_as_text": inner.numbers,
                                        "duplicate_keys": inner.duplicates})
            out[key] = self.value(nodes[-1], here, depth)
        return out



# DEL, C1 controls, line/paragraph separators, bidi overrides and lone surrogates: legal in
# a JSON string, but they steer or break a terminal (or UTF-8 output), so they go escaped.
_TERMINAL_UNSAFE = re.compile("[\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def dumps(obj: Any, indent: int | None = None) -> str:
    """JSON text of ``obj`` safe to print: readable non-ASCII, every control escaped.

    ``json`` escapes C0 controls itself; the characters above are escaped as ``\\uXXXX``
    (they occur only inside strings, so the text stays the same JSON). Raises ValueError
    for NaN or infinity, TypeError for a value JSON cannot hold.
    """
    text = json.dumps(obj, ensure_ascii=False, indent=indent, allow_nan=False)
    return _TERMINAL_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
