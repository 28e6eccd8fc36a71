"""The SQL loader and its migrations, against SQLite and a real PostgreSQL server.

PostgreSQL comes from ALBUMFORGE_TEST_PG_URL (set by .ci/run, which installs and starts
the server on loopback); each test gets a fresh database on it, dropped afterwards.
Without that server the PostgreSQL cases skip, or fail when ALBUMFORGE_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import replace

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from catalog_fixtures import (
    ALBUMS,
    AlbumSpec,
    TrackSpec,
    make_out,
    missing_service,
    resume,
    write_album,
)
from sqlalchemy import create_engine, func, inspect, select, text
from sqlalchemy.engine import make_url

from albumforge import manifest
from albumforge.manifest import ManifestError
from albumforge.parts import CatalogWriter, PartId, read_latest
from catalog.commands import load_main
from catalog.db import load as loader
from catalog.db import migrate
from catalog.db.load import DB_FILE, load, make_engine, safe_url
from catalog.db.models import Album, AlbumGenre, Base, Run, Track

PG_ENV = "ALBUMFORGE_TEST_PG_URL"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'catalog-test.sqlite'}"
        return
    base = os.environ.get(PG_ENV)
    if not base:
        missing_service(f"{PG_ENV} is not set: no PostgreSQL server to test against (.ci/run starts one)")
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    name = f"albumforge_t_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as e:  # noqa: BLE001 - any failure to reach the server
        admin.dispose()
        missing_service(f"PostgreSQL at {safe_url(base)} is not reachable: {type(e).__name__}: {e}")
    try:
        yield make_url(base).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def sample(tmp_path):
    return make_out(tmp_path / "out")


def counts(url: str) -> dict:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return {m.__tablename__: conn.scalar(select(func.count()).select_from(m)) for m in (Run, Album, Track, AlbumGenre)}
    finally:
        engine.dispose()


def dump(url: str) -> dict:
    """Every row of every table, in key order (for before/after comparisons)."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return {t.name: [tuple(r) for r in conn.execute(select(t).order_by(*t.primary_key.columns))]
                    for t in Base.metadata.sorted_tables}
    finally:
        engine.dispose()


def expected(sample) -> dict:
    return {
        "runs": len(sample.runs),
        "albums": len(sample.albums),
        "tracks": sum(len(a.tracks) for a in sample.ok),
        "album_genres": sum(len({g.lower() for g in a.genres}) for a in sample.ok),
    }


def test_migrations_upgrade_an_empty_database_to_head(db_url):
    engine = make_engine(db_url)
    try:
        assert migrate.current_revision(engine) is None
        migrate.upgrade(engine)
        assert migrate.current_revision(engine) == migrate.head_revision()
        names = set(inspect(engine).get_table_names())
        assert {"runs", "albums", "album_genres", "tracks", "alembic_version"} <= names
        with engine.connect() as conn:  # the migrations build exactly what the models declare
            diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
        assert diff == []
        indexed = {c for ix in inspect(engine).get_indexes("albums") for c in ix["column_names"]}
        assert {"status", "run_id", "artist", "title", "mood", "music_model"} <= indexed
        assert "genre" in {c for ix in inspect(engine).get_indexes("album_genres") for c in ix["column_names"]}
        migrate.downgrade(engine, "base")
        assert not {"runs", "albums", "tracks"} & set(inspect(engine).get_table_names())
        migrate.upgrade(engine)  # and back
        assert migrate.current_revision(engine) == migrate.head_revision()
    finally:
        engine.dispose()


def test_every_manifest_field_has_a_column():
    """A new manifest column fails here until the models and a migration add it."""
    for kind, model in (("albums", Album), ("tracks", Track), ("runs", Run)):
        columns = {c.name for c in model.__table__.columns}
        assert [f.name for f in manifest.SCHEMAS[kind] if f.name not in columns] == [], kind


def test_migrations_keep_rows_from_the_first_version(sample, db_url):
    engine = make_engine(db_url)
    try:
        migrate.upgrade(engine, "0001")
        with engine.begin() as conn:
            conn.execute(Album.__table__.insert().values(album_id="old1", run_id="r0", status="ok", title="Kept"))
            conn.execute(text("INSERT INTO tracks (album_id, track_no, run_id, status) VALUES ('old1', 1, 'r0', 'ok')"))
        migrate.upgrade(engine)
        with engine.connect() as conn:
            assert conn.execute(select(Album.title, Album.director_json).where(Album.album_id == "old1")).one() == ("Kept", None)
            assert conn.scalar(select(func.count()).select_from(Track).where(Track.album_id == "old1")) == 1
    finally:
        engine.dispose()
    load(sample.out, db_url)  # and the loader works on a database migrated step by step
    assert counts(db_url)["albums"] == len(sample.albums) + 1


def test_load_twice_gives_the_same_rows(sample, db_url):
    first = load(sample.out, db_url)
    assert first["albums"] == len(sample.albums) and first["tracks_skipped"] == 0
    assert counts(db_url) == expected(sample)
    rows = dump(db_url)
    second = load(sample.out, db_url)
    assert second == first
    assert counts(db_url) == expected(sample)
    assert dump(db_url) == rows


def test_rows_hold_the_manifest_fields(sample, db_url):
    load(sample.out, db_url)
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            a = ALBUMS[0]
            album = conn.execute(select(Album).where(Album.album_id == a.album_id)).one()
            assert (album.title, album.artist, album.status, album.mood) == (a.title, a.artist, "ok", "calm")
            assert album.genres == list(a.genres) and album.cover_path == f"media/{a.album_id}/cover.png"
            assert album.music_model == "tiny-musicgen" and album.finished_at is not None
            failed = conn.execute(select(Album).where(Album.status == "failed")).all()
            assert [(f.album_id, f.error) for f in failed] == [(s.album_id, s.error) for s in sample.failed]
            tracks = conn.execute(select(Track).where(Track.album_id == ALBUMS[1].album_id).order_by(Track.track_no)).all()
            assert [(t.status, t.error) for t in tracks] == [("ok", None), ("failed", "CUDA out of memory")]
            assert tracks[0].duration_s == pytest.approx(sample.durations[ALBUMS[1].album_id][1])
            assert tracks[0].paths == [f"media/{ALBUMS[1].album_id}/track-01.ogg"]
            ambient = conn.scalars(select(AlbumGenre.album_id).where(AlbumGenre.genre == "ambient").order_by(AlbumGenre.album_id)).all()
            assert ambient == sorted(a.album_id for a in sample.ok if "Ambient" in a.genres)
            run = conn.execute(select(Run)).one()
            assert run.run_id == "run-0001" and run.n_ok == len(sample.ok) and run.minutes_per_album > 0
    finally:
        engine.dispose()


def test_a_resumed_run_updates_rows_in_place(sample, db_url):
    load(sample.out, db_url)
    resumed = resume(sample)
    counts_loaded = load(resumed.out, db_url)
    assert counts(db_url) == expected(resumed)
    assert counts_loaded["runs"] == 2
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            statuses = conn.execute(select(Album.status, func.count()).group_by(Album.status)).all()
            assert statuses == [("ok", len(resumed.albums))]
            assert conn.scalar(select(func.count()).select_from(Track).where(Track.status != "ok")) == 0
            retried = conn.execute(select(Album.run_id, Album.title).where(Album.album_id == ALBUMS[3].album_id)).one()
            assert retried.run_id == "run-0002" and retried.title.startswith("Retried")
    finally:
        engine.dispose()
    load(resumed.out, db_url)
    assert counts(db_url) == expected(resumed)


def test_tracks_gone_from_a_reloaded_album_are_deleted(sample, db_url):
    load(sample.out, db_url)
    a = ALBUMS[0]
    write_album(sample.out, replace(a, tracks=a.tracks[:1], genres=("Synthwave",)), "run-0001", 0)
    result = load(sample.out, db_url)
    assert result["tracks_removed"] == len(a.tracks) - 1
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            assert conn.scalars(select(Track.track_no).where(Track.album_id == a.album_id)).all() == [1]
            assert conn.scalars(select(AlbumGenre.genre).where(AlbumGenre.album_id == a.album_id)).all() == ["synthwave"]
    finally:
        engine.dispose()


def test_tracks_of_an_unfinished_album_wait_for_its_album_row(sample, db_url):
    unfinished = AlbumSpec("a1b2c3d4e5f60009", "Half Done", "Nobody", "in progress", tracks=(TrackSpec("One", 1.0),))
    writer = CatalogWriter(sample.out)  # its tracks are written, its album row is not yet
    writer.tracks_only(unfinished.album_id, [{**manifest.null_row("tracks"), "album_id": unfinished.album_id,
                                              "run_id": "run-0001", "track_no": 1, "status": "ok"}])
    writer.flush()
    result = load(sample.out, db_url)
    assert result["tracks_skipped"] == 1 and counts(db_url) == expected(sample)


@pytest.mark.parametrize("breakage", ["garbage", "wrong_type", "missing_column", "duplicate", "bad_status"])
def test_a_bad_manifest_names_the_file_and_loads_nothing(sample, db_url, breakage):
    load(sample.out, db_url)
    before = dump(db_url)
    # a new album arrives alongside one broken file: neither may land
    write_album(sample.out, AlbumSpec("a1b2c3d4e5f60010", "New One", "Someone", "fresh",
                                      tracks=(TrackSpec("A", 1.0),)), "run-0001", 10)
    tracks_dir = manifest.manifest_dir(sample.out, "tracks")
    bad = tracks_dir / "zz-broken.parquet"
    good = read_latest(sample.out, "tracks")
    good = good.filter(pc.equal(good["album_id"], ALBUMS[0].album_id))
    good_rows = good.to_pylist()
    if breakage == "garbage":
        bad.write_bytes(b"PAR1 this is not parquet")
    elif breakage == "wrong_type":
        pq.write_table(pa.table({**{c: pa.array([r[c] for r in good_rows]) for c in manifest.TRACKS.names},
                                 "track_no": pa.array(["one", "two", "three"])}), bad)
    elif breakage == "missing_column":
        pq.write_table(good.drop(["status"]), bad)
    elif breakage == "duplicate":  # one track twice in one part
        bad = tracks_dir / PartId(99, 1).name
        manifest.write_rows(bad, good_rows[:1] * 2, manifest.TRACKS)
    elif breakage == "bad_status":
        bad = manifest.manifest_dir(sample.out, "albums") / "zz-broken.parquet"
        row = [a for a in read_latest(sample.out, "albums").to_pylist()
               if a["album_id"] == ALBUMS[0].album_id][0]
        manifest.write_rows(bad, [{**row, "album_id": "zz", "status": "maybe"}], manifest.ALBUMS)
    with pytest.raises(ManifestError) as err:
        load(sample.out, db_url)
    assert str(bad) in str(err.value)
    assert dump(db_url) == before


def test_a_failure_mid_load_rolls_everything_back(sample, db_url, monkeypatch):
    load(sample.out, db_url)
    before = dump(db_url)
    resumed = resume(sample)

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(loader, "_remove_vanished_tracks", boom)  # after every upsert has run
    with pytest.raises(RuntimeError, match="disk full"):
        load(resumed.out, db_url)
    assert dump(db_url) == before


def test_default_database_is_a_sqlite_file_inside_out(sample, capsys):
    assert load_main([str(sample.out)]) == 0
    assert (sample.out / DB_FILE).is_file()
    assert counts(f"sqlite:///{sample.out / DB_FILE}") == expected(sample)
    assert f"1 runs, {len(sample.albums)} albums" in capsys.readouterr().out
    assert load_main([str(sample.out / "nope")]) == 1


def test_urls_are_printed_without_their_password(sample, capsys):
    url = "postgresql+psycopg://studio:hunter2secret@127.0.0.1:1/nowhere"
    assert "hunter2secret" not in safe_url(url)
    assert load_main([str(sample.out), "--db", url]) == 1
    captured = capsys.readouterr()
    assert "hunter2secret" not in captured.out + captured.err and "127.0.0.1" in captured.err
    with pytest.raises(ValueError, match="sqlite and postgresql"):
        make_engine("mysql+pymysql://u:p@localhost/x")
