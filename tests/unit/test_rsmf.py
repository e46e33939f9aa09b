"""RSMF 2.0.0 (archiver/rsmf.py): an RFC 5322 message whose rsmf.zip holds a manifest with
one event per exported record, parsed back with the standard library."""

from __future__ import annotations

import email
import io
import json
import sys
import zipfile
from email import policy
from pathlib import Path
from typing import Any

from archiver import rsmf

sys.path.insert(0, str(Path(__file__).parent))
from test_transcript import _lines  # noqa: E402


def _open(data: bytes) -> tuple[Any, dict[str, Any], zipfile.ZipFile]:
    msg = email.message_from_bytes(data, policy=policy.default)
    parts = [p for p in msg.iter_attachments()]
    assert [p.get_filename() for p in parts] == ["rsmf.zip"]
    zf = zipfile.ZipFile(io.BytesIO(parts[0].get_content()))
    return msg, json.loads(zf.read("rsmf_manifest.json")), zf


def test_every_record_is_an_event_with_edits_reactions_and_shredded() -> None:
    lines = [*_lines(), {"seq": 9, "hash": "9" * 64, "kind": "delivery", "type": None, "contact": None,
                         "occurred_at": None, "links": {}, "shredded": False, "content": {}, "media": []}]
    media = {"media/" + "ab" * 32: b"not really a jpeg"}
    data = rsmf.build(lines, media, "search query: hello")
    assert data == rsmf.build(lines, media, "search query: hello")  # deterministic
    msg, man, zf = _open(data)
    assert msg["X-RSMF-Version"] == "2.0.0" and msg["X-RSMF-EventCount"] == str(len(lines))
    assert man["version"] == "2.0.0"
    seqs = [next(int(c["value"]) for c in e["custom"] if c["name"] == "seq") for e in man["events"]]
    assert seqs == [line["seq"] for line in lines]
    ids = {p["id"] for p in man["participants"]}
    assert all(e["participant"] in ids and e["conversation"] in {c["id"] for c in man["conversations"]}
               for e in man["events"])
    first, echo = man["events"][0], man["events"][1]
    assert first["direction"] == "incoming" and echo["direction"] == "outgoing"
    assert first["edits"][0]["current"] == "edited words" and "مرحبا" in first["edits"][0]["previous"]
    assert echo["reactions"][0]["value"] == "🎉"
    assert man["events"][7]["body"] == "[shredded: no content]"
    assert man["events"][5]["attachments"][0]["id"] == "ab" * 32 and "ab" * 32 in zf.namelist()


def test_empty_selection_is_a_valid_rsmf_of_no_events() -> None:
    msg, man, _ = _open(rsmf.build([], {}, "contact x"))
    assert msg["X-RSMF-EventCount"] == "0" and man["events"] == [] and man["version"] == "2.0.0"
