"""Checking a strict-JSON view (``archiver.jsonview``) against the body it shows.

Both sides are brought to one form in which nothing can hide: every number as its exact
text, every object as ``{key: [every occurrence's value, in body order]}``.

    assert shown_form(content, content_view) == body_form(body)
"""

from __future__ import annotations

import json
from typing import Any


class _Text(str):
    """A number as its text in the body."""


def _no_constant(name: str) -> Any:
    raise AssertionError(f"{name} in output that must be strict JSON")


def strict_loads(data: bytes | str) -> Any:
    """``json.loads`` that refuses NaN and Infinity (RFC 8259). Raises AssertionError or ValueError."""
    return json.loads(data, parse_constant=_no_constant)


def body_form(body: bytes) -> Any:
    """The body parsed with every number as its text and every duplicate key kept."""
    def pairs(items: list[tuple[str, Any]]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {}
        for k, v in items:
            out.setdefault(k, []).append(v)
        return out
    return json.loads(body.decode("utf-8"), object_pairs_hook=pairs, parse_float=_Text, parse_int=_Text,
                      parse_constant=_Text)


def _resolve(root: Any, ptr: str) -> tuple[Any, str | int]:
    parts = [p.replace("~1", "/").replace("~0", "~") for p in ptr.split("/")[1:]]
    node = root
    for p in parts[:-1]:
        node = node[int(p)] if isinstance(node, list) else node[p]
    last = parts[-1]
    return node, int(last) if isinstance(node, list) else last


def shown_form(value: Any, meta: dict[str, Any]) -> Any:
    """The view (``value`` with its ``numbers_as_text`` and ``duplicate_keys``) in ``body_form``'s form."""
    marked = set(meta["numbers_as_text"])
    dups = {d["pointer"]: d for d in meta["duplicate_keys"]}
    for d in meta["duplicate_keys"]:
        assert d["values"] and len(d["values"]) > 1, d
        parent, key = _resolve(value, d["pointer"])
        assert parent[key] == d["values"][-1], "the last occurrence stays in place"

    def walk(node: Any, at: str) -> Any:
        if at in marked:
            assert set(node) == {"$number"} and isinstance(node["$number"], str), node
            return node["$number"]
        if isinstance(node, bool) or node is None or isinstance(node, str):
            return node
        if isinstance(node, (int, float)):
            text = repr(node)
            assert json.dumps(node) == text
            return text
        if isinstance(node, list):
            return [walk(v, f"{at}/{i}") for i, v in enumerate(node)]
        out = {}
        for k, v in node.items():
            here = f"{at}/{k.replace('~', '~0').replace('/', '~1')}"
            if here in dups:
                d = dups[here]
                out[k] = shown_form(d["values"], d)
            else:
                out[k] = [walk(v, here)]
        return out
    return walk(value, "")
