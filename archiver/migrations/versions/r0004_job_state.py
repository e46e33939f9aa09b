"""The background jobs' schedule state: last run, outcome and next run of each job.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02

``job_state`` is derived state (``archiver.jobs``): each run of a scheduled job is sealed
as a ``job_run`` record, and this table only says when each job ran last, how it ended
and when it runs next, so that every jobs process follows one schedule and ``archiver
stats`` can show it. A catalog migrated to this revision starts with no rows: each job
is scheduled from its next time in ``policies/schedule.yaml`` (none is overdue).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "job_state",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("last_started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_outcome", sa.String(length=16), nullable=True),
        sa.Column("last_error", sa.String(length=64), nullable=True),
        sa.Column("last_trigger", sa.String(length=16), nullable=True),
        sa.Column("last_journal_id", SEQ, nullable=True),
        sa.Column("next_run_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("running_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("running_owner", sa.String(length=128), nullable=True),
        sa.Column("runs", sa.BigInteger(), nullable=False),
        sa.Column("failures", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("job_state")
