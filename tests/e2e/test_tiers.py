"""Intake and reads run in tiers of their own (``archiver.tiers``).

``archiver serve`` serves webhooks and capture in the public port's workers and relays every
read route over ``ARCHIVER_HOME/run/reader.sock`` to a read tier with its own workers;
``--role intake`` and ``--role read`` run one tier each. Every answer names its tier in
``X-Archiver-Tier``.
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import socketserver
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import select
from werkzeug.test import Client

from archiver import tiers
from archiver.app import create_app
from archiver.auth import create_token
from archiver.catalog import Journal
from archiver.config import Settings
from archiver.services import Services
from tests.conftest import make_env, sign
from tests.e2e.test_pipeline import msg_body
from tests.serving import ROOT, children, free_port, start_service, stop_service, wait_until

INTAKE_ENDPOINTS = {"intake.webhook_verify", "intake.webhook_receive", "intake.capture_message",
                    "intake.capture_consent"}


# --- which route is whose ----------------------------------------------------------------------


def test_every_route_has_a_tier_and_only_intake_is_served_by_the_intake_tier(services: Any) -> None:
    app = create_app(services=services)
    owners = {rule.endpoint: tiers.tier_of(rule.endpoint) for rule in app.url_map.iter_rules()}
    assert {e for e, t in owners.items() if t == tiers.INTAKE} == INTAKE_ENDPOINTS
    assert {e for e, t in owners.items() if t == tiers.ALL} == {"api.healthz"}
    # Everything else (search, conversations, records, stats, and every route added later) reads.
    assert {"search.search", "search.conversation", "api.get_record", "api.get_stats"} <= \
        {e for e, t in owners.items() if t == tiers.READ}


def _echo(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """Stands in for the Flask app and for the relay: says who answered and what it saw."""
    seen = {"remote": environ.get("REMOTE_ADDR"), "forged": environ.get("HTTP_X_ARCHIVER_REMOTE")}
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(seen).encode()]


def _relay_echo(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("299 RELAYED", [])
    return [b"relayed"]


def test_the_gate_sends_each_route_to_its_tier_and_trusts_the_relayed_address_only_behind_the_relay(
        services: Any) -> None:
    url_map = create_app(services=services).url_map
    intake = Client(tiers.Gate(_echo, url_map, tiers.INTAKE, relay=_relay_echo))
    for method, path in (("GET", "/healthz"), ("POST", "/webhooks/whatsapp"), ("GET", "/webhooks/whatsapp"),
                         ("POST", "/api/v1/capture/messages"), ("POST", "/api/v1/consent"), ("GET", "/nowhere")):
        r = intake.open(path, method=method)
        assert (r.status_code, r.headers[tiers.TIER_HEADER]) == (200, "intake"), path
    for path in ("/api/v1/search?q=x", "/api/v1/stats", "/api/v1/records/1", "/api/v1/conversations/33612345678"):
        assert intake.get(path).status_code == 299, path
    # A client cannot pass an address on: intake drops the header before its app sees it.
    r = intake.post("/webhooks/whatsapp", headers={tiers.REMOTE_HEADER: "6.6.6.6"},
                    environ_base={"REMOTE_ADDR": "10.0.0.7"})
    assert r.json == {"remote": "10.0.0.7", "forged": None}

    no_relay = Client(tiers.Gate(_echo, url_map, tiers.INTAKE))
    r = no_relay.get("/api/v1/stats")
    assert r.status_code == 404 and r.json["error"] == "not-here"

    read = Client(tiers.Gate(_echo, url_map, tiers.READ, trust_remote_header=True))
    r = read.post("/webhooks/whatsapp")
    assert (r.status_code, r.json["error"], r.headers[tiers.TIER_HEADER]) == (404, "not-here", "read")
    assert read.post("/api/v1/capture/messages").status_code == 404
    r = read.get("/api/v1/stats", headers={tiers.REMOTE_HEADER: "10.0.0.9"}, environ_base={"REMOTE_ADDR": ""})
    assert (r.status_code, r.json, r.headers[tiers.TIER_HEADER]) == (200, {"remote": "10.0.0.9", "forged": None},
                                                                      "read")
    assert read.get("/healthz").status_code == 200
    exposed = Client(tiers.Gate(_echo, url_map, tiers.READ))  # on a TCP port: the header is a forgery
    assert exposed.get("/api/v1/stats", headers={tiers.REMOTE_HEADER: "6.6.6.6"},
                       environ_base={"REMOTE_ADDR": "10.0.0.8"}).json == {"remote": "10.0.0.8", "forged": None}


class _Echo(http.server.BaseHTTPRequestHandler):
    """The read tier, as the relay sees it: answers with the request it got."""

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        data = json.dumps({"path": self.path, "headers": dict(self.headers), "body": body.decode()}).encode()
        self.send_response(201, "Made")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


def test_the_relay_passes_the_request_on_and_bounds_it(tmp_path: Path) -> None:
    path = tmp_path / "reader.sock"
    relay = Client(tiers.Relay(path, max_body=64))
    r = relay.post("/api/v1/anything", data=b"{}")
    assert (r.status_code, r.json["error"]) == (503, "read-tier-unavailable")  # nothing listens yet

    server = socketserver.ThreadingUnixStreamServer(str(path), _Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        r = relay.post("/api/v1/anything?q=%C3%A9+x", data=b'{"q": 1}', content_type="application/json",
                       headers={"Host": "archive.example", "X-Forwarded-Proto": "https", "Connection": "close",
                                tiers.REMOTE_HEADER: "6.6.6.6", "X-Custom": "kept"},
                       environ_base={"REMOTE_ADDR": "10.1.2.3", "RAW_URI": "/api/v1/anything?q=%C3%A9+x"})
        assert (r.status_code, r.status) == (201, "201 Made")
        seen = r.json
        assert seen["path"] == "/api/v1/anything?q=%C3%A9+x" and seen["body"] == '{"q": 1}'
        headers = {k.lower(): v for k, v in seen["headers"].items()}
        assert headers["host"] == "archive.example" and headers["x-custom"] == "kept"
        assert headers["content-type"] == "application/json"
        assert headers[tiers.REMOTE_HEADER.lower()] == "10.1.2.3"  # the real address, not the claimed one
        assert headers["x-forwarded-proto"] == "http"  # this tier's scheme, not the client's claim
        r = relay.post("/api/v1/anything", data=b"x" * 65)
        assert (r.status_code, r.json["error"]) == (413, "too-large")
    finally:
        server.shutdown()
        server.server_close()


# --- through archiver serve ------------------------------------------------------------------


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    # Sealing waits an hour, so the audit rows of this test stay readable in the journal.
    return make_env(tmp_path / "home", ARCHIVER_SEAL_INTERVAL="3600")


def _token(env: dict[str, str]) -> dict[str, str]:
    services = Services.open(Settings.from_env(env))
    try:
        with services.sessions.begin() as session:
            return {"Authorization": f"Bearer {create_token(session, 'compliance', 'tiers-test')}"}
    finally:
        services.close()


def _rejection_sources(env: dict[str, str], route: str) -> list[str]:
    """The sources of the journaled rejection windows of ``route`` (``METHOD rule``)."""
    services = Services.open(Settings.from_env(env))
    try:
        with services.sessions() as session:
            bodies = session.scalars(select(Journal.body).where(Journal.source == "audit", Journal.sealed.is_(False)))
            return [e["source"] for e in map(json.loads, [b for b in bodies if b])
                    if e["event"] == "requests_rejected" and e.get("route") == route]
    finally:
        services.close()


def _reader(arbiter: int) -> int:
    (pid,) = [p for p, cmd in children(arbiter).items() if "--role read" in cmd]
    return pid


@pytest.fixture
def served(env: dict[str, str], tmp_path: Path) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    port = free_port()
    proc = start_service({**env, "ARCHIVER_REJECTION_WINDOW": "1"}, port, tmp_path / "serve.log")
    try:
        yield port, proc
    finally:
        stop_service(proc)


def test_serve_answers_intake_in_its_own_workers_and_relays_reads_to_the_read_tier(
        env: dict[str, str], served: tuple[int, subprocess.Popen[bytes]]) -> None:
    port, _ = served
    base, auth = f"http://127.0.0.1:{port}", _token(env)
    body = msg_body("wamid.T1", "hello")

    def tier(r: requests.Response, status: int) -> str:
        assert r.status_code == status, r.text
        return r.headers[tiers.TIER_HEADER]

    assert tier(requests.get(f"{base}/healthz", timeout=30), 200) == "intake"
    assert tier(requests.post(f"{base}/webhooks/whatsapp", data=body, headers=sign(body), timeout=30), 200) == "intake"
    capture = requests.post(f"{base}/api/v1/capture/messages", json={}, headers=auth, timeout=30)
    assert capture.status_code in (400, 401, 403) and capture.headers[tiers.TIER_HEADER] == "intake"
    assert tier(requests.get(f"{base}/nowhere", timeout=30), 404) == "intake"
    assert tier(requests.get(f"{base}/api/v1/stats", headers=auth, timeout=30), 200) == "read"
    assert tier(requests.get(f"{base}/api/v1/search", params={"q": "hello"}, headers=auth, timeout=30), 200) == "read"
    assert tier(requests.get(f"{base}/api/v1/conversations/4479460001234", headers=auth, timeout=30), 200) == "read"
    # The relay gives the read tier the client's address, whatever the client claims.
    r = requests.get(f"{base}/api/v1/stats", headers={tiers.REMOTE_HEADER: "6.6.6.6"}, timeout=30)
    assert tier(r, 401) == "read" and r.json()["error"] == "unauthorized"
    # its rejection window (one second here) is journaled by the read tier with that address
    assert wait_until(lambda: _rejection_sources(env, "GET /api/v1/stats"), 30,
                      "the rejection window of /api/v1/stats") == ["127.0.0.1"]


def test_intake_answers_while_the_read_tier_is_frozen_or_dead(
        env: dict[str, str], served: tuple[int, subprocess.Popen[bytes]]) -> None:
    port, proc = served
    base, auth = f"http://127.0.0.1:{port}", _token(env)
    reader = _reader(proc.pid)
    frozen = [reader, *children(reader)]
    answers: list[requests.Response] = []
    search = threading.Thread(target=lambda: answers.append(
        requests.get(f"{base}/api/v1/search", params={"q": "hello"}, headers=auth, timeout=120)))
    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)
    try:
        search.start()  # waits for the frozen read tier
        for i in range(20):
            body = msg_body(f"wamid.F{i}", f"while reads are frozen {i}")
            r = requests.post(f"{base}/webhooks/whatsapp", data=body, headers=sign(body), timeout=30)
            assert r.status_code == 200 and r.headers[tiers.TIER_HEADER] == "intake"
            assert requests.get(f"{base}/healthz", timeout=30).status_code == 200
        assert not answers, "a read was answered while the read tier was stopped"
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
    search.join(timeout=120)
    assert [(r.status_code, r.headers[tiers.TIER_HEADER]) for r in answers] == [(200, "read")]

    os.kill(reader, signal.SIGKILL)  # its workers notice and exit; the arbiter starts a new read tier
    body = msg_body("wamid.F-dead", "while the read tier restarts")
    assert requests.post(f"{base}/webhooks/whatsapp", data=body, headers=sign(body), timeout=30).status_code == 200
    r = requests.get(f"{base}/api/v1/stats", headers=auth, timeout=30)
    assert r.status_code == 200 or (r.status_code, r.json()["error"]) == (503, "read-tier-unavailable")
    wait_until(lambda: [p for p, cmd in children(proc.pid).items() if "--role read" in cmd and p != reader], 60,
               "a new read tier")
    wait_until(lambda: requests.get(f"{base}/api/v1/stats", headers=auth, timeout=30).status_code == 200, 60,
               "the new read tier to answer")


def _serve(env: dict[str, str], log: Path, *args: str, ready: str) -> subprocess.Popen[bytes]:
    """``archiver serve ARGS`` in its own group, once ``ready`` is in its output."""
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "archiver.cli", "serve", *args], cwd=ROOT,
                                env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        wait_until(lambda: proc.poll() is not None or ready in log.read_text(errors="replace"), 90,
                   f"archiver serve {' '.join(args)} to print {ready!r}")
    except AssertionError:
        stop_service(proc)
        raise
    assert proc.poll() is None, log.read_text(errors="replace")[-2000:]
    return proc


def test_roles_split_the_tiers_into_services_of_their_own(env: dict[str, str], tmp_path: Path) -> None:
    auth = _token(env)
    body = msg_body("wamid.R1", "split")
    reader = _serve(env, tmp_path / "read.log", "--role", "read", "--read-workers", "1",
                    ready="read tier listening on unix:")
    try:
        port = free_port()
        intake = start_service(env, port, tmp_path / "intake.log", args=["--role", "intake"])
        try:
            base = f"http://127.0.0.1:{port}"
            r = requests.post(f"{base}/webhooks/whatsapp", data=body, headers=sign(body), timeout=30)
            assert (r.status_code, r.headers[tiers.TIER_HEADER]) == (200, "intake")
            r = requests.get(f"{base}/api/v1/search", params={"q": "split"}, headers=auth, timeout=30)
            assert (r.status_code, r.headers[tiers.TIER_HEADER]) == (200, "read")  # relayed to the other service
            assert " jobs " not in " ".join(children(reader.pid).values())  # the read role runs no jobs
            stop_service(reader)
            r = requests.get(f"{base}/api/v1/search", params={"q": "split"}, headers=auth, timeout=30)
            assert (r.status_code, r.json()["error"]) == (503, "read-tier-unavailable")
            r = requests.post(f"{base}/webhooks/whatsapp", data=body, headers=sign(body), timeout=30)
            assert r.status_code == 200
        finally:
            stop_service(intake)
    finally:
        stop_service(reader)

    # A read tier on a TCP port of its own (behind a proxy that routes by path) refuses intake.
    port = free_port()
    reader = _serve(env, tmp_path / "read-tcp.log", "--role", "read", "--port", str(port), "--read-workers", "1",
                    ready=f"read tier listening on 127.0.0.1:{port}")
    try:
        base = f"http://127.0.0.1:{port}"
        r = requests.post(f"{base}/webhooks/whatsapp", data=body, headers=sign(body), timeout=30)
        assert (r.status_code, r.json()["error"], r.headers[tiers.TIER_HEADER]) == (404, "not-here", "read")
        r = requests.get(f"{base}/api/v1/stats", headers=auth, timeout=30)
        assert (r.status_code, r.headers[tiers.TIER_HEADER]) == (200, "read")
        assert requests.get(f"{base}/healthz", timeout=30).status_code == 200
    finally:
        stop_service(reader)


def _open_files(pid: int) -> set[str]:
    names = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            names.add(os.readlink(fd))
        except OSError:
            continue
    return names


def test_listening_is_printed_once_every_worker_has_warmed_up(env: dict[str, str], tmp_path: Path) -> None:
    home = Path(env["ARCHIVER_HOME"])
    port = free_port()
    proc = _serve(env, tmp_path / "serve.log", "--port", str(port), "--read-workers", "2",
                  ready="archiver listening on")
    try:
        # No request has been sent: each worker answered its own first one while booting.
        reader = _reader(proc.pid)
        intake_workers = [p for p, cmd in children(proc.pid).items() if "--role read" not in cmd and " jobs " not in cmd]
        read_workers = list(children(reader))
        assert len(intake_workers) == 1 and len(read_workers) == 2
        for pid in intake_workers:
            assert str(home / "catalog.db") in _open_files(pid), "an intake worker did not warm up"
        for pid in read_workers:
            assert str(home / "catalog.db") in _open_files(pid), "a read worker did not warm up"
    finally:
        stop_service(proc)
