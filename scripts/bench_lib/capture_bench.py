"""Capture-health review benchmarks; driven by ``scripts/bench capture [--n=N]``.

  capture_bench.py --work DIR --n N [--doc docs/benchmarks.md]

Corpus (local store, SQLite catalog): N webhook deliveries of the realistic mix of
``bench.delivery`` (3 of 4 inbound messages, 1 of 4 a status of an earlier one; one business
number, 500 contacts; the payloads' times are in May 2026, so the number is found silent).
``capture.yaml`` sets ``status_grace: "0s"``: every status is checked in the run that reads
it. Sealed first (not timed). Then timed, in the same run:

* B0 (baseline): reading and decrypting every webhook delivery alone (``records.payloads``),
  the floor of a full run, which maps each delivery again;
* C1: the first (full) capture review;
* C2: an incremental review after 1,000 more deliveries (sealed, not timed).

Issue 11 sets no speed goal for the capture review; the consent and template reviews' goals
(a full run on 1M records < 60 s, an incremental one < 1 s) are shown for comparison.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench  # noqa: E402


def journal(services: Any, first: int, last: int, chunk: int = 5000) -> None:
    from archiver.journal import append_delivery

    for start in range(first, last, chunk):
        with services.sessions.begin() as session:
            for i in range(start, min(last, start + chunk)):
                body = bench.delivery(i)
                append_delivery(session, "webhook", body, {"signature": bench.signature(body), "remote": "127.0.0.1",
                                                           "content_type": "application/json"})


def decrypt_all(services: Any) -> int:
    from sqlalchemy import select

    from archiver import records
    from archiver.catalog import Record

    with services.sessions() as session:
        rows = session.execute(select(Record.seq, Record.segment_id).where(
            Record.kind == "delivery", Record.type == "webhook")).all()
        return len(records.payloads(services, session, [(r.seq, r.segment_id) for r in rows]))


def run(work: Path, n: int) -> dict[str, Any]:
    from archiver import capture_review, sealer

    policies = work / "policies"
    shutil.copytree(bench.ROOT / "policies", policies)
    (policies / "capture.yaml").write_text('status_grace: "0s"\n')  # every status checked at once
    svc = bench.open_services(bench.archiver_env(work / "capture", ARCHIVER_POLICIES=str(policies)))
    journal(svc, 0, n)
    sealer.seal_pending(svc)
    out: dict[str, Any] = {"n": n, "records": bench.head_seq(svc)}
    t0 = time.perf_counter()
    decrypted = decrypt_all(svc)
    out["baseline"] = {"seconds": time.perf_counter() - t0, "deliveries": decrypted}
    t0 = time.perf_counter()
    full = capture_review.review(svc)
    out["full"] = {"seconds": time.perf_counter() - t0, **full}
    journal(svc, n, n + 1000)
    sealer.seal_pending(svc)
    t0 = time.perf_counter()
    inc = capture_review.review(svc)
    out["incremental"] = {"seconds": time.perf_counter() - t0, **inc}
    svc.close()
    return out


def table(r: dict[str, Any]) -> list[str]:
    b, f, i = r["baseline"], r["full"], r["incremental"]
    per_million = f["seconds"] * 1_000_000 / max(r["records"], 1)
    return ["| # | Measurement | Result | For comparison (consent/template goals, 1M corpus) |", "|---|---|---|---|",
            f"| B0 | Baseline: read and decrypt every webhook delivery ({b['deliveries']:,}) | {b['seconds']:.2f} s | - |",
            f"| C1 | Full capture review ({r['records']:,} records, {f['deliveries']:,} deliveries, "
            f"{f['statuses']:,} statuses) | {f['seconds']:.2f} s ({f['seconds'] / max(b['seconds'], 1e-9):.1f}x B0; "
            f"{f['findings']:,} findings); linear to 1M records: ~{per_million:,.0f} s | < 60 s |",
            f"| C2 | Incremental review (1,000 new deliveries) | {i['seconds']:.2f} s ({i['deliveries']:,} deliveries, "
            f"{i['findings']:,} findings) | < 1 s |"]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--doc", type=Path)
    a = p.parse_args()
    r = run(a.work, a.n)
    m = bench.machine()
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"## {when}: capture-health review (small corpus: {a.n:,} deliveries)", "",
             f"- machine: `{m['uname']}`", f"- nproc: {m['nproc']}; CPU: {m['cpu']}",
             f"- python: {m['python']}; commit {m['git']}{' plus uncommitted changes' if m['dirty'] else ''}",
             "- catalog SQLite, local store; `scripts/bench capture --n=N` (method: scripts/bench_lib/capture_bench.py)",
             f"- **small corpus**: {a.n:,} deliveries; issue 11 sets no speed goal for this review", "",
             *table(r), ""]
    print("\n".join(lines))
    if a.doc is not None:
        with a.doc.open("a", encoding="utf-8") as fh:
            fh.write("\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
