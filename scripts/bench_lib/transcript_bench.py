"""Transcript rendering benchmark; driven by ``scripts/bench transcript [--n N] [--mem N]``.

Rows T1-T4 (see docs/benchmarks.md):

- T1 plain WeasyPrint: the transcript's HTML for N messages (one document, as
  ``archiver.transcript`` builds it) through ``weasyprint.HTML(...).write_pdf()``, no PDF/A,
  no signature: the baseline, in the same run.
- T2 transcript: ``transcript.render`` of the same N messages in one pass (PDF/A-3b with its
  attachment, signed): pages/s and the ratio to T1 (goal >= 0.8x).
- T3 chunked: the same, in parts of 500 events rendered by 2 worker processes, merged with
  pikepdf, numbered, signed (goal >= 1.6x T1 on 2 cores).
- T4 memory: peak RSS (``ru_maxrss`` of this process and, separately, the largest worker) of
  a fresh process rendering M messages chunked, against M/4 ("flat": within x1.25).

Messages: 2 of 3 from the customer, 1 of 3 from the business (API), 40-400 characters of
text, one conversation per 50 messages.

  transcript_bench.py run --n N --mem M [--doc docs/benchmarks.md]
  transcript_bench.py mem --n M          (the child of T4: prints {"self_kb", "children_kb"})
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

WORDS = ("refund deposit invoice shipping parcel order delivered tomorrow thanks please "
         "confirm address payment received account update schedule meeting").split()


def lines(n: int) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        kind = "outbound" if i % 3 == 2 else "message"
        text = " ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(6 + (i * 13) % 60))
        out.append({"seq": i + 1, "hash": f"{i + 1:064x}", "kind": kind, "type": "text",
                    "contact": f"1555{i // 50:07d}", "occurred_at": f"2026-06-01T{(i // 3600) % 24:02d}:"
                    f"{(i // 60) % 60:02d}:{i % 60:02d}+00:00", "links": {}, "shredded": False, "media": [],
                    "content": {"message": {"id": f"wamid.{i}", "type": "text", "text": {"body": text}},
                                "contact": {"profile": {"name": f"Customer {i // 50}"}}}})
    return out


COVER = {"selection": {"by": "query", "query": "bench"}, "through_seq": 0,
         "counts": {"records": 0, "shredded": 0, "threads": 0, "media_files": 0, "media_missing": 0}}


def _pages(pdf: bytes) -> int:
    import io

    import pikepdf

    with pikepdf.open(io.BytesIO(pdf)) as doc:
        return len(doc.pages)


def run(n: int, mem: int, home: Path) -> dict[str, Any]:
    import weasyprint  # type: ignore[import-untyped]

    from archiver import transcript
    from archiver.pdf import render as pdf_render, sign

    tz = transcript.zone("UTC")
    signer = sign.load_signer(home, env={})
    data = lines(n)
    threads, others = transcript.build(data, tz=tz)
    html = pdf_render.environment().get_template(transcript.TEMPLATE).render(
        title="bench", numbered=True, cover=dict(COVER, selection="bench", tz="UTC"),
        threads=[t.as_dict() for t in threads], others=[e.as_dict() for e in others])
    rows: dict[str, Any] = {"n": n}

    t0 = time.perf_counter()
    plain = weasyprint.HTML(string=html, base_url=str(pdf_render.TEMPLATES)).write_pdf()
    rows["plain"] = {"s": time.perf_counter() - t0, "pages": _pages(plain)}

    t0 = time.perf_counter()
    one = transcript.render(data, cover=COVER, tz=tz, signer=signer, chunk_events=n + 1)
    rows["single"] = {"s": time.perf_counter() - t0, "pages": _pages(one)}

    t0 = time.perf_counter()
    parts = transcript.render(data, cover=COVER, tz=tz, signer=signer, chunk_events=500, workers=2)
    rows["chunked"] = {"s": time.perf_counter() - t0, "pages": _pages(parts)}
    for key in ("plain", "single", "chunked"):
        rows[key]["pages_per_s"] = rows[key]["pages"] / rows[key]["s"]
    rows["single"]["ratio"] = rows["single"]["pages_per_s"] / rows["plain"]["pages_per_s"]
    rows["chunked"]["ratio"] = rows["chunked"]["pages_per_s"] / rows["plain"]["pages_per_s"]
    rows["mem"] = {str(m): _mem_child(m, home) for m in (mem // 4, mem)}
    return rows


def _mem_child(n: int, home: Path) -> dict[str, Any]:
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, __file__, "mem", "--n", str(n), "--home", str(home)],  # noqa: S603
                         capture_output=True, text=True, check=True)
    got: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    got["s"] = time.perf_counter() - t0
    return got


def mem(n: int, home: Path) -> dict[str, Any]:
    from archiver import transcript
    from archiver.pdf import sign

    signer = sign.load_signer(home, env={})
    pdf = transcript.render(lines(n), cover=COVER, tz=transcript.zone("UTC"), signer=signer,
                            chunk_events=500, workers=2)
    return {"n": n, "pages": _pages(pdf), "self_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            "children_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}


def main() -> None:
    warnings.simplefilter("ignore")
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=("run", "mem"))
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--mem", type=int, default=10000)
    ap.add_argument("--home", type=Path)
    ap.add_argument("--doc", type=Path)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="transcript-bench-") as tmp:
        home = a.home or Path(tmp)
        os.environ.pop("ARCHIVER_REPORT_SIGNER", None)
        result = run(a.n, a.mem, home) if a.mode == "run" else mem(a.n, home)
    if a.mode == "mem":
        print(json.dumps(result))
        return
    text = report(result)
    print(text)
    if a.doc:
        with open(a.doc, "a", encoding="utf-8") as fh:
            fh.write("\n" + text)


def report(r: dict[str, Any]) -> str:
    import platform

    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cores = len(os.sched_getaffinity(0))
    small, big = (r["mem"][k] for k in sorted(r["mem"], key=int))
    flat = big["children_kb"] <= 1.25 * small["children_kb"] and big["self_kb"] <= 1.25 * small["self_kb"]
    rows = [
        f"## transcript PDF: {when}",
        "",
        f"Machine: {platform.node()}, {platform.machine()}, {cores} cores, Python {platform.python_version()}; "
        f"{r['n']} messages (T1-T3), `scripts/bench transcript` (`scripts/bench_lib/transcript_bench.py`).",
        "",
        "| Row | What | Pages | Seconds | Pages/s | vs T1 | Goal |",
        "|---|---|---|---|---|---|---|",
        f"| T1 | plain WeasyPrint, same HTML (baseline) | {r['plain']['pages']} | {r['plain']['s']:.1f} | "
        f"{r['plain']['pages_per_s']:.2f} | 1.00x | |",
        f"| T2 | transcript.render, one pass (PDF/A-3b + attachment + signature) | {r['single']['pages']} | "
        f"{r['single']['s']:.1f} | {r['single']['pages_per_s']:.2f} | {r['single']['ratio']:.2f}x | "
        f">= 0.8x: {'yes' if r['single']['ratio'] >= 0.8 else '**NO**'} |",
        f"| T3 | chunked: parts of 500 events, 2 workers, pikepdf merge, numbered, signed | "
        f"{r['chunked']['pages']} | {r['chunked']['s']:.1f} | {r['chunked']['pages_per_s']:.2f} | "
        f"{r['chunked']['ratio']:.2f}x | >= 1.6x: {'yes' if r['chunked']['ratio'] >= 1.6 else '**NO**'} |",
        f"| T4 | peak RSS, chunked: {small['n']} messages ({small['pages']} pages) vs {big['n']} ({big['pages']} pages) | "
        f"| {small['s']:.0f} / {big['s']:.0f} | | parent {small['self_kb'] // 1024} -> {big['self_kb'] // 1024} MB, "
        f"largest worker {small['children_kb'] // 1024} -> {big['children_kb'] // 1024} MB | "
        f"flat (x1.25): {'yes' if flat else '**NO**'} |",
        "",
    ]
    return "\n".join(rows)


if __name__ == "__main__":
    main()
