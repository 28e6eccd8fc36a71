"""Manifest columns of issue 5: image scores, prompt notes and re-rolls, per-track art,
the concept score and the music window plan.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

NEW = {
    "albums": [
        ("cover_prompt_note", sa.Text()), ("cover_score", sa.Float()), ("cover_reroll", sa.Integer()),
        ("concept_score", sa.Float()),
    ],
    "tracks": [
        ("art_path", sa.Text()), ("art_seed", sa.BigInteger()), ("art_width", sa.Integer()),
        ("art_height", sa.Integer()), ("art_prompt_note", sa.Text()), ("art_score", sa.Float()),
        ("art_reroll", sa.Integer()), ("art_error", sa.Text()), ("art_worker", sa.Text()),
        ("windows_json", sa.Text()),
    ],
}
INDEXES = [("ix_albums_cover_score", "albums", "cover_score"), ("ix_albums_concept_score", "albums", "concept_score"),
           ("ix_tracks_art_score", "tracks", "art_score")]


def upgrade() -> None:
    for table, columns in NEW.items():
        with op.batch_alter_table(table) as batch:  # batch: SQLite rebuilds the table, PostgreSQL alters it
            for name, type_ in columns:
                batch.add_column(sa.Column(name, type_, nullable=True))
    for name, table, column in INDEXES:
        op.create_index(name, table, [column])


def downgrade() -> None:
    for name, table, _ in INDEXES:
        op.drop_index(name, table_name=table)
    for table, columns in NEW.items():
        with op.batch_alter_table(table) as batch:
            for name, _ in reversed(columns):
                batch.drop_column(name)
