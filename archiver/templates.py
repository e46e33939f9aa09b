"""Each message template's lifecycle, reconstructed from the archive (issue 11 point 3).

Two sources, both sealed records:

* the template webhooks (records of kind ``template_event``, their time ``entry.time``):
  ``message_template_status_update`` (status, and the category it states),
  ``message_template_quality_update`` (quality score), ``template_category_update``
  (a *completed* change, ``previous_category`` -> ``new_category``; an impending one only
  announces) and ``message_template_components_update`` (the approved wording);
* the Graph API snapshots (records of kind ``template``, ``archiver.template_sync``): the
  definition as Meta answered a sync, in force from the time it was read.

A template is a name; each language is its own translation with its own history
(``(name, language)``). :class:`Book` holds every event in time order; ``state_at`` folds
them up to a moment. A template the sync never saw has a history from its webhooks alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from archiver import records
from archiver.canonical import canonical, sha256_hex
from archiver.catalog import Record, TemplateReview, TemplateSend, TemplateSnapshot
from archiver.errors import NotFound
from archiver.services import Services

APPROVED = "APPROVED"
MARKETING, UTILITY = "MARKETING", "UTILITY"
_WEBHOOK_IDS = ("message_template_id", "message_template_name", "message_template_language")


@dataclass(frozen=True)
class Event:
    """One change of a template translation: what it set (None: unchanged) and the record proving it."""

    at: int
    seq: int
    source: str  # webhook field, or "sync"
    status: str | None = None
    category: str | None = None
    quality: str | None = None
    components: str | None = None  # SHA-256 of the wording (webhook value or Graph components)
    previous_category: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"at": self.at, "seq": self.seq, "source": self.source}
        for key in ("status", "category", "quality", "components", "previous_category"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out


@dataclass
class State:
    """A translation's state at a moment, and the records that decide each part."""

    status: str | None = None
    category: str | None = None
    quality: str | None = None
    components: str | None = None
    evidence: dict[str, int] = field(default_factory=dict)  # part -> seq

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status, "category": self.category, "quality": self.quality,
                "components": self.components, "evidence": dict(self.evidence)}


def _upper(value: Any) -> str | None:
    return value.upper() if isinstance(value, str) and value else None


def webhook_event(seq: int, at: int | None, payload: dict[str, Any]) -> tuple[tuple[str, str], Event] | None:
    """The event a ``template_event`` record's payload states (None: not a template change)."""
    value = payload.get("value")
    if not isinstance(value, dict) or not isinstance(value.get("message_template_name"), str):
        return None
    key = (value["message_template_name"], str(value.get("message_template_language") or ""))
    fld = str(payload.get("field") or "")
    when = int(at or 0)
    if fld == "message_template_status_update" or "event" in value:
        return key, Event(when, seq, fld or "message_template_status_update", status=_upper(value.get("event")),
                          category=_upper(value.get("message_template_category")))
    if fld == "message_template_quality_update" or "new_quality_score" in value:
        return key, Event(when, seq, fld, quality=_upper(value.get("new_quality_score")))
    if fld == "template_category_update" or "new_category" in value:
        if "previous_category" not in value:
            return None  # an impending change: it announces, it does not change the category
        return key, Event(when, seq, fld, category=_upper(value.get("new_category")),
                          previous_category=_upper(value.get("previous_category")))
    if fld == "message_template_components_update":
        wording = {k: v for k, v in value.items() if k not in _WEBHOOK_IDS}
        return key, Event(when, seq, fld, components=sha256_hex(canonical(wording)))
    return None


def components_sha(definition: dict[str, Any]) -> str:
    return sha256_hex(canonical(definition.get("components") or []))


def snapshot_event(row: TemplateSnapshot) -> Event:
    assert row.seq is not None
    return Event(row.synced_at, row.seq, "sync", status=_upper(row.status), category=_upper(row.category),
                 components=row.components_sha256)


@dataclass
class Book:
    """Every event of every template translation, in time order: (name, language) -> events."""

    events: dict[tuple[str, str], list[Event]] = field(default_factory=dict)
    snapshots: dict[tuple[str, str], list[TemplateSnapshot]] = field(default_factory=dict)

    def add(self, key: tuple[str, str], event: Event) -> None:
        self.events.setdefault(key, []).append(event)

    def sort(self) -> None:
        for evs in self.events.values():
            evs.sort(key=lambda e: (e.at, e.seq))
        for snaps in self.snapshots.values():
            snaps.sort(key=lambda s: (s.synced_at, s.seq or 0))

    def names(self) -> list[str]:
        return sorted({name for name, _ in self.events})

    def languages(self, name: str) -> list[str]:
        return sorted(lang for n, lang in self.events if n == name)

    def translation(self, name: str, lang: str | None) -> list[Event]:
        """The events of the send's language, else of every language of the template (a send
        naming "en" of an "en_GB" template, or none: its status and category are the template's)."""
        found = self.events.get((name, lang or ""))
        if found:
            return found
        merged = [e for (n, _), evs in self.events.items() if n == name for e in evs]
        return sorted(merged, key=lambda e: (e.at, e.seq))

    def state_at(self, name: str, lang: str | None, moment: int) -> State:
        """The translation's state at ``moment``: every event at or before it folded in order.
        The category of a template first heard of after ``moment`` is its earliest (it existed)."""
        events = self.translation(name, lang)
        state = State()
        for e in events:
            if e.at > moment:
                break
            for part in ("status", "category", "quality", "components"):
                if getattr(e, part) is not None:
                    setattr(state, part, getattr(e, part))
                    state.evidence[part] = e.seq
        if state.category is None:
            first = next((e for e in events if e.category is not None), None)
            if first is not None:
                state.category = first.previous_category or first.category
                state.evidence["category"] = first.seq
        return state

    def labelled(self, name: str, lang: str | None) -> tuple[str | None, int | None]:
        """The category the business gave the template: what Meta's first completed category
        change says it was before (``previous_category``), else the first category stated."""
        for e in self.translation(name, lang):
            if e.previous_category is not None:
                return e.previous_category, e.seq
            if e.category is not None:
                return e.category, e.seq
        return None, None

    def snapshot_at(self, name: str, lang: str | None, moment: int) -> TemplateSnapshot | None:
        """The sealed snapshot in force at ``moment``: the last synced at or before it."""
        found = self.snapshots.get((name, lang or "")) or []
        best = None
        for snap in found:
            if snap.synced_at <= moment and snap.seq is not None:
                best = snap
        return best

    def first_seen(self, name: str) -> int | None:
        times = [e.at for (n, _), evs in self.events.items() if n == name for e in evs]
        return min(times) if times else None


def load(services: Services) -> Book:
    """Every sealed template event and snapshot (they are few: read in full)."""
    book = Book()
    with services.sessions() as session:
        rows = session.execute(select(Record.seq, Record.occurred_at, Record.segment_id)
                               .where(Record.kind == "template_event").order_by(Record.seq)).all()
        plains = records.payloads(services, session, [(r.seq, r.segment_id) for r in rows]) if rows else {}
        snaps = list(session.scalars(select(TemplateSnapshot).where(TemplateSnapshot.seq.is_not(None))))
        session.expunge_all()
    for r in rows:
        found = webhook_event(r.seq, r.occurred_at, _json(plains.get(r.seq)))
        if found is not None:
            book.add(*found)
    for snap in snaps:
        key = (snap.name, snap.language)
        book.add(key, snapshot_event(snap))
        book.snapshots.setdefault(key, []).append(snap)
    book.sort()
    return book


def _json(plain: bytes | None) -> dict[str, Any]:
    if plain is None:
        return {}
    try:
        out = json.loads(plain)
    except ValueError:
        return {}
    return out if isinstance(out, dict) else {}


def sealed_reviews(session: Session, name: str | None = None) -> list[TemplateReview]:
    """Sealed reviews (a review acts only once sealed), oldest first."""
    q = select(TemplateReview).where(TemplateReview.seq.is_not(None))
    if name is not None:
        q = q.where(TemplateReview.name == name)
    return list(session.scalars(q.order_by(TemplateReview.reviewed_at, TemplateReview.id)))


def summary(book: Book, name: str, now: int, reviews: list[TemplateReview]) -> dict[str, Any]:
    """A template's state now per language, whether the sync saw it, and its last review."""
    langs = book.languages(name)
    last = reviews[-1] if reviews else None
    return {"name": name, "languages": {lang: book.state_at(name, lang, now).as_dict() for lang in langs},
            "synced": any(book.snapshots.get((name, lang)) for lang in langs),
            "first_seen": book.first_seen(name),
            "last_review": None if last is None else review_dict(last),
            "retired": last is not None and last.decision == "retire"}


def review_dict(row: TemplateReview) -> dict[str, Any]:
    return {"id": row.id, "decision": row.decision, "note": row.note, "by": row.actor,
            "at": row.reviewed_at, "seq": row.seq}


def list_templates(services: Services, now: int) -> list[dict[str, Any]]:
    book = load(services)
    with services.sessions() as session:
        reviews = sealed_reviews(session)
    by_name: dict[str, list[TemplateReview]] = {}
    for r in reviews:
        by_name.setdefault(r.name, []).append(r)
    return [summary(book, name, now, by_name.get(name, [])) for name in book.names()]


def show(services: Services, name: str, language: str | None, now: int) -> dict[str, Any]:
    """One template's history per language, its snapshots, reviews and sends (each bound to
    the snapshot in force when sent). Raises NotFound."""
    book = load(services)
    langs = [lang for lang in book.languages(name) if language is None or lang == language]
    if not langs:
        raise NotFound(f"no template {name!r}" + (f" in language {language!r}" if language else ""),
                       hint="'archiver templates list' lists the templates the archive knows")
    with services.sessions() as session:
        reviews = sealed_reviews(session, name)
        q = select(TemplateSend).where(TemplateSend.name == name)
        sends = list(session.scalars(q.order_by(TemplateSend.sent_at, TemplateSend.wamid)))
    out = summary(book, name, now, reviews)
    out["languages"] = {lang: {"now": book.state_at(name, lang, now).as_dict(),
                               "history": [e.as_dict() for e in book.events.get((name, lang), [])],
                               "snapshots": [{"seq": s.seq, "sha256": s.sha256, "synced_at": s.synced_at,
                                              "status": s.status, "category": s.category}
                                             for s in book.snapshots.get((name, lang), [])]}
                        for lang in langs}
    out["reviews"] = [review_dict(r) for r in reviews]
    out["sends"] = [{"wamid": s.wamid, "record_seq": s.record_seq, "language": s.language, "sent_at": s.sent_at,
                     "snapshot_seq": s.snapshot_seq, "status": s.status, "category": s.category}
                    for s in sends if language is None or (s.language or "") == language]
    return out
