"""Nightly integrity verification (issue 10 point 5): the ``verification`` scheduled job.

Each run does the full ``archiver verify`` (``verify.audit``), seals an audit record of event
``verification`` (range verified, records, segments, checkpoints, outcome, the first error: it
names a seq or an object, never content) and, on failure, raises an alert: an ERROR log line,
``archiver stats --json`` and ``/healthz`` report ``degraded`` with the first error (``state``,
read from the last verification's journal meta, which survives sealing), and, when
``ARCHIVER_ALERT_WEBHOOK_URL`` is set, a JSON POST of the alert (best effort, 10 s timeout).
The signed PDF integrity report is not written yet (it waits for the shared PDF package).
"""

from __future__ import annotations

import json
import logging
import os
import urllib.request
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from archiver.canonical import canonical
from archiver.catalog import Journal, chain_head
from archiver.journal import append_delivery
from archiver.services import Services

log = logging.getLogger(__name__)

EVENT = "verification"
WEBHOOK_ENV = "ARCHIVER_ALERT_WEBHOOK_URL"


def run(services: Services) -> dict[str, Any]:
    """One full verification; returns the summary the ``job_run`` record holds too."""
    from archiver import verify

    with services.sessions() as session:
        head = chain_head(session).seq
        report = verify.audit(services.store, services.signing_key.public_key(), session)
    summary: dict[str, Any] = {
        "range": {"first_seq": 1 if report.records else None, "last_seq": head or None},
        "records": report.records, "segments": report.segments, "checkpoints": report.checkpoints,
        "outcome": "ok" if report.ok else "failed", "first_error": report.first_error,
    }
    with services.sessions.begin() as session:
        body = {"event": EVENT, "actor": "archiver:jobs", **summary}
        append_delivery(session, "audit", canonical(body),
                        {"event": EVENT, "ok": report.ok, "first_error": report.first_error})
    if not report.ok:
        log.error("verification.failed first_error=%s", report.first_error)
        alert(summary)
    return summary


def alert(summary: dict[str, Any]) -> None:
    """POST ``summary`` as a JSON alert to ``ARCHIVER_ALERT_WEBHOOK_URL`` (if set); never raises."""
    url = os.environ.get(WEBHOOK_ENV, "").strip()
    if not url:
        return
    payload = json.dumps({"alert": "integrity-verification-failed", **summary}).encode()
    request = urllib.request.Request(url, data=payload, method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - an operator's URL
            response.read()
    except Exception as exc:  # noqa: BLE001 - an alert that cannot be sent must not hide the failure
        log.error("verification.alert_unsent error=%s", exc.__class__.__name__)


def state(session: Session) -> dict[str, Any]:
    """``{"status": "ok"|"degraded"|"unverified", "first_error": ...}`` from the last verification."""
    meta = session.scalar(select(Journal.meta).where(Journal.source == "audit",
                                                     Journal.meta["event"].as_string() == EVENT)
                          .order_by(Journal.id.desc()).limit(1))
    if meta is None:
        return {"status": "unverified", "first_error": None}
    return {"status": "ok" if meta.get("ok") else "degraded", "first_error": meta.get("first_error")}
