"""Litigation hold and disposition benchmarks (issue 9); driven by ``scripts/bench holds [--n=N]``.

  hold_bench.py local --work DIR --n N [--seal-n M]  rows H1a-H2a, H3, H4, D1 (local store; M=0: no H3)
  hold_bench.py seal --work DIR --n N [--seal-n M]   row H3 alone (into DIR's holds.json)
  hold_bench.py s3 --work DIR --n N                  rows H1b-H2b on the SeaweedFS scripts/bench starts
  hold_bench.py report --work DIR [--doc F]

Corpus: the realistic one (``shared_corpus``: ``scripts/gen-corpus --n N`` with consent
opt-ins and template events, a 30-day retention policy), generated and sealed once under
``$BENCH_CORPUS_DIR`` and copied for each measurement.

* H1: place a custodian hold naming the busiest contacts whose messages are ~10% of the
  corpus (``shared_corpus.custodians``); H2: a query hold ``refund OR reembolso`` (~10% of
  the text). Timed from ``holds.create_hold`` until it returns: the decision sealed, the
  hold evaluated over the whole archive, every ``hold_applied`` decision sealed and applied,
  the legal hold ON on every segment, checkpoint and media object holding a held record.
  Local: on a copy of the sealed corpus. SeaweedFS: the corpus journal sealed (not timed)
  into a fresh bucket with Object Lock (COMPLIANCE), indexed (not timed), then the holds.
* H3: the same backlog (the first M deliveries of the corpus journal, default all) sealed
  into a fresh archive with no hold, into one with 100 active custodian holds (one contact
  each, spread over busy and quiet contacts), and again with no hold (the machine is
  shared: the baseline is taken before and after), each followed by one ``holds.sync``
  (timed apart). Wall and CPU seconds (the process and the sealer's forked writer).
* H4: ``hold_certificate.generate`` for a custodian hold holding ~100,000 records (the
  busiest contacts, as many as that takes; all records when the corpus has fewer).
* D1: ``archiver dispose --json`` as a process on a copy of the sealed corpus (every corpus
  record past its 30 days, no hold): keys destroyed, index entries removed, WORM objects
  deleted; records/s over the wall time, start-up included. The index's document count
  before and after says the entries went.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sqlite3
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench  # noqa: E402
import realistic  # noqa: E402
import shared_corpus as sc  # noqa: E402

QUERY = "refund OR reembolso"
CERT_RECORDS = 100_000
GOALS = {"place": 30.0, "ratio": 0.9, "dispose": 50_000, "certificate": 10.0}


def _place(svc: Any, matter: str, label: str, **criteria: Any) -> dict[str, Any]:
    from archiver import holds

    records = bench.head_seq(svc)
    t0, c0 = time.perf_counter(), time.process_time()
    hold = holds.create_hold(svc, "bench", matter, label, holds.parse_criteria(**criteria), "bench")
    secs, cpu = time.perf_counter() - t0, time.process_time() - c0
    counts = holds.show(svc, hold)["counts"]
    return {"hold": hold, "seconds": secs, "cpu": cpu, "corpus_records": records, "held": counts["records"],
            "segments": counts["segments"], "checkpoints": counts["checkpoints"], "media": counts["media_objects"]}


def placements(svc: Any, n: int, out: dict[str, Any], prefix: str) -> str:
    from archiver import holds

    matter = holds.create_matter(svc, "bench", "bench matter")
    people = sc.custodians(n, 0.10)
    print(f"bench: H1 custodian hold ({len(people)} custodians)", file=sys.stderr)
    out[f"{prefix}_custodian"] = _place(svc, matter, "custodians", custodians=people)
    out[f"{prefix}_custodian"]["custodians"] = len(people)
    print(f"bench: H2 query hold ({QUERY})", file=sys.stderr)
    out[f"{prefix}_query"] = _place(svc, matter, "query", query=QUERY)
    return matter


def certificate(svc: Any, n: int, matter: str) -> dict[str, Any]:
    from archiver import hold_certificate, holds

    share = min(1.0, CERT_RECORDS / max(bench.head_seq(svc), 1))  # a contact's records follow her messages
    people = sc.custodians(n, share)
    hold = holds.create_hold(svc, "bench", matter, "certificate", holds.parse_criteria(custodians=people), "bench")
    t0, c0 = time.perf_counter(), time.process_time()
    doc = hold_certificate.generate(svc, hold, "bench")
    return {"seconds": time.perf_counter() - t0, "cpu": time.process_time() - c0,
            "records": doc["certificate"]["record_count"],
            "custodians": len(people), "bytes": len(json.dumps(doc))}


def _docs(home: Path) -> int:
    with sqlite3.connect(f"file:{home / 'search.db'}?mode=ro", uri=True) as conn:
        return int(conn.execute("SELECT count(*) FROM docs").fetchone()[0])


def dispose(work: Path, n: int) -> dict[str, Any]:
    home = sc.copy_home(sc.sealed_home(n), work / "dispose")
    env = {**os.environ, **sc.env(home), "PYTHONWARNINGS": "ignore"}
    before = _docs(home)
    archiver = str(Path(sys.executable).with_name("archiver"))
    print("bench: D1 archiver dispose", file=sys.stderr)
    t0 = time.perf_counter()
    r = realistic.timed([archiver, "dispose", "--json"], env)
    wall = time.perf_counter() - t0
    run = json.loads(r["stdout"])
    svc = bench.open_services(sc.env(home))
    try:
        from sqlalchemy import func, select

        from archiver.catalog import DataKey, Record
        with svc.sessions() as session:
            keys = session.scalar(select(func.count()).select_from(DataKey).where(DataKey.destroyed_at.is_not(None)))
            total = session.scalar(select(func.count()).select_from(Record))
    finally:
        svc.close()
    return {"wall": wall, "cpu": r["cpu"], "rss_mib": r["rss_mib"], "records": run["records"],
            "keys": keys or 0, "catalog_records": total or 0, "docs_before": before, "docs_after": _docs(home),
            "worm_deleted": len((run.get("worm") or {}).get("deleted", []))}


def seal_rates(work: Path, n: int, seal_n: int | None) -> dict[str, Any]:
    from sqlalchemy import func, select

    from archiver import holds, sealer
    from archiver.catalog import HeldRecord, Journal

    out: dict[str, Any] = {}
    people = sc.spread(n, 100)
    for label, count in (("seal_0", 0), ("seal_100", 100), ("seal_0b", 0)):  # baseline before and after
        print(f"bench: H3 sealing with {count} active holds", file=sys.stderr)
        svc = bench.open_services(sc.env(work / label))
        matter = holds.create_matter(svc, "bench", "m")
        for k in range(count):
            holds.create_hold(svc, "bench", matter, f"h{k}", holds.parse_criteria([people[k]]), "b")
        sc.load_journal(svc, n)
        if seal_n is not None:  # keep the first seal_n corpus deliveries unsealed, mark the rest done
            from sqlalchemy import update
            with svc.sessions.begin() as session:
                first = session.scalar(select(func.min(Journal.id)).where(Journal.sealed.is_(False)))
                session.execute(update(Journal).where(Journal.id >= first + seal_n).values(sealed=True, body=None))
        start = bench.head_seq(svc)  # the hold decisions sealed already are not counted
        t0, c0 = time.perf_counter(), _cpu()
        sealer.seal_pending(svc)
        secs, cpu = time.perf_counter() - t0, _cpu() - c0
        sealed = bench.head_seq(svc) - start
        res: dict[str, Any] = {"records": sealed, "seconds": secs, "cpu": cpu, "rate": sealed / secs}
        t0 = time.perf_counter()
        holds.sync(svc)
        res["sync_seconds"] = time.perf_counter() - t0
        with svc.sessions() as session:
            res["held_rows"] = session.scalar(select(func.count()).select_from(HeldRecord)) or 0
        out[label] = res
        svc.close()
    return out


def _cpu() -> float:
    """CPU seconds of this process and its waited-for children (the sealer's forked writer)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def cmd_seal(work: Path, n: int, seal_n: int | None) -> None:
    results = load(work)
    results.update(seal_rates(work, n, seal_n))
    save(work, results)


def cmd_local(work: Path, n: int, seal_n: int | None) -> None:
    results: dict[str, Any] = {"n": n, "corpus": sc.summary(n)}
    svc = bench.open_services(sc.env(sc.copy_home(sc.sealed_home(n), work / "place-local")))
    print(f"bench: H1-H2 placing holds on the {n:,}-message corpus (local store)", file=sys.stderr)
    matter = placements(svc, n, results, "local")
    print("bench: H4 certificate", file=sys.stderr)
    results["certificate"] = certificate(svc, n, matter)
    svc.close()
    save(work, results)
    results["dispose"] = dispose(work, n)
    save(work, results)
    if seal_n != 0:
        results.update(seal_rates(work, n, seal_n))
        save(work, results)


def cmd_s3(work: Path, n: int) -> None:
    from archiver import indexer, sealer

    endpoint, bucket = os.environ["BENCH_S3_ENDPOINT"], "bench-holds"
    results = load(work)
    import boto3
    from botocore.config import Config

    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                      config=Config(s3={"addressing_style": "path"}))
    s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    s3.put_object_lock_configuration(Bucket=bucket, ObjectLockConfiguration={
        "ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 1}}})
    url = f"s3://{bucket}/x?endpoint_url={endpoint}&region=us-east-1"
    try:
        svc = bench.open_services(sc.env(work / "place-s3", ARCHIVER_STORE_URL=url))
        sc.load_journal(svc, n)
        print(f"bench: sealing the {n:,}-message corpus into SeaweedFS (not timed)", file=sys.stderr)
        t0 = time.perf_counter()
        sealer.seal_pending(svc)
        results["s3_seal_seconds"] = time.perf_counter() - t0
        indexer.index_pending(svc)
        print("bench: H1-H2 placing holds (SeaweedFS)", file=sys.stderr)
        placements(svc, n, results, "s3")
        svc.close()
    except Exception as exc:  # noqa: BLE001 - the table says so
        results.setdefault("s3_custodian", {"error": f"{exc.__class__.__name__}: {exc}"})
        results.setdefault("s3_query", {"error": f"{exc.__class__.__name__}: {exc}"})
    save(work, results)


def load(work: Path) -> dict[str, Any]:
    p = work / "holds.json"
    return json.loads(p.read_text()) if p.exists() else {}


def save(work: Path, results: dict[str, Any]) -> None:
    (work / "holds.json").write_text(json.dumps(results, indent=1))


def _met(ok: bool) -> str:
    return "yes" if ok else "**NO**"


def _placed(r: dict[str, Any] | None) -> tuple[str, str]:
    if not r:
        return "not measured", "-"
    if "error" in r:
        return f"failed: {r['error']}", "-"
    cpu = f"CPU {r['cpu']:.1f} s; " if "cpu" in r else ""
    return (f"{r['seconds']:.2f} s ({cpu}{r['held']:,} of {r['corpus_records']:,} records held, "
            f"{r['held'] / r['corpus_records']:.1%}; legal hold ON on {r['segments']} segments, "
            f"{r['checkpoints']} checkpoints, {r['media']} media objects)"), _met(r["seconds"] < GOALS["place"])


def table(r: dict[str, Any]) -> list[str]:
    rows = ["| # | Measurement | Result | Goal (1M corpus) | Met (at this size) |", "|---|---|---|---|---|"]
    c = r.get("local_custodian", {})
    for key, label in (("local_custodian", f"H1a | Place a custodian hold ({c.get('custodians', '?')} busiest "
                        "contacts), local store"),
                       ("s3_custodian", "H1b | Place the custodian hold, SeaweedFS (Object Lock legal holds)"),
                       ("local_query", f"H2a | Place a query hold (`{QUERY}`), local store"),
                       ("s3_query", "H2b | Place the query hold, SeaweedFS")):
        text, met = _placed(r.get(key))
        rows.append(f"| {label} | {text} | < {GOALS['place']:.0f} s | {met} |")
    for key, label in (("seal_0", "H3a | Sealing, no hold"), ("seal_100", "H3b | Sealing, 100 active holds"),
                       ("seal_0b", "H3a' | Sealing, no hold, again after H3b")):
        s = r.get(key)
        if s:
            cpu = f", CPU {s['cpu']:.1f} s" if "cpu" in s else ""
            rows.append(f"| {label} | {s['rate']:,.0f} records/s ({s['records']:,} records in {s['seconds']:.1f} s{cpu}); "
                        f"then one hold sync {s['sync_seconds']:.2f} s ({s['held_rows']:,} held rows) | | |")
    if r.get("seal_0") and r.get("seal_100"):
        base = [r[k] for k in ("seal_0", "seal_0b") if k in r]
        ratio = r["seal_100"]["rate"] / (sum(b["rate"] for b in base) / len(base))
        text = f"{ratio:.2f} x over wall time (against the mean of {len(base)} no-hold runs)"
        if all("cpu" in b for b in [*base, r["seal_100"]]):
            per_cpu = (r["seal_100"]["records"] / r["seal_100"]["cpu"]) / (
                sum(b["records"] / b["cpu"] for b in base) / len(base))
            text += f"; {per_cpu:.2f} x in records per CPU second"
        rows.append(f"| H3c | Sealing rate ratio 100 holds / none (same run) | {text} | >= 0.9 x | "
                    f"{_met(ratio >= GOALS['ratio'])} |")
    cert = r.get("certificate")
    if cert:
        cpu = f"CPU {cert['cpu']:.1f} s; " if "cpu" in cert else ""
        rows.append(f"| H4 | Hold certificate ({cert['custodians']} custodians) | {cert['seconds']:.2f} s "
                    f"({cpu}{cert['records']:,} records, {cert['bytes'] / 1e6:.1f} MB file) | < 10 s for 100,000 records | "
                    f"{_met(cert['seconds'] * CERT_RECORDS / max(cert['records'], 1) < GOALS['certificate'])} |")
    d = r.get("dispose")
    if d:
        rate = d["records"] / d["wall"] if d["wall"] else 0
        rows.append(f"| D1 | `archiver dispose` of the expired corpus (whole process) | {rate:,.0f} records/s "
                    f"({d['records']:,} records under {d['keys']:,} keys destroyed in {d['wall']:.1f} s, CPU "
                    f"{d['cpu']:.1f} s, peak RSS {d['rss_mib']:.0f} MiB; index documents {d['docs_before']:,} -> "
                    f"{d['docs_after']:,}; {d['worm_deleted']:,} WORM objects deleted) | >= 50,000 records/s | "
                    f"{_met(rate >= GOALS['dispose'])} |")
    return rows


def cmd_report(work: Path, doc: Path | None) -> None:
    r = load(work)
    m = bench.machine()
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    corpus = r.get("corpus", {})
    lines = [f"## {when}: litigation holds and disposition (realistic corpus, {r.get('n', 0):,} messages)", "",
             f"- machine: `{m['uname']}`", f"- nproc: {m['nproc']}; CPU: {m['cpu']}",
             f"- python: {m['python']}; commit {m['git']}{' plus uncommitted changes' if m['dirty'] else ''}",
             f"- corpus: `scripts/gen-corpus --n {r.get('n', 0)}` ({corpus.get('deliveries', 0):,} deliveries, "
             f"{corpus.get('contacts', 0):,} contacts) plus opt-ins and template events; retention 30 days "
             "(every corpus record expired); catalog SQLite, search FTS5",
             "- `scripts/bench holds --n=N` (method: scripts/bench_lib/hold_bench.py); SeaweedFS `weed mini` on "
             "the same machine; H3's baseline: the no-hold runs before and after H3b, same process",
             *([f"- H1b/H2b: the corpus was sealed into SeaweedFS first in {r['s3_seal_seconds']:.0f} s (not timed)"]
               if "s3_seal_seconds" in r else []),
             "", *table(r), ""]
    print("\n".join(lines))
    if doc is not None:
        with doc.open("a", encoding="utf-8") as fh:
            fh.write("\n" + "\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("cmd", choices=["local", "seal", "s3", "report"])
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--seal-n", type=int, help="H3: seal only the first M deliveries of the backlog (0: skip H3)")
    p.add_argument("--doc", type=Path)
    a = p.parse_args()
    if a.cmd == "local":
        cmd_local(a.work, a.n, a.seal_n)
    elif a.cmd == "seal":
        cmd_seal(a.work, a.n, a.seal_n)
    elif a.cmd == "s3":
        cmd_s3(a.work, a.n)
    else:
        cmd_report(a.work, a.doc)


if __name__ == "__main__":
    main()
