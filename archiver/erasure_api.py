"""Erasure over HTTP (role compliance); see :mod:`archiver.erasure`.

``POST /api/v1/erasures`` with ``{"contact", "reason", "dry_run"}``: the erasure is sealed as
an ``erasure`` decision record before any key is shredded; the answer carries the plan and,
unless a dry run, the signed erasure certificate. ``GET /api/v1/erasures/<id>`` shows a run
(the sealed plan, whether it was applied) with a certificate signed at that moment.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, request

from archiver import erasure
from archiver.auth import require
from archiver.errors import ValidationError
from archiver.journal import append_audit
from archiver.roles import ERASERS

bp = Blueprint("erasures", __name__)


@bp.post("/api/v1/erasures")
@require(*ERASERS)
def erase() -> tuple[Response, int]:
    """Erase a person (or, with ``dry_run``, say what erasing her would do)."""
    services: Any = current_app.extensions["archiver"]
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ValidationError("body", "must be a JSON object {contact, reason, dry_run}")
    dry_run = body.get("dry_run", False)
    if not isinstance(dry_run, bool):
        raise ValidationError("dry_run", "must be true or false")
    out = erasure.run(services, body.get("contact"), body.get("reason"), g.actor, dry_run=dry_run)
    return jsonify(out), 200 if dry_run else 201


@bp.get("/api/v1/erasures/<erasure_id>")
@require(*ERASERS)
def show(erasure_id: str) -> Response:
    """One erasure run and its certificate (404: no erasure has that id); viewing it is audited."""
    services: Any = current_app.extensions["archiver"]
    out = erasure.show(services, erasure_id)  # 404 before anything is journaled
    with services.sessions.begin() as session:
        append_audit(session, "erasure_viewed", g.actor, erasure=out["erasure_id"])
    return jsonify(out)
