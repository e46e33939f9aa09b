"""Search and conversation views (roles compliance, legal, auditor, admin).

Every search and every conversation view is journaled as an ``audit`` record (who, query,
result count) and so sealed in the chain like a message.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone
from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, request

from archiver.auth import READERS, require
from archiver.errors import ArchiverError, ValidationError
from archiver.journal import append_audit

bp = Blueprint("search", __name__)


def result_dict(result: Any) -> dict[str, Any]:
    """JSON form of a SearchResult: hits with participants and snippet, total, facets."""
    hits = []
    for h in result.hits:
        hit = dataclasses.asdict(h)
        hit["participants"] = {"from": hit.pop("sender"), "to": hit.pop("recipient"), "contact": hit["contact"]}
        hit["time_iso"] = datetime.fromtimestamp(h.time, timezone.utc).isoformat()
        hits.append(hit)
    return {"total": result.total, "page": result.page, "size": result.size, "hits": hits, "facets": result.facets}


def run_search(services: Any, actor: str, q: str, page: int, size: int, sort: str) -> dict[str, Any]:
    """Search and audit it (the attempt is audited even when it fails). Raises ArchiverError."""
    try:
        result = services.search.search(q, page=page, size=size, sort=sort)
    except ArchiverError as exc:
        _audit(services, "search", actor, query=q, page=page, error=exc.code)
        raise
    except ValueError as exc:
        _audit(services, "search", actor, query=q, page=page, error="bad-paging")
        raise ValidationError("page", str(exc)) from exc
    _audit(services, "search", actor, query=q, page=page, sort=sort, results=result.total)
    return result_dict(result)


def _audit(services: Any, event: str, actor: str, **details: Any) -> None:
    with services.sessions.begin() as session:
        append_audit(session, event, actor, **details)


def _int_arg(name: str, default: int) -> int:
    try:
        return int(request.args.get(name, default))
    except ValueError as exc:
        raise ValidationError(name, "must be an integer") from exc


@bp.get("/api/v1/search")
@require(*READERS)
def search() -> Response:
    """``?q=&page=&size=&sort=newest|oldest``: hits, total and facets."""
    services = current_app.extensions["archiver"]
    q = request.args.get("q", "")
    out = run_search(services, g.actor, q, _int_arg("page", 1), _int_arg("size", 20), request.args.get("sort", "newest"))
    return jsonify(out)


@bp.get("/api/v1/conversations/<contact>")
@require(*READERS)
def conversation(contact: str) -> Response:
    """The thread with ``contact`` in time order, around ``?around=<seq>`` if given."""
    services = current_app.extensions["archiver"]
    around = request.args.get("around")
    around_seq = _int_arg("around", 0) if around else None
    try:
        docs = services.search.conversation(contact, around_seq, _int_arg("size", 50))
    except ValueError as exc:
        raise ValidationError("size", str(exc)) from exc
    _audit(services, "conversation_viewed", g.actor, contact=contact, around=around_seq, results=len(docs))
    return jsonify({"contact": contact, "around": around_seq, "messages": docs})
