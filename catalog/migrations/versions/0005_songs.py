"""Songs (issue 13): one row per song of `albumforge covers` (manifests/songs/).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

ID = sa.String(255)
INDEXED = ("run_id", "status", "title", "artist", "genre", "language", "instrumental", "cover_score", "finished_at")


def upgrade() -> None:
    op.create_table(
        "songs",
        sa.Column("song_id", ID, nullable=False),
        sa.Column("run_id", ID, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text()),
        sa.Column("source", sa.Text()),
        sa.Column("path", sa.Text()),
        sa.Column("duplicate_paths", sa.JSON()),
        sa.Column("size_bytes", sa.BigInteger()),
        sa.Column("title", sa.Text()),
        sa.Column("artist", sa.Text()),
        sa.Column("album", sa.Text()),
        sa.Column("genre", sa.Text()),
        sa.Column("year", sa.String(32)),
        sa.Column("tags_json", sa.Text()),
        sa.Column("inputs_json", sa.Text()),
        sa.Column("duration_s", sa.Float()),
        sa.Column("lyrics", sa.Text()),
        sa.Column("lyrics_source", sa.String(64)),
        sa.Column("language", sa.String(16)),
        sa.Column("language_prob", sa.Float()),
        sa.Column("instrumental", sa.Boolean()),
        sa.Column("speech_s", sa.Float()),
        sa.Column("transcribe_s", sa.Float()),
        sa.Column("lyrics_model", sa.Text()),
        sa.Column("segments_json", sa.Text()),
        sa.Column("lyrics_worker", sa.Text()),
        sa.Column("summary", sa.Text()),
        sa.Column("motifs", sa.JSON()),
        sa.Column("palette", sa.JSON()),
        sa.Column("mood", sa.Text()),
        sa.Column("cover_prompt", sa.Text()),
        sa.Column("plan_path", sa.Text()),
        sa.Column("director", sa.String(32)),
        sa.Column("director_model", sa.Text()),
        sa.Column("director_attempts", sa.Integer()),
        sa.Column("tokens_in", sa.BigInteger()),
        sa.Column("tokens_out", sa.BigInteger()),
        sa.Column("plan_s", sa.Float()),
        sa.Column("cover_path", sa.Text()),
        sa.Column("cover_seed", sa.BigInteger()),
        sa.Column("cover_width", sa.Integer()),
        sa.Column("cover_height", sa.Integer()),
        sa.Column("cover_score", sa.Float()),
        sa.Column("cover_prompt_note", sa.Text()),
        sa.Column("cover_worker", sa.Text()),
        sa.Column("image_model", sa.Text()),
        sa.Column("image_s", sa.Float()),
        sa.Column("embedded_path", sa.Text()),
        sa.Column("engine", sa.String(32)),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.PrimaryKeyConstraint("song_id", name="pk_songs"),
    )
    for column in INDEXED:
        op.create_index(f"ix_songs_{column}", "songs", [column])


def downgrade() -> None:
    for column in INDEXED:
        op.drop_index(f"ix_songs_{column}", table_name="songs")
    op.drop_table("songs")
