"""Sessions: indexes for the reads that run every schedule tick and push hint, so they read the
open and held sessions only, not the whole history (issue #18, scale: 517 ms per tick at 5,000
mailboxes x 25 past sessions, benchmarks/test_bench_fleet.py)."""

from __future__ import annotations

from alembic import op

revision = "r0007"
down_revision = "r0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_sessions_state_end", "sessions", ["state", "end_time_us"])
    op.create_index("ix_sessions_held", "sessions", ["state", "retry_not_before_us"])
    op.create_index(
        "ix_sessions_mailbox_state_end", "sessions", ["mailbox_id", "state", "end_time_us"]
    )


def downgrade() -> None:
    op.drop_index("ix_sessions_mailbox_state_end", table_name="sessions")
    op.drop_index("ix_sessions_held", table_name="sessions")
    op.drop_index("ix_sessions_state_end", table_name="sessions")
