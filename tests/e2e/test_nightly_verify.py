"""The nightly verification job: seals a verification record; a tampered archive degrades stats/healthz and calls the alert webhook."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest

from archiver import integrity_job, stats
from tests.e2e.test_tamper import objects, rewrite, sealed, segments  # noqa: F401 - the fixture

RECEIVED: list[dict[str, Any]] = []


class Hook(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - the http.server name
        RECEIVED.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_nightly_verification_ok_then_degraded_with_alert(sealed: Any, client: Any,  # noqa: F811
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv(integrity_job.WEBHOOK_ENV, f"http://127.0.0.1:{server.server_port}/alert")
    try:
        good = integrity_job.run(sealed)
        assert good["outcome"] == "ok" and good["segments"] == 3 and good["first_error"] is None
        with sealed.sessions() as session:
            assert stats.collect(session)["integrity"] == {"status": "ok", "first_error": None}
        assert RECEIVED == []
        seg = segments(sealed)[1]
        path = objects(sealed) / seg.key
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01
        rewrite(path, bytes(data))
        bad = integrity_job.run(sealed)
        assert bad["outcome"] == "failed" and bad["first_error"].startswith(seg.key)
        with sealed.sessions() as session:
            assert stats.collect(session)["integrity"]["status"] == "degraded"
        health = client.get("/healthz").get_json()
        assert health["status"] == "degraded" and health["integrity"]["first_error"].startswith(seg.key)
        assert RECEIVED and RECEIVED[-1]["alert"] == "integrity-verification-failed"
    finally:
        server.shutdown()
