"""Listing sealed audit and quarantine records, with filters and a seq cursor.

Both lists read the catalog for the candidates (kind, time from the journal entry, seq
cursor) and decrypt each record for what only its payload holds (the audit event's actor
and details, the quarantine reason). ``archiver audit list`` / ``quarantine list`` and
``GET /api/v1/audit`` / ``GET /api/v1/quarantine`` take the same filters, parsed here, and
every listing is itself audited by its caller.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from archiver.catalog import Journal, Record
from archiver.errors import IntegrityError, ValidationError
from archiver.params import SEQ_MAX, bounded_int
from archiver.records import Reader
from archiver.services import Services

DEFAULT_LIMIT = 50
MAX_LIMIT = 1000
ORDERS = ("newest", "oldest")
OWN = ("audit", "job_run")  # records that are their own delivery (their type: the event or job)
_CHUNK = 200  # catalog rows read per round while a decrypted filter drops some


@dataclass(frozen=True)
class Filters:
    """What to list. ``match``: audit event names (exact), or text the quarantine reason contains."""

    since: datetime | None = None
    until: datetime | None = None
    match: tuple[str, ...] = ()
    limit: int = DEFAULT_LIMIT
    cursor: int | None = None  # the ``next_cursor`` of the previous page
    order: str = "newest"

    def as_dict(self, match_field: str) -> dict[str, Any]:
        """For the audit record of a listing, and the reply."""
        out = asdict(self)
        out[match_field] = list(out.pop("match"))
        out["since"] = self.since.isoformat() if self.since else None
        out["until"] = self.until.isoformat() if self.until else None
        return out


def parse_time(field: str, text: str | None) -> datetime | None:
    """ISO 8601 date or date-time (no zone means UTC). Raises ValidationError naming ``field``."""
    if text is None or text == "":
        return None
    try:
        when = datetime.fromisoformat(text.strip().replace("z", "Z"))
        return when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when.astimezone(timezone.utc)
    except (ValueError, OverflowError) as exc:  # OverflowError: 0001-01-01T00:00+01:00 has no UTC time
        raise ValidationError(field, "must be an ISO 8601 date or time, e.g. 2026-12-01 or 2026-12-01T09:30:00Z") from exc


def _text(value: str | int | None) -> str | None:
    """A filter as text: the CLI passes ints, the API strings."""
    return None if value is None else str(value)


def parse_filters(args: Mapping[str, Any], match_field: str) -> Filters:
    """Filters from request arguments or CLI options (strings or None).

    Fields: ``since``, ``until``, ``match_field`` (``kind`` or ``reason``, comma-separated),
    ``limit`` (1..1000), ``cursor`` (a seq), ``order`` (newest|oldest).
    Raises ValidationError naming the field (an unknown one too).
    """
    for name in args:
        if name not in ("since", "until", match_field, "limit", "cursor", "order"):
            raise ValidationError(name, "unknown parameter")
    since, until = parse_time("since", args.get("since")), parse_time("until", args.get("until"))
    if since and until and since > until:
        raise ValidationError("until", "must not be before since")
    order = args.get("order") or "newest"
    if order not in ORDERS:
        raise ValidationError("order", f"must be one of {', '.join(ORDERS)}")
    raw_match = args.get(match_field) or ""
    match = tuple(m.strip() for m in str(raw_match).split(",") if m.strip())
    if any(len(m) > 200 or not m.isprintable() for m in match):
        # (PostgreSQL refuses a NUL in text: that must be a 400 here, not a 500 there)
        raise ValidationError(match_field, "each value must be printable text of at most 200 characters")
    limit = bounded_int(_text(args.get("limit")), "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    assert limit is not None
    return Filters(since, until, match, limit, (bounded_int(cursor, "cursor", 0, 1, SEQ_MAX) if (cursor := _text(args.get("cursor"))) else None), order)


def _candidates(session: Session, kind: str, f: Filters) -> Iterator[tuple[Record, Journal]]:
    """Catalog rows of ``kind`` with their journal entry, in ``f.order``, after the cursor and in the time window."""
    # An audit record is its own delivery; a quarantine record points at the delivery it quarantines.
    joined = Journal.delivery_seq == (Record.seq if kind in OWN else Record.delivery_seq)
    base = select(Record, Journal).join(Journal, joined).where(Record.kind == kind)
    if kind in OWN and f.match:
        base = base.where(Record.type.in_(f.match))
    if f.since:
        base = base.where(Journal.received_at >= f.since)
    if f.until:
        base = base.where(Journal.received_at <= f.until)
    newest = f.order == "newest"
    cursor = f.cursor
    while True:
        q = base
        if cursor is not None:
            q = q.where(Record.seq < cursor if newest else Record.seq > cursor)
        rows = session.execute(q.order_by(Record.seq.desc() if newest else Record.seq).limit(_CHUNK)).all()
        yield from rows
        if len(rows) < _CHUNK:
            return
        cursor = rows[-1][0].seq


def _payload(reader: Reader, row: Record) -> dict[str, Any] | None:
    """The decrypted JSON payload of ``row``; None once shredded."""
    _, sealed, index = reader.sealed(row)
    plain = reader.plaintext(sealed[index])
    if plain is None:
        return None
    data = json.loads(plain)  # canonical JSON the archive wrote itself
    return data if isinstance(data, dict) else {"value": data}


def _page(items: list[dict[str, Any]], f: Filters, more: bool, match_field: str) -> dict[str, Any]:
    return {"items": items, "next_cursor": items[-1]["seq"] if more and items else None,
            "filters": f.as_dict(match_field)}


def audit_list(services: Services, session: Session, f: Filters) -> dict[str, Any]:
    """One page of sealed audit records: ``items``, ``next_cursor`` (None on the last page), ``filters``."""
    reader = Reader(services, session)
    items: list[dict[str, Any]] = []
    more = False
    for row, entry in _candidates(session, "audit", f):
        if len(items) == f.limit:
            more = True
            break
        body = _payload(reader, row)
        details = {k: v for k, v in (body or {}).items() if k not in ("event", "actor", "at")}
        items.append({"seq": row.seq, "at": entry.received_at.isoformat(), "event": row.type,
                      "actor": body.get("actor") if body else None, "details": details if body is not None else None})
    return _page(items, f, more, "kind")


def each_record(services: Services, session: Session, kind: str, f: Filters) -> Iterator[dict[str, Any]]:
    """Every sealed record of ``kind`` (``audit`` or ``job_run``: own records) in ``f``'s window and
    order, decrypted, without a limit: ``seq``, ``at``, ``event`` (the audit event or the job),
    ``actor`` and ``details`` (None once shredded, or when its segment cannot be read: then
    ``unreadable`` names why). For reports (``archiver.reports``), which list a whole period."""
    reader = Reader(services, session)
    for row, entry in _candidates(session, kind, f):
        try:
            body, unreadable = _payload(reader, row), None
        except IntegrityError as exc:  # a broken segment: the integrity report names it
            body, unreadable = None, str(exc)
        details = {k: v for k, v in (body or {}).items() if k not in ("event", "actor", "at")}
        yield {"seq": row.seq, "at": entry.received_at.isoformat(), "event": row.type,
               "actor": body.get("actor") if body else None, "details": details if body is not None else None,
               **({"unreadable": unreadable} if unreadable else {})}


def quarantine_list(services: Services, session: Session, f: Filters) -> dict[str, Any]:
    """One page of quarantine records: why, which delivery (its bytes: ``show <delivery_seq> --raw``), its hash."""
    reader = Reader(services, session)
    wanted = [m.casefold() for m in f.match]
    items: list[dict[str, Any]] = []
    more = False
    for row, entry in _candidates(session, "quarantine", f):
        body = _payload(reader, row)
        reason = body.get("reason") if body else None
        if wanted and not (isinstance(reason, str) and any(w in reason.casefold() for w in wanted)):
            continue
        if len(items) == f.limit:
            more = True
            break
        items.append({"seq": row.seq, "received_at": entry.received_at.isoformat(), "source": entry.source,
                      "reason": reason, "delivery_seq": row.delivery_seq, "body_sha256": entry.body_sha256})
    return _page(items, f, more, "reason")
