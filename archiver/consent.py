"""The consent ledger: append-only, per person and category, every line proven by a sealed record.

Sources (each a sealed record; the ledger line names its seq, ``record_seq``):

* ``user_preferences`` webhooks (``consent`` items): ``stop`` is an opt-out, ``resume`` and
  ``signup`` opt-ins; category ``marketing_messages`` is the ledger's ``marketing``;
* the consent API (``POST /api/v1/consent``, ``consent`` items): ``opt_in`` / ``opt_out`` of
  its ``scope``;
* opt-out keywords in a customer's message (``message`` items), per ``policies/consent.yaml``
  (``consent_policy``): a match is a *detected* opt-out (source ``keyword``). It revokes
  consent from the message's time at once, unless a person dismisses it; a person confirms
  or dismisses it with a sealed ``decision`` record (events ``consent_opt_out_confirmed`` /
  ``consent_opt_out_dismissed``), which becomes a ``confirm`` / ``dismiss`` line naming the
  message (``refers_to``).

:func:`sync` reads the records sealed (and stored in WORM) after its cursor and appends their
lines; it never changes or deletes one. Keyword detection uses the version of
``consent.yaml`` whose ``policy`` record was sealed last before the message (the first
version for messages sealed before any: the ledger journals the file when it first runs).

The state at a time T (:func:`state_at`) is decided by the event times the evidence states,
never by arrival order: the latest opt-in or opt-out at or before T (a dismissed detection
does not count; of lines at the same second an opt-out wins, then the higher seq) among the
lines of every identifier of the person (``identity.resolve``). So events out of order, or
duplicated, give the same state at every T. Without any line, consent is valid unless
``consent.yaml`` says ``require_opt_in: true``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from archiver import identity, policy_records, records
from archiver.canonical import canonical
from archiver.catalog import ConsentEntry, Journal, Record, cursor_value, leader_lock, set_cursor, stored_through
from archiver.consent_policy import ConsentPolicy
from archiver.errors import ArchiverError, NotFound, ValidationError
from archiver.journal import append_delivery
from archiver.retention_policy import identifier
from archiver.services import Services

log = logging.getLogger(__name__)

CURSOR = "consent"
ACTOR = "archiver:consent"
CONFIRMED, DISMISSED = "consent_opt_out_confirmed", "consent_opt_out_dismissed"
DECISIONS = {"confirm": CONFIRMED, "dismiss": DISMISSED}
BATCH = 5000  # records read per step (a segment is read once per step that needs it)
WAIT_SECONDS = 30.0
_CHOICES = {"stop": "opt_out", "resume": "opt_in", "signup": "opt_in", "opt_in": "opt_in", "opt_out": "opt_out"}


class DetectionDecided(ArchiverError):
    code = "already-decided"
    http_status = 409


class DecisionPending(ArchiverError):
    """The decision is journaled (and will be applied) but was not sealed in time."""

    code = "decision-pending"
    http_status = 503
    hint = "the decision is journaled: the background jobs seal it and the ledger applies it; do not repeat it"


def category_of(name: str) -> str:
    """The ledger category of a webhook's or the API's category (``marketing_messages`` -> ``marketing``)."""
    name = name.strip().lower()
    return name[: -len("_messages")] if name.endswith("_messages") else name


# --------------------------------------------------------------------------- building the ledger


class Rider(Protocol):
    """More records read with the ledger's batches (``consent_review``'s send scan): each
    segment is then fetched, decompressed and decrypted once for both."""

    def wanted(self, session: Session, after: int, upto: int) -> list[tuple[int, int]]:
        """(seq, segment id) of the records in seqs (after, upto] to read with this batch."""

    def take(self, plains: dict[int, bytes | None], after: int, upto: int) -> None:
        """The batch's plaintexts (the ledger's records too; those of a deleted segment absent)."""


def sync(services: Services, rider: Rider | None = None) -> int:
    """Append the lines of every record sealed since the last sync; return how many.

    Single instance (``leader_lock``; 0 when another process syncs). Journals (and seals)
    ``consent.yaml`` first when its version changed. ``rider``: more records to read with
    each batch. Raises PolicyError, StoreError.
    """
    with leader_lock(services.engine, "consent") as leader:
        if not leader:
            return 0
        _seal_consent_policy(services)
        added = 0
        last = records.LastSegment()  # the segment two batches share is read once
        while True:
            with services.sessions() as session:
                after = cursor_value(session, CURSOR)
                through = stored_through(session)
                rows = session.execute(
                    select(Record.seq, Record.kind, Record.type, Record.contact, Record.occurred_at, Record.segment_id)
                    .where(Record.seq > after, Record.seq <= through,
                           (Record.kind.in_(("consent", "message")))
                           | ((Record.kind == "decision") & Record.type.in_((CONFIRMED, DISMISSED))))
                    .order_by(Record.seq).limit(BATCH)).all()
                upto = rows[-1].seq if len(rows) == BATCH else through
                wanted = [(r.seq, r.segment_id) for r in rows]
                if rider is not None and upto > after:
                    wanted += rider.wanted(session, after, upto)
                plains = records.payloads(services, session, wanted, last) if wanted else {}
                versions = policy_records.consent_versions(session)
            if rider is not None and upto > after:
                rider.take(plains, after, upto)
            lines = [line for r in rows for line in _lines(r, plains.get(r.seq), versions)]
            with services.sessions.begin() as session:
                if cursor_value(session, CURSOR) != after:
                    continue  # another process moved it (it held the lock before us)
                for line in lines:
                    session.add(ConsentEntry(**line))
                if upto > after:
                    set_cursor(session, CURSOR, upto)
            added += len(lines)
            if len(rows) < BATCH:
                return added


def _seal_consent_policy(services: Services) -> None:
    """Journal ``consent.yaml`` if its version changed, and have it sealed before it is used (the
    retention policy too: on an archive never sealed, it must be journaled and sealed first)."""
    policy_records.seal_versions(services, ACTOR)


def _seal(services: Services) -> None:
    from archiver import sealer

    sealer.seal_pending(services, pipelined=False)


def _lines(row: Any, plain: bytes | None, versions: list[tuple[int, ConsentPolicy]]) -> list[dict[str, Any]]:
    """The ledger lines record ``row`` proves (none for an unreadable or irrelevant one)."""
    if plain is None or not row.contact and row.kind != "decision":
        return []
    try:
        payload = json.loads(plain)
    except ValueError:
        return []
    if not isinstance(payload, dict):
        return []
    who = identifier(row.contact) if row.contact else None
    at = row.occurred_at
    if row.kind == "consent" and who is not None and at is not None:
        return _consent_lines(row.seq, who, at, payload)
    if row.kind == "message" and who is not None and at is not None:
        return _keyword_lines(row.seq, who, at, payload, versions)
    if row.kind == "decision":
        return _decision_lines(row.seq, payload)
    return []


def _consent_lines(seq: int, who: str, at: int, payload: dict[str, Any]) -> list[dict[str, Any]]:
    if payload.get("field") == "consent_api":
        body = payload.get("consent") or {}
        category, choice, source = body.get("scope"), body.get("action"), "consent_api"
        detail = {"source": body.get("source"), "proof": body.get("proof")}
    else:
        pref = payload.get("preference") or {}
        category, choice, source = pref.get("category"), pref.get("value"), "user_preferences"
        detail = {"value": pref.get("value"), "signup_id": pref.get("signup_id")}
    action = _CHOICES.get(str(choice).lower())
    if not isinstance(category, str) or action is None:
        return []
    return [{"contact": who, "category": category_of(category), "action": action, "source": source,
             "occurred_at": at, "record_seq": seq, "refers_to": None,
             "detail": {k: v for k, v in detail.items() if v is not None}}]


def message_text(payload: dict[str, Any]) -> str:
    """What the customer wrote in a message payload: text, button or list reply, caption."""
    msg = payload.get("message") or {}
    if not isinstance(msg, dict):
        return ""
    mtype = msg.get("type")
    part = msg.get(mtype) if isinstance(mtype, str) else None
    part = part if isinstance(part, dict) else {}
    if mtype == "interactive":
        reply = part.get("button_reply") or part.get("list_reply") or {}
        return str(reply.get("title") or "") if isinstance(reply, dict) else ""
    for key in ("body", "text", "caption"):
        if isinstance(part.get(key), str):
            return str(part[key])
    return ""


def _keyword_lines(seq: int, who: str, at: int, payload: dict[str, Any],
                   versions: list[tuple[int, ConsentPolicy]]) -> list[dict[str, Any]]:
    if not versions:
        return []
    policy_seq, policy = versions[0]
    for vseq, version in versions:
        if vseq < seq:
            policy_seq, policy = vseq, version
    found = policy.detect(message_text(payload))
    if not found:
        return []
    return [{"contact": who, "category": policy.category, "action": "opt_out", "source": "keyword",
             "occurred_at": at, "record_seq": seq, "refers_to": None,
             "detail": {"policy_seq": policy_seq, "matches": [{"language": m.language, "keyword": m.keyword}
                                                              for m in found]}}]


def _decision_lines(seq: int, body: dict[str, Any]) -> list[dict[str, Any]]:
    event, target = body.get("event"), body.get("record_seq")
    action = "confirm" if event == CONFIRMED else "dismiss" if event == DISMISSED else None
    if action is None or not isinstance(target, int) or not isinstance(body.get("contact"), str):
        return []
    at = int(datetime.fromisoformat(str(body.get("at"))).timestamp())
    return [{"contact": body["contact"], "category": str(body.get("category") or "marketing"), "action": action,
             "source": "review", "occurred_at": at, "record_seq": seq, "refers_to": target,
             "detail": {"actor": body.get("actor"), "note": body.get("note")}}]


# --------------------------------------------------------------------------- reading it


def _entries(session: Session, contact: str, category: str | None = None) -> tuple[set[str], list[ConsentEntry]]:
    ids = identity.resolve(session, contact)
    q = select(ConsentEntry).where(ConsentEntry.contact.in_(sorted(ids)))
    if category is not None:
        q = q.where(ConsentEntry.category == category)
    return ids, list(session.scalars(q.order_by(ConsentEntry.occurred_at, ConsentEntry.record_seq, ConsentEntry.id)))


def decisions_of(entries: Iterable[ConsentEntry]) -> dict[int, ConsentEntry]:
    """Detected opt-out (its message seq) -> the decision on it that counts (the latest sealed)."""
    out: dict[int, ConsentEntry] = {}
    for e in entries:
        if e.action in ("confirm", "dismiss") and e.refers_to is not None:
            if e.refers_to not in out or out[e.refers_to].record_seq < e.record_seq:
                out[e.refers_to] = e
    return out


def _status(e: ConsentEntry, decided: dict[int, ConsentEntry]) -> str | None:
    if e.source != "keyword":
        return None
    d = decided.get(e.record_seq)
    return "detected" if d is None else "confirmed" if d.action == "confirm" else "dismissed"


def _iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat().replace("+00:00", "Z")


def entry_dict(e: ConsentEntry, decided: dict[int, ConsentEntry] | None = None) -> dict[str, Any]:
    """A ledger line as the CLI and API show it (no message content: the keyword, not the text)."""
    out: dict[str, Any] = {"id": e.id, "contact": e.contact, "category": e.category, "action": e.action,
                           "source": e.source, "occurred_at": _iso(e.occurred_at), "record_seq": e.record_seq}
    if e.refers_to is not None:
        out["refers_to"] = e.refers_to
    if decided is not None and (status := _status(e, decided)) is not None:
        out["status"] = status
        if (d := decided.get(e.record_seq)) is not None:
            out["decision_seq"] = d.record_seq
    out["detail"] = e.detail
    return out


def require_opt_in(session: Session) -> bool:
    versions = policy_records.consent_versions(session)
    return versions[-1][1].require_opt_in if versions else False


def _decide_state(entries: list[ConsentEntry], moment: int, require_opt_in: bool) -> tuple[bool, list[ConsentEntry]]:
    decided = decisions_of(entries)
    counted = [e for e in entries if e.action in ("opt_in", "opt_out") and e.occurred_at <= moment
               and _status(e, decided) != "dismissed"]
    if not counted:
        return not require_opt_in, []
    last = max(counted, key=lambda e: (e.occurred_at, e.action == "opt_out", e.record_seq))
    deciding = [last] + ([decided[last.record_seq]] if last.record_seq in decided else [])
    return last.action == "opt_in", deciding


def state_at(session: Session, contact: str, category: str, moment: int) -> dict[str, Any]:
    """Was consent of ``category`` valid at epoch ``moment``? With the deciding lines and their seqs."""
    return states_at(session, contact, category, [moment])[0]


def states_at(session: Session, contact: str, category: str, moments: list[int],
              require: bool | None = None) -> list[dict[str, Any]]:
    """:func:`state_at` for each of ``moments`` (the ledger read once); ``require``: the
    policy's ``require_opt_in`` if the caller read it already."""
    ids, entries = _entries(session, contact, category)
    require = require_opt_in(session) if require is None else require
    return [_state(contact, ids, category, entries, moment, require) for moment in moments]


def _state(contact: str, ids: set[str], category: str, entries: list[ConsentEntry], moment: int,
           require: bool) -> dict[str, Any]:
    valid, deciding = _decide_state(entries, moment, require)
    decided = decisions_of(entries)
    if deciding:
        reason = "opted in" if valid else ("opt-out detected in a message" if deciding[0].source == "keyword"
                                           else "opted out")
    else:
        reason = "no opt-in recorded (require_opt_in)" if not valid else "no opt-out recorded"
    return {"contact": contact, "identifiers": sorted(ids), "category": category, "time": _iso(moment),
            "valid": valid, "reason": reason, "require_opt_in": require,
            "deciding": [entry_dict(e, decided) for e in deciding],
            "deciding_seqs": [e.record_seq for e in deciding]}


def show(session: Session, contact: str) -> dict[str, Any]:
    """The contact's ledger (every category, in event-time order) and the state now per category."""
    ids, entries = _entries(session, contact)
    if not entries and not any(session.scalar(select(Record.seq).where(Record.contact == i).limit(1)) for i in ids):
        raise identity.NoSuchContact(f"no record names contact {contact}")
    decided = decisions_of(entries)
    now = int(time.time())
    require = require_opt_in(session)
    states = {}
    for category in sorted({e.category for e in entries} | {"marketing"}):
        valid, deciding = _decide_state([e for e in entries if e.category == category], now, require)
        states[category] = {"valid": valid, "deciding_seqs": [e.record_seq for e in deciding]}
    pending = [e.record_seq for e in entries if _status(e, decided) == "detected"]
    return {"contact": contact, "identifiers": sorted(ids), "require_opt_in": require, "state": states,
            "detected_pending": pending, "ledger": [entry_dict(e, decided) for e in entries]}


def lines_after(session: Session, after_id: int, limit: int = BATCH) -> list[ConsentEntry]:
    """Ledger lines added after line ``after_id``, in the order they were appended."""
    return list(session.scalars(select(ConsentEntry).where(ConsentEntry.id > after_id)
                                .order_by(ConsentEntry.id).limit(limit)))


def parse_moment(value: Any, field: str = "time") -> int:
    """Epoch seconds of ``value`` (epoch seconds, or ISO 8601 with a zone, or a date: its start, UTC)."""
    from archiver.items import parse_time

    epoch = parse_time(value)
    if epoch is None and isinstance(value, str) and len(value.strip()) == 10:
        epoch = parse_time(value.strip() + "T00:00:00Z")
    if epoch is None:
        raise ValidationError(field, "must be epoch seconds, an ISO 8601 time with Z or an offset, or a date")
    return epoch


# --------------------------------------------------------------------------- confirm / dismiss


def decide(services: Services, actor: str, record_seq: int, decision: str, note: Any) -> dict[str, Any]:
    """Confirm or dismiss the detected opt-out of message ``record_seq``: sealed as a decision
    record first, then applied by the ledger. Returns the detection's line.

    Raises ValidationError, NotFound, DetectionDecided, DecisionPending.
    """
    if decision not in DECISIONS:
        raise ValidationError("decision", "must be 'confirm' or 'dismiss'")
    if note is not None and (not isinstance(note, str) or len(note) > 2000):
        raise ValidationError("note", "must be a string of at most 2000 characters")
    sync(services)
    with services.sessions.begin() as session:
        found = session.scalars(select(ConsentEntry).where(ConsentEntry.record_seq == record_seq,
                                                           ConsentEntry.source == "keyword")).first()
        if found is None:
            raise NotFound(f"no detected opt-out in record {record_seq}",
                           hint="'archiver consent show CONTACT' lists a contact's detected opt-outs")
        earlier = session.scalars(select(ConsentEntry).where(ConsentEntry.refers_to == record_seq)).first()
        if earlier is not None:
            raise DetectionDecided(f"the detected opt-out in record {record_seq} was already "
                                   f"{earlier.action}ed (decision seq {earlier.record_seq})")
        body = {"event": DECISIONS[decision], "record_seq": record_seq, "contact": found.contact,
                "category": found.category, "note": note, "actor": actor,
                "at": datetime.now(timezone.utc).isoformat()}
        jid = append_delivery(session, "decision", canonical(body), {"event": DECISIONS[decision]})
    log.info("consent.decided decision=%s record=%d journal=%d", decision, record_seq, jid)
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        _seal(services)
        sync(services)
        with services.sessions() as session:
            seq = session.scalar(select(Journal.delivery_seq).where(Journal.id == jid, Journal.sealed.is_(True)))
            line = session.scalars(select(ConsentEntry).where(ConsentEntry.refers_to == record_seq)).first()
            if seq is not None and line is not None:
                target = session.scalars(select(ConsentEntry).where(ConsentEntry.record_seq == record_seq,
                                                                    ConsentEntry.source == "keyword")).one()
                return entry_dict(target, decisions_of([line]))
        if time.monotonic() > deadline:
            raise DecisionPending(f"the {decision} of record {record_seq} is journaled (#{jid}) but not sealed yet")
        time.sleep(0.2)
