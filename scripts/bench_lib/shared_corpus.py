"""The realistic corpus, generated once and shared by the hold, disposition, consent and template benchmarks.

Under ``$BENCH_CORPUS_DIR`` (default ``/var/tmp/bench-corpus``), made on first use and reused:

* ``journal-N``: an ARCHIVER_HOME holding, journaled and never sealed, the extras below then
  the ``scripts/gen-corpus --n N`` deliveries (seed 1). It is the source every benchmark copies
  its backlog from (``load_journal``), into a home it prepared first (holds placed, an S3 store).
* ``sealed-N``: a copy of ``journal-N`` sealed by ``archiver seal`` and indexed (SQLite FTS5)
  by ``archiver index`` (an interrupted run resumes both); a benchmark copies it
  (``copy_home``) and works on the copy.

Both use ``policies(dir)``: the repository's consent and template policies and a retention
policy whose one class keeps records 30 days, so that every corpus record (2025-11-01 to
2026-11-01) has expired by the time the benchmark runs (``archiver dispose`` has work).

Extras (the corpus has no consent lines and no template lifecycle): an opt-in to marketing
for every contact (consent API, 2025-10-01); for each of the corpus's templates in each
language an APPROVED status (category UTILITY) on 2025-10-01, ``payment_due`` moved to
MARKETING on 2026-03-01, ``order_delivered`` PAUSED for a day on 2026-06-01.

A file lock per home (``.journal-N.lock``, ``.sealed-N.lock``) serialises two benchmarks preparing it.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench  # noqa: E402
import gen_corpus  # noqa: E402
from corpus import LANGUAGES, Corpus, Delivery  # noqa: E402
from corpus_text import TEMPLATES  # noqa: E402

ROOT = HERE.parents[1]
CORPUS_DIR = Path(os.environ.get("BENCH_CORPUS_DIR", "/var/tmp/bench-corpus"))  # noqa: S108 - the brief asks for it; root-only 0700 homes inside
SOURCES = ("webhook", "capture_message", "consent")  # what load_journal copies (not policy/audit rows)
PREPARED = 1759276800  # 2025-10-01T00:00:00Z: opt-ins and first template statuses
RETENTION = """classes:
  - name: default
    description: benchmark corpus, every record expired by now
    retain: 30d
"""


def policies(work: Path) -> Path:
    """A policies folder: the repository's, with the 30-day retention policy."""
    out = work / "policies"
    if not out.exists():
        shutil.copytree(ROOT / "policies", out)
        (out / "retention.yaml").write_text(RETENTION)
    return out


def env(home: Path, **extra: str) -> dict[str, str]:
    """ARCHIVER_* variables for ``home`` with the benchmark policies."""
    return bench.archiver_env(home, ARCHIVER_POLICIES=str(policies(CORPUS_DIR)), **extra)


@contextmanager
def _locked(home: Path) -> Iterator[None]:
    """``home`` made by one process at a time (each home its own lock: sealing a 1M corpus
    does not hold up a benchmark on the 100k one)."""
    CORPUS_DIR.mkdir(parents=True, exist_ok=True)
    with open(CORPUS_DIR / f".{home.name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def _say(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def _event(field: str, value: dict[str, Any], at: int) -> bytes:
    return gen_corpus.json.dumps({"object": "whatsapp_business_account", "entry": [
        {"id": "102290129340398", "time": at, "changes": [{"field": field, "value": value}]}]}).encode()


def extras(corpus: Corpus) -> Iterator[Delivery]:
    """The opt-ins and template lifecycle events (see the module docstring)."""
    for c in corpus.contacts:
        yield ("consent", json.dumps({"contact": c.phone, "scope": "marketing", "action": "opt_in",
                                      "source": "bench", "at": PREPARED}).encode(), PREPARED)
    for t, name in enumerate(TEMPLATES):
        for k, lang in enumerate(LANGUAGES):
            ids = {"message_template_id": 1500440000000000 + 100 * t + k, "message_template_name": name,
                   "message_template_language": lang}
            steps = [("APPROVED", PREPARED)]
            if name == "order_delivered":
                steps += [("PAUSED", 1780272000), ("APPROVED", 1780272000 + 86400)]
            for status, at in steps:
                yield ("webhook", _event("message_template_status_update", {
                    **ids, "event": status, "reason": "NONE", "message_template_category": "UTILITY"}, at), at)
            if name == "payment_due":
                yield ("webhook", _event("template_category_update", {
                    **ids, "previous_category": "UTILITY", "new_category": "MARKETING"}, 1772323200), 1772323200)


def _journal_rows(deliveries: Iterator[Delivery]) -> Iterator[dict[str, Any]]:
    for source, body, at in deliveries:
        if source == "consent":
            row = next(gen_corpus.journal_rows([("capture_message", body, at)]))
            yield {**row, "source": "consent", "meta": {"remote": "127.0.0.1", "token": "bench"}}
        else:
            yield from gen_corpus.journal_rows([(source, body, at)])


def journal(services: Any, deliveries: Iterator[Delivery]) -> int:
    """Journal ``deliveries`` in bulk transactions (as gen-corpus does); return how many."""
    from sqlalchemy import insert

    from archiver.catalog import Journal

    count, batch = 0, []
    for row in _journal_rows(deliveries):
        batch.append(row)
        if len(batch) >= gen_corpus.CHUNK:
            count += gen_corpus._insert(services, insert(Journal), batch)
            batch = []
    return count + (gen_corpus._insert(services, insert(Journal), batch) if batch else 0)


def journal_home(n: int) -> Path:
    """``journal-N``, generated when missing."""
    home = CORPUS_DIR / f"journal-{n}"
    with _locked(home):
        if not (home / ".complete").exists():
            shutil.rmtree(home, ignore_errors=True)
            _say(f"generating the realistic corpus ({n:,} messages) in {home}")
            t0 = time.perf_counter()
            corpus = Corpus(n, 1)
            svc = bench.open_services(env(home))
            try:
                count = journal(svc, extras(corpus))
                count += journal(svc, corpus.deliveries())
            finally:
                svc.close()
            summary = {"n": n, "deliveries": count, **corpus.counts, "contacts": len(corpus.contacts),
                       "seconds": round(time.perf_counter() - t0, 1)}
            (home / ".complete").write_text(json.dumps(summary))
    return home


def sealed_home(n: int) -> Path:
    """``sealed-N``, sealed and indexed when missing."""
    source = journal_home(n)
    home = CORPUS_DIR / f"sealed-{n}"
    with _locked(home):
        if not (home / ".complete").exists():
            if not (home / ".copied").exists():  # else sealing was interrupted: both steps resume
                shutil.rmtree(home, ignore_errors=True)
                copy_home(source, home)
                (home / ".complete").unlink()
                (home / ".copied").touch()
            archiver = str(Path(sys.executable).with_name("archiver"))
            for step in ("seal", "index"):
                _say(f"archiver {step} of {home} (once; later runs reuse it)")
                subprocess.run([archiver, step], env={**os.environ, **env(home)}, check=True,
                               stdout=subprocess.DEVNULL)
            (home / ".complete").write_text((source / ".complete").read_text())
    return home


def migrated(home: Path) -> Path:
    """``home`` (a copy) with its catalog brought to this version's schema (a cached corpus may
    have been sealed by an older one)."""
    from sqlalchemy import create_engine

    from archiver import migrations

    engine = create_engine(f"sqlite:///{home / 'catalog.db'}")
    try:
        migrations.upgrade(engine)
    finally:
        engine.dispose()
    return home


def summary(n: int) -> dict[str, Any]:
    """What ``journal-N`` holds (its generation summary)."""
    return dict(json.loads((journal_home(n) / ".complete").read_text()))


def copy_home(source: Path, dest: Path) -> Path:
    """A copy of the home ``source`` at ``dest`` (its catalog, keys and WORM files), its catalog
    migrated to this version's schema (a corpus sealed by an older version stays as it was)."""
    from archiver import catalog, migrations

    dest.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-a", "--reflink=auto", str(source), str(dest)], check=True)
    engine = catalog.make_engine(f"sqlite:///{dest / 'catalog.db'}", check_schema=False)
    try:
        migrations.upgrade(engine)
    finally:
        engine.dispose()
    return dest


def load_journal(services: Any, n: int) -> int:
    """Journal the corpus deliveries of ``journal-N`` (extras included) into ``services``' catalog."""
    from sqlalchemy import create_engine, insert, select

    from archiver.catalog import Journal

    src = create_engine(f"sqlite:///{journal_home(n) / 'catalog.db'}")
    count = 0
    cols = (Journal.source, Journal.received_at, Journal.body, Journal.body_sha256, Journal.meta)
    try:
        with src.connect() as conn:
            result = conn.execution_options(stream_results=True).execute(
                select(*cols).where(Journal.source.in_(SOURCES)).order_by(Journal.id))
            while rows := result.fetchmany(gen_corpus.CHUNK):
                count += gen_corpus._insert(services, insert(Journal), [{**r._mapping, "sealed": False}
                                                                        for r in rows])
    finally:
        src.dispose()
    return count


def more(count: int, *, template_sends: bool = False) -> Iterator[Delivery]:
    """``count`` new deliveries (another seed, wamids of their own), or ``count`` template sends."""
    made = 0
    for source, body, at in Corpus(max(count * 20, 1000), 2).deliveries():
        if template_sends and not (source == "capture_message" and b'"type":"template"' in body):
            continue
        yield source, body.replace(b"wamid.HBgL", b"wamid.HBgN"), at
        made += 1
        if made == count:
            return


def custodians(n: int, share: float) -> list[str]:
    """The busiest contacts whose messages are about ``share`` of the corpus.

    Corpus.contact() draws contact ``int(C * u**2)``: the first m of C contacts write
    sqrt(m / C) of the messages, so m = C * share**2.
    """
    people = Corpus(n, 1).contacts
    return [c.phone for c in people[:max(1, round(len(people) * share ** 2))]]


def spread(n: int, count: int) -> list[str]:
    """``count`` contacts spread over the corpus's contacts (busy and quiet ones)."""
    people = Corpus(n, 1).contacts
    step = max(1, len(people) // count)
    return [people[i * step % len(people)].phone for i in range(count)]
