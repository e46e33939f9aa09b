"""The synthetic corpus of scripts/gen-corpus: deterministic, and every delivery parses as what it claims to be."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

from archiver import items

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts" / "bench_lib"))
from corpus import END, START, Corpus  # noqa: E402
from gen_corpus import journal_rows  # noqa: E402

EXTRACT = {"webhook": items.extract_webhook, "capture_message": items.extract_capture_message}


def test_same_n_and_seed_give_the_same_bytes() -> None:
    assert list(Corpus(600, seed=3).deliveries()) == list(Corpus(600, seed=3).deliveries())
    assert list(Corpus(600, seed=3).deliveries()) != list(Corpus(600, seed=4).deliveries())


def test_every_delivery_parses_into_the_items_generated() -> None:
    corpus = Corpus(3000, seed=1)
    found: Counter[str] = Counter()
    times = []
    for source, body, _ in corpus.deliveries():
        for item in EXTRACT[source](body):
            found[item.kind] += 1
            if item.occurred_at is not None:
                times.append(item.occurred_at)
    assert found["quarantine"] == 0 and found["unknown"] == 0
    c = corpus.counts
    assert found["message"] == c["inbound"] and found["echo"] == c["echo"] and found["outbound"] == c["api"]
    assert found["history_message"] == c["history"] == round(3000 * 0.12)
    assert (found["status"], found["edit"], found["revoke"]) == (c["status"], c["edit"], c["revoke"])
    assert c["inbound"] + c["echo"] + c["api"] + c["history"] == 3000
    assert START <= min(times) and max(times) < END + 86400


def test_journal_rows_are_what_intake_writes() -> None:
    source, body, at = next(Corpus(10).deliveries())
    (row,) = journal_rows([(source, body, at)])
    assert row["body"] is body and row["sealed"] is False and len(row["body_sha256"]) == 64
    assert row["meta"]["signature"].startswith("sha256=") and row["received_at"].timestamp() == at
