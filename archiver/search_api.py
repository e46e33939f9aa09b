"""Search and conversation views (roles compliance, legal, auditor: READERS, not admin).

Every search and every conversation view is journaled as an ``audit`` record (who, query,
result count) and so sealed in the chain like a message.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone
from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, request

from archiver import identity, params
from archiver.console import scope
from archiver.auth import READERS, require
from archiver.errors import ArchiverError, ValidationError
from archiver.journal import append_audit
from archiver.search import MAX_SIZE, MAX_WINDOW, SORTS

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


def check_paging(page: int, size: int, sort: str) -> None:
    """Raise ValidationError naming ``sort``, ``size`` or ``page``, whichever is unusable."""
    if sort not in SORTS:
        raise ValidationError("sort", f"must be one of {', '.join(SORTS)}")
    if not 1 <= size <= MAX_SIZE:
        raise ValidationError("size", f"must be between 1 and {MAX_SIZE}")
    if page < 1:
        raise ValidationError("page", "must be 1 or more")
    if page * size > MAX_WINDOW:
        raise ValidationError("page", f"paging stops at result {MAX_WINDOW}; narrow the query")


def run_search(services: Any, actor: str, q: str, page: int, size: int, sort: str) -> dict[str, Any]:
    """Search and audit it (the attempt is audited even when it fails). Raises ArchiverError."""
    try:
        check_paging(page, size, sort)
        with identity.contact_aliases(services):  # contact:X finds every identifier of the person
            result = services.search.search(q, page=page, size=size, sort=sort)
    except ArchiverError as exc:
        _audit(services, "search", actor, query=q, page=page, error=exc.code)
        raise
    _audit(services, "search", actor, query=q, page=page, sort=sort, results=result.total)
    return result_dict(result)


def _audit(services: Any, event: str, actor: str, **details: Any) -> None:
    with services.sessions.begin() as session:
        append_audit(session, event, actor, **details)


@bp.get("/api/v1/search")
@require(*READERS)
def search() -> Response:
    """``?q=&page=&size=&sort=newest|oldest``: hits, total and facets."""
    services = current_app.extensions["archiver"]
    q = request.args.get("q", "")
    page = params.bounded_int(request.args.get("page"), "page", 1, 1, MAX_WINDOW)
    size = params.bounded_int(request.args.get("size"), "size", 20, 1, MAX_SIZE)
    scope.check_content(g.principal)  # refused before the search is run and audited
    out = run_search(services, g.actor, q, page, size, request.args.get("sort", "newest"))
    with services.sessions() as session:  # a legal console user: only what its matters' holds cover
        return jsonify(scope.filter_result(session, g.principal, out))


@bp.get("/api/v1/conversations/<contact>")
@require(*READERS)
def conversation(contact: str) -> Response:
    """The thread with ``contact`` (all her identifiers) in time order, around ``?around=<seq>`` if given."""
    services = current_app.extensions["archiver"]
    scope.check_content(g.principal)  # admin reads no message content (session or token)
    around = request.args.get("around")
    around_seq = params.seq_arg(around, "around") if around else None
    size = params.bounded_int(request.args.get("size"), "size", 50, 1, MAX_SIZE)
    with services.sessions() as session:  # every identifier of the person (phone, wa_id, BSUID)
        aliases = sorted(identity.resolve(session, contact) - {contact})
    docs = services.search.conversation(contact, around_seq, size, aliases)
    if g.principal.matters is not None:  # a legal console user: only what its matters' holds cover
        with services.sessions() as session:
            keep = scope.covered(session, g.principal.matters, [d["seq"] for d in docs])
        docs = [d for d in docs if d["seq"] in keep]
    _audit(services, "conversation_viewed", g.actor, contact=contact, around=around_seq, results=len(docs))
    return jsonify({"contact": contact, "around": around_seq, "messages": docs})
