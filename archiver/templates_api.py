"""Message templates over HTTP: each template's history (roles compliance, auditor, admin;
audited) and recording a review (roles compliance, admin; sealed first). See
:mod:`archiver.templates` and :mod:`archiver.template_review`."""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, request

from archiver import template_review, templates
from archiver.auth import OVERSIGHT, REVIEWERS, require
from archiver.errors import ValidationError
from archiver.journal import append_audit

bp = Blueprint("templates", __name__)


def _services() -> Any:
    return current_app.extensions["archiver"]


def _audit(**details: Any) -> None:
    with _services().sessions.begin() as session:
        append_audit(session, "templates_viewed", g.actor, **details)


@bp.get("/api/v1/templates")
@require(*OVERSIGHT)
def list_templates() -> Response:
    """Every template the archive knows: state now per language, whether synced, last review."""
    out = templates.list_templates(_services(), int(time.time()))
    _audit(results=len(out))
    return jsonify(templates=out)


@bp.get("/api/v1/templates/<name>")
@require(*OVERSIGHT)
def show(name: str) -> Response:
    """``?language=``: the template's history, snapshots, reviews and sends (each bound to its snapshot)."""
    language = request.args.get("language") or None
    if language is not None and len(language) > 32:
        raise ValidationError("language", "must be a language code (e.g. en_GB)")
    out = templates.show(_services(), name, language, int(time.time()))
    _audit(template=name, language=language)
    return jsonify(out)


@bp.post("/api/v1/templates/<name>/reviews")
@require(*REVIEWERS)
def record_review(name: str) -> Response:
    """``{"decision": "approve"|"retire", "note": ...}``: a review, sealed as a decision record first."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ValidationError("body", "must be a JSON object")
    return jsonify(template_review.record_review(_services(), g.actor, name, body.get("decision"), body.get("note")))
