"""SQLAlchemy 2.x models of the catalogue: runs, albums (+ their genres), tracks, songs.

Columns mirror the Parquet manifests (albumforge/manifest.py); media paths stay relative
to the output folder. Indexes cover what a user filters by: status, run, artist, title,
mood, genre, model. Any change here needs a new migration in catalog/migrations/versions
(tests compare these models with the migrated schema).

``album_id`` on albums and tracks is not a foreign key to runs: albums of a run that is
still going (or crashed) have no run row yet, and must load anyway.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Float, ForeignKey, Index, Integer, MetaData, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING = {  # stable constraint names, so migrations can refer to them on every backend
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

ID = String(255)  # ids are short hashes; 255 leaves room for any run id scheme
NAME = Text  # titles, model ids (a local model folder can be a long path)
Timestamp = DateTime(timezone=True)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Run(Base):
    __tablename__ = "runs"

    run_id: Mapped[str] = mapped_column(ID, primary_key=True)
    started_at: Mapped[datetime | None] = mapped_column(Timestamp, index=True)
    finished_at: Mapped[datetime | None] = mapped_column(Timestamp)
    wall_s: Mapped[float | None] = mapped_column(Float)
    concepts_path: Mapped[str | None] = mapped_column(Text)
    config_json: Mapped[str | None] = mapped_column(Text)
    versions_json: Mapped[str | None] = mapped_column(Text)
    resources_json: Mapped[str | None] = mapped_column(Text)
    engine: Mapped[str | None] = mapped_column(String(32))
    music_model: Mapped[str | None] = mapped_column(NAME)
    image_model: Mapped[str | None] = mapped_column(NAME)
    director: Mapped[str | None] = mapped_column(String(32))
    n_concepts: Mapped[int | None] = mapped_column(Integer)
    n_skipped: Mapped[int | None] = mapped_column(Integer)
    n_ok: Mapped[int | None] = mapped_column(Integer)
    n_failed: Mapped[int | None] = mapped_column(Integer)
    n_tracks: Mapped[int | None] = mapped_column(Integer)
    minutes_per_album: Mapped[float | None] = mapped_column(Float)
    stage_s_json: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str | None] = mapped_column(String(16))  # ok | failed | interrupted (0004)
    error: Mapped[str | None] = mapped_column(Text)  # why a run failed or stopped
    actors_json: Mapped[str | None] = mapped_column(Text)  # per-actor GPU figures (0007, albumforge.busy)
    gpu_busy_s: Mapped[float | None] = mapped_column(Float)
    gpu_held_s: Mapped[float | None] = mapped_column(Float)


class Album(Base):
    __tablename__ = "albums"

    album_id: Mapped[str] = mapped_column(ID, primary_key=True)
    run_id: Mapped[str] = mapped_column(ID, index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    error: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str | None] = mapped_column(Text)
    concept: Mapped[str | None] = mapped_column(Text)
    inputs_json: Mapped[str | None] = mapped_column(Text)
    mood: Mapped[str | None] = mapped_column(NAME, index=True)  # inputs_json["mood"], for filtering
    seed: Mapped[int | None] = mapped_column(BigInteger)
    title: Mapped[str | None] = mapped_column(NAME, index=True)
    artist: Mapped[str | None] = mapped_column(NAME, index=True)
    liner_notes: Mapped[str | None] = mapped_column(Text)
    genres: Mapped[list | None] = mapped_column(JSON)  # as in the manifest; album_genres indexes them
    soundscape_json: Mapped[str | None] = mapped_column(Text)
    cover_prompt: Mapped[str | None] = mapped_column(Text)
    cover_path: Mapped[str | None] = mapped_column(Text)
    cover_seed: Mapped[int | None] = mapped_column(BigInteger)
    cover_width: Mapped[int | None] = mapped_column(Integer)
    cover_height: Mapped[int | None] = mapped_column(Integer)
    plan_path: Mapped[str | None] = mapped_column(Text)
    n_tracks: Mapped[int | None] = mapped_column(Integer)
    n_tracks_ok: Mapped[int | None] = mapped_column(Integer)
    duration_s: Mapped[float | None] = mapped_column(Float)
    director: Mapped[str | None] = mapped_column(String(32))
    director_model: Mapped[str | None] = mapped_column(NAME)
    director_attempts: Mapped[int | None] = mapped_column(Integer)
    tokens_in: Mapped[int | None] = mapped_column(BigInteger)
    tokens_out: Mapped[int | None] = mapped_column(BigInteger)
    engine: Mapped[str | None] = mapped_column(String(32))
    music_model: Mapped[str | None] = mapped_column(NAME, index=True)
    image_model: Mapped[str | None] = mapped_column(NAME)
    plan_s: Mapped[float | None] = mapped_column(Float)
    music_s: Mapped[float | None] = mapped_column(Float)
    image_s: Mapped[float | None] = mapped_column(Float)
    encode_s: Mapped[float | None] = mapped_column(Float)
    finished_at: Mapped[datetime | None] = mapped_column(Timestamp, index=True)
    cover_worker: Mapped[str | None] = mapped_column(Text)  # JSON: the actor that rendered the cover (0002)
    director_json: Mapped[str | None] = mapped_column(Text)  # JSON: the director's meta for this plan (0002)
    cover_prompt_note: Mapped[str | None] = mapped_column(Text)  # how a long cover prompt was handled (0003)
    cover_score: Mapped[float | None] = mapped_column(Float, index=True)  # CLIP score: sort, re-roll (0003)
    cover_reroll: Mapped[int | None] = mapped_column(Integer)  # (0003)
    concept_score: Mapped[float | None] = mapped_column(Float, index=True)  # MiniLM concept vs plan (0003)
    row_hash: Mapped[str | None] = mapped_column(String(32))  # the album's rows as loaded: unchanged ones are skipped (0006)

    tracks: Mapped[list[Track]] = relationship(
        back_populates="album", order_by="Track.track_no", cascade="all, delete-orphan", passive_deletes=True)
    genre_rows: Mapped[list[AlbumGenre]] = relationship(cascade="all, delete-orphan", passive_deletes=True)


class AlbumGenre(Base):
    """One row per (album, genre): the index behind "albums of genre X"."""

    __tablename__ = "album_genres"

    album_id: Mapped[str] = mapped_column(ID, ForeignKey("albums.album_id", ondelete="CASCADE"), primary_key=True)
    genre: Mapped[str] = mapped_column(NAME, primary_key=True)  # lower-cased, stripped
    position: Mapped[int] = mapped_column(Integer)  # order in the album's list

    __table_args__ = (Index("ix_album_genres_genre", "genre"),)


class Track(Base):
    __tablename__ = "tracks"

    album_id: Mapped[str] = mapped_column(ID, ForeignKey("albums.album_id", ondelete="CASCADE"), primary_key=True)
    track_no: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    run_id: Mapped[str] = mapped_column(ID, index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    error: Mapped[str | None] = mapped_column(Text)
    title: Mapped[str | None] = mapped_column(NAME)
    music_prompt: Mapped[str | None] = mapped_column(Text)
    visual_prompt: Mapped[str | None] = mapped_column(Text)
    seed: Mapped[int | None] = mapped_column(BigInteger)
    path: Mapped[str | None] = mapped_column(Text)
    paths: Mapped[list | None] = mapped_column(JSON)
    duration_s: Mapped[float | None] = mapped_column(Float)
    planned_s: Mapped[float | None] = mapped_column(Float)
    sample_rate: Mapped[int | None] = mapped_column(Integer)
    lufs: Mapped[float | None] = mapped_column(Float)
    engine: Mapped[str | None] = mapped_column(String(32))
    model: Mapped[str | None] = mapped_column(NAME, index=True)
    gen_s: Mapped[float | None] = mapped_column(Float)
    encode_s: Mapped[float | None] = mapped_column(Float)
    finished_at: Mapped[datetime | None] = mapped_column(Timestamp)
    worker: Mapped[str | None] = mapped_column(Text)  # JSON: the actor that made it (0002)
    lyrics: Mapped[str | None] = mapped_column(Text)  # the director's lyrics, if asked for (0002)
    art_path: Mapped[str | None] = mapped_column(Text)  # per-track art (0003)
    art_seed: Mapped[int | None] = mapped_column(BigInteger)
    art_width: Mapped[int | None] = mapped_column(Integer)
    art_height: Mapped[int | None] = mapped_column(Integer)
    art_prompt_note: Mapped[str | None] = mapped_column(Text)
    art_score: Mapped[float | None] = mapped_column(Float, index=True)
    art_reroll: Mapped[int | None] = mapped_column(Integer)
    art_error: Mapped[str | None] = mapped_column(Text)
    art_worker: Mapped[str | None] = mapped_column(Text)
    windows_json: Mapped[str | None] = mapped_column(Text)  # JSON: the generate() window plan (0003)

    album: Mapped[Album] = relationship(back_populates="tracks")


class Song(Base):
    """``albumforge covers``: one row per song (by content hash), as in manifests/songs/ (0005)."""

    __tablename__ = "songs"

    song_id: Mapped[str] = mapped_column(ID, primary_key=True)
    run_id: Mapped[str] = mapped_column(ID, index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    error: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str | None] = mapped_column(Text)
    path: Mapped[str | None] = mapped_column(Text)
    duplicate_paths: Mapped[list | None] = mapped_column(JSON)
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    title: Mapped[str | None] = mapped_column(NAME, index=True)
    artist: Mapped[str | None] = mapped_column(NAME, index=True)
    album: Mapped[str | None] = mapped_column(NAME)
    genre: Mapped[str | None] = mapped_column(NAME, index=True)
    year: Mapped[str | None] = mapped_column(String(32))
    tags_json: Mapped[str | None] = mapped_column(Text)
    inputs_json: Mapped[str | None] = mapped_column(Text)
    duration_s: Mapped[float | None] = mapped_column(Float)
    lyrics: Mapped[str | None] = mapped_column(Text)
    lyrics_source: Mapped[str | None] = mapped_column(String(64))
    language: Mapped[str | None] = mapped_column(String(16), index=True)
    language_prob: Mapped[float | None] = mapped_column(Float)
    instrumental: Mapped[bool | None] = mapped_column(Boolean, index=True)
    speech_s: Mapped[float | None] = mapped_column(Float)
    transcribe_s: Mapped[float | None] = mapped_column(Float)
    lyrics_model: Mapped[str | None] = mapped_column(NAME)
    segments_json: Mapped[str | None] = mapped_column(Text)
    lyrics_worker: Mapped[str | None] = mapped_column(Text)
    summary: Mapped[str | None] = mapped_column(Text)
    motifs: Mapped[list | None] = mapped_column(JSON)
    palette: Mapped[list | None] = mapped_column(JSON)
    mood: Mapped[str | None] = mapped_column(NAME)
    cover_prompt: Mapped[str | None] = mapped_column(Text)
    plan_path: Mapped[str | None] = mapped_column(Text)
    director: Mapped[str | None] = mapped_column(String(32))
    director_model: Mapped[str | None] = mapped_column(NAME)
    director_attempts: Mapped[int | None] = mapped_column(Integer)
    tokens_in: Mapped[int | None] = mapped_column(BigInteger)
    tokens_out: Mapped[int | None] = mapped_column(BigInteger)
    plan_s: Mapped[float | None] = mapped_column(Float)
    cover_path: Mapped[str | None] = mapped_column(Text)
    cover_seed: Mapped[int | None] = mapped_column(BigInteger)
    cover_width: Mapped[int | None] = mapped_column(Integer)
    cover_height: Mapped[int | None] = mapped_column(Integer)
    cover_score: Mapped[float | None] = mapped_column(Float, index=True)
    cover_prompt_note: Mapped[str | None] = mapped_column(Text)
    cover_worker: Mapped[str | None] = mapped_column(Text)
    image_model: Mapped[str | None] = mapped_column(NAME)
    image_s: Mapped[float | None] = mapped_column(Float)
    embedded_path: Mapped[str | None] = mapped_column(Text)
    engine: Mapped[str | None] = mapped_column(String(32))
    finished_at: Mapped[datetime | None] = mapped_column(Timestamp, index=True)
    row_hash: Mapped[str | None] = mapped_column(String(32))  # the song's row as loaded (0006)
