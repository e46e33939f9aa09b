"""What a principal may read: admin no message content at all, by console session or API
token alike (its role is not among :data:`~archiver.roles.READERS`, so ``require()`` refuses
it first; :func:`check_content` says it again), and a legal console user only the records
that active holds of its matters hold (``held_records``). Tokens carry no matters: a legal
token reads all its role allows. Shared by the console pages and the JSON API. On the holds pages a legal
user reaches only its matters' holds (:func:`check_matter`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from archiver.catalog import HeldRecord, Hold
from archiver.console.users import Principal
from archiver.errors import Forbidden
from archiver.roles import READERS


def check_content(who: Principal | None) -> None:
    """Raise Forbidden when ``who`` has a role that reads no content (admin), session or token."""
    if who is not None and who.role not in READERS:
        raise Forbidden(f"role {who.role} reads no message content")


def covered(session: Session, matters: Iterable[str], seqs: Iterable[int]) -> set[int]:
    """Those of ``seqs`` an active hold of one of ``matters`` holds."""
    wanted, names = list(seqs), list(matters)
    if not wanted or not names:
        return set()
    rows = session.scalars(select(HeldRecord.seq).join(Hold, Hold.id == HeldRecord.hold_id).where(
        Hold.matter_id.in_(names), Hold.status == "active", HeldRecord.seq.in_(wanted)))
    return set(rows)


def check_record(session: Session, who: Principal | None, seq: int) -> None:
    """Raise Forbidden when ``who`` reads no content, or is scoped and no hold of its matters holds ``seq``."""
    check_content(who)
    if who is not None and who.matters is not None and seq not in covered(session, who.matters, [seq]):
        raise Forbidden(f"record {seq} is not under a hold of your matters",
                        hint="a legal user reads only what its matters' holds cover")


def filter_result(session: Session, who: Principal | None, result: dict[str, Any]) -> dict[str, Any]:
    """A search result as ``who`` may see it: for a scoped principal only the hits its matters'
    holds cover, with ``total`` and ``facets`` of those hits alone and ``scoped`` true.
    Raises Forbidden for a principal who reads no content."""
    check_content(who)
    if who is None or who.matters is None:
        return result
    keep = covered(session, who.matters, [h["seq"] for h in result["hits"]])
    hits = [h for h in result["hits"] if h["seq"] in keep]
    return {**result, "hits": hits, "total": len(hits), "facets": {}, "scoped": True}


def check_matter(who: Principal | None, matter_id: str) -> None:
    """Raise Forbidden when ``who`` is scoped to matters and ``matter_id`` is not one of them
    (the holds pages: a legal user sees and acts on the holds of its matters only)."""
    if who is not None and who.matters is not None and matter_id not in who.matters:
        raise Forbidden(f"matter {matter_id} is not one of your matters",
                        hint="a legal user sees and acts on the holds of its matters only")
