"""Template-review benchmarks (issue 11); driven by ``scripts/bench templates [--n=N]``.

  template_bench.py --work DIR --n N [--doc docs/benchmarks.md]

Corpus: the realistic one (``shared_corpus``: ``scripts/gen-corpus --n N``, about 10% of its
messages capture-API template sends of 5 templates in 9 languages; an APPROVED status for
each, ``payment_due`` moved to MARKETING, ``order_delivered`` paused for a day), sealed and
indexed once under ``$BENCH_CORPUS_DIR``; this benchmark works on a copy (local store, SQLite
catalog). Timed:

* T1: the first (full) template review: every send bound to its snapshot and checked;
* T2: an incremental review after 1,000 more template sends (``shared_corpus.more``; sealed, not timed).
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench  # noqa: E402
import shared_corpus as sc  # noqa: E402


def run(work: Path, n: int) -> dict[str, Any]:
    from archiver import sealer, template_review

    svc = bench.open_services(sc.env(sc.copy_home(sc.sealed_home(n), work / "templates")))
    out: dict[str, Any] = {"n": n, "records": bench.head_seq(svc)}
    print(f"bench: T1 full template review ({out['records']:,} records)", file=sys.stderr)
    t0, c0 = time.perf_counter(), time.process_time()
    full = template_review.review(svc)
    out["full"] = {"seconds": time.perf_counter() - t0, "cpu": time.process_time() - c0, **full}
    sc.journal(svc, sc.more(1000, template_sends=True))
    sealer.seal_pending(svc)
    print("bench: T2 incremental review", file=sys.stderr)
    t0, c0 = time.perf_counter(), time.process_time()
    inc = template_review.review(svc)
    out["incremental"] = {"seconds": time.perf_counter() - t0, "cpu": time.process_time() - c0, **inc}
    svc.close()
    return out


def table(r: dict[str, Any]) -> list[str]:
    f, i = r["full"], r["incremental"]
    per_million = f["seconds"] * 1_000_000 / max(r["n"], 1)
    return ["| # | Measurement | Result | Goal (1M corpus) | Met |", "|---|---|---|---|---|",
            f"| T1 | Full template review ({r['records']:,} records) | {f['seconds']:.2f} s (CPU {f['cpu']:.1f} s; {f['template_sends']:,} "
            f"template sends, {f['findings']:,} findings); linear to 1M messages: ~{per_million:,.0f} s | < 60 s | "
            f"{'yes' if per_million < 60 else '**NO**'} |",
            f"| T2 | Incremental review (1,000 new sends) | {i['seconds']:.2f} s (CPU {i['cpu']:.2f} s; {i['template_sends']:,} sends, "
            f"{i['findings']:,} findings) | < 1 s | {'yes' if i['seconds'] < 1 else '**NO**'} |"]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--doc", type=Path)
    a = p.parse_args()
    r = run(a.work, a.n)
    m = bench.machine()
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"## {when}: template review (realistic corpus, {a.n:,} messages)", "",
             f"- machine: `{m['uname']}`", f"- nproc: {m['nproc']}; CPU: {m['cpu']}",
             f"- python: {m['python']}; commit {m['git']}{' plus uncommitted changes' if m['dirty'] else ''}",
             "- catalog SQLite, local store; `scripts/bench templates --n=N` (method: scripts/bench_lib/template_bench.py)",
             f"- corpus: `scripts/gen-corpus --n {a.n}` plus an opt-in per contact and template events "
             "(scripts/bench_lib/shared_corpus.py), sealed and indexed once, copied for this run", "",
             *table(r), ""]
    print("\n".join(lines))
    if a.doc is not None:
        with a.doc.open("a", encoding="utf-8") as fh:
            fh.write("\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
