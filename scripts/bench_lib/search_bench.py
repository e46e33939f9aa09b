"""The search benchmark, driven by ``scripts/bench search`` (see docs/benchmarks.md).

    search_bench.py --work DIR --opensearch URL [--n N] [--quick] [--doc FILE]

1. generate the corpus (corpus.py) and journal it into DIR/home (bulk inserts, timed apart);
2. seal it (``sealer.seal_pending``, timed for reference);
3. index everything sealed into SQLite FTS5: ``indexer.index_pending`` from cursor 0, i.e.
   read segments, decrypt, build documents, write; documents/s over the wall time;
4. run the 20 queries of :func:`queries` through ``SearchIndex.search`` (page 1 of 20,
   newest first, with totals, facets and snippets, as the API does): one untimed pass,
   then ROUNDS timed passes in a rotated order; p50/p95 over every timed run;
5. the same two steps against the OpenSearch node at URL (alias ``bench``, 1 shard, 0
   replicas: a single node has nowhere to put a replica);
6. print the report; append it to FILE when given.

Results go to DIR/search-results.json as they come, so a failed step still reports.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
for path in (str(ROOT), str(HERE)):
    if path not in sys.path:
        sys.path.insert(0, path)

from bench import machine  # noqa: E402
from gen_corpus import generate_into_home  # noqa: E402

GOALS = {"opensearch_docs_per_s": 5_000, "p95_ms": 200}
ROUNDS = 5
QUICK_N, FULL_N = 20_000, 1_000_000


def queries(busiest: str) -> list[tuple[str, str]]:
    """(what it exercises, query): the fixed set, for a corpus whose busiest contact is ``busiest``."""
    return [
        ("word", "refund"),
        ("phrase", '"tracking number"'),
        ("boolean, parentheses", "invoice AND (payment OR credit)"),
        ("prefix", "deliv*"),
        ("French words (accents folded)", "remboursement commande"),
        ("French phrase with accent", '"numéro de suivi"'),
        ("German NOT", "Rechnung NOT bezahlt"),
        ("Spanish words", "reembolso pedido"),
        ("Portuguese words", "fatura encomenda"),
        ("Chinese 2-character word, no spaces", "退款"),
        ("Japanese 2-character word, no spaces", "配達"),
        ("Russian word", "возврат"),
        ("Arabic word", "استرداد"),
        ("from: filter only (busiest contact)", f"from:{busiest}"),
        ("contact: filter and word", f"contact:{busiest} refund"),
        ("channel: with a one-month after:/before: range", "channel:api after:2026-06-01 before:2026-07-01"),
        ("has:media, type: and a word", "has:media type:document invoice"),
        ("kind: OR kind:", "kind:edit OR kind:revoke"),
        ("channel:, prefix and after:", "channel:app deliv* after:2026-09-01"),
        ("emoji OR emoji", "🙏 OR 🎉"),
    ]


# --- steps ---------------------------------------------------------------------------------


def env_for(home: Path, **extra: str) -> dict[str, str]:
    return {"ARCHIVER_HOME": str(home), "ARCHIVER_POLICIES": str(ROOT / "policies"), **extra}


def open_services(env: dict[str, str]) -> Any:
    from archiver.config import Settings
    from archiver.services import Services

    return Services.open(Settings.from_env(env))


def step_corpus(home: Path, n: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    corpus, deliveries = generate_into_home(home, n, seed=1)
    return {"messages": n, "deliveries": deliveries, "kinds": dict(corpus.counts), "contacts": len(corpus.contacts),
            "busiest": corpus.busiest.phone, "seconds": time.perf_counter() - t0}


def step_seal(home: Path) -> dict[str, Any]:
    from archiver import sealer

    svc = open_services(env_for(home))
    try:
        t0 = time.perf_counter()
        records = sealer.seal_pending(svc)
        return {"records": records, "seconds": time.perf_counter() - t0}
    finally:
        svc.close()


def step_index(home: Path, search_url: str) -> dict[str, Any]:
    """Index everything sealed into ``search_url`` from an empty index with its cursor at 0."""
    from archiver import indexer
    from archiver.catalog import archive_id
    from archiver.search import IndexState

    svc = open_services(env_for(home, ARCHIVER_SEARCH_URL=search_url))
    try:
        svc.search.reset()
        with svc.sessions() as session:  # this archive's index at seq 0: index runs, not a rebuild
            svc.search.mark(IndexState(archive_id(session), 0))
        remote = search_url.startswith("http")
        server0, cpu0, t0 = server_cpu() if remote else None, time.process_time(), time.perf_counter()
        docs = indexer.index_pending(svc)
        secs = time.perf_counter() - t0
        server = server_cpu() if remote else None
        return {"docs": docs, "seconds": secs, "rate": docs / secs, "client_cpu": time.process_time() - cpu0,
                "server_cpu": None if server is None or server0 is None else server - server0,
                "load": os.getloadavg()}
    finally:
        svc.close()


def step_queries(home: Path, search_url: str, busiest: str) -> dict[str, Any]:
    """One untimed pass, then ROUNDS timed passes of every query, each round in another order."""
    svc = open_services(env_for(home, ARCHIVER_SEARCH_URL=search_url))
    try:
        table = queries(busiest)
        totals = [svc.search.search(q).total for _, q in table]
        times: list[list[float]] = [[] for _ in table]
        for r in range(ROUNDS):
            for k in range(len(table)):
                i = (k + r * 7) % len(table)
                t0 = time.perf_counter()
                svc.search.search(table[i][1])
                times[i].append((time.perf_counter() - t0) * 1000)
        every = sorted(ms for row in times for ms in row)
        return {"totals": totals, "ms": times, "p50": pct(every, 50), "p95": pct(every, 95), "max": every[-1]}
    finally:
        svc.close()


def pct(sorted_ms: list[float], p: int) -> float:
    """Nearest-rank percentile of an ascending list."""
    return sorted_ms[max(0, -(-len(sorted_ms) * p // 100) - 1)]


def server_cpu() -> float | None:
    """CPU seconds used so far by the OpenSearch JVM (BENCH_OS_PID), if known."""
    pid = os.environ.get("BENCH_OS_PID")
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, TypeError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(work: Path, n: int, opensearch: str) -> dict[str, Any]:
    results: dict[str, Any] = {"n": n, "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                               "opensearch_heap": os.environ.get("BENCH_OS_HEAP", "?")}
    home = work / "home"
    fts5, node = f"sqlite:///{home / 'search.db'}", f"{opensearch}/bench?replicas=0"
    steps = [
        ("corpus", lambda: step_corpus(home, n)),
        ("seal", lambda: step_seal(home)),
        ("index_fts5", lambda: step_index(home, fts5)),
        ("query_fts5", lambda: step_queries(home, fts5, results["corpus"]["busiest"])),
        ("index_opensearch", lambda: step_index(home, node)),
        ("query_opensearch", lambda: step_queries(home, node, results["corpus"]["busiest"])),
    ]
    for name, fn in steps:
        print(f"bench: search {name}", file=sys.stderr)
        try:
            results[name] = fn()
        except Exception as exc:  # report, do not hide: the table says it failed
            results[name] = {"error": f"{exc.__class__.__name__}: {exc}"}
        (work / "search-results.json").write_text(json.dumps(results, indent=2, default=str))
        if name in ("corpus", "seal") and "error" in results[name]:
            break
    return results


# --- report --------------------------------------------------------------------------------


def _met(ok: bool) -> str:
    return "yes" if ok else "**NO**"


def report(results: dict[str, Any]) -> str:
    m = machine()
    c, s = results.get("corpus", {}), results.get("seal", {})
    kinds = ", ".join(f"{k} {v:,}" for k, v in sorted(c.get("kinds", {}).items()))
    lines = [f"## {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, search (`scripts/bench search`, "
             f"{results['n']:,} messages)", "",
             f"- machine: `{m['uname']}`", f"- nproc: {m['nproc']}; CPU: {m['cpu']}; load average at the end of "
             f"OpenSearch indexing: {_load(results)}",
             f"- python: {m['python']}; commit {m['git']}"
             f"{' plus uncommitted changes under archiver/' if m['dirty'] else ''}",
             f"- corpus (`scripts/gen-corpus --n {results['n']} --seed 1`): {c.get('deliveries', 0):,} deliveries "
             f"({kinds}); {c.get('contacts', 0):,} contacts; nine languages + emoji; 2025-11 to 2026-10",
             f"- sealed: {s.get('records', 0):,} records in {s.get('seconds', 0):.0f} s (local store, SQLite catalog)",
             f"- OpenSearch 2.19.6 integ-test zip, single node on 127.0.0.1, heap {results.get('opensearch_heap')}, "
             "monthly indices of 1 shard, 0 replicas; SQLite FTS5 in one file",
             "- indexing = `indexer.index_pending` from cursor 0 over the whole archive (segments read and "
             "decrypted, documents built, written in batches of 2,000 while the next is built)",
             f"- queries: the 20 below, each run once untimed then {ROUNDS} times; p50/p95 over all "
             f"{20 * ROUNDS} timed runs of `SearchIndex.search` (page of 20, newest first, total, facets, snippets)",
             "", "| # | Measurement | Result | Goal | Met |", "|---|---|---|---|---|"]
    lines += [_index_row("1", "Indexing into SQLite FTS5", results.get("index_fts5"), None),
              _index_row("2", "Indexing into OpenSearch", results.get("index_opensearch"),
                         GOALS["opensearch_docs_per_s"]),
              _query_row("3", "Query latency, SQLite FTS5", results.get("query_fts5")),
              _query_row("4", "Query latency, OpenSearch", results.get("query_opensearch"))]
    lines += ["", *_query_table(results)]
    return "\n".join(lines) + "\n"


def _load(results: dict[str, Any]) -> str:
    load = (results.get("index_opensearch") or {}).get("load")
    return " / ".join(f"{x:.2f}" for x in load) if load else "?"


def _index_row(num: str, label: str, r: dict[str, Any] | None, goal: int | None) -> str:
    goal_text = f"{goal:,} docs/s" if goal else "-"
    if not r or "error" in r:
        return f"| {num} | {label} | failed: {(r or {}).get('error', 'not run')} | {goal_text} | **NO** |"
    cpu = f"; CPU: indexer {r['client_cpu']:.1f} s"
    if r.get("server_cpu"):
        cpu += f", OpenSearch {r['server_cpu']:.1f} s"
    met = _met(r["rate"] >= goal) if goal else "-"
    return (f"| {num} | {label} | {r['rate']:,.0f} docs/s ({r['docs']:,} documents in {r['seconds']:.1f} s{cpu}) | "
            f"{goal_text} | {met} |")


def _query_row(num: str, label: str, r: dict[str, Any] | None) -> str:
    if not r or "error" in r:
        error = (r or {}).get("error", "not run")
        return f"| {num} | {label} | failed: {error} | p95 < {GOALS['p95_ms']} ms | **NO** |"
    return (f"| {num} | {label} | p50 {r['p50']:.1f} ms, p95 {r['p95']:.1f} ms (max {r['max']:.0f} ms) | "
            f"p95 < {GOALS['p95_ms']} ms | {_met(r['p95'] < GOALS['p95_ms'])} |")


def _query_table(results: dict[str, Any]) -> list[str]:
    fts, osr = results.get("query_fts5") or {}, results.get("query_opensearch") or {}
    busiest = (results.get("corpus") or {}).get("busiest", "?")
    out = ["Per query: total hits (FTS5 / OpenSearch; they must agree) and median ms of the timed runs.", "",
           "| # | exercises | query | hits | FTS5 ms | OpenSearch ms |", "|---|---|---|---|---|---|"]
    for i, (what, q) in enumerate(queries(busiest)):
        hits = " / ".join(f"{r['totals'][i]:,}" if "totals" in r else "?" for r in (fts, osr))
        med = [f"{sorted(r['ms'][i])[len(r['ms'][i]) // 2]:.1f}" if "ms" in r else "?" for r in (fts, osr)]
        out.append(f"| {i + 1} | {what} | `{q}` | {hits} | {med[0]} | {med[1]} |")
    if "totals" in fts and "totals" in osr:
        out += ["", f"Totals agree on all 20 queries: {_met(fts['totals'] == osr['totals'])}."]
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--opensearch", required=True, help="base URL of the benchmark's own OpenSearch node")
    p.add_argument("--n", type=int)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--doc", type=Path)
    a = p.parse_args(argv)
    warnings.filterwarnings("ignore", message=".*is software WORM")  # root + file:// store: known, not news
    n = a.n or (QUICK_N if a.quick else FULL_N)
    results = run(a.work, n, a.opensearch.rstrip("/"))
    text = report(results)
    print(text)
    if a.doc is not None:
        with a.doc.open("a", encoding="utf-8") as fh:
            fh.write("\n" + text)
        print(f"bench: appended to {a.doc}", file=sys.stderr)


if __name__ == "__main__":
    main()
