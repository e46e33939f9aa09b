"""The catalog as archiver/catalog.py created it before migrations existed.

Revision ID: 0001
Revises:
Create Date: 2026-12-02

A catalog created by that code (``Base.metadata.create_all``, no ``alembic_version``
table) has exactly these tables; ``archiver migrate`` stamps it with this revision and
goes on from here. Types are spelled out (no import of archiver.catalog): this file
describes the schema of its revision, not of today's models.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TABLES = ("chain_head", "cursors", "data_keys", "duplicate_hits", "journal", "media", "message_state",
          "pending_links", "segments", "tokens", "records")
"""The tables of this revision (how an unversioned catalog is recognised)."""


def _seq() -> sa.types.TypeEngine[int]:
    """Sequence numbers: BIGINT, but INTEGER on SQLite (so an INTEGER PRIMARY KEY is the rowid)."""
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _time() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "chain_head",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("seq", _seq(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("checkpoint", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "cursors",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", _seq(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "data_keys",
        sa.Column("id", sa.String(length=96), nullable=False),
        sa.Column("wrapped", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", _time(), nullable=False),
        sa.Column("destroyed_at", _time(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "duplicate_hits",
        sa.Column("id", _seq(), autoincrement=True, nullable=False),
        sa.Column("record_seq", _seq(), nullable=False),
        sa.Column("delivery_seq", _seq(), nullable=False),
        sa.Column("kind", sa.String(length=24), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_duplicate_hits_record_seq", "duplicate_hits", ["record_seq"], unique=False)
    op.create_table(
        "journal",
        sa.Column("id", _seq(), autoincrement=True, nullable=False),
        sa.Column("source", sa.String(length=24), nullable=False),
        sa.Column("received_at", _time(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=True),
        sa.Column("body_sha256", sa.String(length=64), nullable=False),
        sa.Column("meta", sa.JSON(), nullable=False),
        sa.Column("sealed", sa.Boolean(), nullable=False),
        sa.Column("delivery_seq", _seq(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_journal_unsealed", "journal", ["sealed", "id"], unique=False)
    op.create_table(
        "media",
        sa.Column("id", _seq(), autoincrement=True, nullable=False),
        sa.Column("record_seq", _seq(), nullable=False),
        sa.Column("media_id", sa.String(length=128), nullable=False),
        sa.Column("expected_sha256", sa.String(length=128), nullable=True),
        sa.Column("mime_type", sa.String(length=128), nullable=True),
        sa.Column("key_id", sa.String(length=96), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", _time(), nullable=False),
        sa.Column("last_error", sa.String(length=255), nullable=True),
        sa.Column("object_key", sa.String(length=255), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_media_due", "media", ["state", "next_attempt_at"], unique=False)
    op.create_index("ix_media_record_seq", "media", ["record_seq"], unique=False)
    op.create_table(
        "message_state",
        sa.Column("wamid", sa.String(length=255), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("status_seq", _seq(), nullable=False),
        sa.PrimaryKeyConstraint("wamid"),
    )
    op.create_table(
        "pending_links",
        sa.Column("id", _seq(), autoincrement=True, nullable=False),
        sa.Column("target_key", sa.String(length=64), nullable=False),
        sa.Column("record_seq", _seq(), nullable=False),
        sa.Column("kind", sa.String(length=24), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_pending_links_target_key", "pending_links", ["target_key"], unique=False)
    op.create_table(
        "segments",
        sa.Column("id", _seq(), autoincrement=True, nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("retention_class", sa.String(length=64), nullable=False),
        sa.Column("first_seq", _seq(), nullable=False),
        sa.Column("last_seq", _seq(), nullable=False),
        sa.Column("records", sa.Integer(), nullable=False),
        sa.Column("merkle_root", sa.String(length=64), nullable=False),
        sa.Column("last_hash", sa.String(length=64), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("retain_until", _time(), nullable=False),
        sa.Column("checkpoint_key", sa.String(length=255), nullable=False),
        sa.Column("checkpoint_digest", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=8), nullable=False),
        sa.Column("blob", sa.LargeBinary(), nullable=True),
        sa.Column("checkpoint_blob", sa.LargeBinary(), nullable=True),
        sa.Column("sealed_at", _time(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key"),
    )
    op.create_index("ix_segments_first_seq", "segments", ["first_seq"], unique=False)
    op.create_index("ix_segments_state", "segments", ["state"], unique=False)
    op.create_table(
        "tokens",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", _time(), nullable=False),
        sa.Column("revoked_at", _time(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
    )
    op.create_table(
        "records",
        sa.Column("seq", _seq(), autoincrement=False, nullable=False),
        sa.Column("kind", sa.String(length=24), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=True),
        sa.Column("item_key", sa.String(length=64), nullable=True),
        sa.Column("wamid", sa.String(length=255), nullable=True),
        sa.Column("contact", sa.String(length=128), nullable=True),
        sa.Column("delivery_seq", _seq(), nullable=True),
        sa.Column("segment_id", _seq(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("retention_class", sa.String(length=64), nullable=False),
        sa.Column("retain_until", _time(), nullable=False),
        sa.Column("key_id", sa.String(length=96), nullable=False),
        sa.Column("occurred_at", sa.BigInteger(), nullable=True),
        sa.Column("links", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["segment_id"], ["segments.id"]),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("item_key"),
    )
    op.create_index("ix_records_contact", "records", ["contact"], unique=False)
    op.create_index("ix_records_kind", "records", ["kind"], unique=False)
    op.create_index("ix_records_wamid", "records", ["wamid"], unique=False)


def downgrade() -> None:
    for name in reversed(TABLES):
        op.drop_table(name)
