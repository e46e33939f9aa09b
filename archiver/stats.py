"""Counts for ``archiver stats --json`` and ``GET /api/v1/stats``."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from archiver.catalog import DuplicateHit, Journal, Media, Record, archive_id, chain_head
from archiver.errors import ArchiverError

ITEM_EXCLUDED = ("delivery", "audit", "media")
INDEX_STATES = ("built", "not-built", "foreign", "unavailable")
"""``built``: the index holds this archive up to ``indexed``; ``not-built``: it records no
state (new, wiped or reset: the next index run rebuilds it); ``foreign``: it was built for
another archive (``archiver reindex`` replaces it); ``unavailable``: it cannot be asked."""


def collect(session: Session, search: Any = None) -> dict[str, Any]:
    """Deliveries, distinct items by kind, duplicates, quarantine, pending, media, chain tip,
    and, given the ``search`` index (a SearchIndex), its state and lag."""
    by_kind = dict(session.execute(select(Record.kind, func.count()).group_by(Record.kind)).all())
    media = dict(session.execute(select(Media.state, func.count()).group_by(Media.state)).all())
    head = chain_head(session)
    out = {
        "deliveries": by_kind.get("delivery", 0),
        "items": {k: n for k, n in sorted(by_kind.items()) if k not in ITEM_EXCLUDED},
        "audit": by_kind.get("audit", 0),
        "duplicates": session.scalar(select(func.count()).select_from(DuplicateHit)) or 0,
        "quarantined": by_kind.get("quarantine", 0),
        "pending": session.scalar(select(func.count()).select_from(Journal).where(Journal.sealed.is_(False))) or 0,
        "media": {"stored": media.get("stored", 0), "pending": media.get("pending", 0), "failed": media.get("failed", 0)},
        "chain": {"seq": head.seq, "hash": head.hash},
    }
    if search is not None:
        out["index"] = index_status(search, archive_id(session), head.seq)
    return out


def index_status(search: Any, archive: str, head: int) -> dict[str, Any]:
    """``{"state", "indexed", "lag"}`` of ``search`` for this archive at chain head ``head``
    (``indexed`` and ``lag`` are None where the index cannot tell them)."""
    try:
        state = search.state()
    except ArchiverError as exc:  # down, or a search URL the install cannot open
        return {"state": "unavailable", "indexed": None, "lag": None, "error": exc.code}
    if state is None:
        return {"state": "not-built", "indexed": 0, "lag": head}
    if state.archive != archive:
        return {"state": "foreign", "indexed": None, "lag": None}
    return {"state": "built", "indexed": state.seq, "lag": max(head - state.seq, 0)}
