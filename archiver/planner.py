"""The planner: journal rows -> chained, encrypted records, ready to commit (sealer step 1's
Python half).

It parses each journal row into its delivery record and the items it carries,
de-duplicates items against the catalog and against batches planned but not committed yet
(``Carry``), numbers them, resolves links, encrypts each payload under its scoped data key,
and chains the records of each segment run. It writes nothing to the catalog (the data keys
it makes go with the batch, for the writer); ``sealer`` frames, signs, commits and publishes
what it plans.

Each record is classed by the policy in force (``Carry.in_force``: the last sealed
``policy`` record, see ``policy_records``) with ``retention_policy.classify``; its
``retain_until`` runs from its own time (``retention_policy.retention_start``) and it
names its class (``class``) and the policy record's seq (``policy``) in the clear.
"""

from __future__ import annotations

import base64
import json
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import select
from sqlalchemy.orm import Session

from archiver import chain, items, keys, retention
from archiver.canonical import canonical, sha256_hex
from archiver.catalog import DataKey, Journal, PendingLink, Record, chunked, utcnow
from archiver.policy_records import InForce
from archiver.retention_policy import Facts, Policy, classify, retention_start
from archiver.journal import OWN_RECORDS
from archiver.services import Services


@dataclass
class Pending:
    """A record planned in this batch, before its seq is known."""

    kind: str
    plaintext: bytes = field(repr=False)
    contact: str | None = field(default=None, repr=False)
    type: str | None = None
    item_key: str | None = None
    wamid: str | None = None
    occurred_at: int | None = None
    journal_id: int | None = None
    delivery: "Pending | None" = None
    links: dict[str, Any] = field(default_factory=dict)  # name -> seq, or Pending in this batch
    clear: dict[str, Any] = field(default_factory=dict)  # extra clear fields (media object)
    media: tuple[items.MediaRef, ...] = ()
    state: str | None = None
    seq: int = 0
    original_ref: str | None = field(default=None, repr=False)  # edits/revokes: the original's wamid
    cls: str = ""  # retention class (planner.classed)
    short: bool = False  # the class keeps records less than a day (its segment locks are not rounded to midnight)
    retain_until: datetime | None = None
    period: str = ""  # the key scope's period: the month the record's retention starts
    ids: tuple[str, ...] = field(default=(), repr=False)  # the customer identifiers the item pairs (identity)
    dup_ids: list[tuple[str, ...]] = field(default_factory=list, repr=False)  # a delivery's duplicate items' ids


def key_digest(natural_key: str) -> str:
    """What goes in the clear for a de-duplication key: its SHA-256."""
    return sha256_hex(natural_key.encode("utf-8"))


@dataclass
class Carry:
    """What the planner knows that the catalog may not show yet (batches not committed)."""

    seq: int
    hash: str
    keys: dict[int, dict[str, int]] = field(default_factory=dict)  # batch no -> item digest -> seq
    waiting: dict[int, list[tuple[str, int, str]]] = field(default_factory=dict)  # batch no -> unresolved links
    committed: set[int] = field(default_factory=set)  # batch nos the writer has committed
    data_keys: dict[str, bytes] = field(default_factory=dict, repr=False)  # unwrapped, this run only
    lock: threading.Lock = field(default_factory=threading.Lock)
    in_force: InForce | None = None  # the policy records are classed with (the last sealed or planned)
    policy_scan: int = 0  # journal ids up to this one were looked at for pending policy rows
    policy_rows: list[Any] = field(default_factory=list, repr=False)  # pending policy rows seen, not planned yet

    def forget_committed(self) -> None:
        """Drop keys of committed batches (call *before* reading the catalog, never after)."""
        with self.lock:
            for n in self.committed:
                self.keys.pop(n, None)
                self.waiting.pop(n, None)
            self.committed.clear()

    def known(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for batch in self.keys.values():
            out.update(batch)
        return out


@dataclass
class Run:
    """One segment's worth of chained records (their stored lines and leaf hashes) and catalog rows."""

    cls: str
    first: int
    last: int
    lines: list[bytes]  # each record's stored line: its canonical bytes with its "hash"
    leaves: list[bytes]  # Merkle leaf hashes (of the canonical bytes without the hash)
    rows: list[dict[str, Any]]
    retain_until: datetime
    last_hash: str


@dataclass
class Batch:
    """One planned batch, handed from the planner to the writer (plain data: it may cross a pipe)."""

    no: int
    parsed_rows: int
    journal: dict[int, int]  # journal id -> delivery seq
    runs: list[Run]
    record_count: int
    first_seq: int
    prev_hash: str
    # Side tables, as rows: duplicate hits, statuses (wamid, state, seq), media to fetch.
    dup_rows: list[dict[str, Any]] = field(default_factory=list)
    statuses: list[tuple[str, str, int]] = field(default_factory=list)
    media_rows: list[dict[str, Any]] = field(default_factory=list)
    waiting: list[tuple[str, int, str]] = field(default_factory=list)  # (target key, edit/revoke seq, kind)
    resolved: list[tuple[int, int, str]] = field(default_factory=list)  # (message seq, edit/revoke seq, kind)
    decisions: list[tuple[str, int, int]] = field(default_factory=list)  # (policy | decision, journal id, seq)
    pairings: list[tuple[int, str, tuple[str, ...]]] = field(default_factory=list)  # (seq, kind, ids): identity.learn
    identity_links: list[tuple[int, bytes]] = field(default_factory=list)  # (seq, body) of identity_link records
    data_keys: list[dict[str, Any]] = field(default_factory=list, repr=False)  # new data_keys rows (wrapped keys)


class Planner:
    """Builds one batch: parse, de-duplicate, assign seqs, resolve links, encrypt, chain."""

    def __init__(self, services: Services, in_force: InForce | None) -> None:
        self.services = services
        self.in_force = in_force
        self.new_policy: Policy | None = None  # the version of a policy row heading this batch
        self.now = datetime.now(timezone.utc)
        self.parsed: list[tuple[Journal, Pending, list[items.Item]]] = []
        self._items: dict[int, list[Pending]] = {}  # journal id -> its items' records, classed
        self.data_keys: dict[str, bytes] = {}
        self.successors: dict[str, str] = {}  # a destroyed scope's key -> the key new records get
        self.session: Session
        self.carried: dict[str, int] = {}
        self._kids: dict[tuple[str | None, str, str], str] = {}
        self._aeads: dict[str, AESGCM] = {}  # data key id -> its cipher, made once per batch
        self._stamps: dict[str | datetime, str] = {"sealed_at": self.now.isoformat()}

    def add_journal_row(self, row: Journal) -> None:
        """1a. Parse one journal row into its own record and the items it carries."""
        body = row.body or b""
        found: list[items.Item] = []
        facts: list[Facts] = []  # of each item
        if row.source in OWN_RECORDS:
            own = Pending(kind=row.source, plaintext=body, journal_id=row.id, type=_meta(row).get("event"))
            self.classed(own, Facts(kind=row.source), row.received_at)
        elif row.source == "media":
            own = _media_record(row, body)
            self.classed(own, Facts(kind="media", contacts=(own.contact,) if own.contact else ()), row.received_at)
        elif row.source in ("policy", "decision"):
            own = self._decision_record(row, body)
        else:
            found = EXTRACT[row.source](body)
            contact = next((i.contact for i in found if i.contact), None)
            own = Pending(kind="delivery", plaintext=body, contact=contact, journal_id=row.id, type=row.source)
            facts = [retention.facts(it.kind, it.payload, it.contact or contact, it.business) for it in found]
            # The delivery is classed like its first item with a contact (else its first item):
            # that item's own facts (its contact is the delivery's).
            first = next((n for n, i in enumerate(found) if i.contact), 0)
            like = facts[first] if found else Facts(kind="delivery")
            self.classed(own, Facts(kind="delivery", business_number=like.business_number, direction=like.direction,
                                    contacts=like.contacts), row.received_at)
        self.parsed.append((row, own, found))
        self._items[row.id] = [self.classed(_item_record(it, own), f, row.received_at) for it, f in zip(found, facts)]

    def _policy(self) -> InForce:
        if self.in_force is None:
            from archiver.errors import ConfigError

            raise ConfigError("no retention policy has been sealed yet: the sealer seals retention.yaml first "
                              "(run 'archiver seal')")
        return self.in_force

    def classed(self, r: Pending, facts: Facts, received_at: datetime, start: datetime | None = None) -> Pending:
        """Class ``r`` by the policy in force: its class, retention end and key period."""
        c = classify(self._policy().policy, facts)
        begin = start or retention_start(r.occurred_at, _aware(received_at))
        r.cls, r.short = c.name, retention.short_class(c)
        r.retain_until = retention.whole_second(c.retain_until(begin))
        r.period = f"{begin.year:04d}-{begin.month:02d}"  # strftime("%Y-%m"), a fifth of the time
        return r

    def _decision_record(self, row: Any, body: bytes) -> Pending:
        """A ``policy`` record (the file's bytes) or a ``decision`` record, kept as long as the
        longest class of the policy in force (for a policy record: its own version)."""
        meta = _meta(row)
        received = _aware(row.received_at)
        if row.source == "policy" and meta.get("policy", "retention") != "retention":
            # Another policy file (consent.yaml): sealed like a version, classing nothing.
            r = Pending(kind="policy", plaintext=body, journal_id=row.id, type=str(meta["policy"]),
                        clear={"policy_sha256": meta.get("sha256"), "loaded_by": meta.get("loaded_by"),
                               "loaded_at": meta.get("loaded_at")})
            self.classed(r, Facts(kind="policy"), received, received)
            r.retain_until = retention.whole_second(retention.longest(self._policy().policy, received))
            return r
        if row.source == "policy":
            self.new_policy = Policy.from_yaml(body, str(meta.get("file") or "retention.yaml"))
            self.in_force = InForce(self.new_policy, 0)  # its seq is known once assigned
            r = Pending(kind="policy", plaintext=body, journal_id=row.id, type="retention",
                        clear={"policy_sha256": meta.get("sha256"), "loaded_by": meta.get("loaded_by"),
                               "loaded_at": meta.get("loaded_at")})
            self.classed(r, Facts(kind="policy"), received, received)
            r.retain_until = retention.whole_second(retention.longest(self.new_policy, received))
            return r
        decided = json.loads(body)
        r = Pending(kind="decision", plaintext=body, journal_id=row.id, type=str(decided.get("event") or "decision"))
        self.classed(r, Facts(kind="decision"), received, received)
        ends = [retention.longest(self._policy().policy, received)]
        if isinstance(decided.get("retain_until"), str):
            ends.append(datetime.fromisoformat(decided["retain_until"]))
        r.retain_until = retention.whole_second(max(ends))
        return r

    def scopes(self) -> set[str]:
        """Data key ids every parsed record may need (duplicates included: a superset)."""
        out = set()
        for row, own, _ in self.parsed:
            out.add(self.kid(own))
            out.update(self.kid(r) for r in self._items[row.id])
        return out

    def kid(self, r: Pending) -> str:
        """Data key scope of a record: (contact, retention class, period of its retention start)."""
        scope = (r.contact, r.cls, r.period)
        if (kid := self._kids.get(scope)) is None:
            kid = self._kids[scope] = keys.scope_id(*scope)
        return self.successors.get(kid, kid)

    def plan(self, session: Session, carry: Carry, no: int) -> Batch:
        """1b-1e. De-duplicate, assign seqs, encrypt and chain; advance ``carry``."""
        self.session = session
        self.carried = carry.known()
        first_seq, prev_hash = carry.seq + 1, carry.hash
        records, dups = self._dedupe()
        by_class = _assign_seqs(records, carry.seq)
        self._resolve_links(records)
        waiting, resolved = self._late_links(records, carry)
        policy_seq = self._policy_seq(records)
        for r in records:
            r.clear["kid"] = self.kid(r)
            r.clear["policy"] = policy_seq
        links = [(r.seq, r.plaintext) for r in records if r.kind == "audit" and r.type == "identity_link"]
        runs = []  # (sealing a run frees its records' plaintext)
        for cls in by_class:  # in seq order
            for run in _runs(by_class[cls], self.services.settings.segment_max_records):
                runs.append(self._seal_run(cls, run, carry))
        with carry.lock:
            carry.keys[no] = {r.item_key: r.seq for r in records if r.item_key}
            carry.waiting[no] = waiting
        return Batch(no=no, parsed_rows=len(self.parsed),
                     journal={row.id: own.seq for row, own, _ in self.parsed},
                     runs=runs, record_count=len(records), first_seq=first_seq, prev_hash=prev_hash,
                     **_side_rows(records, dups), waiting=waiting, resolved=resolved,
                     decisions=[(r.kind, r.journal_id, r.seq) for r in records
                                if r.kind in ("policy", "decision") and r.journal_id is not None],
                     pairings=[(r.seq, r.kind, r.ids) for r in records if len(r.ids) > 1]
                     + [(r.seq, r.kind, ids) for r in records for ids in r.dup_ids],
                     identity_links=links)

    def _policy_seq(self, records: list[Pending]) -> int:
        """The seq of the policy record classing this batch: a new version's own (it heads the
        batch), else the one in force."""
        if self.new_policy is not None:
            (own,) = [r for r in records if r.kind == "policy" and r.type == "retention"]
            self.in_force = InForce(self.new_policy, own.seq)
            return own.seq
        return self._policy().seq

    # 1b. de-duplicate ------------------------------------------------------------------------
    def _known(self, digests: set[str]) -> dict[str, int]:
        """Item keys sealed earlier: committed (catalog) or planned in a batch not yet committed."""
        known = _existing_keys(self.session, digests)
        known.update({d: self.carried[d] for d in digests if d in self.carried})
        return known

    def _dedupe(self) -> tuple[list[Pending], list[tuple[Pending | int, Pending, str]]]:
        """Keep the first copy of each item key; later copies become duplicate hits."""
        digests = [[key_digest(it.key) for it in found] for _, _, found in self.parsed]
        known = self._known({d for ds in digests for d in ds})
        first: dict[str, Pending] = {}
        records: list[Pending] = []
        dups: list[tuple[Pending | int, Pending, str]] = []
        for (row, own, found), ds in zip(self.parsed, digests):
            records.append(own)
            for it, rec, d in zip(found, self._items[row.id], ds):
                prior = first.get(d) or known.get(d)
                if prior:
                    dups.append((prior, own, it.kind))
                    if len(rec.ids) > 1:  # a copy can still pair: its delivery is the proof
                        own.dup_ids.append(rec.ids)
                    continue
                first[d] = rec
                rec.item_key, rec.plaintext = d, canonical(it.payload)  # only now: duplicates never need it
                records.append(rec)
        return records, dups

    # 1c. links ---------------------------------------------------------------------------------
    def _resolve_links(self, records: list[Pending]) -> None:
        """Turn wamid references into seqs where the referenced message is archived.

        Unresolved references stay only inside the encrypted payload (wamids are personal).
        """
        wanted = {key_digest(f"msg:{w}") for r in records for k, w in r.links.items() if isinstance(w, str)}
        known = self._known(wanted)
        in_batch = {r.item_key: r.seq for r in records if r.item_key}
        for r in records:
            resolved: dict[str, Any] = {}
            for name, ref in r.links.items():
                if isinstance(ref, int):
                    resolved[name] = ref
                    continue
                d = key_digest(f"msg:{ref}")
                seq = in_batch.get(d) or known.get(d)
                if seq:
                    resolved[name] = seq if isinstance(seq, int) else seq.seq
            r.links = resolved

    def _late_links(self, records: list[Pending], carry: Carry) -> tuple[list[tuple[str, int, str]],
                                                                          list[tuple[int, int, str]]]:
        """Edits and revokes sealed before their message.

        An edit/revoke whose original is not archived yet waits (``pending_links``); when the
        original is sealed, *its* record names them in the clear (``edited_by``: the latest
        edit, ``revoked_by``: the first revoke), so whichever comes second carries the link.
        Returns (new waiting links, resolved links).
        """
        waiting = [(key_digest(f"msg:{r.original_ref}"), r.seq, r.kind) for r in records
                   if r.kind in ("edit", "revoke") and r.original_ref and "original" not in r.links]
        targets = {r.item_key: r for r in records if r.item_key and r.kind in items.CONVERSATIONAL}
        if not targets:
            return waiting, []
        found = [(key, seq, kind) for batch in carry.waiting.values() for key, seq, kind in batch if key in targets]
        for part in chunked(sorted(targets), 500):
            found += [(key, seq, kind) for key, seq, kind in self.session.execute(
                select(PendingLink.target_key, PendingLink.record_seq, PendingLink.kind)
                .where(PendingLink.target_key.in_(part)))]
        resolved = []
        for key, seq, kind in sorted(found, key=lambda f: f[1]):
            message = targets[key]
            name = "revoked_by" if kind == "revoke" else "edited_by"
            if name == "edited_by" or name not in message.links:  # the latest edit, the first revoke
                message.links[name] = seq
            resolved.append((message.seq, seq, kind))
        return waiting, resolved

    # 1e. encrypt and chain ---------------------------------------------------------------------
    def _seal_run(self, cls: str, run: list[Pending], carry: Carry) -> Run:
        """Encrypt and chain one contiguous run of seqs (the writer frames, roots and signs it)."""
        lock = retention.segment_lock([r.retain_until for r in run if r.retain_until], run[0].short)
        lines, leaves, rows = [], [], []
        h = carry.hash
        for r in run:
            assert r.retain_until is not None  # classed when parsed
            rec = self._record_dict(r, cls, r.retain_until, self.data_keys)
            r.plaintext = b""  # sealed into rec; don't carry it down the pipeline
            body = canonical(rec)
            h = chain.chain_hash(h, body)
            rec["hash"] = h
            lines.append(canonical(rec))
            leaves.append(chain.leaf_hash(body))
            rows.append(_catalog_row(r, cls, r.retain_until, h))
        carry.seq, carry.hash = run[-1].seq, h
        return Run(cls=cls, first=run[0].seq, last=run[-1].seq, lines=lines, leaves=leaves, rows=rows,
                   retain_until=lock, last_hash=h)

    def _iso(self, when: datetime) -> str:
        if (text := self._stamps.get(when)) is None:
            text = self._stamps[when] = when.isoformat()
        return text

    def _record_dict(self, r: Pending, cls: str, retain_until: datetime, data_keys: dict[str, bytes]) -> dict[str, Any]:
        kid = r.clear.pop("kid")
        if (aead := self._aeads.get(kid)) is None:
            aead = self._aeads[kid] = keys.cipher(data_keys[kid])
        blob, commit = keys.seal_payload(aead, r.plaintext, str(r.seq).encode())
        rec: dict[str, Any] = {
            "v": chain.FORMAT, "seq": r.seq, "kind": r.kind, "class": cls, "kid": kid,
            "sealed_at": self._stamps["sealed_at"], "retain_until": self._iso(retain_until),
            "ct": base64.b64encode(blob).decode(), "commit": commit, **r.clear,
        }
        r.clear["kid"] = kid
        if r.type:
            rec["type"] = r.type
        if r.item_key:
            rec["key"] = r.item_key
        if r.delivery is not None:
            rec["delivery"] = r.delivery.seq
        if r.journal_id is not None:
            rec["journal"] = r.journal_id
        if r.links:
            rec["links"] = r.links
        return rec


EXTRACT = {
    "webhook": items.extract_webhook,
    "capture_message": items.extract_capture_message,
    "consent": items.extract_consent,
}


def _item_record(it: items.Item, delivery: Pending) -> Pending:
    """The Pending record of an item; its key and plaintext (the payload's canonical bytes:
    payloads hold parsed values, floats are JsonFloat) are set once it is known to be first-seen."""
    return Pending(
        kind=it.kind, plaintext=b"", contact=it.contact or delivery.contact,
        type=it.type, wamid=it.wamid, occurred_at=it.occurred_at, delivery=delivery,
        media=it.media, state=it.state, links=dict(it.refs), original_ref=it.refs.get("original"), ids=it.ids,
    )


def _side_rows(records: list[Pending], dups: list[tuple[Pending | int, Pending, str]]) -> dict[str, Any]:
    """The batch's duplicate hits, statuses and media to fetch, as plain rows for the writer."""
    return {
        "dup_rows": [{"record_seq": prior if isinstance(prior, int) else prior.seq, "delivery_seq": delivery.seq,
                      "kind": kind} for prior, delivery, kind in dups],
        "statuses": [(r.wamid, r.state, r.seq) for r in records if r.kind == "status" and r.wamid and r.state],
        "media_rows": [{"record_seq": r.seq, "media_id": m.media_id, "expected_sha256": m.sha256,
                        "mime_type": m.mime_type, "key_id": r.clear["kid"]} for r in records for m in r.media],
    }


def _meta(row: Any) -> dict[str, Any]:
    """A journal row's meta, read as text by the planner (only audit rows need it parsed).

    Some drivers (psycopg) decode JSON columns themselves and hand over a dict anyway.
    """
    if isinstance(row.meta, dict):
        return row.meta
    return json.loads(row.meta) if row.meta else {}


def _clean(value: Any) -> str | None:
    return items.clean_text(value) if isinstance(value, str) else None


def _media_record(row: Journal, body: bytes) -> Pending:
    """A stored attachment, linked to the record that named it."""
    notice = json.loads(body)
    return Pending(
        kind="media", plaintext=body, contact=_clean(notice.get("contact")), journal_id=row.id,
        type=_clean(notice.get("mime_type")), links={"message": int(notice["record_seq"])},
        clear={"object": notice["object_key"], "object_sha256": notice["object_sha256"]},
    )


def _existing_keys(session: Session, digests: set[str]) -> dict[str, int]:
    """Item keys already sealed in earlier batches: digest -> seq."""
    found: dict[str, int] = {}
    for part in chunked(sorted(digests), 500):
        found.update((k, s) for k, s in session.execute(select(Record.item_key, Record.seq).where(Record.item_key.in_(part))))  # type: ignore[misc]  # in_(part): never None
    return found


def _assign_seqs(records: list[Pending], last_seq: int) -> dict[str, list[Pending]]:
    """Group by retention class and number each class contiguously (one segment run each), in
    class order but for a new policy record: its class comes first, so it takes the batch's
    first seq, before every record it classes. Returns the groups in seq order."""
    grouped: dict[str, list[Pending]] = defaultdict(list)
    for r in records:
        grouped[r.cls].append(r)
    first = [r.cls for r in records[:1] if r.kind == "policy"]  # policy rows head their batch
    by_class = {cls: grouped[cls] for cls in first + sorted(set(grouped) - set(first))}
    seq = last_seq
    for group in by_class.values():
        for r in group:
            seq += 1
            r.seq = seq
    return by_class


def _runs(records: list[Pending], size: int) -> Iterable[list[Pending]]:
    """Split a class's records into segments of at most ``size``."""
    for i in range(0, len(records), size):
        yield records[i:i + size]


def _aware(when: datetime) -> datetime:
    """A journal time as read (SQLite through a raw select may hand it over naive: it is UTC)."""
    return when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)


def _catalog_row(r: Pending, cls: str, retain_until: datetime, hash_hex: str) -> dict[str, Any]:
    return dict(
        seq=r.seq, kind=r.kind, type=r.type, item_key=r.item_key, wamid=r.wamid, contact=r.contact,
        delivery_seq=r.delivery.seq if r.delivery else None, hash=hash_hex, retention_class=cls,
        retain_until=retain_until, key_id=r.clear["kid"], occurred_at=r.occurred_at, links=r.links,
        policy_seq=r.clear["policy"],
    )


def ensure_data_keys(services: Services, ids: set[str], cache: dict[str, bytes],
                     new: list[dict[str, Any]]) -> dict[str, bytes]:
    """Return unwrapped data keys for ``ids``, making missing ones; ``cache`` carries unwrapped
    keys across batches.

    A missing key is made here and appended to ``new`` as a ``data_keys`` row (wrapped), for the
    writer to insert in the same transaction as the batch's outbox segments: a key is committed
    with the first ciphertext under it, never after it (nothing under it reaches WORM before that
    commit), and planning never waits for the catalog's write lock. The key stays in ``cache``, so
    a later batch of this run does not make it again. Only the sealer makes keys, under its
    leader lock; a batch that does not commit stops the run, and the next run reads the catalog
    afresh.
    """
    wanted = ids - cache.keys()
    if wanted:
        with services.sessions() as session:
            found = _wrapped_keys(session, wanted)
        if missing := wanted - found.keys():
            now = utcnow()
            for kid in sorted(missing):
                cache[kid] = keys.new_data_key()
                new.append({"id": kid, "wrapped": services.kek.wrap(cache[kid], kid), "created_at": now})
        cache.update({kid: services.kek.unwrap(w, kid) for kid, w in found.items() if w})
    return {kid: cache[kid] for kid in ids if kid in cache}


def successor_keys(services: Services, ids: set[str]) -> dict[str, str]:
    """For each of ``ids`` that was destroyed (disposition, erasure), the live key that records of
    its scope sealed afterwards get: ``<id>~2``, ``<id>~3``... (a destroyed key never comes back)."""
    out: dict[str, str] = {}
    with services.sessions() as session:
        gone: set[str] = set()
        for part in chunked(sorted(ids), 500):
            gone.update(session.scalars(select(DataKey.id).where(DataKey.id.in_(part), DataKey.wrapped.is_(None))))
        for kid in sorted(gone):
            later = dict(session.execute(select(DataKey.id, DataKey.wrapped).where(DataKey.id.like(f"{kid}~%"))).all())
            n = 2
            while f"{kid}~{n}" in later and later[f"{kid}~{n}"] is None:
                n += 1
            out[kid] = f"{kid}~{n}"
    return out


def _wrapped_keys(session: Session, ids: set[str]) -> dict[str, bytes | None]:
    out: dict[str, bytes | None] = {}
    for part in chunked(sorted(ids), 500):
        out.update((kid, wrapped) for kid, wrapped in session.execute(
            select(DataKey.id, DataKey.wrapped).where(DataKey.id.in_(part))))
    return out
