"""An index of the deliveries still to send, in the order workers claim them.

With a million deliveries queued, ``ix_deliveries_status_next_attempt`` makes
each claim read every due row of two statuses and sort them to find the
oldest hundred; this partial index holds only queued and retrying rows, in
claim order, so a claim reads the hundred it takes. Sent rows leave it, so
it stays as small as the queue however many deliveries the table keeps.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision: str | None = "0007"
branch_labels = None
depends_on = None

_DUE = sa.text("status IN ('queued', 'retrying')")


def upgrade() -> None:
    op.create_index(
        "ix_deliveries_due", "deliveries", ["next_attempt_at", "id"],
        postgresql_where=_DUE, sqlite_where=_DUE,
    )


def downgrade() -> None:
    op.drop_index("ix_deliveries_due", table_name="deliveries")
