"""The capture-health review: does the archive still receive everything it should (issue 11 point 4)?

Coexistence breaks silently in known ways (whatsapp-webhooks.md sections 6-7), and an archive
that does not notice is not complete (SEC 17a-4(f)(2)(ii): automatic verification of
completeness). A run (job ``capture-review``, every 15 minutes by default in
``policies/schedule.yaml``; ``archiver review capture``) uses the thresholds of the
``capture.yaml`` version sealed last (``archiver.capture_policy``), then:

1. reads the webhook ``delivery`` records sealed since its cursor (incremental; the raw body,
   decrypted and mapped again by ``items.extract_webhook``) into one ``capture_numbers`` row
   per business number (``metadata.phone_number_id``): its last webhook (the newest event
   time a live item states, never later than its sealing; a history delivery: when it was
   sealed), the longest quiet spell between two webhooks (spells longer than the threshold
   then in force are outages, not learnt), its last app-side event (an echo, an app
   state sync, a history delivery), and its history sync's chunks (``phase``,
   ``chunk_order``, ``progress``);
2. checks every ``status`` record sealed at least ``status_grace`` ago: a wamid no
   message, echo, capture or history record holds is ``status-without-message`` (an
   outbound sent around the archive; subject the wamid, ``record_seq`` its first status);
3. reads the new ``account_event`` records: a history sync declined (Meta's 2593109) is
   ``history-declined``; an ``account_update`` event of ``disconnection_events`` (or with
   ``disconnection_info``) is ``account-disconnected`` (subject: the record);
4. judges each number at the run's time: ``number-silent`` (no webhook for longer than its
   threshold: configured, the default, or derived from its traffic; subject the number and
   its last webhook's seq), ``app-inactive`` (a Coexistence number with no app-side event for
   ``app_inactive``; subject the number and the last app-side seq), ``history-partial`` (no
   chunk for ``history_wait`` and a chunk missing by ``chunk_order``, or progress never
   reached 100; subject the number and what is missing), ``unknown-number`` (echoes or history
   for a number ``capture.yaml`` does not list, when it lists any: the archive's account
   records; subject the number).

Findings are kind ``capture`` (``archiver.findings``), keyed by rule and subject: a re-run
finds nothing twice; a number that goes silent again after it spoke is a new finding. The
run's summary is sealed as its ``job_run`` record by ``archiver.jobs``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from archiver import findings, items, policy_records, records
from archiver.capture_policy import CapturePolicy
from archiver.consent_review import _json
from archiver.catalog import CaptureNumber, Record, Segment, cursor_value, leader_lock, set_cursor, stored_through
from archiver.services import Services

log = logging.getLogger(__name__)

JOB = "capture-review"
CRON = "*/15 * * * *"
CURSOR = "capture-review"  # the last delivery seq read
STATUS_CURSOR = "capture-review-statuses"  # the last status seq checked
ACCOUNT_CURSOR = "capture-review-accounts"  # the last account event seq read
BATCH = 2000
ACTOR = "system:capture-review"
KIND = "capture"
LIVE_FIELDS = ("messages", "smb_message_echoes", "smb_app_state_sync", "user_preferences")
APP_FIELDS = ("smb_message_echoes", "smb_app_state_sync", "history")
MAX_EVIDENCE = 20


@dataclass
class Run:
    """What one run did (its ``job_run`` summary)."""

    deliveries: int = 0
    statuses: int = 0
    accounts: int = 0
    numbers: int = 0
    found: list[str] = field(default_factory=list)
    through: int = 0
    policy_seq: int | None = None

    def summary(self) -> dict[str, Any]:
        return {"deliveries": self.deliveries, "statuses": self.statuses, "account_events": self.accounts,
                "numbers": self.numbers, "findings": len(self.found), "finding_ids": self.found,
                "through": self.through, "policy_seq": self.policy_seq}

    def raised(self, row: Any) -> None:
        if row is not None:
            self.found.append(row.id)


def review(services: Services, now: int | None = None) -> dict[str, Any]:
    """One run of the review at ``now`` (epoch seconds; default the clock); its summary.
    Single instance (``leader_lock``). Raises what reading the store raises."""
    moment = int(time.time()) if now is None else now
    run = Run()
    with leader_lock(services.engine, JOB) as leader:
        if not leader:
            return {"skipped": "running elsewhere"}
        policy_records.seal_versions(services, ACTOR)  # capture.yaml sealed before it is used
        with services.sessions() as session:
            policy, run.policy_seq = policy_records.capture_in_force(session)
        while _read_deliveries(services, policy, run):
            pass
        _statuses(services, policy, moment, run)
        _accounts(services, policy, run)
        _judge(services, policy, moment, run)
        findings.settle(services)
    log.info("review.capture deliveries=%d statuses=%d findings=%d", run.deliveries, run.statuses, len(run.found))
    return run.summary()


# --------------------------------------------------------------------------- 1. deliveries


@dataclass
class Sighting:
    """What one delivery says of one business number."""

    number: str
    seq: int
    at: int
    display: str | None = None
    waba: str | None = None
    app_at: int | None = None
    chunks: dict[str, int] = field(default_factory=dict)  # "phase:chunk_order" -> progress
    history_at: int | None = None


def sightings(seq: int, body: bytes, sealed_at: int) -> list[Sighting]:
    """Each business number ``body`` (a webhook delivery sealed at ``sealed_at``) names. Never raises."""
    out: dict[str, Sighting] = {}
    for it in items.extract_webhook(body):
        meta = it.payload.get("metadata")
        if not isinstance(meta, dict):
            continue  # template and account events name a WABA, not a number
        number = items._text(meta.get("phone_number_id")) or items._text(meta.get("display_phone_number"))
        if number is None:
            continue
        s = out.setdefault(number, Sighting(number, seq, 0, items._text(meta.get("display_phone_number")),
                                            items._text(it.payload.get("entry_id"))))
        fld = it.payload.get("field")
        live = fld in LIVE_FIELDS and it.occurred_at is not None
        when = min(it.occurred_at, sealed_at) if live and it.occurred_at is not None else sealed_at
        s.at = max(s.at, when)
        if fld in APP_FIELDS:
            s.app_at = max(s.app_at or 0, when)
        if fld == "history":
            s.history_at = sealed_at
            _chunk(s, it.payload.get("history_metadata"))
    return list(out.values())


def _chunk(s: Sighting, meta: Any) -> None:
    if not isinstance(meta, dict):
        return
    phase, order, progress = (meta.get(k) for k in ("phase", "chunk_order", "progress"))
    if not (_whole(phase) and _whole(order) and isinstance(progress, int) and _whole(progress)):
        return
    key = f"{phase}:{order}"
    s.chunks[key] = max(s.chunks.get(key, 0), progress)


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _read_deliveries(services: Services, policy: CapturePolicy, run: Run) -> bool:
    """One batch of new webhook deliveries into ``capture_numbers``; True when there may be more."""
    with services.sessions() as session:
        after = cursor_value(session, CURSOR)
        through = stored_through(session)
        rows = session.execute(
            select(Record.seq, Record.segment_id, Segment.sealed_at).join(Segment, Segment.id == Record.segment_id)
            .where(Record.seq > after, Record.seq <= through, Record.kind == "delivery", Record.type == "webhook")
            .order_by(Record.seq).limit(BATCH)).all()
        plains = records.payloads(services, session, [(r.seq, r.segment_id) for r in rows]) if rows else {}
    upto = rows[-1].seq if len(rows) == BATCH else through
    seen = [s for r in rows if (plain := plains.get(r.seq)) is not None
            for s in sightings(r.seq, plain, int(r.sealed_at.timestamp()))]
    with services.sessions.begin() as session:
        if cursor_value(session, CURSOR) != after:
            return True  # another run read them meanwhile
        _fold(session, seen, policy)
        if upto > after:
            set_cursor(session, CURSOR, upto)
    run.deliveries += len(rows)
    run.through = max(run.through, upto)
    return len(rows) == BATCH


@dataclass
class Fold:
    """A ``capture_numbers`` row as plain values while a batch's sightings are folded into it
    (one catalog update per number per batch, not one per delivery)."""

    number: str
    first_at: int
    last_at: int
    last_seq: int
    display: str | None = None
    waba: str | None = None
    webhooks: int = 0
    longest_gap: int = 0
    coexistence: bool = False
    app_at: int | None = None
    app_seq: int | None = None
    app_seqs: list[int] = field(default_factory=list)
    history: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, row: CaptureNumber) -> Fold:
        return cls(**{name: getattr(row, name) for name in cls.__dataclass_fields__})

    def write(self, row: CaptureNumber) -> None:
        for name in self.__dataclass_fields__:
            setattr(row, name, getattr(self, name))


def _fold(session: Session, seen: list[Sighting], policy: CapturePolicy) -> None:
    """Fold a batch's sightings into their numbers' rows (created on first sight)."""
    by_number: dict[str, list[Sighting]] = {}
    for s in seen:
        by_number.setdefault(s.number[:64], []).append(s)
    rows = {n.number: n for n in session.scalars(select(CaptureNumber).where(
        CaptureNumber.number.in_(sorted(by_number))))} if by_number else {}
    for number, theirs in by_number.items():
        row = rows.get(number)
        state = Fold.of(row) if row is not None else Fold(number, theirs[0].at, theirs[0].at, theirs[0].seq)
        for s in theirs:
            _apply(state, s, policy)
        if row is None:
            row = CaptureNumber(number=number)
            session.add(row)
        state.write(row)


def _apply(row: Fold, s: Sighting, policy: CapturePolicy) -> None:
    """Fold one sighting into its number's state."""
    row.display = (s.display or row.display or "")[:64] or None
    row.waba = (s.waba or row.waba or "")[:64] or None
    if s.at > row.last_at:
        threshold, _ = policy.silence_for(policy.number(row.number, row.display), row.webhooks, row.longest_gap)
        if s.at - row.last_at <= threshold:  # a longer spell was an outage (found as one), not the number's rhythm
            row.longest_gap = max(row.longest_gap, s.at - row.last_at)
        row.last_at, row.last_seq = s.at, s.seq
    row.first_at = min(row.first_at, s.at)
    row.webhooks += 1
    if s.app_at is not None:
        row.coexistence = True
        if row.app_at is None or s.app_at >= row.app_at:
            row.app_at, row.app_seq = s.app_at, s.seq
        if len(row.app_seqs) < MAX_EVIDENCE:
            row.app_seqs = [*row.app_seqs, s.seq]  # a new list: JSON columns track assignment only
    if s.history_at is not None:
        h = row.history
        chunks = dict(h.get("chunks") or {})
        for key, progress in s.chunks.items():
            chunks[key] = max(chunks.get(key, 0), progress)
        seqs = list(h.get("seqs") or [])
        if len(seqs) < MAX_EVIDENCE:
            seqs.append(s.seq)
        row.history = {"chunks": chunks, "seqs": seqs, "last_at": max(int(h.get("last_at") or 0), s.history_at)}


# --------------------------------------------------------------------------- 2. statuses


def _statuses(services: Services, policy: CapturePolicy, moment: int, run: Run) -> None:
    """Statuses sealed ``status_grace`` ago or earlier whose message the archive does not hold."""
    # In whole seconds, as ``moment`` is: a segment sealed during the second ``moment - grace``
    # is ripe (sealed_at carries microseconds; with a 0s grace it must not wait for a later run).
    ripe = datetime.fromtimestamp(moment - policy.status_grace + 1, timezone.utc)
    while True:
        with services.sessions() as session:
            after = cursor_value(session, STATUS_CURSOR)
            sealed = session.scalar(select(func.max(Segment.last_seq)).where(Segment.sealed_at < ripe)) or 0
            through = min(stored_through(session), sealed)
            rows = session.execute(
                select(Record.seq, Record.wamid, Record.contact, Record.type, Record.occurred_at)
                .where(Record.seq > after, Record.seq <= through, Record.kind == "status")
                .order_by(Record.seq).limit(BATCH)).all()
            held = _held(session, sorted({r.wamid for r in rows if r.wamid}))
        if not rows:
            return
        missing: dict[str, list[Any]] = {}
        for r in rows:
            if r.wamid and r.wamid not in held:
                missing.setdefault(r.wamid, []).append(r)
        with services.sessions.begin() as session:
            if cursor_value(session, STATUS_CURSOR) != after:
                return
            for wamid, statuses in missing.items():
                first = statuses[0]
                run.raised(findings.raise_finding(
                    session, KIND, "status-without-message", wamid, record_seq=first.seq,
                    evidence=[r.seq for r in statuses], contact=first.contact,
                    detail={"wamid": wamid, "statuses": [r.type for r in statuses], "at": first.occurred_at}))
            set_cursor(session, STATUS_CURSOR, rows[-1].seq)
        run.statuses += len(rows)


def _held(session: Session, wamids: list[str]) -> set[str]:
    """The wamids of ``wamids`` that a message, echo, capture or history record holds."""
    out: set[str] = set()
    for start in range(0, len(wamids), 500):
        out.update(session.scalars(select(Record.wamid).where(
            Record.wamid.in_(wamids[start:start + 500]), Record.kind.in_(items.CONVERSATIONAL))))
    return out


# --------------------------------------------------------------------------- 3. account events


def _accounts(services: Services, policy: CapturePolicy, run: Run) -> None:
    """History declined, and account_update events that are a capture gap."""
    while True:
        with services.sessions() as session:
            after = cursor_value(session, ACCOUNT_CURSOR)
            rows = session.execute(
                select(Record.seq, Record.type, Record.delivery_seq, Record.segment_id)
                .where(Record.seq > after, Record.seq <= stored_through(session), Record.kind == "account_event")
                .order_by(Record.seq).limit(BATCH)).all()
            plains = records.payloads(services, session, [(r.seq, r.segment_id) for r in rows]) if rows else {}
        if not rows:
            return
        with services.sessions.begin() as session:
            if cursor_value(session, ACCOUNT_CURSOR) != after:
                return
            for r in rows:
                run.raised(_account(session, policy, r, _json(plains.get(r.seq))))
            set_cursor(session, ACCOUNT_CURSOR, rows[-1].seq)
        run.accounts += len(rows)


def _account(session: Session, policy: CapturePolicy, r: Any, payload: dict[str, Any]) -> Any:
    evidence = [r.seq] + ([r.delivery_seq] if r.delivery_seq else [])
    if r.type == "history_declined":
        error, meta = _dict(payload.get("error")), _dict(payload.get("metadata"))
        return findings.raise_finding(session, KIND, "history-declined", str(r.seq), record_seq=r.seq,
                                      evidence=evidence, detail={"number": meta.get("phone_number_id"),
                                                                 "code": error.get("code")})
    value = _dict(payload.get("value"))
    disconnection = value.get("disconnection_info")
    if r.type not in policy.disconnection_events and not isinstance(disconnection, dict):
        return None
    info = disconnection if isinstance(disconnection, dict) else {}
    return findings.raise_finding(session, KIND, "account-disconnected", str(r.seq), record_seq=r.seq,
                                  evidence=evidence, detail={
                                      "event": r.type, "waba": payload.get("entry_id"),
                                      "at": payload.get("entry_time"), "reason": info.get("reason"),
                                      "initiated_by": info.get("initiated_by")})


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


# --------------------------------------------------------------------------- 4. each number


def _judge(services: Services, policy: CapturePolicy, moment: int, run: Run) -> None:
    """Silence, app inactivity, a partial history sync and unknown numbers, at ``moment``."""
    with services.sessions.begin() as session:
        numbers = session.scalars(select(CaptureNumber).order_by(CaptureNumber.number)).all()
        run.numbers = len(numbers)
        for row in numbers:
            entry = policy.number(row.number, row.display)
            for rule, subject, evidence, detail in _verdicts(row, entry, policy, moment):
                run.raised(findings.raise_finding(session, KIND, rule, subject, record_seq=None,
                                                  evidence=evidence, detail={"number": row.number,
                                                                             "display": row.display, **detail}))


def _verdicts(row: CaptureNumber | Fold, entry: Any, policy: CapturePolicy,
              moment: int) -> list[tuple[str, str, list[int], dict[str, Any]]]:
    """(rule, subject, evidence, detail) of each finding ``row`` gives at ``moment``."""
    out: list[tuple[str, str, list[int], dict[str, Any]]] = []
    threshold, source = policy.silence_for(entry, row.webhooks, row.longest_gap)
    if moment - row.last_at > threshold:
        out.append(("number-silent", f"{row.number}:{row.last_seq}", [row.last_seq], {
            "last_webhook_at": _iso(row.last_at), "silent_s": moment - row.last_at, "threshold_s": threshold,
            "threshold_from": source, "webhooks": row.webhooks}))
    if row.coexistence or (entry is not None and entry.coexistence):
        since = row.app_at if row.app_at is not None else row.first_at
        limit = policy.app_inactive_for(entry)
        if moment - since >= limit:
            out.append(("app-inactive", f"{row.number}:{row.app_seq or 'never'}", [row.app_seq or row.last_seq], {
                "last_app_event_at": _iso(row.app_at) if row.app_at is not None else None,
                "inactive_s": moment - since, "threshold_s": limit}))
    partial = _partial(row.history, moment, policy.history_wait)
    if partial is not None:
        out.append(("history-partial", f"{row.number}:{','.join(partial['missing'])}:{partial['progress']}",
                    list(row.history.get("seqs") or []), partial))
    if policy.numbers and entry is None and row.app_seqs:
        out.append(("unknown-number", row.number, list(row.app_seqs), {"waba": row.waba}))
    return out


def _partial(history: dict[str, Any], moment: int, wait: int) -> dict[str, Any] | None:
    """What a history sync quiet for ``wait`` lacks: chunks missing by ``chunk_order`` within a
    phase (from 0 or 1 to the highest seen), or a progress that never reached 100. None: complete."""
    chunks: dict[str, int] = history.get("chunks") or {}
    if not chunks or moment - int(history.get("last_at") or 0) < wait:
        return None
    by_phase: dict[int, set[int]] = {}
    for key in chunks:
        phase, order = (int(part) for part in key.split(":"))
        by_phase.setdefault(phase, set()).add(order)
    missing = [f"{phase}:{n}" for phase, orders in sorted(by_phase.items())
               for n in range(0 if 0 in orders else 1, max(orders) + 1) if n not in orders]
    progress = max(chunks.values())
    if not missing and progress >= 100:
        return None
    return {"missing": missing, "progress": progress, "chunks": sorted(chunks)}


def _iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat()


def numbers(services: Services) -> list[dict[str, Any]]:
    """Every business number the review has seen, as ``archiver review capture --json`` lists them."""
    with services.sessions() as session:
        policy, _ = policy_records.capture_in_force(session)
        out = []
        for row in session.scalars(select(CaptureNumber).order_by(CaptureNumber.number)):
            threshold, source = policy.silence_for(policy.number(row.number, row.display), row.webhooks,
                                                   row.longest_gap)
            out.append({"number": row.number, "display": row.display, "last_webhook_at": _iso(row.last_at),
                        "webhooks": row.webhooks, "silence_threshold_s": threshold, "threshold_from": source,
                        "coexistence": row.coexistence,
                        "last_app_event_at": _iso(row.app_at) if row.app_at is not None else None})
    return out
