"""Disposition review over HTTP (roles compliance, admin); see :mod:`archiver.disposition`.

Approvals and rejections are sealed as ``decision`` records before they act; a listing is
audited like every other read.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, request

from archiver import disposition
from archiver.auth import REVIEWERS, require
from archiver.journal import append_audit

bp = Blueprint("dispositions", __name__)


def _services() -> Any:
    return current_app.extensions["archiver"]


@bp.get("/api/v1/dispositions")
@require(*REVIEWERS)
def list_batches() -> Response:
    """Every review batch, newest first (audited)."""
    services = _services()
    with services.sessions.begin() as session:
        append_audit(session, "dispositions_listed", g.actor)
    return jsonify(batches=disposition.list_batches(services))


@bp.post("/api/v1/dispositions/<batch_id>/approve")
@require(*REVIEWERS)
def approve(batch_id: str) -> Response:
    """Approve the batch; the next disposition run destroys its keys."""
    return jsonify(disposition.decide(_services(), batch_id, g.actor, approve=True))


@bp.post("/api/v1/dispositions/<batch_id>/reject")
@require(*REVIEWERS)
def reject(batch_id: str) -> Response:
    """``{"reason": ...}``: reject the batch; its keys are kept."""
    body = request.get_json(silent=True)
    reason = body.get("reason") if isinstance(body, dict) else None
    return jsonify(disposition.decide(_services(), batch_id, g.actor, approve=False, reason=reason))
