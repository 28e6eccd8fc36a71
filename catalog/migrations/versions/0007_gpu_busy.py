"""GPU figures of a run (issue 12): per-actor busy figures and GPU busy/held seconds.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:  # batch: SQLite rebuilds the table, PostgreSQL alters it
        batch.add_column(sa.Column("actors_json", sa.Text(), nullable=True))
        batch.add_column(sa.Column("gpu_busy_s", sa.Float(), nullable=True))
        batch.add_column(sa.Column("gpu_held_s", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("gpu_held_s")
        batch.drop_column("gpu_busy_s")
        batch.drop_column("actors_json")
