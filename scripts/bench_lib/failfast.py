"""Fail-fast timings for scripts/bench: how long a call takes to fail or to get through.

The tests assert what happens (a StoreError, SearchUnavailable, a commit that completes); the
time it takes is measured here, where a slow machine gives a number instead of a red test:

- each store call against an S3 endpoint where nothing listens, until it raises StoreError;
- each search call against an OpenSearch URL where nothing listens, until SearchUnavailable;
- a journal append under gevent while the event loop never falls idle (a flood of
  connections), until it is committed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

GOALS = {"s3_unreachable": 10.0, "opensearch_unreachable": 10.0, "busy_loop_commit": 1.0}

BUSY_LOOP = """
from gevent import monkey
monkey.patch_all()
import json, sys, time
import gevent
from archiver.config import Settings
from archiver.services import Services

svc = Services.open(Settings.from_env(json.loads(sys.argv[1])))
def busy():  # an event loop that never falls idle
    while True:
        gevent.sleep(0)
gevent.spawn(busy)
start = time.monotonic()
append = gevent.spawn(svc.journal.append, "webhook", b"{}", {})
append.join(timeout=60)
print(json.dumps({"done": append.successful(), "seconds": time.monotonic() - start}))
"""


def _slowest(calls: dict[str, Callable[[], Any]], expected: type[BaseException]) -> dict[str, Any]:
    """Run each call, which must raise ``expected``; return the seconds of each and the slowest."""
    seconds = {}
    for name, call in calls.items():
        started = time.monotonic()
        try:
            call()
        except expected:
            seconds[name] = round(time.monotonic() - started, 3)
        else:
            raise AssertionError(f"{name} did not raise {expected.__name__}")
    return {"seconds": seconds, "max": max(seconds.values())}


def s3_unreachable() -> dict[str, Any]:
    """Seconds until each store call fails against a closed port."""
    from archiver.errors import StoreError
    from archiver.store import assert_worm, open_store

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "unused")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "unused")
    store = open_store("s3://archive?endpoint_url=http://127.0.0.1:1&region=us-east-1")
    until = datetime.now(timezone.utc) + timedelta(days=1)
    return _slowest({"ping": store.ping, "put_locked": lambda: store.put_locked("segments/x/1.jsonl.gz", b"x", until),
                     "list": lambda: list(store.list("")), "assert_worm": lambda: assert_worm(store)}, StoreError)


def opensearch_unreachable() -> dict[str, Any]:
    """Seconds until each search call fails against a closed port."""
    from archiver.errors import SearchUnavailable
    from archiver.search import open_index

    index = open_index("http://127.0.0.1:9/bench-unreachable")
    doc = {"seq": 1, "time": 1780001000, "text": "x", "kind": "message"}
    return _slowest({"ping": index.ping, "search": lambda: index.search("x"), "index": lambda: index.index([doc]),
                     "max_seq": index.max_seq, "conversation": lambda: index.conversation("4479460001234")},
                    SearchUnavailable)


def busy_loop_commit(root: Path, env: dict[str, str]) -> dict[str, Any]:
    """Seconds a journal append under gevent waits for an event loop that never idles (run from ``root``)."""
    out = subprocess.run([sys.executable, "-c", BUSY_LOOP, json.dumps(env)], capture_output=True, text=True,
                         timeout=120, cwd=root)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    got = json.loads(out.stdout.strip().splitlines()[-1])
    if not got["done"]:
        raise RuntimeError("the append did not commit within 60 s")
    return {"seconds": round(got["seconds"], 3), "max": round(got["seconds"], 3)}


def measure(root: Path, env: dict[str, str]) -> dict[str, Any]:
    """Every fail-fast timing (``env``: ARCHIVER_* of a scratch archive); a failed one records its error."""
    out: dict[str, Any] = {}
    steps: dict[str, Callable[[], dict[str, Any]]] = {
        "s3_unreachable": s3_unreachable, "opensearch_unreachable": opensearch_unreachable,
        "busy_loop_commit": lambda: busy_loop_commit(root, env)}
    for name, step in steps.items():
        try:
            out[name] = step()
        except Exception as exc:  # report, do not hide: the table says it failed
            out[name] = {"error": f"{exc.__class__.__name__}: {exc}"}
    return out


def lines(results: dict[str, Any]) -> list[str]:
    """Markdown table rows of the fail-fast timings (empty when not measured)."""
    got = results.get("failfast")
    if not got:
        return []
    labels = {"s3_unreachable": "S3 endpoint unreachable: slowest store call to raise StoreError",
              "opensearch_unreachable": "OpenSearch unreachable: slowest search call to raise SearchUnavailable",
              "busy_loop_commit": "Journal append under gevent with a never-idle event loop, until committed"}
    out = ["Fail-fast timings (the tests assert the outcome, this measures the time):", "",
           "| Measurement | Result | Goal | Met |", "|---|---|---|---|"]
    for key, label in labels.items():
        r = got.get(key, {"error": "not run"})
        if "error" in r:
            out.append(f"| {label} | failed: {r['error']} | < {GOALS[key]:g} s | **NO** |")
            continue
        detail = r["seconds"] if isinstance(r["seconds"], float) else ", ".join(
            f"{k} {v:.2f}" for k, v in r["seconds"].items())
        met = "yes" if r["max"] < GOALS[key] else "**NO**"
        out.append(f"| {label} | {r['max']:.3f} s ({detail}) | < {GOALS[key]:g} s | {met} |")
    return out
