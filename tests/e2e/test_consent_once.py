"""A full consent review reads each segment once (issue 11, speed): the ledger sync and the
send scan share one pass over the sealed records (``consent_review.SendFacts``, a
``consent.Rider``), and the segment two batches share is fetched once (``records.LastSegment``).
Counted on the real store (SeaweedFS Object Lock), with batches far smaller than a segment so
that batches straddle segments; the findings are those of the scripted sends."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from sqlalchemy import select

from archiver import consent, consent_review
from archiver.catalog import Record, Segment
from tests.e2e.test_consent import ANA, BEA, CARLOS, Month, day, month, priced_status, template_status, text

__all__ = ["month"]
pytestmark = [pytest.mark.s3]


def test_a_full_review_reads_each_segment_once_and_finds_the_same(month: Month,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    m = month
    m.webhooks(template_status("spring_offer", "APPROVED", "MARKETING", day(0)))  # read by templates.load only
    for who in (ANA, BEA):
        m.opt_in(who, day(1))
    m.webhooks(text("wamid.t1", ANA, "hello", day(2)), text("wamid.t2", BEA, "hi there", day(2)),
               priced_status("wamid.p0", CARLOS, day(2)))
    m.send("wamid.s1", BEA, "spring_offer", day(2.5))
    m.webhooks(text("wamid.t3", ANA, "STOP", day(3)), text("wamid.t4", BEA, "thanks", day(3)))
    m.send("wamid.s2", ANA, "spring_offer", day(4))
    m.send("wamid.s3", BEA, "spring_offer", day(4))
    m.webhooks(priced_status("wamid.p1", ANA, day(5)), text("wamid.t5", CARLOS, "ok", day(5)),
               priced_status("wamid.s3", BEA, day(5)))
    services = m.inst.services
    with services.sessions() as session:
        segments = {s.key for s in session.scalars(select(Segment))}
        holding = {s.key for s in session.scalars(select(Segment).join(Record, Record.segment_id == Segment.id)
                                                  .where(Record.kind.in_(("consent", "message", "outbound", "echo", "status"))))}
    assert len(holding) >= 5, holding  # several segments, each with ledger records or sends
    monkeypatch.setattr(consent, "BATCH", 2)
    monkeypatch.setattr(consent_review, "BATCH", 2)
    reads: Counter[str] = Counter()
    real_get = services.store.get

    def counting_get(key: str, *args: Any, **kwargs: Any) -> Any:
        reads[key] += 1
        return real_get(key, *args, **kwargs)

    monkeypatch.setattr(services.store, "get", counting_get)
    out = consent_review.review(services)
    seg_reads = {k: v for k, v in reads.items() if k in segments}
    assert holding <= set(seg_reads), (holding, seg_reads)  # every one read...
    assert all(v == 1 for v in seg_reads.values()), seg_reads  # ...once
    assert out["findings"] == 2 and out["marketing_sends"] == 5, out
    assert {f["detail"]["wamid"] for f in m.findings()} == {"wamid.s2", "wamid.p1"}
    reads.clear()
    assert consent_review.review(services)["findings"] == 0  # nothing new: nothing read
    assert not {k for k in reads if k in holding}, reads
