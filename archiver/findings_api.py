"""Review findings over HTTP: list (roles compliance, auditor, admin; audited) and resolve with
a note (roles compliance, admin; sealed first). See :mod:`archiver.findings`."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, request

from archiver import findings
from archiver.auth import OVERSIGHT, REVIEWERS, require
from archiver.errors import ValidationError
from archiver.journal import append_audit

bp = Blueprint("findings", __name__)


def _services() -> Any:
    return current_app.extensions["archiver"]


@bp.get("/api/v1/findings")
@require(*OVERSIGHT)
def list_findings() -> Response:
    """``?kind=consent|template|capture&status=open|resolved``: findings, oldest first."""
    services = _services()
    kind, status = request.args.get("kind") or None, request.args.get("status") or None
    out = findings.list_findings(services, kind, status)
    with services.sessions.begin() as session:
        append_audit(session, "findings_listed", g.actor, kind=kind, status=status, results=len(out))
    return jsonify(findings=out)


@bp.post("/api/v1/findings/<finding_id>/resolve")
@require(*REVIEWERS)
def resolve(finding_id: str) -> Response:
    """``{"note": ...}``: resolve the finding (sealed as a finding_resolved decision first)."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ValidationError("body", "must be a JSON object")
    return jsonify(findings.resolve(_services(), g.actor, finding_id, body.get("note")))
