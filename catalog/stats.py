"""A summary of one OUT folder (a path or an object-store URL), computed with polars from
the catalogue: one read per part, only the columns the summary needs."""

from __future__ import annotations

import unicodedata

import polars as pl

from albumforge.manifest import STATUS_OK
from albumforge.parts import read_latest
from albumforge.storage import Store, as_store

TOP_GENRES = 10
TOP_ERRORS = 5


COLUMNS = {  # what the summary reads of each kind
    "albums": ["album_id", "status", "error", "genres", "n_tracks_ok", "duration_s", "plan_s", "music_s", "image_s",
               "encode_s"],
    "tracks": ["album_id", "track_no", "status"],
    "runs": ["run_id", "wall_s", "n_ok", "gpu_busy_s", "gpu_held_s"],
    "songs": ["song_id", "status", "instrumental", "lyrics_source"],
}


def _frame(out: Store, kind: str) -> pl.DataFrame:
    return pl.from_arrow(read_latest(out, kind, COLUMNS[kind]))


def compute_stats(out: Store | str) -> dict:
    """Counts and averages of the albums, tracks and runs under ``out``."""
    out = as_store(out)
    albums, tracks, runs = _frame(out, "albums"), _frame(out, "tracks"), _frame(out, "runs")
    ok = albums.filter(pl.col("status") == STATUS_OK)
    failed = albums.filter(pl.col("status") != STATUS_OK)
    ok_tracks = tracks.filter(pl.col("album_id").is_in(ok["album_id"].implode()))

    per_album = ok.select(
        pl.col("n_tracks_ok").mean().alias("tracks_mean"),
        pl.col("n_tracks_ok").min().alias("tracks_min"),
        pl.col("n_tracks_ok").max().alias("tracks_max"),
        (pl.col("duration_s").mean() / 60).alias("music_minutes_mean"),
        (pl.sum_horizontal(pl.col("plan_s", "music_s", "image_s", "encode_s").fill_null(0)).mean() / 60)
        .alias("compute_minutes_mean"),
    ).row(0, named=True)
    made = runs.select(pl.col("wall_s").sum(), pl.col("n_ok").sum()).row(0, named=True)
    gpu = gpu_stats(runs)
    genres = (
        ok.select(pl.col("genres").explode().str.strip_chars().str.to_lowercase().alias("genre"))
        .filter(pl.col("genre").is_not_null() & (pl.col("genre") != ""))
        .group_by("genre").agg(pl.len().alias("albums"))
        .sort(["albums", "genre"], descending=[True, False])
        .head(TOP_GENRES)
    )
    errors = (
        failed.group_by(pl.col("error").fill_null("(no error given)")).agg(pl.len().alias("albums"))
        .sort(["albums", "error"], descending=[True, False]).head(TOP_ERRORS)
    )
    return {
        "albums_ok": ok.height,
        "albums_failed": failed.height,
        "tracks_ok": ok_tracks.filter(pl.col("status") == STATUS_OK).height,
        "tracks_failed": ok_tracks.filter(pl.col("status") != STATUS_OK).height,
        "runs": runs.height,
        # wall-clock minutes per album made, over every run (what the runs manifests say)
        "wall_minutes_per_album": (made["wall_s"] / 60 / made["n_ok"]) if made["n_ok"] else None,
        "compute_minutes_per_album": per_album["compute_minutes_mean"],  # plan+music+image+encode seconds
        "music_minutes_per_album": per_album["music_minutes_mean"],  # length of the music itself
        **gpu,
        "tracks_per_album": {k: per_album[f"tracks_{k}"] for k in ("mean", "min", "max")},
        "top_genres": [(r["genre"], r["albums"]) for r in genres.iter_rows(named=True)],
        "top_errors": [(r["error"], r["albums"]) for r in errors.iter_rows(named=True)],
        **song_stats(out),
    }


def gpu_stats(runs: pl.DataFrame) -> dict:
    """Over the runs that recorded GPU figures (albumforge.busy): the share of the cards' held
    time spent in model calls, and GPU-minutes per album made (held: the cards' time from
    their first actor's start to the run's end; busy: in model calls)."""
    measured = runs.filter(pl.col("gpu_held_s").is_not_null() & (pl.col("gpu_held_s") > 0))
    g = measured.select(pl.col("gpu_busy_s").sum(), pl.col("gpu_held_s").sum(), pl.col("n_ok").sum()).row(0, named=True)
    if not measured.height:
        return {"gpu_busy_share": None, "gpu_minutes_per_album": None, "gpu_busy_minutes_per_album": None}
    return {
        "gpu_busy_share": g["gpu_busy_s"] / g["gpu_held_s"],
        "gpu_minutes_per_album": g["gpu_held_s"] / 60 / g["n_ok"] if g["n_ok"] else None,
        "gpu_busy_minutes_per_album": g["gpu_busy_s"] / 60 / g["n_ok"] if g["n_ok"] else None,
    }


def song_stats(out: Store | str) -> dict:
    """``albumforge covers``: songs with a cover, instrumental ones among them, failed songs."""
    songs = _frame(as_store(out), "songs")
    ok = songs.filter(pl.col("status") == STATUS_OK)
    return {
        "songs_ok": ok.height,
        "songs_instrumental": ok.filter(pl.col("instrumental").fill_null(False)).height,
        "songs_failed": songs.height - ok.height,
        "songs_transcribed": ok.filter(pl.col("lyrics_source") == "whisper").height,
    }


def printable(text: object, limit: int = 120) -> str:
    """Model or error text made safe for a terminal: control characters (escape
    sequences, bidi overrides, newlines) become spaces, and long text is cut."""
    s = "".join(" " if unicodedata.category(c).startswith("C") else c for c in str(text))
    return s if len(s) <= limit else s[: limit - 1] + "…"


def _num(v: float | None, fmt: str = "{:.2f}") -> str:
    return "–" if v is None else fmt.format(v)


def format_stats(s: dict) -> str:
    t = s["tracks_per_album"]
    lines = [
        f"albums        {s['albums_ok']} ok, {s['albums_failed']} failed",
        f"tracks        {s['tracks_ok']} ok, {s['tracks_failed']} failed (in finished albums)",
        f"runs          {s['runs']}",
        f"minutes per album   {_num(s['wall_minutes_per_album'])} wall, "
        f"{_num(s['compute_minutes_per_album'])} compute, {_num(s['music_minutes_per_album'])} of music",
        f"GPUs                {_num(s['gpu_busy_share'] and 100 * s['gpu_busy_share'], '{:.0f}%')} busy, "
        f"{_num(s['gpu_minutes_per_album'])} GPU-minutes per album ({_num(s['gpu_busy_minutes_per_album'])} in model calls)",
        f"tracks per album    mean {_num(t['mean'], '{:.1f}')}, min {_num(t['min'], '{}')}, max {_num(t['max'], '{}')}",
        "top genres",
    ]
    lines += [f"  {n:>4}  {printable(g)}" for g, n in s["top_genres"]] or ["  (none)"]
    if s.get("songs_ok") or s.get("songs_failed"):  # only where `albumforge covers` ran
        lines.insert(3, f"songs         {s['songs_ok']} ok ({s['songs_instrumental']} instrumental), "
                        f"{s['songs_failed']} failed; {s['songs_transcribed']} transcribed")
    if s["top_errors"]:
        lines.append("top failure reasons")
        lines += [f"  {n:>4}  {printable(e)}" for e, n in s["top_errors"]]
    return "\n".join(lines)
