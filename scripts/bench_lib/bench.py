"""Benchmarks for the archiver; driven by ``scripts/bench`` (see docs/benchmarks.md).

Subcommands (each reads/writes ``<work>/results.json``):

  local   --work DIR [--quick]   acceptance (gunicorn + wrk, no-op baseline in the same run),
                                 sealing into the local store, verification, sealer RSS,
                                 cProfile hotspots of sealing, webhook latency idle and under
                                 read load (read_load.py)
  s3      --work DIR [--quick]   sealing into the SeaweedFS started by scripts/bench
                                 (BENCH_S3_ENDPOINT, AWS_* in the environment)
  report  --work DIR [--doc F]   print the table; append a dated section to F when given
  _rss HOME                      (internal) seal HOME's backlog in a fresh process, print JSON
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import hmac
import json
import os
import platform
import pstats
import re
import resource
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SECRET = "bench-app-secret"
from archiver.server import WORKER_CLASS, default_workers  # noqa: E402 - after the path setup

# Both apps run as `archiver serve` runs the webhook on the embedded default (SQLite catalog).
SERVE_ARGS = ["-w", str(default_workers("sqlite://")), "-k", WORKER_CLASS]
# For reference, one more round of both under the server settings used before 2026-11-27.
REFERENCE_ARGS = ["-w", "2", "--threads", "4", "-k", "gthread"]
COMMON_ARGS = ["--log-level", "warning", "--timeout", "60"]
WRK_THREADS, WRK_CONNECTIONS = 2, 16

GOALS = {"accept_ratio": 0.5, "seal_local": 20_000, "seal_s3": 10_000, "verify": 100_000, "rss_growth": 1.25}

FULL = {"wrk_seconds": 10, "warmup_seconds": 2, "accept_rounds": 3, "seal_n": 20_000, "rss_small": 10_000, "rss_large": 80_000,
        "profile_n": 5_000}
QUICK = {"wrk_seconds": 3, "warmup_seconds": 1, "accept_rounds": 1, "seal_n": 5_000, "rss_small": 4_000, "rss_large": 8_000,
         "profile_n": 1_000}

_LOREM = ("Hi, following up on order 48213: the courier says the parcel left the depot this morning but the "
          "tracking page still shows 'label created'. Could you confirm the delivery window for tomorrow and "
          "whether someone needs to sign for it? Also, the invoice lists two units of the 500 ml bottle while I "
          "ordered three, so please check the packing slip before it goes out. If the third unit is back-ordered "
          "I am happy to wait, just let me know the expected date. Thanks a lot for the quick replies so far, "
          "the support on this channel has been great. ")


# --- realistic webhook bodies ---------------------------------------------------------------


def _contact(i: int) -> tuple[str, str]:
    n = i % 500  # 500 distinct customers: realistic spread of per-contact data keys
    return f"44794600{n:04d}", f"Customer {n:03d}"


def wamid(i: int) -> str:
    return f"wamid.HBgMNDQ3OTQ2MDAxMjM0FQIAEhgUM0E{i:010d}RkI4QzE3QTZEMjQ5AA=="


def message_body(i: int, ts: int = 1780001000) -> bytes:
    """An inbound text message webhook as Meta sends it (~1 KB)."""
    phone, name = _contact(i)
    value = {"messaging_product": "whatsapp",
             "metadata": {"display_phone_number": "15550009999", "phone_number_id": "109987654321098"},
             "contacts": [{"profile": {"name": name}, "wa_id": phone}],
             "messages": [{"from": phone, "id": wamid(i), "timestamp": str(ts + i), "type": "text",
                           "text": {"body": f"[{i}] " + _LOREM}}]}
    return json.dumps({"object": "whatsapp_business_account",
                       "entry": [{"id": "102290129340398", "changes": [{"field": "messages", "value": value}]}]}).encode()


def status_body(i: int, of: int, ts: int = 1780001000) -> bytes:
    """A status webhook (delivered/read) with conversation and pricing, as Meta sends it."""
    phone, _ = _contact(of)
    state = ("sent", "delivered", "read")[i % 3]
    value = {"messaging_product": "whatsapp",
             "metadata": {"display_phone_number": "15550009999", "phone_number_id": "109987654321098"},
             "statuses": [{"id": wamid(of), "status": state, "timestamp": str(ts + i), "recipient_id": phone,
                           "conversation": {"id": f"c0ffee{of % 500:026d}", "origin": {"type": "service"}},
                           "pricing": {"billable": True, "pricing_model": "PMP", "category": "service",
                                       "type": "regular"}}]}
    return json.dumps({"object": "whatsapp_business_account",
                       "entry": [{"id": "102290129340398", "changes": [{"field": "messages", "value": value}]}]}).encode()


def delivery(i: int) -> bytes:
    """Delivery ``i`` of a realistic mix: 3 of 4 are messages, 1 of 4 a status of an earlier one."""
    return status_body(i, i - 3) if i % 4 == 3 else message_body(i)


def signature(body: bytes) -> str:
    return "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()


# --- archiver instances -------------------------------------------------------------------------


def archiver_env(home: Path, **extra: str) -> dict[str, str]:
    env = {"ARCHIVER_HOME": str(home), "ARCHIVER_APP_SECRET": SECRET, "ARCHIVER_VERIFY_TOKEN": "bench-verify",
           "ARCHIVER_DEFAULT_RETENTION": "7y", "ARCHIVER_POLICIES": str(ROOT / "policies")}
    env.update(extra)
    return env


def open_services(env: dict[str, str]) -> Any:
    from archiver.config import Settings
    from archiver.services import Services

    return Services.open(Settings.from_env(env))


def journal(services: Any, n: int, chunk: int = 5000) -> None:
    """Journal ``n`` deliveries through append_delivery, a few big transactions."""
    from archiver.journal import append_delivery

    for start in range(0, n, chunk):
        with services.sessions.begin() as session:
            for i in range(start, min(n, start + chunk)):
                body = delivery(i)
                append_delivery(session, "webhook", body,
                                {"signature": signature(body), "remote": "127.0.0.1", "content_type": "application/json"})


def head_seq(services: Any) -> int:
    from archiver.catalog import chain_head

    with services.sessions() as session:
        return chain_head(session).seq


def seal_timed(services: Any) -> dict[str, Any]:
    from archiver import sealer

    t0 = time.perf_counter()
    sealer.seal_pending(services)
    secs = time.perf_counter() - t0
    records = head_seq(services)
    return {"records": records, "seconds": secs, "rate": records / secs if secs else 0.0}


# --- 1. acceptance ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {proc.returncode} during startup")
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError:
            return  # any HTTP answer means it is serving
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


def run_wrk(url: str, seconds: int, body_path: Path, sig: str) -> dict[str, Any]:
    env = {**os.environ, "BENCH_BODY": str(body_path), "BENCH_SIG": sig}
    out = subprocess.run(["wrk", f"-t{WRK_THREADS}", f"-c{WRK_CONNECTIONS}", f"-d{seconds}s", "--latency",
                          "-s", str(HERE / "webhook.lua"), url], env=env, capture_output=True, text=True,
                         timeout=seconds + 60, check=True).stdout
    res: dict[str, Any] = {"raw": out}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    res["rps"] = float(m.group(1)) if m else 0.0
    m = re.search(r"(\d+) requests in", out)
    res["requests"] = int(m.group(1)) if m else 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    res["non2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: (.*)", out)
    res["socket_errors"] = m.group(1).strip() if m else ""
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}%\s+(\S+)", out, re.M)
        res[f"p{pct}"] = m.group(1) if m else "?"
    return res


def serve_and_load(label: str, app_spec: str, cwd: Path, env: dict[str, str], cfg: dict[str, Any],
                   body_path: Path, sig: str, work: Path, server_args: list[str] = SERVE_ARGS) -> dict[str, Any]:
    port = free_port()
    url = f"http://127.0.0.1:{port}/webhooks/whatsapp"
    log = open(work / f"gunicorn-{label}.log", "w")
    cmd = [sys.executable, "-m", "gunicorn", *server_args, *COMMON_ARGS, "-b", f"127.0.0.1:{port}", app_spec]
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_http(url, proc)
        run_wrk(url, cfg["warmup_seconds"], body_path, sig)
        res = run_wrk(url, cfg["wrk_seconds"], body_path, sig)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    print(f"bench: accept {label}: {res['rps']:.0f} req/s (p50 {res['p50']}, p99 {res['p99']}, "
          f"non-2xx {res['non2xx']})", file=sys.stderr)
    return res


def bench_accept(work: Path, cfg: dict[str, Any]) -> dict[str, Any]:
    body = message_body(7)
    body_path = work / "webhook-body.json"
    body_path.write_bytes(body)
    sig = signature(body)
    home = work / "accept-home"
    aenv = archiver_env(home)
    svc = open_services(aenv)  # create catalog and keys once, before two workers race for them
    svc.close()
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("ARCHIVER_")}
    pypath = os.pathsep.join(filter(None, [str(ROOT), base_env.get("PYTHONPATH", "")]))
    # Rounds of (noop, archiver) back to back; each side keeps its best round. Interference
    # on this shared VM only ever slows a run down, and both sides get the same chances.
    rounds: list[tuple[dict[str, Any], dict[str, Any]]] = []
    arch_env = {**base_env, **aenv, "PYTHONPATH": pypath}
    for _ in range(cfg["accept_rounds"]):
        rounds.append((serve_and_load("noop", "noop_app:app", HERE, base_env, cfg, body_path, sig, work),
                       serve_and_load("archiver", "archiver.app:create_app()", ROOT, arch_env, cfg, body_path, sig,
                                      work)))
    reference = [serve_and_load(f"{label}-reference", spec, cwd, env, cfg, body_path, sig, work, REFERENCE_ARGS)
                 for label, spec, cwd, env in (("noop", "noop_app:app", HERE, base_env),
                                               ("archiver", "archiver.app:create_app()", ROOT, arch_env))]
    noop = max((n for n, _ in rounds), key=lambda r: r["rps"])
    arch = max((a for _, a in rounds), key=lambda r: r["rps"])
    svc = open_services(aenv)
    from sqlalchemy import func, select

    from archiver.catalog import Journal
    with svc.sessions() as session:
        journaled = session.scalar(select(func.count()).select_from(Journal).where(Journal.source == "webhook"))
    svc.close()
    for n, a in rounds:
        n.pop("raw", None)
        a.pop("raw", None)
    return {"noop": noop, "archiver": arch, "ratio": arch["rps"] / noop["rps"] if noop["rps"] else 0.0,
            "body_bytes": len(body), "journal_rows": journaled,
            "rounds": [[round(n["rps"]), round(a["rps"])] for n, a in rounds],
            "reference": [round(r["rps"]) for r in reference]}


# --- 2/4/5. sealing, verification, memory -------------------------------------------------------


def bench_seal(home: Path, n: int, **extra: str) -> tuple[dict[str, Any], Any]:
    svc = open_services(archiver_env(home, **extra))
    t0 = time.perf_counter()
    journal(svc, n)
    journal_secs = time.perf_counter() - t0
    res = seal_timed(svc)
    res.update(deliveries=n, journal_seconds=journal_secs)
    return res, svc


def bench_verify(svc: Any) -> dict[str, Any]:
    from archiver import verify

    t0 = time.perf_counter()
    with svc.sessions() as session:
        rep = verify.audit(svc.store, svc.signing_key.public_key(), session)
    secs = time.perf_counter() - t0
    return {"ok": rep.ok, "first_error": rep.first_error, "records": rep.records, "segments": rep.segments,
            "seconds": secs, "rate": rep.records / secs if secs else 0.0}


def bench_rss(work: Path, n: int) -> dict[str, Any]:
    home = work / f"rss-{n}"
    svc = open_services(archiver_env(home))
    journal(svc, n)
    svc.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARCHIVER_")}
    # Linux keeps ru_maxrss across fork+exec: a child spawned directly from this (large) process
    # would report *our* peak. A shell in between forks the measured process from a small one.
    out = subprocess.run(["/bin/sh", "-c", '"$0" "$@"; exit $?', sys.executable, str(Path(__file__)), "_rss", str(home)],
                         env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"_rss {n} failed: {out.stderr[-2000:]}")
    res = json.loads(out.stdout)
    res["deliveries"] = n
    shutil.rmtree(home, ignore_errors=True)
    return res


def _rss_child(home: str) -> None:
    svc = open_services(archiver_env(Path(home)))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    res = seal_timed(svc)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    hwm = int(Path("/proc/self/status").read_text().split("VmHWM:")[1].split()[0])  # cross-check, KiB
    # The sealer's forked writer process (large backlogs): its peak counts too. Pages it
    # still shares with this process are counted twice, so the sum is an upper bound.
    writer = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps({"before_kib": before, "planner_kib": peak, "writer_kib": writer, "peak_kib": peak + writer,
                      "vmhwm_kib": hwm, **res}))


def bench_profile(work: Path, n: int) -> list[dict[str, Any]]:
    from archiver import sealer

    svc = open_services(archiver_env(work / "profile-home"))
    journal(svc, n)
    prof = cProfile.Profile()  # profiles one thread: run the pipeline's stages inline
    prof.enable()
    sealer.seal_pending(svc, pipelined=False)
    prof.disable()
    svc.close()
    stats = pstats.Stats(prof)
    prof.dump_stats(str(work / "seal.prof"))
    rows = []
    for (path, line, fn), (_cc, ncalls, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        where = f"{Path(path).name}:{line}" if line else path
        rows.append({"func": f"{fn} ({where})", "name": fn, "path": path, "ncalls": ncalls, "tottime": tt, "cumtime": ct})
    return rows


ENTRY_FRAMES = {"seal_pending", "run_inline", "_plan", "_write", "_publish"}


def hotspots(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Top 3 archiver functions by cumulative time below the sealer's entry points (where to
    look), top 3 functions by own time (what burns the CPU), and the ORM's share."""
    total = max((r["cumtime"] for r in rows if r["name"] == "seal_pending"), default=0.0)
    ours = [r for r in rows if "/archiver/" in r["path"] and r["name"] not in ENTRY_FRAMES]
    by_cum = sorted(ours, key=lambda r: r["cumtime"], reverse=True)[:3]
    by_own = sorted(rows, key=lambda r: r["tottime"], reverse=True)[:3]
    orm = [r for r in rows if r["path"].endswith("orm/session.py") and r["name"] in ("execute", "_flush")]
    strip = lambda rs: [{k: r[k] for k in ("func", "ncalls", "tottime", "cumtime")} for r in rs]  # noqa: E731
    return {"total": total, "cumulative": strip(by_cum), "own": strip(by_own), "orm": strip(orm)}


# --- subcommands --------------------------------------------------------------------------------


def load(work: Path) -> dict[str, Any]:
    path = work / "results.json"
    return json.loads(path.read_text()) if path.exists() else {}


def save(work: Path, results: dict[str, Any]) -> None:
    (work / "results.json").write_text(json.dumps(results, indent=2, default=str))


def cmd_local(work: Path, quick: bool) -> None:
    cfg = QUICK if quick else FULL
    results = load(work)
    results.update(quick=quick, config=cfg, started=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    print("bench: 1/5 acceptance (gunicorn + wrk, no-op baseline then archiver)", file=sys.stderr)
    try:
        results["accept"] = bench_accept(work, cfg)
    except Exception as exc:  # report, do not hide: the table says it failed
        results["accept"] = {"error": f"{exc.__class__.__name__}: {exc}"}
    save(work, results)
    print(f"bench: 2/5 sealing {cfg['seal_n']} deliveries into the local store", file=sys.stderr)
    res, svc = bench_seal(work / "seal-local", cfg["seal_n"])
    results["seal_local"] = res
    print(f"bench:   {res['records']} records in {res['seconds']:.2f}s = {res['rate']:.0f}/s", file=sys.stderr)
    print("bench: 4/5 verification of that archive", file=sys.stderr)
    results["verify"] = bench_verify(svc)
    svc.close()
    save(work, results)
    print(f"bench: 5/5 sealer peak RSS, {cfg['rss_small']} vs {cfg['rss_large']} deliveries", file=sys.stderr)
    results["rss"] = [bench_rss(work, cfg["rss_small"]), bench_rss(work, cfg["rss_large"])]
    save(work, results)
    print(f"bench: cProfile of sealing {cfg['profile_n']} deliveries", file=sys.stderr)
    rows = bench_profile(work, cfg["profile_n"])
    results["profile"] = {"deliveries": cfg["profile_n"], **hotspots(rows)}
    save(work, results)
    print("bench: fail-fast timings (unreachable S3 and OpenSearch, a never-idle gevent loop)", file=sys.stderr)
    import failfast  # beside this file

    results["failfast"] = failfast.measure(ROOT, archiver_env(work / "failfast"))
    save(work, results)
    print("bench: 6 webhook latency idle and under read load (archiver serve, 4 search clients, 15 MB message)",
          file=sys.stderr)
    import read_load  # beside this file

    try:
        results["read_load"] = read_load.measure(ROOT, archiver_env(work / "read-load"), quick)
    except Exception as exc:  # report, do not hide: the table says it failed
        results["read_load"] = {"error": f"{exc.__class__.__name__}: {exc}"}
    save(work, results)


def cmd_s3(work: Path, quick: bool) -> None:
    cfg = QUICK if quick else FULL
    results = load(work)
    endpoint, bucket = os.environ["BENCH_S3_ENDPOINT"], os.environ.get("BENCH_S3_BUCKET", "bench-archive")
    print(f"bench: 3/5 sealing {cfg['seal_n']} deliveries into SeaweedFS at {endpoint}", file=sys.stderr)
    try:
        import boto3
        from botocore.config import Config

        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          config=Config(s3={"addressing_style": "path"}))
        s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
        s3.put_object_lock_configuration(Bucket=bucket, ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 1}}})
        from archiver.store import assert_worm

        url = f"s3://{bucket}/x?endpoint_url={endpoint}&region=us-east-1"
        res, svc = bench_seal(work / "seal-s3", cfg["seal_n"], ARCHIVER_STORE_URL=url)
        assert_worm(svc.store)  # the bucket really is a WORM store (not timed)
        res["verify"] = {k: v for k, v in bench_verify(svc).items() if k in ("ok", "records", "first_error")}
        svc.close()
        results["seal_s3"] = res
        print(f"bench:   {res['records']} records in {res['seconds']:.2f}s = {res['rate']:.0f}/s", file=sys.stderr)
    except Exception as exc:
        results["seal_s3"] = {"error": f"{exc.__class__.__name__}: {exc}"}
        print(f"bench:   failed: {results['seal_s3']['error']}", file=sys.stderr)
    save(work, results)


def _sh(cmd: str) -> str:
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:
        return "?"


def machine() -> dict[str, str]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"uname": _sh("uname -a"), "nproc": _sh("nproc"), "cpu": cpu,
            "python": f"{platform.python_implementation()} {platform.python_version()}",
            "wrk": _sh("wrk -v 2>&1 | head -1 | cut -d' ' -f1-2"), "git": _sh(f"git -C {ROOT} rev-parse --short HEAD"),
            "dirty": _sh(f"git -C {ROOT} status --porcelain -- archiver | head -1")}


def _met(ok: bool | None) -> str:
    return "n/a" if ok is None else ("yes" if ok else "**NO**")


def table(results: dict[str, Any]) -> list[str]:
    rows = ["| # | Measurement | Result | Goal | Met |", "|---|---|---|---|---|"]
    a = results.get("accept", {})
    if "error" in a or not a:
        rows.append(f"| 1 | Webhook acceptance (req/s) | failed: {a.get('error', 'not run')} | archiver >= 0.5 x no-op | **NO** |")
    else:
        n, r = a["noop"], a["archiver"]
        extra = ""
        if r["non2xx"] or n["non2xx"] or r["socket_errors"] or n["socket_errors"]:
            extra = f"; non-2xx no-op {n['non2xx']} / archiver {r['non2xx']}; socket errors {n['socket_errors'] or 0} / {r['socket_errors'] or 0}"
        rows.append(f"| 1a | Acceptance, no-op Flask baseline | {n['rps']:,.0f} req/s (p50 {n['p50']}, p99 {n['p99']}) | baseline | - |")
        rows.append(f"| 1b | Acceptance, archiver webhook (HMAC + journal commit) | {r['rps']:,.0f} req/s "
                    f"(p50 {r['p50']}, p99 {r['p99']}; {a['journal_rows']:,} journal rows over all rounds incl. warm-ups{extra}) | - | - |")
        runs = "; ".join(f"{n:,} / {r:,}" for n, r in a.get("rounds", []))
        rows.append(f"| 1c | Acceptance ratio archiver / no-op (best round of each; rounds no-op / archiver req/s: "
                    f"{runs}) | {a['ratio']:.2f} x | >= {GOALS['accept_ratio']} x | "
                    f"{_met(a['ratio'] >= GOALS['accept_ratio'] and r['non2xx'] == 0)} |")
        if ref := a.get("reference"):
            rows.append(f"| 1d | For reference: one round of each under `{' '.join(REFERENCE_ARGS)}` (the server "
                        f"before 2026-11-27), no-op / archiver | {ref[0]:,} / {ref[1]:,} req/s "
                        f"({ref[1] / ref[0]:.2f} x) | - | - |")
    for num, key, label in (("2", "seal_local", "Sealing into local store"), ("3", "seal_s3", "Sealing into SeaweedFS (S3 Object Lock)")):
        s = results.get(key)
        goal = GOALS[key]
        if not s or "error" in s:
            rows.append(f"| {num} | {label} | failed: {(s or {}).get('error', 'not run')} | {goal:,} records/s | **NO** |")
            continue
        note = f" verify ok={s['verify']['ok']}" if "verify" in s else ""
        rows.append(f"| {num} | {label} | {s['rate']:,.0f} records/s ({s['records']:,} records from "
                    f"{s['deliveries']:,} deliveries in {s['seconds']:.2f} s{';' + note if note else ''}) | "
                    f"{goal:,} records/s | {_met(s['rate'] >= goal)} |")
    v = results.get("verify")
    if v:
        state = "ok" if v["ok"] else f"FAILED: {v['first_error']}"
        rows.append(f"| 4 | Verification (`verify.audit`, local archive from step 2) | {v['rate']:,.0f} records/s "
                    f"({v['records']:,} records, {v['segments']} segments in {v['seconds']:.2f} s; {state}) | "
                    f"{GOALS['verify']:,} records/s | {_met(v['ok'] and v['rate'] >= GOALS['verify'])} |")
    rss = results.get("rss")
    if rss:
        small, large = rss
        growth = large["peak_kib"] / small["peak_kib"]
        grow = [(r["peak_kib"] - r["before_kib"]) / 1024 for r in rss]
        parts = "; ".join(f"{r['deliveries']:,}: planner {r.get('planner_kib', r['peak_kib']) / 1024:.0f} + writer "
                          f"process {r.get('writer_kib', 0) / 1024:.0f}" for r in rss)
        rows.append(f"| 5 | Sealer peak RSS (fresh process; ru_maxrss, planner + forked writer) | "
                    f"{small['deliveries']:,} deliveries: "
                    f"{small['peak_kib'] / 1024:.0f} MiB; {large['deliveries']:,}: {large['peak_kib'] / 1024:.0f} MiB "
                    f"[{parts}] "
                    f"(x{growth:.2f}; +{grow[0]:.0f} / +{grow[1]:.0f} MiB over the {small['before_kib'] / 1024:.0f} MiB "
                    f"after imports and open) | flat (<= x{GOALS['rss_growth']}) | "
                    f"{_met(growth <= GOALS['rss_growth'])} |")
    import read_load  # beside this file

    rows += read_load.lines(results)
    return rows


def hotspot_lines(results: dict[str, Any]) -> list[str]:
    p = results.get("profile")
    if not p:
        return []
    out = [f"Sealing hotspots: cProfile of step 2's workload with {p['deliveries']:,} deliveries, "
           f"`seal_pending` {p['total']:.2f} s under the profiler (which inflates everything). \"top 3\" = the "
           "archiver functions with the most cumulative time below the stages `_plan`/`_write`/`_publish` "
           "(run inline on one thread for the profile; nested: `_seal_run` runs inside `plan`); then the top 3 "
           "by own time and the SQLAlchemy session totals.", ""]
    out.append("| by | function | own s | cumulative s | calls |")
    out.append("|---|---|---|---|---|")
    for kind, label in (("cumulative", "**top 3** cumulative"), ("own", "own time"), ("orm", "ORM")):
        for r in p[kind]:
            out.append(f"| {label} | `{r['func']}` | {r['tottime']:.2f} | {r['cumtime']:.2f} | {r['ncalls']:,} |")
    return out


def cmd_report(work: Path, doc: Path | None) -> None:
    results = load(work)
    m = machine()
    cfg = results.get("config", {})
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"## {when}{' (quick smoke run)' if results.get('quick') else ''}", "",
             f"- machine: `{m['uname']}`", f"- nproc: {m['nproc']}; CPU: {m['cpu']}",
             f"- python: {m['python']}; {m['wrk']}; commit {m['git']}"
             f"{' plus uncommitted changes under archiver/' if m['dirty'] else ''}",
             f"- load: gunicorn `{' '.join(SERVE_ARGS)}` (as `archiver serve` on SQLite), wrk `-t{WRK_THREADS} -c{WRK_CONNECTIONS} "
             f"-d{cfg.get('wrk_seconds')}s` after a {cfg.get('warmup_seconds')} s warm-up, one "
             f"{results.get('accept', {}).get('body_bytes', '?')}-byte signed body; catalog SQLite (WAL, synchronous=FULL)",
             f"- sealing workload: {cfg.get('seal_n', 0):,} webhook deliveries (3 of 4 inbound ~1 KB text messages, "
             "1 of 4 a status with pricing; 500 contacts), journaled via `append_delivery` in 5,000-row "
             "transactions, then one timed `seal_pending`", ""]
    lines += table(results)
    lines.append("")
    lines += hotspot_lines(results)
    import failfast  # beside this file

    if rows := failfast.lines(results):
        lines += ["", *rows]
    text = "\n".join(lines) + "\n"
    print(text)
    if doc is not None:
        with doc.open("a", encoding="utf-8") as fh:
            fh.write("\n" + text)
        print(f"bench: appended to {doc}", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cmd", choices=["local", "s3", "report", "_rss"])
    p.add_argument("arg", nargs="?")
    p.add_argument("--work", type=Path)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--doc", type=Path)
    a = p.parse_args(argv)
    import logging
    import warnings
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore", message=".*is software WORM")  # root + file:// store: known, not news
    if a.cmd == "_rss":
        _rss_child(a.arg)
    elif a.cmd == "local":
        cmd_local(a.work, a.quick)
    elif a.cmd == "s3":
        cmd_s3(a.work, a.quick)
    else:
        cmd_report(a.work, a.doc)


if __name__ == "__main__":
    main()
