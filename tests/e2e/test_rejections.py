"""A flood of rejected requests through ``archiver serve`` makes a handful of audit records, not
one per request, and is answered 429 while valid webhooks are accepted and sealed."""

from __future__ import annotations

import json
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import select

from archiver import records, sealer
from archiver.catalog import Record
from archiver.config import Settings
from archiver.services import Services
from tests.conftest import make_env, sign
from tests.e2e.test_pipeline import msg_body
from tests.e2e.test_serve import _sealed
from tests.serving import free_port, start_service, stop_service, wait_until

FLOOD = 10_000
THREADS = 4
FLOODER = "203.0.113.7"  # TEST-NET-3, behind the trusted local proxy
API_PROBER = "203.0.113.8"
META = "173.252.127.1"  # inside Meta's webhook range 173.252.64.0/18


class Flood:
    """``FLOOD`` bad-signature webhooks from one source, on a few keep-alive connections."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.codes: Counter[int] = Counter()
        self.limited: list[tuple[str | None, Any]] = []  # (Retry-After, JSON) of a few 429s
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._send, args=(n,)) for n in range(THREADS)]

    def _send(self, n: int) -> None:
        with requests.Session() as http:
            for i in range(n, FLOOD, THREADS):
                body = json.dumps({"object": "whatsapp_business_account", "entry": [], "n": i}).encode()
                resp = http.post(self.url, data=body, timeout=30, headers={
                    "X-Hub-Signature-256": "sha256=" + "0" * 64, "X-Forwarded-For": FLOODER})
                with self.lock:
                    self.codes[resp.status_code] += 1
                    if resp.status_code == 429 and len(self.limited) < 20:
                        self.limited.append((resp.headers.get("Retry-After"), resp.json()))

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def join(self) -> None:
        for t in self.threads:
            t.join()


def rejection_records(env: dict[str, str]) -> list[dict[str, Any]]:
    """Seal what the stopped service journaled; the content of every requests_rejected record."""
    services = Services.open(Settings.from_env(env))
    try:
        sealer.seal_pending(services)
        with services.sessions() as session:
            seqs = session.scalars(select(Record.seq).where(Record.kind == "audit",
                                                            Record.type == "requests_rejected")).all()
            return [records.read_record(services, session, seq)["content"] for seq in seqs]
    finally:
        services.close()


def test_a_flood_of_bad_signatures_makes_a_handful_of_records(tmp_path: Path) -> None:
    env = make_env(tmp_path / "home", ARCHIVER_TRUSTED_PROXIES="127.0.0.1", ARCHIVER_FAILURE_BURST="50",
                   ARCHIVER_FAILURE_RATE="5", ARCHIVER_REJECTION_WINDOW="60")
    port = free_port()
    proc = start_service(env, port, tmp_path / "serve.log")
    base = f"http://127.0.0.1:{port}"
    try:
        flood = Flood(f"{base}/webhooks/whatsapp")
        flood.start()
        wait_until(lambda: flood.codes[429], 120, "the flooding source to be answered 429")
        # meanwhile, valid webhooks: from Meta, and from the flooding address itself (never limited)
        for wamid, source in (("wamid.RL-META", META), ("wamid.RL-SAME", FLOODER)):
            body = msg_body(wamid)
            ok = requests.post(f"{base}/webhooks/whatsapp", data=body, timeout=30,
                               headers={**sign(body), "X-Forwarded-For": source})
            assert ok.status_code == 200, (source, ok.text)
        api = Counter(requests.get(f"{base}/api/v1/stats", headers={"X-Forwarded-For": API_PROBER},
                                   timeout=30).status_code for _ in range(300))
        flood.join()
        assert _sealed(env, "wamid.RL-META") and _sealed(env, "wamid.RL-SAME")
    finally:
        stop_service(proc)  # the worker journals its open windows as it exits

    assert set(flood.codes) == {401, 429} and sum(flood.codes.values()) == FLOOD
    for retry_after, answer in flood.limited:
        assert retry_after is not None and int(retry_after) >= 1
        assert answer["error"] == "RateLimited"
    assert set(api) == {401, 429}

    got = rejection_records(env)
    assert len(got) <= 8, [(r["source"], r["route"], r["reason"], r["count"]) for r in got]  # a handful
    hook = [r for r in got if r["source"] == FLOODER]
    assert {r["route"] for r in hook} == {"POST /webhooks/whatsapp"}
    assert sum(r["count"] for r in hook) == FLOOD
    assert sum(r["count"] for r in hook if r["reason"] == "bad signature") == flood.codes[401]
    assert sum(r["count"] for r in hook if r["reason"] == "rate-limited") == flood.codes[429]
    assert all(len(r["body_sha256_samples"]) <= 3 for r in got)
    probes = [r for r in got if r["source"] == API_PROBER]
    assert {(r["route"], r["reason"]) for r in probes} == {("GET /api/v1/stats", "no token"),
                                                           ("GET /api/v1/stats", "rate-limited")}
    assert sum(r["count"] for r in probes if r["reason"] == "no token") == api[401]
    assert sum(r["count"] for r in probes) == 300
    assert not [r for r in got if r["source"] == META]
