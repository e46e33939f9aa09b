"""Evidence comes back byte-exact: ``archiver show SEQ --raw`` and the API's ``raw`` give the
posted bytes (SHA-256 = ``body_sha256``), and the parsed view is strict JSON that keeps
every digit and key. Over every pywa fixture and the odd bodies of issue 8."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import select

from archiver import sealer
from archiver.auth import create_token
from archiver.catalog import Journal, Record
from archiver.config import Settings
from archiver.services import Services
from tests.conftest import all_fixture_bodies, make_env, sign
from tests.evidence import body_form, shown_form, strict_loads
from tests.serving import ROOT, free_port, start_service, stop_service, wait_until


def _envelope(value: str) -> bytes:
    """A webhook body around ``value`` (JSON text, spliced in as written)."""
    return ('{"object":"whatsapp_business_account","entry":[{"id":"2099","changes":[{"field":"messages","value":'
            '{"messaging_product":"whatsapp","metadata":{"display_phone_number":"15550009999","phone_number_id":"1099"},'
            '"contacts":[{"profile":{"name":"Ines"},"wa_id":"4479460001234"}],'
            f'"messages":[{value}]}}}}]}}]}}').encode()


def _message(wamid: str, extra: str) -> str:
    return (f'{{"from":"4479460001234","id":"{wamid}","timestamp":"1780001000","type":"text",'
            f'"text":{{"body":"odd"}},{extra}}}')


ODD = {
    "infinity": _envelope(_message("wamid.INF", '"score":Infinity,"low":-Infinity,"nan":NaN')),
    "1e400": _envelope(_message("wamid.BIG", '"score":1e400')),
    "40-digit-decimal": _envelope(_message("wamid.DEC", '"price":1.2345678901234567890123456789012345678901')),
    "huge-int": _envelope(_message("wamid.INT", '"count":123456789012345678901234567890')),
    "duplicate-keys": _envelope(_message("wamid.DUP", '"text":{"body":"first"},"note":"a","note":"b"')),
    "duplicate-top-keys": b'{"object":"first","object":"whatsapp_business_account","entry":[],"entry":[]}',
    "not-utf8": _envelope(_message("wamid.LAT", '"note":"ETE"')).replace(b"ETE", "\u00e9t\u00e9".encode("latin-1")),
    "not-json": b'{"object":"whatsapp_business_account","entry":[{',
    "upper-escapes": _envelope(_message("wamid.ESC", '"note":"caf\\u00E9 \\ud83d\\ude4f \\ud800"')),
    "pretty": json.dumps(json.loads(_envelope(_message("wamid.PRE", '"n":1'))), indent=3).encode(),
}
QUARANTINED = {"infinity", "1e400", "not-utf8", "not-json"}


def test_the_odd_bodies_are_what_they_claim() -> None:
    assert b"\xe9t\xe9" in ODD["not-utf8"]
    with pytest.raises(UnicodeDecodeError):
        ODD["not-utf8"].decode("utf-8")
    assert b"\\u00E9" in ODD["upper-escapes"] and b"Infinity" in ODD["infinity"]


@pytest.fixture
def settings(catalog_env: dict[str, str]) -> Settings:
    """Each test here runs on SQLite and on PostgreSQL: the catalog holds the journal's bytes and hashes."""
    return Settings.from_env(catalog_env)


def _post_and_seal(client: Any, services: Any, bodies: list[tuple[str, bytes]]) -> list[tuple[str, bytes, int, str]]:
    """Post each body signed, seal; (name, body, delivery seq, journal body_sha256) in posting order."""
    for name, body in bodies:
        assert client.post("/webhooks/whatsapp", data=body, headers=sign(body)).status_code == 200, name
    sealer.seal_pending(services)
    with services.sessions() as session:
        rows = session.execute(select(Journal.delivery_seq, Journal.body_sha256)
                               .where(Journal.source == "webhook").order_by(Journal.id)).all()
    assert len(rows) == len(bodies) and all(seq for seq, _ in rows)
    return [(name, body, seq, digest) for (name, body), (seq, digest) in zip(bodies, rows)]


def _check_record(got: dict[str, Any], body: bytes, digest: str, raw_seq: int) -> None:
    assert got["raw_seq"] == raw_seq
    assert base64.b64decode(got["raw"], validate=True) == body
    assert got["raw_sha256"] == digest == hashlib.sha256(body).hexdigest()
    assert got["raw_size"] == len(body)
    assert got["delivery"]["seq"] == raw_seq and got["delivery"]["body_sha256"] == digest


def _check_view(got: dict[str, Any], body: bytes) -> None:
    view = got["content_view"]
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        assert view["format"] == "not-utf8" and got["content"] is None
        return
    if view["format"] == "not-json":
        with pytest.raises(ValueError):
            json.loads(body)
        assert got["content"] is None
        return
    assert view["format"] == "json"
    assert shown_form(got["content"], view) == body_form(body)  # every digit, every key


def test_every_fixture_and_odd_body_comes_back_byte_exact(client: Any, services: Any, token: Any, catalog_cli: Any) -> None:
    posted = _post_and_seal(client, services, all_fixture_bodies() + sorted(ODD.items()))
    auth = token("auditor")
    for name, body, seq, digest in posted:
        resp = client.get(f"/api/v1/records/{seq}", headers=auth)
        assert resp.status_code == 200, name
        got = strict_loads(resp.data)  # strict JSON (RFC 8259): no NaN, no Infinity
        assert got["kind"] == "delivery", name
        _check_record(got, body, digest, seq)
        _check_view(got, body)
        out = catalog_cli("show", str(seq), "--raw")
        assert out.exit_code == 0, (name, out.output)
        assert out.stdout_bytes == body, name
        assert hashlib.sha256(out.stdout_bytes).hexdigest() == digest


def test_the_odd_bodies_views_keep_what_a_re_serialisation_loses(client: Any, services: Any, token: Any) -> None:
    posted = {name: (body, seq) for name, body, seq, _ in _post_and_seal(client, services, sorted(ODD.items()))}
    auth = token("compliance")

    def view(name: str) -> dict[str, Any]:
        return strict_loads(client.get(f"/api/v1/records/{posted[name][1]}", headers=auth).data)  # type: ignore[no-any-return]

    inf = view("infinity")
    msg = inf["content"]["entry"][0]["changes"][0]["value"]["messages"][0]
    assert (msg["score"], msg["low"], msg["nan"]) == ({"$number": "Infinity"}, {"$number": "-Infinity"}, {"$number": "NaN"})
    assert inf["content_view"]["rfc8259"] is False
    assert view("1e400")["content"]["entry"][0]["changes"][0]["value"]["messages"][0]["score"] == {"$number": "1e400"}
    dec = view("40-digit-decimal")["content"]["entry"][0]["changes"][0]["value"]["messages"][0]["price"]
    assert dec == {"$number": "1.2345678901234567890123456789012345678901"}
    dup = view("duplicate-keys")["content_view"]["duplicate_keys"]
    at = "/entry/0/changes/0/value/messages/0"
    assert [(d["pointer"], d["values"]) for d in dup] == [(f"{at}/text", [{"body": "odd"}, {"body": "first"}]),
                                                         (f"{at}/note", ["a", "b"])]
    top = view("duplicate-top-keys")["content_view"]["duplicate_keys"]
    assert [(d["pointer"], d["values"]) for d in top] == [("/object", ["first", "whatsapp_business_account"]),
                                                         ("/entry", [[], []])]
    lat = view("not-utf8")
    assert lat["content"] is None and lat["content_view"]["format"] == "not-utf8"
    assert base64.b64decode(lat["raw"]) == posted["not-utf8"][0]  # not U+FFFD: the bytes themselves


def test_a_quarantine_record_gives_the_bytes_of_its_delivery(client: Any, services: Any, token: Any,
                                                             catalog_cli: Any) -> None:
    bodies = [(name, ODD[name]) for name in sorted(QUARANTINED)]
    posted = _post_and_seal(client, services, bodies)
    with services.sessions() as session:
        quarantined = {r.delivery_seq: r.seq for r in session.scalars(select(Record).where(Record.kind == "quarantine"))}
    assert set(quarantined) == {seq for _, _, seq, _ in posted}
    auth = token("compliance")  # admin reads no content
    for name, body, dseq, digest in posted:
        qseq = quarantined[dseq]
        got = strict_loads(client.get(f"/api/v1/records/{qseq}", headers=auth).data)
        assert got["kind"] == "quarantine" and isinstance(got["content"]["reason"], str), name
        _check_record(got, body, digest, dseq)
        out = catalog_cli("show", str(qseq), "--raw")
        assert out.exit_code == 0 and out.stdout_bytes == body, name


def test_an_item_record_points_at_and_gives_its_delivery(client: Any, services: Any, token: Any,
                                                         catalog_cli: Any) -> None:
    body = ODD["40-digit-decimal"]
    [(_, _, dseq, digest)] = _post_and_seal(client, services, [("dec", body)])
    with services.sessions() as session:
        mseq = session.scalar(select(Record.seq).where(Record.kind == "message"))
    got = strict_loads(client.get(f"/api/v1/records/{mseq}", headers=token("legal")).data)
    assert got["kind"] == "message" and got["content_view"]["format"] == "json"
    _check_record(got, body, digest, dseq)
    out = catalog_cli("show", str(mseq), "--raw")
    assert out.exit_code == 0 and out.stdout_bytes == body
    shown = catalog_cli("show", str(mseq))  # the JSON form: strict too, and printable
    assert shown.exit_code == 0, shown.output
    assert strict_loads(shown.stdout)["raw_sha256"] == digest


@pytest.mark.parametrize("seq", ["0", "-1", "9223372036854775808", "99999999999999999999999"])
def test_seqs_no_record_can_have_are_refused_naming_the_field(client: Any, services: Any, token: Any,
                                                              catalog_cli: Any, seq: str) -> None:
    out = catalog_cli("show", "--raw", "--", seq)
    assert out.exit_code == 2 and "seq" in out.stderr.lower() and "Traceback" not in out.output
    if not seq.startswith("-"):  # the route's int converter takes no sign: 404 for those
        resp = client.get(f"/api/v1/records/{seq}", headers=token("auditor"))
        assert resp.status_code == 400 and resp.get_json()["field"] == "seq"


def test_an_unknown_seq_is_not_found(client: Any, services: Any, token: Any, catalog_cli: Any) -> None:
    assert client.get("/api/v1/records/12345", headers=token("auditor")).status_code == 404
    out = catalog_cli("show", "12345", "--raw")
    assert out.exit_code == 2 and "no record with seq 12345" in out.stderr and out.stdout_bytes == b""


def test_through_archiver_serve_and_the_cli_the_bytes_are_the_posted_ones(tmp_path: Path) -> None:
    """Over HTTP into the real gunicorn service, sealed by its jobs, read back by a separate
    ``archiver show --raw`` process and the API: the same bytes."""
    env = make_env(tmp_path / "home", ARCHIVER_SEAL_INTERVAL="0.5")
    bodies = sorted(ODD.items())
    port = free_port()
    proc = start_service(env, port, tmp_path / "serve.log")
    try:
        for name, body in bodies:
            resp = requests.post(f"http://127.0.0.1:{port}/webhooks/whatsapp", data=body, headers=sign(body), timeout=10)
            assert resp.status_code == 200, (name, resp.text)
        services = Services.open(Settings.from_env(env))
        try:
            def sealed() -> list[Any]:
                with services.sessions() as session:
                    rows = session.execute(select(Journal.delivery_seq, Journal.body_sha256)
                                           .where(Journal.source == "webhook").order_by(Journal.id)).all()
                return list(rows) if len(rows) == len(bodies) and all(seq for seq, _ in rows) else []
            rows = wait_until(sealed, 60, "every posted body sealed", interval=0.2)
            with services.sessions.begin() as session:
                auth = {"Authorization": f"Bearer {create_token(session, 'auditor', 'evidence-test')}"}
        finally:
            services.close()
        for (name, body), (seq, digest) in zip(bodies, rows):
            assert digest == hashlib.sha256(body).hexdigest(), name
            resp = requests.get(f"http://127.0.0.1:{port}/api/v1/records/{seq}", headers=auth, timeout=10)
            assert resp.status_code == 200, name
            got = strict_loads(resp.content)
            _check_record(got, body, digest, seq)
            _check_view(got, body)
            out = subprocess.run([sys.executable, "-m", "archiver.cli", "show", str(seq), "--raw"], cwd=ROOT,
                                 env={**os.environ, **env}, capture_output=True, timeout=120, check=False)
            assert out.returncode == 0, (name, out.stderr[-2000:])
            assert out.stdout == body, name
    finally:
        stop_service(proc)


def test_a_shredded_record_has_no_bytes_and_says_so(client: Any, services: Any, token: Any,
                                                    catalog_cli: Any) -> None:
    from archiver.catalog import DataKey

    [(_, _, dseq, digest)] = _post_and_seal(client, services, [("dec", ODD["40-digit-decimal"])])
    with services.sessions.begin() as session:
        session.get(DataKey, session.get(Record, dseq).key_id).wrapped = None  # crypto-shredded
    got = strict_loads(client.get(f"/api/v1/records/{dseq}", headers=token("auditor")).data)
    assert got["content"] is None and got["content_view"]["format"] == "shredded"
    assert got["raw"] is None and got["raw_sha256"] is None and got["raw_size"] is None
    assert got["delivery"]["body_sha256"] == digest  # what the bytes were is still on record
    out = catalog_cli("show", str(dseq), "--raw")
    assert out.exit_code == 2 and "destroyed" in out.stderr and out.stdout_bytes == b""
