"""What a litigation hold (or an export) selects: its criteria, and the records they match.

A record matches when it meets every given criterion: a custodian (a contact's wa_id,
phone or BSUID, digits compared for phone numbers, standing for every identifier of that
person (``identity.resolve``); or a business phone-number id or display number), a time
window on the record's own time (the message's timestamp, else its delivery's receipt),
and a search query (the search language). With a matching item its delivery is selected
too, and with a selected message the media records linked to it. Audit and job_run
records are never selected (they are the service's own).

How the records are read (:func:`matching`):

- a :class:`Scan` reads the rows of a small seq window once, and every hold evaluated on
  that window (``archiver.holds.evaluate``: all active holds on the records just sealed)
  selects from it in memory;
- without one (a hold's first pass over the archive, an export), the most selective
  criterion is asked of the catalog by index (``records.contact``, ``records.occurred_at``,
  ``journal.delivery_seq``) or of the search backend (a query), and the other criteria
  filter what it gave.

Both give the same seqs; only the cost differs.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from archiver import identity, records
from archiver.catalog import Journal, Record, Segment, chunked
from archiver.errors import QuerySyntaxError, ValidationError
from archiver.retention_policy import identifier
from archiver.search import query as ql
from archiver.services import Services

NOT_HELD = ("audit", "job_run")  # the service's own records
ITEMLESS = ("delivery", "media", "quarantine", "audit")  # kinds whose payload carries no business metadata
COLUMNS = (Record.seq, Record.kind, Record.contact, Record.delivery_seq, Record.occurred_at, Record.links)
QUERY_PAGE = 10000  # seqs asked of the search backend per request
TIME_HINT = "must be a date (2026-01-31) or a UTC time (2026-01-31T10:00:00Z)"


@dataclass(frozen=True)
class Criteria:
    """What a hold holds: every given criterion must match (at least one is given)."""

    custodians: tuple[str, ...] = ()
    after: int | None = None  # epoch seconds, inclusive
    before: int | None = None  # epoch seconds, exclusive
    query: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"custodians": list(self.custodians), "after": _iso(self.after), "before": _iso(self.before),
                "query": self.query}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Criteria:
        def epoch(value: Any) -> int | None:
            return int(datetime.fromisoformat(value).timestamp()) if value else None
        return cls(custodians=tuple(data.get("custodians") or ()), after=epoch(data.get("after")),
                   before=epoch(data.get("before")), query=data.get("query") or None)

    def empty(self) -> bool:
        return not (self.custodians or self.after is not None or self.before is not None or self.query)


def _iso(epoch: int | None) -> str | None:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat() if epoch is not None else None


def _custodian(value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 128 or "\x00" in value:
        raise ValidationError("custodian", "must be a wa_id, phone number, BSUID or phone-number id")
    return identifier(value)


def _time(name: str, value: Any) -> int | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise ValidationError(name, TIME_HINT)
    try:
        return ql.parse_time(value.strip(), 0)
    except QuerySyntaxError as exc:
        raise ValidationError(name, TIME_HINT) from exc


def _query(value: Any) -> str | None:
    if value is not None and (not isinstance(value, str) or "\x00" in value or len(value) > 2000):
        raise ValidationError("query", "must be a search query")
    if value is not None and value.strip():
        ql.parse(value)  # QuerySyntaxError names the position
        return str(value.strip())
    return None


def _checked(crit: Criteria) -> Criteria:
    if crit.after is not None and crit.before is not None and crit.after >= crit.before:
        raise ValidationError("before", "must be later than after")
    if crit.empty():
        raise ValidationError("criteria", "give at least one of custodian, after, before, query")
    return crit


def parse_criteria(custodians: Iterable[str] = (), after: str | None = None, before: str | None = None,
                   query: str | None = None) -> Criteria:
    """Check and normalise a hold's criteria. Raises ValidationError naming the field, QuerySyntaxError."""
    found = [_custodian(c) for c in custodians]
    return _checked(Criteria(tuple(dict.fromkeys(found)), _time("after", after), _time("before", before),
                             _query(query)))


_UNSET: Any = object()


def edited(crit: Criteria, *, add_custodians: Iterable[str] = (), remove_custodians: Iterable[str] = (),
           after: Any = _UNSET, before: Any = _UNSET, query: Any = _UNSET) -> Criteria:
    """``crit`` changed as a hold edit says; ``""`` clears ``after``, ``before`` or ``query``.

    Raises ValidationError (naming the field; also when nothing changes or no criterion is
    left), QuerySyntaxError.
    """
    added = [_custodian(c) for c in add_custodians]
    removed = {_custodian(c) for c in remove_custodians}
    unknown = sorted(removed - set(crit.custodians))
    if unknown:
        raise ValidationError("remove_custodian", f"{unknown[0]} is not a custodian of this hold")
    custodians = tuple(dict.fromkeys(c for c in (*crit.custodians, *added) if c not in removed))
    new = replace(crit, custodians=custodians)
    if after is not _UNSET:
        new = replace(new, after=_time("after", after))
    if before is not _UNSET:
        new = replace(new, before=_time("before", before))
    if query is not _UNSET:
        new = replace(new, query=_query(query))
    if new == crit:
        raise ValidationError("criteria", "the edit changes nothing")
    return _checked(new)


def narrows(old: Criteria, new: Criteria) -> bool:
    """Whether ``new`` may select fewer records than ``old`` (then held records are re-checked)."""
    return (bool(set(old.custodians) - set(new.custodians)) or (not old.custodians and bool(new.custodians))
            or (new.after is not None and (old.after is None or new.after > old.after))
            or (new.before is not None and (old.before is None or new.before < old.before))
            or (new.query is not None and new.query != old.query))


# --------------------------------------------------------------------------- reading the records


class Scan:
    """The rows of ``(after, through]`` read once; every hold evaluated on them selects in memory."""

    def __init__(self, session: Session, after: int, through: int) -> None:
        self.after, self.through = after, through
        self.rows = session.execute(select(*COLUMNS).where(
            Record.seq > after, Record.seq <= through, Record.kind.not_in(NOT_HELD)).order_by(Record.seq)).all()
        self._times: dict[int, int] | None = None
        self._by_contact: dict[str, set[int]] | None = None
        self.named: dict[str, bool] = {}  # identifier -> whether a record names it as its contact
        self._query: dict[str, set[int]] = {}

    def upto(self, after: int, through: int) -> list[Any]:
        if after <= self.after and through >= self.through:
            return list(self.rows)
        return [r for r in self.rows if after < r.seq <= through]

    def times(self, session: Session) -> dict[int, int]:
        if self._times is None:
            self._times = _times(session, list(self.rows))
        return self._times

    def by_contact(self) -> dict[str, set[int]]:
        if self._by_contact is None:
            self._by_contact = {}
            for r in self.rows:
                if r.contact:
                    self._by_contact.setdefault(identifier(r.contact), set()).add(r.seq)
        return self._by_contact

    def query_seqs(self, services: Services, query: str) -> set[int]:
        if query not in self._query:
            self._query[query] = set(_query_seqs(services, query, self.after, self.through))
        return self._query[query]


def matching(services: Services, session: Session, crit: Criteria, after: int, through: int,
             already: Callable[[list[int]], set[int]] = lambda seqs: set(), *,
             contacts: list[str] | None = None, scan: Scan | None = None) -> set[int]:
    """Seqs in ``(after, through]`` that ``crit`` selects, with the deliveries of matching items and
    the media records of matching messages (or of those ``already`` says were selected before).
    ``contacts`` narrows to records naming one of these contacts; ``scan`` (covering the
    window) is read instead of the catalog.

    Holds and exports (``archiver.export``) select alike. Raises QuerySyntaxError, SearchUnavailable.
    """
    people = {c: identity.resolve(session, c) for c in crit.custodians}
    wanted = set().union(*people.values()) if people else set()
    named = scan.named if scan is not None else {}
    # Only an identifier no record names as its contact can be a business number: reading
    # the payloads (decrypting) is skipped for a hold on contacts alone.
    numbers = {c for c, ids in people.items() if len(ids) == 1 and not _is_named(session, c, named)}
    found: set[int] | None = None  # what the query matches in the window
    if crit.query and scan is None:
        found = set(_query_seqs(services, crit.query, after, through))
    if contacts is not None:
        rows = _contact_rows(session, set(contacts), after, through, scan)
    elif scan is not None:
        rows = scan.upto(after, through)
    elif crit.custodians and not numbers:
        rows = _contact_rows(session, wanted, after, through, None)
    elif crit.query:
        rows = _rows_of(session, sorted(found or ()))
    elif crit.after is not None or crit.before is not None:
        rows = _time_rows(session, crit, after, through)
    else:
        rows = _range_rows(session, after, through)
    if not rows:
        return set()
    candidates = {r.seq for r in rows}
    if crit.query:
        candidates &= scan.query_seqs(services, crit.query) if scan is not None else (found or set())
    if crit.after is not None or crit.before is not None:
        times = scan.times(session) if scan is not None else _times(session, [r for r in rows if r.seq in candidates])
        candidates = {s for s in candidates if _in_window(times.get(s), crit)}
    if crit.custodians:
        # A custodian is a person: every identifier of hers (identity.resolve) is held.
        if scan is not None and contacts is None:
            index = scan.by_contact()
            by_contact = set().union(*(index.get(i, set()) for i in wanted)) & candidates
        else:
            by_contact = {r.seq for r in rows if r.seq in candidates and r.contact and identifier(r.contact) in wanted}
        rest = candidates - by_contact  # once: computed per row it made a window quadratic
        candidates = by_contact | (
            _business_matches(services, session, [r for r in rows if r.seq in rest and r.kind not in ITEMLESS],
                              numbers) if numbers and rest else set())
    linked = _linked_media(session, rows, after, through, scan)
    held_messages = candidates | already(sorted(set(linked.values()) - candidates))
    out = set(candidates) | {seq for seq, message in linked.items() if message in held_messages}
    out |= {r.delivery_seq for r in rows if r.seq in candidates and r.delivery_seq is not None}
    return out


def _is_named(session: Session, ident: str, named: dict[str, bool]) -> bool:
    if ident not in named:
        named[ident] = session.scalar(select(Record.seq).where(Record.contact.in_(_forms({ident}))).limit(1)) is not None
    return named[ident]


def _forms(ids: set[str]) -> list[str]:
    """The contact values records may carry for these identifiers (a phone number with or without +)."""
    return sorted(ids | {"+" + i for i in ids if i.isdigit()})


def _window(after: int, through: int) -> Any:
    return and_(Record.seq > after, Record.seq <= through, Record.kind.not_in(NOT_HELD))


def _contact_rows(session: Session, ids: set[str], after: int, through: int, scan: Scan | None) -> list[Any]:
    """Rows naming one of ``ids`` as their contact (by the ``records.contact`` index)."""
    if scan is not None:
        return [r for r in scan.upto(after, through) if r.contact and identifier(r.contact) in ids]
    out: list[Any] = []
    for part in chunked(_forms(ids), 500):
        out.extend(session.execute(select(*COLUMNS).where(_window(after, through), Record.contact.in_(part))))
    return sorted(out, key=lambda r: r.seq)


def _rows_of(session: Session, seqs: list[int]) -> list[Any]:
    out: list[Any] = []
    for part in chunked(seqs, 500):
        out.extend(session.execute(select(*COLUMNS).where(Record.seq.in_(part), Record.kind.not_in(NOT_HELD))))
    return sorted(out, key=lambda r: r.seq)


def _range_rows(session: Session, after: int, through: int) -> list[Any]:
    return list(session.execute(select(*COLUMNS).where(_window(after, through)).order_by(Record.seq)))


def _time_rows(session: Session, crit: Criteria, after: int, through: int) -> list[Any]:
    """Rows whose own time is in the hold's window: by ``records.occurred_at``, else by their
    delivery's receipt (``journal.delivery_seq``)."""
    stated: list[Any] = [Record.occurred_at.is_not(None)]
    received: list[Any] = []
    if crit.after is not None:
        stated.append(Record.occurred_at >= crit.after)
        received.append(Journal.received_at >= datetime.fromtimestamp(crit.after, timezone.utc))
    if crit.before is not None:
        stated.append(Record.occurred_at < crit.before)
        received.append(Journal.received_at < datetime.fromtimestamp(crit.before, timezone.utc))
    out = list(session.execute(select(*COLUMNS).where(_window(after, through), *stated)))
    own = func.coalesce(Record.delivery_seq, Record.seq)
    out.extend(session.execute(select(*COLUMNS).join(Journal, Journal.delivery_seq == own)
                               .where(_window(after, through), Record.occurred_at.is_(None), *received)))
    return sorted(out, key=lambda r: r.seq)


def _linked_media(session: Session, rows: list[Any], after: int, through: int, scan: Scan | None) -> dict[int, int]:
    """Media record seq -> the seq of the message it belongs to, for the media of the window."""
    if scan is not None:
        media = [r for r in scan.upto(after, through) if r.kind == "media"]
    else:
        media = list(session.execute(select(Record.seq, Record.links).where(
            Record.seq > after, Record.seq <= through, Record.kind == "media")))
    return {r.seq: m for r in media if isinstance(m := (r.links or {}).get("message"), int)}


def _query_seqs(services: Services, query: str, after: int, through: int) -> Iterator[int]:
    while True:
        with identity.contact_aliases(services):  # contact:X means the person, as in search
            found = services.search.matching_seqs(query, after=after, through=through, limit=QUERY_PAGE)
        yield from found
        if len(found) < QUERY_PAGE:
            return
        after = found[-1]


def _times(session: Session, rows: list[Any]) -> dict[int, int]:
    """Each record's own time: its timestamp, else its delivery's receipt (epoch seconds)."""
    out = {r.seq: r.occurred_at for r in rows if r.occurred_at is not None}
    wanted = {r.delivery_seq or r.seq for r in rows if r.occurred_at is None}
    received: dict[int, datetime] = {}
    for part in chunked(sorted(wanted), 500):
        received.update((d, t) for d, t in session.execute(  # type: ignore[misc]
            select(Journal.delivery_seq, Journal.received_at).where(Journal.delivery_seq.in_(part))))
    for r in rows:
        if r.occurred_at is None and (when := received.get(r.delivery_seq or r.seq)) is not None:
            out[r.seq] = int(when.timestamp())
    return out


def _in_window(when: int | None, crit: Criteria) -> bool:
    if when is None:
        return False
    return (crit.after is None or when >= crit.after) and (crit.before is None or when < crit.before)


def _business_matches(services: Services, session: Session, rows: list[Any], wanted: set[str]) -> set[int]:
    """Items whose business phone-number id (or display number) is one of ``wanted`` (decrypted)."""
    if not rows:
        return set()
    seqs = {r.seq for r in rows}
    out: set[int] = set()
    cache: dict[str, bytes | None] = {}
    segments: set[int] = set()
    for part in chunked(sorted(seqs), 500):
        segments.update(session.scalars(select(Record.segment_id).where(Record.seq.in_(part)).distinct()))
    for segment_id in sorted(segments):
        seg = session.get(Segment, segment_id)
        assert seg is not None
        for rec in records.segment_records_at(services, seg, seqs):
            plain = records.decrypt(services, session, rec, cache)
            if plain is None:
                continue
            try:
                payload = json.loads(plain)
            except ValueError:
                continue
            meta = payload.get("metadata") if isinstance(payload, dict) else None
            if isinstance(meta, dict):
                numbers = {meta.get("phone_number_id"), meta.get("display_phone_number")}
                if any(isinstance(n, (str, int)) and identifier(str(n)) in wanted for n in numbers):
                    out.add(rec["seq"])
    return out
