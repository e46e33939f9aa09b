"""The console in a real browser: Debian's Chromium (``/usr/bin/chromium``, installed by
scripts/test) driven by Playwright for Python; no browser is downloaded.

The app runs in a thread behind werkzeug's HTTP server on 127.0.0.1; a second server on
``localhost`` (another site) plays the attacker for the cross-site form post. Every page
visited is saved as a 1280x800 screenshot in ``$ARCHIVER_TEST_SCREENSHOTS`` (or the
test's tmp dir) for review; they are not compared.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pyotp
import pytest
from werkzeug.serving import make_server

from tests.console import PASSWORD, create_user
from tests.e2e.test_console import Console, _archive_with_a_hold

CHROMIUM = "/usr/bin/chromium"


class Served:
    """The console's app on a free port of 127.0.0.1, in a thread."""

    def __init__(self, app: Any) -> None:
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def console(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Console]:
    made = Console(tmp_path, monkeypatch)
    yield made
    made.services.close()


@pytest.fixture
def served(console: Console) -> Iterator[Served]:
    server = Served(console.app)
    yield server
    server.stop()


@pytest.fixture
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "Debian's chromium is missing (scripts/test installs it)"
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield chromium
        chromium.close()


@pytest.fixture
def shots(tmp_path: Path) -> Any:
    """``shots(page, name)`` saves a 1280x800 screenshot of the page as it is now."""
    folder = Path(os.environ.get("ARCHIVER_TEST_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)

    def take(page: Any, name: str) -> Path:
        path = folder / f"{name}.png"
        page.screenshot(path=str(path))
        assert path.stat().st_size > 1000
        return path
    return take


def new_page(browser: Any) -> Any:
    return browser.new_context(viewport={"width": 1280, "height": 800}).new_page()


def log_in(page: Any, base: str, email: str, shots: Any = None) -> str:
    """Log in through the forms, setting up TOTP on the way; return the TOTP secret."""
    page.goto(f"{base}/console/login")
    if shots:
        shots(page, "01-login")
    page.fill("#email", email)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/console/mfa/setup**")
    secret = page.inner_text("#totp-secret")
    assert page.locator(".qr svg").count() == 1  # the QR code, rendered by the server
    if shots:
        shots(page, "02-mfa-setup")
    page.fill("#code", pyotp.TOTP(secret).now())
    page.click("button[type=submit]")
    page.wait_for_selector("#recovery-codes")
    if shots:
        shots(page, "03-recovery-codes")
    page.click("a.button")
    page.wait_for_url("**/console/")
    return secret


def test_login_with_totp_then_search_with_a_filter_and_open_a_record(
        console: Console, served: Served, browser: Any, shots: Any) -> None:
    alice, _ = _archive_with_a_hold(console)
    create_user(console.tmp_path, "officer@example.com", "compliance")
    page = new_page(browser)
    log_in(page, served.url, "officer@example.com", shots)
    shots(page, "04-home")
    page.click("text=Search the archive")
    page.fill("#q", "refund")
    page.select_option("#direction", "in")
    page.fill("#since", "2026-01-01")
    page.click("button:has-text('Search')")
    page.wait_for_selector("#result-count")
    assert page.inner_text("#result-count") == "3 results"
    assert page.locator(".snippet mark").count() == 3
    shots(page, "05-search")
    page.fill("#q", "refund AND (please")
    page.click("button:has-text('Search')")
    page.wait_for_selector("#query-error")
    assert "at position 11" in page.inner_text("#query-error")
    shots(page, "06-search-error")
    page.goto(f"{served.url}/console/search?q=please")
    page.click(f"a[href='/console/records/{alice[0]}']")
    page.wait_for_selector("#proof-hash")
    assert page.inner_text("#proof-seq") == str(alice[0]) and "refund please" in page.inner_text("#content")
    assert "alice" in page.inner_text("#holds")
    shots(page, "07-record")
    page.click("#verify")
    page.wait_for_selector("#verify-outcome")
    assert page.inner_text("#verify-outcome").startswith("Verified:")
    shots(page, "08-verified")


def test_a_wrong_and_a_replayed_totp_are_refused(console: Console, served: Served, browser: Any, shots: Any) -> None:
    create_user(console.tmp_path, "t@example.com", "auditor")
    page = new_page(browser)
    secret = log_in(page, served.url, "t@example.com")
    used = pyotp.TOTP(secret).now()
    page.click("button:has-text('Log out')")
    page.wait_for_url("**/console/login")
    page.fill("#email", "t@example.com")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/console/login/mfa**")
    page.fill("#code", "000000" if used != "000000" else "111111")
    page.click("button[type=submit]")
    assert "wrong authenticator code" in page.inner_text(".error")
    shots(page, "09-mfa-wrong")
    page.fill("#code", used)
    page.click("button[type=submit]")
    assert "used already" in page.inner_text(".error")
    page.fill("#code", pyotp.TOTP(secret).at(__import__("time").time() + 30))
    page.click("button[type=submit]")
    page.wait_for_url("**/console/")
    assert "auditor" in page.inner_text(".who")


def test_a_legal_user_outside_its_matter_gets_403_on_page_and_api(
        console: Console, served: Served, browser: Any, shots: Any) -> None:
    alice, (bob, _) = _archive_with_a_hold(console)
    create_user(console.tmp_path, "legal@example.com", "legal", "Acme v. Us")
    page = new_page(browser)
    log_in(page, served.url, "legal@example.com")
    assert page.goto(f"{served.url}/console/records/{alice[0]}").status == 200
    refused = page.goto(f"{served.url}/console/records/{bob}")
    assert refused.status == 403 and "not under a hold of your matters" in page.inner_text(".error")
    shots(page, "10-forbidden")
    assert page.request.get(f"{served.url}/api/v1/records/{bob}").status == 403  # the same session on the API
    assert page.request.get(f"{served.url}/api/v1/records/{alice[0]}").status == 200


class _Attacker(BaseHTTPRequestHandler):
    target = ""

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        body = (f'<form method="post" action="{self.target}/console/logout">'
                '<button id="go" type="submit">win a prize</button></form>').encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_a_cross_site_form_post_and_a_logged_out_cookie_are_refused(
        console: Console, served: Served, browser: Any, shots: Any) -> None:
    create_user(console.tmp_path, "c@example.com", "compliance")
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    log_in(page, served.url, "c@example.com")
    _Attacker.target = served.url
    evil = HTTPServer(("127.0.0.1", 0), _Attacker)  # reached as localhost: another site than 127.0.0.1
    threading.Thread(target=evil.serve_forever, daemon=True).start()
    try:
        page.goto(f"http://localhost:{evil.server_port}/")
        with page.expect_navigation() as nav:
            page.click("#go")
        assert nav.value.status == 400  # no CSRF token (and SameSite=Lax kept the cookie home)
        shots(page, "11-csrf-refused")
    finally:
        evil.shutdown()
        evil.server_close()
    assert page.goto(f"{served.url}/console/").status == 200  # the forged logout did nothing
    old = context.cookies()
    assert any(c["name"] == "archiver_console" and c["httpOnly"] and c["sameSite"] == "Lax" for c in old)
    page.click("button:has-text('Log out')")
    page.wait_for_url("**/console/login")
    thief = browser.new_context(viewport={"width": 1280, "height": 800})
    thief.add_cookies(old)
    stolen = thief.new_page()
    stolen.goto(f"{served.url}/console/")
    assert stolen.url.startswith(f"{served.url}/console/login")
    assert stolen.request.get(f"{served.url}/api/v1/stats").status == 401
    shots(stolen, "12-logged-out-cookie")


def test_a_compliance_officer_resolves_a_finding_in_the_browser(
        console: Console, served: Served, browser: Any, shots: Any) -> None:
    from tests.e2e.test_console import _findings_and_a_batch

    (one, _, _), _, _ = _findings_and_a_batch(console)
    create_user(console.tmp_path, "officer@example.com", "compliance")
    page = new_page(browser)
    log_in(page, served.url, "officer@example.com")
    page.click("nav >> text=Reviews")
    page.wait_for_selector(f"#finding-{one}")
    assert page.inner_text("#count") == "3 findings"
    shots(page, "20-reviews")
    page.fill(f"#note-{one}", "customer re-opted in by phone")
    page.click(f"#finding-{one} button:has-text('Resolve')")
    page.wait_for_selector("#resolved-notice")
    assert page.inner_text(f"#finding-{one} .status") == "resolved"
    assert "customer re-opted in by phone" in page.inner_text(f"#finding-{one} .resolution")
    shots(page, "21-finding-resolved")
    page.goto(f"{served.url}/console/reviews/dispositions")
    page.wait_for_selector("#pending-count")
    assert page.inner_text("#pending-count") == "1 pending batch"
    shots(page, "22-disposition-queue")
def test_a_legal_user_places_and_releases_a_hold_in_the_browser(
        console: Console, served: Served, browser: Any, shots: Any) -> None:
    from tests.e2e.test_holds import ALICE, BOB

    _archive_with_a_hold(console)
    create_user(console.tmp_path, "legal@example.com", "legal", "Acme v. Us")
    page = new_page(browser)
    log_in(page, served.url, "legal@example.com")
    page.click("nav >> text=Holds")
    page.wait_for_url("**/console/holds")
    assert "Acme v. Us" in page.inner_text("main")
    shots(page, "13-holds")
    page.click("#new-hold")
    page.fill("#name", "both of them")
    page.fill("#custodians", f"{ALICE}\n{BOB}")
    page.fill("#reason", "the suit widened")
    page.click("#place-hold")
    page.wait_for_selector("#count-records")
    from archiver import holds

    hold_id = page.url.rsplit("/", 1)[1]
    assert page.inner_text("#count-records") == str(holds.show(console.services, hold_id)["counts"]["records"])
    assert int(page.inner_text("#count-records")) >= 3 and page.inner_text("#count-contacts") == "2"
    assert page.inner_text("#hold-status") == "active"
    shots(page, "14-hold-placed")
    with page.expect_download() as download:
        page.click("#certificate")
    assert download.value.suggested_filename.endswith("-certificate.json")
    page.fill("#reason", "settled")
    page.click("#release-hold")
    page.wait_for_selector("#hold-status.released")
    assert "settled" in page.inner_text("#hold-status") and "released" in page.inner_text("#history")
    shots(page, "15-hold-released")
