"""The indexer: sealed records -> search documents, bulk, idempotent by seq, resumable.

It reads what the sealer sealed (decrypting with the data keys) and advances the catalog
cursor ``index`` only after the search backend accepted the batch. The index is derived
data: :func:`reindex` rebuilds it from the WORM store alone.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from archiver import items, records
from archiver.catalog import MessageState, Record, chain_head, cursor_value, set_cursor
from archiver.services import Services

log = logging.getLogger(__name__)

INDEXED = ("message", "echo", "outbound", "history_message", "edit", "revoke")
CHANNEL = {"message": "customer", "echo": "app", "outbound": "api", "history_message": "history"}
TEXT_KEYS = {"body", "caption", "filename", "title", "description", "text", "name", "formatted_name",
             "first_name", "last_name", "address", "emoji", "headline", "footer", "header"}
MEDIA = ("image", "video", "audio", "document", "sticker")
BATCH = 500


def index_pending(services: Services, *, batch: int = BATCH) -> int:
    """Index everything sealed after the cursor; return the number of documents indexed.

    Raises SearchUnavailable when the backend is down (the cursor stays; the lag grows).
    """
    total = 0
    with services.sessions() as session:
        after = cursor_value(session, "index")
        head = chain_head(session).seq
        if head <= after:
            return 0
        context = _Context.load(session)
        docs: list[dict[str, Any]] = []
        last = after
        for rec, plain in records.iter_decrypted(services, session, after):
            doc = build_doc(rec, plain, context)
            if doc:
                docs.append(doc)
            last = rec["seq"]
            if len(docs) >= batch:
                total += _flush(services, docs, last)
                docs = []
        total += _flush(services, docs, last)
    return total


def _flush(services: Services, docs: list[dict[str, Any]], last: int) -> int:
    """Index ``docs``, then move the cursor to ``last`` (never before the backend has them)."""
    if docs:
        services.search.index(docs)
    with services.sessions.begin() as session:
        if cursor_value(session, "index") < last:
            set_cursor(session, "index", last)
    return len(docs)


def reindex(services: Services) -> int:
    """Rebuild the whole index from the WORM store; return the number of documents."""
    with services.sessions() as session:
        context = _Context.load(session)
        last = chain_head(session).seq
        docs = (d for rec, plain in records.iter_decrypted(services, session, 0) if (d := build_doc(rec, plain, context)))
        count = services.search.rebuild(docs)
    with services.sessions.begin() as session:
        set_cursor(session, "index", last)
    return count


class _Context:
    """Catalog facts a document shows: contact ids, highest status, revoked originals."""

    def __init__(self, contacts: dict[int, str | None], states: dict[str, str], revoked: set[int]) -> None:
        self.contacts, self.states, self.revoked = contacts, states, revoked

    @classmethod
    def load(cls, session: Session) -> "_Context":
        contacts = dict(session.execute(select(Record.seq, Record.contact).where(Record.kind.in_(INDEXED))).all())
        states = dict(session.execute(select(MessageState.wamid, MessageState.state)).all())
        revoked = {int(links["original"]) for (links,) in session.execute(select(Record.links).where(Record.kind == "revoke"))
                   if links and "original" in links}
        return cls(contacts, states, revoked)


def build_doc(rec: dict[str, Any], plain: bytes | None, ctx: _Context) -> dict[str, Any] | None:
    """The search document of a sealed record, or None if it is not searchable."""
    if rec["kind"] not in INDEXED or plain is None:
        return None
    payload = json.loads(plain)
    if rec["kind"] == "outbound":
        return _outbound_doc(rec, payload, ctx)
    msg = payload.get("message") or {}
    meta = payload.get("metadata") or {}
    business = meta.get("display_phone_number")
    outgoing = _is_outgoing(rec["kind"], payload, msg, business)
    inner = _inner(msg)
    return _doc(
        rec, ctx, wamid=msg.get("id"), type_=msg.get("type"), outgoing=outgoing,
        channel=_channel(rec["kind"], payload), time=items.parse_time(msg.get("timestamp")),
        sender=business if outgoing else (msg.get("from") or msg.get("from_user_id")),
        recipient=(msg.get("to") or msg.get("to_user_id")) if outgoing else business,
        name=((payload.get("contact") or {}).get("profile") or {}).get("name"), number=business,
        text=" ".join(_texts(msg)), media=inner,
    )


def _outbound_doc(rec: dict[str, Any], payload: dict[str, Any], ctx: _Context) -> dict[str, Any]:
    capture = payload.get("capture") or {}
    request = capture.get("request") or {}
    response = capture.get("response") or {}
    wamid = ((response.get("messages") or [{}])[0] or {}).get("id")
    return _doc(
        rec, ctx, wamid=wamid, type_=request.get("type"), outgoing=True, channel="api",
        time=items.parse_time(capture.get("sent_at")), sender=capture.get("sender"),
        recipient=str(request.get("to") or "").lstrip("+") or None, name=None, number=None,
        text=" ".join(_texts(request)), media=_inner(request),
    )


def _doc(rec: dict[str, Any], ctx: _Context, *, wamid: Any, type_: Any, outgoing: bool, channel: str,
         time: int | None, sender: Any, recipient: Any, name: Any, number: Any, text: str,
         media: dict[str, Any] | None) -> dict[str, Any]:
    seq = rec["seq"]
    links = rec.get("links") or {}
    return {
        "seq": seq, "wamid": _s(wamid), "kind": rec["kind"], "type": _s(type_),
        "direction": "out" if outgoing else "in", "channel": channel,
        "time": time if time is not None else int(datetime.fromisoformat(rec["sealed_at"]).timestamp()),
        "from": _s(sender), "to": _s(recipient), "contact": ctx.contacts.get(seq), "contact_name": _s(name),
        "number": _s(number), "text": text, "has_media": media is not None,
        "mime_type": _s((media or {}).get("mime_type")), "status": ctx.states.get(str(wamid)) if wamid else None,
        "edit_of": links.get("original"), "revoked": rec["kind"] == "revoke" or seq in ctx.revoked,
        "retention_class": rec["class"],
    }


def _s(value: Any) -> str | None:
    return None if value is None else str(value)


def _is_outgoing(kind: str, payload: dict[str, Any], msg: dict[str, Any], business: str | None) -> bool:
    if kind == "history_message":
        return payload.get("direction") == "out" or (business is not None and msg.get("from") == business)
    return kind == "echo" or payload.get("field") == "smb_message_echoes"


def _channel(kind: str, payload: dict[str, Any]) -> str:
    if kind in CHANNEL:
        return CHANNEL[kind]
    return "app" if payload.get("field") == "smb_message_echoes" else "customer"


def _inner(msg: dict[str, Any]) -> dict[str, Any] | None:
    """The media object of a message (or of the message an edit carries)."""
    for source in (msg, (msg.get("edit") or {}).get("message") or {}):
        for kind in MEDIA:
            if isinstance(source.get(kind), dict):
                return source[kind]
    return None


def _texts(obj: Any, key: str = "") -> Iterator[str]:
    """Every human-readable string inside a message object (bodies, captions, names...)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == "response_json" and isinstance(v, str):
                yield from _flow_texts(v)
            else:
                yield from _texts(v, k)
    elif isinstance(obj, list):
        for v in obj:
            yield from _texts(v, key)
    elif isinstance(obj, str) and key in TEXT_KEYS and obj:
        yield obj


def _flow_texts(raw: str) -> Iterable[str]:
    """Flow replies carry their answers as a JSON string."""
    try:
        data = json.loads(raw)
    except ValueError:
        return [raw]
    return [str(v) for v in data.values() if isinstance(v, (str, int, float)) and not isinstance(v, bool)] if isinstance(data, dict) else []
