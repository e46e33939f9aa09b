"""Hold evaluation by index, and hold edits.

Revision ID: 0010
Revises: 0007
Create Date: 2026-12-03

- ``ix_journal_delivery_seq``: a record's journal row by its delivery's seq (a record's own
  time when it states none, the listing's join, ``records.Reader``) without a table scan.
- ``ix_records_occurred_at``: a date hold selects records by their own time in SQL.
- ``holds.recheck_through``: after a sealed ``hold_edited`` decision the hold is evaluated
  again from seq 1; up to this seq (the hold's cursor when it was edited), records it held
  that the new criteria no longer select are released (``archiver.holds``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0011"
branch_labels = None
depends_on = None

SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_index("ix_journal_delivery_seq", "journal", ["delivery_seq"])
    op.create_index("ix_records_occurred_at", "records", ["occurred_at"])
    with op.batch_alter_table("holds") as batch:
        batch.add_column(sa.Column("recheck_through", SEQ, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("holds") as batch:
        batch.drop_column("recheck_through")
    op.drop_index("ix_records_occurred_at", table_name="records")
    op.drop_index("ix_journal_delivery_seq", table_name="journal")
