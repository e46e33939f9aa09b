"""Signed PDF reports (issue 10, point 3): ``integrity``, ``access``, ``holds``, ``dispositions``,
``consent``, ``templates``.

``archiver report KIND --from D --to D --out FILE.pdf`` and ``POST /api/v1/reports`` call
:func:`generate`, which

1. loads and checks the signing identity first (``archiver.pdf.sign.load_signer``): an
   expired certificate or a key that does not match it is refused before anything is
   gathered or rendered;
2. gathers the report's data (``archiver.report_data``) for the period (for ``access``, the
   audit records journaled but not sealed yet are sealed first, unless a sealer is running);
3. renders ``templates/reports/<kind>.html`` to PDF/A-3b with that data embedded as the
   attachment ``report.json`` (``archiver.pdf.render``);
4. signs it PAdES B-B, B-T when ``ARCHIVER_TSA_URL`` names a timestamp authority
   (``archiver.pdf.sign``);
5. journals a ``report`` audit record naming who, the kind, the period and the signed PDF's
   SHA-256 (sealed like every audit record).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any

from cryptography.hazmat.primitives import hashes

from archiver import report_data
from archiver.canonical import sha256_hex
from archiver.catalog import archive_id, chain_head
from archiver.errors import ValidationError
from archiver.journal import append_audit
from archiver.listing import parse_time
from archiver.pdf import render, sign
from archiver.report_data import Period
from archiver.services import Services

log = logging.getLogger(__name__)

KINDS = ("integrity", "access", "holds", "dispositions", "consent", "templates")
TITLES = {"integrity": "Integrity report", "access": "Access report", "holds": "Litigation holds report",
          "dispositions": "Disposition report", "consent": "Consent report",
          "templates": "Message template governance report"}
ATTACHMENT = "report.json"
EVENT = "report"
FORMAT = 1  # of report.json


@dataclass(frozen=True)
class Report:
    """A signed report: the PDF's bytes, their SHA-256, the data it carries."""

    kind: str
    pdf: bytes
    sha256: str
    data: dict[str, Any]


def check_kind(kind: Any) -> str:
    """Raises ValidationError unless ``kind`` is one of :data:`KINDS`."""
    if kind not in KINDS:
        raise ValidationError("kind", f"must be one of {', '.join(KINDS)}")
    return str(kind)


def parse_period(start: str | None, end: str | None, now: datetime | None = None) -> Period:
    """``from`` (inclusive, default: since the archive began) and ``to``: a date means to the end
    of that day, a time up to that instant (default: now). Raises ValidationError naming the field."""
    now = now or datetime.now(timezone.utc)
    for field, value in (("from", start), ("to", end)):
        if value is not None and not isinstance(value, str):
            raise ValidationError(field, "must be an ISO 8601 date or time, e.g. 2026-12-01")
    begin = parse_time("from", start)
    finish = parse_time("to", end)
    if finish is not None and _is_date(end):
        finish += timedelta(days=1)
    stop = finish or now
    if begin is not None and begin >= stop:
        raise ValidationError("to", "must be after from")
    return Period(begin, stop)


def _is_date(text: str | None) -> bool:
    try:
        date.fromisoformat((text or "").strip())
    except ValueError:
        return False
    return True


def generate(services: Services, kind: str, period: Period, actor: str) -> Report:
    """Gather, render, sign and audit one report. Raises SignerError (before anything is
    gathered) when the signer is expired or its key does not match, ValidationError on a bad kind."""
    kind = check_kind(kind)
    signer = sign.load_signer(services.settings.home)
    cert = signer.certificate
    if kind == "access":  # the report reads sealed audit records: seal what is journaled (unless a sealer runs now)
        from archiver import sealer

        sealer.seal_pending(services)
    now = datetime.now(timezone.utc).replace(microsecond=0)
    with services.sessions() as session:
        archive, head = archive_id(session), chain_head(session).seq
    data: dict[str, Any] = {
        "format": FORMAT, "kind": kind, "title": TITLES[kind], "period": period.as_dict(),
        "generated_at": now.isoformat(), "generated_by": actor,
        "archive": {"id": archive, "chain_head_seq": head},
        "signer": {"subject": cert.subject.rfc4514_string(), "issuer": cert.issuer.rfc4514_string(),
                   "certificate_sha256": cert.fingerprint(hashes.SHA256()).hex(),
                   "not_after": cert.not_valid_after_utc.isoformat(), "self_signed": signer.generated},
        "content": report_data.GATHER[kind](services, period),
    }
    pdf = render.render_pdf(f"reports/{kind}.html", {"report": data, "generated_at": now.isoformat()},
                            attachment=data, attachment_name=ATTACHMENT, title=f"{TITLES[kind]} ({archive})")
    signed = sign.sign_pdf(pdf, signer, reason=f"whatsapp-archiver {kind} report")
    digest = sha256_hex(signed)
    with services.sessions.begin() as session:
        append_audit(session, EVENT, actor, kind=kind, period=period.as_dict(), pdf_sha256=digest,
                     bytes=len(signed), signer_certificate_sha256=data["signer"]["certificate_sha256"])
    log.info("report.written kind=%s bytes=%d sha256=%s", kind, len(signed), digest)
    return Report(kind, signed, digest, data)
