"""Rejected requests: one audit record per (source, route, reason) and window, and the failure limit."""

from __future__ import annotations

import hashlib
import ipaddress
import json
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from archiver.catalog import Journal
from archiver.config import Settings
from archiver.errors import ConfigError
from archiver.rejections import Buckets, Key, Rejections, Tally, client_address, limit_key
from tests.conftest import make_env, sign
from tests.serving import wait_until

HOOK = "/webhooks/whatsapp"
AT = datetime(2026, 12, 2, tzinfo=timezone.utc)
BAD = {"X-Hub-Signature-256": "sha256=" + "0" * 64}


def nets(*text: str) -> tuple[Any, ...]:
    return tuple(ipaddress.ip_network(t) for t in text)


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[tuple[Any, Any, Clock]]:
    """(services, client, clock): burst 5, 1 token a second, 60 s windows, 2 samples, a hand clock."""
    from archiver.app import create_app
    from archiver.services import Services

    env = make_env(tmp_path / "home", ARCHIVER_FAILURE_BURST="5", ARCHIVER_FAILURE_RATE="1",
                   ARCHIVER_REJECTION_WINDOW="60", ARCHIVER_REJECTION_SAMPLES="2",
                   ARCHIVER_TRUSTED_PROXIES="10.0.0.0/8")
    services = Services.open(Settings.from_env(env))
    clock = Clock()
    services._rejections = Rejections(services.settings, services.sessions, clock=clock)
    yield services, create_app(services=services).test_client(), clock
    services.close()


def bearer(services: Any, role: str) -> dict[str, str]:
    from archiver.auth import create_token

    with services.sessions.begin() as session:
        return {"Authorization": f"Bearer {create_token(session, role, f'test-{role}')}"}


def audits(services: Any) -> list[dict[str, Any]]:
    """The journaled audit bodies, oldest first."""
    with services.sessions() as session:
        rows = session.scalars(select(Journal).where(Journal.source == "audit").order_by(Journal.id)).all()
    return [json.loads(r.body) for r in rows]


def rejected(services: Any) -> list[dict[str, Any]]:
    return [a for a in audits(services) if a["event"] == "requests_rejected"]


# --- pure parts ---------------------------------------------------------------------------


def test_a_window_counts_one_key_until_it_closes() -> None:
    tally = Tally(seconds=60, samples=2)
    key = Key("198.51.100.7", "POST /webhooks/whatsapp", "bad signature")
    for i in range(5):
        tally.add(key, 100.0 + i, AT, f"h{i % 3}")
    assert tally.pop_closed(159.9) == []
    [win] = tally.pop_closed(160.0)
    assert (win.count, win.samples, win.first, win.last) == (5, ["h0", "h1"], AT, AT)
    tally.add(key, 161.0, AT, None)
    tally.add(key, 222.0, AT, None)  # the window opened at 161 has closed: a new one
    assert [w.count for w in tally.pop_closed(222.0)] == [1]
    assert [w.count for w in tally.pop_closed(222.0, everything=True)] == [1]


def test_too_many_open_windows_close_the_oldest_early() -> None:
    tally = Tally(seconds=60, samples=0, max_open=2)
    for n in range(3):
        tally.add(Key(f"192.0.2.{n}", "GET /api/v1/stats", "no token"), 1.0, AT, None)
    assert [w.key.source for w in tally.pop_closed(1.0)] == ["192.0.2.0"]


def test_a_bucket_spends_its_burst_then_refills_at_the_rate() -> None:
    buckets = Buckets(burst=3, rate=0.5)
    assert [buckets.take("a", 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a", 0.0) == pytest.approx(2.0)  # one token takes 2 s at 0.5/s
    assert buckets.take("b", 0.0) == 0.0  # another source has its own
    assert buckets.take("a", 2.0) == 0.0
    assert buckets.take("a", 2.0) > 0


def test_forgotten_buckets_are_the_full_ones_first() -> None:
    buckets = Buckets(burst=3, rate=1, max_sources=2)
    for _ in range(4):
        buckets.take("drained", 0.0)
    buckets.take("full", 0.0)
    buckets.take("third", 1.0)  # over the bound: "full" (refilled by 1 s) is forgotten, "drained" kept
    assert buckets.take("drained", 1.0) == 0.0  # the one token it got back...
    assert buckets.take("drained", 1.0) > 0  # ...and no fresh burst


def test_ipv6_sources_share_a_bucket_per_64() -> None:
    assert limit_key("2001:db8:1:2:aaaa::1") == limit_key("2001:db8:1:2:bbbb::2") == "2001:db8:1:2::/64"
    assert limit_key("2001:db8:1:3::1") != limit_key("2001:db8:1:2::1")
    assert limit_key("198.51.100.7") == "198.51.100.7"


def test_forwarded_for_is_read_only_from_trusted_proxies() -> None:
    trusted = nets("10.0.0.0/8")
    assert client_address("198.51.100.7", "173.252.127.1", trusted) == "198.51.100.7"
    assert client_address("10.1.1.1", "173.252.127.1", ()) == "10.1.1.1"
    assert client_address("10.1.1.1", "173.252.127.1", trusted) == "173.252.127.1"
    # a client's own X-Forwarded-For sits left of what the proxies appended: not believed
    assert client_address("10.1.1.1", "6.6.6.6, 198.51.100.7, 10.2.2.2", trusted) == "198.51.100.7"
    assert client_address("10.1.1.1", "not-an-ip", trusted) == "10.1.1.1"
    assert client_address(None, None, trusted) == "unknown"


def test_settings_bound_the_window_and_the_bucket(tmp_path: Path) -> None:
    s = Settings.from_env(make_env(tmp_path, ARCHIVER_TRUSTED_PROXIES="127.0.0.1, 10.0.0.0/8"))
    assert s.trusted_proxies == nets("127.0.0.1/32", "10.0.0.0/8")
    d = Settings.from_env({"ARCHIVER_HOME": str(tmp_path)})
    assert (d.rejection_window, d.rejection_samples, d.failure_burst, d.failure_rate, d.trusted_proxies) == \
        (60.0, 3, 20.0, 1.0, ())
    for name, value in [("ARCHIVER_REJECTION_WINDOW", "0"), ("ARCHIVER_FAILURE_BURST", "0.5"),
                        ("ARCHIVER_FAILURE_RATE", "-1"), ("ARCHIVER_REJECTION_SAMPLES", "x"),
                        ("ARCHIVER_TRUSTED_PROXIES", "proxy.example")]:
        with pytest.raises(ConfigError):
            Settings.from_env(make_env(tmp_path, **{name: value}))


# --- through the app ----------------------------------------------------------------------


def test_bad_signatures_make_one_record_per_window_without_bodies(limited: tuple[Any, Any, Clock]) -> None:
    services, client, clock = limited
    bodies = [json.dumps({"secret-word": f"zebrafjord {i}"}).encode() for i in range(4)]
    for body in bodies:
        assert client.post(HOOK, data=body, headers=BAD).status_code == 401
    assert client.post(HOOK, data=bodies[0]).status_code == 401  # no signature: its own reason
    assert rejected(services) == []  # nothing journaled per request
    clock.now += 60
    assert services.rejections.flush() == 2
    by_reason = {r["reason"]: r for r in rejected(services)}
    assert set(by_reason) == {"bad signature", "missing signature"}
    bad = by_reason["bad signature"]
    assert (bad["count"], bad["source"], bad["route"], bad["actor"]) == (4, "127.0.0.1", "POST /webhooks/whatsapp", None)
    assert bad["body_sha256_samples"] == [_sha(b) for b in bodies[:2]]
    assert bad["first"] <= bad["last"] and bad["window_seconds"] == 60
    with services.sessions() as session:
        raw = b"".join(session.scalars(select(Journal.body)).all())
    assert b"zebrafjord" not in raw and b"sha256=000" not in raw


def _sha(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def test_a_flooding_source_gets_429_but_valid_requests_go_through(limited: tuple[Any, Any, Clock]) -> None:
    services, client, clock = limited
    body = b'{"object": "whatsapp_business_account", "entry": []}'
    codes = [client.post(HOOK, data=body, headers=BAD).status_code for _ in range(8)]
    assert codes == [401] * 5 + [429] * 3
    limited_answer = client.post(HOOK, data=body, headers=BAD)
    assert limited_answer.status_code == 429 and limited_answer.headers["Retry-After"] == "1"
    assert limited_answer.get_json()["error"] == "RateLimited"
    # valid webhooks are never limited: from the flooding source itself, and from Meta via the proxy
    assert client.post(HOOK, data=body, headers=sign(body)).status_code == 200
    meta = {"REMOTE_ADDR": "10.0.0.2"}
    assert client.post(HOOK, data=body, headers={**sign(body), "X-Forwarded-For": "173.252.127.1"},
                       environ_base=meta).status_code == 200
    # another source behind the proxy has its own bucket
    assert client.post(HOOK, data=body, headers={**BAD, "X-Forwarded-For": "198.51.100.9"},
                       environ_base=meta).status_code == 401
    clock.now += 1  # one token back
    assert client.post(HOOK, data=body, headers=BAD).status_code == 401
    services.rejections.flush(everything=True)
    counts = {(r["source"], r["reason"]): r["count"] for r in rejected(services)}
    assert counts == {("127.0.0.1", "bad signature"): 6, ("127.0.0.1", "rate-limited"): 4,
                      ("198.51.100.9", "bad signature"): 1}


def test_api_refusals_are_aggregated_with_reason_and_actor(limited: tuple[Any, Any, Clock]) -> None:
    services, client, _clock = limited
    ingest = bearer(services, "ingest")
    for _ in range(3):
        assert client.get("/api/v1/stats").status_code == 401
    assert client.get("/api/v1/stats", headers={"Authorization": "Bearer wa_nope"}).status_code == 401
    assert client.get("/api/v1/stats", headers=ingest).status_code == 403
    assert client.get("/webhooks/whatsapp?hub.mode=subscribe&hub.verify_token=nope",
                      environ_base={"REMOTE_ADDR": "192.0.2.5"}).status_code == 403
    services.rejections.flush(everything=True)
    got = {(r["route"], r["reason"], r["actor"]): r["count"] for r in rejected(services)}
    assert got == {("GET /api/v1/stats", "no token", None): 3, ("GET /api/v1/stats", "bad token", None): 1,
                   ("GET /api/v1/stats", "role ingest", "test-ingest"): 1,
                   ("GET /webhooks/whatsapp", "bad handshake", None): 1}
    assert "wa_nope" not in json.dumps(audits(services))


def test_capture_400_and_413_are_rejections_too(limited: tuple[Any, Any, Clock]) -> None:
    services, client, _clock = limited
    ingest = bearer(services, "ingest")
    assert client.post("/api/v1/capture/messages", data=b"{not json", headers=ingest).status_code == 400
    big = b" " * (1024 * 1024 + 1)
    assert client.post("/api/v1/consent", data=big, headers=ingest).status_code == 413
    services.rejections.flush(everything=True)
    got = {(r["route"], r["reason"]): r for r in rejected(services)}
    assert set(got) == {("POST /api/v1/capture/messages", "invalid body"), ("POST /api/v1/consent", "too large")}
    assert got[("POST /api/v1/capture/messages", "invalid body")]["body_sha256_samples"] == [_sha(b"{not json")]


def test_open_windows_are_journaled_when_services_close(limited: tuple[Any, Any, Clock]) -> None:
    services, client, _clock = limited
    assert client.get("/api/v1/stats").status_code == 401
    services.rejections.close()
    assert [r["count"] for r in rejected(services)] == [1]


def test_a_failed_write_keeps_its_windows_for_the_next_flush(limited: tuple[Any, Any, Clock],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    services, client, _clock = limited
    assert client.get("/api/v1/stats").status_code == 401
    real = services.sessions.begin

    def down() -> Any:
        raise OSError("catalog down")
    monkeypatch.setattr(services.sessions, "begin", down)
    assert services.rejections.flush(everything=True) == 0
    monkeypatch.setattr(services.sessions, "begin", real)
    assert services.rejections.flush() == 1
    assert [r["count"] for r in rejected(services)] == [1]


def test_a_closed_window_is_journaled_without_another_request(tmp_path: Path) -> None:
    from archiver.app import create_app
    from archiver.services import Services

    services = Services.open(Settings.from_env(make_env(tmp_path / "home", ARCHIVER_REJECTION_WINDOW="0.2")))
    try:
        assert create_app(services=services).test_client().get("/api/v1/stats").status_code == 401
        [got] = wait_until(lambda: rejected(services), 20, "the background flush of the closed window")
        assert (got["reason"], got["count"], got["window_seconds"]) == ("no token", 1, 0.2)
    finally:
        services.close()
