"""Litigation hold benchmarks; driven by ``scripts/bench holds [--n N]`` (see docs/benchmarks.md).

  hold_bench.py local --work DIR --n N    rows H1-H4 on the local store (legal holds on files)
  hold_bench.py s3 --work DIR --n N       rows H1-H2 on the SeaweedFS scripts/bench starts
  hold_bench.py report --work DIR [--doc F]

Corpus: ``bench.delivery(i)`` for i < N (3 of 4 inbound ~1 KB text messages, 1 of 4 a
status; 500 contacts), with the word ``escrowagent`` in every 10th message. The custodian
hold names 50 of the 500 contacts (~10% of the records); the query hold is
``escrowagent`` (~10% of the messages, with their deliveries). Placing a hold is timed
from ``holds.create_hold`` until it returns: the decision sealed, the hold evaluated over
the whole corpus, every ``hold_applied`` decision sealed and applied, the legal hold ON
on every segment and checkpoint holding a held record. Sealing with holds: the same N
deliveries sealed into a fresh archive with no hold and into one with 100 active
custodian holds (one contact each), then one ``holds.sync`` (timed apart). The
certificate is ``hold_certificate.generate`` for the custodian hold's held set.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench  # noqa: E402

WORD = "escrowagent"
CUSTODIANS = [bench._contact(n)[0] for n in range(50)]


def corpus(services: Any, n: int, chunk: int = 5000) -> None:
    from archiver.journal import append_delivery

    for start in range(0, n, chunk):
        with services.sessions.begin() as session:
            for i in range(start, min(n, start + chunk)):
                body = bench.delivery(i)
                if i % 10 == 0 and i % 4 != 3:
                    body = body.replace(b"the courier", b"the " + WORD.encode())
                append_delivery(session, "webhook", body, {"signature": bench.signature(body), "remote": "127.0.0.1",
                                                           "content_type": "application/json"})


def _fresh(work: Path, name: str, n: int, **extra: str) -> Any:
    svc = bench.open_services(bench.archiver_env(work / name, **extra))
    corpus(svc, n)
    return svc


def _place(svc: Any, matter: str, label: str, **criteria: Any) -> dict[str, Any]:
    from archiver import holds

    records = bench.head_seq(svc)
    t0 = time.perf_counter()
    hold = holds.create_hold(svc, "bench", matter, label, holds.parse_criteria(**criteria), "bench")
    secs = time.perf_counter() - t0
    counts = holds.show(svc, hold)["counts"]
    return {"hold": hold, "seconds": secs, "corpus_records": records, "held": counts["records"],
            "segments": counts["segments"], "checkpoints": counts["checkpoints"]}


def placements(svc: Any, out: dict[str, Any], prefix: str) -> str:
    from archiver import holds, indexer

    bench.seal_timed(svc)
    indexer.index_pending(svc)  # a query hold reads the search index (not timed)
    matter = holds.create_matter(svc, "bench", "bench matter")
    out[f"{prefix}_custodian"] = c = _place(svc, matter, "custodians", custodians=CUSTODIANS)
    out[f"{prefix}_query"] = _place(svc, matter, "query", query=WORD)
    return str(c["hold"])


def cmd_local(work: Path, n: int) -> None:
    from archiver import hold_certificate, holds

    results: dict[str, Any] = {"n": n}
    svc = _fresh(work, "place-local", n)
    print(f"bench: H1-H2 placing holds on {n} deliveries (local store)", file=sys.stderr)
    custodian = placements(svc, results, "local")
    print("bench: H4 certificate", file=sys.stderr)
    t0 = time.perf_counter()
    doc = hold_certificate.generate(svc, custodian, "bench")
    results["certificate"] = {"seconds": time.perf_counter() - t0, "records": doc["certificate"]["record_count"],
                              "bytes": len(json.dumps(doc))}
    svc.close()
    print("bench: H3 sealing with 0 and 100 active holds", file=sys.stderr)
    for label, count in (("seal_0", 0), ("seal_100", 100)):
        svc = bench.open_services(bench.archiver_env(work / label))
        if count:
            matter = holds.create_matter(svc, "bench", "m")
            for k in range(count):
                holds.create_hold(svc, "bench", matter, f"h{k}", holds.parse_criteria([bench._contact(k)[0]]), "b")
        corpus(svc, n)
        from archiver import sealer

        start = bench.head_seq(svc)  # the hold decisions sealed already are not counted
        t0 = time.perf_counter()
        sealer.seal_pending(svc)
        secs = time.perf_counter() - t0
        before = bench.head_seq(svc) - start
        res: dict[str, Any] = {"records": before, "seconds": secs, "rate": before / secs}
        t0 = time.perf_counter()
        holds.sync(svc)
        res["sync_seconds"] = time.perf_counter() - t0
        with svc.sessions() as session:
            from sqlalchemy import func, select

            from archiver.catalog import HeldRecord
            res["held_rows"] = session.scalar(select(func.count()).select_from(HeldRecord)) or 0
        results[label] = res
        svc.close()
    save(work, results)


def cmd_s3(work: Path, n: int) -> None:
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
    print(f"bench: H1-H2 placing holds on {n} deliveries (SeaweedFS)", file=sys.stderr)
    try:
        svc = _fresh(work, "place-s3", n, ARCHIVER_STORE_URL=url)
        placements(svc, results, "s3")
        svc.close()
    except Exception as exc:  # noqa: BLE001 - the table says so
        results["s3_custodian"] = {"error": f"{exc.__class__.__name__}: {exc}"}
    save(work, results)


def load(work: Path) -> dict[str, Any]:
    p = work / "holds.json"
    return json.loads(p.read_text()) if p.exists() else {}


def save(work: Path, results: dict[str, Any]) -> None:
    (work / "holds.json").write_text(json.dumps(results, indent=1))


def _placed(r: dict[str, Any] | None) -> str:
    if not r:
        return "not measured"
    if "error" in r:
        return f"failed: {r['error']}"
    return (f"{r['seconds']:.2f} s ({r['held']:,} of {r['corpus_records']:,} records held, "
            f"{r['held'] / r['corpus_records']:.1%}; {r['segments']} segments + {r['checkpoints']} checkpoints "
            f"legal hold ON)")


def table(r: dict[str, Any]) -> list[str]:
    rows = ["| # | Measurement | Result |", "|---|---|---|"]
    rows.append(f"| H1a | Place a custodian hold (50 of 500 contacts), local store | {_placed(r.get('local_custodian'))} |")
    rows.append(f"| H1b | Place a custodian hold, SeaweedFS (Object Lock legal holds) | {_placed(r.get('s3_custodian'))} |")
    rows.append(f"| H2a | Place a query hold (`{WORD}`), local store | {_placed(r.get('local_query'))} |")
    rows.append(f"| H2b | Place a query hold, SeaweedFS | {_placed(r.get('s3_query'))} |")
    for key, label in (("seal_0", "H3a | Sealing, no hold"), ("seal_100", "H3b | Sealing, 100 active holds")):
        s = r.get(key)
        if s:
            rows.append(f"| {label} | {s['rate']:,.0f} records/s ({s['records']:,} records in {s['seconds']:.2f} s); "
                        f"then one hold sync {s['sync_seconds']:.2f} s ({s['held_rows']:,} held rows) |")
    if r.get("seal_0") and r.get("seal_100"):
        rows.append(f"| H3c | Sealing rate ratio 100 holds / none | {r['seal_100']['rate'] / r['seal_0']['rate']:.2f} x |")
    c = r.get("certificate")
    if c:
        rows.append(f"| H4 | Hold certificate of H1a's held set | {c['seconds']:.2f} s ({c['records']:,} records, "
                    f"{c['bytes'] / 1e6:.1f} MB file) |")
    return rows


def cmd_report(work: Path, doc: Path | None) -> None:
    r = load(work)
    m = bench.machine()
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"## {when}: litigation holds (small corpus: {r.get('n', 0):,} deliveries)", "",
             f"- machine: `{m['uname']}`", f"- nproc: {m['nproc']}; CPU: {m['cpu']}",
             f"- python: {m['python']}; commit {m['git']}{' plus uncommitted changes' if m['dirty'] else ''}",
             "- catalog SQLite, search FTS5; `scripts/bench holds --n N` (method: scripts/bench_lib/hold_bench.py)",
             f"- **small corpus**: {r.get('n', 0):,} deliveries, not the 1M records issue 9's targets are set "
             "for; these rows say what placing, sealing under holds and certificates cost at this size only", "",
             *table(r), ""]
    print("\n".join(lines))
    if doc is not None:
        with doc.open("a", encoding="utf-8") as fh:
            fh.write("\n" + "\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("cmd", choices=["local", "s3", "report"])
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--doc", type=Path)
    a = p.parse_args()
    if a.cmd == "local":
        cmd_local(a.work, a.n)
    elif a.cmd == "s3":
        cmd_s3(a.work, a.n)
    else:
        cmd_report(a.work, a.doc)


if __name__ == "__main__":
    main()
