"""Consent ledger, marketing sends and findings; policy versions name their file.

Revision ID: 0012
Revises: 0007
Create Date: 2026-12-03

``consent_entries`` (the append-only consent ledger), ``marketing_sends`` (outbound marketing
messages the consent review found) and ``findings`` (review findings, each sealed as a
``finding`` record) are derived state (``archiver.consent``, ``archiver.consent_review``,
``archiver.findings``). A catalog migrated to this revision starts with empty tables; the
ledger's first sync reads every sealed record from seq 1 (its cursor starts at 0).
``policy_versions.name`` says which policy file a version is (``retention``, ``consent``);
versions loaded before this revision were all ``retention``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0007"
branch_labels = None
depends_on = None

SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("policy_versions") as batch:
        batch.add_column(sa.Column("name", sa.String(length=32), nullable=False, server_default="retention"))
    op.create_table(
        "consent_entries",
        sa.Column("id", SEQ, autoincrement=True, nullable=False),
        sa.Column("contact", sa.String(length=128), nullable=False),
        sa.Column("category", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=24), nullable=False),
        sa.Column("occurred_at", sa.BigInteger(), nullable=False),
        sa.Column("record_seq", SEQ, nullable=False),
        sa.Column("refers_to", SEQ, nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_consent_entries_contact", "consent_entries", ["contact"])
    op.create_index("ix_consent_entries_record_seq", "consent_entries", ["record_seq"])
    op.create_index("ux_consent_entries_record", "consent_entries", ["record_seq", "category", "action"], unique=True)
    op.create_table(
        "marketing_sends",
        sa.Column("wamid", sa.String(length=255), nullable=False),
        sa.Column("record_seq", SEQ, nullable=False),
        sa.Column("contact", sa.String(length=128), nullable=False),
        sa.Column("sent_at", sa.BigInteger(), nullable=False),
        sa.Column("via", sa.String(length=16), nullable=False),
        sa.Column("evidence", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("wamid"),
    )
    op.create_index("ix_marketing_sends_contact", "marketing_sends", ["contact"])
    op.create_index("ix_marketing_sends_sent_at", "marketing_sends", ["sent_at"])
    op.create_table(
        "findings",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("rule", sa.String(length=64), nullable=False),
        sa.Column("record_seq", SEQ, nullable=True),
        sa.Column("evidence", sa.JSON(), nullable=False),
        sa.Column("contact", sa.String(length=128), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("journal_id", SEQ, nullable=False),
        sa.Column("seq", SEQ, nullable=True),
        sa.Column("created_at", WHEN, nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("resolved_by", sa.String(length=255), nullable=True),
        sa.Column("resolved_at", WHEN, nullable=True),
        sa.Column("note", sa.String(length=2000), nullable=True),
        sa.Column("resolution_journal_id", SEQ, nullable=True),
        sa.Column("resolution_seq", SEQ, nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key"),
    )
    op.create_index("ix_findings_kind", "findings", ["kind"])
    op.create_index("ix_findings_status", "findings", ["status"])


def downgrade() -> None:
    op.drop_index("ix_findings_status", table_name="findings")
    op.drop_index("ix_findings_kind", table_name="findings")
    op.drop_table("findings")
    op.drop_index("ix_marketing_sends_sent_at", table_name="marketing_sends")
    op.drop_index("ix_marketing_sends_contact", table_name="marketing_sends")
    op.drop_table("marketing_sends")
    op.drop_index("ux_consent_entries_record", table_name="consent_entries")
    op.drop_index("ix_consent_entries_record_seq", table_name="consent_entries")
    op.drop_index("ix_consent_entries_contact", table_name="consent_entries")
    op.drop_table("consent_entries")
    with op.batch_alter_table("policy_versions") as batch:
        batch.drop_column("name")
    op.execute("DELETE FROM cursors WHERE name IN ('consent', 'consent-review', 'consent-review-ledger')")
