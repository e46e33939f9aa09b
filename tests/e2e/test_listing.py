"""``archiver audit list`` / ``quarantine list`` and ``GET /api/v1/audit`` / ``/api/v1/quarantine``:
the same filters, pages and errors on both, role-checked and audited."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import select, update

from archiver import sealer
from archiver.catalog import Journal, Record
from archiver.config import Settings
from tests.conftest import sign
from tests.e2e.test_pipeline import msg_body

NOT_UTF8 = '{"entry": ["\u00e9t\u00e9"]}'.encode("latin-1")
BAD_JSON = b'{"entry": ['
NOT_OBJECT = b"[1, 2]"


@pytest.fixture
def settings(catalog_env: dict[str, str]) -> Settings:
    """Each test here runs on SQLite and on PostgreSQL (the lists are SQL joins over the catalog)."""
    return Settings.from_env(catalog_env)


@pytest.fixture
def auditor(token: Any) -> dict[str, str]:
    """One auditor token for the whole test (every hypothesis example of it too)."""
    return token("auditor")  # type: ignore[no-any-return]


@pytest.fixture
def archive(client: Any, services: Any) -> dict[str, Any]:
    """Three quarantined bodies, one good one, three refused API calls and a refused webhook, sealed."""
    for body in (NOT_UTF8, BAD_JSON, msg_body("wamid.L1"), NOT_OBJECT):
        assert client.post("/webhooks/whatsapp", data=body, headers=sign(body)).status_code == 200
    # three refusals with three keys (route, reason): three rejection windows, written first...
    assert client.get("/api/v1/stats", headers={"Authorization": "Bearer wa_wrong"}).status_code == 401
    assert client.get("/api/v1/stats").status_code == 401
    assert client.get("/api/v1/search?q=x", headers={"Authorization": "Bearer wa_wrong"}).status_code == 401
    services.rejections.flush(everything=True)
    # ...then a bad signature: the newest audit record
    assert client.post("/webhooks/whatsapp", data=b"{}", headers={"X-Hub-Signature-256": "sha256=00"}).status_code == 401
    services.rejections.flush(everything=True)
    sealer.seal_pending(services)
    with services.sessions() as session:
        audits = session.scalars(select(Record.seq).where(Record.kind == "audit").order_by(Record.seq)).all()
        quarantined = session.scalars(select(Record.seq).where(Record.kind == "quarantine").order_by(Record.seq)).all()
    assert len(audits) == 4 and len(quarantined) == 3
    return {"audits": list(audits), "quarantined": list(quarantined)}


def _api(client: Any, auth: dict[str, str], route: str, **params: str) -> Any:
    return client.get(f"/api/v1/{route}", query_string=params, headers=auth)


def test_audit_list_on_the_api_filters_and_pages(client: Any, token: Any, archive: dict[str, Any]) -> None:
    auth = token("auditor")
    every = _api(client, auth, "audit").get_json()
    assert [i["seq"] for i in every["items"]] == archive["audits"][::-1]  # newest first
    assert every["next_cursor"] is None
    denied = _api(client, auth, "audit", kind="requests_rejected").get_json()["items"]
    assert len(denied) == 4 and {i["event"] for i in denied} == {"requests_rejected"}
    assert sorted((i["details"]["route"], i["details"]["reason"], i["details"]["count"]) for i in denied[1:]) == [
        ("GET /api/v1/search", "bad token", 1), ("GET /api/v1/stats", "bad token", 1), ("GET /api/v1/stats", "no token", 1)]
    both = _api(client, auth, "audit", kind="record_viewed,requests_rejected").get_json()["items"]
    assert len(both) == 4 and both[0]["details"]["reason"] == "bad signature" and both[0]["actor"] is None
    assert _api(client, auth, "audit", kind="record_viewed").get_json()["items"] == []
    # pages: two, then the next two after the cursor, then nothing more
    first = _api(client, auth, "audit", limit="2", order="oldest").get_json()
    assert [i["seq"] for i in first["items"]] == archive["audits"][:2] and first["next_cursor"] == archive["audits"][1]
    second = _api(client, auth, "audit", limit="2", order="oldest", cursor=str(first["next_cursor"])).get_json()
    assert [i["seq"] for i in second["items"]] == archive["audits"][2:] and second["next_cursor"] is None
    # time window
    now = datetime.now(timezone.utc)
    assert len(_api(client, auth, "audit", since=(now - timedelta(hours=1)).isoformat()).get_json()["items"]) == 4
    assert _api(client, auth, "audit", since=(now + timedelta(hours=1)).isoformat()).get_json()["items"] == []
    assert _api(client, auth, "audit", until="2020-01-01").get_json()["items"] == []
    assert len(_api(client, auth, "audit", since=now.date().isoformat()).get_json()["items"]) == 4


def test_the_time_window_is_the_journal_time(client: Any, services: Any, token: Any, archive: dict[str, Any]) -> None:
    old = datetime(2026, 1, 15, 12, 0, tzinfo=timezone.utc)
    with services.sessions.begin() as session:
        session.execute(update(Journal).where(Journal.delivery_seq == archive["audits"][0]).values(received_at=old))
    auth = token("compliance")
    january = _api(client, auth, "audit", since="2026-01-15T11:59:59Z", until="2026-01-15T12:00:01Z").get_json()
    assert [i["seq"] for i in january["items"]] == [archive["audits"][0]]
    assert january["items"][0]["at"] == old.isoformat()
    after = _api(client, auth, "audit", since="2026-01-15T12:00:01+00:00").get_json()["items"]
    assert archive["audits"][0] not in [i["seq"] for i in after] and len(after) == 3


def test_quarantine_list_on_the_api_names_reason_delivery_and_hash(client: Any, services: Any, token: Any,
                                                                  archive: dict[str, Any]) -> None:
    auth = token("admin")
    got = _api(client, auth, "quarantine", order="oldest").get_json()
    reasons = [i["reason"] for i in got["items"]]
    assert reasons == ["body is not UTF-8", "invalid JSON", "body is not a JSON object"]
    with services.sessions() as session:
        hashes = session.scalars(select(Journal.body_sha256).where(Journal.source == "webhook").order_by(Journal.id)).all()
    assert [i["body_sha256"] for i in got["items"]] == [hashes[0], hashes[1], hashes[3]]
    assert all(i["source"] == "webhook" and i["delivery_seq"] < i["seq"] for i in got["items"])
    utf8 = _api(client, auth, "quarantine", reason="utf-8").get_json()["items"]  # case-insensitive, contained
    assert [i["reason"] for i in utf8] == ["body is not UTF-8"]
    two = _api(client, auth, "quarantine", reason="JSON", limit="1").get_json()
    assert [i["reason"] for i in two["items"]] == ["body is not a JSON object"] and two["next_cursor"]
    rest = _api(client, auth, "quarantine", reason="JSON", limit="1", cursor=str(two["next_cursor"])).get_json()
    assert [i["reason"] for i in rest["items"]] == ["invalid JSON"] and rest["next_cursor"] is None


@pytest.mark.parametrize(("route", "params", "field"), [
    ("audit", {"since": "yesterday"}, "since"), ("audit", {"until": "2026-13-01"}, "until"),
    ("audit", {"since": "2026-02-01", "until": "2026-01-01"}, "until"),
    ("audit", {"limit": "0"}, "limit"), ("audit", {"limit": "1001"}, "limit"), ("audit", {"limit": "ten"}, "limit"),
    ("audit", {"cursor": "0"}, "cursor"), ("audit", {"cursor": "99999999999999999999999"}, "cursor"),
    ("audit", {"order": "evil"}, "order"), ("audit", {"reason": "x"}, "reason"), ("audit", {"page": "2"}, "page"),
    ("quarantine", {"kind": "x"}, "kind"), ("quarantine", {"since": "\u00e9"}, "since"),
    ("quarantine", {"reason": "x" * 201}, "reason"), ("audit", {"kind": "a\x00b"}, "kind"),
    ("quarantine", {"reason": "\x1b[31m"}, "reason"), ("audit", {"since": "0001-01-01T00:00:00+01:00"}, "since"),
    ("audit", {"until": "9999-12-31T23:59:59-01:00"}, "until"),
])
def test_bad_filters_are_400_naming_the_field(client: Any, token: Any, route: str, params: dict[str, str],
                                              field: str) -> None:
    resp = _api(client, token("auditor"), route, **params)
    assert resp.status_code == 400 and resp.get_json()["field"] == field


@pytest.mark.parametrize("route", ["audit", "quarantine"])
def test_lists_are_for_oversight_roles(client: Any, token: Any, route: str) -> None:
    for role in ("admin", "auditor", "compliance"):
        assert _api(client, token(role), route).status_code == 200, role
    for role in ("legal", "ingest"):
        assert _api(client, token(role), route).status_code == 403, role
    assert _api(client, {}, route).status_code == 401


def test_listing_is_itself_audited(client: Any, services: Any, token: Any, catalog_cli: Any) -> None:
    auth = token("auditor")
    assert _api(client, auth, "audit", kind="record_viewed", limit="5").status_code == 200
    assert _api(client, auth, "quarantine", reason="UTF-8").status_code == 200
    assert catalog_cli("audit", "list", "--since", "2026-01-01").exit_code == 0
    sealer.seal_pending(services)
    listed = _api(client, auth, "audit", kind="audit_listed,quarantine_listed", order="oldest").get_json()["items"]
    assert [(i["event"], i["actor"]) for i in listed][:2] == [("audit_listed", "test-auditor (auditor)"),
                                                          ("quarantine_listed", "test-auditor (auditor)")]
    assert listed[0]["details"]["kind"] == ["record_viewed"] and listed[0]["details"]["limit"] == 5
    assert listed[1]["details"]["reason"] == ["UTF-8"]
    assert listed[2]["actor"].startswith("cli:") and listed[2]["details"]["since"] == "2026-01-01T00:00:00+00:00"


def test_the_cli_lists_what_the_api_lists(client: Any, token: Any, catalog_cli: Any, archive: dict[str, Any]) -> None:
    auth = token("auditor")
    for route, args in (("audit", ["--kind", "requests_rejected", "--limit", "2"]),
                        ("quarantine", ["--reason", "json", "--order", "oldest"])):
        out = catalog_cli(route, "list", "--json", *args)
        assert out.exit_code == 0, out.output
        api_params = {a[2:]: b for a, b in zip(args[::2], args[1::2])}
        assert json.loads(out.stdout) == _api(client, auth, route, **api_params).get_json()
    page = json.loads(catalog_cli("audit", "list", "--json", "--limit", "1", "--order", "oldest").stdout)
    nxt = json.loads(catalog_cli("audit", "list", "--json", "--limit", "1", "--order", "oldest",
                         "--cursor", str(page["next_cursor"])).stdout)
    assert [i["seq"] for i in page["items"] + nxt["items"]] == archive["audits"][:2]


def test_the_cli_human_output(catalog_cli: Any, archive: dict[str, Any]) -> None:
    out = catalog_cli("quarantine", "list")
    assert out.exit_code == 0, out.output
    lines = out.stdout.splitlines()
    assert lines[0] == "3 quarantined deliveries"
    assert lines[1].startswith(f"#{archive['quarantined'][-1]}  ") and lines[1].endswith("body is not a JSON object")
    one = catalog_cli("audit", "list", "--kind", "requests_rejected", "--limit", "1")
    assert one.stdout.splitlines()[0] == "1 audit record"
    assert 'reason="bad signature"' in one.stdout
    more = catalog_cli("audit", "list", "--limit", "1")
    assert more.stdout.splitlines()[-1] == f"more: --cursor {archive['audits'][-1]}"


@pytest.mark.parametrize(("args", "field"), [
    (["audit", "list", "--since", "soon"], "since"), (["audit", "list", "--limit", "0"], "limit"),
    (["quarantine", "list", "--until", "2026-02-30"], "until"), (["quarantine", "list", "--cursor", "-5"], "cursor"),
])
def test_the_cli_refuses_bad_filters_naming_the_field(services: Any, catalog_cli: Any, args: list[str], field: str) -> None:
    out = catalog_cli(*args)  # on an archive (``services`` made it): without one, the command refuses first
    assert out.exit_code == 2 and f"error[invalid-field]: {field}:" in out.stderr, out.output


def test_control_characters_never_reach_the_terminal(client: Any, services: Any, token: Any, catalog_cli: Any) -> None:
    evil = "refund\x1b]0;owned\x07\x9b31m\u202e"
    assert client.get("/api/v1/search", query_string={"q": evil}, headers=token("legal")).status_code in (200, 400)
    sealer.seal_pending(services)
    listed = _api(client, token("auditor"), "audit", kind="search").get_json()["items"]
    assert [i["details"]["query"] for i in listed] == [evil]  # the API keeps it (JSON escapes it)
    for args in (["audit", "list", "--kind", "search"], ["audit", "list", "--kind", "search", "--json"]):
        out = catalog_cli(*args)
        assert out.exit_code == 0, out.output
        assert "refund" in out.stdout
        assert not any((ord(c) < 32 and c != "\n") or 0x7F <= ord(c) < 0xA0 or c == "\u202e" for c in out.stdout), out.stdout


_param_text = st.text(max_size=30) | st.from_regex(r"-?[0-9]{1,25}", fullmatch=True) | st.sampled_from(
    ["2026-01-01", "2026-01-01T00:00:00+14:00", "newest", "oldest", "requests_rejected", ""])


@hypothesis_settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(route=st.sampled_from(["audit", "quarantine"]),
       params=st.dictionaries(st.sampled_from(["since", "until", "kind", "reason", "limit", "cursor", "order", "x"]),
                              _param_text, max_size=4))
def test_no_filter_gives_a_500(client: Any, auditor: dict[str, str], route: str, params: dict[str, str]) -> None:
    resp = _api(client, auditor, route, **params)
    assert resp.status_code in (200, 400), (params, resp.get_data(as_text=True))
    if resp.status_code == 400:
        assert resp.get_json()["field"] in params

