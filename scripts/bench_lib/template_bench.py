"""Template-review benchmarks; driven by ``scripts/bench templates [--n=N]``.

  template_bench.py --work DIR --n N [--doc docs/benchmarks.md]

Corpus (local store, SQLite catalog): N capture-API template sends (``capture_message``
deliveries, 500 contacts, 20 templates) and, per template, an APPROVED status, a PAUSED
status and its unpause a minute later, a category change from UTILITY to MARKETING on every
fifth. Sealed first (not timed). Then timed:

* T1: the first (full) template review: every send bound to its snapshot and checked;
* T2: an incremental review after 1,000 more sends (sealed, not timed).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench  # noqa: E402

TS = 1780001000
TEMPLATES = 20


def send(i: int) -> bytes:
    who = bench._contact(i % 500)[0]
    return json.dumps({"request": {"messaging_product": "whatsapp", "to": who, "type": "template",
                                   "template": {"name": f"tpl_{i % TEMPLATES}", "language": {"code": "en_GB"}}},
                       "response": {"messaging_product": "whatsapp", "contacts": [{"input": who, "wa_id": who}],
                                    "messages": [{"id": f"wamid.bench.t{i}"}]},
                       "sender": "bench", "sent_at": TS + i, "phone_number_id": "1099"}).encode()


def event(fld: str, value: dict[str, Any], at: int) -> bytes:
    return json.dumps({"object": "whatsapp_business_account", "entry": [
        {"id": "2099", "time": at, "changes": [{"field": fld, "value": value}]}]}).encode()


def events() -> list[bytes]:
    out = []
    for t in range(TEMPLATES):
        ids = {"message_template_id": 1500440000000000 + t, "message_template_name": f"tpl_{t}",
               "message_template_language": "en_GB"}
        for status, at in (("APPROVED", TS - 100), ("PAUSED", TS + 1000 * t), ("APPROVED", TS + 1000 * t + 60)):
            out.append(event("message_template_status_update",
                             {**ids, "event": status, "reason": "NONE", "message_template_category": "UTILITY"}, at))
        if t % 5 == 0:
            out.append(event("template_category_update",
                             {**ids, "previous_category": "UTILITY", "new_category": "MARKETING"}, TS + 5000))
    return out


def journal(services: Any, first: int, last: int, chunk: int = 5000) -> None:
    from archiver.journal import append_delivery

    for start in range(first, last, chunk):
        with services.sessions.begin() as session:
            for i in range(start, min(last, start + chunk)):
                append_delivery(session, "capture_message", send(i), {"actor": "bench", "remote": "127.0.0.1"})


def run(work: Path, n: int) -> dict[str, Any]:
    from archiver import sealer, template_review
    from archiver.journal import append_delivery

    svc = bench.open_services(bench.archiver_env(work / "templates"))
    with svc.sessions.begin() as session:
        for raw in events():
            append_delivery(session, "webhook", raw, {"signature": bench.signature(raw), "remote": "127.0.0.1",
                                                      "content_type": "application/json"})
    journal(svc, 0, n)
    sealer.seal_pending(svc)
    out: dict[str, Any] = {"n": n, "records": bench.head_seq(svc)}
    t0 = time.perf_counter()
    full = template_review.review(svc)
    out["full"] = {"seconds": time.perf_counter() - t0, **full}
    journal(svc, n, n + 1000)
    sealer.seal_pending(svc)
    t0 = time.perf_counter()
    inc = template_review.review(svc)
    out["incremental"] = {"seconds": time.perf_counter() - t0, **inc}
    svc.close()
    return out


def table(r: dict[str, Any]) -> list[str]:
    f, i = r["full"], r["incremental"]
    per_million = f["seconds"] * 1_000_000 / max(r["records"], 1)
    return ["| # | Measurement | Result | Goal (1M corpus) | Met |", "|---|---|---|---|---|",
            f"| T1 | Full template review ({r['records']:,} records) | {f['seconds']:.2f} s ({f['template_sends']:,} "
            f"template sends, {f['findings']:,} findings); linear to 1M records: ~{per_million:,.0f} s | < 60 s | "
            f"{'yes' if per_million < 60 else '**NO**'} |",
            f"| T2 | Incremental review (1,000 new sends) | {i['seconds']:.2f} s ({i['template_sends']:,} sends, "
            f"{i['findings']:,} findings) | < 1 s | {'yes' if i['seconds'] < 1 else '**NO**'} |"]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--doc", type=Path)
    a = p.parse_args()
    r = run(a.work, a.n)
    m = bench.machine()
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"## {when}: template review (small corpus: {a.n:,} sends)", "",
             f"- machine: `{m['uname']}`", f"- nproc: {m['nproc']}; CPU: {m['cpu']}",
             f"- python: {m['python']}; commit {m['git']}{' plus uncommitted changes' if m['dirty'] else ''}",
             "- catalog SQLite, local store; `scripts/bench templates --n=N` (method: scripts/bench_lib/template_bench.py)",
             f"- **small corpus**: {a.n:,} sends, not the 1,000,000 messages issue 11's targets are set for", "",
             *table(r), ""]
    print("\n".join(lines))
    if a.doc is not None:
        with a.doc.open("a", encoding="utf-8") as fh:
            fh.write("\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
