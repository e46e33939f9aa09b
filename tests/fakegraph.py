"""A small local fake of the Graph API media endpoints (whatsapp-webhooks.md section 8).

It serves real HTTP on 127.0.0.1 (an ephemeral port, a background thread), so the fetcher is
tested through ``requests`` exactly as in production:

- ``GET /{media-id}`` with ``Authorization: Bearer <token>`` ->
  ``{"messaging_product", "url", "mime_type", "sha256" (hex), "file_size", "id"}``;
  401 with an OAuthException body without the token, 404 (GraphMethodException) for an
  unknown id.
- ``GET /download/{media-id}?mid=...&ext=...&hash=...`` with the same bearer header -> the
  bytes (the URL alone is refused, like lookaside.fbsbx.com).

And the template list of a WhatsApp Business Account (Meta's "Get message templates" shape):

- ``GET /{waba-id}/message_templates?limit=N[&after=CURSOR]`` with the bearer header ->
  ``{"data": [{"name", "components", "language", "status", "category", "id", ...}],
  "paging": {"cursors": {"before", "after"}, "next": URL}}`` (``next`` only while more
  remain); ``fail_templates`` answers the next N calls with 500.

Test hooks: ``add`` media, ``fail`` an id N times (500), ``corrupt`` an id (the download
serves other bytes than the stated sha256), and ``hits`` counts requests per path kind.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import secrets
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

TOKEN = "graph-token"  # what tests.conftest.make_env configures


@dataclass
class _Media:
    data: bytes
    mime_type: str
    fail_meta: int = 0  # next N metadata calls answer 500
    fail_download: int = 0  # next N downloads answer 500
    corrupt: bool = False


class _Quiet(WSGIRequestHandler):
    """No access log: it would print download URLs into the logs the tests inspect."""

    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass

    def log(self, *args: Any, **kwargs: Any) -> None:
        pass


@dataclass
class FakeGraph:
    """The fake's state and hooks; ``url`` is its base (use it as ARCHIVER_GRAPH_URL)."""

    token: str = field(default=TOKEN, repr=False)
    media: dict[str, _Media] = field(default_factory=dict)
    hits: Counter[str] = field(default_factory=Counter)
    url: str = ""
    templates: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # waba id -> template objects
    fail_templates: int = 0
    page_size: int = 100  # the most templates a page holds, whatever ``limit`` asks
    next_base: str = ""  # where paging.next points (default: this fake)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # -- hooks ----------------------------------------------------------------------------
    def add(self, media_id: str, data: bytes, mime_type: str = "image/jpeg") -> str:
        """Register media; return its sha256 as live webhooks state it (base64)."""
        self.media[media_id] = _Media(data, mime_type)
        return base64.b64encode(hashlib.sha256(data).digest()).decode()

    def fail(self, media_id: str, times: int, *, download: bool = False) -> None:
        """Answer the next ``times`` metadata (or download) calls for ``media_id`` with 500."""
        if download:
            self.media[media_id].fail_download = times
        else:
            self.media[media_id].fail_meta = times

    def corrupt(self, media_id: str) -> None:
        """Serve other bytes than the stated sha256 from now on."""
        self.media[media_id].corrupt = True

    # -- the WSGI app ---------------------------------------------------------------------
    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        return self.handle(Request(environ))(environ, start_response)

    def handle(self, req: Request) -> Response:
        parts = req.path.strip("/").split("/")
        if len(parts) == 2 and parts[1] == "message_templates":
            with self._lock:
                self.hits["templates"] += 1
            return self._templates(req, parts[0])
        kind = "download" if parts[0] == "download" and len(parts) == 2 else "meta"
        with self._lock:
            self.hits[kind] += 1
        if req.method != "GET" or len(parts) > 2:
            return _graph_error(400, "Unsupported request", "GraphMethodException", 100)
        if req.headers.get("Authorization") != f"Bearer {self.token}":
            return _graph_error(401, "Invalid OAuth access token - Cannot parse access token", "OAuthException", 190)
        media = self.media.get(parts[-1])
        if media is None:
            return _graph_error(404, f"Unsupported get request. Object with ID '{parts[-1]}' does not exist",
                                "GraphMethodException", 100)
        return self._download(media) if kind == "download" else self._meta(parts[0], media)

    def _meta(self, media_id: str, media: _Media) -> Response:
        with self._lock:
            if media.fail_meta > 0:
                media.fail_meta -= 1
                return _graph_error(500, "An unexpected error has occurred.", "OAuthException", 2)
        # A capability-like URL, as lookaside's: useless without the bearer header.
        url = f"{self.url}/download/{media_id}?mid={media_id}&ext=1780001060&hash=AR{secrets.token_hex(8)}"
        doc = {"messaging_product": "whatsapp", "url": url, "mime_type": media.mime_type,
               "sha256": hashlib.sha256(media.data).hexdigest(), "file_size": len(media.data), "id": media_id}
        return Response(json.dumps(doc), mimetype="application/json")

    def _templates(self, req: Request, waba: str) -> Response:
        if req.headers.get("Authorization") != f"Bearer {self.token}":
            return _graph_error(401, "Invalid OAuth access token - Cannot parse access token", "OAuthException", 190)
        with self._lock:
            if self.fail_templates > 0:
                self.fail_templates -= 1
                return _graph_error(500, "An unexpected error has occurred.", "OAuthException", 2)
        if waba not in self.templates:
            return _graph_error(404, f"Unsupported get request. Object with ID '{waba}' does not exist",
                                "GraphMethodException", 100)
        rows = self.templates[waba]
        limit = min(int(req.args.get("limit") or 25), self.page_size)
        start = int(base64.b64decode(req.args["after"]).decode()) if req.args.get("after") else 0
        page = rows[start:start + limit]
        cursor = base64.b64encode(str(start + len(page)).encode()).decode()
        doc: dict[str, Any] = {"data": page, "paging": {"cursors": {
            "before": base64.b64encode(str(start).encode()).decode(), "after": cursor}}}
        if start + len(page) < len(rows):
            doc["paging"]["next"] = f"{self.next_base or self.url}/{waba}/message_templates?limit={limit}&after={cursor}"
        return Response(json.dumps(doc), mimetype="application/json")

    def _download(self, media: _Media) -> Response:
        with self._lock:
            if media.fail_download > 0:
                media.fail_download -= 1
                return Response("oops", status=500)
        body = media.data + b"tampered" if media.corrupt else media.data
        return Response(body, mimetype=media.mime_type)


def _graph_error(status: int, message: str, kind: str, code: int) -> Response:
    doc = {"error": {"message": message, "type": kind, "code": code, "fbtrace_id": "AbCdEf123"}}
    return Response(json.dumps(doc), status=status, mimetype="application/json")


def serve(fake: FakeGraph) -> BaseWSGIServer:
    """Start ``fake`` on 127.0.0.1 (ephemeral port) in a daemon thread; set ``fake.url``."""
    server = make_server("127.0.0.1", 0, fake, threaded=True, request_handler=_Quiet)
    fake.url = f"http://127.0.0.1:{server.server_port}"
    threading.Thread(target=server.serve_forever, name="fake-graph", daemon=True).start()
    return server


@contextlib.contextmanager
def running(fake: FakeGraph) -> Iterator[FakeGraph]:
    """``fake`` served (see :func:`serve`) for the block, stopped afterwards."""
    server = serve(fake)
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def fake_graph() -> Iterator[FakeGraph]:
    """A running fake Graph API; point ARCHIVER_GRAPH_URL at ``fake_graph.url``."""
    with running(FakeGraph()) as fake:
        yield fake
