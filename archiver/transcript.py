"""The export's ``transcript.pdf``: the exported records as a reader expects a chat.

``build`` turns the lines of ``records.jsonl`` (as dicts) into the template's context:
one conversation per contact, bubbles by side (the customer left; the business right,
labelled ``Business App`` for an echo of the app, ``API`` for a captured Cloud API send,
``history`` for a history back-fill), edits and revokes shown under the message they
change with its original text kept, reactions under the message they react to, media as
thumbnails (images) with their SHA-256, delivery statuses with their times, every time in
the chosen zone. A record whose data key was shredded is shown as shredded: its seq, kind
and hash, never content. Records of no contact are listed after the conversations.

``render`` writes the signed PDF/A-3b (``archiver.pdf``): in one WeasyPrint pass for a
small transcript, or in chunks rendered by parallel processes and merged
(``archiver.pdf.chunked``) for a large one, so memory stays flat with the page count.

Pure but for ``render``: no catalog, store or key.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from archiver.errors import ValidationError

CONVERSATIONAL = ("message", "echo", "outbound", "history_message")
SENDER = {"message": "customer", "echo": "Business App", "outbound": "API", "history_message": "history"}
THUMB_PX = 320  # longest side of an image thumbnail
TEMPLATE = "reports/transcript.html"


def zone(name: str | None) -> ZoneInfo:
    """The IANA zone ``name`` (default UTC). Raises ValidationError naming ``tz``."""
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationError("tz", f"unknown time zone {name!r} (an IANA name like Europe/Paris)") from None


@dataclass
class Event:
    """One bubble or note of a conversation, as the template shows it."""

    seq: int
    kind: str
    side: str                      # in | out | note
    sender: str
    time: str
    sort: tuple[int, int]
    type: str | None = None
    text: str | None = None
    shredded: bool = False
    hash: str = ""
    wamid: str | None = None
    edits: list[dict[str, Any]] = field(default_factory=list)
    revoked: dict[str, Any] | None = None
    reactions: list[dict[str, Any]] = field(default_factory=list)
    statuses: list[dict[str, Any]] = field(default_factory=list)
    media: list[dict[str, Any]] = field(default_factory=list)
    detail: str | None = None      # a note's explanation

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "sort"}


@dataclass
class Thread:
    contact: str
    name: str | None
    events: list[Event] = field(default_factory=list)
    continued: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"contact": self.contact, "name": self.name, "continued": self.continued,
                "events": [e.as_dict() for e in self.events]}


def _when(iso: str | None, tz: ZoneInfo) -> str:
    if not iso:
        return "time unknown"
    moment = datetime.fromisoformat(iso).astimezone(tz)
    return moment.strftime("%Y-%m-%d %H:%M:%S %Z")


def _epoch_iso(value: Any) -> str | None:
    try:
        return datetime.fromtimestamp(int(str(value)), timezone.utc).isoformat()
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def message_of(content: Any) -> dict[str, Any]:
    """The message-shaped object of an item payload (a captured send: its request)."""
    c = _dict(content)
    return _dict(c.get("message")) or _dict(_dict(c.get("capture")).get("request"))


def body_text(msg: dict[str, Any]) -> str | None:
    """The readable text of a message object: its body, caption, choice or summary."""
    mtype = msg.get("type")
    obj = _dict(msg.get(mtype)) if isinstance(mtype, str) else {}
    if mtype == "text":
        return str(obj.get("body", ""))
    if mtype in ("image", "video", "audio", "document", "sticker"):
        parts = [str(obj[k]) for k in ("filename", "caption") if obj.get(k)]
        return " · ".join(parts) or None
    if mtype == "location":
        bits = [str(obj[k]) for k in ("name", "address") if obj.get(k)]
        return " · ".join([*bits, f"{obj.get('latitude')}, {obj.get('longitude')}"])
    if mtype == "interactive":
        for key in ("button_reply", "list_reply"):
            if key in obj:
                return str(_dict(obj[key]).get("title", ""))
        return str(_dict(obj.get("body")).get("text", "")) or None
    if mtype == "button":
        return str(obj.get("text", "")) or None
    if mtype == "template":
        return f"template {obj.get('name', '')} ({_dict(obj.get('language')).get('code', '')})"
    if mtype == "contacts":
        names = [str(_dict(c.get("name")).get("formatted_name", "")) for c in msg.get("contacts") or []
                 if isinstance(c, dict)]
        return "contact card: " + ", ".join(n for n in names if n)
    if mtype == "edit":
        return body_text(_dict(obj.get("message")))
    return None


def _side(line: dict[str, Any]) -> str:
    kind = line["kind"]
    if kind == "message":
        return "in"
    if kind in ("echo", "outbound"):
        return "out"
    if kind == "history_message":
        return "out" if _dict(line.get("content")).get("direction") == "out" else "in"
    return "note"


def thumbnail(data: bytes, mime: str | None) -> str | None:
    """A small PNG/JPEG data URI of an image, or None when it is not one Pillow reads."""
    if mime is not None and not mime.startswith("image/"):
        return None
    try:
        from PIL import Image  # WeasyPrint's own dependency

        with Image.open(io.BytesIO(data)) as img:
            img.thumbnail((THUMB_PX, THUMB_PX))
            out = io.BytesIO()
            if img.mode in ("RGBA", "LA", "P"):
                img.convert("RGBA").save(out, "PNG")
                kind = "png"
            else:
                img.convert("RGB").save(out, "JPEG", quality=80)
                kind = "jpeg"
    except Exception:  # noqa: BLE001  (any undecodable file: shown by hash, without thumbnail)
        return None
    return f"data:image/{kind};base64,{base64.b64encode(out.getvalue()).decode()}"


def build(lines: Iterable[dict[str, Any]], *, tz: ZoneInfo, media: dict[str, bytes] | None = None,
          thumbnails: bool = True) -> tuple[list[Thread], list[Event]]:
    """(conversations by contact, records of no contact) from ``records.jsonl`` lines.

    ``media`` maps ``media/<sha256>`` to the file's bytes (for image thumbnails).
    """
    media = media or {}
    by_seq: dict[int, Event] = {}
    by_wamid: dict[str, Event] = {}
    threads: dict[str, Thread] = {}
    others: list[Event] = []
    later: list[dict[str, Any]] = []  # edits, revokes, reactions, statuses, media: attached after
    for line in lines:
        kind = line["kind"]
        if kind == "delivery":
            continue
        content = line.get("content")
        msg = message_of(content)
        if line.get("shredded"):
            ev = Event(line["seq"], kind, _side(line) if kind in CONVERSATIONAL else "note",
                       SENDER.get(kind, kind), _when(line.get("occurred_at"), tz),
                       _sort(line), line.get("type"), shredded=True, hash=line["hash"],
                       detail="shredded: the data key was destroyed; proven as sealed ciphertext, no content")
        elif kind in CONVERSATIONAL and line.get("type") not in ("reaction", "edit", "revoke"):
            sender = SENDER[kind]
            if kind == "message":
                sender = str(_dict(_dict(_dict(content).get("contact")).get("profile")).get("name") or "customer")
            ev = Event(line["seq"], kind, _side(line), sender, _when(line.get("occurred_at"), tz),
                       _sort(line), line.get("type"), body_text(msg), hash=line["hash"],
                       wamid=str(msg.get("id")) if msg.get("id") else None)
            if ev.wamid:
                by_wamid.setdefault(ev.wamid, ev)
            ev.media = [_attachment(m, media, thumbnails) for m in line.get("media") or []]
        elif kind in ("edit", "revoke", "status", "media") or line.get("type") == "reaction":
            later.append(line)
            continue
        else:
            ev = Event(line["seq"], kind, "note", kind, _when(line.get("occurred_at"), tz), _sort(line),
                       line.get("type"), hash=line["hash"], detail=f"{kind} record" +
                       (f" ({line['type']})" if line.get("type") else ""))
        by_seq[ev.seq] = ev
        _place(ev, line.get("contact"), content, threads, others)
    for line in later:
        _attach(line, tz, media, thumbnails, by_seq, by_wamid, threads, others)
    for t in threads.values():
        t.events.sort(key=lambda e: e.sort)
    others.sort(key=lambda e: e.sort)
    return [threads[c] for c in sorted(threads)], others


def _sort(line: dict[str, Any]) -> tuple[int, int]:
    iso = line.get("occurred_at")
    return (int(datetime.fromisoformat(iso).timestamp()) if iso else -1, int(line["seq"]))


def _place(ev: Event, contact: str | None, content: Any, threads: dict[str, Thread], others: list[Event]) -> None:
    if not contact:
        others.append(ev)
        return
    thread = threads.get(contact)
    if thread is None:
        name = _dict(_dict(_dict(content).get("contact")).get("profile")).get("name")
        thread = threads[contact] = Thread(contact, str(name) if name else None)
    elif thread.name is None:
        name = _dict(_dict(_dict(content).get("contact")).get("profile")).get("name")
        thread.name = str(name) if name else None
    thread.events.append(ev)


def _attachment(entry: dict[str, Any], media: dict[str, bytes], thumbnails: bool) -> dict[str, Any]:
    sha = entry.get("sha256")
    out = {"sha256": sha, "state": entry.get("state"), "mime_type": entry.get("mime_type"),
           "file": entry.get("file"), "error": entry.get("error"), "thumbnail": None}
    data = media.get(str(entry.get("file"))) if entry.get("file") else None
    if data is not None and thumbnails:
        out["thumbnail"] = thumbnail(data, entry.get("mime_type"))
    return out


def _attach(line: dict[str, Any], tz: ZoneInfo, media: dict[str, bytes], thumbnails: bool,
            by_seq: dict[int, Event], by_wamid: dict[str, Event], threads: dict[str, Thread],
            others: list[Event]) -> None:
    """An edit, revoke, reaction, status or media record: under its message, else its own note."""
    kind, links = line["kind"], line.get("links") or {}
    content, when = line.get("content"), _when(line.get("occurred_at"), tz)
    msg = message_of(content)
    target: Event | None = None
    if kind in ("edit", "revoke"):
        orig = links.get("original")
        target = by_seq.get(orig) if isinstance(orig, int) else None
        if target is None:
            target = by_wamid.get(str(_dict(msg.get(kind)).get("original_message_id")))
    elif kind == "status":
        st = _dict(_dict(content).get("status"))
        ref = links.get("message")
        target = by_seq.get(ref) if isinstance(ref, int) else None
        target = target or by_wamid.get(str(st.get("id")))
    elif kind == "media":
        ref = links.get("message")
        target = by_seq.get(ref) if isinstance(ref, int) else None
    else:  # reaction
        target = by_wamid.get(str(_dict(msg.get("reaction")).get("message_id")))
    shredded = bool(line.get("shredded"))
    if target is None or target.shredded and not shredded and kind != "status":
        ev = Event(line["seq"], kind, "note", SENDER.get(kind, kind), when, _sort(line), line.get("type"),
                   shredded=shredded, hash=line["hash"])
        ev.detail = ("shredded: the data key was destroyed; no content" if shredded
                     else _orphan_detail(kind, line, msg))
        if kind == "media":
            ev.media = [_attachment(m, media, thumbnails) for m in line.get("media") or []]
        by_seq[ev.seq] = ev
        _place(ev, line.get("contact"), content, threads, others)
        return
    if kind == "edit":
        target.edits.append({"seq": line["seq"], "time": when, "shredded": shredded,
                             "text": None if shredded else body_text(msg)})
    elif kind == "revoke":
        target.revoked = {"seq": line["seq"], "time": when, "shredded": shredded,
                          "by": SENDER.get(str(_dict(content).get("kind")), "sender")}
    elif kind == "status":
        st = _dict(_dict(content).get("status"))
        state = str(st.get("status") or line.get("type") or "status")
        errors = [str(_dict(e).get("title") or _dict(e).get("code")) for e in st.get("errors") or []]
        target.statuses.append({"seq": line["seq"], "state": state, "shredded": shredded,
                                "time": _when(_epoch_iso(st.get("timestamp")) or line.get("occurred_at"), tz),
                                "error": ", ".join(errors) or None})
    elif kind == "media":
        attached = [_attachment(m, media, thumbnails) for m in line.get("media") or []]
        known = {m["sha256"] for m in target.media if m.get("sha256")}
        for a in attached:
            if a["sha256"] in known:  # the message named it: show the file in that slot
                for m in target.media:
                    if m.get("sha256") == a["sha256"] and not m.get("thumbnail"):
                        m.update(file=a["file"], thumbnail=a["thumbnail"], state=a["state"])
            else:
                target.media.append(a)
    else:
        emoji = _dict(msg.get("reaction")).get("emoji")
        target.reactions.append({"seq": line["seq"], "emoji": str(emoji) if emoji else "(removed)",
                                 "sender": SENDER.get(kind, kind), "time": when, "shredded": shredded})


def _orphan_detail(kind: str, line: dict[str, Any], msg: dict[str, Any]) -> str:
    if kind == "edit":
        return f"edit of a message not in this export; new text: {body_text(msg) or ''}"
    if kind == "revoke":
        return "revoke (deletion for everyone) of a message not in this export"
    if kind == "status":
        st = _dict(_dict(line.get("content")).get("status"))
        return f"status {st.get('status') or line.get('type')} of a message not in this export"
    if kind == "media":
        return "media file of a message not in this export"
    return f"reaction {_dict(msg.get('reaction')).get('emoji') or '(removed)'} to a message not in this export"


def chunks(threads: list[Thread], others: list[Event], size: int) -> Iterator[tuple[list[Thread], list[Event]]]:
    """The conversations cut into parts of about ``size`` events (a thread cut in two goes on,
    marked continued, in the next part), then the records of no contact. Always one part at least."""
    part: list[Thread] = []
    count, yielded = 0, False
    for t in threads:
        events, first = t.events, True
        while events:
            piece, events = events[:size - count], events[size - count:]
            part.append(Thread(t.contact, t.name, piece, continued=not first))
            first = False
            count += len(piece)
            if count >= size:
                yield part, []
                part, count, yielded = [], 0, True
    rest = others
    while rest or part or not yielded:
        room = size - count
        piece, rest = rest[:room], rest[room:]
        yield part, piece
        part, count, yielded = [], 0, True


# --------------------------------------------------------------------------- rendering

#: The PDF's metadata dates: fixed, so the unsigned transcript is deterministic (the
#: signature carries the signing time).
FIXED_DATE = "1980-01-01T00:00:00+00:00"
CHUNK_EVENTS = 1500  # events per part: a larger transcript is rendered in parts (parallel, merged)


def describe(selection: dict[str, Any]) -> str:
    """The selection as the cover states it."""
    by = selection.get("by")
    if by == "query":
        return f"search query: {selection.get('query')}"
    if by == "hold":
        return f"litigation hold {selection.get('hold')}"
    window = [f"from {selection['after']}" if selection.get("after") else "",
              f"before {selection['before']}" if selection.get("before") else ""]
    return " ".join([f"contact {selection.get('contact')}", *[w for w in window if w]])


def render(lines: list[dict[str, Any]], *, cover: dict[str, Any], tz: ZoneInfo, signer: Any = None,
           media: dict[str, bytes] | None = None, workers: int | None = None,
           chunk_events: int = CHUNK_EVENTS, on_pages: Callable[[int, int | None], None] | None = None) -> bytes:
    """The transcript PDF/A-3b of ``lines`` (``records.jsonl`` as dicts), signed when ``signer``.

    ``on_pages(pages, total)`` (``chunked.PagesSeen``) hears the pages rendered as it goes:
    after each merged part of a chunked rendering (``total`` None), and ``(N, N)`` at the end.

    ``cover``: ``selection`` (the manifest's), ``counts``, ``through_seq``. Nothing in it
    depends on who exports or when, so the unsigned bytes are a function of the selection,
    the archive's sealed state and ``tz`` (the signature, appended as an incremental update,
    carries the signing time). ``signer`` from ``sign.load_signer``, loaded (and so checked)
    by the caller before anything is rendered.
    """
    from archiver.pdf import chunked, render as pdf_render, sign

    threads, others = build(lines, tz=tz, media=media)
    shown = dict(cover, selection=describe(cover.get("selection") or {}), tz=tz.key)
    attachment = {"format": "archiver-transcript", "version": 1, "selection": cover.get("selection"),
                  "counts": cover.get("counts"), "through_seq": cover.get("through_seq"),
                  "tz": tz.key, "threads": {t.contact: [e.seq for e in t.events] for t in threads},
                  "others": [e.seq for e in others]}
    title = f"Transcript: {shown['selection']}"
    created = FIXED_DATE
    total = sum(len(t.events) for t in threads) + len(others)
    env = pdf_render.environment()
    template = env.get_template(TEMPLATE)

    def html(part: tuple[list[Thread], list[Event]], first: bool, numbered: bool) -> str:
        out = template.render(title=title, numbered=numbered, cover=shown if first else None,
                              threads=[t.as_dict() for t in part[0]], others=[e.as_dict() for e in part[1]])
        # text that was not valid UTF-8 (kept as surrogate escapes by jsonview): shown escaped
        return out.encode("utf-8", "backslashreplace").decode("utf-8")

    if total <= chunk_events:
        if on_pages is not None:
            on_pages(0, None)
        pdf = pdf_render.html_to_pdf(html((threads, others), True, True), attachment=attachment,
                                     attachment_name="transcript.json", title=title, created=created)
        if on_pages is not None:
            pages = chunked.page_count(pdf)
            on_pages(pages, pages)
    else:
        parts = (html(p, i == 0, False) for i, p in enumerate(chunks(threads, others, chunk_events)))
        if on_pages is not None:
            on_pages(0, None)
        pdf = chunked.render_parts(parts, workers=workers or chunked.default_workers(), attachment=attachment,
                                   attachment_name="transcript.json", title=title, created=created,
                                   on_pages=on_pages)
    if signer is None:
        return pdf
    return sign.sign_pdf(pdf, signer, reason="whatsapp-archiver: export transcript")
