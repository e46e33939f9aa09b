"""The web console's users, logins and pages through the app's real forms (issue 13).

CLI users, enrolment links, password then TOTP (wrong and replayed codes refused),
recovery codes, lockout, CSRF, logout and timeouts, security headers, and what each role
sees on the pages and on the JSON API with its session (a legal user only its matters'
holds). The browser suite (test_console_browser.py) drives the same pages in Chromium.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pyotp
import pytest
from click.testing import CliRunner
from sqlalchemy import select, update

from archiver import holds, indexer
from archiver.app import create_app
from archiver.catalog import ConsoleSession, Journal
from archiver.cli import main
from archiver.config import Settings
from archiver.services import Services
from tests.conftest import make_env
from tests.console import PASSWORD, Login, create_user, csrf
from tests.e2e.test_holds import ALICE, BOB, message
from tests.e2e.test_pipeline import post, seal


class Console:
    """An archive in tmp_path (ARCHIVER_* set for the CLI too) with a test client factory."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.tmp_path = tmp_path
        env = make_env(tmp_path / "home")
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        self.services = Services.open(Settings.from_env(env))
        self.app = create_app(services=self.services)

    def client(self) -> Any:
        return self.app.test_client()

    def login(self, email: str, role: str, *matters: str) -> Login:
        create_user(self.tmp_path, email, role, *matters)
        return Login(self.client(), email).full()

    def audit(self, event: str) -> list[dict[str, Any]]:
        """The ``event`` audit rows journaled since the last seal (a sealed row keeps no body)."""
        with self.services.sessions() as session:
            bodies = session.scalars(select(Journal.body).where(Journal.source == "audit").order_by(Journal.id)).all()
        return [b for b in (json.loads(body) for body in bodies if body is not None) if b["event"] == event]


@pytest.fixture
def console(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    made = Console(tmp_path, monkeypatch)
    yield made
    made.services.close()


def test_user_commands_create_list_disable_and_reset_mfa(console: Console) -> None:
    run = CliRunner()
    weak = console.tmp_path / "weak.pw"
    weak.write_text("password1234\n")
    refused = run.invoke(main, ["user", "create", "--email", "w@example.com", "--role", "auditor",
                                "--password-file", str(weak)])
    assert refused.exit_code == 1 and "common or breached" in refused.output
    assert run.invoke(main, ["user", "create", "--email", "l@example.com", "--role", "legal"]).exit_code == 1
    out = create_user(console.tmp_path, "New@Example.com", "auditor", password=None)
    assert re.fullmatch(r"http://127\.0\.0\.1:8080/console/enrol/[\w-]{40,}\n", out)
    create_user(console.tmp_path, "c@example.com", "compliance")
    listed = json.loads(run.invoke(main, ["user", "list", "--json"]).stdout)
    assert [(u["email"], u["role"], u["enrolled"], u["mfa"]) for u in listed] == [
        ("new@example.com", "auditor", False, False), ("c@example.com", "compliance", True, False)]
    assert "password" not in json.dumps(listed)
    login = Login(console.client(), "c@example.com").full()
    assert login.client.get("/console/").status_code == 200
    assert run.invoke(main, ["user", "disable", "--email", "c@example.com"]).exit_code == 0
    assert login.client.get("/console/").status_code == 302  # its open session ended
    assert Login(console.client(), "c@example.com").password_step().status_code == 401
    create_user(console.tmp_path, "d@example.com", "auditor")
    first = Login(console.client(), "d@example.com").full()
    assert run.invoke(main, ["user", "reset-mfa", "--email", "d@example.com"]).exit_code == 0
    again = Login(console.client(), "d@example.com").password_step()
    assert again.headers["Location"].startswith("/console/mfa/setup")  # a new authenticator first
    assert first.secret
    assert [e["user"] for e in console.audit("user_created")] == ["new@example.com", "c@example.com", "d@example.com"]
    assert console.audit("user_disabled") and console.audit("mfa_reset")


def test_an_enrolment_link_sets_the_password_once_then_totp(console: Console) -> None:
    link = create_user(console.tmp_path, "e@example.com", "auditor", password=None).strip()
    path = link.removeprefix("http://127.0.0.1:8080")
    client = console.client()
    page = client.get(path)
    assert page.status_code == 200 and "e@example.com" in page.text
    weak = client.post(path, data={"password": "short", "confirm": "short", "csrf_token": csrf(page.text)})
    assert weak.status_code == 400 and "12 characters" in weak.text
    done = client.post(path, data={"password": PASSWORD, "confirm": PASSWORD, "csrf_token": csrf(page.text)})
    assert done.status_code == 302 and done.headers["Location"] == "/console/mfa/setup"
    login = Login(client, "e@example.com")
    assert len(login.enrol_totp()) == 10
    assert client.get("/console/").status_code == 200
    assert console.client().get(path).status_code == 404  # spent


def test_password_then_totp_wrong_and_replayed_codes_refused(console: Console) -> None:
    create_user(console.tmp_path, "t@example.com", "compliance")
    login = Login(console.client(), "t@example.com", password="not the password at all")
    assert login.password_step().status_code == 401
    login.password = PASSWORD
    assert login.password_step().status_code == 302
    assert login.client.get("/console/search").status_code == 302  # no content before the second factor
    codes = login.enrol_totp()
    used = pyotp.TOTP(login.secret).now()  # the step enrolment just spent
    assert login.logout().status_code == 302
    assert login.password_step().status_code == 302
    wrong = login.code_step("000000" if used != "000000" else "111111")
    assert wrong.status_code == 401 and "wrong authenticator code" in wrong.text
    replay = login.code_step(used)
    assert replay.status_code == 401 and "used already" in replay.text
    assert login.code_step(login.next_code()).status_code == 302
    assert login.client.get("/console/search").status_code == 200
    login.logout()
    login.password_step()
    assert login.code_step(codes[0]).status_code == 302  # a recovery code, once
    login.logout()
    login.password_step()
    assert login.code_step(codes[0]).status_code == 401
    failed = [(e["step"], e["reason"]) for e in console.audit("console_login_failed")]
    assert ("password", "wrong email or password") in failed
    assert ("second-factor", "wrong authenticator code") in failed and len(failed) == 4
    assert [e["factor"] for e in console.audit("console_login")] == ["totp", "totp", "recovery"]
    assert console.audit("mfa_enrolled") and console.audit("recovery_code_used")


def test_repeated_failures_lock_the_account_with_back_off(console: Console) -> None:
    create_user(console.tmp_path, "x@example.com", "auditor")
    bad = Login(console.client(), "x@example.com", password="a wrong password, again")
    for _ in range(5):
        assert bad.password_step().status_code == 401
    right = Login(console.client(), "x@example.com").password_step()
    assert right.status_code == 401 and "too many failed attempts" in right.text


def test_csrf_logout_and_timeouts_refuse_the_session(console: Console) -> None:
    login = console.login("s@example.com", "auditor")
    client = login.client
    forged = client.post("/console/logout", data={})  # a cross-site form post carries no token
    assert forged.status_code == 400
    assert client.get("/console/").status_code == 200  # still logged in
    stolen = client.get_cookie("archiver_console").value
    login.logout()
    replayed = console.client()
    replayed.set_cookie("archiver_console", stolen)
    assert replayed.get("/console/").status_code == 302
    assert replayed.get("/api/v1/stats").status_code == 401
    idle = console.login("i@example.com", "auditor")
    with console.services.sessions.begin() as session:
        session.execute(update(ConsoleSession).values(last_seen_at=datetime.now(timezone.utc) - timedelta(minutes=16)))
    assert idle.client.get("/console/").status_code == 302


def test_cookie_flags_and_security_headers(console: Console) -> None:
    client = console.client()
    page = client.get("/console/login")
    csp = page.headers["Content-Security-Policy"]
    assert "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp and "script-src 'self'" in csp
    assert page.headers["Referrer-Policy"] == "no-referrer"
    cookie = page.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    secure = client.get("/console/login", base_url="https://archive.example")
    assert "Secure" in secure.headers["Set-Cookie"]
    with client.get("/console/static/console.css") as css:  # served by the app itself
        assert css.status_code == 200 and css.mimetype == "text/css"
    assert "<script" not in page.text and "style=" not in page.text


def _archive_with_a_hold(console: Console) -> tuple[list[int], list[int]]:
    """Alice's two messages (held by a matter's hold) and Bob's one; all sealed and indexed."""
    client = console.client()
    for wamid, text, who in (("wamid.A1", "refund please", ALICE), ("wamid.A2", "refund now", ALICE),
                             ("wamid.B1", "refund for bob", BOB)):
        assert post(client, message(wamid, text, contact=who)).status_code == 200
    seal(console.services)
    indexer.index_pending(console.services)
    matter = holds.create_matter(console.services, "test", "Acme v. Us")
    holds.create_hold(console.services, "test", matter, "alice", holds.parse_criteria(custodians=[ALICE]), "suit")
    holds.sync(console.services)
    result = console.services.search.search("refund", size=10)
    alice = sorted(h.seq for h in result.hits if h.contact == ALICE)
    bob = [h.seq for h in result.hits if h.contact == BOB]
    assert len(alice) == 2 and len(bob) == 1
    return alice, bob + [matter]  # type: ignore[list-item]


def test_each_role_sees_only_what_it_may_on_pages_and_api(console: Console) -> None:
    alice, (bob, matter) = _archive_with_a_hold(console)
    legal = console.login("legal@example.com", "legal", "Acme v. Us")
    assert legal.client.get(f"/console/records/{alice[0]}").status_code == 200
    page = legal.client.get(f"/console/records/{bob}")
    assert page.status_code == 403 and "not under a hold of your matters" in page.text
    assert legal.client.get(f"/api/v1/records/{bob}").status_code == 403
    assert legal.client.get(f"/api/v1/records/{alice[0]}").status_code == 200
    found = legal.client.get("/api/v1/search?q=refund").get_json()
    assert sorted(h["seq"] for h in found["hits"]) == alice and found["scoped"] is True
    assert legal.client.get(f"/api/v1/conversations/{BOB}").get_json()["messages"] == []
    held = [m["seq"] for m in legal.client.get(f"/api/v1/conversations/{ALICE}").get_json()["messages"]]
    assert held and set(held) <= set(alice)
    listing = legal.client.get("/console/search?q=refund")
    assert f"/console/records/{bob}\"" not in listing.text and f"/console/records/{alice[0]}\"" in listing.text
    admin = console.login("admin@example.com", "admin")
    assert admin.client.get("/console/").status_code == 200
    assert admin.client.get("/console/search?q=refund").status_code == 403
    assert admin.client.get(f"/console/records/{alice[0]}").status_code == 403
    for api in (f"/api/v1/records/{alice[0]}", "/api/v1/search?q=refund", f"/api/v1/conversations/{ALICE}"):
        assert admin.client.get(api).status_code == 403, api  # the same session on the API
    assert admin.client.get("/api/v1/stats").status_code == 200
    officer = console.login("officer@example.com", "compliance")
    assert officer.client.get(f"/console/records/{bob}").status_code == 200
    assert matter.startswith("matter-")


def test_search_page_filters_highlights_errors_and_the_record_page_verifies(console: Console) -> None:
    alice, (bob, _) = _archive_with_a_hold(console)
    officer = console.login("o@example.com", "compliance").client
    hits = officer.get("/console/search?q=refund&direction=in&kind=message&since=2026-01-01&until=2026-12-31&tz=Europe/Paris")
    assert hits.status_code == 200 and "<mark>refund</mark>" in hits.text and "3 results" in hits.text
    assert '<span class="facet" id="facet-direction"><strong>direction</strong>: in (3)</span>' in hits.text
    none = officer.get("/console/search?q=refund&since=2030-01-01")
    assert "0 results" in none.text
    bad = officer.get("/console/search?q=refund+AND+(now")
    assert bad.status_code == 400 and "at position 11" in bad.text and '<mark class="at">(</mark>' in bad.text
    record = officer.get(f"/console/records/{alice[0]}")
    assert record.status_code == 200
    for field in ("proof-seq", "proof-hash", "proof-segment", "proof-checkpoint", "retention-class", "holds"):
        assert f'id="{field}"' in record.text
    assert "alice" in re.search(r'id="holds">(.*?)</dd>', record.text).group(1)  # type: ignore[union-attr]
    assert "refund please" in record.text
    verified = officer.post(f"/console/records/{alice[0]}/verify", data={"csrf_token": csrf(record.text)})
    assert verified.status_code == 200 and "Verified:" in verified.text
    assert officer.post(f"/console/records/{alice[0]}/verify", data={}).status_code == 400
    assert [e["seq"] for e in console.audit("record_viewed")] == [alice[0]]
    assert [e["ok"] for e in console.audit("record_verified")] == [True]
    assert {e["actor"] for e in console.audit("search")} == {"user:o@example.com (compliance)"}


# --- page 6, Reviews: findings and the disposition approval queue --------------------------


def _findings_and_a_batch(console: Console) -> tuple[list[str], str, list[int]]:
    """Two consent findings and one template finding on sealed messages (raised the way the
    reviews raise them, :func:`archiver.findings.raise_finding`), and one pending disposition
    batch over Bob's record (the row :func:`archiver.disposition.run` proposes for a
    ``review: true`` class: the review run itself is test_disposition.py's)."""
    from archiver import findings
    from archiver.catalog import DispositionBatch, Record

    alice, (bob, _) = _archive_with_a_hold(console)
    with console.services.sessions.begin() as session:
        made = [findings.raise_finding(session, kind, rule, subject, record_seq=seq, evidence=evidence,
                                       contact=ALICE, detail={"wamid": subject})
                for kind, rule, subject, seq, evidence in (
                    ("consent", "marketing-after-opt-out", "wamid.A1", alice[0], [alice[0], alice[1]]),
                    ("consent", "no-opt-in", "wamid.A2", alice[1], [alice[1]]),
                    ("template", "paused-template-sent", "wamid.A2", alice[1], [alice[0]]))]
        key = session.get(Record, bob)
        assert key is not None
        session.add(DispositionBatch(id="disp-0123456789ab", retention_class="reviewed", key_ids=[key.key_id],
                                     seqs=[[bob, bob]], records=1, state="pending"))
    seal(console.services)
    return [f.id for f in made if f is not None], "disp-0123456789ab", alice + [bob]


def test_reviews_page_lists_filters_and_resolves_findings_sealed_as_on_the_api(console: Console) -> None:
    (one, two, tpl), _, (a1, a2, _bob) = _findings_and_a_batch(console)
    officer = console.login("officer@example.com", "compliance").client
    page = officer.get("/console/reviews")
    assert page.status_code == 200 and "3 findings" in page.text
    block = page.text.split(f'id="finding-{one}"')[1].split("</article>")[0]
    assert "marketing-after-opt-out" in block and f'href="/console/records/{a1}">#{a1}</a>' in block
    assert re.search(rf'class="evidence"><a href="/console/records/{a1}">#{a1}</a>, '
                     rf'<a href="/console/records/{a2}">#{a2}</a></dd>', block)
    templates = officer.get("/console/reviews?kind=template")
    assert "1 finding<" in templates.text and f"finding-{tpl}" in templates.text and f"finding-{one}" not in templates.text
    assert [(e["kind"], e["via"]) for e in console.audit("findings_listed")] == [(None, "console"), ("template", "console")]
    note = "customer re-opted in by phone"
    assert officer.post(f"/console/reviews/findings/{one}/resolve", data={"note": note}).status_code == 400  # no CSRF
    assert officer.post(f"/console/reviews/findings/{one}/resolve",
                        data={"note": " ", "csrf_token": csrf(page.text)}).status_code == 400  # the service's rule
    done = officer.post(f"/console/reviews/findings/{one}/resolve", data={"note": note, "csrf_token": csrf(page.text)})
    assert done.status_code == 302 and done.headers["Location"].endswith(f"status=resolved&resolved={one}")
    resolved = officer.get(done.headers["Location"])
    assert "1 finding<" in resolved.text and "resolution is sealed" in resolved.text and note in resolved.text
    again = officer.post(f"/console/reviews/findings/{one}/resolve", data={"note": note, "csrf_token": csrf(page.text)})
    assert again.status_code == 409
    api = {f["id"]: f for f in officer.get("/api/v1/findings").get_json()["findings"]}
    assert api[one]["status"] == "resolved" and api[two]["status"] == "open"
    assert api[one]["resolution"]["note"] == note and api[one]["resolution"]["by"] == "user:officer@example.com (compliance)"
    with console.services.sessions() as session:  # the decision record is sealed, and says who and why
        decision = session.scalar(select(Journal).where(Journal.delivery_seq == api[one]["resolution"]["seq"]))
    assert decision is not None and decision.sealed and decision.source == "decision"
    assert "3 findings" in officer.get("/console/reviews?status=any").text


def test_an_auditor_sees_the_findings_but_cannot_resolve_nor_reach_the_queue(console: Console) -> None:
    (one, _, _), batch, _ = _findings_and_a_batch(console)
    auditor = console.login("auditor@example.com", "auditor").client
    page = auditor.get("/console/reviews")
    assert page.status_code == 200 and f"finding-{one}" in page.text and 'class="resolve"' not in page.text
    token = csrf(page.text)
    assert auditor.post(f"/console/reviews/findings/{one}/resolve", data={"note": "x", "csrf_token": token}).status_code == 403
    assert auditor.get("/console/reviews/dispositions").status_code == 403
    assert auditor.post(f"/console/reviews/dispositions/{batch}/approve", data={"csrf_token": token}).status_code == 403
    assert auditor.get("/api/v1/findings").get_json()["findings"][0]["status"] == "open"
    admin = console.login("admin@example.com", "admin").client
    assert admin.get("/console/reviews").status_code == 403  # a console admin reads no content


def test_the_disposition_queue_approves_and_rejects_through_the_sealed_decision(console: Console) -> None:
    from archiver.catalog import DispositionBatch

    _, batch, seqs = _findings_and_a_batch(console)
    with console.services.sessions.begin() as session:
        session.add(DispositionBatch(id="disp-ba0000000002", retention_class="reviewed", key_ids=["k"],
                                     seqs=[[seqs[0], seqs[1]]], records=2, state="pending"))
    officer = console.login("officer@example.com", "compliance").client
    page = officer.get("/console/reviews/dispositions")
    assert page.status_code == 200 and "2 pending batches" in page.text
    block = page.text.split(f'id="batch-{batch}"')[1].split("</article>")[0]
    assert "class reviewed" in block and "1 under 1 key<" in block
    assert f'<a href="/console/records/{seqs[2]}">#{seqs[2]}</a> to' in block
    assert officer.post(f"/console/reviews/dispositions/{batch}/approve", data={}).status_code == 400  # no CSRF
    done = officer.post(f"/console/reviews/dispositions/{batch}/approve", data={"csrf_token": csrf(page.text)})
    assert done.status_code == 302
    assert officer.post("/console/reviews/dispositions/disp-ba0000000002/reject",
                        data={"reason": "", "csrf_token": csrf(page.text)}).status_code == 400
    assert officer.post("/console/reviews/dispositions/disp-ba0000000002/reject",
                        data={"reason": "still in litigation talks", "csrf_token": csrf(page.text)}).status_code == 302
    after = officer.get(done.headers["Location"])
    assert "0 pending batches" in after.text and "still in litigation talks" in after.text
    states = {b["id"]: b for b in officer.get("/api/v1/dispositions").get_json()["batches"]}
    assert states[batch]["state"] == "approved" and states[batch]["decided_by"] == "user:officer@example.com (compliance)"
    assert states["disp-ba0000000002"]["state"] == "rejected"
    assert officer.post(f"/console/reviews/dispositions/{batch}/approve",
                        data={"csrf_token": csrf(page.text)}).status_code == 409
    assert [e.get("via") for e in console.audit("dispositions_listed")] == ["console", None]  # the page, the API
def test_holds_pages_place_count_release_and_certify_a_hold_within_the_legal_users_matters(console: Console) -> None:
    from archiver import hold_certificate

    alice, (bob, matter) = _archive_with_a_hold(console)
    other = holds.create_matter(console.services, "test", "Other v. Them")
    theirs = holds.create_hold(console.services, "test", other, "bob", holds.parse_criteria(custodians=[BOB]), "audit")
    legal = console.login("legal@example.com", "legal", "Acme v. Us").client
    listing = legal.get("/console/holds")
    assert listing.status_code == 200 and "Acme v. Us" in listing.text and "alice" in listing.text
    assert "Other v. Them" not in listing.text and theirs not in listing.text
    form = legal.get(f"/console/holds/new?matter={matter}")
    assert form.status_code == 200 and f'<option value="{matter}" selected>' in form.text
    assert other not in form.text
    fields = {"matter": matter, "name": "both of them", "custodians": f"{ALICE}\n{BOB}", "after": "", "before": "",
              "query": "", "reason": "", "csrf_token": csrf(form.text)}
    before = len(holds.list_holds(console.services))
    forged = legal.post("/console/holds", data={k: v for k, v in fields.items() if k != "csrf_token"} | {"reason": "x"})
    assert forged.status_code == 400  # no CSRF token: nothing decided
    missing = legal.post("/console/holds", data=fields)
    assert missing.status_code == 400 and "reason: is required" in missing.text and 'value="both of them"' in missing.text
    bad = legal.post("/console/holds", data=fields | {"reason": "suit", "query": "refund AND (now"})
    assert bad.status_code == 400 and 'id="form-error"' in bad.text
    assert len(holds.list_holds(console.services)) == before
    placed = legal.post("/console/holds", data=fields | {"reason": "the suit widened"})
    assert placed.status_code == 303, placed.text[:500]
    hold_id = placed.headers["Location"].rsplit("/", 1)[1]
    shown = holds.show(console.services, hold_id)
    assert shown["matter"]["id"] == matter and shown["reason"] == "the suit widened"
    assert shown["criteria"]["custodians"] == [ALICE, BOB] and shown["counts"]["records"] >= 3  # with their deliveries
    page = legal.get(f"/console/holds/{hold_id}")
    assert page.status_code == 200
    for name, key in (("records", "records"), ("contacts", "contacts"), ("segments", "segments"),
                      ("media", "media_objects")):
        assert f'id="count-{name}">{shown["counts"][key]}</dd>' in page.text, name
    assert shown["counts"]["contacts"] == 2 and shown["counts"]["segments"] >= 1
    assert "<strong>created</strong>" in page.text and "legal@example.com" in page.text
    cert = legal.get(f"/console/holds/{hold_id}/certificate")
    assert cert.status_code == 200 and cert.headers["Content-Disposition"] == \
        f'attachment; filename="{hold_id}-certificate.json"'
    doc = json.loads(cert.data)
    key = hold_certificate.load_public_key(hold_certificate.public_pem(console.services))
    assert hold_certificate.verify(doc, key, console.services) == []
    listed = [s for s, _ in doc["certificate"]["records"]]
    assert set(alice + [bob]) <= set(listed) and len(listed) == shown["counts"]["records"]
    doc["certificate"]["record_count"] = 2  # an altered certificate no longer verifies
    assert any("signature does not verify" in p for p in hold_certificate.verify(doc, key))
    token = csrf(page.text)
    assert legal.post(f"/console/holds/{hold_id}/release", data={"reason": "done"}).status_code == 400  # no CSRF
    empty = legal.post(f"/console/holds/{hold_id}/release", data={"reason": " ", "csrf_token": token})
    assert empty.status_code == 400 and "reason: is required" in empty.text
    assert holds.show(console.services, hold_id)["status"] == "active"
    released = legal.post(f"/console/holds/{hold_id}/release", data={"reason": "settled", "csrf_token": token})
    assert released.status_code == 303
    after = legal.get(f"/console/holds/{hold_id}")
    assert 'class="status released">released' in after.text and "settled" in after.text and "<strong>released</strong>" in after.text
    assert 'id="release-hold"' not in after.text
    gone = holds.show(console.services, hold_id)
    assert gone["status"] == "released" and gone["release_reason"] == "settled" and gone["counts"]["records"] == 0
    again = legal.post(f"/console/holds/{hold_id}/release", data={"reason": "twice", "csrf_token": token})
    assert again.status_code == 409 and "released already" in again.text
    # another matter's hold: refused on every page and action, and nothing changes
    for url in (f"/console/holds/{theirs}", f"/console/holds/{theirs}/certificate"):
        refused = legal.get(url)
        assert refused.status_code == 403 and "not one of your matters" in refused.text, url
    assert legal.post(f"/console/holds/{theirs}/release", data={"reason": "x", "csrf_token": token}).status_code == 403
    outside = legal.post("/console/holds", data=fields | {"matter": other, "reason": "x"})
    assert outside.status_code == 403
    assert holds.show(console.services, theirs)["status"] == "active"
    assert len(holds.list_holds(console.services)) == before + 1
    admin = console.login("admin@example.com", "admin").client  # admin: every matter, as on the API
    everything = admin.get("/console/holds")
    assert "Other v. Them" in everything.text and theirs in everything.text
    assert admin.get(f"/console/holds/{theirs}").status_code == 200
    officer = console.login("officer@example.com", "compliance").client
    assert officer.get("/console/holds").status_code == 403
