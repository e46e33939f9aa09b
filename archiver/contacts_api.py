"""A contact (a person) over HTTP (roles compliance, legal, auditor); see :mod:`archiver.identity`.

``GET /api/v1/contacts/<id>`` answers what ``archiver contact show`` prints, and the holds
covering her: her identifiers (phone/wa_id and BSUIDs, with the sealed records that proved
each pairing), how many records name one of them, and each hold naming her as a custodian
or holding her records. The read is audited (``contact_viewed``).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify

from archiver import holds, identity
from archiver.auth import require
from archiver.errors import ValidationError
from archiver.journal import append_audit
from archiver.roles import CONTACT_VIEWERS

bp = Blueprint("contacts", __name__)


@bp.get("/api/v1/contacts/<ident>")
@require(*CONTACT_VIEWERS)
def show_contact(ident: str) -> Response:
    """The person ``ident`` names: identifiers, links, records count and covering holds (audited)."""
    if len(ident) > 128 or "\x00" in ident or not ident.strip():
        raise ValidationError("contact", "must be a wa_id, phone number or BSUID")
    services: Any = current_app.extensions["archiver"]
    out = identity.show(services, ident)  # 404 before anything is journaled
    out["holds"] = holds.covering(services, ident)
    with services.sessions.begin() as session:
        append_audit(session, "contact_viewed", g.actor, contact=ident)
    return jsonify(out)
