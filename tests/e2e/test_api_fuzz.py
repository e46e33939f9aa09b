"""Fuzz every operation of the OpenAPI document with every role: no input may answer a 500.

Hypothesis drives the Flask test client over an archive holding a few sealed and indexed
messages, searched with FTS5 and with the real OpenSearch, so reads, searches and snippets run on real records. Parameters come from each
operation's schema (in range, just out of range, far out of range, or any text), bodies are
near-valid capture/consent objects with fields swapped for any JSON, any JSON, nested JSON
or raw bytes; the token is one of each role's, a revoked one, garbage or none.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from archiver import indexer, openapi, sealer
from archiver.app import create_app
from archiver.auth import create_token, revoke_token
from archiver.roles import ROLES
from tests.conftest import sign
from tests.e2e.test_api_hardening import CAPTURE, CONSENT
from tests.e2e.test_pipeline import msg_body

OPERATIONS = [(path, method) for path, ops in openapi.PATHS.items() for method in ops]
EXAMPLES = 100  # per operation

_TEXT = st.text(st.characters(codec="utf-8"), max_size=40)
_QUERY_PARTS = st.sampled_from([
    "refund", "résumé", "AND", "OR", "NOT", "-", "-refund", "(", ")", '"', "*", ":", "kind:", 'kind:"x"',
    "contact:", 'contact:"+44 7946"', "from:+", "after:2026-02-30", "before:2026-01-01T10:00:00Z", "has:media",
    "direction:sideways", "e-mail", "東京", "🎉", "\x1b]0;t\x07", "%", "\\", "'", "\u0000",
])
_QUERIES = st.one_of(_TEXT, st.lists(st.one_of(_QUERY_PARTS, _TEXT), max_size=12).map(" ".join))
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | _TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4), max_leaves=12)


def _integer(schema: dict[str, Any]) -> st.SearchStrategy[str]:
    low, high = schema.get("minimum", 0), schema.get("maximum", 2**63)
    return st.one_of(st.integers(low - 2, high + 2), st.integers(), st.integers(10**18, 10**40),
                     st.integers(-(10**40), -(10**18))).map(str)


def _value(name: str, schema: dict[str, Any]) -> st.SearchStrategy[str]:
    """Text for one parameter: mostly what the schema allows, often not."""
    if schema.get("type") == "integer":
        return st.one_of(_integer(schema), _TEXT)
    if "enum" in schema:
        return st.one_of(st.sampled_from(schema["enum"]), _TEXT)
    return _QUERIES if name == "q" else st.one_of(st.sampled_from(["4479460001234", "1", ""]), _TEXT)


def _near_valid(base: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """``base`` with some fields replaced by any JSON or dropped."""
    return st.dictionaries(st.sampled_from(sorted(base)), st.one_of(_JSON, st.just(None)), max_size=3).map(
        lambda changes: {k: v for k, v in {**base, **changes}.items() if not (k in changes and changes[k] is None)})


def _nested(depth: int) -> bytes:
    return b'{"action": ' + b"[" * depth + b"]" * depth + b"}"


_BODIES = st.one_of(
    _near_valid(CONSENT).map(json.dumps).map(str.encode),
    _near_valid(CAPTURE).map(json.dumps).map(str.encode),
    _JSON.map(json.dumps).map(str.encode),
    st.integers(1, 5000).map(_nested),
    st.binary(max_size=200),
    st.sampled_from([b"", b"NaN", b"Infinity", b'{"a": 1e999999}', b"\xff\xfe{\x00}\x00", b'{"a":1,"a":2}']),
)


@pytest.fixture
def archive(svc: Any) -> tuple[Any, dict[str, str | None]]:
    """A test client over two sealed, indexed messages (on FTS5 and on OpenSearch), and the
    Authorization headers to try."""
    services = svc
    client = create_app(services=services).test_client()
    for body in (msg_body("wamid.Z1", "I need a refund for the résumé", ts="1780001000"),
                 msg_body("wamid.Z2", "zebrafjord \x1b]0;title\x07 e-mail 東京 🎉", ts="1780002000")):
        assert client.post("/webhooks/whatsapp", data=body, headers=sign(body)).status_code == 200
    sealer.seal_pending(services)
    indexer.index_pending(services)
    with services.sessions.begin() as session:
        auths: dict[str, str | None] = {role: f"Bearer {create_token(session, role, f'fuzz-{role}')}" for role in ROLES}
        auths["revoked"] = f"Bearer {create_token(session, 'admin', 'fuzz-revoked')}"
        revoke_token(session, "fuzz-revoked")
    auths.update(none=None, garbage="Bearer wa_not-a-token", scheme="Basic dXNlcjpwYXNz", odd="bearer \xe9\x00")
    return client, auths


@pytest.mark.parametrize(("path", "method"), OPERATIONS)
def test_no_input_answers_500(archive: tuple[Any, dict[str, str | None]], path: str, method: str) -> None:
    client, auths = archive
    op = openapi.PATHS[path][method]
    params = op.get("parameters", [])

    @settings(max_examples=EXAMPLES, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
              database=None)
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        url, query, headers = path, {}, {}
        for p in params:
            value = data.draw(_value(p["name"], p["schema"]) if p["in"] == "path" or p.get("required")
                              else st.one_of(st.none(), _value(p["name"], p["schema"])), label=p["name"])
            if p["in"] == "path":
                url = url.replace("{" + p["name"] + "}", quote(value, safe="") or "%20")
            elif p["in"] == "query" and value is not None:
                query[p["name"]] = value
            elif p["in"] == "header" and value is not None:
                # the bytes on the wire; no CR or LF, which HTTP cannot carry in a header
                headers[p["name"]] = value.encode("utf-8").decode("latin-1").replace("\r", "").replace("\n", "")
        raw_query = data.draw(st.one_of(st.none(), st.binary(max_size=60)), label="raw query") if params else None
        auth = auths[data.draw(st.sampled_from(sorted(auths)), label="auth")]
        if auth is not None:
            headers["Authorization"] = auth
        body = data.draw(_BODIES, label="body") if "requestBody" in op else None
        if body is not None and path == "/webhooks/whatsapp" and data.draw(st.booleans(), label="signed"):
            headers.update(sign(body))
        # A raw query string reaches the app as WSGI has it: its bytes as latin-1 characters.
        raw = {"QUERY_STRING": raw_query.decode("latin-1")} if raw_query is not None else {}
        resp = client.open(url, method=method.upper(), query_string=query, data=body, headers=headers,
                           environ_overrides=raw)
        assert resp.status_code < 500, (resp.status_code, resp.get_data()[:300])
        if resp.mimetype == "application/json":
            json.loads(resp.get_data())

    run()
