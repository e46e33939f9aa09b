"""Consent ledger and consent-review benchmarks; driven by ``scripts/bench consent [--n=N]``.

  consent_bench.py --work DIR --n N [--doc docs/benchmarks.md]

Corpus (local store, SQLite catalog): ``bench.delivery(i)`` for i < N (3 of 4 inbound ~1 KB
text messages, 1 of 4 a status; 500 contacts), with every other status priced
``marketing`` (a marketing send) and every 50th message's text ``STOP``; an opt-in for every
contact through the consent API at the start. Sealed first (not timed). Then timed:

* C1: the first (full) consent review: the ledger built from every record (each message
  decrypted for keywords), every marketing send checked, the findings journaled;
* C2: an incremental review after 1,000 more deliveries (sealed, not timed);
* C3: ``consent at`` (``consent.state_at``) for 200 random (contact, time) pairs: p50, p95.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench  # noqa: E402

TS = 1780001000


def body(i: int) -> bytes:
    raw = bench.delivery(i)
    if i % 4 == 3 and i % 8 == 7:
        return raw.replace(b'"category": "service"', b'"category": "marketing"')
    if i % 4 != 3 and i % 50 == 0:
        doc = json.loads(raw)
        doc["entry"][0]["changes"][0]["value"]["messages"][0]["text"]["body"] = "STOP"
        return json.dumps(doc).encode()
    return raw


def journal(services: Any, first: int, last: int, chunk: int = 5000) -> None:
    from archiver.journal import append_delivery

    for start in range(first, last, chunk):
        with services.sessions.begin() as session:
            for i in range(start, min(last, start + chunk)):
                raw = body(i)
                append_delivery(session, "webhook", raw, {"signature": bench.signature(raw), "remote": "127.0.0.1",
                                                          "content_type": "application/json"})


def opt_ins(services: Any) -> None:
    from archiver.journal import append_delivery

    with services.sessions.begin() as session:
        for n in range(500):
            raw = json.dumps({"contact": bench._contact(n)[0], "scope": "marketing", "action": "opt_in",
                              "source": "bench", "at": TS - 86400}).encode()
            append_delivery(session, "consent", raw, {"remote": "127.0.0.1", "token": "bench"})


def run(work: Path, n: int) -> dict[str, Any]:
    from archiver import consent, consent_review, sealer

    svc = bench.open_services(bench.archiver_env(work / "consent"))
    opt_ins(svc)
    journal(svc, 0, n)
    sealer.seal_pending(svc)
    out: dict[str, Any] = {"n": n, "records": bench.head_seq(svc)}
    t0 = time.perf_counter()
    full = consent_review.review(svc)
    out["full"] = {"seconds": time.perf_counter() - t0, **full}
    journal(svc, n, n + 1000)
    sealer.seal_pending(svc)
    t0 = time.perf_counter()
    inc = consent_review.review(svc)
    out["incremental"] = {"seconds": time.perf_counter() - t0, **inc}
    rng = random.Random(7)
    times = []
    with svc.sessions() as session:
        for _ in range(200):
            who, when = bench._contact(rng.randrange(500))[0], TS + rng.randrange(n + 1000)
            t0 = time.perf_counter()
            consent.state_at(session, who, "marketing", when)
            times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    out["at"] = {"p50": statistics.median(times), "p95": times[int(len(times) * 0.95) - 1], "max": times[-1]}
    svc.close()
    return out


def table(r: dict[str, Any]) -> list[str]:
    f, i, a = r["full"], r["incremental"], r["at"]
    return ["| # | Measurement | Result | Goal (1M corpus) | Met |", "|---|---|---|---|---|",
            f"| C1 | Full consent review ({r['records']:,} records) | {f['seconds']:.2f} s ({f['records']:,} send "
            f"candidates read, {f['marketing_sends']:,} marketing sends, {f['findings']:,} findings); linear to 1M "
            f"records: ~{f['seconds'] * 1_000_000 / r['records']:,.0f} s | < 60 s | "
            f"{'yes' if f['seconds'] * 1_000_000 / r['records'] < 60 else '**NO**'} |",
            f"| C2 | Incremental review (1,000 new deliveries) | {i['seconds']:.2f} s ({i['records']:,} read, "
            f"{i['findings']:,} findings) | < 1 s | {'yes' if i['seconds'] < 1 else '**NO**'} |",
            f"| C3 | `consent at` (200 queries) | p50 {a['p50']:.1f} ms, p95 {a['p95']:.1f} ms (max {a['max']:.1f} ms) "
            f"| < 50 ms | {'yes' if a['p95'] < 50 else '**NO**'} |"]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--doc", type=Path)
    a = p.parse_args()
    r = run(a.work, a.n)
    m = bench.machine()
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"## {when}: consent review (small corpus: {a.n:,} deliveries)", "",
             f"- machine: `{m['uname']}`", f"- nproc: {m['nproc']}; CPU: {m['cpu']}",
             f"- python: {m['python']}; commit {m['git']}{' plus uncommitted changes' if m['dirty'] else ''}",
             "- catalog SQLite, local store; `scripts/bench consent --n=N` (method: scripts/bench_lib/consent_bench.py)",
             f"- **small corpus**: {a.n:,} deliveries, not the 1,000,000 messages issue 11's targets are set for", "",
             *table(r), ""]
    print("\n".join(lines))
    if a.doc is not None:
        with a.doc.open("a", encoding="utf-8") as fh:
            fh.write("\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
