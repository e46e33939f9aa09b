"""The catalog: SQLAlchemy 2.x models and the engine, from any SQLAlchemy URL.

SQLite (embedded default) and PostgreSQL (production). The catalog indexes what the WORM
store holds; the store stays the evidence (``archiver verify`` checks they agree).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import fcntl
import os
import threading
import weakref
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar

from sqlalchemy import (
    JSON, BigInteger, Boolean, CheckConstraint, DateTime, ForeignKey, Index, Integer, LargeBinary, String,
    TypeDecorator, create_engine, event, select, text,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql.schema import Table
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from archiver import home
from archiver.errors import CatalogUnknown, ConfigError

SEQ = BigInteger().with_variant(Integer, "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite drops the zone; we put it back)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to the catalog")
        return value.astimezone(timezone.utc) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def utcnow() -> datetime:
    """Aware UTC now."""
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    """Declarative base; reprs never include content columns."""

    __table__: ClassVar[Table]  # a Table (SQLAlchemy types it as any FromClause)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {getattr(self, 'id', getattr(self, 'seq', '?'))}>"


class Journal(Base):
    """Raw intake, committed before the 200. ``body`` is cleared once sealed (it is in WORM)."""

    __tablename__ = "journal"
    id: Mapped[int] = mapped_column(SEQ, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(24))  # webhook | capture_message | consent | audit | media | policy | decision
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    body: Mapped[bytes | None] = mapped_column(LargeBinary)
    body_sha256: Mapped[str] = mapped_column(String(64))
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # signature header, remote, actor
    sealed: Mapped[bool] = mapped_column(Boolean, default=False)
    delivery_seq: Mapped[int | None] = mapped_column(SEQ, index=True)
    __table_args__ = (Index("ix_journal_unsealed", "sealed", "id"),)


class ChainHead(Base):
    """One row: the last sealed seq and hash (the chain's tip)."""

    __tablename__ = "chain_head"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(SEQ, default=0)
    hash: Mapped[str] = mapped_column(String(64))
    checkpoint: Mapped[str] = mapped_column(String(64))  # digest of the last checkpoint


class Segment(Base):
    """One sealed WORM object holding a contiguous run of seqs of one retention class."""

    __tablename__ = "segments"
    id: Mapped[int] = mapped_column(SEQ, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(255), unique=True)
    retention_class: Mapped[str] = mapped_column(String(64))
    first_seq: Mapped[int] = mapped_column(SEQ, index=True)
    last_seq: Mapped[int] = mapped_column(SEQ)
    records: Mapped[int] = mapped_column(Integer)
    merkle_root: Mapped[str] = mapped_column(String(64))
    last_hash: Mapped[str] = mapped_column(String(64))
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    retain_until: Mapped[datetime] = mapped_column(UTCDateTime())
    checkpoint_key: Mapped[str] = mapped_column(String(255))
    checkpoint_digest: Mapped[str] = mapped_column(String(64))
    # Outbox: a segment is planned and committed here first ("writing", bytes kept), then
    # put to WORM, then marked "stored" and its bytes dropped. A crash in between is
    # finished by re-putting the same bytes (put_locked is idempotent for identical bytes).
    state: Mapped[str] = mapped_column(String(8), default="writing", index=True)
    blob: Mapped[bytes | None] = mapped_column(LargeBinary)
    checkpoint_blob: Mapped[bytes | None] = mapped_column(LargeBinary)
    sealed_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Record(Base):
    """Catalog entry of one sealed record (the record itself lives in its segment)."""

    __tablename__ = "records"
    seq: Mapped[int] = mapped_column(SEQ, primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(String(24), index=True)
    type: Mapped[str | None] = mapped_column(String(64))
    item_key: Mapped[str | None] = mapped_column(String(64), unique=True)  # sha256 of the dedupe key
    wamid: Mapped[str | None] = mapped_column(String(255), index=True)
    contact: Mapped[str | None] = mapped_column(String(128), index=True)
    delivery_seq: Mapped[int | None] = mapped_column(SEQ)
    segment_id: Mapped[int] = mapped_column(ForeignKey("segments.id"))
    hash: Mapped[str] = mapped_column(String(64))
    retention_class: Mapped[str] = mapped_column(String(64))
    retain_until: Mapped[datetime] = mapped_column(UTCDateTime())
    key_id: Mapped[str] = mapped_column(String(96))
    occurred_at: Mapped[int | None] = mapped_column(BigInteger, index=True)
    links: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    policy_seq: Mapped[int | None] = mapped_column(SEQ)  # the policy record that classed it


class DuplicateHit(Base):
    """A later copy of an already archived item (its delivery is sealed; the item is not)."""

    __tablename__ = "duplicate_hits"
    id: Mapped[int] = mapped_column(SEQ, primary_key=True, autoincrement=True)
    record_seq: Mapped[int] = mapped_column(SEQ, index=True)
    delivery_seq: Mapped[int] = mapped_column(SEQ)
    kind: Mapped[str] = mapped_column(String(24))


class PendingLink(Base):
    """An edit or revoke sealed before the message it names: resolved when that message is sealed.

    ``target_key`` is the digest of the message's de-duplication key (``msg:<wamid>``), the
    same value its record will carry in the clear as ``key``.
    """

    __tablename__ = "pending_links"
    id: Mapped[int] = mapped_column(SEQ, primary_key=True, autoincrement=True)
    target_key: Mapped[str] = mapped_column(String(64), index=True)
    record_seq: Mapped[int] = mapped_column(SEQ)
    kind: Mapped[str] = mapped_column(String(24))  # edit | revoke


class MessageState(Base):
    """Highest delivery state reached per outbound wamid (never downgraded)."""

    __tablename__ = "message_state"
    wamid: Mapped[str] = mapped_column(String(255), primary_key=True)
    state: Mapped[str] = mapped_column(String(16))
    status_seq: Mapped[int] = mapped_column(SEQ)


class DataKey(Base):
    """A data key wrapped by the KEK; ``wrapped`` is cleared when it is destroyed."""

    __tablename__ = "data_keys"
    id: Mapped[str] = mapped_column(String(96), primary_key=True)
    wrapped: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    destroyed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Media(Base):
    """An attachment to fetch, fetched, or given up on."""

    __tablename__ = "media"
    id: Mapped[int] = mapped_column(SEQ, primary_key=True, autoincrement=True)
    record_seq: Mapped[int] = mapped_column(SEQ, index=True)
    media_id: Mapped[str] = mapped_column(String(128))
    expected_sha256: Mapped[str | None] = mapped_column(String(128))
    mime_type: Mapped[str | None] = mapped_column(String(128))
    key_id: Mapped[str] = mapped_column(String(96))
    state: Mapped[str] = mapped_column(String(16), default="pending")  # pending | stored | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_error: Mapped[str | None] = mapped_column(String(255))
    object_key: Mapped[str | None] = mapped_column(String(255))
    sha256: Mapped[str | None] = mapped_column(String(64))
    size: Mapped[int | None] = mapped_column(BigInteger)
    __table_args__ = (Index("ix_media_due", "state", "next_attempt_at"),)


class Token(Base):
    """An API token: only its SHA-256 is stored."""

    __tablename__ = "tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Archive(Base):
    """One row: the archive's random id, made when the catalog is created.

    A derived store records the id it was built for (the search index: ``SearchIndex.state``),
    so one built for another archive is told apart from this archive's.
    """

    __tablename__ = "archive"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)  # always 1
    archive_id: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    __table_args__ = (CheckConstraint("id = 1", name="ck_archive_one_row"),)


class PolicyVersion(Base):
    """A version of ``retention.yaml`` the service loaded, journaled when it differs from the
    version before it, then sealed as a ``policy`` record (``seq``). Derived state: the sealed
    records hold the same bytes."""

    __tablename__ = "policy_versions"
    id: Mapped[int] = mapped_column(SEQ, primary_key=True, autoincrement=True)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    file: Mapped[str] = mapped_column(String(1024))
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    journal_id: Mapped[int] = mapped_column(SEQ)
    seq: Mapped[int | None] = mapped_column(SEQ, index=True)  # set when its policy record is committed
    loaded_by: Mapped[str] = mapped_column(String(128))
    loaded_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # Which policy file: retention (classes records) or consent (keywords); see policy_records.
    name: Mapped[str] = mapped_column(String(32), default="retention", server_default="retention")


class RetentionExtension(Base):
    """``archiver retention extend``: sealed as a ``decision`` record (``seq``), then applied
    (``applied_at``) to the catalog and the store's locks. Derived state, like the holds."""

    __tablename__ = "retention_extensions"
    id: Mapped[int] = mapped_column(SEQ, primary_key=True, autoincrement=True)
    retention_class: Mapped[str] = mapped_column(String(64))
    retain_until: Mapped[datetime] = mapped_column(UTCDateTime())
    journal_id: Mapped[int] = mapped_column(SEQ)
    seq: Mapped[int | None] = mapped_column(SEQ)  # the decision record, once sealed
    applied_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    records: Mapped[int | None] = mapped_column(Integer)
    segments: Mapped[int | None] = mapped_column(Integer)


class Cursor(Base):
    """Progress of a derived stage kept in the catalog (the search index keeps its own)."""

    __tablename__ = "cursors"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[int] = mapped_column(SEQ, default=0)


class JobState(Base):
    """The schedule's state of one background job (``archiver.jobs``): derived, like a cursor.

    ``next_run_at`` is the one next run every jobs process follows: a scheduled run whose
    time another process already advanced past is skipped. ``running_since`` is set while
    a sealed job runs: found set by the next run (which holds the job's lock, so nobody
    else is running it), it means the process died mid-run. ``last_journal_id`` is the
    journal row of the last ``job_run`` record (its ``delivery_seq`` once sealed).
    """

    __tablename__ = "job_state"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_outcome: Mapped[str | None] = mapped_column(String(16))  # ok | failed
    last_error: Mapped[str | None] = mapped_column(String(64))  # the error's class (or code), never its text
    last_trigger: Mapped[str | None] = mapped_column(String(16))  # schedule | start | manual
    last_journal_id: Mapped[int | None] = mapped_column(SEQ)
    next_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    running_since: Mapped[datetime | None] = mapped_column(UTCDateTime())
    running_owner: Mapped[str | None] = mapped_column(String(128))  # host:pid
    runs: Mapped[int] = mapped_column(BigInteger, default=0)
    failures: Mapped[int] = mapped_column(BigInteger, default=0)


class VerificationState(Base):
    """The last nightly verification (``archiver.integrity_job``): one row (``id`` 1), derived.

    Each run is sealed as a ``verification`` audit record; this row only keeps its outcome so
    that ``/healthz`` and ``archiver stats`` read it by primary key instead of the journal.
    ``first_error`` names a seq or an object, never content.
    """

    __tablename__ = "verification_state"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    checked_at: Mapped[datetime] = mapped_column(UTCDateTime())
    status: Mapped[str] = mapped_column(String(16))  # ok | degraded
    first_error: Mapped[str | None] = mapped_column(String(1024))
    records: Mapped[int] = mapped_column(BigInteger, default=0)
    segments: Mapped[int] = mapped_column(BigInteger, default=0)
    checkpoints: Mapped[int] = mapped_column(BigInteger, default=0)
    journal_id: Mapped[int | None] = mapped_column(SEQ)
    report_key: Mapped[str | None] = mapped_column(String(512))
    report_sha256: Mapped[str | None] = mapped_column(String(64))


class ExportJob(Base):
    """One export job (``archiver.export_jobs``): ``POST /api/v1/exports`` queues it, a runner
    thread (or the ``exports`` housekeeping job) writes the bundle; derived state, the export
    itself is sealed as its ``export`` audit record. ``error``: the error's code, never its text."""

    __tablename__ = "export_jobs"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    state: Mapped[str] = mapped_column(String(16), index=True)  # queued | running | done | failed
    actor: Mapped[str] = mapped_column(String(255))
    selection: Mapped[dict[str, Any]] = mapped_column(JSON)
    options: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # formats, tz (export.write_bundle's)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    records_done: Mapped[int] = mapped_column(BigInteger, default=0)
    records_total: Mapped[int | None] = mapped_column(BigInteger)
    counts: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    manifest_sha256: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(String(64))
    owner: Mapped[str | None] = mapped_column(String(128))  # host:pid of the runner


class Matter(Base):
    """A legal matter (case), from its sealed ``matter_created`` decision (derived state)."""

    __tablename__ = "matters"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_by: Mapped[str | None] = mapped_column(String(255))
    decision_seq: Mapped[int] = mapped_column(SEQ)


class Hold(Base):
    """A litigation hold, from its sealed decisions (derived state, see :mod:`archiver.holds`).

    ``cursor``: the last seq evaluated against the criteria (records after it are looked at
    by the next hold sync).
    """

    __tablename__ = "holds"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    matter_id: Mapped[str] = mapped_column(ForeignKey("matters.id"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    criteria: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    reason: Mapped[str] = mapped_column(String(2000))
    status: Mapped[str] = mapped_column(String(16), default="active")  # active | released
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_by: Mapped[str | None] = mapped_column(String(255))
    decision_seq: Mapped[int] = mapped_column(SEQ)
    cursor: Mapped[int] = mapped_column(SEQ, default=0)
    released_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    released_by: Mapped[str | None] = mapped_column(String(255))
    release_reason: Mapped[str | None] = mapped_column(String(2000))
    release_seq: Mapped[int | None] = mapped_column(SEQ)
    # After an edit: records up to this seq that the new criteria no longer select are released
    # (last: migration 0010 appends it).
    recheck_through: Mapped[int] = mapped_column(SEQ, default=0, server_default="0")


class HeldRecord(Base):
    """A record an active hold holds."""

    __tablename__ = "held_records"
    hold_id: Mapped[str] = mapped_column(ForeignKey("holds.id"), primary_key=True)
    seq: Mapped[int] = mapped_column(SEQ, primary_key=True, autoincrement=False, index=True)


class HoldObject(Base):
    """A WORM object an active hold has put its legal hold on (segment, checkpoint, media)."""

    __tablename__ = "hold_objects"
    hold_id: Mapped[str] = mapped_column(ForeignKey("holds.id"), primary_key=True)
    object_key: Mapped[str] = mapped_column(String(255), primary_key=True, index=True)
    kind: Mapped[str] = mapped_column(String(16))  # segment | checkpoint | media


class ContactId(Base):
    """One identifier (wa_id/phone digits, BSUID) of a contact identity (``archiver.identity``).

    Derived from the sealed ``identity_link`` records; ``identity`` is the smallest identifier
    of the person; ``link_seq`` the link record that joined this identifier (the record that
    proved the pairing is named in that link record).
    """

    __tablename__ = "contact_ids"
    identifier: Mapped[str] = mapped_column(String(128), primary_key=True)
    identity: Mapped[str] = mapped_column(String(128), index=True)
    link_seq: Mapped[int] = mapped_column(SEQ)


class ContactLink(Base):
    """An identifier a sealed ``identity_link`` record names (derived with ``contact_ids``)."""

    __tablename__ = "contact_links"
    link_seq: Mapped[int] = mapped_column(SEQ, primary_key=True, autoincrement=False)
    identifier: Mapped[str] = mapped_column(String(128), primary_key=True, index=True)
    proof_seq: Mapped[int] = mapped_column(SEQ)


class HoldEvent(Base):
    """One line of a hold's history: a sealed decision applied (created, applied, released)."""

    __tablename__ = "hold_history"
    id: Mapped[int] = mapped_column(SEQ, primary_key=True, autoincrement=True)
    hold_id: Mapped[str] = mapped_column(ForeignKey("holds.id"), index=True)
    event: Mapped[str] = mapped_column(String(32))
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    actor: Mapped[str | None] = mapped_column(String(255))
    decision_seq: Mapped[int] = mapped_column(SEQ)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class Disposition(Base):
    """One disposition run's decision (``archiver.disposition``): journaled with its plan, sealed as
    a ``decision`` record (event ``disposition``; ``seq`` once sealed), then applied
    (``applied_at``): keys destroyed, index entries removed. Derived state: the sealed record
    holds the same plan."""

    __tablename__ = "dispositions"
    id: Mapped[int] = mapped_column(SEQ, primary_key=True, autoincrement=True)
    journal_id: Mapped[int] = mapped_column(SEQ, index=True)
    seq: Mapped[int | None] = mapped_column(SEQ)
    plan: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    actor: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    applied_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class DisposedKey(Base):
    """A data key a sealed disposition destroyed (what ``archiver show`` names for its records)."""

    __tablename__ = "disposed_keys"
    key_id: Mapped[str] = mapped_column(String(96), primary_key=True)
    disposition_id: Mapped[int] = mapped_column(ForeignKey("dispositions.id"), index=True)
    disposed_at: Mapped[datetime] = mapped_column(UTCDateTime())


class WormDeletion(Base):
    """A WORM object (a segment or a media object) disposition deletes: every record in it disposed.

    ``state``: pending (held, retained, or the store refused or was down: retried by the next
    run) | deleted. For a segment, ``leaf_hashes`` are its RFC 6962 leaves and ``commitments``
    its records' content commitments, in seq order, read just before the delete, so ``archiver
    verify`` still checks the segment's Merkle root against its signed checkpoint and ``archiver
    show`` still gives each record's proof once the bytes are gone (checkpoints are never deleted)."""

    __tablename__ = "worm_deletions"
    object_key: Mapped[str] = mapped_column(String(255), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # segment | media
    segment_id: Mapped[int | None] = mapped_column(SEQ, index=True)  # a segment's catalog row
    version: Mapped[str | None] = mapped_column(String(255))
    disposition_id: Mapped[int] = mapped_column(SEQ, index=True)
    state: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    leaf_hashes: Mapped[list[str]] = mapped_column(JSON, default=list)
    commitments: Mapped[list[str]] = mapped_column(JSON, default=list)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(String(255))
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    deleted_by_run: Mapped[int | None] = mapped_column(SEQ)  # the disposition whose run deleted it


class DispositionBatch(Base):
    """Keys of a ``review: true`` class due for disposition, waiting for a compliance officer.

    ``state``: pending | approved | rejected | disposed. An approval or rejection is sealed as a
    ``decision`` record first (``decision_journal_id``); only approved batches are destroyed,
    by the next disposition run (``disposition_id``)."""

    __tablename__ = "disposition_batches"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    retention_class: Mapped[str] = mapped_column(String(64))
    key_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    seqs: Mapped[list[list[int]]] = mapped_column(JSON, default=list)  # runs [[first, last], ...]
    records: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    decided_by: Mapped[str | None] = mapped_column(String(255))
    reason: Mapped[str | None] = mapped_column(String(2000))
    decision_journal_id: Mapped[int | None] = mapped_column(SEQ)
    disposition_id: Mapped[int | None] = mapped_column(SEQ)


class ConsentEntry(Base):
    """One line of the consent ledger (``archiver.consent``): append-only, derived from sealed
    records (a consent item, a customer's message holding an opt-out keyword, a confirm or
    dismiss decision), each line naming the record that proves it (``record_seq``).

    ``action``: opt_in | opt_out | confirm | dismiss (the last two name the detected opt-out
    they decide in ``refers_to``); ``source``: user_preferences | consent_api | keyword |
    review; ``occurred_at``: epoch seconds the evidence states."""

    __tablename__ = "consent_entries"
    id: Mapped[int] = mapped_column(SEQ, primary_key=True, autoincrement=True)
    contact: Mapped[str] = mapped_column(String(128), index=True)
    category: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(String(24))
    occurred_at: Mapped[int] = mapped_column(BigInteger)
    record_seq: Mapped[int] = mapped_column(SEQ, index=True)
    refers_to: Mapped[int | None] = mapped_column(SEQ)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    __table_args__ = (Index("ux_consent_entries_record", "record_seq", "category", "action", unique=True),)


class MarketingSend(Base):
    """An outbound marketing message the consent review found (derived; one per wamid):
    a MARKETING template sent through the capture API or echoed, or a message whose status
    was priced ``marketing``. ``record_seq``: the message record (its first status if the
    message itself was never captured); ``evidence``: the seqs that make it marketing."""

    __tablename__ = "marketing_sends"
    wamid: Mapped[str] = mapped_column(String(255), primary_key=True)
    record_seq: Mapped[int] = mapped_column(SEQ)
    contact: Mapped[str] = mapped_column(String(128), index=True)
    sent_at: Mapped[int] = mapped_column(BigInteger, index=True)
    via: Mapped[str] = mapped_column(String(16))
    evidence: Mapped[list[int]] = mapped_column(JSON, default=list)


class Finding(Base):
    """A review's finding (``archiver.findings``): journaled as a ``finding`` record with this
    row in one transaction, then sealed (``seq``). ``key`` (SHA-256 of kind, rule and subject)
    is unique: a re-run never finds the same thing twice. Resolving is sealed as a
    ``decision`` record (``resolution_journal_id``, then ``resolution_seq``) before the
    finding shows ``resolved``."""

    __tablename__ = "findings"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(16), index=True)
    rule: Mapped[str] = mapped_column(String(64))
    record_seq: Mapped[int | None] = mapped_column(SEQ)
    evidence: Mapped[list[int]] = mapped_column(JSON, default=list)
    contact: Mapped[str | None] = mapped_column(String(128))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    journal_id: Mapped[int] = mapped_column(SEQ)
    seq: Mapped[int | None] = mapped_column(SEQ)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    status: Mapped[str] = mapped_column(String(16), default="open", index=True)  # open | resolving | resolved
    resolved_by: Mapped[str | None] = mapped_column(String(255))
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    note: Mapped[str | None] = mapped_column(String(2000))
    resolution_journal_id: Mapped[int | None] = mapped_column(SEQ)
    resolution_seq: Mapped[int | None] = mapped_column(SEQ)


class TemplateSnapshot(Base):
    """A template definition as the Graph API answered a sync (``archiver.template_sync``):
    content-addressed (``sha256`` of the canonical definition, the sealed ``template`` record's
    body), one row each time a (name, language)'s definition differs from its latest snapshot;
    ``seq`` once sealed. ``synced_at``: epoch seconds the sync read it (in force from then)."""

    __tablename__ = "template_snapshots"
    id: Mapped[int] = mapped_column(SEQ, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(512), index=True)
    language: Mapped[str] = mapped_column(String(32))
    template_id: Mapped[str | None] = mapped_column(String(64))
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str | None] = mapped_column(String(32))
    category: Mapped[str | None] = mapped_column(String(32))
    components_sha256: Mapped[str] = mapped_column(String(64))
    synced_at: Mapped[int] = mapped_column(BigInteger)
    journal_id: Mapped[int] = mapped_column(SEQ)
    seq: Mapped[int | None] = mapped_column(SEQ)


class TemplateSend(Base):
    """An outbound template message (capture API or echo) bound to the template snapshot in
    force when it was sent (``snapshot_seq``: the last sealed snapshot of its name and
    language synced at or before ``sent_at``; None: none was). Derived by the template review."""

    __tablename__ = "template_sends"
    wamid: Mapped[str] = mapped_column(String(255), primary_key=True)
    record_seq: Mapped[int] = mapped_column(SEQ)
    name: Mapped[str] = mapped_column(String(512), index=True)
    language: Mapped[str | None] = mapped_column(String(32))
    sent_at: Mapped[int] = mapped_column(BigInteger)
    snapshot_seq: Mapped[int | None] = mapped_column(SEQ)
    status: Mapped[str | None] = mapped_column(String(32))
    category: Mapped[str | None] = mapped_column(String(32))
    evidence: Mapped[list[int]] = mapped_column(JSON, default=list)


class TemplateReview(Base):
    """A human review of a template (``archiver.template_review.record_review``): journaled as a
    ``decision`` record (event ``template_reviewed``) and counted only once sealed (``seq``)."""

    __tablename__ = "template_reviews"
    id: Mapped[int] = mapped_column(SEQ, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(512), index=True)
    decision: Mapped[str] = mapped_column(String(16))
    note: Mapped[str] = mapped_column(String(2000))
    actor: Mapped[str] = mapped_column(String(255))
    reviewed_at: Mapped[int] = mapped_column(BigInteger)
    journal_id: Mapped[int] = mapped_column(SEQ)
    seq: Mapped[int | None] = mapped_column(SEQ)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    """WAL lets intake write while readers read; busy_timeout makes writers wait, not fail."""
    dbapi_conn.isolation_level = None  # let SQLAlchemy's "begin" event emit BEGIN itself
    cur = dbapi_conn.cursor()
    # Takes effect only on a new, empty file (before the first table): pages freed by sealing
    # can then be handed back with ``PRAGMA incremental_vacuum`` (``truncate_wal``). A catalog
    # created before keeps auto_vacuum=NONE (its free pages are reused by new rows) until a
    # one-time ``VACUUM`` with the archive stopped (README, "Catalog size").
    if cur.execute("PRAGMA page_count").fetchone()[0] == 0:  # setting it on a used file is a write
        cur.execute("PRAGMA auto_vacuum=INCREMENTAL")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")  # a 200 means the body is on disk
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA secure_delete=ON")  # freed pages (sealed journal bodies) are zeroed
    cur.close()


def _sqlite_begin(conn: Any) -> None:
    """Writers (``sessions.begin()``) take SQLite's write lock at BEGIN: a transaction that
    reads then writes would otherwise fail (not wait) when another connection committed in
    between (WAL snapshot upgrade). Readers begin deferred and never block writers."""
    immediate = conn.get_execution_options().get("catalog_write", False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def make_engine(url: str, *, check_schema: bool = True) -> Engine:
    """Create the engine for ``url``; with ``check_schema``, open only a catalog at this
    version's schema revision, creating an empty one (see :mod:`archiver.migrations`).

    Raises ConfigError on a bad URL/driver, CatalogOutdated (run ``archiver migrate``)
    or CatalogUnknown.
    """
    try:
        if url.startswith("sqlite:"):
            path = url.split("///", 1)[-1]
            if path and path != ":memory:":
                home.private_dir(Path(path).parent)
            # hide_parameters: error messages must never quote values (contacts, wamids).
            engine = create_engine(url, connect_args={"timeout": 30}, hide_parameters=True)
            event.listen(engine, "connect", _sqlite_pragmas)
            event.listen(engine, "begin", _sqlite_begin)
        else:
            engine = create_engine(url, pool_pre_ping=True, hide_parameters=True)
    except ImportError as exc:
        raise ConfigError(f"catalog driver missing for {url.split(':', 1)[0]}: "
                          "pip install 'whatsapp-archiver[postgres]'") from exc
    if check_schema:
        from archiver import migrations

        try:
            migrations.check(engine)
        except BaseException:
            engine.dispose()
            raise
    db_file = home.sqlite_path(url)
    if db_file is not None:
        home.private_file(db_file)  # an older file may be wider; SQLite gives -wal and -shm its mode
    return engine


class WriteGate:
    """Serialises SQLite write transactions across threads and processes without polling.

    SQLite's own busy handler sleeps 1, 2, 5, 10... ms between retries, so writers that
    collide (two gunicorn workers, the sealer) lose milliseconds per commit. A blocking
    ``flock`` on a file beside the database wakes the next writer the moment the lock is
    released. The file is opened per process (an inherited descriptor would share the lock
    with the parent). PostgreSQL and in-memory SQLite need no gate.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._thread_lock = threading.RLock()
        self._depth = 0
        self._fd = -1
        self._pid = 0
        self._closer: weakref.finalize[..., Any] | None = None

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Hold the gate (re-entrant within a thread)."""
        if self.path is None:
            yield
            return
        with self._thread_lock:
            if self._depth == 0:
                if self._pid != os.getpid():
                    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
                    self._closer = weakref.finalize(self, os.close, fd)
                    self._fd, self._pid = fd, os.getpid()
                fcntl.flock(self._fd, fcntl.LOCK_EX)
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0:
                    fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        """Close this process's lock file (reopened on next use)."""
        with self._thread_lock:
            if self._closer is not None and self._pid == os.getpid():
                self._closer()
            self._closer, self._pid = None, 0


def gate_path(engine: Engine) -> Path | None:
    """The write gate's lock file beside a SQLite catalog (None: PostgreSQL or in memory)."""
    if engine.dialect.name != "sqlite":
        return None
    db = engine.url.database or ":memory:"
    return None if db in (":memory:", "") else Path(db + ".write.lock")


class CatalogSessions(sessionmaker[Session]):
    """``sessions()`` opens a reading session; ``sessions.begin()`` a writing transaction."""

    gate: WriteGate

    @contextlib.contextmanager
    def begin(self) -> Iterator[Session]:
        """A session in a write transaction, committed on success, rolled back on error."""
        with self.gate.held(), self() as session, session.begin():
            session.connection(execution_options={"catalog_write": True})
            yield session


def make_sessionmaker(engine: Engine) -> CatalogSessions:
    """Session factory; objects stay usable after commit."""
    sessions = CatalogSessions(engine, expire_on_commit=False)
    sessions.gate = WriteGate(gate_path(engine))
    return sessions


#: How long ``truncate_wal`` waits for readers of old WAL frames before leaving it to the next run.
CHECKPOINT_BUSY_MS = 50


def truncate_wal(sessions: CatalogSessions) -> bool:
    """SQLite: copy the WAL into the database and truncate it to zero bytes, so the frames of
    journal rows already sealed (and deleted, their pages zeroed by ``secure_delete``) do not
    linger in it. Holds the write gate meanwhile. Returns False when a reader kept it from
    completing (the next call tries again); True on PostgreSQL, which has nothing to do.
    """
    engine = sessions.kw["bind"]
    if engine.dialect.name != "sqlite":
        return True
    with sessions.gate.held():
        raw = engine.raw_connection()  # autocommit (see _sqlite_pragmas): no transaction open
        try:
            cur = raw.cursor()
            # Writers wait on the gate meanwhile: wait for a lingering reader only briefly.
            cur.execute(f"PRAGMA busy_timeout={CHECKPOINT_BUSY_MS}")
            try:
                # Free pages (sealed journal bodies) back to the file system first; a no-op
                # on a catalog without auto_vacuum=INCREMENTAL. executescript steps the pragma to
                # the end (execute() frees one page per step and stops after the first).
                cur.executescript("PRAGMA incremental_vacuum;")
                busy = cur.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            finally:
                cur.execute("PRAGMA busy_timeout=30000")
        finally:
            raw.close()
    return busy is not None and busy[0] == 0


@contextlib.contextmanager
def leader_lock(engine: Engine, name: str = "sealer") -> Iterator[bool]:
    """Hold the single-writer lock for ``name``; yields False if another process holds it.

    PostgreSQL: a session advisory lock on a dedicated connection. SQLite: an flock on a file
    beside the database (SQLite is one machine by definition). Either is released when the
    holder exits, however it exits (``kill -9`` too), so a crashed holder never blocks the
    next one. The background jobs take one per job (``job-<name>``, ``archiver.jobs``).
    """
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big") >> 1
            got = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar()
            conn.commit()  # the session lock outlives the transaction: none stays open while a long job runs
            try:
                yield bool(got)
            finally:
                if got:
                    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()
        return
    db = engine.url.database or ":memory:"
    path = Path(db + f".{name}.lock") if db != ":memory:" else None
    if path is None:
        yield True
        return
    with open(path, "a+b") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def positional_marker(dialect: Any) -> str | None:
    """The DBAPI's positional parameter marker, for hand-built bulk statements (None: unknown)."""
    return {"qmark": "?", "format": "%s", "pyformat": "%s"}.get(dialect.paramstyle)


def chunked(items: list[Any], size: int) -> Iterator[list[Any]]:
    """``items`` in chunks of ``size``, the rest in descending powers of two.

    Bulk statements are built per chunk length; keeping the lengths to a handful keeps the
    driver's prepared-statement cache (and the memory it holds) small.
    """
    i = 0
    while len(items) - i >= size:
        yield items[i:i + size]
        i += size
    step = 1 << max(0, (size - 1).bit_length() - 1)
    while i < len(items):
        while step > len(items) - i:
            step >>= 1
        yield items[i:i + step]
        i += step


def insert_rows(conn: Connection, table: Table, rows: list[dict[str, Any]], chunk: int = 500) -> None:
    """Bulk insert plain rows (all with the same keys) as multi-row ``VALUES`` statements.

    Each value goes through its column type's bind processor, as SQLAlchemy would do, but the
    SQL is built once per chunk size instead of compiled per statement, and the database
    steps once per chunk instead of once per row: on SQLite every step gives up the GIL, and
    winning it back from a busy thread costs far more than the insert itself.
    """
    if not rows:
        return
    dialect = conn.dialect
    if positional_marker(dialect) is None:  # an unusual driver: SQLAlchemy's own executemany
        conn.execute(table.insert(), rows)
        return
    cols = list(rows[0])
    procs = bind_processors(dialect, table, cols)
    for part in chunked(rows, chunk):
        columns = [_processed([row[c] for row in part], p) for c, p in zip(cols, procs)]
        params = tuple(itertools.chain.from_iterable(zip(*columns)))
        conn.exec_driver_sql(insert_sql(dialect, table, cols, len(part)), params)


def bind_processors(dialect: Any, table: Table, cols: list[str] | tuple[str, ...]) -> list[Any]:
    """Each column's bind processor (None where values pass as they are), as SQLAlchemy applies them."""
    return [table.c[c].type.dialect_impl(dialect).bind_processor(dialect) for c in cols]


def insert_sql(dialect: Any, table: Table, cols: list[str] | tuple[str, ...], rows: int = 1) -> str:
    """``INSERT INTO table (cols) VALUES (...), ...`` for ``rows`` rows, with positional markers.

    Raises ConfigError for a driver whose parameter style :func:`positional_marker` does not know.
    """
    marker = positional_marker(dialect)
    if marker is None:
        raise ConfigError(f"catalog driver {dialect.driver} uses the {dialect.paramstyle!r} parameter style; "
                          "use SQLite or PostgreSQL (psycopg)")
    prep = dialect.identifier_preparer
    group = "(" + ", ".join([marker] * len(cols)) + ")"
    return (f"INSERT INTO {prep.format_table(table)} ({', '.join(prep.quote(c) for c in cols)}) VALUES "  # noqa: S608 - quoted identifiers and placeholders only
            + ", ".join([group] * rows))


def _processed(values: list[Any], proc: Any) -> list[Any]:
    """Apply a bind processor to a column's values, once per distinct hashable value."""
    if proc is None:
        return values
    memo: dict[Any, Any] = {}
    out = []
    for v in values:
        if isinstance(v, (dict, list)):
            out.append(proc(v))
        elif (hit := memo.get(v, memo)) is not memo:
            out.append(hit)
        else:
            out.append(memo.setdefault(v, proc(v)))
    return out


def chain_head(session: Session) -> ChainHead:
    """The chain tip row. Before anything is sealed: an empty tip, written to the catalog
    only by a writing session (``sessions.begin()``, which the sealer uses); a reading
    session gets a detached one and never writes."""
    head = session.get(ChainHead, 1)
    if head is None:
        head = ChainHead(id=1, seq=0, hash="00" * 32, checkpoint="")
        if session.connection().get_execution_options().get("catalog_write", False):
            session.add(head)
            session.flush()
    return head


def archive_id(session: Session) -> str:
    """The archive's id (made when the catalog was created). Raises CatalogUnknown without one."""
    found = session.scalar(select(Archive.archive_id).where(Archive.id == 1))
    if found is None:
        raise CatalogUnknown("the catalog has no archive id", hint="run: archiver migrate")
    return found


def stored_through(session: Session) -> int:
    """The last seq whose segment is in WORM (derived stages act on records stored there)."""
    from sqlalchemy import func

    head = chain_head(session).seq
    writing = session.scalar(select(func.min(Segment.first_seq)).where(Segment.state == "writing"))
    return head if writing is None else min(head, writing - 1)


def cursor_value(session: Session, name: str) -> int:
    """Current value of a stage cursor (0 if never set)."""
    row = session.get(Cursor, name)
    return row.value if row else 0


def set_cursor(session: Session, name: str, value: int) -> None:
    """Advance a stage cursor (within the caller's transaction)."""
    row = session.get(Cursor, name)
    if row is None:
        session.add(Cursor(name=name, value=value))
    else:
        row.value = value


def unsealed_count(session: Session) -> int:
    """Journal rows not yet sealed."""
    from sqlalchemy import func

    return session.scalar(select(func.count()).select_from(Journal).where(Journal.sealed.is_(False))) or 0
