"""Consent ledger and consent-review benchmarks (issue 11); driven by ``scripts/bench consent [--n=N]``.

  consent_bench.py --work DIR --n N [--doc docs/benchmarks.md]

Corpus: the realistic one (``shared_corpus``: ``scripts/gen-corpus --n N``, an opt-in to
marketing for every contact, template events moving ``payment_due`` to MARKETING), sealed
and indexed once under ``$BENCH_CORPUS_DIR``; this benchmark works on a copy (local store,
SQLite catalog). Timed:

* C1: the first (full) consent review: the ledger built from every record (each message
  decrypted for keywords), every marketing send checked, the findings journaled;
* C2: an incremental review after 1,000 more deliveries (``shared_corpus.more``; sealed, not timed);
* C3: ``consent at`` (``consent.state_at``) for 200 random (contact, time) pairs: p50, p95.
"""

from __future__ import annotations

import argparse
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
import shared_corpus as sc  # noqa: E402
from corpus import END, START, Corpus  # noqa: E402


def run(work: Path, n: int) -> dict[str, Any]:
    from archiver import consent, consent_review, sealer

    svc = bench.open_services(sc.env(sc.migrated(sc.copy_home(sc.sealed_home(n), work / "consent"))))
    out: dict[str, Any] = {"n": n, "records": bench.head_seq(svc)}
    print(f"bench: C1 full consent review ({out['records']:,} records)", file=sys.stderr)
    t0, c0 = time.perf_counter(), time.process_time()
    full = consent_review.review(svc)
    out["full"] = {"seconds": time.perf_counter() - t0, "cpu": time.process_time() - c0, **full}
    sc.journal(svc, sc.more(1000))
    sealer.seal_pending(svc)
    print("bench: C2 incremental review", file=sys.stderr)
    t0, c0 = time.perf_counter(), time.process_time()
    inc = consent_review.review(svc)
    out["incremental"] = {"seconds": time.perf_counter() - t0, "cpu": time.process_time() - c0, **inc}
    rng = random.Random(7)
    people = Corpus(n, 1).contacts
    times = []
    with svc.sessions() as session:
        for _ in range(200):
            who, when = rng.choice(people).phone, rng.randrange(START, END)
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
            f"| C1 | Full consent review ({r['records']:,} records) | {f['seconds']:.2f} s (CPU {f['cpu']:.1f} s; {f['records']:,} send "
            f"candidates read, {f['marketing_sends']:,} marketing sends, {f['findings']:,} findings); linear to 1M "
            f"messages: ~{f['seconds'] * 1_000_000 / r['n']:,.0f} s | < 60 s | "
            f"{'yes' if f['seconds'] * 1_000_000 / r['n'] < 60 else '**NO**'} |",
            f"| C2 | Incremental review (1,000 new deliveries) | {i['seconds']:.2f} s (CPU {i['cpu']:.2f} s; {i['records']:,} read, "
            f"{i['findings']:,} findings) | < 1 s | {'yes' if i['seconds'] < 1 else '**NO**'} |",
            f"| C3 | `consent at` (200 queries) | p50 {a['p50']:.1f} ms, p95 {a['p95']:.1f} ms (max {a['max']:.1f} ms) "
            f"| < 50 ms | {'yes' if a['p95'] < 50 else '**NO**'} |"]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--doc", type=Path)
    a = p.parse_args()
    r = run(a.work, a.n)
    m = bench.machine()
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"## {when}: consent review (realistic corpus, {a.n:,} messages)", "",
             f"- machine: `{m['uname']}`", f"- nproc: {m['nproc']}; CPU: {m['cpu']}",
             f"- python: {m['python']}; commit {m['git']}{' plus uncommitted changes' if m['dirty'] else ''}",
             "- catalog SQLite, local store; `scripts/bench consent --n=N` (method: scripts/bench_lib/consent_bench.py)",
             f"- corpus: `scripts/gen-corpus --n {a.n}` plus an opt-in per contact and template events "
             "(scripts/bench_lib/shared_corpus.py), sealed and indexed once, copied for this run", "",
             *table(r), ""]
    print("\n".join(lines))
    if a.doc is not None:
        with a.doc.open("a", encoding="utf-8") as fh:
            fh.write("\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
