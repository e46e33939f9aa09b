"""Two tiers, so that intake never waits for reads.

The **intake** tier answers Meta's webhooks and the capture API (blueprint ``intake``); the
**read** tier answers everything else: search, conversations, record reads, stats, and the
exports and console to come. ``/healthz`` is answered by each tier itself. A search over a
huge message, or an export, costs the read tier's workers only; a webhook's 200 waits for its
journal commit and nothing else.

``archiver serve`` (``--role all``) runs both on one host: the public port's gunicorn serves
intake in its own workers and relays every read route, as HTTP, over the Unix socket
``ARCHIVER_HOME/run/reader.sock`` to a second gunicorn with its own workers (``--read-workers``),
run at a lower CPU priority. ``--role intake`` and ``--role read`` run one tier each (see the
README for splitting them at scale).

This module holds which route belongs to which tier (:func:`tier_of`), the WSGI gate that
sends a request to its tier (:class:`Gate`) and the relay over the socket (:class:`Relay`).
"""

from __future__ import annotations

import http.client
import json
import logging
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

from werkzeug.exceptions import HTTPException
from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.routing import Map

log = logging.getLogger(__name__)

INTAKE, READ, ALL = "intake", "read", "all"
ROLES = (ALL, INTAKE, READ)

#: Answered by every tier: health probes go to each tier's own workers.
EVERY_TIER = frozenset({"api.healthz"})
#: The header naming the tier that answered (tests and operators can see the split).
TIER_HEADER = "X-Archiver-Tier"
#: Set by the relay to the client's address, trusted only on the read tier's Unix socket.
REMOTE_HEADER = "X-Archiver-Remote"
#: Seconds the relay waits for the read tier to answer (gunicorn restarts a stuck worker first).
RELAY_TIMEOUT = 300.0

_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
                         "trailer", "trailers", "transfer-encoding", "upgrade", "content-length"})

# gunicorn's secure_scheme_headers: set by the relay, never passed on from a client.
_SCHEME_HEADERS = frozenset({"x-forwarded-proto", "x-forwarded-protocol", "x-forwarded-ssl"})

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def reader_socket(home: Path) -> Path:
    """Where the read tier listens on a host that runs both tiers."""
    return home / "run" / "reader.sock"


def tier_of(endpoint: str) -> str:
    """The tier that serves Flask endpoint ``endpoint``: intake, read, or all (both answer)."""
    if endpoint in EVERY_TIER:
        return ALL
    return INTAKE if endpoint.split(".", 1)[0] == "intake" else READ


class Gate:
    """WSGI middleware (``app.wsgi_app``) of a tier's Flask app.

    A route of this tier (or of every tier) goes to the app; a route of the read tier, on the
    intake tier, goes to ``relay`` (or is refused when there is none); a route of the intake
    tier, on the read tier, is refused. Paths no route matches go to the app (its 404 or
    405). Every answer names the tier in :data:`TIER_HEADER`.
    """

    def __init__(self, inner: WSGIApp, url_map: Map, tier: str, relay: WSGIApp | None = None,
                 trust_remote_header: bool = False) -> None:
        self.inner = inner
        self.url_map = url_map
        self.tier = tier
        self.relay = relay
        self.trust_remote_header = trust_remote_header
        # Routes without converters (every intake route, the webhook above all) are looked up
        # by (method, path) here, so their requests are not matched twice (here and by Flask).
        self._static = {(method, rule.rule): tier_of(str(rule.endpoint))
                        for rule in url_map.iter_rules() if not rule.arguments for method in rule.methods or ()}

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        owner = self._static.get((environ.get("REQUEST_METHOD", ""), environ.get("PATH_INFO", "")))
        if owner is None:
            endpoint = self._endpoint(environ)
            owner = tier_of(endpoint) if endpoint else ALL
        if self.tier == ALL or owner in (ALL, self.tier):
            remote = environ.pop(_environ_key(REMOTE_HEADER), None)  # from the relay, or a forgery
            if remote is not None and self.trust_remote_header:
                environ["REMOTE_ADDR"] = remote
            return self.inner(environ, self._naming(start_response, self.tier))
        if owner == READ and self.relay is not None:
            return self.relay(environ, start_response)
        return _json(start_response, 404, self.tier, error="not-here",
                     message=f"this route is served by the {owner} tier; this process serves {self.tier}",
                     hint=f"run `archiver serve --role {owner}` (or --role all) and route it there")

    def _endpoint(self, environ: dict[str, Any]) -> str | None:
        """The endpoint that ``environ`` routes to, or None (no route, a redirect, another method)."""
        try:
            endpoint, _ = self.url_map.bind_to_environ(environ).match()
        except HTTPException:
            return None
        return str(endpoint)

    @staticmethod
    def _naming(start_response: Callable[..., Any], tier: str) -> Callable[..., Any]:
        def named(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            return start_response(status, [*headers, (TIER_HEADER, tier)], exc_info)
        return named


class Relay:
    """WSGI app that forwards the request, as HTTP/1.1, to the read tier's Unix socket and
    streams its answer back. In a gevent worker the socket is cooperative: a relayed search
    waiting on the read tier costs a greenlet, and intake's requests keep being served.

    Answers 503 (JSON) when the read tier does not accept the connection, and 413 to a body
    over ``max_body`` bytes (read before relaying, so it is bounded like intake's).
    """

    CHUNK = 64 * 1024

    def __init__(self, path: Path, max_body: int, timeout: float = RELAY_TIMEOUT) -> None:
        self.path = path
        self.max_body = max_body
        self.timeout = timeout

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        body = _body(environ, self.max_body)
        if isinstance(body, int):
            return _json(start_response, 413, INTAKE, error="too-large",
                         message=f"body of {body} bytes or more exceeds the {self.max_body}-byte limit")
        conn = _UnixConnection(str(self.path), self.timeout)
        try:
            conn.request(environ["REQUEST_METHOD"], _target(environ), body=body, headers=_forwarded_headers(environ))
            resp = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:  # refused, missing, reset, timed out
            conn.close()
            log.error("relay.failed error=%s", exc.__class__.__name__)
            return _json(start_response, 503, INTAKE, error="read-tier-unavailable",
                         message="the read tier did not answer; intake is unaffected",
                         hint="check the read tier's log (archiver serve --role read)")
        # gunicorn on this side sets its own Server and Date.
        headers = [(k, v) for k, v in resp.getheaders() if k.lower() not in _HOP_BY_HOP | {"server", "date"}]
        length = resp.getheader("Content-Length")
        if length is not None:
            headers.append(("Content-Length", length))
        start_response(f"{resp.status} {resp.reason}", headers)
        return self._stream(conn, resp)

    def _stream(self, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse) -> Iterator[bytes]:
        try:
            while chunk := resp.read(self.CHUNK):
                yield chunk
        finally:
            conn.close()


class _UnixConnection(http.client.HTTPConnection):
    """An HTTP connection to a Unix socket (the Host header says ``localhost``)."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def _environ_key(header: str) -> str:
    return "HTTP_" + header.upper().replace("-", "_")


def _target(environ: dict[str, Any]) -> str:
    """The request target as the client sent it (gunicorn's RAW_URI), else rebuilt."""
    raw = environ.get("RAW_URI")
    if raw:
        return str(raw)
    query = environ.get("QUERY_STRING")
    return quote(environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")) + (f"?{query}" if query else "")


def _body(environ: dict[str, Any], limit: int) -> bytes | int | None:
    """The request body (read routes take small ones: queries, export requests), or its
    length when over ``limit`` bytes (then not read)."""
    length = int(environ.get("CONTENT_LENGTH") or 0)  # gunicorn refused a malformed one
    if length > limit:
        return length
    stream = environ["wsgi.input"]
    if length:
        return bytes(stream.read(length))
    if environ.get("HTTP_TRANSFER_ENCODING", "").lower() == "chunked":
        raw = bytes(stream.read(limit + 1))
        return len(raw) if len(raw) > limit else raw
    return None


def _forwarded_headers(environ: dict[str, Any]) -> dict[str, str]:
    """The client's end-to-end headers (Host included), its address in :data:`REMOTE_HEADER`
    and the scheme this tier decided on, in place of any the client claimed (the read tier's
    gunicorn trusts scheme headers from its Unix socket)."""
    headers = {}
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            name = key[5:].replace("_", "-").title()
            if name.lower() not in _HOP_BY_HOP | _SCHEME_HEADERS | {REMOTE_HEADER.lower()}:
                headers[name] = value
    if environ.get("CONTENT_TYPE"):
        headers["Content-Type"] = environ["CONTENT_TYPE"]
    headers[REMOTE_HEADER] = environ.get("REMOTE_ADDR") or ""
    headers["X-Forwarded-Proto"] = environ.get("wsgi.url_scheme", "http")
    return headers


def _json(start_response: Callable[..., Any], status: int, tier: str, **body: str) -> list[bytes]:
    data = json.dumps(body).encode()
    start_response(f"{status} {HTTP_STATUS_CODES[status]}", [("Content-Type", "application/json"),
                                          ("Content-Length", str(len(data))), (TIER_HEADER, tier)])
    return [data]


def wait_for_reader(path: Path, timeout: float) -> bool:
    """Wait until the read tier at ``path`` answers ``/healthz`` (or ``timeout`` seconds pass,
    then False): at boot, so that the first read relayed after "listening" finds it ready."""
    deadline = time.monotonic() + timeout
    while True:
        conn = _UnixConnection(str(path), timeout=max(0.1, deadline - time.monotonic()))
        try:
            conn.request("GET", "/healthz")
            conn.getresponse().read()
            return True
        except (OSError, http.client.HTTPException):
            if time.monotonic() >= deadline:
                log.warning("warmup.reader_missing socket=%s", path)
                return False
            time.sleep(0.05)  # the read tier is still starting: its socket is not there yet
        finally:
            conn.close()


def warm_up(app: Any, tier: str) -> None:
    """Make a fresh worker's first request as fast as the rest: answer ``/healthz`` through
    the whole stack (gate, Flask, catalog connection, store), and build what the tier's first
    request would: the journal writer for intake, the search index for reads.

    A backend that is down is logged and left to ``/healthz`` to report.
    """
    services = app.extensions["archiver"]
    status = app.test_client().get("/healthz").status_code
    if status != 200:
        log.warning("warmup.unhealthy status=%d", status)
    try:
        if tier in (INTAKE, ALL):
            services.journal  # noqa: B018 - built on first use
        if tier in (READ, ALL):
            from archiver.search import query, text

            services.search.ping()
            text.snippet("warm", query.highlights(query.parse("warm")))
    except Exception as exc:  # noqa: BLE001 - a backend down at boot is not a boot failure
        log.warning("warmup.failed tier=%s error=%s", tier, exc.__class__.__name__)
