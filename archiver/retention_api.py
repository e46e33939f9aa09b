"""Retention of sealed records over HTTP (roles compliance, admin); see :mod:`archiver.retention_extend`.

``POST /api/v1/retention/extend`` does what ``archiver retention extend`` does: the
decision is sealed before it acts, then records of the class and their WORM objects are
kept until the new date at least; shortening is refused.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, request

from archiver import retention_extend
from archiver.auth import require
from archiver.errors import ValidationError
from archiver.roles import RETAINERS

bp = Blueprint("retention", __name__)


@bp.post("/api/v1/retention/extend")
@require(*RETAINERS)
def extend() -> tuple[Response, int]:
    """``{"class", "to", "reason"}``: extend; 200 with what changed, or 202 when another sealer
    runs (it seals and applies the decision on its next run)."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ValidationError("body", "must be a JSON object")
    cls = body.get("class")
    if not isinstance(cls, str) or not cls.strip() or len(cls) > 64 or "\x00" in cls:
        raise ValidationError("class", "must be a retention class name")
    until = retention_extend.parse_until(body.get("to"))
    reason = body.get("reason")
    if reason is not None and (not isinstance(reason, str) or len(reason) > 2000 or "\x00" in reason):
        raise ValidationError("reason", "must be text of at most 2000 characters")
    services: Any = current_app.extensions["archiver"]
    done = retention_extend.extend(services, cls.strip(), until, reason, g.actor)
    if done is None:
        return jsonify(status="decided", retention_class=cls.strip(), retain_until=until.isoformat()), 202
    return jsonify(status="applied", retention_class=done.retention_class, retain_until=done.retain_until.isoformat(),
                   records=done.records, segments=done.segments, decision_seq=done.decision_seq), 200
