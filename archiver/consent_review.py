"""The consent-revocation review: marketing sent to a contact whose marketing consent was not valid.

A run (job ``consent-review``, hourly by default in ``policies/schedule.yaml``; ``archiver
review consent``) first brings the consent ledger up to date (``consent.sync``), then:

1. reads the records sealed since its cursor (incremental) for *marketing sends*, one per
   wamid (``marketing_sends``):

   * an ``outbound`` (capture API) or ``echo`` record of a template whose category was
     ``MARKETING`` at send time: the category of the template's latest status event
     (``message_template_status_update``) at or before the send, changed by a completed
     ``template_category_update`` after it (the earliest event after the send when none
     came before: the template existed); the send's evidence names those event records;
   * a ``status`` whose ``pricing.category`` is ``marketing`` (Meta billed it as marketing):
     the message record of its wamid when archived, else the status itself;

2. checks each new send against the ledger at its send time (``consent.state_at``, category
   ``marketing``): not valid is a violation, a ``finding`` (kind ``consent``, rule
   ``marketing-without-consent``) naming the message record (``record_seq``) and, as
   evidence, the send's records and the ledger lines that decided (their sealed records);

3. re-checks the sends of the people who gained an opt-out line since the last run (events
   arrive out of order: a STOP stamped before a send can be sealed after it was reviewed);
   ``--since`` re-checks every send since that date.

A finding is keyed by the wamid: a re-run finds nothing twice. The run's summary (counts,
finding ids, the cursor reached) is sealed as its ``job_run`` record by ``archiver.jobs``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from archiver import consent, findings, identity, records, templates
from archiver.catalog import MarketingSend, Record, cursor_value, leader_lock, set_cursor
from archiver.retention_policy import identifier
from archiver.services import Services

log = logging.getLogger(__name__)

JOB = "consent-review"
CRON = "0 * * * *"
CURSOR = "consent-review"  # the last record seq read for sends
LEDGER_CURSOR = "consent-review-ledger"  # the last ledger line re-checked
RULE = "marketing-without-consent"
BATCH = 5000
SEND_KINDS = ("outbound", "echo", "status")
MARKETING = "MARKETING"


@dataclass
class TemplateBook:
    """Each template's category over time, as the template lifecycle says (``archiver.templates``:
    status and category webhooks, completed category changes, Graph API snapshots)."""

    book: templates.Book = field(default_factory=templates.Book)
    _sorted: bool = True

    def add(self, seq: int, at: int | None, value: dict[str, Any]) -> None:
        found = templates.webhook_event(seq, at, {"value": value})
        if found is not None:
            self.book.add(*found)
            self._sorted = False

    def category_at(self, name: str, lang: str | None, moment: int) -> tuple[str | None, list[int]]:
        """The template's category at ``moment`` and the event record that says so (before any
        event: the first it had; a send naming another language code of it: the template's)."""
        if not self._sorted:
            self.book.sort()
            self._sorted = True
        state = self.book.state_at(name, lang, moment)
        if state.category is None:
            return None, []
        return state.category, [state.evidence["category"]]


@dataclass(frozen=True)
class Send:
    """A marketing send as the check reads it (a detached copy of its ``marketing_sends`` row)."""

    wamid: str
    record_seq: int
    contact: str
    sent_at: int
    via: str
    evidence: tuple[int, ...]

    @classmethod
    def of(cls, row: MarketingSend) -> Send:
        return cls(row.wamid, row.record_seq, row.contact, row.sent_at, row.via, tuple(row.evidence))


@dataclass
class Run:
    """What one run did (its ``job_run`` summary)."""

    records: int = 0
    sends: int = 0
    rechecked: int = 0
    found: list[str] = field(default_factory=list)
    through: int = 0

    def summary(self) -> dict[str, Any]:
        return {"records": self.records, "marketing_sends": self.sends, "rechecked": self.rechecked,
                "findings": len(self.found), "finding_ids": self.found, "through": self.through}


def review(services: Services, since: int | None = None) -> dict[str, Any]:
    """One run of the review; its summary. Single instance (``leader_lock``)."""
    run = Run()
    with leader_lock(services.engine, JOB) as leader:
        if not leader:
            return {"skipped": "running elsewhere"}
        facts = SendFacts()
        consent.sync(services, facts)  # the send candidates read with the ledger's records
        book = _templates(services)
        while _read_sends(services, book, run, facts):
            pass
        _recheck_ledger(services, run)
        if since is not None:
            with services.sessions() as session:
                sends = [Send.of(m) for m in session.scalars(select(MarketingSend).where(MarketingSend.sent_at >= since))]
            run.rechecked += len(sends)
            _check(services, sends, run)
        findings.settle(services)
    log.info("review.consent records=%d sends=%d findings=%d", run.records, run.sends, len(run.found))
    return run.summary()


def _templates(services: Services) -> TemplateBook:
    """Every sealed template event and snapshot (they are few: read in full each run)."""
    return TemplateBook(templates.load(services))


def _json(plain: bytes | None) -> dict[str, Any]:
    if plain is None:
        return {}
    try:
        out = json.loads(plain)
    except ValueError:
        return {}
    return out if isinstance(out, dict) else {}


Fact = tuple[str, str | None]  # a status billed marketing: ("status", None); a template send: (name, language)
STATUS: Fact = ("status", None)


def _fact(kind: str, payload: dict[str, Any]) -> Fact | None:
    """What the check needs of a send candidate's payload (None: it cannot be a marketing send)."""
    if kind == "status":
        pricing = (payload.get("status") or {}).get("pricing") or {}
        return STATUS if isinstance(pricing, dict) and str(pricing.get("category", "")).lower() == "marketing" else None
    return _template_of(kind, payload)


@dataclass
class SendFacts:
    """A ``consent.Rider``: the send candidates of the records the ledger sync reads, read in the
    same pass (each segment once per full review); only the few that can be marketing are kept."""

    covered: list[tuple[int, int]] = field(default_factory=list)  # seq ranges (after, upto] read
    facts: dict[int, Fact] = field(default_factory=dict)
    _kinds: dict[int, str] = field(default_factory=dict)

    def wanted(self, session: Session, after: int, upto: int) -> list[tuple[int, int]]:
        rows = session.execute(select(Record.seq, Record.kind, Record.type, Record.segment_id)
                               .where(Record.seq > after, Record.seq <= upto, Record.kind.in_(SEND_KINDS))).all()
        picked = [r for r in rows if _candidate(r)]
        self._kinds = {r.seq: r.kind for r in picked}
        return [(r.seq, r.segment_id) for r in picked]

    def take(self, plains: dict[int, bytes | None], after: int, upto: int) -> None:
        for seq, kind in self._kinds.items():
            if seq in plains and (fact := _fact(kind, _json(plains[seq]))) is not None:
                self.facts[seq] = fact
        self._kinds = {}
        self.covered.append((after, upto))

    def has(self, seq: int) -> bool:
        return any(lo < seq <= hi for lo, hi in self.covered)


def _candidate(r: Any) -> bool:
    """A record whose payload may make it a marketing send: a status, or a template sent."""
    return bool(r.kind == "status" or r.type == "template")


def _read_sends(services: Services, book: TemplateBook, run: Run, read: SendFacts | None = None) -> bool:
    """One batch of new records; True when there may be more. ``read``: the candidates read already."""
    read = read if read is not None else SendFacts()
    with services.sessions() as session:
        after = cursor_value(session, CURSOR)
        through = cursor_value(session, consent.CURSOR)  # the ledger has read this far
        rows = session.execute(
            select(Record.seq, Record.kind, Record.type, Record.wamid, Record.contact, Record.occurred_at,
                   Record.segment_id)
            .where(Record.seq > after, Record.seq <= through, Record.kind.in_(SEND_KINDS))
            .order_by(Record.seq).limit(BATCH)).all()
        wanted = [(r.seq, r.segment_id) for r in rows if _candidate(r) and not read.has(r.seq)]
        plains = records.payloads(services, session, wanted) if wanted else {}
    facts = {r.seq: read.facts[r.seq] for r in rows if r.seq in read.facts}
    for r in rows:
        if r.seq in plains and (fact := _fact(r.kind, _json(plains[r.seq]))) is not None:
            facts[r.seq] = fact
    upto = rows[-1].seq if len(rows) == BATCH else through
    new: list[Send] = []
    with services.sessions.begin() as session:
        if cursor_value(session, CURSOR) != after:
            return True
        wamids = sorted({r.wamid for r in rows if r.seq in facts and r.wamid is not None})
        known = _known(session, wamids)
        for r in rows:
            if r.wamid is None or r.contact is None or r.occurred_at is None or r.seq not in facts:
                continue
            send = _marketing(session, r, facts[r.seq], book, known)
            if send is not None:
                new.append(Send.of(send))
        if upto > after:
            set_cursor(session, CURSOR, upto)
    run.records += len(rows)
    run.sends += len(new)
    run.through = max(run.through, upto)
    _check(services, new, run)
    return len(rows) == BATCH


@dataclass
class Known:
    """What a batch's wamids already have: their marketing sends, and their sent messages."""

    sends: dict[str, MarketingSend]
    messages: dict[str, Any]


def _known(session: Session, wamids: list[str]) -> Known:
    out = Known({}, {})
    for start in range(0, len(wamids), 500):
        part = wamids[start:start + 500]
        out.sends.update((m.wamid, m) for m in session.scalars(select(MarketingSend).where(
            MarketingSend.wamid.in_(part))))
        # By wamid alone, the kind checked here: with the kind in the query SQLite walks the
        # kind index (every outbound and echo record, for each batch) instead of the wamid one.
        found = session.execute(select(Record.wamid, Record.seq, Record.occurred_at, Record.kind)
                                .where(Record.wamid.in_(part))).all()
        for row in sorted(found, key=lambda r: r.seq, reverse=True):
            if row.kind in ("outbound", "echo"):
                out.messages[row.wamid] = row  # the first (lowest seq) wins
    return out


def _marketing(session: Session, r: Any, fact: Fact, book: TemplateBook,
               known_in_batch: Known) -> MarketingSend | None:
    """The marketing send record ``r`` makes known (None: not marketing, or known already);
    ``fact``: what its payload says (``_fact``)."""
    evidence = [r.seq]
    if r.kind == "status":
        message = known_in_batch.messages.get(r.wamid)  # every sealed record of the batch's wamids was read
        record_seq = message.seq if message is not None else r.seq
        sent_at = message.occurred_at if message is not None and message.occurred_at else r.occurred_at
        via = "status"
        if message is not None:
            evidence.append(message.seq)
    else:
        category, seqs = book.category_at(fact[0], fact[1], r.occurred_at)
        if category != MARKETING:
            return None
        record_seq, sent_at, via = r.seq, r.occurred_at, "capture" if r.kind == "outbound" else "echo"
        evidence.extend(seqs)
    known = known_in_batch.sends.get(r.wamid)
    if known is not None:
        known.evidence = sorted(set(known.evidence) | set(evidence))
        return None
    send = MarketingSend(wamid=r.wamid, record_seq=record_seq, contact=identifier(r.contact), sent_at=sent_at,
                         via=via, evidence=sorted(set(evidence)))
    session.add(send)
    known_in_batch.sends[r.wamid] = send  # a status and its message in one batch name one wamid
    return send


def _template_of(kind: str, payload: dict[str, Any]) -> tuple[str, str | None] | None:
    """(name, language code) of the template a capture or echo sent."""
    if kind == "outbound":
        msg = ((payload.get("capture") or {}).get("request")) or {}
    else:
        msg = payload.get("message") or {}
    template = msg.get("template") if isinstance(msg, dict) else None
    if not isinstance(template, dict) or not isinstance(template.get("name"), str):
        return None
    lang = template.get("language")
    code = lang.get("code") if isinstance(lang, dict) else lang
    return template["name"], code if isinstance(code, str) else None


def _check(services: Services, sends: Iterable[Send], run: Run) -> None:
    """Raise a finding for each send made while marketing consent was not valid."""
    by_contact: dict[str, list[Send]] = {}
    for send in sends:
        by_contact.setdefault(send.contact, []).append(send)
    with services.sessions.begin() as session:
        require = consent.require_opt_in(session)
        checked: list[tuple[Send, dict[str, Any]]] = []
        for contact, theirs in by_contact.items():  # each person's ledger read once
            states = consent.states_at(session, contact, "marketing", [s.sent_at for s in theirs], require)
            checked.extend(zip(theirs, states))
        batch = findings.Batch(session)
        for send, state in checked:
            if state["valid"]:
                continue
            evidence = list(send.evidence) + state["deciding_seqs"]
            detail = {"wamid": send.wamid, "sent_at": state["time"], "via": send.via, "reason": state["reason"],
                      "ledger_entries": [e["id"] for e in state["deciding"]],
                      "revoked_by": state["deciding_seqs"][0] if state["deciding_seqs"] else None}
            batch.add("consent", RULE, send.wamid, record_seq=send.record_seq, evidence=evidence,
                      contact=send.contact, detail=detail)
        run.found.extend(row.id for row in batch.flush())


def _recheck_ledger(services: Services, run: Run) -> None:
    """Re-check the sends of everyone with a new opt-out line (stamped before sends already read)."""
    while True:
        with services.sessions() as session:
            after = cursor_value(session, LEDGER_CURSOR)
            lines = consent.lines_after(session, after)
            sends: dict[str, Send] = {}
            for line in lines:
                if line.action != "opt_out":
                    continue
                ids = identity.resolve(session, line.contact)
                for send in session.scalars(select(MarketingSend).where(
                        MarketingSend.contact.in_(sorted(ids)), MarketingSend.sent_at >= line.occurred_at)):
                    sends[send.wamid] = Send.of(send)
        if not lines:
            return
        run.rechecked += len(sends)
        _check(services, sends.values(), run)
        with services.sessions.begin() as session:
            set_cursor(session, LEDGER_CURSOR, lines[-1].id)
