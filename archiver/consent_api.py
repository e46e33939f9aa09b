"""The consent ledger over HTTP: a contact's ledger and state, consent at a time (roles
compliance, auditor, admin; audited), and confirming or dismissing a detected opt-out
(roles compliance, admin; sealed first). See :mod:`archiver.consent`."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, request

from archiver import consent, params
from archiver.auth import OVERSIGHT, REVIEWERS, require
from archiver.errors import ValidationError
from archiver.journal import append_audit

bp = Blueprint("consent", __name__)


def _services() -> Any:
    return current_app.extensions["archiver"]


def _audit(event: str, **details: Any) -> None:
    with _services().sessions.begin() as session:
        append_audit(session, event, g.actor, **details)


@bp.get("/api/v1/consent/<contact>")
@require(*OVERSIGHT)
def show(contact: str) -> Response:
    """The contact's ledger (every identifier of the person) and each category's state now."""
    services = _services()
    consent.sync(services)
    with services.sessions() as session:
        out = consent.show(session, contact)
    _audit("consent_viewed", contact=contact)
    return jsonify(out)


@bp.get("/api/v1/consent/<contact>/at")
@require(*OVERSIGHT)
def at(contact: str) -> Response:
    """``?time=...[&category=marketing]``: was consent valid then, and which ledger entries decide it."""
    moment = consent.parse_moment(request.args.get("time"), "time")
    category = request.args.get("category", "marketing")
    if not category or len(category) > 64:
        raise ValidationError("category", "must be a category name (e.g. marketing)")
    services = _services()
    consent.sync(services)
    with services.sessions() as session:
        out = consent.state_at(session, contact, category, moment)
    _audit("consent_viewed", contact=contact, at=out["time"], category=category)
    return jsonify(out)


def _decide(seq: str, decision: str) -> Response:
    body = request.get_json(silent=True)
    if body is not None and not isinstance(body, dict):
        raise ValidationError("body", "must be a JSON object")
    record_seq = params.seq_arg(seq, "seq")
    return jsonify(consent.decide(_services(), g.actor, record_seq, decision, (body or {}).get("note")))


@bp.post("/api/v1/consent/detections/<seq>/confirm")
@require(*REVIEWERS)
def confirm(seq: str) -> Response:
    """``{"note": ...}``: confirm the opt-out detected in message record ``seq`` (sealed first)."""
    return _decide(seq, "confirm")


@bp.post("/api/v1/consent/detections/<seq>/dismiss")
@require(*REVIEWERS)
def dismiss(seq: str) -> Response:
    """``{"note": ...}``: dismiss it: it no longer revokes consent (sealed first)."""
    return _decide(seq, "dismiss")
