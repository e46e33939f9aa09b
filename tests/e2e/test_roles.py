"""Every route with every role, with a revoked token and with none (issue 8, point 10).

``EXPECTED_ROLES`` is written out here, not taken from the code: a route whose roles change,
or a new route, fails this test until the table says so.
"""

from __future__ import annotations

from typing import Any

import pytest

from archiver import openapi
from archiver.auth import create_token, revoke_token
from archiver.roles import ROLES

CONTENT = {"compliance", "auditor", "legal"}  # admin reads no message content, by token or session
PUBLIC: set[str] = set()  # no token needed
EXPECTED_ROLES: dict[tuple[str, str], set[str]] = {
    ("/healthz", "get"): PUBLIC,
    ("/webhooks/whatsapp", "get"): PUBLIC,
    ("/webhooks/whatsapp", "post"): PUBLIC,
    ("/api/v1/capture/messages", "post"): {"ingest", "admin"},
    ("/api/v1/consent", "post"): {"ingest", "admin"},
    ("/api/v1/stats", "get"): CONTENT | {"admin"},  # counts, not content
    ("/api/v1/records/{seq}", "get"): CONTENT,
    ("/api/v1/search", "get"): CONTENT,
    ("/api/v1/conversations/{contact}", "get"): CONTENT,
    ("/api/v1/audit", "get"): {"compliance", "auditor", "admin"},
    ("/api/v1/quarantine", "get"): {"compliance", "auditor", "admin"},
    ("/api/v1/matters", "post"): {"legal", "admin"},
    ("/api/v1/holds", "get"): {"legal", "admin"},
    ("/api/v1/holds", "post"): {"legal", "admin"},
    ("/api/v1/holds/{hold_id}", "get"): {"legal", "admin"},
    ("/api/v1/holds/{hold_id}", "patch"): {"legal", "admin"},
    ("/api/v1/holds/{hold_id}/release", "post"): {"legal", "admin"},
    ("/api/v1/holds/{hold_id}/certificate", "get"): {"legal", "admin"},
    ("/api/v1/dispositions", "get"): {"compliance", "admin"},
    ("/api/v1/erasures", "post"): {"compliance"},
    ("/api/v1/erasures/{erasure_id}", "get"): {"compliance"},
    ("/api/v1/dispositions/{batch_id}/approve", "post"): {"compliance", "admin"},
    ("/api/v1/dispositions/{batch_id}/reject", "post"): {"compliance", "admin"},
    ("/api/v1/exports", "post"): {"compliance", "auditor", "legal"},
    ("/api/v1/exports/{export_id}", "get"): {"compliance", "auditor", "legal"},
    ("/api/v1/exports/{export_id}/bundle.zip", "get"): {"compliance", "auditor", "legal"},
    ("/api/v1/retention/extend", "post"): {"compliance", "admin"},
    ("/api/v1/contacts/{ident}", "get"): {"compliance", "legal", "auditor"},
    ("/api/v1/reports", "post"): {"compliance", "auditor", "legal"},
    ("/api/v1/consent/{contact}", "get"): {"compliance", "auditor", "admin"},
    ("/api/v1/consent/{contact}/at", "get"): {"compliance", "auditor", "admin"},
    ("/api/v1/consent/detections/{seq}/confirm", "post"): {"compliance", "admin"},
    ("/api/v1/consent/detections/{seq}/dismiss", "post"): {"compliance", "admin"},
    ("/api/v1/findings", "get"): {"compliance", "auditor", "admin"},
    ("/api/v1/findings/{finding_id}/resolve", "post"): {"compliance", "admin"},
    ("/api/v1/templates", "get"): {"compliance", "auditor", "admin"},
    ("/api/v1/templates/{name}", "get"): {"compliance", "auditor", "admin"},
    ("/api/v1/templates/{name}/reviews", "post"): {"compliance", "admin"},
    ("/api/v1/openapi.json", "get"): set(ROLES),
}
# A value for each path placeholder and query an allowed caller would send.
EXAMPLE_PATH = {"seq": "1", "contact": "4479460001234", "ident": "4479460001234", "hold_id": "hold-000000000000",
                "batch_id": "disp-000000000000", "export_id": "exp-000000000000",
                "finding_id": "find-0000000000000000", "erasure_id": "1", "name": "spring_offer"}
EXAMPLE_QUERY = {"/api/v1/search": "?q=refund", "/api/v1/consent/4479460001234/at": "?time=2026-12-01"}


def _url(path: str) -> str:
    for name, value in EXAMPLE_PATH.items():
        path = path.replace("{" + name + "}", value)
    return path + EXAMPLE_QUERY.get(path, "")


def test_the_table_covers_every_route(app: Any) -> None:
    assert set(openapi.route_table(app)) == set(EXPECTED_ROLES)


@pytest.mark.parametrize(("path", "method"), sorted(EXPECTED_ROLES))
def test_each_role_is_let_in_or_refused_as_the_table_says(client: Any, services: Any, path: str, method: str) -> None:
    allowed = EXPECTED_ROLES[(path, method)]
    with services.sessions.begin() as session:
        secrets = {role: create_token(session, role, f"walk-{role}") for role in ROLES}
        revoked = create_token(session, "admin", "walk-revoked")
        revoke_token(session, "walk-revoked")
    url = _url(path)
    anonymous = client.open(url, method=method.upper(), json={}).status_code
    for role, secret in secrets.items():
        resp = client.open(url, method=method.upper(), json={}, headers={"Authorization": f"Bearer {secret}"})
        if not allowed:  # public: a token changes nothing (the webhook checks its signature instead)
            assert resp.status_code == anonymous and resp.status_code < 500, (role, resp.status_code)
        elif role not in allowed:
            assert resp.status_code == 403, (role, resp.status_code)
            assert resp.get_json()["error"] == "forbidden"
        else:  # let in: an answer, perhaps a 4xx for the empty body, never a refusal or a 500
            assert resp.status_code < 500 and resp.status_code not in (401, 403), (role, resp.status_code)
    if allowed:  # a revoked token and no token are refused alike
        for headers in ({"Authorization": f"Bearer {revoked}"}, {}):
            resp = client.open(url, method=method.upper(), json={}, headers=headers)
            assert resp.status_code == 401 and resp.get_json()["error"] == "unauthorized", headers.keys()


# --- the console's pages (archiver/console/): HTML, not in the OpenAPI document ---------------

CONSOLE_PUBLIC: set[str] = set()  # the way in: each page checks its own login step
CONSOLE_ROLES: dict[tuple[str, str], set[str]] = {
    ("/console/", "get"): {"admin", "compliance", "auditor", "legal"},
    ("/console/search", "get"): CONTENT,
    ("/console/records/<int:seq>", "get"): CONTENT,
    ("/console/records/<int:seq>/verify", "post"): CONTENT,
    ("/console/holds", "get"): {"legal", "admin"},
    ("/console/holds", "post"): {"legal", "admin"},
    ("/console/holds/new", "get"): {"legal", "admin"},
    ("/console/holds/<hold_id>", "get"): {"legal", "admin"},
    ("/console/holds/<hold_id>/release", "post"): {"legal", "admin"},
    ("/console/holds/<hold_id>/certificate", "get"): {"legal", "admin"},
    ("/console/login", "get"): CONSOLE_PUBLIC,
    ("/console/login", "post"): CONSOLE_PUBLIC,
    ("/console/login/mfa", "get"): CONSOLE_PUBLIC,
    ("/console/login/mfa", "post"): CONSOLE_PUBLIC,
    ("/console/mfa/setup", "get"): CONSOLE_PUBLIC,
    ("/console/mfa/setup", "post"): CONSOLE_PUBLIC,
    ("/console/enrol/<token>", "get"): CONSOLE_PUBLIC,
    ("/console/enrol/<token>", "post"): CONSOLE_PUBLIC,
    ("/console/logout", "post"): CONSOLE_PUBLIC,
    ("/console/static/<path:filename>", "get"): CONSOLE_PUBLIC,
    ("/console/reviews", "get"): {"compliance", "auditor"},
    ("/console/reviews/findings/<finding_id>/resolve", "post"): {"compliance"},
    ("/console/reviews/dispositions", "get"): {"compliance"},
    ("/console/reviews/dispositions/<batch_id>/approve", "post"): {"compliance"},
    ("/console/reviews/dispositions/<batch_id>/reject", "post"): {"compliance"},
}
CONSOLE_URL = {"<int:seq>": "1", "<token>": "not-a-token", "<path:filename>": "console.css",
               "<finding_id>": "find-0000000000000000", "<batch_id>": "disp-000000000000", "<hold_id>": "hold-000000000000"}


def _console_url(rule: str) -> str:
    for name, value in CONSOLE_URL.items():
        rule = rule.replace(name, value)
    return rule + ("?q=refund" if rule == "/console/search" else "")


def test_the_console_table_covers_every_console_route(app: Any) -> None:
    from archiver.console import pages

    assert set(pages.route_table(app)) == set(CONSOLE_ROLES)
    assert {k for k, v in pages.route_table(app).items() if v} == {k for k, v in CONSOLE_ROLES.items() if v}
    for key, roles in pages.route_table(app).items():
        assert set(roles) == CONSOLE_ROLES[key], key


@pytest.fixture
def sessions_by_role(app: Any, services: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A fully logged-in test client per console role (legal assigned one matter)."""
    from archiver import holds
    from tests.conftest import make_env
    from tests.console import Login, create_user

    for k, v in make_env(services.settings.home).items():
        monkeypatch.setenv(k, v)
    holds.create_matter(services, "walk", "Walk v. Roles")
    out = {}
    for role in ("admin", "compliance", "auditor", "legal"):
        create_user(tmp_path, f"{role}@walk.example", role, *(["Walk v. Roles"] if role == "legal" else []))
        out[role] = Login(app.test_client(), f"{role}@walk.example").full().client
    return out


@pytest.mark.parametrize(("rule", "method"), sorted(k for k, v in CONSOLE_ROLES.items() if v))
def test_each_console_role_is_let_in_or_refused_as_the_table_says(
        client: Any, services: Any, sessions_by_role: dict[str, Any], rule: str, method: str) -> None:
    from tests.console import csrf

    allowed, url = CONSOLE_ROLES[(rule, method)], _console_url(rule)
    for role, session in sessions_by_role.items():
        data = {"csrf_token": csrf(session.get("/console/").text)} if method == "post" else None
        resp = session.open(url, method=method.upper(), data=data)
        if role == "legal" and "/records/" in rule:  # past the role check, refused by its matters' scope
            assert resp.status_code == 403 and "not under a hold of your matters" in resp.text
        elif role in allowed:  # record 1 may be no message (404): let in all the same
            assert resp.status_code < 500 and resp.status_code not in (302, 401, 403), (role, resp.status_code)
        else:
            assert resp.status_code == 403, (role, resp.status_code)
    with services.sessions.begin() as session:  # machines' tokens pass the same role check
        secrets = {role: create_token(session, role, f"console-walk-{role}") for role in ROLES}
    for role, secret in secrets.items():
        resp = client.open(url, method=method.upper(), headers={"Authorization": f"Bearer {secret}"})
        assert (resp.status_code == 403) == (role not in allowed), (role, resp.status_code)
    anonymous = client.open(url, method=method.upper())
    assert anonymous.status_code in ((302,) if method == "get" else (400, 302)), anonymous.status_code
    if method == "get":
        assert anonymous.headers["Location"].startswith("/console/login")
