"""Exports over HTTP (roles compliance, auditor, legal); see :mod:`archiver.export`.

``POST /api/v1/exports`` runs the export in the read tier (never on the webhook's workers),
writes the bundle under ``ARCHIVER_HOME/exports/<id>`` and answers its id, counts, the
manifest's hash and the download route; ``GET /api/v1/exports/<id>/bundle.zip`` answers the
bundle as one zip (files in name order, fixed times: equal bundles zip to equal bytes).

Tokens are not assigned to matters yet, so ``legal`` may export (and download) only by
hold; ``compliance`` and ``auditor`` export any selection. Both calls are audited.
"""

from __future__ import annotations

import json
import re
import secrets
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, request

from archiver import export, transcript
from archiver.auth import require
from archiver.errors import ArchiverError, Forbidden, ValidationError
from archiver.journal import append_audit
from archiver.roles import EXPORTERS

bp = Blueprint("exports", __name__)
_ID = re.compile(r"exp-[0-9a-f]{12}")


class NoSuchExport(ArchiverError):
    code = "not-found"
    http_status = 404


def _services() -> Any:
    return current_app.extensions["archiver"]


def _role() -> str:
    return str(g.actor).rsplit(" (", 1)[-1].rstrip(")")


def folder_of(home: Path, export_id: str) -> Path:
    return home / "exports" / export_id


@bp.post("/api/v1/exports")
@require(*EXPORTERS)
def create_export() -> tuple[Response, int]:
    """``{"query"} | {"hold"} | {"contact", "after", "before"}``, optional ``format``
    (``"bundle,pdf"`` or a list; default both) and ``tz`` (IANA zone of the transcript's times,
    default UTC): write a bundle; answer its id."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ValidationError("body", "must be a JSON object")
    unknown = set(body) - {"query", "hold", "contact", "after", "before", "format", "tz"}
    if unknown:
        raise ValidationError(sorted(unknown)[0], "is not a field of an export")
    fmt, tz = body.pop("format", None), body.pop("tz", None)
    if fmt is not None and not isinstance(fmt, (str, list)):
        raise ValidationError("format", "a list of formats or a comma-separated string")
    if tz is not None and not isinstance(tz, str):
        raise ValidationError("tz", "must be an IANA time zone name")
    formats = export.parse_formats(fmt)
    transcript.zone(tz)
    sel = export.Selection(**body).check()
    if _role() == "legal" and sel.hold is None:
        raise Forbidden("role legal exports by hold only (tokens are not assigned to matters yet)")
    services = _services()
    export_id = f"exp-{secrets.token_hex(6)}"
    done = export.write_bundle(services, sel, folder_of(services.settings.home, export_id), g.actor,
                               formats=formats, tz=tz)
    return jsonify(id=export_id, counts=done.counts, manifest_sha256=done.manifest_sha256,
                   through_seq=done.through_seq, selection=sel.as_dict(),
                   download=f"/api/v1/exports/{export_id}/bundle.zip"), 201


@bp.get("/api/v1/exports/<export_id>/bundle.zip")
@require(*EXPORTERS)
def download_export(export_id: str) -> Response:
    """The bundle as one zip (audited)."""
    services = _services()
    folder = folder_of(services.settings.home, export_id) if _ID.fullmatch(export_id) else None
    if folder is None or not (folder / "MANIFEST.json").is_file():
        raise NoSuchExport(f"no export {export_id}")
    selection = json.loads((folder / "MANIFEST.json").read_bytes()).get("selection", {})
    if _role() == "legal" and selection.get("by") != "hold":
        raise Forbidden("role legal downloads hold exports only")
    with services.sessions.begin() as session:
        append_audit(session, "export_downloaded", g.actor, export=export_id, selection=selection)
    data = export.zip_bundle(folder)
    return Response(data, mimetype="application/zip",
                    headers={"Content-Disposition": f'attachment; filename="{export_id}.zip"'})
