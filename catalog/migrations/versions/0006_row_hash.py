"""Row hashes (issue 12): a content hash per album (its row and tracks) and per song, so a
second ``albumforge load`` skips what did not change.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ("albums", "songs"):
        with op.batch_alter_table(table) as batch:  # batch: SQLite rebuilds the table, PostgreSQL alters it
            batch.add_column(sa.Column("row_hash", sa.String(32), nullable=True))


def downgrade() -> None:
    for table in ("albums", "songs"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("row_hash")
