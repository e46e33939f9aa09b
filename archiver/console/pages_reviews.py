"""The console's Reviews page (issue 13, page 6): review findings and the disposition queue.

Findings (kinds consent, template, capture) are listed with their rule, the record at fault
and the evidence seqs (links to the record page), filtered by kind and status; a compliance
officer resolves one with a note through :func:`archiver.findings.resolve`, the function the
API uses (sealed as a ``finding_resolved`` decision before the finding shows resolved). The
disposition queue lists pending review batches; approving or rejecting (with a reason) goes
through :func:`archiver.disposition.decide` (sealed first), as on the API.

Roles: the API's, without admin (a console admin reads no message content, and findings and
batches name contacts and records): compliance reads and decides; an auditor reads the
findings only (the API lists disposition batches to reviewers alone). Listings are audited
as on the API (``findings_listed``, ``dispositions_listed``, with ``via: console``).
"""

from __future__ import annotations

from typing import Any

from flask import current_app, g, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from archiver import disposition, findings
from archiver.auth import require
from archiver.console.pages import bp
from archiver.journal import append_audit

FINDING_READERS = ("compliance", "auditor")  # the API's OVERSIGHT without admin
DECIDERS = ("compliance",)  # the API's REVIEWERS without admin


def _services() -> Any:
    return current_app.extensions["archiver"]


@bp.get("/reviews")
@require(*FINDING_READERS)
def reviews() -> str:
    """Findings, oldest first, ``?kind=`` and ``?status=`` (default open) as filters (audited)."""
    kind = request.args.get("kind") if request.args.get("kind") in findings.KINDS else None
    wanted = request.args.get("status", "open")
    status = wanted if wanted in findings.STATUSES else None  # "" or "any": every status
    services = _services()
    found = findings.list_findings(services, kind, status)
    with services.sessions.begin() as session:
        append_audit(session, "findings_listed", g.actor, kind=kind, status=status, results=len(found), via="console")
    return render_template("console/reviews.html", findings=found, kind=kind, status=status or "",
                           kinds=findings.KINDS, statuses=findings.STATUSES, resolved=request.args.get("resolved"),
                           decides=g.principal.role in DECIDERS, max_note=findings.MAX_NOTE, who=g.principal)


@bp.post("/reviews/findings/<finding_id>/resolve")
@require(*DECIDERS)
def resolve_finding(finding_id: str) -> Response:
    """Resolve one finding with the form's note (sealed first), then back to the list."""
    findings.resolve(_services(), g.actor, finding_id, request.form.get("note"))
    return redirect(url_for("console.reviews", status="resolved", resolved=finding_id))


@bp.get("/reviews/dispositions")
@require(*DECIDERS)
def dispositions() -> str:
    """Pending disposition batches (class, counts, first and last seq) and the decided ones (audited)."""
    services = _services()
    with services.sessions.begin() as session:
        append_audit(session, "dispositions_listed", g.actor, via="console")
    batches = disposition.list_batches(services)
    return render_template("console/dispositions.html", who=g.principal, decided=request.args.get("decided"),
                           pending=[b for b in batches if b["state"] == "pending"],
                           others=[b for b in batches if b["state"] != "pending"])


@bp.post("/reviews/dispositions/<batch_id>/approve")
@require(*DECIDERS)
def approve_batch(batch_id: str) -> Response:
    """Approve a batch (sealed first); the next disposition run destroys its keys."""
    disposition.decide(_services(), batch_id, g.actor, approve=True)
    return redirect(url_for("console.dispositions", decided=batch_id))


@bp.post("/reviews/dispositions/<batch_id>/reject")
@require(*DECIDERS)
def reject_batch(batch_id: str) -> Response:
    """Reject a batch with the form's reason (sealed first); its keys are kept."""
    disposition.decide(_services(), batch_id, g.actor, approve=False, reason=request.form.get("reason"))
    return redirect(url_for("console.dispositions", decided=batch_id))
