"""No message content, number, wamid or token in any log.

Sentinel values (a word, phone numbers, a wamid, a media id, tokens) go through every stage of
the real service: intake, sealing, media fetch, indexing, a search, a record read and rejected
requests. Then every log is scanned for them: ``archiver -v serve``'s output (gunicorn, the web
workers and the jobs child, which share it) and Python logging captured in-process at INFO, the
most verbose level the service offers.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import select

from archiver import indexer, media, sealer
from archiver.app import create_app
from archiver.auth import create_token
from archiver.catalog import Media, Record
from archiver.config import Settings
from archiver.services import Services
from tests.conftest import OLD_SECRET, SECRET, make_env, sign
from tests.fakegraph import FakeGraph, running
from tests.serving import free_port, start_service, stop_service, wait_until

WORD = "quuxvelopterine"
CONTACT = "4479400987123"  # the sender's WhatsApp number
NUMBER = "07700900461"  # a number written in the text
WAMID = "wamid.HBgLSENTINEL0042"
IMAGE_WAMID = "wamid.HBgLSENTINEL0043"
MEDIA_ID = "7391046682155"
NAME = "Zephyrine Quobble"
GRAPH_TOKEN = "graph-sentinel-token-5f1e0c"
REFUSED_TOKEN = "wa_sentinelrefused8d2a41"
PHOTO = b"\xff\xd8\xff\xe0 sentinel photo bytes " + WORD.encode()


def body(wamid: str, message: dict[str, Any]) -> bytes:
    value = {"messaging_product": "whatsapp",
             "metadata": {"display_phone_number": "15550009999", "phone_number_id": "1099"},
             "contacts": [{"profile": {"name": NAME}, "wa_id": CONTACT}],
             "messages": [{"from": CONTACT, "id": wamid, "timestamp": "1780001000", **message}]}
    return json.dumps({"object": "whatsapp_business_account",
                       "entry": [{"id": "2099", "changes": [{"field": "messages", "value": value}]}]}).encode()


def bodies(graph: FakeGraph) -> tuple[bytes, bytes]:
    """The sentinel text message and the sentinel image message (its bytes served by ``graph``)."""
    text = body(WAMID, {"type": "text", "text": {"body": f"my {WORD} broke, call me on {NUMBER}"}})
    b64 = graph.add(MEDIA_ID, PHOTO)
    image = body(IMAGE_WAMID, {"type": "image", "image": {"caption": f"the {WORD} photo", "mime_type": "image/jpeg",
                                                          "sha256": b64, "id": MEDIA_ID}})
    return text, image


def sentinels(*tokens: str) -> list[str]:
    """Every value no log may hold: content, numbers, ids, and every secret (the app secrets too)."""
    return [WORD, CONTACT, NUMBER, WAMID, IMAGE_WAMID, MEDIA_ID, NAME, GRAPH_TOKEN, REFUSED_TOKEN, SECRET, OLD_SECRET,
            "verify-me", *tokens]


HANDSHAKE = {"hub.mode": "subscribe", "hub.verify_token": REFUSED_TOKEN, "hub.challenge": NUMBER}


def assert_clean(log: str, values: list[str], where: str) -> None:
    found = [v for v in values if v in log]
    assert not found, f"{where} contains {found}"


@pytest.fixture
def graph() -> Iterator[FakeGraph]:
    with running(FakeGraph(token=GRAPH_TOKEN)) as fake:
        yield fake


def _seq(services: Services, wamid: str) -> int | None:
    with services.sessions() as session:
        return session.scalar(select(Record.seq).where(Record.wamid == wamid, Record.kind == "message"))


def _media_stored(services: Services) -> bool:
    with services.sessions() as session:
        return session.scalar(select(Media.state).where(Media.media_id == MEDIA_ID)) == "stored"


def _exercise(base: str, auth: dict[str, str], seq: int) -> None:
    """A search, a conversation, a record read, and refused requests, through the HTTP API."""
    wait_until(lambda: requests.get(f"{base}/api/v1/search", params={"q": WORD}, headers=auth, timeout=10)
               .json().get("total") == 2, 30, "the sentinel messages indexed")
    assert requests.get(f"{base}/api/v1/search", params={"q": NUMBER}, headers=auth, timeout=10).status_code == 200
    assert requests.get(f"{base}/api/v1/conversations/{CONTACT}", headers=auth, timeout=10).status_code == 200
    got = requests.get(f"{base}/api/v1/records/{seq}", headers=auth, timeout=10)
    assert got.status_code == 200 and WORD in json.dumps(got.json()["content"])
    refused = {"Authorization": f"Bearer {REFUSED_TOKEN}"}
    assert requests.get(f"{base}/api/v1/search", params={"q": WORD}, headers=refused, timeout=10).status_code == 401
    assert requests.get(f"{base}/api/v1/records/{seq}", headers=refused, timeout=10).status_code == 401


def test_serve_and_its_jobs_log_no_content_number_wamid_or_token(tmp_path: Path, graph: FakeGraph) -> None:
    env = make_env(tmp_path / "home", ARCHIVER_SEAL_INTERVAL="0.5", ARCHIVER_GRAPH_URL=graph.url,
                   ARCHIVER_GRAPH_TOKEN=GRAPH_TOKEN)
    text, image = bodies(graph)
    port, log = free_port(), tmp_path / "serve.log"
    services = Services.open(Settings.from_env(env))
    with services.sessions.begin() as session:
        secret = create_token(session, "compliance", "log-test")
    auth = {"Authorization": f"Bearer {secret}"}
    proc = start_service(env, port, log, verbose=True)
    try:
        hook = f"http://127.0.0.1:{port}/webhooks/whatsapp"
        for b in (text, image):
            assert requests.post(hook, data=b, headers=sign(b), timeout=10).status_code == 200
        bad = {**sign(text), "X-Hub-Signature-256": "sha256=" + "0" * 64}
        assert requests.post(hook, data=text, headers=bad, timeout=10).status_code == 401
        assert requests.get(hook, params=HANDSHAKE, timeout=10).status_code == 403
        seq = wait_until(lambda: _seq(services, WAMID), 30, "the sentinel message sealed")
        wait_until(lambda: _media_stored(services), 60, "the sentinel image fetched and stored")
        _exercise(f"http://127.0.0.1:{port}", auth, seq)
    finally:
        stop_service(proc)
        services.close()
    out = log.read_text(errors="replace")
    assert "Using worker: gevent" in out and "archiver listening" in out  # the log is the service's...
    assert "seal.stored" in out and "media.stored" in out  # ...and the jobs child's, at INFO
    assert graph.hits, "the jobs never fetched the media"
    assert_clean(out, sentinels(secret), "archiver serve's output")


def test_in_process_stages_log_no_content_number_wamid_or_token(tmp_path: Path, graph: FakeGraph,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    services = Services.open(Settings.from_env(make_env(tmp_path / "home", ARCHIVER_GRAPH_URL=graph.url,
                                                        ARCHIVER_GRAPH_TOKEN=GRAPH_TOKEN)))
    client = create_app(services=services).test_client()
    text, image = bodies(graph)
    with caplog.at_level(logging.INFO):
        with services.sessions.begin() as session:
            secret = create_token(session, "compliance", "log-test")
        auth = {"Authorization": f"Bearer {secret}"}
        for b in (text, image):
            assert client.post("/webhooks/whatsapp", data=b, headers=sign(b)).status_code == 200
        assert client.post("/webhooks/whatsapp", data=text, headers={"X-Hub-Signature-256": "sha256=00"}).status_code == 401
        assert client.get("/webhooks/whatsapp", query_string=HANDSHAKE).status_code == 403
        assert client.post("/webhooks/whatsapp", data=b"{" + WORD.encode(), headers=sign(b"{" + WORD.encode())
                           ).status_code == 200  # quarantined, not parsed
        sealer.seal_pending(services)
        media.fetch_due(services)
        sealer.seal_pending(services)
        assert indexer.index_pending(services) >= 2
        assert client.get("/api/v1/search", query_string={"q": WORD}, headers=auth).get_json()["total"] == 2
        seq = _seq(services, WAMID)
        assert client.get(f"/api/v1/records/{seq}", headers=auth).status_code == 200
        assert client.get(f"/api/v1/records/{seq}", headers={"Authorization": f"Bearer {REFUSED_TOKEN}"}
                          ).status_code == 401
        assert client.post("/api/v1/capture/messages", json={"sender": WORD}, headers=auth).status_code == 403
    assert _media_stored(services)
    services.close()
    assert caplog.records, "nothing was logged: the scan would prove nothing"
    assert_clean(caplog.text, sentinels(secret), "python logging")
