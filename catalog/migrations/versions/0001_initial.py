"""Initial schema: runs, albums, album_genres, tracks.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

ID = sa.String(length=255)


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("run_id", ID, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("wall_s", sa.Float(), nullable=True),
        sa.Column("concepts_path", sa.Text(), nullable=True),
        sa.Column("config_json", sa.Text(), nullable=True),
        sa.Column("versions_json", sa.Text(), nullable=True),
        sa.Column("resources_json", sa.Text(), nullable=True),
        sa.Column("engine", sa.String(length=32), nullable=True),
        sa.Column("music_model", sa.Text(), nullable=True),
        sa.Column("image_model", sa.Text(), nullable=True),
        sa.Column("director", sa.String(length=32), nullable=True),
        sa.Column("n_concepts", sa.Integer(), nullable=True),
        sa.Column("n_skipped", sa.Integer(), nullable=True),
        sa.Column("n_ok", sa.Integer(), nullable=True),
        sa.Column("n_failed", sa.Integer(), nullable=True),
        sa.Column("n_tracks", sa.Integer(), nullable=True),
        sa.Column("minutes_per_album", sa.Float(), nullable=True),
        sa.Column("stage_s_json", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_runs")),
    )
    op.create_index(op.f("ix_runs_started_at"), "runs", ["started_at"])

    op.create_table(
        "albums",
        sa.Column("album_id", ID, nullable=False),
        sa.Column("run_id", ID, nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("source", sa.Text(), nullable=True),
        sa.Column("concept", sa.Text(), nullable=True),
        sa.Column("inputs_json", sa.Text(), nullable=True),
        sa.Column("mood", sa.Text(), nullable=True),
        sa.Column("seed", sa.BigInteger(), nullable=True),
        sa.Column("title", sa.Text(), nullable=True),
        sa.Column("artist", sa.Text(), nullable=True),
        sa.Column("liner_notes", sa.Text(), nullable=True),
        sa.Column("genres", sa.JSON(), nullable=True),
        sa.Column("soundscape_json", sa.Text(), nullable=True),
        sa.Column("cover_prompt", sa.Text(), nullable=True),
        sa.Column("cover_path", sa.Text(), nullable=True),
        sa.Column("cover_seed", sa.BigInteger(), nullable=True),
        sa.Column("cover_width", sa.Integer(), nullable=True),
        sa.Column("cover_height", sa.Integer(), nullable=True),
        sa.Column("plan_path", sa.Text(), nullable=True),
        sa.Column("n_tracks", sa.Integer(), nullable=True),
        sa.Column("n_tracks_ok", sa.Integer(), nullable=True),
        sa.Column("duration_s", sa.Float(), nullable=True),
        sa.Column("director", sa.String(length=32), nullable=True),
        sa.Column("director_model", sa.Text(), nullable=True),
        sa.Column("director_attempts", sa.Integer(), nullable=True),
        sa.Column("tokens_in", sa.BigInteger(), nullable=True),
        sa.Column("tokens_out", sa.BigInteger(), nullable=True),
        sa.Column("engine", sa.String(length=32), nullable=True),
        sa.Column("music_model", sa.Text(), nullable=True),
        sa.Column("image_model", sa.Text(), nullable=True),
        sa.Column("plan_s", sa.Float(), nullable=True),
        sa.Column("music_s", sa.Float(), nullable=True),
        sa.Column("image_s", sa.Float(), nullable=True),
        sa.Column("encode_s", sa.Float(), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("album_id", name=op.f("pk_albums")),
    )
    for column in ("artist", "finished_at", "mood", "music_model", "run_id", "status", "title"):
        op.create_index(op.f(f"ix_albums_{column}"), "albums", [column])

    op.create_table(
        "album_genres",
        sa.Column("album_id", ID, nullable=False),
        sa.Column("genre", sa.Text(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["album_id"], ["albums.album_id"], name=op.f("fk_album_genres_album_id_albums"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("album_id", "genre", name=op.f("pk_album_genres")),
    )
    op.create_index("ix_album_genres_genre", "album_genres", ["genre"])

    op.create_table(
        "tracks",
        sa.Column("album_id", ID, nullable=False),
        sa.Column("track_no", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("run_id", ID, nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("title", sa.Text(), nullable=True),
        sa.Column("music_prompt", sa.Text(), nullable=True),
        sa.Column("visual_prompt", sa.Text(), nullable=True),
        sa.Column("seed", sa.BigInteger(), nullable=True),
        sa.Column("path", sa.Text(), nullable=True),
        sa.Column("paths", sa.JSON(), nullable=True),
        sa.Column("duration_s", sa.Float(), nullable=True),
        sa.Column("planned_s", sa.Float(), nullable=True),
        sa.Column("sample_rate", sa.Integer(), nullable=True),
        sa.Column("lufs", sa.Float(), nullable=True),
        sa.Column("engine", sa.String(length=32), nullable=True),
        sa.Column("model", sa.Text(), nullable=True),
        sa.Column("gen_s", sa.Float(), nullable=True),
        sa.Column("encode_s", sa.Float(), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["album_id"], ["albums.album_id"], name=op.f("fk_tracks_album_id_albums"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("album_id", "track_no", name=op.f("pk_tracks")),
    )
    for column in ("model", "run_id", "status"):
        op.create_index(op.f(f"ix_tracks_{column}"), "tracks", [column])


def downgrade() -> None:
    op.drop_table("tracks")
    op.drop_table("album_genres")
    op.drop_table("albums")
    op.drop_table("runs")
