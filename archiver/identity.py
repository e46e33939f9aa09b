"""A contact is a person (architecture decision 12): her identifiers resolve to one identity.

The same customer appears under her phone number / wa_id (history sync, some echoes and
system messages) and under her BSUID (``user_id``, live messages since April 2026).
Payloads that name both pair them: a ``contacts[]`` entry with ``wa_id`` and ``user_id``,
a status with ``recipient_id`` and ``recipient_user_id``, an echo with ``to`` and
``to_user_id``, a consent event with ``wa_id`` and ``user_id``, an address-book entry
with a phone number and a ``user_id`` (``items.Item.ids``). Never paired: a business's
own numbers, ``parent_user_id`` (an enterprise-wide id), and the old and new numbers of
a ``user_changed_number`` system message (a new number is a new BSUID too).

Learning (in the sealer's commit, :func:`learn`): for each newly sealed record naming two
or more identifiers not yet one identity, an ``identity_link`` audit record is journaled
(``ids``: the identifiers, ``proof``: the seq of the record that paired them,
``proof_kind``) in the same transaction, and sealed by the same sealer run. The pairing is
thereby sealed evidence before it acts.

Re-reading (:func:`reread`): records sealed before pairings were learned at sealing (an
archive upgraded from a catalog older than migration 0007) were never read for them. The
first sealer run with this code notes the chain head then (cursor ``identity-reread-through``;
0 on a new archive) and every sealer run re-reads the next window of those records: the
sealed deliveries (``webhook``, ``capture_message``, ``consent``) are decrypted and parsed
again exactly as the sealer parsed them, and each pairing not yet one identity is journaled
by :func:`learn` as above (``proof``: the item record it came from, else the delivery), in
the transaction that moves the ``identity-reread`` cursor; the same run seals it. Re-reading
a record already read at sealing learns nothing twice. Until the re-read is done, and while
a link waits to be sealed or applied, disposition does not run past it (:func:`read_through`).

Applying: ``contact_ids`` (identifier -> identity) is derived. A sealed link record is
applied in the commit that seals it (:func:`apply_sealed`) or, if the table was behind
(a catalog just migrated), by :func:`catch_up` after the run; :func:`rebuild` makes the
table again from the sealed link records alone. The identity id is the smallest
identifier of the person (deterministic: the same links give the same table, whatever
order they merge in).

Identifiers compare as ``retention_policy.identifier`` does: a phone number by its digits,
anything else as written.

Key scopes (decision): records keep their data key scoped by the record's own contact
(``keys.scope_id``), not by the identity id. An identity id can change when two
identities merge later, and a key scope must never change; existing keys stay valid. To
erase a person, enumerate her scopes by every identifier :func:`resolve` gives
(``Record.key_id`` of the records whose contact is one of them).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from archiver import records
from archiver.catalog import (
    ContactId, ContactLink, Cursor, Journal, Record, Segment, chain_head, chunked, cursor_value, set_cursor,
)
from archiver.errors import ArchiverError
from archiver.journal import append_audit
from archiver.retention_policy import identifier
from archiver.search import query as ql
from archiver.services import Services

log = logging.getLogger(__name__)

EVENT = "identity_link"
CURSOR = "identity"  # the last sealed link record applied to contact_ids
REREAD = "identity-reread"  # the last seq re-read for pairings (records sealed before they were learned)
REREAD_THROUGH = "identity-reread-through"  # the chain head when re-reading began: the seqs to re-read
REREAD_WINDOW = 5000  # records re-read per sealer run
ACTOR = "archiver:identity"
MAX_IDS = 8  # identifiers one record can pair (a contacts[] entry names two or three)


class NoSuchContact(ArchiverError):
    code = "no-such-contact"
    http_status = 404


def normalized(ids: Iterable[str]) -> list[str]:
    """The distinct identifiers as they compare, sorted; blanks and overlong ones dropped."""
    out = {identifier(i) for i in ids if isinstance(i, str) and i.strip()}
    return sorted(i for i in out if i and len(i) <= 128 and ":" not in i)


def resolve(session: Session, ident: str) -> set[str]:
    """Every identifier of the person ``ident`` names (itself alone if never paired)."""
    key = identifier(ident)
    row = session.get(ContactId, key)
    if row is None:
        return {key}
    return set(session.scalars(select(ContactId.identifier).where(ContactId.identity == row.identity)))


def resolve_many(session: Session, idents: Iterable[str]) -> set[str]:
    """The union of :func:`resolve` over ``idents``."""
    out: set[str] = set()
    for ident in idents:
        out |= resolve(session, ident)
    return out


def identity_of(session: Session, ident: str) -> str:
    """The identity id of ``ident`` (its own identifier if never paired)."""
    key = identifier(ident)
    row = session.get(ContactId, key)
    return row.identity if row is not None else key


# --------------------------------------------------------------------------- learning (sealer commit)


def learn(session: Session, pairings: Sequence[tuple[int, str, Sequence[str]]]) -> int:
    """Journal an ``identity_link`` for each pairing (proof seq, kind, ids) not yet one identity.

    Runs in the sealer's commit of the proving records (caller commits). Knows the table and
    the links journaled but not sealed yet, so a pairing is journaled once. Returns how many.
    """
    if not pairings:
        return 0
    known = _Union()
    wanted = {i for _, _, ids in pairings for i in normalized(ids)}
    for part in chunked(sorted(wanted), 500):
        for ident, who in session.execute(select(ContactId.identifier, ContactId.identity)
                                          .where(ContactId.identifier.in_(part))):
            known.join(ident, who)
    for body in session.scalars(select(Journal.body).where(
            Journal.sealed.is_(False), Journal.source == "audit", Journal.body.is_not(None))):
        decided = _link_body(body)
        if decided is not None:
            known.join(*decided["ids"])
    journaled = 0
    for seq, kind, ids in sorted(pairings):
        found = normalized(ids)[:MAX_IDS]
        if len(found) < 2 or known.same(found):
            continue
        known.join(*found)
        append_audit(session, EVENT, ACTOR, ids=found, proof=seq, proof_kind=kind)
        journaled += 1
    return journaled


def _link_body(body: bytes | None) -> dict[str, Any] | None:
    """A journaled or sealed link decision, or None for any other audit body."""
    if not body or b'"identity_link"' not in body:
        return None
    try:
        decided = json.loads(body)
    except ValueError:
        return None
    ids = decided.get("ids") if isinstance(decided, dict) else None
    if decided.get("event") != EVENT or not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        return None
    return dict(decided)


class _Union:
    """Union-find over identifiers (in memory, for one decision)."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def join(self, *xs: str) -> None:
        roots = [self.find(x) for x in xs]
        for r in roots[1:]:
            self.parent[r] = roots[0]

    def same(self, xs: Sequence[str]) -> bool:
        return len({self.find(x) for x in xs}) == 1


# --------------------------------------------------------------------------- re-reading sealed records


def reread(services: Services, window: int | None = None) -> int:
    """Re-read the next ``window`` (``REREAD_WINDOW``) records sealed before pairings were learned; journal the links
    they prove (:func:`learn`, sealed by the caller's run). Returns how many were journaled.

    Runs under the sealer's lock (``sealer.seal_pending``), before it seals. Raises NotFound,
    IntegrityError (a segment missing or altered: the run stops, as the sealer's would).
    """
    with services.sessions() as session:
        began = session.get(Cursor, REREAD_THROUGH)
        through = began.value if began is not None else None
        after = cursor_value(session, REREAD)
    if through is None:  # the first run: the records sealed until now were perhaps never read
        with services.sessions.begin() as session:
            through = chain_head(session).seq
            set_cursor(session, REREAD_THROUGH, through)
    if after >= through:
        return 0  # (most runs: done long ago)
    upto = min(through, after + (window or REREAD_WINDOW))
    catch_up(services)  # the table first (a catalog just migrated): a link known is not journaled twice
    # Read outside the write transaction (the segments come from the store); the sealer's lock
    # keeps the cursor and the links journaled meanwhile as they are.
    with services.sessions() as session:
        found = _pairings(services, session, after, upto)
    with services.sessions.begin() as session:
        journaled = learn(session, found)
        set_cursor(session, REREAD, upto)
    log.info("identity.reread after=%d through=%d of=%d links=%d", after, upto, through, journaled)
    return journaled


def _pairings(services: Services, session: Session, after: int, through: int) -> list[tuple[int, str, Sequence[str]]]:
    """(proof seq, proof kind, ids) of every item pairing identifiers in the sealed deliveries of
    ``(after, through]``, parsed as the sealer parses them; the proof is the item's own record,
    or the delivery for a copy of an item archived earlier (as when sealing)."""
    from archiver.planner import EXTRACT, key_digest

    rows = session.execute(select(Record.seq, Record.type, Record.segment_id).where(
        Record.kind == "delivery", Record.type.in_(sorted(EXTRACT)), Record.seq > after,
        Record.seq <= through)).all()
    kinds = {r.seq: str(r.type) for r in rows}
    found: list[tuple[int, tuple[str, ...], str]] = []  # (delivery seq, ids, item key digest)
    for seq, plain in _bodies(services, session, [(r.seq, r.segment_id) for r in rows]):
        if plain is not None:
            found += [(seq, it.ids, key_digest(it.key)) for it in EXTRACT[kinds[seq]](plain) if len(it.ids) > 1]
    own: dict[str, tuple[int, str]] = {}
    for part in chunked(sorted({d for _, _, d in found}), 500):
        own.update((str(d), (s, k)) for d, s, k in session.execute(
            select(Record.item_key, Record.seq, Record.kind).where(Record.item_key.in_(part))))
    out: list[tuple[int, str, Sequence[str]]] = []
    for seq, ids, digest in found:
        proof, kind = own.get(digest, (seq, "delivery"))
        out.append((proof, kind, ids))
    return out


def read_through(session: Session) -> int | None:
    """The last seq whose pairings are all known and applied, or None for every sealed one.

    0 while a link waits to be sealed or applied; the ``identity-reread`` cursor while records
    sealed before pairings were learned are still being re-read. Disposition runs no further.
    """
    if unsealed_links(session) or session.scalar(select(Record.seq).where(
            Record.kind == "audit", Record.type == EVENT, Record.seq > cursor_value(session, CURSOR)).limit(1)):
        return 0
    through, done = session.get(Cursor, REREAD_THROUGH), cursor_value(session, REREAD)
    if through is None:
        return 0  # the sealer has not looked yet: nothing is known to have been read
    return done if done < through.value else None


# --------------------------------------------------------------------------- applying (derived table)


def apply_link(session: Session, seq: int, ids: Sequence[str], proof: Any = None) -> None:
    """Merge ``ids`` and every identity they touch into one identity (caller commits)."""
    found = normalized(ids)
    if len(found) < 2:
        return
    if session.get(ContactLink, (seq, found[0])) is None:
        session.add_all(ContactLink(link_seq=seq, identifier=i, proof_seq=proof if isinstance(proof, int) else 0)
                        for i in found)
    rows = {r.identifier: r for r in session.scalars(select(ContactId).where(ContactId.identifier.in_(found)))}
    identities = {r.identity for r in rows.values()}
    members = {r.identifier: r for r in session.scalars(select(ContactId).where(ContactId.identity.in_(identities)))} \
        if identities else {}
    everyone = set(found) | set(members)
    merged = min(everyone)
    for ident in sorted(everyone):
        row = members.get(ident)
        if row is None:
            session.add(ContactId(identifier=ident, identity=merged, link_seq=seq))
        elif row.identity != merged:
            row.identity = merged
    session.flush()


def apply_sealed(session: Session, links: Sequence[tuple[int, bytes]]) -> None:
    """In the commit that seals them: apply link records (seq, body) if the table is not behind.

    Behind (a sealed link after the cursor that is not one of these), :func:`catch_up` applies
    them all in order after the run instead.
    """
    if not links:
        return
    after = cursor_value(session, CURSOR)
    first = min(seq for seq, _ in links)
    behind = session.scalar(select(Record.seq).where(Record.kind == "audit", Record.type == EVENT,
                                                     Record.seq > after, Record.seq < first).limit(1))
    if behind is not None:
        return
    for seq, body in sorted(links):
        decided = _link_body(body)
        if decided is not None:
            apply_link(session, seq, decided["ids"], decided.get("proof"))
    set_cursor(session, CURSOR, max(seq for seq, _ in links))


def catch_up(services: Services) -> int:
    """Apply every sealed link record after the ``identity`` cursor, in seq order; return how many."""
    done = 0
    while True:
        with services.sessions() as session:
            after = cursor_value(session, CURSOR)
            rows = session.execute(select(Record.seq, Record.segment_id).where(
                Record.kind == "audit", Record.type == EVENT, Record.seq > after)
                .order_by(Record.seq).limit(500)).all()
            if not rows:
                return done
            bodies = dict(_bodies(services, session, [(r.seq, r.segment_id) for r in rows]))
        with services.sessions.begin() as session:
            for row in rows:
                decided = _link_body(bodies.get(row.seq))
                if decided is not None:
                    apply_link(session, row.seq, decided["ids"], decided.get("proof"))
                    done += 1
            set_cursor(session, CURSOR, rows[-1].seq)


def _bodies(services: Services, session: Session, wanted: list[tuple[int, int]]) -> Iterator[tuple[int, bytes | None]]:
    """(seq, plaintext) of sealed records (None once unreadable)."""
    by_segment: dict[int, set[int]] = {}
    for seq, segment_id in wanted:
        by_segment.setdefault(segment_id, set()).add(seq)
    cache: dict[str, bytes | None] = {}
    for segment_id, seqs in sorted(by_segment.items()):
        seg = session.get(Segment, segment_id)
        assert seg is not None
        for rec in records.readable_records(services, session, seg):
            if rec["seq"] in seqs:
                yield rec["seq"], records.decrypt(services, session, rec, cache)


def rebuild(services: Services) -> int:
    """Make ``contact_ids`` again from the sealed link records alone; return how many were applied."""
    with services.sessions.begin() as session:
        session.execute(delete(ContactId))
        session.execute(delete(ContactLink))
        session.execute(delete(Cursor).where(Cursor.name == CURSOR))
    return catch_up(services)


def unsealed_links(session: Session) -> bool:
    """A link decision journaled and not sealed yet."""
    return any(_link_body(b) is not None for b in session.scalars(select(Journal.body).where(
        Journal.sealed.is_(False), Journal.source == "audit", Journal.body.is_not(None))))


def snapshot(session: Session) -> dict[str, Any]:
    """The derived tables: identifier -> identity, and (link seq, identifier, proof seq) rows."""
    ids = {ident: who for ident, who in session.execute(select(ContactId.identifier, ContactId.identity))}
    links = sorted((seq, ident, proof) for seq, ident, proof in session.execute(
        select(ContactLink.link_seq, ContactLink.identifier, ContactLink.proof_seq)))
    return {"ids": ids, "links": links}


# --------------------------------------------------------------------------- reading


def show(services: Services, ident: str) -> dict[str, Any]:
    """The identity of ``ident``: its identifiers, and the sealed records that proved each pairing.

    Raises NoSuchContact when no record names the identifier and no link pairs it.
    """
    with services.sessions() as session:
        ids = sorted(resolve(session, ident))
        rows = {r.identifier: r for r in session.scalars(select(ContactId).where(ContactId.identifier.in_(ids)))}
        if not rows and session.scalar(select(Record.seq).where(Record.contact.in_(_raw_forms(ident, ids))).limit(1)) is None:
            raise NoSuchContact(f"no record names contact {ident!r}")
        link_seqs = set(session.scalars(select(ContactLink.link_seq).where(ContactLink.identifier.in_(ids))))
        link_rows = session.execute(select(Record.seq, Record.segment_id).where(Record.seq.in_(sorted(link_seqs)))).all()
        bodies = dict(_bodies(services, session, [(r.seq, r.segment_id) for r in link_rows]))
        counts = {c: n for c, n in ((c, session.scalar(select(_count()).where(Record.contact == c)))
                                     for c in _raw_forms(ident, ids)) if n}
    links = []
    for seq in sorted(bodies):
        decided = _link_body(bodies[seq])
        if decided is not None:
            links.append({"seq": seq, "ids": decided["ids"], "proof": decided.get("proof"),
                          "proof_kind": decided.get("proof_kind"), "at": decided.get("at")})
    identity = next(iter(rows.values())).identity if rows else identifier(ident)
    return {"identity": identity, "identifiers": ids, "links": links,
            "records": sum(counts.values())}


def _count() -> Any:
    from sqlalchemy import func

    return func.count(Record.seq)


def _raw_forms(ident: str, ids: Iterable[str]) -> list[str]:
    """The contact values records may carry for these identifiers (as given and as compared)."""
    return sorted({ident.strip(), *ids})


# --------------------------------------------------------------------------- search


@contextmanager
def contact_aliases(services: Services) -> Iterator[None]:
    """Within: the search language's ``contact:`` filter matches every identifier of the person."""
    def aliases(value: str) -> tuple[str, ...]:
        with services.sessions() as session:
            return tuple(sorted(resolve(session, value) | {value}))

    token = ql.CONTACT_ALIASES.set(aliases)
    try:
        yield
    finally:
        ql.CONTACT_ALIASES.reset(token)
