"""Matters and litigation holds over HTTP (roles legal, admin); see :mod:`archiver.holds`.

Each decision is sealed in the chain before it acts; a listing or view of holds is
itself audited like every other read.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, request

from archiver import holds
from archiver.auth import HOLDERS, require
from archiver.errors import ValidationError
from archiver.journal import append_audit

bp = Blueprint("holds", __name__)


def _services() -> Any:
    return current_app.extensions["archiver"]


def _body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ValidationError("body", "must be a JSON object")
    return body


def _audit(event: str, **details: Any) -> None:
    with _services().sessions.begin() as session:
        append_audit(session, event, g.actor, **details)


@bp.post("/api/v1/matters")
@require(*HOLDERS)
def create_matter() -> tuple[Response, int]:
    """``{"name": ...}``: a new matter (sealed first); answers its id."""
    body = _body()
    matter = holds.create_matter(_services(), g.actor, body.get("name"))
    return jsonify(id=matter, name=str(body["name"]).strip()), 201


@bp.post("/api/v1/holds")
@require(*HOLDERS)
def create_hold() -> tuple[Response, int]:
    """``{"matter", "name", "reason", "custodians": [...], "after", "before", "query"}``: a new hold."""
    body = _body()
    custodians = body.get("custodians") or []
    if not isinstance(custodians, list):
        raise ValidationError("custodians", "must be a list of wa_ids, phone numbers or phone-number ids")
    criteria = holds.parse_criteria(custodians, body.get("after"), body.get("before"), body.get("query"))
    services = _services()
    hold = holds.create_hold(services, g.actor, body.get("matter"), body.get("name"), criteria, body.get("reason"))
    return jsonify(holds.show(services, hold)), 201


@bp.get("/api/v1/holds")
@require(*HOLDERS)
def list_holds() -> Response:
    """Every hold (criteria, status, counts), newest first (audited)."""
    _audit("holds_listed")
    return jsonify(holds=holds.list_holds(_services()))


@bp.get("/api/v1/holds/<hold_id>")
@require(*HOLDERS)
def show_hold(hold_id: str) -> Response:
    """One hold with its criteria, status, counts and history (audited)."""
    services = _services()
    out = holds.show(services, hold_id)  # 404 before anything is journaled
    _audit("hold_viewed", hold=hold_id)
    return jsonify(out)


@bp.get("/api/v1/holds/<hold_id>/certificate")
@require(*HOLDERS)
def hold_certificate(hold_id: str) -> Response:
    """The hold's signed certificate (``archiver.hold_certificate``); generating it is audited."""
    from archiver import hold_certificate

    return jsonify(hold_certificate.generate(_services(), hold_id, g.actor))


@bp.patch("/api/v1/holds/<hold_id>")
@require(*HOLDERS)
def edit_hold(hold_id: str) -> Response:
    """``{"reason", "add_custodians": [...], "remove_custodians": [...], "after", "before", "query"}``:
    change the hold's criteria (sealed first; ``""`` clears after, before or query). Answers the hold."""
    body = _body()
    changes: dict[str, Any] = {}
    for name in ("add_custodians", "remove_custodians"):
        value = body.get(name) or []
        if not isinstance(value, list):
            raise ValidationError(name, "must be a list of wa_ids, phone numbers or phone-number ids")
        changes[name] = value
    for name in ("after", "before", "query"):
        if name in body:
            changes[name] = body[name] if body[name] is not None else ""
    unknown = sorted(set(body) - {"reason", "add_custodians", "remove_custodians", "after", "before", "query"})
    if unknown:
        raise ValidationError(unknown[0], "is not a field of a hold edit")
    return jsonify(holds.edit_hold(_services(), g.actor, hold_id, body.get("reason"), **changes))


@bp.post("/api/v1/holds/<hold_id>/release")
@require(*HOLDERS)
def release_hold(hold_id: str) -> Response:
    """``{"reason": ...}``: release the hold (sealed first); legal holds no other hold needs go OFF."""
    body = _body()
    services = _services()
    holds.release_hold(services, g.actor, hold_id, body.get("reason"))
    return jsonify(holds.show(services, hold_id))
