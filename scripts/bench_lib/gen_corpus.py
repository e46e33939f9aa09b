"""Write a deterministic synthetic WhatsApp corpus as journal deliveries or as JSON lines.

What is generated (see corpus.py): N messages (default 1,000,000) as Meta and a CRM would
deliver them, in arrival order: inbound customer messages (text, captioned images,
documents, videos, voice notes, stickers, locations, button replies, reactions), app echoes
(smb_message_echoes), Cloud API sends in the capture API's shape (text, templates,
documents), history-sync batches of 50 older messages, plus statuses of API sends (some out
of order, a few failed), edits and revokes. Languages: English, French, German, Spanish,
Portuguese, Arabic, Chinese, Japanese (no spaces), Russian, with emoji. About N/40
contacts, a few of them busy (the busiest is printed). Times: 2025-11-01 to 2026-11-01 UTC,
history before the 2026-01-01 onboarding. Same --n and --seed, same bytes.

Output, one of:
  --home DIR   journal the deliveries into the archive whose ARCHIVER_HOME is DIR (other
               ARCHIVER_* variables apply, e.g. ARCHIVER_CATALOG_URL), as intake would:
               source, raw bytes, SHA-256, meta (a signature made with the key "gen-corpus"),
               received_at = the delivery's synthetic time; bulk inserts of 10,000 rows per
               transaction. Nothing is sealed: run `archiver seal` next.
  --jsonl FILE one JSON object per delivery and line, "-" for stdout:
               {"source": "webhook"|"capture_message", "received_at": <epoch s>, "body": "<raw body>"}

Counts by kind go to stderr as JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import sys
import time
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from corpus import Corpus, Delivery

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SIGNING_KEY = b"gen-corpus"
CHUNK = 10_000


def journal_rows(deliveries: Iterable[Delivery]) -> Iterable[dict[str, Any]]:
    """Journal table rows of ``deliveries``, as ``journal.append_delivery`` writes them."""
    for source, body, at in deliveries:
        if source == "webhook":
            meta = {"signature": "sha256=" + hmac.new(SIGNING_KEY, body, hashlib.sha256).hexdigest(),
                    "remote": "127.0.0.1", "content_type": "application/json"}
        else:
            meta = {"actor": "gen-corpus", "remote": "127.0.0.1"}
        yield {"source": source, "body": body, "body_sha256": hashlib.sha256(body).hexdigest(), "meta": meta,
               "received_at": datetime.fromtimestamp(at, timezone.utc), "sealed": False}


def journal(services: Any, deliveries: Iterable[Delivery]) -> int:
    """Insert ``deliveries`` into the journal in bulk transactions; return how many."""
    from sqlalchemy import insert

    from archiver.catalog import Journal

    count, batch = 0, []
    for row in journal_rows(deliveries):
        batch.append(row)
        if len(batch) >= CHUNK:
            count += _insert(services, insert(Journal), batch)
            batch = []
    return count + (_insert(services, insert(Journal), batch) if batch else 0)


def _insert(services: Any, stmt: Any, rows: list[dict[str, Any]]) -> int:
    with services.sessions.begin() as session:
        session.execute(stmt, rows)
    return len(rows)


def write_jsonl(deliveries: Iterable[Delivery], out: Any) -> int:
    count = 0
    for source, body, at in deliveries:
        out.write(json.dumps({"source": source, "received_at": at, "body": body.decode()}) + "\n")
        count += 1
    return count


def generate_into_home(home: Path, n: int, seed: int) -> tuple[Corpus, int]:
    """Journal a corpus of ``n`` messages into the archive at ``home``; return it and the delivery count."""
    from archiver.config import Settings
    from archiver.services import Services

    services = Services.open(Settings.from_env({**os.environ, "ARCHIVER_HOME": str(home)}))
    try:
        corpus = Corpus(n, seed)
        return corpus, journal(services, corpus.deliveries())
    finally:
        services.close()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="scripts/gen-corpus", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1_000_000, help="messages to generate (default 1,000,000)")
    p.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    out = p.add_mutually_exclusive_group(required=True)
    out.add_argument("--home", type=Path, help="journal into the archive at this ARCHIVER_HOME")
    out.add_argument("--jsonl", help="write JSON lines to this file ('-' for stdout)")
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    if a.home:
        corpus, count = generate_into_home(a.home, a.n, a.seed)
    else:
        corpus = Corpus(a.n, a.seed)
        with (open(a.jsonl, "w", encoding="utf-8") if a.jsonl != "-" else sys.stdout) as fh:  # noqa: SIM115
            count = write_jsonl(corpus.deliveries(), fh)
    summary = {"deliveries": count, "messages": a.n, **corpus.counts, "contacts": len(corpus.contacts),
               "busiest_contact": corpus.busiest.phone, "seconds": round(time.perf_counter() - t0, 1)}
    print(json.dumps(summary), file=sys.stderr)


if __name__ == "__main__":
    main()
