"""The one definition of canonical JSON bytes and of SHA-256 hex, for every module.

Pure and a leaf (imports nothing from ``archiver``), so the integrity code (``chain``,
``items``), the journal and the drivers share it.

*Canonical bytes* are ``json.dumps(obj, sort_keys=True, separators=(",", ":"),
ensure_ascii=False, allow_nan=False)`` in UTF-8, with one addition: a lone surrogate
(legal in JSON text as ``\\udXXX`` but not encodable as UTF-8) is written back as its
``\\udXXX`` escape, so the output is always valid UTF-8 and parses back to the same value.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import orjson


def canonical(obj: Any) -> bytes:
    """Canonical JSON bytes of ``obj`` (see the module docstring).

    ``obj`` holds strings, integers, booleans, None, lists and dicts with string keys, and
    floats only as parsed from a body (``items.JsonFloat``): for all but those floats
    orjson writes exactly the definition's bytes, faster; it refuses float subclasses,
    integers beyond 64 bits and lone surrogates, which then go through ``json`` itself.
    Raises TypeError for a value JSON cannot hold and ValueError for NaN or infinity.
    """
    try:
        return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        return text.encode("utf-8", "backslashreplace")


def sha256_hex(data: bytes) -> str:
    """Hex SHA-256 of ``data``. Never raises."""
    return hashlib.sha256(data).hexdigest()
