"""Signed reports over HTTP; see :mod:`archiver.reports`.

``POST /api/v1/reports`` with ``{"kind", "from", "to"}`` answers the signed PDF
(``application/pdf``; its SHA-256 in ``X-Archiver-Report-Sha256``), written in the read tier.
Roles: ``compliance`` and ``auditor`` for every kind, ``legal`` for ``holds`` only (case
work, not oversight of the archive). Each report is an audit record (``report``).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, g, request

from archiver import reports
from archiver.auth import require
from archiver.errors import Forbidden, ValidationError
from archiver.roles import REPORTERS

bp = Blueprint("reports", __name__)
LEGAL_KINDS = ("holds",)


@bp.post("/api/v1/reports")
@require(*REPORTERS)
def create_report() -> Response:
    """``{"kind": integrity|access|holds|dispositions|consent|templates, "from": D, "to": D}``: the signed PDF."""
    body: Any = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ValidationError("body", "must be a JSON object")
    unknown = set(body) - {"kind", "from", "to"}
    if unknown:
        raise ValidationError(sorted(unknown)[0], "is not a field of a report")
    kind = reports.check_kind(body.get("kind"))
    if str(g.actor).endswith("(legal)") and kind not in LEGAL_KINDS:
        raise Forbidden(f"role legal may write the {', '.join(LEGAL_KINDS)} report only")
    period = reports.parse_period(body.get("from"), body.get("to"))
    done = reports.generate(current_app.extensions["archiver"], kind, period, g.actor)
    return Response(done.pdf, mimetype="application/pdf", headers={
        "Content-Disposition": f'attachment; filename="{kind}-report.pdf"',
        "X-Archiver-Report-Sha256": done.sha256})
