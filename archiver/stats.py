"""Counts for ``archiver stats --json`` and ``GET /api/v1/stats``."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from archiver.catalog import DuplicateHit, Journal, Media, Record, chain_head, cursor_value

ITEM_EXCLUDED = ("delivery", "audit", "media")


def collect(session: Session) -> dict[str, Any]:
    """Deliveries, distinct items by kind, duplicates, quarantine, pending, media, chain tip, index."""
    by_kind = dict(session.execute(select(Record.kind, func.count()).group_by(Record.kind)).all())
    media = dict(session.execute(select(Media.state, func.count()).group_by(Media.state)).all())
    head = chain_head(session)
    indexed = cursor_value(session, "index")
    return {
        "deliveries": by_kind.get("delivery", 0),
        "items": {k: n for k, n in sorted(by_kind.items()) if k not in ITEM_EXCLUDED},
        "audit": by_kind.get("audit", 0),
        "duplicates": session.scalar(select(func.count()).select_from(DuplicateHit)) or 0,
        "quarantined": by_kind.get("quarantine", 0),
        "pending": session.scalar(select(func.count()).select_from(Journal).where(Journal.sealed.is_(False))) or 0,
        "media": {"stored": media.get("stored", 0), "pending": media.get("pending", 0), "failed": media.get("failed", 0)},
        "chain": {"seq": head.seq, "hash": head.hash},
        "index": {"indexed": indexed, "lag": max(head.seq - indexed, 0)},
    }
