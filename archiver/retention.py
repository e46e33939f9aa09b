"""Retention applied: the facts a record is classed by, when its retention ends, how long
its WORM objects are locked.

``retention_policy`` parses the file and classifies; this module feeds it the facts of a
record about to be sealed and turns the class into dates:

- a record's ``retain_until`` is its own time plus its class's period (``retention_start``:
  a message's, status's or history message's ``timestamp``, else its delivery's receipt),
  rounded up to the whole second; never the time it was sealed;
- a ``policy`` or ``decision`` record (the service's own decisions) is kept at least as long
  as the longest class of the policy in force, so the proof of which rule applied outlives
  every record it classed;
- a segment (and its checkpoint) is locked until the latest ``retain_until`` of its records,
  rounded up to the next midnight UTC when its class keeps records a day or more (whole days
  lock cleanly on S3, as before), to the whole second for shorter classes (so a ``PT20S``
  test class locks for seconds, not a day); and never less than ``MIN_LOCK`` from the moment
  it is put (a record whose retention had already passed when sealed, e.g. a 2023 history
  message in a 2y class, still goes to WORM under a lock the store accepts).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

from archiver.retention_policy import Facts, Policy, RetentionClass

MIN_LOCK = timedelta(seconds=5)
_DAY = 86400

# What direction a record kind has when the kind alone says it.
_DIRECTION = {"message": "inbound", "echo": "outbound", "outbound": "outbound", "status": "outbound"}


def whole_second(when: datetime) -> datetime:
    """``when`` rounded up to the second (rounding down would shorten retention)."""
    if not when.microsecond and when.tzinfo is UTC:
        return when  # already whole (most records: their own time is an epoch second)
    return datetime.fromtimestamp(math.ceil(when.timestamp()), UTC)


def at_least_soon(until: datetime, now: datetime | None = None) -> datetime:
    """``until``, or ``MIN_LOCK`` from ``now`` if that is later, to the second: a lock date the
    store accepts (S3 keeps whole seconds, so the catalog can hold exactly what it set)."""
    return whole_second(max(until, (now or datetime.now(UTC)) + MIN_LOCK))


def longest(policy: Policy, start: datetime) -> datetime:
    """When the longest class of ``policy`` would end for a record starting at ``start``."""
    return max(c.retain_until(start) for c in policy.classes)


def short_class(c: RetentionClass) -> bool:
    """Whether the class keeps records less than a day (its locks are not rounded to midnight)."""
    return c.retain.months == 0 and c.retain.seconds < _DAY


def segment_lock(ends: list[datetime], short: bool) -> datetime:
    """The lock of a segment whose records' retention ends at ``ends``."""
    last = max(ends)
    if short:
        return whole_second(last)
    midnight = last.replace(hour=0, minute=0, second=0, microsecond=0)
    return midnight if midnight == last else midnight + timedelta(days=1)


def facts(kind: str, payload: dict[str, Any] | None, contact: str | None, business: str | None) -> Facts:
    """The facts ``classify`` looks at for one record (never its content).

    ``payload`` is an item's payload (None for deliveries, audit, media, policy and decision
    records). Direction comes from the kind (message: inbound; echo, outbound, status:
    outbound), for history messages from the extractor's ``direction`` (else: only the
    business's own carry ``to``). The template category is a status's pricing category or a template event's
    category. Contacts are the record's contact plus the wa_id and BSUID of the payload's
    contact entry.
    """
    direction = _DIRECTION.get(kind)
    category: str | None = None
    contacts = [contact] if contact else []
    if payload:
        message = payload.get("message")
        if kind == "history_message":  # the extractor's "in"/"out", else: only the business's carry "to"
            given = {"in": "inbound", "out": "outbound"}.get(str(payload.get("direction")))
            direction = given or ("outbound" if isinstance(message, dict) and message.get("to") else "inbound")
        category = _category(kind, payload)
        entry = payload.get("contact")
        if isinstance(entry, dict):
            contacts += [v for k in ("wa_id", "user_id") if isinstance(v := entry.get(k), str) and v]
    return Facts(kind=kind, business_number=business, direction=direction, template_category=category,
                 contacts=tuple(dict.fromkeys(contacts)))


def _category(kind: str, payload: dict[str, Any]) -> str | None:
    found: Any = None
    if kind == "status" and isinstance(status := payload.get("status"), dict):
        pricing = status.get("pricing")
        found = pricing.get("category") if isinstance(pricing, dict) else None
    elif kind == "template_event":
        for name in ("value", "template", "event"):
            obj = payload.get(name)
            if isinstance(obj, dict):
                found = obj.get("new_category") or obj.get("category") or obj.get("message_template_category") or found
    return found.upper() if isinstance(found, str) else None
