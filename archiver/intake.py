"""Intake: the edges that make deliveries durable.

- ``GET /webhooks/whatsapp``: Meta's verification handshake.
- ``POST /webhooks/whatsapp``: X-Hub-Signature-256 over the raw bytes against every
  configured app secret; the bytes are committed to the journal, then 200.
- ``POST /api/v1/capture/messages`` and ``POST /api/v1/consent`` (role ``ingest``):
  validated, then journaled raw like webhooks.

Parsing happens later, in the sealer: nothing here interprets message content.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from typing import Any, Callable
from urllib.parse import parse_qs

from flask import Blueprint, Response, current_app, g, jsonify, request

from archiver import items
from archiver.auth import require
from archiver.errors import RejectedDelivery, ValidationError
from archiver.rejections import hold_body, note

log = logging.getLogger(__name__)
bp = Blueprint("intake", __name__)


def signature_ok(raw: bytes, header: str | None, secrets: tuple[str, ...]) -> bool:
    """True if ``header`` is ``sha256=<hex>`` of ``raw`` under any configured app secret."""
    if not header or not header.startswith("sha256="):
        return False
    given = header[len("sha256="):].strip().lower()
    return any(
        hmac.compare_digest(hmac.new(s.encode(), raw, hashlib.sha256).hexdigest(), given) for s in secrets
    )


@bp.get("/webhooks/whatsapp")
def webhook_verify() -> Response:
    """Answer the subscription handshake with the bare challenge, or 403."""
    # Read the raw query string: some proxies rewrite dots in parameter names.
    raw_query = parse_qs(request.query_string.decode("utf-8", "replace"))
    query = {k.replace("hub_", "hub.", 1): v[0] for k, v in raw_query.items()}
    token = current_app.extensions["archiver"].settings.verify_token
    ok = (query.get("hub.mode") == "subscribe" and bool(token)
          and hmac.compare_digest(query.get("hub.verify_token", ""), token))
    if not ok:
        note("bad handshake")
        return Response("forbidden", status=403, mimetype="text/plain")
    return Response(query.get("hub.challenge", ""), status=200, mimetype="text/plain")


@bp.post("/webhooks/whatsapp")
def webhook_receive() -> tuple[Response, int]:
    """Verify the signature, journal the exact bytes, then acknowledge."""
    services = current_app.extensions["archiver"]
    raw = _read_body(services.settings.max_body_bytes)
    header = request.headers.get("X-Hub-Signature-256")
    if not signature_ok(raw, header, services.settings.app_secrets):
        note("missing signature" if not header else "bad signature")  # audited per window (rejections)
        log.debug("webhook.rejected size=%d", len(raw))
        return jsonify(error="bad-signature", message="X-Hub-Signature-256 is missing or does not match"), 401
    meta = {"signature": header, "remote": request.remote_addr, "content_type": request.content_type}
    jid = services.journal.append("webhook", raw, meta)
    log.debug("webhook.journaled id=%d size=%d", jid, len(raw))
    return jsonify(ok=True), 200


def _read_body(limit: int) -> bytes:
    """The raw body, refusing more than ``limit`` bytes with 413 before reading it all."""
    length = request.content_length
    if length is not None and length > limit:
        raise TooLarge(f"body of {length} bytes exceeds the {limit}-byte limit")
    raw = request.stream.read(limit + 1)
    if len(raw) > limit:
        raise TooLarge(f"body exceeds the {limit}-byte limit")
    hold_body(raw)
    return raw


class TooLarge(RejectedDelivery):
    """A body over ARCHIVER_MAX_BODY_BYTES."""

    code = "too-large"
    http_status = 413
    hint = "raise ARCHIVER_MAX_BODY_BYTES if Meta's bodies legitimately exceed it"


def _capture(source: str, validate: Callable[[Any], None]) -> tuple[Response, int]:
    """Validate a capture API body, journal it raw, answer 202 with the journal id."""
    services = current_app.extensions["archiver"]
    raw = _read_body(services.settings.max_body_bytes)
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise ValidationError("body", "is not valid JSON") from exc
    if not isinstance(body, dict):
        raise ValidationError("body", "must be a JSON object")
    validate(body)
    jid = services.journal.append(source, raw, {"actor": g.actor, "remote": request.remote_addr})
    return jsonify(ok=True, journal_id=jid), 202


@bp.post("/api/v1/capture/messages")
@require("ingest", "admin")
def capture_message() -> tuple[Response, int]:
    """Journal what a CRM sent through the Cloud API (request + Meta's response)."""
    return _capture("capture_message", items.validate_capture_message)


@bp.post("/api/v1/consent")
@require("ingest", "admin")
def capture_consent() -> tuple[Response, int]:
    """Journal an opt-in or opt-out event from a CRM."""
    return _capture("consent", items.validate_consent)
