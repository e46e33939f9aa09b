"""Exports over HTTP (roles compliance, auditor, legal); see :mod:`archiver.export` and
:mod:`archiver.export_jobs`.

``POST /api/v1/exports`` checks the selection and queues an export job: 202 with its id and
status route; the bundle is written off the request (this process's export thread, or the
``exports`` housekeeping job), never on a webhook's worker, under ``ARCHIVER_HOME/exports/<id>``.
``GET /api/v1/exports/<id>`` shows its state (queued, running, done, failed), progress and,
once done, the counts, the manifest's hash and the download route; ``GET
/api/v1/exports/<id>/bundle.zip`` answers the bundle as one zip (files in name order, fixed
times: equal bundles zip to equal bytes), 409 ``export-not-ready`` before it is done.

Tokens are not assigned to matters yet, so ``legal`` may export (see, and download) only by
hold; ``compliance`` and ``auditor`` export any selection. The export (its ``export`` audit
record, sealed by ``write_bundle``) and each download are audited.
"""

from __future__ import annotations

import json
import re
from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, request

from archiver import export, export_jobs
from archiver.auth import require
from archiver.errors import Forbidden, ValidationError
from archiver.export_jobs import ExportNotReady, NoSuchExport, folder_of
from archiver.journal import append_audit
from archiver.roles import EXPORTERS

__all__ = ["bp", "NoSuchExport", "folder_of"]

bp = Blueprint("exports", __name__)
_ID = re.compile(r"exp-[0-9a-f]{12}")


def _services() -> Any:
    return current_app.extensions["archiver"]


def _role() -> str:
    return str(g.actor).rsplit(" (", 1)[-1].rstrip(")")


@bp.post("/api/v1/exports")
@require(*EXPORTERS)
def create_export() -> tuple[Response, int]:
    """``{"query"} | {"hold"} | {"contact", "after", "before"}``: queue an export; 202 with its id."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ValidationError("body", "must be a JSON object")
    unknown = set(body) - {"query", "hold", "contact", "after", "before"}
    if unknown:
        raise ValidationError(sorted(unknown)[0], "is not a field of an export")
    sel = export.Selection(**body).check()
    if _role() == "legal" and sel.hold is None:
        raise Forbidden("role legal exports by hold only (tokens are not assigned to matters yet)")
    services = _services()
    export_id = export_jobs.submit(services, sel, g.actor)
    export_jobs.start(services, export_id)
    status = f"/api/v1/exports/{export_id}"
    response = jsonify(id=export_id, state="queued", selection=sel.as_dict(), status=status)
    response.headers["Location"] = status
    return response, 202


def _job(export_id: str) -> Any:
    """The job ``export_id`` as the caller's role may see it. Raises NoSuchExport, Forbidden."""
    if not _ID.fullmatch(export_id):
        raise NoSuchExport(f"no export {export_id}")
    row = export_jobs.get(_services(), export_id)
    if _role() == "legal" and "hold" not in row.selection:
        raise Forbidden("role legal sees hold exports only")
    return row


@bp.get("/api/v1/exports/<export_id>")
@require(*EXPORTERS)
def get_export(export_id: str) -> Response:
    """The export job's state, progress and, once done, counts, manifest hash and download route."""
    return jsonify(export_jobs.describe(_job(export_id)))


@bp.get("/api/v1/exports/<export_id>/bundle.zip")
@require(*EXPORTERS)
def download_export(export_id: str) -> Response:
    """The bundle as one zip (audited)."""
    services = _services()
    folder = folder_of(services.settings.home, export_id) if _ID.fullmatch(export_id) else None
    if folder is not None and not (folder / "MANIFEST.json").is_file():
        row = _job(export_id)  # NoSuchExport, Forbidden
        raise ExportNotReady(f"export {export_id} is {row.state}", hint=f"GET /api/v1/exports/{export_id} shows its state")
    if folder is None:
        raise NoSuchExport(f"no export {export_id}")
    selection = json.loads((folder / "MANIFEST.json").read_bytes()).get("selection", {})
    if _role() == "legal" and selection.get("by") != "hold":
        raise Forbidden("role legal downloads hold exports only")
    with services.sessions.begin() as session:
        append_audit(session, "export_downloaded", g.actor, export=export_id, selection=selection)
    data = export.zip_bundle(folder)
    return Response(data, mimetype="application/zip",
                    headers={"Content-Disposition": f'attachment; filename="{export_id}.zip"'})
