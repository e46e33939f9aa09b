"""Nightly integrity verification (issue 10 point 5): the ``verification`` scheduled job.

Each run (``policies/schedule.yaml``, default daily 03:00 UTC; ``archiver jobs run verification``)

1. runs the full ``archiver verify`` (``verify.audit``: checkpoints, segments, records, catalog);
2. renders the signed integrity report (``reports.generate``, kind ``integrity``: PDF/A-3b,
   PAdES-signed, its JSON attached; it journals its own ``report`` audit record) and writes it
   once into the WORM store under ``integrity/YYYY/MM/DD/<start, to the microsecond>.pdf``, locked as long as the
   longest retention class (a report that cannot be rendered or stored is named in the
   summary by its error class; the verification is still sealed and alerted);
3. seals a ``verification`` audit record (range verified, records, segments, checkpoints,
   outcome, the first error: it names a seq or an object, never content, and the report's key
   and SHA-256) and keeps the outcome in the one-row ``verification_state`` table, which
   ``/healthz`` and ``archiver stats`` read by primary key (``state``);
4. on a break: logs ``verification.failed`` at ERROR, and POSTs a JSON alert to
   ``ARCHIVER_ALERT_WEBHOOK_URL`` when set (http or https only; 10 s timeout; an alert that
   cannot be sent is logged, never raised).

A run that found a break ends the job ``failed`` (``IntegrityError``) after all of that, so
``archiver jobs`` and the ``job_run`` record say so too.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.parse
import urllib.request
from datetime import datetime, timezone
from typing import Any

from sqlalchemy.orm import Session

from archiver.canonical import canonical
from archiver.catalog import VerificationState, chain_head
from archiver.journal import append_delivery
from archiver.services import Services

log = logging.getLogger(__name__)

EVENT = "verification"
ACTOR = "archiver:jobs"
WEBHOOK_ENV = "ARCHIVER_ALERT_WEBHOOK_URL"
REPORT_PREFIX = "integrity"
ALERT = "integrity-verification-failed"


def run(services: Services, actor: str = ACTOR) -> dict[str, Any]:
    """One full verification; returns the summary the ``job_run`` record holds too."""
    from archiver import verify

    started = datetime.now(timezone.utc)
    now = started.replace(microsecond=0)
    with services.sessions() as session:
        head = chain_head(session).seq
        report = verify.audit(services.store, services.signing_key.public_key(), session)
    summary: dict[str, Any] = {
        "range": {"first_seq": 1 if report.records else None, "last_seq": head or None},
        "records": report.records, "segments": report.segments, "checkpoints": report.checkpoints,
        "outcome": "ok" if report.ok else "failed", "first_error": report.first_error,
        "checked_at": now.isoformat(),
    }
    summary.update(_store_report(services, started, actor))
    with services.sessions.begin() as session:
        body = {"event": EVENT, "actor": actor, "at": now.isoformat(), **summary}
        journal_id = append_delivery(session, "audit", canonical(body), {"event": EVENT, "ok": report.ok})
        _save_state(session, summary, journal_id, now)
    if report.ok:
        log.info("verification.ok records=%d segments=%d", report.records, report.segments)
    else:
        log.error("verification.failed first_error=%s", report.first_error)
        alert(summary)
    return summary


def _store_report(services: Services, started: datetime, actor: str) -> dict[str, Any]:
    """Render, sign and WORM-store the integrity report; its key and SHA-256, or the error's class.
    The key carries the run's start to the microsecond: two runs in one second (a manual run
    beside the scheduled one) write two reports, never one over the other (WORM refuses that)."""
    from archiver import reports, retention, retention_policy
    from archiver.report_data import Period

    now = started.replace(microsecond=0)
    key = f"{REPORT_PREFIX}/{started:%Y/%m/%d}/{started:%Y%m%dT%H%M%S.%fZ}.pdf"
    try:
        signed = reports.generate(services, "integrity", Period(None, now), actor)
        policy = retention_policy.load(services.settings.policies_dir)
        until = retention.at_least_soon(retention.whole_second(retention.longest(policy, now)))
        services.store.put_locked(key, signed.pdf, until)
    except Exception as exc:  # noqa: BLE001 - the verification is sealed and alerted however the report fails
        log.error("verification.report_unwritten error=%s", exc.__class__.__name__)
        return {"report": None, "report_sha256": None, "report_error": exc.__class__.__name__}
    return {"report": key, "report_sha256": signed.sha256, "report_error": None}


def _save_state(session: Session, summary: dict[str, Any], journal_id: int, now: datetime) -> None:
    row = session.get(VerificationState, 1)
    if row is None:
        row = VerificationState(id=1)
        session.add(row)
    row.checked_at = now
    row.status = "ok" if summary["outcome"] == "ok" else "degraded"
    row.first_error = (summary["first_error"] or None) and str(summary["first_error"])[:1024]
    row.records, row.segments, row.checkpoints = summary["records"], summary["segments"], summary["checkpoints"]
    row.journal_id = journal_id
    row.report_key, row.report_sha256 = summary["report"], summary["report_sha256"]


def webhook_url(env: dict[str, str] | None = None) -> str | None:
    """``ARCHIVER_ALERT_WEBHOOK_URL`` if set to an http(s) URL; None if unset. Raises ValueError otherwise."""
    url = (os.environ if env is None else env).get(WEBHOOK_ENV, "").strip()
    if not url:
        return None
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{WEBHOOK_ENV} must be an http:// or https:// URL")
    return url


def alert(summary: dict[str, Any]) -> bool:
    """POST ``summary`` as a JSON alert to ``ARCHIVER_ALERT_WEBHOOK_URL`` (if set); never raises.
    Returns whether an alert was delivered."""
    try:
        url = webhook_url()
    except ValueError:
        log.error("verification.alert_unsent error=BadWebhookURL")
        return False
    if url is None:
        return False
    payload = json.dumps({"alert": ALERT, **summary}).encode()
    request = urllib.request.Request(url, data=payload, method="POST",  # noqa: S310 - http(s) only, checked above
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - scheme checked: http(s) only
            response.read()
    except Exception as exc:  # noqa: BLE001 - an alert that cannot be sent must not hide the failure
        log.error("verification.alert_unsent error=%s", exc.__class__.__name__)
        return False
    return True


def state(session: Session) -> dict[str, Any]:
    """``{"status": "ok"|"degraded"|"unverified", "first_error", "checked_at", "report"}`` of the
    last verification: one primary-key read (``/healthz`` calls it on every poll)."""
    row = session.get(VerificationState, 1)
    if row is None:
        return {"status": "unverified", "first_error": None, "checked_at": None, "report": None}
    return {"status": row.status, "first_error": row.first_error, "checked_at": row.checked_at.isoformat(),
            "report": row.report_key}
