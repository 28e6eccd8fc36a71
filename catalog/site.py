"""Build the static album website from the manifests of one OUT folder.

``build_site(out)`` writes OUT/site/ (or ``site_dir``): index.html (a filterable grid of
the ok albums), albums/<slug>.html (one page per ok album), runs.html (runs and every
failure), static/ (CSS, JS) and media/<slug>/ (covers and audio, hard-linked or copied
from OUT/media so the folder stands alone). All links are relative: the folder works
from ``file://`` and on any static host.

Safety: every string from the manifests is untrusted. Templates autoescape and never
mark model text safe; file names are slugs (catalog.slugs); media is read only from
inside OUT and written only inside the site folder.

Object storage: OUT and the site folder may each be a URL (``s3://…``; the site defaults to
OUT/site, so a bucket serves it as a static website with the same relative links). Media
are then copied inside the bucket (a server-side copy), downloaded (a local site of a
bucket's OUT) or uploaded (the reverse).

Incremental and deterministic: pages are rendered in a fixed order with no build time
in them, and a file is written only when its bytes change, so an unchanged album keeps
its files untouched. Files written by an earlier build that this build no longer makes
(a renamed or failed album) are removed; files the builder never wrote are left alone.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

import jinja2

from albumforge.resources import data_dir
from albumforge.rows import STATUS_OK
from albumforge.storage import Store, as_store, is_url
from catalog.read import Catalog, read_catalog
from catalog.slugs import album_slug, resolve_inside, safe_ext

log = logging.getLogger(__name__)

SITE_SRC = data_dir("site")  # templates/ and static/ (data, not code): the checkout's, or a wheel's copy
STATE_FILE = ".albumforge-site.json"  # what the last build wrote, so stale files can be removed
AUDIO_TYPES = {"ogg": "audio/ogg", "oga": "audio/ogg", "opus": "audio/ogg", "mp3": "audio/mpeg",
               "flac": "audio/flac", "wav": "audio/wav", "m4a": "audio/mp4"}
IMAGE_EXTS = {"png", "jpg", "jpeg", "webp", "gif"}


@dataclass
class SiteReport:
    site_dir: Path | str  # a local folder, or the site's URL
    written: int  # files created or changed by this build
    unchanged: int  # files this build would make that were already identical
    removed: int  # files of an earlier build that this build no longer makes


def build_site(out, site_dir=None, base_url: str | None = None) -> Path | str:
    """Build (or update) the site for ``out``; returns the site folder (index.html inside)."""
    return build_site_report(out, site_dir, base_url).site_dir


def build_site_report(out, site_dir=None, base_url: str | None = None) -> SiteReport:
    # 1. check inputs
    src = as_store(out)
    out = src.root.resolve() if src.local else src.url
    if not src.is_dir("manifests"):
        raise FileNotFoundError(f"out={str(out)!r} has no manifests/ folder: not an Albumforge output folder")
    if site_dir is None:
        site_store = Store(out / "site") if src.local else Store(src.uri("site"))
    else:
        site_store = Store(Path(site_dir).resolve()) if not is_url(site_dir) else Store(site_dir)
    site = site_store.root if site_store.local else site_store.url
    if src.local and site_store.local:
        if site == out or out.is_relative_to(site):
            raise ValueError(f"site_dir={str(site)!r} must not be the output folder or contain it")
    elif site_store.url == src.url or (src.url + "/").startswith(site_store.url + "/"):
        raise ValueError(f"site_dir={str(site)!r} must not be the output folder or contain it")
    base_url = _check_base_url(base_url)

    # 2. read the manifests (bad manifest -> ManifestError naming the file)
    cat = read_catalog(out)

    # 3. lay out pages and media: every site path is made here, from slugs only
    writer = _Writer(site_store, src)
    pages = _layout(cat, out)

    # 4. media: hard-link (or copy) each file that exists inside OUT
    for page in pages:
        for src, dest in page["media"]:
            writer.link(src, dest)

    # songs (`albumforge covers`): their own page, their covers and embedded copies
    from catalog.songs import song_layout

    songs, failed_songs = song_layout(out, _media)
    for s in songs:
        for src, dest in s["media"]:
            writer.link(src, dest)

    # 5. render pages in a fixed order
    env = _environment()
    ctx = {"base_url": base_url, "n_failed": len(cat.failed_albums), "n_runs": len(cat.runs),
           "n_songs": len(songs) + len(failed_songs)}
    for page in pages:
        html = env.get_template("album.html").render(
            **ctx, root="../", path=page["href"], album=page["album"], tracks=page["tracks"],
            cover=page["cover"], soundscape=_soundscape_rows(page["album"]["soundscape"]),
            has_track_art=cat.has_track_art)
        writer.text(page["href"], html)
    genres = sorted({g for p in pages for g in p["genre_keys"]})
    moods = sorted({p["mood_key"] for p in pages if p["mood_key"]})
    writer.text("index.html", env.get_template("index.html").render(
        **ctx, root="", path="index.html", pages=pages, genres=genres, moods=moods))
    writer.text("runs.html", env.get_template("runs.html").render(
        **ctx, root="", path="runs.html", runs=_runs(cat), failed_albums=cat.failed_albums,
        failed_tracks=_failed_tracks(cat, pages)))
    if songs or failed_songs:
        writer.text("songs.html", env.get_template("songs.html").render(
            **ctx, root="", path="songs.html", songs=songs, failed=failed_songs))
    if base_url:
        paths = ["index.html", "runs.html"] + (["songs.html"] if songs or failed_songs else []) \
            + [p["href"] for p in pages]
        writer.text("sitemap.xml", env.get_template("sitemap.xml").render(base_url=base_url, paths=paths))
    for f in sorted((SITE_SRC / "static").rglob("*")):
        if f.is_file():
            writer.data("static/" + f.relative_to(SITE_SRC / "static").as_posix(), f.read_bytes())

    # 6. remove what an earlier build wrote and this one did not; remember this build
    removed = writer.finish()
    log.info("site %s: %d written, %d unchanged, %d removed", site, writer.written, writer.unchanged, removed)
    return SiteReport(site, writer.written, writer.unchanged, removed)


def _check_base_url(base_url: str | None) -> str | None:
    if not base_url:
        return None
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"base_url={base_url!r} must be an absolute http(s) URL")
    return base_url if base_url.endswith("/") else base_url + "/"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(SITE_SRC / "templates"),
        autoescape=True,  # every template is HTML/XML and every value is untrusted
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["mmss"] = _mmss
    env.filters["when"] = _when
    env.filters["secs"] = lambda s: "" if s is None else f"{s:,.1f} s"
    return env


def _mmss(seconds: float | None) -> str:
    if seconds is None:
        return ""
    total = int(round(seconds))
    return f"{total // 60}:{total % 60:02d}"


def _when(value: datetime | None) -> str:
    return "" if value is None else value.strftime("%Y-%m-%d %H:%M:%S UTC")


def _media(out, rel: object, dest: str, allowed: set[str] | None = None) -> tuple[Path | str, str] | None:
    """(source inside OUT, site path) for a manifest path, or None if it is unusable. The
    source is a local Path, or for object storage the path inside OUT (a str)."""
    if isinstance(out, Path):
        src = resolve_inside(out, rel)
        found = src is not None and src.is_file()
    else:
        src = rel
        try:  # the Store refuses absolute paths and '..'; object storage has no symlinks
            found = isinstance(rel, str) and bool(rel) and "\x00" not in rel and as_store(out).is_file(rel)
        except ValueError:
            found = False
    if not found:
        if rel:
            log.warning("media %r is missing or outside the output folder: left out of the site", rel)
        return None
    ext = safe_ext(src)
    if allowed is not None and ext not in allowed:
        log.warning("media %r has an unexpected type: left out of the site", rel)
        return None
    return src, f"{dest}.{ext}"


def _layout(cat: Catalog, out) -> list[dict]:
    """One entry per ok album: its page path, its media (source, site path), display rows."""
    pages = []
    for album in cat.ok_albums:
        slug = album_slug(album.get("title"), album["album_id"])
        media: list[tuple[Path | str, str]] = []
        cover = _media(out, album.get("cover_path"), f"media/{slug}/cover", IMAGE_EXTS)
        if cover:
            media.append(cover)
        tracks = []
        for t in cat.tracks.get(album["album_id"], []):
            row = dict(t, sources=[], art=None)
            if t["status"] == STATUS_OK:
                seen = set()
                for rel in [t.get("path"), *(t.get("paths") or [])]:
                    m = _media(out, rel, f"media/{slug}/track-{t['track_no']:02d}", set(AUDIO_TYPES))
                    if m and m[1] not in seen:
                        seen.add(m[1])
                        media.append(m)
                        row["sources"].append({"src": m[1], "type": AUDIO_TYPES[safe_ext(m[1])]})
                if cat.has_track_art:
                    art = _media(out, t.get("art_path"), f"media/{slug}/track-{t['track_no']:02d}-art", IMAGE_EXTS)
                    if art:
                        media.append(art)
                        row["art"] = art[1]
            tracks.append(row)
        mood = album["inputs"].get("mood")
        pages.append({
            "album": album,
            "href": f"albums/{slug}.html",
            "cover": cover[1] if cover else None,
            "tracks": tracks,
            "media": media,
            "genre_keys": sorted({g.strip().casefold() for g in album["genres"] if g.strip()}),
            "mood_key": mood.strip().casefold() if isinstance(mood, str) else "",
        })
    return pages


def _soundscape_rows(s: dict) -> list[tuple[str, str]]:
    """The soundscape as (label, text) rows; fields of the wrong shape are left out."""
    def words(v):
        return ", ".join(str(x) for x in v) if isinstance(v, list) else None

    rows = [("Genres", words(s.get("genres"))), ("Instruments", words(s.get("instruments")))]
    lo, hi = s.get("tempo_min_bpm"), s.get("tempo_max_bpm")
    if isinstance(lo, (int, float)) and isinstance(hi, (int, float)):
        rows.append(("Tempo", f"{lo:g}–{hi:g} BPM"))
    if isinstance(s.get("production"), str):
        rows.append(("Production", s["production"]))
    rows.append(("Cultural elements", words(s.get("cultural_elements"))))
    if isinstance(s.get("instrumental"), bool):
        rows.append(("Vocals", "none (instrumental)" if s["instrumental"] else "yes"))
    return [(k, v) for k, v in rows if v]


def _runs(cat: Catalog) -> list[dict]:
    rows = []
    for r in cat.runs:
        stages = {}
        try:
            raw = json.loads(r.get("stage_s_json") or "{}")
            if isinstance(raw, dict):
                stages = {str(k): v for k, v in raw.items() if isinstance(v, (int, float))}
        except ValueError:
            pass
        failed = [a for a in cat.failed_albums if a["run_id"] == r["run_id"]]
        rows.append(dict(r, stages=stages, failed=failed))
    return rows


def _failed_tracks(cat: Catalog, pages: list[dict]) -> list[dict]:
    href = {p["album"]["album_id"]: p["href"] for p in pages}
    rows = []
    for album in cat.ok_albums:
        for t in cat.tracks.get(album["album_id"], []):
            if t["status"] != STATUS_OK:
                rows.append({"album": album, "href": href.get(album["album_id"]), "track": t})
    return rows


class _Writer:
    """Writes into the site folder (a Store) only when bytes differ; tracks what it made.
    ``src``: OUT's Store, where media sources given as paths inside OUT are read."""

    def __init__(self, site: Store, src: Store):
        self.store, self.src = site, src
        self.site = site.root if site.local else None
        self.made: set[str] = set()
        self.written = 0
        self.unchanged = 0
        try:
            self.previous = set(json.loads(site.read_bytes(STATE_FILE)).get("files", []))
        except (OSError, ValueError, AttributeError):
            self.previous = set()

    def _target(self, rel: str) -> Path:
        target = resolve_inside(self.site, rel)
        if target is None:  # cannot happen with slugs; checked anyway
            raise ValueError(f"site path {rel!r} would leave the site folder")
        self.made.add(rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def text(self, rel: str, text: str) -> None:
        self.data(rel, text.encode("utf-8"))

    def data(self, rel: str, data: bytes) -> None:
        if self.site is None:
            self._remote_data(rel, data)
            return
        target = self._target(rel)
        try:
            if target.is_file() and not target.is_symlink() and target.read_bytes() == data:
                self.unchanged += 1
                return
        except OSError:
            pass
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self.written += 1

    def _remote_data(self, rel: str, data: bytes) -> None:
        self.made.add(rel)
        try:
            if self.store.read_bytes(rel) == data:
                self.unchanged += 1
                return
        except (OSError, ValueError):
            pass
        self.store.write_bytes(rel, data)
        self.written += 1

    def link(self, src: Path | str, rel: str) -> None:
        if isinstance(src, str) or self.site is None:  # object storage on one side (or both)
            self._copy(src, rel)
            return
        target = self._target(rel)
        if target.is_symlink():
            target.unlink()
        elif target.exists():
            s, d = src.stat(), target.stat()
            if os.path.samefile(src, target) or (s.st_size == d.st_size and s.st_mtime_ns == d.st_mtime_ns):
                self.unchanged += 1
                return
            target.unlink()
        try:
            os.link(src, target)
        except OSError:  # another filesystem, or links not allowed: copy (keeps mtime)
            shutil.copy2(src, target)
        self.written += 1

    def _copy(self, src: Path | str, rel: str) -> None:
        """A media file across object storage: a server-side copy inside one store (skipped
        when size and ETag already match), else its bytes (downloaded or uploaded)."""
        if isinstance(src, str) and self.site is None and type(self.store.fs) is type(self.src.fs):
            self.made.add(rel)
            s_path, d_path = self.src._path(src), self.store._path(rel)
            try:
                s, d = self.src.fs.info(s_path), self.store.fs.info(d_path)
                if s.get("size") == d.get("size") and s.get("ETag") and s.get("ETag") == d.get("ETag"):
                    self.unchanged += 1
                    return
            except FileNotFoundError:
                pass
            self.store.fs.copy(s_path, d_path)
            self.written += 1
            return
        self.data(rel, src.read_bytes() if isinstance(src, Path) else self.src.read_bytes(src))

    def finish(self) -> int:
        removed = 0
        for rel in sorted(self.previous - self.made):
            if self.site is None:
                try:
                    if self.store.is_file(rel):
                        self.store.delete(rel)
                        removed += 1
                except ValueError:
                    pass
                continue
            target = resolve_inside(self.site, rel)
            if target is not None and (target.is_file() or target.is_symlink()):
                target.unlink()
                removed += 1
                parent = target.parent
                while parent != self.site and parent.is_relative_to(self.site) and not any(parent.iterdir()):
                    parent.rmdir()
                    parent = parent.parent
        self.data(STATE_FILE, (json.dumps({"files": sorted(self.made)}, indent=0) + "\n").encode())
        self.made.discard(STATE_FILE)
        return removed
