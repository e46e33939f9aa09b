"""Generate a deterministic synthetic WhatsApp corpus (``scripts/gen-corpus``; the search benchmark).

Deliveries as Meta and a CRM would send them, in arrival order: inbound customer messages
(text, captioned images, documents, videos, voice notes, stickers, locations, button
replies, reactions), app echoes (``smb_message_echoes``), Cloud API sends captured through
the capture API (text, templates, documents), history-sync batches of older chats, statuses
of API sends (some out of order, a few failed), edits and revokes of earlier messages. Text
is in English, French, German, Spanish, Portuguese, Arabic, Chinese, Japanese and Russian,
with emoji; contacts are many, a few of them busy; times spread over twelve months
(2025-11-01 to 2026-11-01 UTC): history before the 2026-01-01 onboarding, live traffic after.

The same ``--n`` and ``--seed`` give byte-identical deliveries. ``--n`` counts messages
(inbound, echo, API send, history); statuses, edits and revokes come on top.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import json
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from corpus_text import CAPTIONS, DOCUMENT_NAMES, EMOJI, LANGUAGES, TEMPLATES

START = int(datetime(2025, 11, 1, tzinfo=timezone.utc).timestamp())
ONBOARDING = int(datetime(2026, 1, 1, tzinfo=timezone.utc).timestamp())
END = int(datetime(2026, 11, 1, tzinfo=timezone.utc).timestamp())
LINES = (("15550009999", "109987654321098"), ("15550008888", "109987654321099"))
WABA = "102290129340398"
HISTORY_SHARE, HISTORY_BATCH = 0.12, 50
LIVE_KINDS = (("inbound", 51), ("echo", 20), ("api", 29))
INBOUND_TYPES = (("text", 770), ("image", 60), ("document", 40), ("audio", 40), ("video", 10), ("sticker", 10),
                 ("location", 10), ("button", 40), ("reaction", 20))
EDIT_RATE, REVOKE_RATE = 0.012, 0.006

Delivery = tuple[str, bytes, int]
"""(journal source, raw body, epoch seconds it arrived)."""


@dataclass(frozen=True)
class Contact:
    """A customer: phone (wa_id), display name, language and the business line they write to."""

    phone: str
    name: str
    lang: str
    line: int


def contacts(count: int, rng: random.Random) -> list[Contact]:
    """``count`` contacts; contact 0 (the busiest) writes English."""
    langs = list(LANGUAGES)
    weights = [int(LANGUAGES[lang]["weight"]) for lang in langs]  # type: ignore[call-overload]
    out = []
    for i in range(count):
        lang = "en" if i == 0 else rng.choices(langs, weights)[0]
        spec = LANGUAGES[lang]
        code, digits = spec["calling"]  # type: ignore[misc]
        number = f"{(i * 7919 + 104729) % 10 ** digits:0{digits}d}"  # distinct for i < 10**digits
        first, last = rng.choice(spec["first"]), rng.choice(spec["last"])  # type: ignore[arg-type]
        name = f"{last}{first}" if lang in ("zh", "ja") else f"{first} {last}"  # family name first, no space
        out.append(Contact(f"{code}{number}", name, lang, i % len(LINES)))
    return out


class Corpus:
    """The deliveries of a corpus of ``n`` messages, generated on the fly in arrival order."""

    def __init__(self, n: int, seed: int = 1) -> None:
        self.n, self.rng = n, random.Random(seed)
        self.contacts = contacts(max(50, n // 40), self.rng)
        self.counts: Counter[str] = Counter()
        self._later: list[tuple[int, int, Delivery]] = []  # (due live index, tie-break, delivery)
        self._serial = 0

    @property
    def busiest(self) -> Contact:
        """The contact with the most messages."""
        return self.contacts[0]

    # --- the stream ---------------------------------------------------------------------------

    def deliveries(self) -> Iterator[Delivery]:
        """Every delivery in arrival order."""
        history = round(self.n * HISTORY_SHARE)
        live = self.n - history
        batches = -(-history // HISTORY_BATCH)
        # History arrives in the first 5% of live traffic, right after onboarding.
        slots = {round(i * live * 0.05 / max(batches, 1)): i for i in range(batches)}
        kinds, weights = zip(*LIVE_KINDS)
        for j in range(live):
            t = ONBOARDING + (END - ONBOARDING) * j // max(live, 1) + self.rng.randrange(60)
            yield from self._due(j)
            if j in slots:
                yield self._history(slots[j], min(HISTORY_BATCH, history - slots[j] * HISTORY_BATCH), t)
            yield getattr(self, "_" + self.rng.choices(kinds, weights)[0])(j, t)
        yield from self._due(None)

    def _due(self, j: int | None) -> Iterator[Delivery]:
        while self._later and (j is None or self._later[0][0] <= j):
            yield heapq.heappop(self._later)[2]

    def _schedule(self, after: int, delivery: Delivery) -> None:
        self._serial += 1
        heapq.heappush(self._later, (after, self._serial, delivery))

    # --- text ---------------------------------------------------------------------------------

    def text(self, lang: str) -> str:
        """One message: one to three sentences (rarely a long one), sometimes an emoji."""
        r = self.rng.random()
        count = 1 if r < 0.6 else 2 if r < 0.9 else 3 if r < 0.99 else self.rng.randrange(8, 25)
        sentences: list[str] = LANGUAGES[lang]["sentences"]  # type: ignore[assignment]
        sep = "" if lang in ("zh", "ja") else " "
        body = sep.join(self._fill(self.rng.choice(sentences)) for _ in range(count))
        return body + " " + self.rng.choice(EMOJI) if self.rng.random() < 0.12 else body

    def _fill(self, template: str) -> str:
        order = self.rng.randrange(10000, 999999)
        amount = f"{self.rng.randrange(5, 900)}.{self.rng.randrange(100):02d}"
        return template.format(order=order, amount=amount,
                               time=f"{self.rng.randrange(8, 19)}:{self.rng.choice(('00', '15', '30', '45'))}")

    def contact(self) -> Contact:
        """A contact, skewed so that a few write a lot."""
        return self.contacts[int(len(self.contacts) * self.rng.random() ** 2)]

    def wamid(self, kind: str) -> str:
        self._serial += 1
        raw = hashlib.sha256(f"{kind}{self._serial}".encode()).digest()[:18]
        return "wamid.HBgL" + base64.b64encode(raw).decode().rstrip("=")

    # --- deliveries ---------------------------------------------------------------------------

    def _inbound(self, j: int, t: int) -> Delivery:
        c = self.contact()
        mtype = self.rng.choices(*zip(*INBOUND_TYPES))[0]
        msg = {"from": c.phone, "id": self.wamid("in"), "timestamp": str(t), "type": mtype, **self._content(mtype, c)}
        self.counts["inbound"] += 1
        if mtype == "text":
            self._maybe_change(j, t, c, msg["id"], echo=False)
        return self._webhook(c, "messages", "messages", [msg], t)

    def _content(self, mtype: str, c: Contact) -> dict[str, Any]:
        if mtype == "text":
            return {"text": {"body": self.text(c.lang)}}
        if mtype in CAPTIONS or mtype in ("audio", "sticker"):
            return {mtype: self._media(mtype, c)}
        if mtype == "location":
            return {"location": {"latitude": 48.85, "longitude": 2.35, "name": "Main Street 5",
                                 "address": "Main Street 5"}}
        if mtype == "button":
            return {"button": {"payload": "CONFIRM", "text": self.rng.choice(["Yes, confirm", "Reschedule", "Stop"])}}
        return {"reaction": {"message_id": self.wamid("x"), "emoji": self.rng.choice(EMOJI)}}

    def _media(self, mtype: str, c: Contact) -> dict[str, Any]:
        mime = CAPTIONS.get(mtype, ("audio/ogg; codecs=opus", ""))[0] if mtype != "sticker" else "image/webp"
        obj: dict[str, Any] = {"mime_type": mime, "sha256": base64.b64encode(self.rng.randbytes(32)).decode(),
                               "id": str(self.rng.randrange(10 ** 15, 10 ** 16))}
        if mtype == "document":
            obj["filename"] = self._fill(self.rng.choice(DOCUMENT_NAMES))
        if mtype in CAPTIONS and self.rng.random() < 0.7:
            obj["caption"] = self.text(c.lang)
        return obj

    def _echo(self, j: int, t: int) -> Delivery:
        c = self.contact()
        business = LINES[c.line][0]
        msg: dict[str, Any] = {"from": business, "to": c.phone, "id": self.wamid("echo"), "timestamp": str(t)}
        if self.rng.random() < 0.1:
            msg.update(type="image", image=self._media("image", c))
        else:
            msg.update(type="text", text={"body": self.text(c.lang)})
        self.counts["echo"] += 1
        self._maybe_change(j, t, c, msg["id"], echo=True)
        return self._webhook(c, "smb_message_echoes", "message_echoes", [msg], t)

    def _api(self, j: int, t: int) -> Delivery:
        c = self.contact()
        request: dict[str, Any] = {"messaging_product": "whatsapp", "recipient_type": "individual", "to": "+" + c.phone}
        r = self.rng.random()
        if r < 0.35:
            request.update(type="template", template={
                "name": self.rng.choice(TEMPLATES), "language": {"code": c.lang},
                "components": [{"type": "body", "parameters": [{"type": "text", "text": c.name},
                                                               {"type": "text", "text": self._fill("{order}")}]}]})
        elif r < 0.4:
            name = self._fill(self.rng.choice(DOCUMENT_NAMES))
            request.update(type="document", document={"link": f"https://files.example.com/{name}", "filename": name,
                                                      "caption": self.text(c.lang)})
        else:
            request.update(type="text", text={"body": self.text(c.lang)})
        wamid = self.wamid("api")
        response = {"messaging_product": "whatsapp", "contacts": [{"input": "+" + c.phone, "wa_id": c.phone}],
                    "messages": [{"id": wamid}]}
        sent_at = datetime.fromtimestamp(t, timezone.utc).isoformat().replace("+00:00", "Z")
        body = {"request": request, "response": response, "sender": "crm-bot", "sent_at": sent_at,
                "phone_number_id": LINES[c.line][1]}
        self.counts["api"] += 1
        self._statuses(j, t, c, wamid)
        return ("capture_message", _dumps(body), t)

    def _statuses(self, j: int, t: int, c: Contact, wamid: str) -> None:
        """What Meta reports on a send: sent, delivered, read, or failed; a few out of order."""
        states = [s for s, p in (("sent", 0.3), ("delivered", 0.55), ("read", 0.35)) if self.rng.random() < p]
        if self.rng.random() < 0.02:
            states = ["sent", "failed"]
        if len(states) > 1 and self.rng.random() < 0.15:
            states.reverse()
        for k, state in enumerate(states):
            conversation = hashlib.sha256(c.phone.encode()).hexdigest()[:32]
            st = {"id": wamid, "status": state, "timestamp": str(t + 5 + 60 * k), "recipient_id": c.phone,
                  "conversation": {"id": conversation, "origin": {"type": "service"}},
                  "pricing": {"billable": True, "pricing_model": "PMP", "category": "service", "type": "regular"}}
            self.counts["status"] += 1
            due = j + 1 + k * 7 + self.rng.randrange(40)
            self._schedule(due, self._webhook(c, "messages", "statuses", [st], t + 60 * k))

    def _maybe_change(self, j: int, t: int, c: Contact, original: str, *, echo: bool) -> None:
        """Now and then an edit (within minutes) or a revoke (within hours) of this message."""
        r = self.rng.random()
        if r >= EDIT_RATE + REVOKE_RATE:
            return
        kind = "edit" if r < EDIT_RATE else "revoke"
        later = t + (self.rng.randrange(30, 900) if kind == "edit" else self.rng.randrange(60, 7200))
        msg: dict[str, Any] = {"id": self.wamid(kind), "timestamp": str(later), "type": kind}
        if kind == "edit":
            msg["edit"] = {"original_message_id": original,
                           "message": {"type": "text", "text": {"body": self.text(c.lang)}}}
        else:
            msg["revoke"] = {"original_message_id": original}
        if echo:
            msg.update({"from": LINES[c.line][0], "to": c.phone})
        else:
            msg["from"] = c.phone
        self.counts[kind] += 1
        field, key = ("smb_message_echoes", "message_echoes") if echo else ("messages", "messages")
        self._schedule(j + 1 + self.rng.randrange(200), self._webhook(c, field, key, [msg], later))

    def _history(self, batch: int, size: int, t: int) -> Delivery:
        """One history-sync chunk: ``size`` older messages in threads of a few contacts."""
        threads: dict[str, list[dict[str, Any]]] = {}
        line = batch % len(LINES)
        business = LINES[line][0]
        for _ in range(size):
            c = self.contact()
            when = START + self.rng.randrange(ONBOARDING - START)
            msg: dict[str, Any] = {"id": self.wamid("hist"), "timestamp": str(when), "type": "text",
                                   "text": {"body": self.text(c.lang)},
                                   "history_context": {"status": self.rng.choice(["READ", "DELIVERED", "SENT"])}}
            if self.rng.random() < 0.4:
                msg.update({"from": business, "to": c.phone})
            else:
                msg["from"] = c.phone
            threads.setdefault(c.phone, []).append(msg)
        self.counts["history"] += size
        chunk = {"metadata": {"phase": 1, "chunk_order": batch + 1, "progress": 50},
                 "threads": [{"id": phone, "messages": msgs} for phone, msgs in threads.items()]}
        value = {"messaging_product": "whatsapp", "metadata": _metadata(line), "history": [chunk]}
        return ("webhook", _envelope("history", value), t)

    def _webhook(self, c: Contact, field: str, key: str, elements: list[dict[str, Any]], t: int) -> Delivery:
        value = {"messaging_product": "whatsapp", "metadata": _metadata(c.line),
                 "contacts": [{"profile": {"name": c.name}, "wa_id": c.phone}], key: elements}
        return ("webhook", _envelope(field, value), t)


def _metadata(line: int) -> dict[str, str]:
    return {"display_phone_number": LINES[line][0], "phone_number_id": LINES[line][1]}


def _envelope(field: str, value: dict[str, Any]) -> bytes:
    return _dumps({"object": "whatsapp_business_account",
                   "entry": [{"id": WABA, "changes": [{"field": field, "value": value}]}]})


def _dumps(obj: Any) -> bytes:
    # Meta escapes non-ASCII (\uXXXX) and writes no spaces.
    return json.dumps(obj, separators=(",", ":")).encode()
