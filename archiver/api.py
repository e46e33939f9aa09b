"""The JSON API for people and tools: health, stats, reading records (search joins later).

Every read of archived content is itself journaled as an ``audit`` record (decision 10).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, request

from archiver import integrity_job, listing, params, records, stats
from archiver.auth import OVERSIGHT, READERS, STATS_READERS, require
from archiver.console import scope
from archiver.journal import append_audit

bp = Blueprint("api", __name__)


def _services() -> Any:
    return current_app.extensions["archiver"]


@bp.get("/healthz")
def healthz() -> tuple[Response, int]:
    """One ping per backend; 200 when the catalog and store answer. ``status`` is ``degraded``
    (still 200) when the last nightly verification found a break, named in ``integrity``."""
    services = _services()
    checks: dict[str, str] = {}
    try:
        with services.sessions() as session:
            stats.chain_head(session)  # type: ignore[attr-defined]  # catalog.chain_head, via stats
        checks["catalog"] = "ok"
    except Exception as exc:  # noqa: BLE001 - health reports every failure as a state
        checks["catalog"] = f"error: {exc.__class__.__name__}"
    try:
        services.store.ping()
        checks["store"] = "ok"
    except Exception as exc:  # noqa: BLE001
        checks["store"] = f"error: {exc.__class__.__name__}"
    ok = all(v == "ok" for v in checks.values())
    integrity: dict[str, object] = {"status": "unknown", "first_error": None}
    if checks["catalog"] == "ok":
        try:
            with services.sessions() as session:
                integrity = integrity_job.state(session)  # one primary-key read
        except Exception as exc:  # noqa: BLE001 - health reports every failure as a state
            integrity = {"status": "unknown", "first_error": None, "error": exc.__class__.__name__}
    status = "error" if not ok else "degraded" if integrity["status"] == "degraded" else "ok"
    return jsonify(ok=ok, status=status, checks=checks, integrity=integrity), 200 if ok else 503


@bp.get("/api/v1/stats")
@require(*STATS_READERS)
def get_stats() -> Response:
    """The same counts as ``archiver stats --json``."""
    services = _services()
    with services.sessions() as session:
        return jsonify(stats.collect(session, services.search))


@bp.get("/api/v1/records/<seq>")
@require(*READERS)
def get_record(seq: str) -> Response:
    """One decrypted record with its raw bytes (base64), delivery, links and proof; the read is audited first."""
    number = params.seq_arg(seq)  # 400 naming the field before anything is journaled
    services = _services()
    with services.sessions() as session:  # a legal console user: only what its matters' holds cover
        scope.check_record(session, g.principal, number)
    with services.sessions.begin() as session:
        append_audit(session, "record_viewed", g.actor, seq=number)
    with services.sessions() as session:
        return jsonify(records.read_record(services, session, number))


def _listing(event: str, match_field: str, run: Any) -> Response:
    """Parse the filters (400 naming the field), audit the listing, then list one page."""
    filters = listing.parse_filters(request.args, match_field)
    services = _services()
    with services.sessions.begin() as session:
        append_audit(session, event, g.actor, **filters.as_dict(match_field))
    with services.sessions() as session:
        return jsonify(run(services, session, filters))


@bp.get("/api/v1/audit")
@require(*OVERSIGHT)
def list_audit() -> Response:
    """Sealed audit records: ``?since=&until=&kind=&limit=&cursor=&order=newest|oldest``."""
    return _listing("audit_listed", "kind", listing.audit_list)


@bp.get("/api/v1/quarantine")
@require(*OVERSIGHT)
def list_quarantine() -> Response:
    """Quarantined deliveries: ``?since=&until=&reason=&limit=&cursor=&order=newest|oldest``."""
    return _listing("quarantine_listed", "reason", listing.quarantine_list)
