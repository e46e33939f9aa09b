"""Webhook -> seal -> index -> search API / CLI, on FTS5 and on a real OpenSearch node."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from archiver import indexer, sealer, stats
from archiver.app import create_app
from archiver.catalog import Record
from archiver.config import Settings
from archiver.errors import SearchUnavailable
from archiver.services import Services
from tests import backends
from tests.conftest import make_env, sign
from tests.e2e.test_pipeline import msg_body, status_body


def echo_body(wamid: str, text: str) -> bytes:
    value = {"messaging_product": "whatsapp", "metadata": {"display_phone_number": "15550009999", "phone_number_id": "1099"},
             "message_echoes": [{"from": "15550009999", "to": "4479460001234", "id": wamid, "timestamp": "1780001600",
                                 "type": "text", "text": {"body": text}}]}
    return json.dumps({"object": "whatsapp_business_account",
                       "entry": [{"id": "2099", "changes": [{"field": "smb_message_echoes", "value": value}]}]}).encode()


def feed(services: Any) -> Any:
    client = create_app(services=services).test_client()
    for body in (msg_body("wamid.S1", "I need a refund for the résumé service", ts="1780001000"),
                 echo_body("wamid.S2", "Refund approved, see you Tuesday"),
                 msg_body("wamid.S3", "Thanks 🙏", ts="1780002000"),
                 status_body("wamid.S2", "read")):
        assert client.post("/webhooks/whatsapp", data=body, headers=sign(body)).status_code == 200
    sealer.seal_pending(services)
    return client


def test_search_api_finds_sealed_messages_and_audits(svc: Any, token: Any) -> None:
    client = feed(svc)
    with svc.sessions() as session:
        before = stats.collect(session, svc.search)
    assert before["index"] == {"state": "not-built", "indexed": 0, "lag": before["chain"]["seq"]} and before["index"]["lag"] > 0
    assert indexer.index_pending(svc) == 3
    with svc.sessions() as session:
        after = stats.collect(session, svc.search)
    assert after["index"] == {"state": "built", "indexed": after["chain"]["seq"], "lag": 0}
    from archiver.auth import create_token

    with svc.sessions.begin() as session:
        auth = {"Authorization": f"Bearer {create_token(session, 'compliance', 'cathy')}"}
    got = client.get("/api/v1/search", query_string={"q": "refund resume"}, headers=auth).get_json()
    assert got["total"] == 1 and got["hits"][0]["wamid"] == "wamid.S1"
    assert "<mark>" in got["hits"][0]["snippet"]
    both = client.get("/api/v1/search", query_string={"q": "refund"}, headers=auth).get_json()
    assert both["total"] == 2 and both["facets"]["direction"] == {"in": 1, "out": 1}
    assert both["facets"]["channel"] == {"customer": 1, "app": 1}
    out = client.get("/api/v1/search", query_string={"q": "direction:out channel:app"}, headers=auth).get_json()
    assert [h["wamid"] for h in out["hits"]] == ["wamid.S2"]
    bad = client.get("/api/v1/search", query_string={"q": "refund AND (resume"}, headers=auth)
    assert bad.status_code == 400 and "position" in bad.get_json()
    thread = client.get("/api/v1/conversations/4479460001234", headers=auth).get_json()
    # oldest first, by the time each message was sent (1780001000, 1780001600, 1780002000)
    assert [m["wamid"] for m in thread["messages"]] == ["wamid.S1", "wamid.S2", "wamid.S3"]
    late = msg_body("wamid.S0", "sent before the others, delivered after them", ts="1780000500")
    assert client.post("/webhooks/whatsapp", data=late, headers=sign(late)).status_code == 200
    sealer.seal_pending(svc)
    assert indexer.index_pending(svc) == 1
    thread = client.get("/api/v1/conversations/4479460001234", headers=auth).get_json()
    assert [m["wamid"] for m in thread["messages"]] == ["wamid.S0", "wamid.S1", "wamid.S2", "wamid.S3"]  # time, not seq
    sealer.seal_pending(svc)
    with svc.sessions() as session:
        audits = session.scalars(select(Record.type).where(Record.kind == "audit")).all()
    assert audits.count("search") == 4 and "conversation_viewed" in audits


def test_reindex_rebuilds_from_worm(svc: Any) -> None:
    feed(svc)
    indexer.index_pending(svc)
    svc.search.reset()
    assert svc.search.search("refund").total == 0
    assert indexer.reindex(svc) == 3
    assert svc.search.search("refund").total == 2


def test_lone_surrogates_in_a_webhook_do_not_stop_the_indexer(svc: Any) -> None:
    # JSON may carry a lone surrogate; the sealed payload keeps it exactly, and the index
    # stores U+FFFD in its place (UTF-8 has no lone surrogates).
    body = msg_body("wamid.L1", "refund \ud83d please").replace(b'"name": "Ines"', b'"name": "In\\udc00s"')
    client = create_app(services=svc).test_client()
    assert client.post("/webhooks/whatsapp", data=body, headers=sign(body)).status_code == 200
    sealer.seal_pending(svc)
    assert indexer.index_pending(svc) == 1
    (hit,) = svc.search.search("refund please").hits
    assert (hit.wamid, hit.contact_name) == ("wamid.L1", "In\ufffds")
    assert hit.snippet == "<mark>refund</mark> \ufffd <mark>please</mark>"


@pytest.mark.opensearch
def test_opensearch_down_capture_goes_on_and_indexer_catches_up(tmp_path: Path, token: Any) -> None:
    url = f"{backends.opensearch_url()}/fault-{uuid.uuid4().hex[:10]}"
    services = Services.open(Settings.from_env(make_env(tmp_path / "home", ARCHIVER_SEARCH_URL=url)))
    client = feed(services)
    indexer.index_pending(services)
    backends.stop("opensearch")
    try:
        for i in range(5):
            body = msg_body(f"wamid.F{i}", f"refund while down {i}")
            assert client.post("/webhooks/whatsapp", data=body, headers=sign(body)).status_code == 200
        assert sealer.seal_pending(services) > 0
        with pytest.raises(SearchUnavailable):
            indexer.index_pending(services)
        with services.sessions.begin() as session:
            from archiver.auth import create_token
            auth = {"Authorization": f"Bearer {create_token(session, 'legal', 'lee')}"}
        resp = client.get("/api/v1/search", query_string={"q": "refund"}, headers=auth)
        assert resp.status_code == 503 and resp.get_json()["error"] == "search-unavailable"
        with services.sessions() as session:  # the cursor is in the index: the lag is unknown, not 0
            assert stats.collect(session, services.search)["index"] == {
                "state": "unavailable", "indexed": None, "lag": None, "error": "search-unavailable"}
    finally:
        backends.start("opensearch")
    assert indexer.index_pending(services) == 5
    result = services.search.search("refund", size=50)
    assert result.total == 7 and len({h.seq for h in result.hits}) == 7
    services.search.reset()
    services.close()
