"""The export's ``export.rsmf`` (format ``rsmf``): the records as RSMF 2.0.0 (Relativity
Short Message Format), for review platforms that load short messages.

An RSMF file is an RFC 5322 message (``X-RSMF-*`` headers, a short text body) whose one
base64 attachment ``rsmf.zip`` holds ``rsmf_manifest.json`` and the attachments. Written
here: one participant per contact plus the business, one ``direct`` conversation per
contact, and one event per exported record (delivery records included), in seq order, each
with the custom fields ``seq``, ``kind``, ``record_hash``; edits, revokes and reactions are
also folded into the event of the message they change (``edits``, ``deleted``,
``reactions``). Shredded records are events with the body ``[shredded: no content]``.
Deterministic: fixed zip times, a fixed MIME boundary and date, so the manifest lists it.
See docs/export-format.md.
"""

from __future__ import annotations

import base64
import io
import json
import zipfile
from datetime import datetime, timezone
from typing import Any

from archiver.transcript import SENDER, body_text, message_of

VERSION = "2.0.0"
BUSINESS = "business"
NAME = "export.rsmf"
_BOUNDARY = "archiver-rsmf-boundary"
_FIXED = (1980, 1, 1, 0, 0, 0)


def _zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, date_time=_FIXED)
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, files[name])
    return buf.getvalue()


def manifest(lines: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``rsmf_manifest.json`` object of ``records.jsonl`` lines (dicts)."""
    participants: dict[str, dict[str, Any]] = {BUSINESS: {"id": BUSINESS, "display": "Business"}}
    conversations: dict[str, dict[str, Any]] = {}
    events: list[dict[str, Any]] = []
    by_wamid: dict[str, dict[str, Any]] = {}
    for line in lines:
        kind, contact = line["kind"], line.get("contact")
        conv = str(contact or "no-contact")
        if conv not in conversations:
            conversations[conv] = {"id": conv, "display": conv, "platform": "WhatsApp Business",
                                   "type": "direct", "participants": sorted({BUSINESS, conv})}
        if contact and contact not in participants:
            participants[contact] = {"id": contact, "display": contact, "account_id": contact}
        content = line.get("content")
        msg = message_of(content)
        name = ((content or {}).get("contact") or {}).get("profile", {}).get("name") if isinstance(content, dict) else None
        if contact and name and participants[contact]["display"] == contact:
            participants[contact]["display"] = f"{name} ({contact})"
        inbound = kind == "message" or (kind == "history_message" and (content or {}).get("direction") != "out")
        event: dict[str, Any] = {
            "id": f"seq-{line['seq']}", "conversation": conv,
            "participant": (contact or BUSINESS) if inbound else BUSINESS,
            "direction": "incoming" if inbound else "outgoing",
            "type": "message" if kind in SENDER else "unknown",
            "timestamp": line.get("occurred_at") or "",
            "custom": [{"name": "seq", "value": str(line["seq"])}, {"name": "kind", "value": kind},
                       {"name": "record_hash", "value": line["hash"]}]
                      + ([{"name": "sender", "value": SENDER[kind]}] if kind in SENDER else []),
        }
        if line.get("shredded"):
            event["body"] = "[shredded: no content]"
        else:
            event["body"] = body_text(msg) or f"{kind} record" + (f" ({line['type']})" if line.get("type") else "")
        files = [m for m in line.get("media") or [] if m.get("sha256")]
        if files:
            event["attachments"] = [{"id": str(m["sha256"]), "display": str(m.get("mime_type") or m["sha256"]),
                                     **({"size": 0} if not m.get("file") else {})} for m in files]
        if msg.get("id") and line.get("type") not in ("reaction", "edit", "revoke"):
            by_wamid.setdefault(str(msg["id"]), event)
        target = None
        if not line.get("shredded"):
            mtype = msg.get("type")
            ref = (msg.get(mtype) or {}) if isinstance(mtype, str) and isinstance(msg.get(mtype), dict) else {}
            target = by_wamid.get(str(ref.get("message_id") or ref.get("original_message_id") or ""))
        if target is not None and msg.get("type") == "reaction":
            target.setdefault("reactions", []).append(
                {"value": str(msg["reaction"].get("emoji") or ""), "count": 1, "participants": [event["participant"]]})
        elif target is not None and kind == "edit":
            target.setdefault("edits", []).append({"participant": event["participant"], "timestamp": event["timestamp"],
                                                   "previous": target.get("body", ""), "current": event["body"]})
        elif target is not None and kind == "revoke":
            target["deleted"] = True
        events.append(event)
    return {"version": VERSION, "participants": [participants[k] for k in sorted(participants)],
            "conversations": [conversations[k] for k in sorted(conversations)], "events": events}


def build(lines: list[dict[str, Any]], media: dict[str, bytes], selection: str) -> bytes:
    """The ``.rsmf`` bytes: an RFC 5322 message with ``rsmf.zip`` attached."""
    man = manifest(lines)
    files = {"rsmf_manifest.json": json.dumps(man, ensure_ascii=False, sort_keys=True, indent=1).encode("utf-8", "backslashreplace")}
    for ev in man["events"]:
        for a in ev.get("attachments", []):
            data = media.get(f"media/{a['id']}")
            if data is not None:
                files[a["id"]] = data
    zipped = base64.encodebytes(_zip(files)).decode("ascii").replace("\n", "\r\n")
    stamps = sorted(e["timestamp"] for e in man["events"] if e["timestamp"])
    date = datetime(1980, 1, 1, tzinfo=timezone.utc).strftime("%a, %d %b %Y %H:%M:%S +0000")
    headers = [("From", "whatsapp-archiver <archiver@localhost>"), ("To", "review <review@localhost>"),
               ("Subject", f"WhatsApp Business export: {selection}"), ("Date", date),
               ("MIME-Version", "1.0"), ("X-RSMF-Version", VERSION), ("X-RSMF-Generator", "whatsapp-archiver"),
               ("X-RSMF-Application", "WhatsApp Business"), ("X-RSMF-EventCount", str(len(man["events"]))),
               ("X-RSMF-AttachmentCount", str(len(files) - 1))]
    if stamps:
        headers += [("X-RSMF-BeginDate", stamps[0]), ("X-RSMF-EndDate", stamps[-1])]
    from email.header import Header

    head = "".join(f"{k}: {Header(v, 'utf-8').encode() if not v.isascii() else v}\r\n" for k, v in headers)
    body = (f"{len(man['events'])} events in {len(man['conversations'])} conversations; "
            "the messages are in the attached rsmf.zip (rsmf_manifest.json).")
    return (head + f'Content-Type: multipart/mixed; boundary="{_BOUNDARY}"\r\n\r\n'
            f"--{_BOUNDARY}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
            f"--{_BOUNDARY}\r\nContent-Type: application/zip\r\nContent-Transfer-Encoding: base64\r\n"
            f'Content-Disposition: attachment; filename="rsmf.zip"\r\n\r\n{zipped}'
            f"--{_BOUNDARY}--\r\n").encode("utf-8", "backslashreplace")
