"""One test per input that used to answer 500 (or the wrong 4xx), issue 8 point 2 and its "Smaller" list.

Each answers a 4xx with a JSON error naming the field, or 401/403 for the webhook, and the
webhook's rejections are audited.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import requests
from click.testing import CliRunner
from sqlalchemy import select

from archiver import indexer, sealer
from archiver.app import create_app
from archiver.auth import create_token
from archiver.catalog import Journal
from archiver.cli import main
from tests.conftest import make_env, sign
from tests.e2e.test_pipeline import msg_body
from tests.serving import free_port, start_service, stop_service

CONSENT = {"contact": "4479460001234", "scope": "marketing", "action": "opt_in", "source": "crm",
           "at": "2026-01-01T10:00:00Z"}
CAPTURE = {"request": {"to": "4479460001234"}, "response": {}, "sender": "crm", "sent_at": 1780001000}


def audit_events(services: Any) -> list[dict[str, Any]]:
    """The audit events journaled and not sealed yet, oldest first (open rejection windows written first)."""
    services.rejections.flush(everything=True)
    with services.sessions() as session:
        bodies = session.scalars(select(Journal.body).where(Journal.source == "audit").order_by(Journal.id)).all()
    return [json.loads(body) for body in bodies if body is not None]


def assert_json_error(resp: Any, status: int, field: str | None = None) -> dict[str, Any]:
    assert resp.status_code == status, (resp.status_code, resp.get_data()[:300])
    body = resp.get_json()
    assert isinstance(body, dict) and body["error"] and body["message"], body
    if field is not None:
        assert body.get("field") == field, body
    return body


# --- the webhook: bytes, not text --------------------------------------------------------------


def test_a_signature_header_with_non_ascii_bytes_is_a_401_and_audited(client: Any, services: Any) -> None:
    body = msg_body("wamid.H1")
    before = len(audit_events(services))
    resp = client.post("/webhooks/whatsapp", data=body,
                       headers={"X-Hub-Signature-256": "sha256=\xe9\xe9\xe9", "Content-Type": "application/json"})
    assert_json_error(resp, 401)
    events = audit_events(services)[before:]
    assert [e["event"] for e in events] == ["requests_rejected"] and events[0]["reason"] == "bad signature"


def test_a_handshake_token_that_is_not_ascii_or_not_utf8_is_a_403_and_audited(client: Any, services: Any) -> None:
    for token in ("%C3%A9", "%FF", "verify-m%E9"):
        before = len(audit_events(services))
        resp = client.get(f"/webhooks/whatsapp?hub.mode=subscribe&hub.challenge=42&hub.verify_token={token}")
        assert_json_error(resp, 403)
        events = audit_events(services)[before:]
        assert [(e["event"], e["reason"]) for e in events] == [("requests_rejected", "bad handshake")], token
    ok = client.get("/webhooks/whatsapp?hub.mode=subscribe&hub.challenge=42&hub.verify_token=verify-me")
    assert ok.status_code == 200 and ok.get_data() == b"42"


# --- numbers -------------------------------------------------------------------------------------


def test_a_record_seq_beyond_64_bits_is_a_400_naming_seq(client: Any, token: Any) -> None:
    auth = token("compliance")
    for seq in ("99999999999999999999999", "9223372036854775808", "0", "-1", "abc"):
        assert_json_error(client.get(f"/api/v1/records/{seq}", headers=auth), 400, "seq")
    assert_json_error(client.get("/api/v1/records/9223372036854775807", headers=auth), 404)


def test_a_huge_around_is_a_400_naming_around(client: Any, token: Any) -> None:
    auth = token("legal")
    for around in ("99999999999999999999999", "9223372036854775808", "1e3"):
        resp = client.get("/api/v1/conversations/4479460001234", query_string={"around": around}, headers=auth)
        assert_json_error(resp, 400, "around")
    resp = client.get("/api/v1/conversations/4479460001234", query_string={"size": "9" * 30}, headers=auth)
    assert_json_error(resp, 400, "size")


def test_cli_show_of_a_seq_beyond_64_bits_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["show", "9223372036854775808"], env=make_env(tmp_path / "home"))
    assert result.exit_code == 2, result.output
    assert "SEQ" in result.output and "9223372036854775807" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


# --- JSON bodies ---------------------------------------------------------------------------------


def test_deeply_nested_bodies_are_a_400_not_a_recursion_error(client: Any, token: Any) -> None:
    auth = {**token("ingest"), "Content-Type": "application/json"}
    for url in ("/api/v1/capture/messages", "/api/v1/consent"):
        for depth in (65, 100_000):
            deep = b'{"a": ' + b"[" * depth + b"]" * depth + b"}"
            body = assert_json_error(client.post(url, data=deep, headers=auth), 400, "body")
            assert "64" in body["message"], body
        # brackets inside strings do not count; 64 levels are allowed (then the fields are checked)
        shallow = json.dumps({**CONSENT, "proof": "[" * 1000, "x": json.loads("[" * 63 + "]" * 63)})
        assert client.post("/api/v1/consent", data=shallow, headers=auth).status_code == 202


def test_a_consent_action_that_is_a_list_is_a_400(client: Any, token: Any) -> None:
    auth = {**token("ingest"), "Content-Type": "application/json"}
    for action in (["opt_in"], {"opt_in": True}, 1):
        resp = client.post("/api/v1/consent", data=json.dumps({**CONSENT, "action": action}), headers=auth)
        assert_json_error(resp, 400, "action")


# --- search parameters and the query language ---------------------------------------------------


def test_paging_errors_blame_their_own_field(client: Any, token: Any) -> None:
    auth = token("auditor")
    for args, field in (({"size": "0"}, "size"), ({"size": "501"}, "size"), ({"sort": "evil"}, "sort"),
                        ({"page": "0"}, "page"), ({"page": "9" * 25}, "page"), ({"size": "9" * 25}, "size"),
                        ({"page": "400", "size": "500"}, "page")):
        resp = client.get("/api/v1/search", query_string={"q": "refund", **args}, headers=auth)
        assert_json_error(resp, 400, field)


def test_a_bad_kind_value_says_what_is_wrong_with_it(client: Any, token: Any) -> None:
    resp = client.get("/api/v1/search", query_string={"q": 'kind:"x"'}, headers=token("compliance"))
    body = assert_json_error(resp, 400)
    assert body["error"] == "query-syntax" and "needs a value" not in body["message"]
    assert "kind: must be one of message" in body["message"] and body["position"] == "5"


def test_minus_term_excludes_and_quoted_filter_values_work(svc: Any) -> None:
    client = create_app(services=svc).test_client()
    for body in (msg_body("wamid.M1", "zebrafjord refund please", ts="1780001000"),
                 msg_body("wamid.M2", "zebrafjord on its own", ts="1780002000")):
        assert client.post("/webhooks/whatsapp", data=body, headers=sign(body)).status_code == 200
    sealer.seal_pending(svc)
    assert indexer.index_pending(svc) == 2
    with svc.sessions.begin() as session:
        auth = {"Authorization": f"Bearer {create_token(session, 'compliance', 'quinn')}"}

    def wamids(q: str) -> list[str]:
        resp = client.get("/api/v1/search", query_string={"q": q}, headers=auth)
        assert resp.status_code == 200, resp.get_json()
        return [h["wamid"] for h in resp.get_json()["hits"]]

    assert wamids("zebrafjord -refund") == ["wamid.M2"]
    assert wamids('zebrafjord -"refund please"') == ["wamid.M2"]
    assert wamids("zebrafjord -(refund OR nothing)") == ["wamid.M2"]
    assert wamids('contact:"+44 7946 0001234" refund') == ["wamid.M1"]
    assert wamids('kind:"message" -zebrafjord') == []
    assert wamids("e-mail OR zebrafjord") == ["wamid.M2", "wamid.M1"]  # a '-' inside a word stays in it


# --- the HTTP envelope ---------------------------------------------------------------------------


def test_a_url_over_4_kb_is_a_json_414(client: Any, token: Any) -> None:
    long_q = "a" * 4100
    assert_json_error(client.get(f"/api/v1/search?q={long_q}", headers=token("compliance")), 414)
    assert_json_error(client.get(f"/webhooks/whatsapp?hub.challenge={long_q}"), 414)
    assert client.get(f"/api/v1/search?q={'a' * 3000}", headers=token("compliance")).status_code == 200


def test_the_bearer_scheme_is_accepted_in_any_case(client: Any, token: Any) -> None:
    secret = token("compliance")["Authorization"].split(" ", 1)[1]
    for scheme in ("bearer", "BEARER", "Bearer", "bEaReR"):
        resp = client.get("/api/v1/stats", headers={"Authorization": f"{scheme} {secret}"})
        assert resp.status_code == 200, scheme
    for header in (f"Bearer{secret}", f"Basic {secret}", "Bearer ", "bearer"):
        assert_json_error(client.get("/api/v1/stats", headers={"Authorization": header}), 401)


def test_every_response_is_no_store_and_nosniff(client: Any, token: Any) -> None:
    auth = token("compliance")
    body = msg_body("wamid.C1")
    responses = [
        client.get("/healthz"), client.get("/api/v1/stats", headers=auth), client.get("/api/v1/stats"),
        client.get("/api/v1/records/1", headers=auth), client.get("/no/such/route"),
        client.post("/webhooks/whatsapp", data=body, headers=sign(body)),
        client.post("/webhooks/whatsapp", data=body),
        client.get("/webhooks/whatsapp?hub.mode=subscribe&hub.challenge=1&hub.verify_token=verify-me"),
    ]
    for resp in responses:
        assert resp.headers.get("Cache-Control") == "no-store", (resp.request.path, resp.headers)
        assert resp.headers.get("X-Content-Type-Options") == "nosniff", resp.request.path


def test_served_long_urls_and_non_ascii_headers_get_json(tmp_path: Path) -> None:
    """Through gunicorn: its request line limit sits above the app's, and header bytes stay bytes."""
    env = make_env(tmp_path / "home")
    port = free_port()
    proc = start_service(env, port, tmp_path / "serve.log")
    try:
        base = f"http://127.0.0.1:{port}"
        resp = requests.get(f"{base}/api/v1/search?q={'a' * 6000}", timeout=30)
        assert resp.status_code == 414 and resp.json()["error"] == "uri-too-long"
        body = msg_body("wamid.G1")
        resp = requests.post(f"{base}/webhooks/whatsapp", data=body, timeout=30,
                             headers={"X-Hub-Signature-256": "sha256=\xe9\xe9\xe9".encode("latin-1")})
        assert resp.status_code == 401 and resp.json()["error"] == "bad-signature"
        resp = requests.get(f"{base}/webhooks/whatsapp?hub.mode=subscribe&hub.verify_token=%FF", timeout=30)
        assert resp.status_code == 403 and resp.json()["error"] == "forbidden"
    finally:
        stop_service(proc)


def test_a_query_string_that_is_not_utf8_is_a_400(client: Any, token: Any) -> None:
    # Found by tests/e2e/test_api_fuzz.py: werkzeug's request.args raised UnicodeDecodeError mid-view.
    resp = client.get("/api/v1/search", headers=token("compliance"), environ_overrides={"QUERY_STRING": "q=\x80"})
    assert_json_error(resp, 400, "query")
