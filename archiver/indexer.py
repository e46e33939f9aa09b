"""The indexer: sealed records -> search documents, bulk, idempotent by seq, resumable.

It reads what the sealer sealed (decrypting with the data keys) and advances the index's
own cursor (``SearchIndex.mark``: the catalog's archive id and the last seq) only after
the search backend accepted the batch. The index is derived data: :func:`reindex`
rebuilds it from the WORM store alone, and an index run does the same for an index that
records no state (a new or wiped backend, or one built before indexes carried it), so
pointing ``ARCHIVER_SEARCH_URL`` at an empty backend refills it. An index built for
another archive is refused (only ``archiver reindex`` replaces it). One indexer runs at a
time (a lock like the sealer's), so a reindex never races an index run.

Some fields of a message's document come from later records (``search.UPDATABLE``): the
delivery state its statuses reached, the revoke that withdrew it, its latest edit. They
are always computed the same way, from every record sealed up to the run's chain head H
(:class:`_Facts`):

- ``status``: the statuses of the message's wamid folded in seq order with
  ``items.status_supersedes``, so a late or repeated lower state never downgrades it;
- ``revoked``/``revoked_by``: the first revoke linked to the message; ``edited_by``: the
  last edit linked to it.

A document is built with the facts up to H. A status, edit or revoke whose message an
earlier run indexed patches that document with its facts recomputed up to H
(``SearchIndex.update``). The facts up to H' > H extend those up to H, so re-running any
seq range, or a reindex, writes exactly the same documents.

Edits and revokes reach their message through the catalog's ``links.original`` (a seq).
The sealer resolves it from the wamid when the message was sealed first; an edit or
revoke sealed before its message waits in ``pending_links`` and gets it when the message
is sealed (whose own record then names them: ``edited_by``/``revoked_by``).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import itertools
import json
import logging
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from archiver import items, records
from archiver.catalog import Record, archive_id, chain_head, leader_lock
from archiver.errors import SearchUnavailable
from archiver.search import IndexState
from archiver.search.query import DOCUMENT_KINDS
from archiver.services import Services

log = logging.getLogger(__name__)

INDEXED = DOCUMENT_KINDS
CHANGES = ("status", "edit", "revoke")
"""Kinds of records that change the document of the message they refer to."""
CHANNEL = {"message": "customer", "echo": "app", "outbound": "api", "history_message": "history"}
TEXT_KEYS = {"body", "caption", "filename", "title", "description", "text", "name", "formatted_name",
             "first_name", "last_name", "address", "emoji", "headline", "footer", "header"}
BATCH = 2000
LOCK = "indexer"
LOCK_WAIT = 300.0
"""Seconds a reindex waits for a running index run to finish."""
_IN = 500  # values per SQL IN list

Sealed = tuple[dict[str, Any], bytes | None]


def index_pending(services: Services, *, batch: int = BATCH) -> int:
    """Index everything sealed after the index's cursor; return the number of documents indexed.

    An index without a state is rebuilt from WORM first (the module docstring). Returns 0
    without work while another index run or a reindex holds the lock. Raises
    SearchUnavailable when the backend is down (the cursor stays; the lag grows) or the
    index belongs to another archive.
    """
    with leader_lock(services.engine, LOCK) as leader:
        return _index_after_cursor(services, batch) if leader else 0


def _index_after_cursor(services: Services, batch: int) -> int:
    with services.sessions() as session:
        archive = archive_id(session)
    state = services.search.state()
    if state is None:
        log.info("index.rebuild reason=no-index-state")
        return _rebuild(services, archive)
    if state.archive != archive:
        raise SearchUnavailable(
            "the search index was built for another archive; not writing to it",
            hint="point ARCHIVER_SEARCH_URL at this archive's index, or run 'archiver reindex' to replace it")
    with services.sessions() as session, _Writer(services, archive) as writer:
        after = state.seq
        head = chain_head(session).seq
        if head <= after:
            return 0
        facts = _Facts.load(session, head)
        for chunk, last in _chunks(_sealed(services, session, after, head), batch):
            docs = facts.documents(chunk)
            writer.put(docs, facts.patches(chunk, after), last)
    return writer.count


class _Writer:
    """Writes each batch to the backend while the next one is built.

    The backend mostly waits on the network or on SQLite, which release the GIL. Batches
    are written one at a time and in order, each moving the cursor only once the backend
    has it, so a failure leaves the cursor after the last batch written. Leaving the
    block waits for the write in flight, so the indexer lock outlives it.
    """

    def __init__(self, services: Services, archive: str) -> None:
        self.services, self.archive, self.count = services, archive, 0
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="index-write")
        self._pending: Future[int] | None = None

    def put(self, docs: list[dict[str, Any]], patches: list[dict[str, Any]], last: int) -> None:
        """Write this batch after the previous one. Raises what writing the previous one raised."""
        self.wait()
        self._pending = self._pool.submit(_flush, self.services, IndexState(self.archive, last), docs, patches)

    def wait(self) -> None:
        """Wait for the batch in flight. Raises what writing it raised."""
        pending, self._pending = self._pending, None
        if pending is not None:
            self.count += pending.result()

    def __enter__(self) -> "_Writer":
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: Any) -> None:
        try:
            if kind is None:
                self.wait()
            elif self._pending is not None:  # the block failed (its error goes on): let the write finish
                concurrent.futures.wait([self._pending])
        finally:
            self._pool.shutdown(wait=True)


def _flush(services: Services, state: IndexState, docs: list[dict[str, Any]], patches: list[dict[str, Any]]) -> int:
    """Index ``docs``, apply ``patches``, then record ``state`` (never before the backend has them)."""
    if docs:
        services.search.index(docs)
    if patches:
        services.search.update(patches)
    services.search.mark(state)
    return len(docs)


def reindex(services: Services) -> int:
    """Rebuild the whole index from the WORM store; return the number of documents.

    Waits up to :data:`LOCK_WAIT` seconds for a running index run. Raises SearchUnavailable
    when the backend fails (the old index stays) or the lock stays taken.
    """
    with _exclusive(services):
        with services.sessions() as session:
            archive = archive_id(session)
        return _rebuild(services, archive)


def _rebuild(services: Services, archive: str) -> int:
    """Replace the index by the documents of everything sealed up to the chain head, stating
    ``archive`` and that head. The caller holds the indexer lock."""
    with services.sessions() as session:
        head = chain_head(session).seq
        facts = _Facts.load(session, head)
        docs = (doc for chunk, _ in _chunks(_sealed(services, session, 0, head), BATCH)
                for doc in facts.documents(chunk))
        count: int = services.search.rebuild(docs, IndexState(archive, head))
    return count


@contextlib.contextmanager
def _exclusive(services: Services) -> Iterator[None]:
    """Hold the indexer lock, waiting for whoever has it. Raises SearchUnavailable after LOCK_WAIT."""
    deadline = time.monotonic() + LOCK_WAIT
    while True:
        with leader_lock(services.engine, LOCK) as leader:
            if leader:
                yield
                return
        if time.monotonic() > deadline:
            raise SearchUnavailable("another index run holds the indexer lock",
                                    hint="wait for the running index or reindex to finish")
        time.sleep(0.2)


def _sealed(services: Services, session: Session, after: int, head: int) -> Iterator[Sealed]:
    """Sealed records in ``(after, head]`` with their plaintext (None for kinds never indexed)."""
    stream = records.iter_decrypted(services, session, after, kinds=INDEXED)
    return itertools.takewhile(lambda pair: pair[0]["seq"] <= head, stream)


def _chunks(stream: Iterable[Sealed], size: int) -> Iterator[tuple[list[Sealed], int]]:
    """Batches of about ``size`` records that matter to the index, each with the last seq read."""
    chunk: list[Sealed] = []
    last, unsent = 0, False
    for pair in stream:
        last, unsent = pair[0]["seq"], True
        if pair[0]["kind"] in INDEXED or pair[0]["kind"] in CHANGES:
            chunk.append(pair)
            if len(chunk) >= size:
                yield chunk, last
                chunk, unsent = [], False
    if unsent:  # the tail, or records that never make documents (the cursor passes them too)
        yield chunk, last


class _Facts:
    """What documents show about other records, as of chain head ``head`` (module docstring).

    ``revokes``/``edits`` map a message's seq to its first revoke / last edit; per chunk,
    ``rows`` holds the catalog's (kind, contact, wamid) of its records and ``states`` the
    folded status of the wamids it needs.
    """

    def __init__(self, session: Session, head: int, revokes: dict[int, int], edits: dict[int, int]) -> None:
        self.session, self.head = session, head
        self.revokes, self.edits = revokes, edits
        self.rows: dict[int, tuple[str, str | None, str | None]] = {}
        self.states: dict[str, str | None] = {}

    @classmethod
    def load(cls, session: Session, head: int) -> "_Facts":
        """Read the edit and revoke links sealed up to ``head``."""
        revokes: dict[int, int] = {}
        edits: dict[int, int] = {}
        rows = session.execute(select(Record.seq, Record.kind, Record.links).where(
            Record.kind.in_(("edit", "revoke")), Record.seq <= head).order_by(Record.seq))
        for seq, kind, links in rows:
            original = (links or {}).get("original")
            if isinstance(original, int) and kind == "revoke":
                revokes.setdefault(original, seq)
            elif isinstance(original, int):
                edits[original] = seq
        return cls(session, head, revokes, edits)

    def documents(self, chunk: list[Sealed]) -> list[dict[str, Any]]:
        """The documents of the records in ``chunk`` (read in seq order)."""
        if not chunk:
            return []
        found = self.session.execute(select(Record.seq, Record.kind, Record.contact, Record.wamid).where(
            Record.seq.between(chunk[0][0]["seq"], chunk[-1][0]["seq"]), Record.kind.in_(INDEXED + CHANGES)))
        self.rows = {seq: (kind, contact, wamid) for seq, kind, contact, wamid in found}
        self._fold_states({self.rows[rec["seq"]][2] for rec, _ in chunk if rec["seq"] in self.rows})
        return [doc for rec, plain in chunk if (doc := build_doc(rec, plain, self))]

    def patches(self, chunk: list[Sealed], after: int) -> list[dict[str, Any]]:
        """Patches for documents indexed before this run (seq <= ``after``) that ``chunk`` changes.

        Call after :meth:`documents` of the same chunk.
        """
        targets = self._targets(chunk, after)
        self._fold_states({wamid for _, wamid in targets.values() if wamid})
        return [{"seq": seq, **self.derived(seq, kind, wamid)} for seq, (kind, wamid) in sorted(targets.items())]

    def _targets(self, chunk: list[Sealed], after: int) -> dict[int, tuple[str, str | None]]:
        """``{seq: (kind, wamid)}`` of the earlier documents the chunk's records refer to."""
        wamids = {self.rows[rec["seq"]][2] for rec, _ in chunk if rec["kind"] == "status" and rec["seq"] in self.rows}
        originals = {o for rec, _ in chunk if rec["kind"] in ("edit", "revoke")
                     and isinstance(o := (rec.get("links") or {}).get("original"), int) and o <= after}
        queries = [Record.wamid.in_(part) for part in _parts(sorted(w for w in wamids if w))]
        queries += [Record.seq.in_(part) for part in _parts(sorted(originals))]
        targets: dict[int, tuple[str, str | None]] = {}
        for where in queries:
            # Only the wamid (or seq) in SQL, the rest here: SQLite would otherwise pick
            # the kind index and scan every record of those kinds.
            found = self.session.execute(select(Record.seq, Record.kind, Record.wamid).where(where))
            targets.update({seq: (kind, wamid) for seq, kind, wamid in found if kind in INDEXED and seq <= after})
        return targets

    def _fold_states(self, wamids: set[str | None]) -> None:
        """Keep the state each of ``wamids`` reached with the statuses sealed up to ``head``."""
        self.states = {wamid: None for wamid in wamids if wamid}
        for part in _parts(sorted(self.states)):
            found = self.session.execute(  # by wamid alone, as in _targets
                select(Record.wamid, Record.kind, Record.type, Record.seq).where(Record.wamid.in_(part)))
            for wamid, _, state, _ in sorted((row for row in found if row[1] == "status" and row[3] <= self.head),
                                             key=lambda row: row[3]):
                if items.status_supersedes(state, self.states[wamid]):  # type: ignore[index]  # in_(part): never None
                    self.states[wamid] = state  # type: ignore[index]

    def contact(self, seq: int) -> str | None:
        """The catalog's contact of record ``seq`` (of the current chunk)."""
        row = self.rows.get(seq)
        return row[1] if row else None

    def wamid(self, seq: int) -> str | None:
        """The catalog's wamid of record ``seq`` (of the current chunk)."""
        row = self.rows.get(seq)
        return row[2] if row else None

    def derived(self, seq: int, kind: str, wamid: str | None) -> dict[str, Any]:
        """The :data:`search.UPDATABLE` fields of document ``seq``."""
        revoke = self.revokes.get(seq)
        return {"status": self.states.get(wamid) if wamid else None, "revoked": kind == "revoke" or revoke is not None,
                "revoked_by": revoke, "edited_by": self.edits.get(seq)}


def _parts(values: list[Any]) -> Iterator[list[Any]]:
    """``values`` in lists short enough for one SQL IN."""
    for i in range(0, len(values), _IN):
        yield values[i:i + _IN]


def build_doc(rec: dict[str, Any], plain: bytes | None, ctx: _Facts) -> dict[str, Any] | None:
    """The search document of a sealed record, or None if it is not searchable."""
    if rec["kind"] not in INDEXED or plain is None:
        return None
    payload = json.loads(plain)  # not orjson: it would turn integers beyond 64 bits into floats
    if rec["kind"] == "outbound":
        return _outbound_doc(rec, payload, ctx)
    msg = payload.get("message") or {}
    meta = payload.get("metadata") or {}
    business = meta.get("display_phone_number")
    outgoing = _is_outgoing(rec["kind"], payload, msg, business)
    inner = _inner(msg)
    return _doc(
        rec, ctx, wamid=msg.get("id"), type_=msg.get("type"), outgoing=outgoing,
        channel=_channel(rec["kind"], payload), time=items.parse_time(msg.get("timestamp")),
        sender=business if outgoing else (msg.get("from") or msg.get("from_user_id")),
        recipient=(msg.get("to") or msg.get("to_user_id")) if outgoing else business,
        name=((payload.get("contact") or {}).get("profile") or {}).get("name"), number=business,
        text=" ".join(_texts(msg)), media=inner,
    )


def _outbound_doc(rec: dict[str, Any], payload: dict[str, Any], ctx: _Facts) -> dict[str, Any]:
    capture = payload.get("capture") or {}
    request = capture.get("request") or {}
    response = capture.get("response") or {}
    wamid = ((response.get("messages") or [{}])[0] or {}).get("id")
    return _doc(
        rec, ctx, wamid=wamid, type_=request.get("type"), outgoing=True, channel="api",
        time=items.parse_time(capture.get("sent_at")), sender=capture.get("sender"),
        recipient=str(request.get("to") or "").lstrip("+") or None, name=None, number=None,
        text=" ".join(_texts(request)), media=_inner(request),
    )


def _doc(rec: dict[str, Any], ctx: _Facts, *, wamid: Any, type_: Any, outgoing: bool, channel: str,
         time: int | None, sender: Any, recipient: Any, name: Any, number: Any, text: str,
         media: dict[str, Any] | None) -> dict[str, Any]:
    seq = rec["seq"]
    links = rec.get("links") or {}
    return {
        "seq": seq, "wamid": _s(wamid), "kind": rec["kind"], "type": _s(type_),
        "direction": "out" if outgoing else "in", "channel": channel,
        "time": time if time is not None else int(datetime.fromisoformat(rec["sealed_at"]).timestamp()),
        "from": _s(sender), "to": _s(recipient), "contact": ctx.contact(seq), "contact_name": _s(name),
        "number": _s(number), "text": text, "has_media": media is not None,
        "mime_type": _s((media or {}).get("mime_type")), "edit_of": links.get("original"),
        "retention_class": rec["class"],
        # The catalog's wamid is the payload's; patches look statuses up by it too.
        **ctx.derived(seq, rec["kind"], ctx.wamid(seq)),
    }


def _s(value: Any) -> str | None:
    return None if value is None else str(value)


def _is_outgoing(kind: str, payload: dict[str, Any], msg: dict[str, Any], business: str | None) -> bool:
    if kind == "history_message":
        return payload.get("direction") == "out" or (business is not None and msg.get("from") == business)
    return kind == "echo" or payload.get("field") == "smb_message_echoes"


def _channel(kind: str, payload: dict[str, Any]) -> str:
    if kind in CHANNEL:
        return CHANNEL[kind]
    return "app" if payload.get("field") == "smb_message_echoes" else "customer"


def _inner(msg: dict[str, Any]) -> dict[str, Any] | None:
    """The media object of a message (or of the message an edit carries)."""
    for source in (msg, (msg.get("edit") or {}).get("message") or {}):
        for kind in items.MEDIA_TYPES:
            if isinstance(source.get(kind), dict):
                return source[kind]  # type: ignore[no-any-return]  # a dict, checked above
    return None


def _texts(obj: dict[str, Any] | list[Any], key: str = "") -> Iterator[str]:
    """Every human-readable string inside a message object (bodies, captions, names...)."""
    # Strings are tested here rather than one call deeper: this runs for every field of
    # every message indexed.
    pairs = obj.items() if isinstance(obj, dict) else ((key, v) for v in obj)
    for k, v in pairs:
        if isinstance(v, str):
            if k in TEXT_KEYS and v:
                yield v
            elif k == "response_json":
                yield from _flow_texts(v)
        elif isinstance(v, (dict, list)):
            yield from _texts(v, k)


def _flow_texts(raw: str) -> Iterable[str]:
    """Flow replies carry their answers as a JSON string."""
    try:
        data = json.loads(raw)
    except ValueError:
        return [raw]
    return [str(v) for v in data.values() if isinstance(v, (str, int, float)) and not isinstance(v, bool)] if isinstance(data, dict) else []
