"""Webhook latency idle and under read load, for scripts/bench (rows 6a-6e).

Through a real ``archiver serve`` (both tiers, SQLite catalog and FTS5 search, as
``scripts/serve`` runs it): one signed 15 MB text message is posted, sealed and indexed, then
signed ~1 KB webhooks and ``/healthz`` are sent one at a time and each answer timed, first
with nothing else running (idle), then while 4 clients run worst-case searches back to back
(the word they search for occurs only at the very end of the 15 MB message, so every search
hits it and its snippet scans as far as it ever does). The tests assert the same bound
(tests/e2e/test_intake_isolation.py); this records the figures.

    python scripts/bench_lib/read_load.py --work DIR [--quick] [--doc docs/benchmarks.md]

run alone (``scripts/bench read-load``) it prints a dated section and appends it to
``--doc``; ``bench.py local`` runs :func:`measure` as step 6 and its table gets :func:`lines`.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

SECRET = "bench-app-secret"
BIG_CHARS = 15 * 1024 * 1024
RARE = "zebrafjord"
CLIENTS = 4
GOALS = {"webhook_p99_ms": 100.0, "healthz_p99_ms": 100.0}
FULL = {"samples": 500}
QUICK = {"samples": 150}

_WORDS = ("Bonjour, the parcel left Zürich on Tuesday and should reach 東京 next week; the invoice "
          "lists two units, please check the packing slip before it goes out. Merci! ")


def big_text(chars: int = BIG_CHARS) -> str:
    """About ``chars`` characters of ordinary text, with :data:`RARE` only at the very end."""
    tail = f" {RARE}"
    return (_WORDS * (chars // len(_WORDS) + 1))[:chars - len(tail)] + tail


def message(wamid: str, text: str, ts: int = 1780001000) -> bytes:
    """An inbound text message webhook as Meta sends it."""
    value = {"messaging_product": "whatsapp",
             "metadata": {"display_phone_number": "15550009999", "phone_number_id": "109987654321098"},
             "contacts": [{"profile": {"name": "Ines"}, "wa_id": "447946000123"}],
             "messages": [{"from": "447946000123", "id": wamid, "timestamp": str(ts), "type": "text",
                           "text": {"body": text}}]}
    return json.dumps({"object": "whatsapp_business_account",
                       "entry": [{"id": "102290129340398", "changes": [{"field": "messages", "value": value}]}]}).encode()


def signed(body: bytes) -> dict[str, str]:
    mac = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return {"X-Hub-Signature-256": f"sha256={mac}", "Content-Type": "application/json"}


def percentiles(samples: list[float]) -> dict[str, float]:
    """p50, p99 and max of ``samples`` (seconds) in milliseconds (nearest rank)."""
    ordered = sorted(samples)

    def rank(p: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, int(round(p / 100 * len(ordered))) - 1))] * 1000

    return {"n": len(ordered), "p50_ms": rank(50), "p99_ms": rank(99), "max_ms": ordered[-1] * 1000}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Service:
    """``archiver serve`` in its own process group; ready once it printed "listening"."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.env = {**os.environ, **env}
        with log.open("ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "archiver.cli", "serve", "--port", str(self.port)],
                                         cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.monotonic() + 120
        while b"archiver listening" not in log.read_bytes():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"archiver serve did not start: {log.read_text(errors='replace')[-1500:]}")
            time.sleep(0.2)

    def token(self) -> str:
        out = subprocess.run([sys.executable, "-m", "archiver.cli", "token", "create", "--role", "compliance",
                              "--name", f"bench-{time.time_ns()}"], cwd=ROOT, env=self.env,
                             capture_output=True, text=True, check=True)
        return out.stdout.strip().splitlines()[-1]

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=60)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


def _sample(base: str, n: int, tag: str) -> dict[str, Any]:
    """``n`` webhooks and ``n`` /healthz, alternating, one at a time; their latencies."""
    import requests

    hooks, health, failed = [], [], 0
    with requests.Session() as http:
        for i in range(n):
            body = message(f"wamid.bench.{tag}.{i}", f"latency sample {i}")
            started = time.perf_counter()
            r = http.post(f"{base}/webhooks/whatsapp", data=body, headers=signed(body), timeout=60)
            hooks.append(time.perf_counter() - started)
            started = time.perf_counter()
            h = http.get(f"{base}/healthz", timeout=60)
            health.append(time.perf_counter() - started)
            failed += (r.status_code != 200) + (h.status_code != 200)
    return {"webhook": percentiles(hooks), "healthz": percentiles(health), "failed": failed}


def _searchers(base: str, token: str, stop: threading.Event, out: list[tuple[float, int]]) -> list[threading.Thread]:
    import requests

    def loop() -> None:
        with requests.Session() as http:
            while not stop.is_set():
                started = time.perf_counter()
                r = http.get(f"{base}/api/v1/search", params={"q": RARE}, timeout=120,
                             headers={"Authorization": f"Bearer {token}"})
                out.append((time.perf_counter() - started, r.status_code))

    return [threading.Thread(target=loop, name=f"searcher-{i}", daemon=True) for i in range(CLIENTS)]


def measure(root: Path, env: dict[str, str], quick: bool = False) -> dict[str, Any]:
    """Rows 6a-6e: webhook and /healthz latency idle and under 4 worst-case search clients, one search alone."""
    import requests

    cfg = QUICK if quick else FULL
    home = Path(env["ARCHIVER_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    env = {**env, "ARCHIVER_MAX_BODY_BYTES": str(20 * 1024 * 1024), "ARCHIVER_SEAL_INTERVAL": "0.5",
           "ARCHIVER_ALLOW_UNLOCKED_STORE": "1"}
    service = Service(env, home.parent / f"{home.name}-serve.log")
    try:
        body = message("wamid.bench.big", big_text())
        assert requests.post(f"{service.base}/webhooks/whatsapp", data=body, headers=signed(body),
                             timeout=120).status_code == 200
        token = service.token()
        auth = {"Authorization": f"Bearer {token}"}
        deadline = time.monotonic() + 300
        while requests.get(f"{service.base}/api/v1/search", params={"q": RARE}, headers=auth,
                           timeout=120).json().get("total", 0) < 1:
            if time.monotonic() > deadline:
                raise RuntimeError("the 15 MB message was not indexed within 300 s")
            time.sleep(0.5)
        _sample(service.base, 20, "warm")
        alone = []
        for _ in range(10):  # one search at a time, nothing else running
            started = time.perf_counter()
            requests.get(f"{service.base}/api/v1/search", params={"q": RARE}, headers=auth, timeout=120)
            alone.append(time.perf_counter() - started)
        idle = _sample(service.base, cfg["samples"], "idle")
        stop, searches = threading.Event(), []  # type: ignore[var-annotated]
        threads = _searchers(service.base, token, stop, searches)
        for t in threads:
            t.start()
        while len(searches) < CLIENTS:  # every client has had an answer: the load is on
            time.sleep(0.05)
        loaded = _sample(service.base, cfg["samples"], "load")
        stop.set()
        for t in threads:
            t.join(timeout=120)
    finally:
        service.stop()
    seconds = [s for s, _ in searches]
    return {"samples": cfg["samples"], "big_chars": BIG_CHARS, "clients": CLIENTS, "idle": idle, "load": loaded,
            "searches": {**percentiles(seconds), "non200": sum(code != 200 for _, code in searches)},
            "search_alone": percentiles(alone)}


def _ms(p: dict[str, float]) -> str:
    return f"p50 {p['p50_ms']:.1f} ms, p99 {p['p99_ms']:.1f} ms, max {p['max_ms']:.1f} ms; n={p['n']}"


def lines(results: dict[str, Any]) -> list[str]:
    """Table rows 6a-6e for :func:`measure`'s results (under ``results["read_load"]``)."""
    r = results.get("read_load")
    if not r:
        return []
    if "error" in r:
        return [f"| 6 | Webhook latency under read load | failed: {r['error']} | p99 < 100 ms | **NO** |"]
    s = r["searches"]
    load = (f"{r['clients']} clients searching a word only at the end of a {r['big_chars'] / 2**20:.0f} MiB "
            f"message, {s['n']} searches: {_ms(s)}" + (f", {s['non200']} not 200" if s["non200"] else ""))
    rows = []
    for key, idle_row, load_row, label in (("webhook", "6a", "6b", "Webhook (signed ~1 KB, one at a time)"),
                                           ("healthz", "6c", "6d", "`/healthz`")):
        goal = GOALS[f"{key}_p99_ms"]
        idle, loaded = r["idle"][key], r["load"][key]
        rows.append(f"| {idle_row} | {label} latency, idle | {_ms(idle)} | - | - |")
        met = "yes" if loaded["p99_ms"] < goal and r["load"]["failed"] == 0 else "**NO**"
        rows.append(f"| {load_row} | {label} latency under read load ({load}) | {_ms(loaded)} | "
                    f"p99 < {goal:.0f} ms | {met} |")
    if alone := r.get("search_alone"):
        rows.append(f"| 6e | Search whose hit is the {r['big_chars'] / 2**20:.0f} MiB message (word only at its end), "
                    f"one at a time through the relay, nothing else running | {_ms(alone)} | well under 1 s "
                    f"(was 9-11 s) | {'yes' if alone['p99_ms'] < 1000 else '**NO**'} |")
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--doc", type=Path)
    a = p.parse_args(argv)
    sys.path.insert(0, str(HERE))
    import bench  # beside this file: machine() and the environment of an instance

    print(f"bench: webhook latency idle and under read load ({CLIENTS} search clients, 15 MB message)",
          file=sys.stderr)
    try:
        results = {"read_load": measure(ROOT, bench.archiver_env(a.work / "read-load"), a.quick)}
    except Exception as exc:  # report, do not hide: the table says it failed
        results = {"read_load": {"error": f"{exc.__class__.__name__}: {exc}"}}
    m = bench.machine()
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text = "\n".join([
        f"## {when}: webhook latency under read load{' (quick run)' if a.quick else ''}", "",
        f"- machine: `{m['uname']}`", f"- nproc: {m['nproc']}; CPU: {m['cpu']}",
        f"- python: {m['python']}; commit {m['git']}{' plus uncommitted changes under archiver/' if m['dirty'] else ''}",
        "- `archiver serve` as `scripts/serve` runs it (SQLite catalog, FTS5 search, local WORM folder; intake "
        "tier 1 gevent worker, read tier 2 gevent workers at nice 10, jobs process); only rows 6a-6e of "
        "`scripts/bench` (`scripts/bench read-load`)", "",
        "| # | Measurement | Result | Goal | Met |", "|---|---|---|---|---|", *lines(results)]) + "\n"
    print(text)
    if a.doc is not None:
        with a.doc.open("a", encoding="utf-8") as fh:
            fh.write("\n" + text)
        print(f"bench: appended to {a.doc}", file=sys.stderr)


if __name__ == "__main__":
    main()
