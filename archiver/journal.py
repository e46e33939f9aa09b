"""The journal: the only writer of new evidence.

Every accepted body (webhook, capture call), every audit event and every fetched-media
notice becomes one journal row, byte-exact, committed before the caller answers. The
sealer turns journal rows into sealed records later.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from typing import Any

from sqlalchemy.orm import Session

from archiver.catalog import Journal

SOURCES = ("webhook", "capture_message", "consent", "audit", "media")


def append_delivery(session: Session, source: str, body: bytes, meta: dict[str, Any]) -> int:
    """Add a raw delivery to the journal (caller commits); return its journal id.

    ``meta`` holds what the request said about itself (signature header, remote address,
    content type, the authenticated token name) and never content.
    """
    if source not in SOURCES:
        raise ValueError(f"unknown journal source {source!r}")
    row = Journal(source=source, body=body, body_sha256=hashlib.sha256(body).hexdigest(), meta=meta)
    session.add(row)
    session.flush()
    return row.id


def append_audit(session: Session, event: str, actor: str | None, **details: Any) -> int:
    """Journal an audit event (who did what); it is sealed in the chain like a message."""
    body = {"event": event, "actor": actor, "at": datetime.now(timezone.utc).isoformat(), **details}
    raw = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return append_delivery(session, "audit", raw, {"event": event})


def append_media(session: Session, notice: dict[str, Any]) -> int:
    """Journal a stored attachment so the sealer links it to its message in the chain."""
    raw = json.dumps(notice, sort_keys=True, separators=(",", ":")).encode()
    return append_delivery(session, "media", raw, {})
