"""The realistic workload, as an operator meets it: whole commands timed as processes.

Generates a scripts/gen-corpus home of N messages (default 100,000), then runs, each as its own
process with start-up included: a no-op baseline (``python -c pass``: interpreter start-up),
``archiver --help`` (the CLI's import cost), ``archiver seal``, ``archiver verify`` and
``archiver index`` (SQLite FTS5 in the home). For each: wall seconds, CPU seconds (user+sys of
the process), peak RSS (``wait4``), and the rate in records or documents per second. Then the
storage: catalog bytes (with -wal), WORM bytes, catalog bytes per message and the catalog/WORM
ratio, and the journal table's share when SQLite's ``dbstat`` is compiled in.

  realistic.py --work DIR [--n N] [--json OUT]

Prints a table (markdown) to stdout and the figures as JSON to OUT when given.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
GOALS = {"seal": 20_000, "verify": 100_000, "index": 10_000, "catalog_ratio": 0.25}


def timed(argv: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run ``argv`` to completion; wall and CPU seconds, peak RSS in MiB, its output."""
    # Output to files, not pipes: a child printing more than a pipe holds would block until read.
    with tempfile.TemporaryFile() as fo, tempfile.TemporaryFile() as fe:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, stdout=fo, stderr=fe)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        fo.seek(0)
        fe.seek(0)
        out, err = fo.read().decode(errors="replace"), fe.read().decode(errors="replace")
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}: {(out + err)[-2000:]}")
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "rss_mib": usage.ru_maxrss / 1024,
            "out": out.strip().splitlines()[-1] if out.strip() else "", "stdout": out}


def count(out: str) -> int:
    """The number in 'sealed 251,720 records' / 'ok: 251,720 records in ...' / 'indexed N documents'."""
    m = re.search(r"(\d[\d,]*) (?:record|document)", out)
    return int(m.group(1).replace(",", "")) if m else 0


def storage(home: Path, messages: int) -> dict[str, Any]:
    db = home / "catalog.db"
    catalog = sum(p.stat().st_size for p in home.glob("catalog.db*") if p.is_file())
    worm = sum(p.stat().st_size for p in (home / "worm").rglob("*") if p.is_file())
    out: dict[str, Any] = {"catalog_bytes": catalog, "worm_bytes": worm, "per_message": catalog / messages,
                           "ratio": catalog / worm if worm else 0.0}
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            rows = conn.execute("SELECT name, SUM(pgsize), SUM(unused) FROM dbstat GROUP BY name").fetchall()
            out["free_pages"] = conn.execute("PRAGMA freelist_count").fetchone()[0]
        sizes = {name: (size, unused) for name, size, unused in rows}
        out["journal_bytes"], out["journal_unused"] = sizes.get("journal", (0, 0))
        out["records_bytes"] = sizes.get("records", (0, 0))[0]
    except sqlite3.Error:
        pass  # no dbstat in this SQLite build: totals only
    return out


def run(work: Path, n: int) -> dict[str, Any]:
    home = work / f"realistic-{n}"
    env = {**os.environ, "ARCHIVER_HOME": str(home), "PYTHONWARNINGS": "ignore"}
    env.pop("ARCHIVER_CATALOG_URL", None)
    env.pop("ARCHIVER_STORE_URL", None)
    env.pop("ARCHIVER_SEARCH_URL", None)
    py = sys.executable
    archiver = str(Path(py).with_name("archiver"))
    print(f"bench: generating the realistic corpus ({n:,} messages) in {home}", file=sys.stderr)
    gen = timed([py, str(HERE / "gen_corpus.py"), "--home", str(home), "--n", str(n)], env)
    res: dict[str, Any] = {"n": n, "gen": gen, "noop": timed([py, "-c", "pass"], env),
                           "cli_start": timed([archiver, "--help"], env)}
    for step in ("seal", "verify", "index"):
        print(f"bench: archiver {step}", file=sys.stderr)
        r = timed([archiver, step], env)
        r["count"] = count(r["out"])
        res[step] = r
    res["storage"] = storage(home, n)
    return res


def table(res: dict[str, Any]) -> str:
    lines = [f"Realistic corpus: scripts/gen-corpus --n {res['n']:,}; whole commands timed as processes "
             "(start-up included), local store, SQLite catalog, FTS5 index.", "",
             "| step | count | wall s | CPU s | rate /s (wall) | goal | peak RSS MiB |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for key, label in (("noop", "no-op baseline (`python -c pass`)"), ("cli_start", "`archiver --help` (start-up)")):
        r = res[key]
        lines.append(f"| {label} | | {r['wall']:.2f} | {r['cpu']:.2f} | | | {r['rss_mib']:.0f} |")
    for step in ("seal", "verify", "index"):
        r = res[step]
        rate = r["count"] / r["wall"] if r["wall"] else 0
        lines.append(f"| `archiver {step}` | {r['count']:,} | {r['wall']:.1f} | {r['cpu']:.1f} | {rate:,.0f} | "
                     f"{GOALS[step]:,} | {r['rss_mib']:.0f} |")
    s = res["storage"]
    lines += ["", f"Storage after sealing: catalog {s['catalog_bytes'] / 1e6:.1f} MB, WORM {s['worm_bytes'] / 1e6:.1f} MB, "
              f"catalog {s['per_message']:.0f} bytes/message, catalog/WORM {s['ratio']:.0%} (goal "
              f"<= {GOALS['catalog_ratio']:.0%})."]
    if "journal_bytes" in s:
        lines.append(f"Journal table {s['journal_bytes'] / 1e6:.1f} MB of which {s['journal_unused'] / 1e6:.1f} MB "
                     f"unused space in its pages; records table {s['records_bytes'] / 1e6:.1f} MB; "
                     f"{s['free_pages']:,} free pages.")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    res = run(args.work, args.n)
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    print(table(res))


if __name__ == "__main__":
    main()
