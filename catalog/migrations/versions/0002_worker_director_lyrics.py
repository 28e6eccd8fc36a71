"""Manifest columns added after 0001: albums.cover_worker, albums.director_json,
tracks.worker, tracks.lyrics.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

NEW = {"albums": ("cover_worker", "director_json"), "tracks": ("worker", "lyrics")}


def upgrade() -> None:
    for table, columns in NEW.items():
        with op.batch_alter_table(table) as batch:  # batch: SQLite rebuilds the table, PostgreSQL alters it
            for column in columns:
                batch.add_column(sa.Column(column, sa.Text(), nullable=True))


def downgrade() -> None:
    for table, columns in NEW.items():
        with op.batch_alter_table(table) as batch:
            for column in reversed(columns):
                batch.drop_column(column)
