"""The console's "Holds and matters" pages (issue 13, page 4): roles legal and admin, as on
the JSON API (:mod:`archiver.holds_api`).

The matters with their holds; one hold's criteria, counts (records held, their contacts,
and the WORM segments, checkpoints and media objects with the legal hold ON) and history;
a form to place a hold and one to release it with a reason, both calling the same
:mod:`archiver.holds` functions as the API (each decision sealed before it acts); and the
hold's signed certificate (:mod:`archiver.hold_certificate`) as a JSON download. A legal
user sees and acts on the holds of its matters only (:func:`scope.check_matter`: 403
otherwise). Views are audited (``holds_listed``, ``hold_viewed``) like the API's, and the
certificate journals ``hold_certificate_generated``. Routes go on the console blueprint of
:mod:`archiver.console.pages` (this module is imported by :mod:`archiver.app`).
"""

from __future__ import annotations

import json
import re
from typing import Any

from flask import g, redirect, render_template, request, url_for
from sqlalchemy import select
from werkzeug.wrappers import Response

from archiver import hold_certificate, holds
from archiver.auth import HOLDERS, require
from archiver.catalog import Hold, Matter
from archiver.console import scope
from archiver.console.pages import _services, bp
from archiver.errors import ArchiverError, Forbidden, ValidationError
from archiver.journal import append_audit

FIELDS = ("matter", "name", "custodians", "after", "before", "query", "reason")


def _audit(event: str, **details: Any) -> None:
    with _services().sessions.begin() as session:
        append_audit(session, event, g.actor, via="console", **details)


def _matters() -> list[dict[str, Any]]:
    """The matters ``g.principal`` reaches, by name, each with its holds (newest first, counts)."""
    who = g.principal
    with _services().sessions() as session:
        query = select(Matter).order_by(Matter.name, Matter.id)
        if who.matters is not None:
            query = query.where(Matter.id.in_(who.matters))
        out = []
        for matter in session.scalars(query):
            rows = session.scalars(select(Hold).where(Hold.matter_id == matter.id)
                                   .order_by(Hold.created_at.desc(), Hold.id))
            listed = [holds.describe(session, h, history=False) for h in rows]
            out.append({"id": matter.id, "name": matter.name, "holds": listed,
                        "active": sum(h["status"] == "active" for h in listed)})
    return out


def _hold(hold_id: str) -> dict[str, Any]:
    """The hold's view, once ``g.principal`` may reach its matter. Raises NoSuchHold, Forbidden."""
    view = holds.show(_services(), hold_id)
    scope.check_matter(g.principal, view["matter"]["id"])
    return view


@bp.get("/holds")
@require(*HOLDERS)
def holds_page() -> str:
    """Matters and their holds: status, counts (audited as ``holds_listed``)."""
    matters = _matters()
    _audit("holds_listed")
    return render_template("console/holds.html", matters=matters, who=g.principal)


@bp.get("/holds/new")
@require(*HOLDERS)
def hold_form() -> str:
    """The form placing a hold (``?matter=`` and ``?query=`` fill it in, e.g. from a search)."""
    form = {name: request.args.get(name, "") for name in FIELDS}
    return render_template("console/hold_new.html", form=form, matters=_matters(), error=None, who=g.principal)


@bp.post("/holds")
@require(*HOLDERS)
def hold_create() -> Response | tuple[str, int]:
    """Place the hold as ``POST /api/v1/holds`` does (sealed first); a refusal is shown on the form."""
    form = {name: request.form.get(name, "") for name in FIELDS}
    services = _services()
    try:
        if not form["matter"]:
            raise ValidationError("matter", "is required")
        scope.check_matter(g.principal, form["matter"])
        custodians = [c for c in re.split(r"[\s,;]+", form["custodians"]) if c]
        criteria = holds.parse_criteria(custodians, form["after"] or None, form["before"] or None,
                                        form["query"] or None)
        hold = holds.create_hold(services, g.actor, form["matter"], form["name"], criteria, form["reason"])
    except Forbidden:
        raise
    except ArchiverError as exc:
        return render_template("console/hold_new.html", form=form, matters=_matters(), error=exc,
                               who=g.principal), exc.http_status
    return redirect(url_for("console.hold_page", hold_id=hold), code=303)


@bp.get("/holds/<hold_id>")
@require(*HOLDERS)
def hold_page(hold_id: str) -> str:
    """One hold: criteria, counts, history, the release form (audited as ``hold_viewed``)."""
    view = _hold(hold_id)
    _audit("hold_viewed", hold=hold_id)
    return render_template("console/hold.html", hold=view, error=None, reason="", who=g.principal)


@bp.post("/holds/<hold_id>/release")
@require(*HOLDERS)
def hold_release(hold_id: str) -> Response | tuple[str, int]:
    """Release the hold with a reason, as ``POST /api/v1/holds/<id>/release`` does (sealed first)."""
    _hold(hold_id)
    reason = request.form.get("reason", "")
    try:
        holds.release_hold(_services(), g.actor, hold_id, reason)
    except ArchiverError as exc:
        return render_template("console/hold.html", hold=_hold(hold_id), error=exc, reason=reason,
                               who=g.principal), exc.http_status
    return redirect(url_for("console.hold_page", hold_id=hold_id), code=303)


@bp.get("/holds/<hold_id>/certificate")
@require(*HOLDERS)
def hold_certificate_download(hold_id: str) -> Response:
    """The hold's signed certificate, the file ``archiver hold certificate`` writes (audited)."""
    _hold(hold_id)
    doc = hold_certificate.generate(_services(), hold_id, g.actor)
    return Response(json.dumps(doc, indent=2, sort_keys=True) + "\n", mimetype="application/json",
                    headers={"Content-Disposition": f'attachment; filename="{hold_id}-certificate.json"'})
