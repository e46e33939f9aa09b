"""Disposition by property, on the real code end to end (issue 9, "Bad input and faults").

Over random records (contacts, kinds, times, texts), random retention classes (short periods,
``review`` and ``erasable`` flags, match rules on contact and kind), holds (custodian, date
range, query; some released) and clocks, a disposition run (``disposition.run``, the clock
injected as ``now``) on a fresh archive (SQLite catalog, local WORM folder, FTS5 index in a
tmp dir) destroys exactly the data keys that may go: every key whose records have all passed
``retain_until`` and none of which an active hold holds, except those of ``review: true``
classes, which wait in a batch until approved and go with the next run.

What is held is computed here from the criteria (the model), not read from the holds'
tables; the records' classes and ``retain_until`` are checked against the model too.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from archiver import disposition, holds, indexer
from archiver.catalog import DataKey, Record
from archiver.config import Settings
from archiver.retention_policy import add_period, parse_duration
from archiver.services import Services
from tests.conftest import make_env
from tests.e2e.test_pipeline import post

CONTACTS = ["33611000001", "33611000002", "33611000003", "33611000004"]
KINDS = ["message", "history_message", "echo"]
WORDS = ["refund", "quote", "invoice", "hello"]
PERIODS = ["PT1H", "P1D", "P2D", "P5D"]
BUSINESS = "15550009999"
T0 = int(datetime(2026, 3, 27, tzinfo=UTC).timestamp())  # the records' own times span March and April
SPAN = 8 * 86400
# A fresh archive per example: on a RAM disk where there is one (fsync costs nothing there), so
# that the examples run in about a second each; the code under test is the same.
SCRATCH = "/dev/shm" if Path("/dev/shm").is_dir() else None


@dataclass(frozen=True)
class Msg:
    contact: str
    kind: str
    at: int  # epoch seconds, the record's own time
    word: str


@dataclass(frozen=True)
class Cls:
    name: str
    retain: str
    review: bool
    erasable: bool
    contacts: tuple[str, ...]
    kinds: tuple[str, ...]  # () = any kind

    def matches(self, m: Msg) -> bool:
        return m.contact in self.contacts and (not self.kinds or m.kind in self.kinds)


@dataclass(frozen=True)
class HoldSpec:
    custodians: tuple[str, ...]
    after: int | None
    before: int | None
    query: str | None
    released: bool

    def holds_item(self, m: Msg) -> bool:
        return ((not self.custodians or m.contact in self.custodians)
                and (self.after is None or m.at >= self.after) and (self.before is None or m.at < self.before)
                and (self.query is None or self.query == m.word))

    def holds_delivery(self, contact: str) -> bool:
        """Whether the hold selects a delivery on its own: its time is its receipt (today, after
        every window's end here: only a range open at the end holds it), the search index holds
        items only, and its contact is its item's."""
        return self.query is None and self.before is None and (not self.custodians or contact in self.custodians)


messages = st.builds(Msg, st.sampled_from(CONTACTS), st.sampled_from(KINDS),
                     st.integers(min_value=T0, max_value=T0 + SPAN), st.sampled_from(WORDS))


@st.composite
def classes(draw: st.DrawFn) -> list[Cls]:
    out = []
    for n in range(draw(st.integers(min_value=1, max_value=3))):
        out.append(Cls(f"c{n}", draw(st.sampled_from(PERIODS)), draw(st.booleans()), draw(st.booleans()),
                       tuple(draw(st.lists(st.sampled_from(CONTACTS), min_size=1, max_size=3, unique=True))),
                       tuple(draw(st.lists(st.sampled_from(KINDS), max_size=2, unique=True)))))
    return out


@st.composite
def hold_specs(draw: st.DrawFn) -> HoldSpec:
    while True:
        custodians = tuple(draw(st.lists(st.sampled_from(CONTACTS), max_size=2, unique=True)))
        window = draw(st.none() | st.tuples(st.integers(min_value=T0, max_value=T0 + SPAN),
                                            st.integers(min_value=3600, max_value=SPAN)))
        query = draw(st.none() | st.sampled_from(WORDS))
        if custodians or window or query:
            break
    after, before = (window[0], window[0] + window[1]) if window else (None, None)
    if window and draw(st.booleans()):  # an open-ended range now and then
        after, before = draw(st.sampled_from([(after, None), (None, before)]))
    return HoldSpec(custodians, after, before, query, draw(st.booleans()) and draw(st.booleans()))


def policy_yaml(found: list[Cls]) -> str:
    lines = ["classes:"]
    for c in found:
        lines += [f"  - name: {c.name}", f"    retain: {c.retain}", f"    review: {str(c.review).lower()}",
                  f"    erasable: {str(c.erasable).lower()}", "    match:",
                  f"      contact: {json.dumps(list(c.contacts))}"]
        if c.kinds:
            lines.append(f"      kind: {json.dumps(list(c.kinds))}")
    lines += ["  - name: default", "    retain: 7y"]
    return "\n".join(lines) + "\n"


def body(m: Msg, wamid: str) -> bytes:
    text = {"type": "text", "text": {"body": f"{m.word} {wamid}"}}
    meta = {"display_phone_number": BUSINESS, "phone_number_id": "1099"}
    if m.kind == "message":
        value = {"contacts": [{"profile": {"name": "N"}, "wa_id": m.contact}],
                 "messages": [{"from": m.contact, "id": wamid, "timestamp": str(m.at), **text}]}
        field = "messages"
    elif m.kind == "echo":
        value = {"message_echoes": [{"from": BUSINESS, "to": m.contact, "id": wamid, "timestamp": str(m.at), **text}]}
        field = "smb_message_echoes"
    else:
        thread = {"id": m.contact, "messages": [{"from": m.contact, "id": wamid, "timestamp": str(m.at), **text,
                                                 "history_context": {"status": "READ"}}]}
        value = {"history": [{"metadata": {"phase": 0, "chunk_order": 1, "progress": 100}, "threads": [thread]}]}
        field = "history"
    return json.dumps({"object": "whatsapp_business_account", "entry": [{"id": "2099", "changes": [
        {"field": field, "value": {"messaging_product": "whatsapp", "metadata": meta, **value}}]}]}).encode()


class World:
    """A fresh archive with the drawn policy, fed through the webhook and sealed in-process."""

    def __init__(self, home: Path, found: list[Cls]) -> None:
        from archiver.app import create_app

        policies = home / "policies"
        policies.mkdir(parents=True)
        (policies / "retention.yaml").write_text(policy_yaml(found))
        self.services = Services.open(Settings.from_env(make_env(home / "home", ARCHIVER_POLICIES=str(policies))))
        self.client = create_app(services=self.services).test_client()
        self.wamids: dict[str, Msg] = {}

    def ingest(self, msgs: list[Msg]) -> None:
        from archiver import sealer

        for m in msgs:
            wamid = f"wamid.P{len(self.wamids)}"
            self.wamids[wamid] = m
            assert post(self.client, body(m, wamid)).status_code == 200
        sealer.seal_pending(self.services)
        indexer.index_pending(self.services)

    def place(self, spec: HoldSpec, matter: str) -> str:
        crit = holds.parse_criteria(custodians=list(spec.custodians), query=spec.query,
                                    after=_iso(spec.after), before=_iso(spec.before))
        return holds.create_hold(self.services, "test:legal", matter, "hold", crit, "preserve")

    def records(self) -> list[Record]:
        with self.services.sessions() as session:
            return list(session.scalars(select(Record).order_by(Record.seq)))

    def destroyed(self) -> set[str]:
        with self.services.sessions() as session:
            return set(session.scalars(select(DataKey.id).where(DataKey.wrapped.is_(None))))


def _iso(epoch: int | None) -> str | None:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z") if epoch is not None else None


def expected(world: World, found: list[Cls], specs: list[HoldSpec], now: datetime) -> tuple[set[str], dict[str, str]]:
    """(keys that may go now, their class) by the model: checks each item record's class and
    ``retain_until`` against the drawn policy on the way."""
    active = [h for h in specs if not h.released]
    rows = world.records()
    by_seq = {r.seq: r for r in rows}
    held: set[int] = set()
    for r in rows:
        m = world.wamids.get(r.wamid or "")
        if m is None or r.kind not in KINDS:
            continue
        cls = next((c for c in found if c.matches(m)), None)
        assert r.retention_class == (cls.name if cls else "default"), (r.seq, m)
        period = parse_duration(cls.retain if cls else "7y")
        assert r.retain_until == add_period(datetime.fromtimestamp(m.at, UTC), period), (r.seq, m)
        delivery = by_seq[r.delivery_seq] if r.delivery_seq else None
        if any(h.holds_item(m) for h in active):
            held.add(r.seq)
            if delivery is not None:
                held.add(delivery.seq)
        if delivery is not None and any(h.holds_delivery(m.contact) for h in active):
            held.add(delivery.seq)
    blocked = {r.key_id for r in rows if r.retain_until > now or r.seq in held}
    return {r.key_id for r in rows} - blocked, {r.key_id: r.retention_class for r in rows}


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(found=classes(), before=st.lists(messages, min_size=1, max_size=8), after=st.lists(messages, max_size=4),
       specs=st.lists(hold_specs(), max_size=3),
       clock=st.one_of(st.integers(min_value=0, max_value=SPAN + 6 * 86400).map(lambda s: T0 + s),
                       st.just(None)),
       data=st.data())
def test_a_run_destroys_exactly_the_keys_that_may_go(found: list[Cls], before: list[Msg], after: list[Msg],
                                                      specs: list[HoldSpec], clock: int | None,
                                                      data: st.DataObject) -> None:
    # ``None``: a month from today, when the deliveries (kept from their receipt) of short classes have expired too.
    now = datetime.fromtimestamp(clock, UTC) if clock is not None else datetime.now(UTC) + timedelta(days=30)
    with tempfile.TemporaryDirectory(dir=SCRATCH) as tmp:
        world = World(Path(tmp), found)
        try:
            world.ingest(before)  # sealed before the holds exist...
            matter = holds.create_matter(world.services, "test:legal", "Acme v. Us") if specs else ""
            placed = [(world.place(h, matter), h) for h in specs]
            world.ingest(after)  # ...and while they are active (the run syncs the holds first)
            for hold_id, h in placed:
                if h.released:
                    holds.release_hold(world.services, "test:legal", hold_id, "matter closed")

            may_go, cls_of = expected(world, found, specs, now)
            review = {c.name for c in found if c.review}
            out = disposition.run(world.services, now=now)

            gone = world.destroyed()
            assert gone == {k for k in may_go if cls_of[k] not in review}
            assert {k["key"] for k in out["keys"]} == gone
            proposed = {k for item in out["to_review"] for k in item["keys"]}
            assert proposed == {k for k in may_go if cls_of[k] in review}
            assert len(out["batches_proposed"]) == len(out["to_review"])

            # Approve some batches: their keys go with the next run, the others' stay.
            batches = disposition.list_batches(world.services)
            approved = [b for b in batches if data.draw(st.booleans(), label=f"approve {b['class']}")]
            for b in approved:
                disposition.decide(world.services, b["id"], "test:compliance", approve=True)
            again = disposition.run(world.services, now=now)
            assert world.destroyed() == gone | {k for b in approved for k in b["keys"]}
            assert not again["batches_proposed"]  # a batch waiting for approval is not proposed twice
        finally:
            world.services.close()
