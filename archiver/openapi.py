"""The OpenAPI 3.1 document of the JSON API, served at ``GET /api/v1/openapi.json``.

Written by hand, route by route, and kept true by a test that compares it with the Flask
route table (every route documented, no route documented that does not exist, each
operation's ``x-roles`` equal to the roles its view requires). ``x-roles`` lists who may
call an operation; an empty list means public (the webhook and ``/healthz``).

The document itself needs a token of any role: every endpoint but the webhook needs auth,
and the API's shape is no secret worth a public exception (it is in this repository) but
also nothing an anonymous caller needs.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, Flask, Response, jsonify

from archiver.auth import require
from archiver.listing import DEFAULT_LIMIT, MAX_LIMIT
from archiver.params import SEQ_MAX
from archiver.roles import (
    CONTACT_VIEWERS, ERASERS, EXPORTERS, HOLDERS, OVERSIGHT, READERS, REPORTERS, RETAINERS, REVIEWERS, ROLES, STATS_READERS, WRITERS,
)
from archiver.search import MAX_SIZE, MAX_WINDOW, SORTS

bp = Blueprint("openapi", __name__)
_CONVERTER = re.compile(r"<(?:[a-z]+(?:\([^)]*\))?:)?([A-Za-z_]+)>")  # <int:seq> -> {seq}

_OBJECT = {"type": "object"}
_ERROR = {"$ref": "#/components/schemas/Error"}


def _json(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema or _OBJECT}}}


def _errors(*codes: int) -> dict[str, Any]:
    """Error responses, each an :data:`_ERROR` body."""
    reasons = {400: "a parameter or body field is invalid (``field`` names it)", 401: "no live bearer token",
               403: "the token's role may not use this operation", 404: "no such record",
               409: "the state does not allow it (a hold released already)",
               413: "the body is larger than ARCHIVER_MAX_BODY_BYTES", 414: "the URL is longer than 4096 bytes",
               429: "too many requests", 503: "a backend is down"}
    return {str(code): _json(reasons[code], _ERROR) for code in codes}


def _query(name: str, schema: dict[str, Any], description: str, required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "schema": schema, "description": description}


def _path(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema, "description": description}


def _op(summary: str, roles: tuple[str, ...], responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """One operation; authenticated ones also answer 401/403 and carry the bearer scheme."""
    op: dict[str, Any] = {"summary": summary, "x-roles": list(roles), **extra}
    if roles:
        op["security"] = [{"bearer": []}]
        responses = {**responses, **_errors(401, 403)}
    op["responses"] = {**responses, **_errors(414)}
    return op


_SEQ = {"type": "integer", "minimum": 1, "maximum": SEQ_MAX}
_HUB = [
    _query("hub.mode", {"type": "string"}, "``subscribe``"),
    _query("hub.verify_token", {"type": "string"}, "must equal ARCHIVER_VERIFY_TOKEN"),
    _query("hub.challenge", {"type": "string"}, "echoed back on success"),
]
_SIGNATURE = {"name": "X-Hub-Signature-256", "in": "header", "required": True, "schema": {"type": "string"},
              "description": "``sha256=<hex HMAC-SHA256 of the body under an app secret>``"}
_ANY_BODY = {"required": True, "content": {"application/json": {"schema": _OBJECT}}}
_ACCEPTED = _json("journaled", {"type": "object", "properties": {"ok": {"type": "boolean"},
                                                                  "journal_id": {"type": "integer"}}})

_LISTING = [
    _query("since", {"type": "string"}, "ISO 8601 date or time (UTC unless a zone is given), inclusive"),
    _query("until", {"type": "string"}, "ISO 8601 date or time, inclusive"),
    _query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT}, "items"),
    _query("cursor", _SEQ, "the previous page's next_cursor"),
    _query("order", {"type": "string", "enum": ["newest", "oldest"], "default": "newest"}, "seq order"),
]

PATHS: dict[str, dict[str, Any]] = {
    "/healthz": {"get": _op("One ping per backend", (), {"200": _json("every backend answers"),
                                                          "503": _json("a backend is down")})},
    "/webhooks/whatsapp": {
        "get": _op("Meta's subscription handshake", (), {
            "200": {"description": "the challenge", "content": {"text/plain": {"schema": {"type": "string"}}}},
            **_errors(403)}, parameters=_HUB),
        "post": _op("A signed webhook delivery, journaled as its exact bytes", (), {
            "200": _json("journaled"), **_errors(401, 413, 429)}, parameters=[_SIGNATURE], requestBody=_ANY_BODY),
    },
    "/api/v1/capture/messages": {"post": _op(
        "A message a CRM sent through the Cloud API (request, Meta's response, sender, sent_at)", WRITERS,
        {"202": _ACCEPTED, **_errors(400, 413)}, requestBody=_ANY_BODY)},
    "/api/v1/consent": {"post": _op(
        "An opt-in or opt-out (contact, scope, action, source, at, proof)", WRITERS,
        {"202": _ACCEPTED, **_errors(400, 413)}, requestBody=_ANY_BODY)},
    "/api/v1/stats": {"get": _op("Counts, chain tip and index lag", STATS_READERS, {"200": _json("the counts")})},
    "/api/v1/records/{seq}": {"get": _op(
        "One decrypted record: strict parsed view (content, content_view), the delivery's exact bytes "
        "(raw: base64, raw_sha256, raw_size, raw_seq), delivery, links and proof (audited)", READERS,
        {"200": _json("the record"), **_errors(400, 404)},
        parameters=[_path("seq", _SEQ, "the record's sequence number")])},
    "/api/v1/search": {"get": _op("Search messages (audited)", READERS, {"200": _json("hits, total and facets"),
                                                                          **_errors(400, 503)}, parameters=[
        _query("q", {"type": "string"}, "the query (see archiver.search.query)", required=True),
        _query("page", {"type": "integer", "minimum": 1, "maximum": MAX_WINDOW, "default": 1}, "1-based page"),
        _query("size", {"type": "integer", "minimum": 1, "maximum": MAX_SIZE, "default": 20}, "hits per page"),
        _query("sort", {"type": "string", "enum": list(SORTS), "default": "newest"}, "time order"),
    ])},
    "/api/v1/conversations/{contact}": {"get": _op(
        "The thread with a contact in time order (audited)", READERS,
        {"200": _json("the messages"), **_errors(400, 503)}, parameters=[
            _path("contact", {"type": "string"}, "wa_id, phone number or BSUID"),
            _query("around", _SEQ, "centre the window on this seq"),
            _query("size", {"type": "integer", "minimum": 1, "maximum": MAX_SIZE, "default": 50}, "messages"),
        ])},
    "/api/v1/audit": {"get": _op(
        "Sealed audit records, one page (audited)", OVERSIGHT,
        {"200": _json("items, next_cursor and filters"), **_errors(400)}, parameters=[
            *_LISTING, _query("kind", {"type": "string"}, "audit events, comma-separated")])},
    "/api/v1/quarantine": {"get": _op(
        "Quarantined deliveries, one page (audited)", OVERSIGHT,
        {"200": _json("items, next_cursor and filters"), **_errors(400)}, parameters=[
            *_LISTING, _query("reason", {"type": "string"}, "texts the reason contains, comma-separated")])},
    "/api/v1/matters": {"post": _op(
        "Create a matter (sealed as matter_created before it exists): {name}", HOLDERS,
        {"201": _json("the matter's id and name"), **_errors(400)}, requestBody=_ANY_BODY)},
    "/api/v1/holds": {
        "get": _op("Every litigation hold: criteria, status, counts (audited)", HOLDERS, {"200": _json("holds")}),
        "post": _op("Create a litigation hold (sealed as hold_created, then evaluated): {matter, name, reason, "
                    "custodians, after, before, query}", HOLDERS,
                    {"201": _json("the hold"), **_errors(400, 404, 503)}, requestBody=_ANY_BODY),
    },
    "/api/v1/holds/{hold_id}": {"get": _op(
        "One hold: criteria, status, counts (records, contacts, segments, checkpoints, media objects with the "
        "legal hold ON) and history (audited)", HOLDERS, {"200": _json("the hold"), **_errors(404)},
        parameters=[_path("hold_id", {"type": "string"}, "the hold's id")]),
        "patch": _op(
            "Edit a hold's criteria (sealed as hold_edited first, then evaluated again): {reason, add_custodians, "
            "remove_custodians, after, before, query} ('' clears); narrowing releases what no criterion selects, "
            "the legal hold going OFF only on objects no other active hold needs", HOLDERS,
            {"200": _json("the hold"), **_errors(400, 404, 409, 503)},
            parameters=[_path("hold_id", {"type": "string"}, "the hold's id")], requestBody=_ANY_BODY)},
    "/api/v1/holds/{hold_id}/certificate": {"get": _op(
        "The hold's certificate: the held records' seqs and leaf hashes, their RFC 6962 Merkle root and the "
        "latest checkpoint, signed with the checkpoint key (Ed25519); generating it is audited", HOLDERS,
        {"200": _json("{certificate, signature, public_key, algorithm}"), **_errors(404, 503)},
        parameters=[_path("hold_id", {"type": "string"}, "the hold's id")])},
    "/api/v1/holds/{hold_id}/release": {"post": _op(
        "Release a hold (sealed as hold_released first): {reason}; legal holds no other active hold needs go OFF",
        HOLDERS, {"200": _json("the hold"), **_errors(400, 404, 409, 503)},
        parameters=[_path("hold_id", {"type": "string"}, "the hold's id")], requestBody=_ANY_BODY)},
    "/api/v1/dispositions": {"get": _op(
        "Disposition review batches (keys of review classes due for disposition) with their state (audited)",
        REVIEWERS, {"200": _json("batches")})},
    "/api/v1/dispositions/{batch_id}/approve": {"post": _op(
        "Approve a batch (sealed as disposition_approved first); the next disposition run destroys its keys",
        REVIEWERS, {"200": _json("the batch"), **_errors(404, 409)},
        parameters=[_path("batch_id", {"type": "string"}, "the batch's id")], requestBody=_ANY_BODY)},
    "/api/v1/dispositions/{batch_id}/reject": {"post": _op(
        "Reject a batch (sealed as disposition_rejected first): {reason}; its keys are kept",
        REVIEWERS, {"200": _json("the batch"), **_errors(400, 404, 409)},
        parameters=[_path("batch_id", {"type": "string"}, "the batch's id")], requestBody=_ANY_BODY)},
    "/api/v1/erasures": {"post": _op(
        "GDPR erasure of a person (sealed as an erasure decision first): {contact, reason, dry_run}; shreds her keys "
        "in erasable classes no hold covers, says why each other key is kept; returns the signed certificate",
        ERASERS, {"201": _json("the plan, erasure_seq and {certificate, signature, public_key, algorithm}"),
                  "200": _json("the plan (dry run)"), **_errors(400, 404, 409)}, requestBody=_ANY_BODY)},
    "/api/v1/erasures/{erasure_id}": {"get": _op(
        "One erasure run (audited): the sealed plan, erasure_seq, whether it was applied, and a certificate "
        "signed now", ERASERS, {"200": _json("the run and {certificate, signature, public_key, algorithm}"),
                                **_errors(404)},
        parameters=[_path("erasure_id", {"type": "string"}, "the erasure's id (erasure_id of the POST)")])},
    "/api/v1/retention/extend": {"post": _op(
        "Extend the retention of a class's sealed records and their S3 locks (sealed as a retention_extended "
        "decision first): {class, to, reason}; shortening is refused", RETAINERS,
        {"200": _json("what changed"), "202": _json("decided; another sealer applies it"), **_errors(400, 409)},
        requestBody=_ANY_BODY)},
    "/api/v1/contacts/{ident}": {"get": _op(
        "A person: her identifiers (wa_id, phone, BSUIDs) with the sealed records that paired them, how many "
        "records name her, and the holds covering her (audited)", CONTACT_VIEWERS,
        {"200": _json("the contact"), **_errors(400, 404)},
        parameters=[_path("ident", {"type": "string"}, "wa_id, phone number or BSUID")])},
    "/api/v1/exports": {"post": _op(
        "Queue a provable export (docs/export-format.md), written off the request under ARCHIVER_HOME/exports/<id> "
        "and audited: {query} | {hold} | {contact, after, before}; role legal by hold only", EXPORTERS,
        {"202": _json("the export job's id, state (queued), selection and status route (also in Location)"),
         **_errors(400, 404, 503)}, requestBody=_ANY_BODY)},
    "/api/v1/exports/{export_id}": {"get": _op(
        "The export job: state (queued, running, done, failed), progress (records_done, records_total, pages rendered, pages_total), "
        "error, and once done counts, manifest_sha256 and the download route; role legal for hold exports only",
        EXPORTERS, {"200": _json("the export job"), **_errors(404)},
        parameters=[_path("export_id", {"type": "string"}, "the export's id")])},
    "/api/v1/exports/{export_id}/bundle.zip": {"get": _op(
        "The bundle as one zip (audited); 409 export-not-ready until the job is done; "
        "role legal for hold exports only", EXPORTERS,
        {"200": {"description": "the bundle", "content": {"application/zip": {"schema": {"type": "string",
                                                                                         "format": "binary"}}}},
         **_errors(404, 409)}, parameters=[_path("export_id", {"type": "string"}, "the export's id")])},
    "/api/v1/reports": {"post": _op(
        "A signed PDF report (PDF/A-3b, PAdES B-B, B-T with ARCHIVER_TSA_URL; its data attached as report.json), "
        "audited: {kind: integrity|access|holds|dispositions|consent|templates, from, to}; role legal for the holds report only",
        REPORTERS, {"200": {"description": "the signed PDF; its SHA-256 in X-Archiver-Report-Sha256",
                            "content": {"application/pdf": {"schema": {"type": "string", "format": "binary"}}}},
                    **_errors(400, 503)}, requestBody=_ANY_BODY)},
    "/api/v1/consent/{contact}": {"get": _op(
        "A contact's consent ledger (every identifier of the person; each entry names its sealed record) and "
        "each category's state now (audited)", OVERSIGHT, {"200": _json("ledger, state, detected_pending"),
                                                           **_errors(404)},
        parameters=[_path("contact", {"type": "string"}, "wa_id, phone number or BSUID")])},
    "/api/v1/consent/{contact}/at": {"get": _op(
        "Was the contact's consent valid at a time: valid, reason and the deciding entries with their seqs "
        "(audited)", OVERSIGHT, {"200": _json("valid, deciding, deciding_seqs"), **_errors(400)}, parameters=[
            _path("contact", {"type": "string"}, "wa_id, phone number or BSUID"),
            _query("time", {"type": "string"}, "epoch seconds, ISO 8601 with a zone, or a date", required=True),
            _query("category", {"type": "string", "default": "marketing"}, "the ledger category")])},
    "/api/v1/consent/detections/{seq}/confirm": {"post": _op(
        "Confirm the opt-out detected in message record seq (sealed as a decision first): {note}", REVIEWERS,
        {"200": _json("the detection"), **_errors(400, 404, 409, 503)},
        parameters=[_path("seq", _SEQ, "the message record's seq")], requestBody=_ANY_BODY)},
    "/api/v1/consent/detections/{seq}/dismiss": {"post": _op(
        "Dismiss the opt-out detected in message record seq (sealed first; it no longer revokes consent): {note}",
        REVIEWERS, {"200": _json("the detection"), **_errors(400, 404, 409, 503)},
        parameters=[_path("seq", _SEQ, "the message record's seq")], requestBody=_ANY_BODY)},
    "/api/v1/findings": {"get": _op(
        "Review findings, oldest first: id, kind, rule, record_seq, evidence, status (audited)", OVERSIGHT,
        {"200": _json("findings"), **_errors(400)}, parameters=[
            _query("kind", {"type": "string", "enum": ["consent", "template", "capture"]}, "only this kind"),
            _query("status", {"type": "string", "enum": ["open", "resolved"]}, "only this status")])},
    "/api/v1/findings/{finding_id}/resolve": {"post": _op(
        "Resolve a finding with a note (sealed as a finding_resolved decision first: who, when, why): {note}",
        REVIEWERS, {"200": _json("the finding"), **_errors(400, 404, 409, 503)},
        parameters=[_path("finding_id", {"type": "string"}, "the finding's id")], requestBody=_ANY_BODY)},
    "/api/v1/templates": {"get": _op(
        "Every message template the archive knows (webhooks or Graph API sync): state now per language, "
        "whether synced, last review (audited)", OVERSIGHT, {"200": _json("templates")})},
    "/api/v1/templates/{name}": {"get": _op(
        "A template's history (status, quality, category, wording over time, each naming its record), "
        "snapshots, reviews and sends bound to the snapshot in force (audited)", OVERSIGHT,
        {"200": _json("name, languages, reviews, sends"), **_errors(400, 404)}, parameters=[
            _path("name", {"type": "string"}, "the template's name"),
            _query("language", {"type": "string"}, "only this language (e.g. en_GB)")])},
    "/api/v1/templates/{name}/reviews": {"post": _op(
        "Record a review of the template (sealed as a template_reviewed decision first): {decision: "
        "approve|retire, note}", REVIEWERS, {"200": _json("the review"), **_errors(400, 404, 503)},
        parameters=[_path("name", {"type": "string"}, "the template's name")], requestBody=_ANY_BODY)},
    "/api/v1/openapi.json": {"get": _op("This document", ROLES, {"200": _json("OpenAPI 3.1")})},
}


def route_table(app: Flask) -> dict[tuple[str, str], tuple[str, ...]]:
    """``{(OpenAPI path, method): roles the view requires}`` of every route Flask serves
    (HEAD and OPTIONS, which Flask adds itself, left out; ``()`` for a public route)."""
    table = {}
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.endpoint.startswith("console."):
            continue  # the console's HTML pages are not the JSON API (archiver.console.pages.route_table)
        path = _CONVERTER.sub(r"{\1}", rule.rule)
        roles = getattr(app.view_functions[rule.endpoint], "allowed_roles", ())
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            table[(path, method.lower())] = tuple(roles)
    return table


def document() -> dict[str, Any]:
    """The whole OpenAPI 3.1 document."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "WhatsApp compliance archive", "version": "1"},
        "paths": PATHS,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "a token from 'archiver token create'"}},
            "schemas": {"Error": {"type": "object", "required": ["error", "message"], "properties": {
                "error": {"type": "string", "description": "stable kebab-case code"},
                "message": {"type": "string"}, "hint": {"type": "string"},
                "field": {"type": "string", "description": "the parameter or body field at fault"},
                "position": {"type": "string", "description": "where in the query a syntax error is"},
            }}},
        },
    }


@bp.get("/api/v1/openapi.json")
@require(*ROLES)
def openapi_json() -> Response:
    """The document above."""
    return jsonify(document())
