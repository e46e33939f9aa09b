"""Sync template definitions from the Graph API into sealed, content-addressed snapshots.

``GET {ARCHIVER_GRAPH_URL}/{ARCHIVER_WABA_ID}/message_templates`` with the bearer token
(``ARCHIVER_GRAPH_TOKEN``) answers ``{"data": [template...], "paging": {"cursors": ...,
"next": URL}}``; every page is read (``paging.next``, only on the Graph API's own host: the
token is never sent elsewhere). A 5xx, a timeout or a refused connection is retried
(``ATTEMPTS`` times, backing off); a 4xx stops the sync (the token or the WABA id is wrong).

Each template translation (name, language) whose definition (canonical JSON of the object
Meta returned) differs from its latest snapshot is journaled as a ``template`` record
(event ``snapshot``: the definition, its SHA-256, when it was read) and noted in
``template_snapshots``; the sealer seals it and ``settle`` notes its seq. A definition seen
before is not journaled again: the snapshot in force stays.
"""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import urlsplit

import requests
from sqlalchemy import select

from archiver.canonical import canonical, sha256_hex
from archiver.catalog import Journal, TemplateSnapshot
from archiver.errors import ArchiverError, ConfigError
from archiver.journal import append_delivery
from archiver.services import Services
from archiver.templates import components_sha

log = logging.getLogger(__name__)

ATTEMPTS = 5
BACKOFF = 0.2  # seconds, doubled each retry
TIMEOUT = 30.0
MAX_PAGES = 10000
FIELDS = "id,name,language,status,category,components,quality_score,rejected_reason,previous_category"


class GraphUnavailable(ArchiverError):
    code = "graph-unavailable"
    http_status = 502
    hint = "the Graph API did not answer: the next sync tries again"


def sync(services: Services, *, now: int | None = None) -> dict[str, Any]:
    """Read every template definition and journal the changed ones; seal them. The summary.

    Raises ConfigError (no WABA id or token), GraphUnavailable."""
    settings = services.settings
    if not settings.waba_id or not settings.graph_token:
        raise ConfigError("a template sync needs ARCHIVER_WABA_ID and ARCHIVER_GRAPH_TOKEN")
    if not settings.waba_id.isdigit():
        raise ConfigError("ARCHIVER_WABA_ID must be the WhatsApp Business Account id (digits)")
    moment = int(time.time()) if now is None else now
    base = settings.graph_url
    url: str | None = f"{base}/{settings.waba_id}/message_templates?limit=100&fields={FIELDS}"
    seen = new = pages = 0
    with requests.Session() as http:
        http.headers["Authorization"] = f"Bearer {settings.graph_token}"
        while url is not None and pages < MAX_PAGES:
            doc = _get(http, url)
            pages += 1
            data = doc.get("data")
            for template in data if isinstance(data, list) else []:
                if isinstance(template, dict) and isinstance(template.get("name"), str):
                    seen += 1
                    new += _snapshot(services, template, settings.waba_id, moment)
            url = _next(doc, base)
    from archiver import sealer

    if new:
        sealer.seal_pending(services, pipelined=False)
    settle(services)
    log.info("templates.synced pages=%d templates=%d new_snapshots=%d", pages, seen, new)
    return {"pages": pages, "templates": seen, "new_snapshots": new, "synced_at": moment}


def _next(doc: dict[str, Any], base: str) -> str | None:
    paging = doc.get("paging")
    nxt = paging.get("next") if isinstance(paging, dict) else None
    if not isinstance(nxt, str) or not nxt:
        return None
    want, got = urlsplit(base), urlsplit(nxt)
    if (got.scheme, got.netloc) != (want.scheme, want.netloc):
        raise GraphUnavailable("paging.next points away from the Graph API host: not followed (the token stays)")
    return nxt


def _get(http: requests.Session, url: str) -> dict[str, Any]:
    problem = "no answer"
    for attempt in range(ATTEMPTS):
        if attempt:
            time.sleep(BACKOFF * 2 ** (attempt - 1))
        try:
            resp = http.get(url, timeout=TIMEOUT)
        except (requests.ConnectionError, requests.Timeout):
            problem = "connection failed"  # "from None": requests' messages carry the URL
            continue
        except requests.RequestException:
            raise GraphUnavailable("the Graph API request failed") from None
        if resp.status_code >= 500:
            problem = f"HTTP {resp.status_code}"
            log.warning("templates.graph_retry status=%d attempt=%d", resp.status_code, attempt + 1)
            continue
        if resp.status_code != 200:
            raise GraphUnavailable(f"the Graph API refused the template list: HTTP {resp.status_code}",
                                   hint="check ARCHIVER_GRAPH_TOKEN and ARCHIVER_WABA_ID")
        try:
            doc = resp.json()
        except ValueError:
            raise GraphUnavailable("the Graph API answered something that is not JSON") from None
        if not isinstance(doc, dict):
            raise GraphUnavailable("the Graph API answered JSON that is not an object")
        return doc
    raise GraphUnavailable(f"the Graph API did not answer after {ATTEMPTS} attempts ({problem})")


def _snapshot(services: Services, template: dict[str, Any], waba_id: str, moment: int) -> int:
    """Journal ``template`` if it differs from its translation's latest snapshot: 1 if it did."""
    name, lang = template["name"][:512], str(template.get("language") or "")[:32]  # the columns' widths
    sha = sha256_hex(canonical(template))
    with services.sessions.begin() as session:
        last = session.scalars(select(TemplateSnapshot).where(
            TemplateSnapshot.name == name, TemplateSnapshot.language == lang)
            .order_by(TemplateSnapshot.id.desc()).limit(1).with_for_update()).first()
        if last is not None and last.sha256 == sha:
            return 0
        body = {"event": "snapshot", "waba_id": waba_id, "synced_at": moment, "sha256": sha, "definition": template}
        jid = append_delivery(session, "template", canonical(body), {"event": "snapshot"})
        session.add(TemplateSnapshot(
            name=name, language=lang, template_id=str(template.get("id") or "") or None, sha256=sha,
            status=template.get("status") if isinstance(template.get("status"), str) else None,
            category=template.get("category") if isinstance(template.get("category"), str) else None,
            components_sha256=components_sha(template), synced_at=moment, journal_id=jid))
    return 1


def settle(services: Services) -> None:
    """Note the seq of every snapshot whose record is sealed."""
    with services.sessions.begin() as session:
        for row, seq in session.execute(select(TemplateSnapshot, Journal.delivery_seq).join(
                Journal, Journal.id == TemplateSnapshot.journal_id).where(
                TemplateSnapshot.seq.is_(None), Journal.sealed.is_(True))).all():
            row.seq = seq
