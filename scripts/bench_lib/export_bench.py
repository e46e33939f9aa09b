"""Export benchmarks; driven by ``scripts/bench export [--n=N]`` (see docs/benchmarks.md).

  export_bench.py run --work DIR --n N [--doc F]

Corpus: ``bench.delivery(i)`` (3 of 4 inbound ~1 KB text messages, 1 of 4 a status; 500
contacts) journaled and sealed into a fresh embedded archive (SQLite, local store) until the
chain holds at least N records (not timed). E1 times ``export.write_bundle`` for the first N
sealed records (``--format bundle``: no transcript.pdf, benchmarked apart by ``scripts/bench
transcript``): decrypting them, their inclusion proofs, the checkpoints, writing and
fsyncing every file, the signed manifest and the ``export`` audit record. The selection
itself (a search or a hold evaluation, benchmarked apart) is left out: ``selected_seqs`` is
replaced by "the first N sealed seqs". E2 times ``export_verify.verify_bundle`` (what
``archiver verify-export`` runs) over that bundle, E3 the standalone ``scripts/verify-export``
run on it as a subprocess (interpreter start included); E0, the baseline of the same run, only
reads and parses (``json.loads``) every line of the bundle's .jsonl files in one process. Goals (issue 10): E1 100,000 records in
under 60 s, E2 at least 50,000 records/s; at a smaller N the goals are not judged.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench  # noqa: E402

GOAL_N, GOAL_EXPORT_SECONDS, GOAL_VERIFY_RATE = 100_000, 60.0, 50_000.0


def measure(work: Path, n: int) -> dict[str, Any]:
    from archiver import export, export_verify

    svc = bench.open_services(bench.archiver_env(work / "home"))
    deliveries = 0
    while bench.head_seq(svc) < n:
        step = max(1000, (n - bench.head_seq(svc)) // 2 + 1)
        print(f"bench: journaling and sealing {step} deliveries", file=sys.stderr)
        _journal(svc, deliveries, step)
        deliveries += step
        bench.seal_timed(svc)
    original = export.selected_seqs
    export.selected_seqs = lambda services, session, sel, through: list(range(1, min(n, through) + 1))
    out = work / "bundle"
    try:
        print(f"bench: E1 exporting {n} records", file=sys.stderr)
        t0 = time.perf_counter()
        done = export.write_bundle(svc, export.Selection(query="bench"), out, "bench", formats=("bundle",))
        export_seconds = time.perf_counter() - t0
    finally:
        export.selected_seqs = original
    svc.close()
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"bench: E2 verifying the bundle ({done.counts['records']} records)", file=sys.stderr)
    t0, c0 = time.perf_counter(), _cpu()
    problems, summary = export_verify.verify_bundle(out)
    verify_seconds, verify_cpu = time.perf_counter() - t0, _cpu() - c0
    print("bench: E3 the standalone scripts/verify-export", file=sys.stderr)
    t0, c0 = time.perf_counter(), _cpu()
    alone = subprocess.run([sys.executable, str(HERE.parent / "verify-export"), str(out)], capture_output=True,
                           text=True, check=False)
    standalone_seconds, standalone_cpu = time.perf_counter() - t0, _cpu() - c0
    print("bench: E0 baseline: read and json.loads every line of the bundle's .jsonl files", file=sys.stderr)
    t0, c0 = time.perf_counter(), _cpu()
    parsed = _parse_all(out)
    baseline_seconds, baseline_cpu = time.perf_counter() - t0, _cpu() - c0
    return {"baseline_seconds": baseline_seconds, "baseline_lines": parsed, "baseline_cpu": baseline_cpu,
            "verify_cpu": verify_cpu, "standalone_cpu": standalone_cpu,
            "workers": _cores(), "standalone_seconds": standalone_seconds, "standalone_exit": alone.returncode,
            "n": n, "records": done.counts["records"], "checkpoints": done.counts["checkpoints"],
            "export_seconds": export_seconds, "bundle_bytes": size, "verify_seconds": verify_seconds,
            "verify_problems": len(problems), "verified_records": summary.get("records")}


def _parse_all(folder: Path) -> int:
    """The floor under any stdlib verifier in one process: every .jsonl line read and parsed."""
    import json

    lines = 0
    for path in sorted(folder.rglob("*.jsonl")):
        for line in path.read_bytes().split(b"\n"):
            if line:
                json.loads(line)
                lines += 1
    return lines


def _cpu() -> float:
    """CPU seconds (user + system) of this process and of its children reaped so far."""
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0))


def _journal(svc: Any, first: int, count: int, chunk: int = 5000) -> None:
    from archiver.journal import append_delivery

    for start in range(first, first + count, chunk):
        with svc.sessions.begin() as session:
            for i in range(start, min(first + count, start + chunk)):
                body = bench.delivery(i)
                append_delivery(session, "webhook", body, {"signature": bench.signature(body), "remote": "127.0.0.1",
                                                           "content_type": "application/json"})


def _goal(ok: bool, judged: bool) -> str:
    return ("yes" if ok else "**NO**") if judged else "not judged (N below 100,000)"


def report(r: dict[str, Any], doc: Path | None) -> None:
    m = bench.machine()
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    judged = r["records"] >= GOAL_N
    rate = r["records"] / r["export_seconds"] if r["export_seconds"] else 0.0
    vrate = r["records"] / r["verify_seconds"] if r["verify_seconds"] else 0.0
    srate = r["records"] / r["standalone_seconds"] if r["standalone_seconds"] else 0.0
    per_100k = r["export_seconds"] * GOAL_N / r["records"] if r["records"] else 0.0
    lines = [f"## {when}: exports ({r['records']:,} records)", "",
             f"- machine: `{m['uname']}`", f"- nproc: {m['nproc']}; CPU: {m['cpu']}",
             f"- python: {m['python']}; commit {m['git']}{' plus uncommitted changes' if m['dirty'] else ''}",
             "- catalog SQLite, local store; `scripts/bench export --n=N` (method: scripts/bench_lib/export_bench.py)",
             "",
             f"- both verifiers check records.jsonl in {r['workers']} processes (one per usable core, at most 4)",
             "",
             "| # | Measurement | Result | Goal met |", "|---|---|---|---|",
             f"| E0 | baseline: read and `json.loads` every line of the bundle's .jsonl files ({r['baseline_lines']:,} "
             f"lines, one process) | {r['records'] / r['baseline_seconds'] if r['baseline_seconds'] else 0:,.0f} "
             f"records/s ({r['baseline_seconds']:.2f} s; {r['baseline_cpu']:.2f} CPU s) | - |",
             f"| E1 | Export bundle with proofs, {r['records']:,} records ({r['checkpoints']} checkpoints, "
             f"{r['bundle_bytes'] / 1e6:.1f} MB) | {r['export_seconds']:.2f} s ({rate:,.0f} records/s; "
             f"{per_100k:.1f} s per 100,000 at this rate) | {_goal(r['export_seconds'] < GOAL_EXPORT_SECONDS, judged)} "
             "(100,000 in < 60 s) |",
             f"| E2 | verify-export of that bundle | {vrate:,.0f} records/s ({r['verify_seconds']:.2f} s, "
             f"{r['verify_cpu']:.2f} CPU s, {r['verify_problems']} problems) | {_goal(vrate >= GOAL_VERIFY_RATE, judged)} (>= 50,000 records/s) |",
             f"| E3 | standalone scripts/verify-export of that bundle | {srate:,.0f} records/s "
             f"({r['standalone_seconds']:.2f} s, {r['standalone_cpu']:.2f} CPU s, exit {r['standalone_exit']}) | "
             f"{_goal(srate >= GOAL_VERIFY_RATE, judged)} (>= 50,000 records/s) |",
             ""]
    print("\n".join(lines))
    if doc is not None:
        with doc.open("a", encoding="utf-8") as fh:
            fh.write("\n" + "\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("cmd", choices=["run"])
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--n", type=int, default=5000)
    p.add_argument("--doc", type=Path)
    a = p.parse_args()
    report(measure(a.work, a.n), a.doc)


if __name__ == "__main__":
    main()
