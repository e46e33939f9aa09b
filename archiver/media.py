"""Media: fetch attachments named by sealed messages from the Graph API and lock them in WORM.

The sealer seals a message first and queues one ``Media`` row per attachment; this job
(``jobs.py``, every few seconds) works that queue, so a message is never held back by its
media. Per row (whatsapp-webhooks.md section 8):

1. ``GET {graph_url}/{media-id}`` with the bearer token -> a short-lived download URL,
   the mime type and the hex sha256.
2. ``GET url`` with the bearer token again (the URL alone is refused), streamed, capped at
   ``MAX_BYTES``.
3. The bytes must hash to both the webhook's digest (base64 in live webhooks, hex in history
   follow-ups) and the endpoint's digest, compared as 32 raw bytes.
4. Encrypt under the message's data key, put locked under ``chain.media_key`` until the
   message's ``retain_until``, then in one transaction journal a media notice (the sealer
   turns it into a ``media`` record linked to the message) and mark the row ``stored``.

Failures back off exponentially (``retry_delay``) and end ``failed`` after
``settings.media_max_attempts``. Media ids die 7 days after the webhook (``ID_LIFETIME``), so
any failure once an id is that old is final: a 404 then means "expired", not "not yet".
Graph being unreachable or refusing the token (or no token being configured) is not the
attachment's fault: the pass stops and every due row waits ``OUTAGE_DELAY`` (the probe twice
that) without spending an attempt, so only the 7-day expiry ends it; the default schedule (about an hour) would
otherwise let a short outage destroy a day's media.

Logs carry row ids, record seqs, counts and error codes only: never a URL (the download URL
is a capability), the token, or content.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

import requests
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from archiver import chain, journal, keys
from archiver.canonical import sha256_hex
from archiver.catalog import DataKey, Media, Record, Segment, leader_lock, utcnow
from archiver.config import Settings
from archiver.errors import IntegrityError, Locked
from archiver.services import Services
from archiver.store import WormStore

log = logging.getLogger(__name__)

MAX_BYTES = 100 * 1024 * 1024  # WhatsApp's largest attachment (documents) is 100 MB
TIMEOUT = (10.0, 10.0)  # connect, and between bytes read
DOWNLOAD_DEADLINE = 300.0  # seconds for a whole body: a slow drip must not pin the job
CHUNK = 1024 * 1024
BASE_DELAY = timedelta(seconds=30)
MAX_DELAY = timedelta(hours=1)
OUTAGE_DELAY = timedelta(seconds=60)
ID_LIFETIME = timedelta(days=7)
_MEDIA_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")  # Graph ids are digits; never a path
_DUE = select(Media).where(Media.state == "pending")
#: Settings whose missing Graph token this process has already logged.
_SAID_NO_TOKEN: set[Settings] = set()


class _Failed(Exception):
    """This attachment could not be fetched; ``code`` is a short, content-free reason."""

    counts = True  # spends one of the row's attempts

    def __init__(self, code: str, *, final: bool = False) -> None:
        super().__init__(code)
        self.code = code
        self.final = final


class _GraphDown(_Failed):
    """Graph (or its download host) is unreachable or refuses our token: no row is at fault."""

    counts = False


# --- pure helpers ---------------------------------------------------------------------------


def decode_sha256(text: str) -> bytes:
    """The 32 raw bytes of a SHA-256 given as hex (64 chars) or base64 (44 chars, or 43 unpadded).

    Raises ValueError for anything else.
    """
    text = text.strip()
    if len(text) == 64:
        raw = _unhex(text)
    elif len(text) in (43, 44):
        raw = _unbase64(text)
    else:
        raw = b""
    if len(raw) == 32:
        return raw
    raise ValueError("not a SHA-256 digest in hex or base64")


def _unhex(text: str) -> bytes:
    """Hex to bytes, or b"" if it is not hex."""
    try:
        return bytes.fromhex(text)
    except ValueError:
        return b""


def _unbase64(text: str) -> bytes:
    """Standard or URL-safe base64 (padding optional) to bytes, or b"" if it is not base64."""
    altchars = b"-_" if ("-" in text or "_" in text) else None
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), altchars=altchars, validate=True)
    except (binascii.Error, ValueError):
        return b""


def check_digest(actual: bytes, stated: str | None) -> None:
    """Raise ValueError unless ``stated`` (hex or base64, or None for "not given") is ``actual``."""
    if stated is not None and decode_sha256(stated) != actual:
        raise ValueError("sha256 mismatch")


def retry_delay(attempts: int) -> timedelta:
    """Wait after the ``attempts``-th failure: 30 s, 60 s, 2 min, ... capped at 1 h.

    With the default 8 attempts the whole schedule spans about 64 minutes, far inside the
    7 days a media id lives; a larger ``media_max_attempts`` is still bounded by that expiry.
    """
    exponent = min(max(attempts, 1) - 1, 16)  # 30 s * 2**16 is already far beyond the cap
    return min(BASE_DELAY * (1 << exponent), MAX_DELAY)


# --- the queue -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Due:
    """One pending row with what storing it needs from its message record."""

    id: int
    record_seq: int
    media_id: str
    expected_sha256: str | None
    mime_type: str | None
    key_id: str
    retain_until: datetime
    queued_at: datetime
    contact: str | None = field(repr=False)

    @classmethod
    def load(cls, session: Session, row: Media) -> "_Due | None":
        """Join the row with its message record and segment; None if the catalog lacks them."""
        rec = session.get(Record, row.record_seq)
        seg = session.get(Segment, rec.segment_id) if rec else None
        if rec is None or seg is None:
            return None
        # The segment's seal time is when this row was queued, seconds after the webhook that
        # issued the media id; a late estimate only ever grants an id more tries, never fewer.
        return cls(row.id, row.record_seq, row.media_id, row.expected_sha256, row.mime_type, row.key_id,
                   rec.retain_until, seg.sealed_at, rec.contact)

    def expired(self, now: datetime) -> bool:
        """Whether Meta has (by its documented lifetime) forgotten this media id."""
        return now >= self.queued_at + ID_LIFETIME


def _due(services: Services, now: datetime, limit: int) -> list[_Due]:
    """Pending rows whose next attempt is due, oldest first.

    A row whose message is missing from the catalog (the sealer writes both in one
    transaction, so only damage does that) is failed here, so it cannot block the queue.
    """
    out: list[_Due] = []
    orphans: list[int] = []
    with services.sessions() as session:
        rows = session.scalars(_DUE.where(Media.next_attempt_at <= now)
                               .order_by(Media.next_attempt_at, Media.id).limit(limit)).all()
        for row in rows:
            due = _Due.load(session, row)
            if due is None:
                orphans.append(row.id)
            else:
                out.append(due)
    if orphans:
        with services.sessions.begin() as session:
            session.execute(update(Media).where(Media.id.in_(orphans)).values(state="failed", last_error="no-record"))
        log.error("media.failed rows=%s code=no-record", ",".join(map(str, orphans)))
    return out


def _defer_all(services: Services, now: datetime) -> int:
    """Push every due row back by OUTAGE_DELAY (no attempt spent); return how many.

    While Graph is down or no token is configured, this makes each outage cost one
    request and one log line per OUTAGE_DELAY, however long the queue.
    """
    with services.sessions.begin() as session:
        result = session.execute(update(Media).where(Media.state == "pending", Media.next_attempt_at <= now)
                                 .values(next_attempt_at=now + OUTAGE_DELAY))
    return int(getattr(result, "rowcount", 0) or 0)


# --- the Graph API ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Located:
    """What the media endpoint says about an id; the URL is a capability, so never printed."""

    url: str = field(repr=False)
    mime_type: str | None
    sha256: str | None


class Graph:
    """The two Graph calls the fetcher makes, over one keep-alive HTTP session."""

    def __init__(self, settings: Settings, http: requests.Session) -> None:
        self.base = settings.graph_url
        self.http = http
        self.http.headers["Authorization"] = f"Bearer {settings.graph_token}"
        # Never send the token in clear text because a response named an http:// URL.
        self.https_only = self.base.startswith("https://")

    def __repr__(self) -> str:
        return "Graph(<redacted>)"

    def locate(self, media_id: str) -> _Located:
        """Step 1: the download URL, mime type and sha256 of ``media_id``. Raises _Failed."""
        if not _MEDIA_ID.fullmatch(media_id):
            raise _Failed("bad-media-id", final=True)
        with self._get(f"{self.base}/{quote(media_id, safe='')}", stream=False, token_proven=False) as resp:
            try:
                doc = resp.json()
            except ValueError:
                raise _Failed("bad-response") from None
        return _located(doc, self.https_only)

    def download(self, url: str) -> bytes:
        """Step 2: the attachment's bytes, at most MAX_BYTES. Raises _Failed."""
        # The token was just accepted by step 1, so a refusal here is about this URL or file.
        with self._get(url, stream=True, token_proven=True) as resp:
            if _content_length(resp) > MAX_BYTES:
                raise _Failed("too-large")
            return _read_capped(resp)

    def _get(self, url: str, *, stream: bool, token_proven: bool) -> requests.Response:
        """GET with the bearer token, mapped to codes. Raises _GraphDown, _Failed."""
        # "from None" throughout: requests' messages and tracebacks carry the URL.
        try:
            resp = self.http.get(url, timeout=TIMEOUT, stream=stream, allow_redirects=True)
        except requests.ConnectionError:  # refused, DNS, TLS, connect timeout: the host, not the file
            raise _GraphDown("unreachable") from None
        except requests.Timeout:
            raise _Failed("timeout") from None
        except requests.RequestException:
            raise _Failed("transfer-error") from None
        if resp.status_code >= 400:
            resp.close()
            raise _http_failure(resp, token_proven)
        return resp


def _located(doc: Any, https_only: bool) -> _Located:
    """Validate the media endpoint's JSON. Raises _Failed (bad-response, insecure-url, too-large)."""
    url = doc.get("url") if isinstance(doc, dict) else None
    if not isinstance(url, str) or not url.startswith(("https://", "http://")):
        raise _Failed("bad-response")
    if https_only and not url.startswith("https://"):
        raise _Failed("insecure-url", final=True)
    size = doc.get("file_size")
    if isinstance(size, int) and size > MAX_BYTES:
        raise _Failed("too-large")
    sha = doc.get("sha256")
    mime = doc.get("mime_type")
    return _Located(url, mime if isinstance(mime, str) else None, sha if isinstance(sha, str) else None)


def _http_failure(resp: requests.Response, token_proven: bool) -> _Failed:
    """The failure an HTTP error status means.

    A 401, or Graph's "invalid token" (code 190, sometimes sent as a 400), before the token
    was accepted in this attempt says the token is bad: that stops the pass (_GraphDown).
    """
    if not token_proven and (resp.status_code == 401 or _graph_error_code(resp) == 190):
        return _GraphDown(f"http-{resp.status_code}")
    return _Failed(f"http-{resp.status_code}")


def _content_length(resp: requests.Response) -> int:
    """The announced body size, 0 when absent or unreadable (the stream is capped anyway)."""
    try:
        return int(resp.headers.get("Content-Length") or 0)
    except ValueError:
        return 0


def _graph_error_code(resp: requests.Response) -> int | None:
    """``error.code`` of a Graph error body, if it is one."""
    try:
        err = resp.json().get("error")
    except (ValueError, AttributeError):
        return None
    code = err.get("code") if isinstance(err, dict) else None
    return code if isinstance(code, int) else None


def _read_capped(resp: requests.Response) -> bytes:
    """The streamed body, refused past MAX_BYTES or DOWNLOAD_DEADLINE. Raises _Failed."""
    deadline = time.monotonic() + DOWNLOAD_DEADLINE
    parts: list[bytes] = []
    size = 0
    try:
        for part in resp.iter_content(CHUNK):
            size += len(part)
            if size > MAX_BYTES:
                raise _Failed("too-large")
            if time.monotonic() > deadline:
                raise _Failed("timeout")
            parts.append(part)
    except requests.RequestException:
        # Read timeouts arrive as ConnectionError here. The host answered, so this counts
        # against the file: taking it for an outage could stall the queue behind one file.
        raise _Failed("transfer-error") from None
    return b"".join(parts)


# --- one attachment --------------------------------------------------------------------------


def _fetch(graph: Graph, due: _Due) -> tuple[bytes, str | None]:
    """Steps 1-3: the verified bytes and the endpoint's mime type. Raises _Failed."""
    located = graph.locate(due.media_id)
    data = graph.download(located.url)  # a fresh URL each attempt: they live ~5 minutes
    digest = hashlib.sha256(data).digest()
    try:
        check_digest(digest, due.expected_sha256)
        check_digest(digest, located.sha256)
    except ValueError:
        # An unreadable stated digest cannot vouch for the bytes either: fail closed.
        raise _Failed("sha256-mismatch") from None
    return data, located.mime_type


def _data_key(services: Services, key_id: str, cache: dict[str, bytes | None]) -> bytes:
    """The message's unwrapped data key. Raises _Failed("key-destroyed") once it is shredded."""
    if key_id not in cache:
        with services.sessions() as session:
            row = session.get(DataKey, key_id)
            wrapped = row.wrapped if row else None
        cache[key_id] = services.kek.unwrap(wrapped, key_id) if wrapped else None
    key = cache[key_id]
    if key is None:
        # Crypto-shredded (erasure or disposition): storing the content again would undo that.
        raise _Failed("key-destroyed", final=True)
    return key


def _put(store: WormStore, due: _Due, data: bytes, sha_hex: str, data_key: bytes) -> tuple[str, str]:
    """Step 4a: encrypt and lock the bytes; return (object key, sha256 of the stored object).

    Raises StoreError, IntegrityError.
    """
    key = chain.media_key(sha_hex, due.key_id)
    blob, _ = keys.seal_payload(data_key, data, aad=key.encode())
    try:
        store.put_locked(key, blob, due.retain_until)
        return key, sha256_hex(blob)
    except Locked:
        return key, _already_stored(store, due, key, sha_hex, data_key)


def _already_stored(store: WormStore, due: _Due, key: str, sha_hex: str, data_key: bytes) -> str:
    """Accept the object already under ``key``; return its sha256. Raises StoreError, IntegrityError.

    ``seal_payload`` is randomized, so a retry after a crash between put and commit (or the
    same attachment named by a second message, e.g. an edit, of the same contact and period)
    meets its key taken by different ciphertext. That object is as good as ours: the key
    names the plaintext's sha256 and the data key's scope, so it is this very plaintext under
    this very data key. We still decrypt it and check the hash rather than trust the name.
    """
    info = store.head(key)  # NotFound here means the store contradicts itself: let it surface
    if info.retain_until is not None and info.retain_until < due.retain_until:
        # The WormStore protocol cannot extend a lock; disposition must not delete the object
        # before the last message naming it expires.
        log.warning("media.retention_short row=%d record=%d", due.id, due.record_seq)
    blob = store.get(key)
    _, plain = keys.open_payload(data_key, blob, key.encode(), key)
    if sha256_hex(plain) != sha_hex:
        raise IntegrityError(key, "existing media object holds other content than its key names")
    return sha256_hex(blob)


def _commit_stored(services: Services, due: _Due, notice: dict[str, Any]) -> bool:
    """Step 4b, one transaction: journal the notice and mark the row stored.

    Returns False (journaling nothing) if the row is no longer pending.
    """
    with services.sessions.begin() as session:
        row = session.get(Media, due.id)
        if row is None or row.state != "pending":
            return False
        journal.append_media(session, notice)
        row.state, row.last_error = "stored", None
        row.object_key, row.sha256, row.size = notice["object_key"], notice["sha256"], notice["size"]
    log.info("media.stored row=%d record=%d size=%d", due.id, due.record_seq, notice["size"])
    return True


def _store_one(services: Services, graph: Graph, due: _Due, key_cache: dict[str, bytes | None]) -> bool:
    """Fetch, verify, lock and journal one attachment. Raises _Failed, StoreError, IntegrityError."""
    data_key = _data_key(services, due.key_id, key_cache)
    data, endpoint_mime = _fetch(graph, due)
    sha_hex = sha256_hex(data)
    object_key, object_sha = _put(services.store, due, data, sha_hex, data_key)
    notice = {
        "record_seq": due.record_seq, "object_key": object_key, "object_sha256": object_sha,
        "sha256": sha_hex, "size": len(data), "mime_type": due.mime_type or endpoint_mime,
        "media_id": due.media_id, "contact": due.contact,
    }
    return _commit_stored(services, due, notice)


def _record_failure(services: Services, due: _Due, failure: _Failed, now: datetime) -> None:
    """Spend an attempt (unless Graph is down) and schedule the next, or give up."""
    limit = services.settings.media_max_attempts
    with services.sessions.begin() as session:
        row = session.get(Media, due.id)
        if row is None or row.state != "pending":
            return
        row.attempts += 1 if failure.counts else 0
        row.last_error = failure.code
        if failure.final or due.expired(now) or (failure.counts and row.attempts >= limit):
            row.state = "failed"
        else:
            # An outage probe waits twice as long as the rows it deferred, so the next probe is
            # another row: one odd file cannot pass for an outage and stall the whole queue.
            row.next_attempt_at = now + (retry_delay(row.attempts) if failure.counts else 2 * OUTAGE_DELAY)
        state, attempts = row.state, row.attempts
    level = logging.WARNING if state == "failed" else logging.INFO
    log.log(level, "media.%s row=%d record=%d attempts=%d code=%s",
            "failed" if state == "failed" else "retry", due.id, due.record_seq, attempts, failure.code)


# --- the job ---------------------------------------------------------------------------------


@contextmanager
def _graph(settings: Settings) -> Iterator[Graph]:
    with requests.Session() as http:
        yield Graph(settings, http)


def fetch_due(services: Services, *, limit: int = 50, now: datetime | None = None) -> int:
    """Fetch up to ``limit`` due attachments; return how many were stored.

    Returns 0 without work when another process holds the media lock or no Graph token is
    configured (rows stay pending). Raises StoreError when the WORM store fails (that row is
    left as it was, to be retried); damage found in the catalog or store fails only its row.
    """
    now = now or utcnow()
    with leader_lock(services.engine, "media") as leader:
        if not leader:
            return 0
        if not services.settings.graph_token:
            deferred = _defer_all(services, now)
            if services.settings not in _SAID_NO_TOKEN:  # once per process and settings, not every pass
                _SAID_NO_TOKEN.add(services.settings)
                log.warning("media.skipped reason=no-graph-token deferred=%d "
                            "(attachments wait until ARCHIVER_GRAPH_TOKEN is set; said once)", deferred)
            return 0
        with _graph(services.settings) as graph:
            return _run(services, graph, _due(services, now, limit), now)


def _run(services: Services, graph: Graph, due: list[_Due], now: datetime) -> int:
    """Work the due rows in order; stop at the first sign that Graph itself is down."""
    stored = 0
    key_cache: dict[str, bytes | None] = {}
    for item in due:
        try:
            stored += _store_one(services, graph, item, key_cache)
        except _GraphDown as exc:
            deferred = _defer_all(services, now)
            _record_failure(services, item, exc, now)  # after: the probe goes to the back
            log.warning("media.graph_down code=%s row=%d deferred=%d", exc.code, item.id, deferred)
            break
        except _Failed as exc:
            _record_failure(services, item, exc, now)
        except IntegrityError as exc:
            # An existing object that does not hold what its key names: evidence of damage.
            # Say so loudly and fail this row; the rest of the queue must not wait on it.
            log.error("media.integrity row=%d record=%d code=%s", item.id, item.record_seq, exc.code)
            _record_failure(services, item, _Failed("integrity", final=True), now)
    if due:
        log.info("media.pass due=%d stored=%d", len(due), stored)
    return stored
