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

READ = {"compliance", "auditor", "legal", "admin"}
PUBLIC: set[str] = set()  # no token needed
EXPECTED_ROLES: dict[tuple[str, str], set[str]] = {
    ("/healthz", "get"): PUBLIC,
    ("/webhooks/whatsapp", "get"): PUBLIC,
    ("/webhooks/whatsapp", "post"): PUBLIC,
    ("/api/v1/capture/messages", "post"): {"ingest", "admin"},
    ("/api/v1/consent", "post"): {"ingest", "admin"},
    ("/api/v1/stats", "get"): READ,
    ("/api/v1/records/{seq}", "get"): READ,
    ("/api/v1/search", "get"): READ,
    ("/api/v1/conversations/{contact}", "get"): READ,
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
