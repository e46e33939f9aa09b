"""Rejected requests: counted per source, journaled as one audit record per window, rate-limited.

A request the archive refuses (a missing or bad webhook signature, a bad handshake, a
missing, invalid or revoked token, a role that may not use the route, a body over the size
limit, an invalid capture body, and the 429 itself) is evidence; but one sealed record per
request would let anyone grow undeletable storage (7-year retention) at line rate. So a
rejection is counted per (source address, route, reason, actor) for a window of
``ARCHIVER_REJECTION_WINDOW`` seconds from that key's first rejection, and each window
becomes ONE ``requests_rejected`` audit record: the count, the first and last time, and up to
``ARCHIVER_REJECTION_SAMPLES`` SHA-256 hashes of the bodies read. Never a body, a header or a
token. A window is journaled within a second of closing (a background thread), and every
open one when Services close and at gunicorn worker exit (``server``), so nothing counted is
lost; a window whose write fails is kept and retried.

Failures draw from a token bucket per source (``ARCHIVER_FAILURE_BURST`` tokens, refilled at
``ARCHIVER_FAILURE_RATE`` per second; IPv6 sources share one per /64). Once it is empty, a
request that fails is answered 429 ``RateLimited`` with ``Retry-After`` instead of its
400/401/403/413, and counted under the reason ``rate-limited``. A valid request is never
limited, whatever its source's bucket holds: behind a shared proxy or NAT, refusing the
address would delay real evidence, and the cost of a flood (stored records) is bounded by
the windows anyway.

The source is the peer address; ``X-Forwarded-For`` is read only when the peer is one of
``ARCHIVER_TRUSTED_PROXIES``. Windows and buckets live in each worker process.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from flask import Flask, Response, current_app, g, request

from archiver.canonical import sha256_hex
from archiver.catalog import CatalogSessions
from archiver.config import Settings
from archiver.errors import ArchiverError
from archiver.journal import append_audit

log = logging.getLogger(__name__)

EVENT = "requests_rejected"
RATE_LIMITED = "rate-limited"
#: Statuses that are rejections on every route; 400 only on intake's (elsewhere it is an
#: authenticated user's mistake, e.g. a search that does not parse, audited by its route).
REJECTED = frozenset({401, 403, 413, 429})
DEFAULT_REASONS = {400: "invalid body", 401: "unauthorized", 403: "forbidden", 413: "too large",
                   429: RATE_LIMITED}
#: Memory bounds against floods from many addresses: open windows beyond MAX_OPEN close
#: early (oldest first); buckets beyond MAX_SOURCES are forgotten (full ones first).
MAX_OPEN = 10_000
MAX_SOURCES = 50_000

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class RateLimited(ArchiverError):
    """A source whose failure bucket is empty failed once more."""

    code = "RateLimited"
    http_status = 429
    hint = "too many rejected requests from this address; wait Retry-After seconds"


@dataclass(frozen=True)
class Key:
    """What one window counts: rejections of one reason, on one route, from one source."""

    source: str
    route: str
    reason: str
    actor: str | None = None


@dataclass
class Window:
    """The rejections of one key since ``opened`` (monotonic seconds)."""

    key: Key
    opened: float
    first: datetime
    last: datetime
    count: int = 0
    samples: list[str] = field(default_factory=list)

    def details(self, seconds: float) -> dict[str, Any]:
        """The audit record's fields (besides event, actor and at)."""
        return {"source": self.key.source, "route": self.key.route, "reason": self.key.reason,
                "count": self.count, "first": self.first.isoformat(), "last": self.last.isoformat(),
                "window_seconds": seconds, "body_sha256_samples": self.samples}


class Tally:
    """Open windows by key, and closed ones waiting to be journaled. Time is passed in."""

    def __init__(self, seconds: float, samples: int, max_open: int = MAX_OPEN) -> None:
        self.seconds, self.samples, self.max_open = seconds, samples, max_open
        self._open: dict[Key, Window] = {}
        self._closed: list[Window] = []

    def add(self, key: Key, now: float, at: datetime, body_sha256: str | None) -> None:
        """Count one rejection of ``key`` at monotonic ``now`` (wall clock ``at``)."""
        win = self._open.get(key)
        if win is not None and now >= win.opened + self.seconds:
            self._closed.append(self._open.pop(key))
            win = None
        if win is None:
            if len(self._open) >= self.max_open:  # dicts keep insertion order: the oldest first
                self._closed.append(self._open.pop(next(iter(self._open))))
            win = self._open[key] = Window(key, now, at, at)
        win.count += 1
        win.last = at
        if body_sha256 is not None and len(win.samples) < self.samples and body_sha256 not in win.samples:
            win.samples.append(body_sha256)

    def pop_closed(self, now: float, everything: bool = False) -> list[Window]:
        """Take the windows closed by ``now`` (``everything``: the open ones too)."""
        due = [k for k, w in self._open.items() if everything or now >= w.opened + self.seconds]
        out, self._closed = self._closed + [self._open.pop(k) for k in due], []
        return out

    def requeue(self, windows: Sequence[Window]) -> None:
        """Put back windows whose write failed, keeping at most ``max_open`` waiting."""
        self._closed[:0] = windows
        if len(self._closed) > self.max_open:
            lost = self._closed[:len(self._closed) - self.max_open]
            del self._closed[:len(lost)]
            log.error("rejections.dropped windows=%d requests=%d", len(lost), sum(w.count for w in lost))

    def next_close(self) -> float | None:
        """When the oldest open window closes (monotonic), or None when none is open."""
        return min(w.opened for w in self._open.values()) + self.seconds if self._open else None


class Buckets:
    """One token bucket per source, spent by failures only."""

    def __init__(self, burst: float, rate: float, max_sources: int = MAX_SOURCES) -> None:
        self.burst, self.rate, self.max_sources = burst, rate, max_sources
        self._state: dict[str, tuple[float, float]] = {}  # source -> (tokens, monotonic time)

    def take(self, source: str, now: float) -> float:
        """Spend one of ``source``'s tokens: 0.0 if it had one, else the seconds until it has."""
        tokens, at = self._state.pop(source, (self.burst, now))  # re-inserted: least recent first
        tokens = min(self.burst, tokens + max(0.0, now - at) * self.rate)
        spent = tokens >= 1
        self._state[source] = (tokens - 1 if spent else tokens, now)
        if len(self._state) > self.max_sources:
            self._forget(now)
        return 0.0 if spent else (1 - tokens) / self.rate

    def _forget(self, now: float) -> None:
        """Drop the buckets that are full again (a new one starts full), then the least recent."""
        for source, (tokens, at) in list(self._state.items()):
            if tokens + (now - at) * self.rate >= self.burst:
                del self._state[source]
        while len(self._state) > self.max_sources:
            del self._state[next(iter(self._state))]


def limit_key(source: str) -> str:
    """The bucket of ``source``: the address itself, or its /64 for IPv6 (one host's usual share)."""
    try:
        ip = ipaddress.ip_address(source)
    except ValueError:
        return source
    return str(ipaddress.ip_network(f"{ip}/64", strict=False)) if ip.version == 6 else str(ip)


def client_address(peer: str | None, forwarded: str | None, trusted: Sequence[Network]) -> str:
    """The requesting client: ``peer``, or when ``peer`` is a trusted proxy, the rightmost
    ``X-Forwarded-For`` hop that is not one (a hop that is no address ends the walk)."""
    client = peer or "unknown"
    if not forwarded or not _within(client, trusted):
        return client
    for hop in reversed(forwarded.split(",")):
        if not _within(client, trusted):
            break
        try:
            client = str(ipaddress.ip_address(hop.strip()))
        except ValueError:
            break
    return client


def _within(address: str, networks: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Rejections:
    """The process's rejection windows and failure buckets, journaled through ``sessions``."""

    def __init__(self, settings: Settings, sessions: CatalogSessions,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], datetime] = _utcnow) -> None:
        self.tally = Tally(settings.rejection_window, settings.rejection_samples)
        self.buckets = Buckets(settings.failure_burst, settings.failure_rate)
        self._sessions, self._clock, self._wall = sessions, clock, wall
        self._lock = threading.Lock()  # guards tally and buckets, held only briefly
        self._writing = threading.Lock()  # one flush at a time (the thread, close)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def record(self, source: str, route: str, reason: str, actor: str | None = None,
               body: bytes | None = None) -> float:
        """Count one rejection; return 0.0, or the Retry-After seconds when ``source`` is
        limited (then it is counted as ``rate-limited``)."""
        digest = sha256_hex(body) if body is not None else None
        with self._lock:
            now = self._clock()
            wait = self.buckets.take(limit_key(source), now)
            self.tally.add(Key(source, route, RATE_LIMITED if wait else reason, actor), now, self._wall(), digest)
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._run, name="rejections", daemon=True)
                self._thread.start()
        return wait

    def flush(self, everything: bool = False) -> int:
        """Journal the closed windows (``everything``: the open ones too); return how many.

        A failed write is logged and its windows kept for the next flush; nothing raises.
        """
        with self._writing:
            with self._lock:
                windows = self.tally.pop_closed(self._clock(), everything)
            if not windows:
                return 0
            try:
                with self._sessions.begin() as session:
                    for win in windows:
                        append_audit(session, EVENT, win.key.actor, **win.details(self.tally.seconds))
            except Exception as exc:  # noqa: BLE001 - kept and retried; the requests were answered
                with self._lock:
                    self.tally.requeue(windows)
                log.error("rejections.write.failed error=%s windows=%d", exc.__class__.__name__, len(windows))
                return 0
        log.info("rejections.journaled windows=%d requests=%d", len(windows), sum(w.count for w in windows))
        return len(windows)

    def close(self) -> None:
        """Stop the flushing thread and journal every window, open or closed."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.flush(everything=True)

    def _run(self) -> None:
        while not self._stop.wait(self._pause()):
            self.flush()

    def _pause(self) -> float:
        """Until the oldest open window closes, but at least 50 ms and at most a second."""
        with self._lock:
            closes, now = self.tally.next_close(), self._clock()
        return 1.0 if closes is None else min(1.0, max(0.05, closes - now))


# --- Flask wiring -----------------------------------------------------------------------


def init_app(app: Flask) -> None:
    """Count every rejected response of ``app`` (and answer 429 for limited sources)."""
    app.after_request(_after_request)


def note(reason: str, actor: str | None = None) -> None:
    """Name why this request is being refused (else the status names it)."""
    g.rejection = (reason, actor)


def hold_body(raw: bytes) -> None:
    """Keep a reference to the body read, so a rejection can sample its hash."""
    g.rejection_body = raw


def _after_request(response: Response) -> Response:
    status = response.status_code
    if status not in REJECTED and not (status == 400 and request.blueprint == "intake"):
        return response
    reason, actor = g.get("rejection") or (DEFAULT_REASONS[status], None)
    services = current_app.extensions["archiver"]
    source = client_address(request.remote_addr, request.headers.get("X-Forwarded-For"),
                            services.settings.trusted_proxies)
    route = f"{request.method} {request.url_rule.rule if request.url_rule else '(no route)'}"
    wait = services.rejections.record(source, route, reason, actor, g.get("rejection_body"))
    if wait:
        _limit(response, wait)
    return response


def _limit(response: Response, wait: float) -> None:
    """Turn ``response`` into the 429 (in place, so headers other hooks set stay)."""
    retry = max(1, math.ceil(wait))
    response.status_code = 429
    response.set_data(json.dumps({**RateLimited("too many rejected requests from this source").as_dict(),
                                  "retry_after": retry}))
    response.mimetype = "application/json"
    response.headers["Retry-After"] = str(retry)
