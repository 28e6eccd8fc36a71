"""Build the static album website from the manifests of one OUT folder.

``build_site(out)`` writes OUT/site/ (or ``site_dir``): index.html (a filterable grid of
the ok albums), albums/<slug>.html (one page per ok album), runs.html (runs and every
failure), static/ (CSS, JS) and media/<slug>/ (covers and audio, hard-linked or copied
from OUT/media so the folder stands alone). All links are relative: the folder works
from ``file://`` and on any static host.

Safety: every string from the manifests is untrusted. Templates autoescape and never
mark model text safe; file names are slugs (catalog.slugs); media is read only from
inside OUT and written only inside the site folder.

Incremental and deterministic: pages are rendered in a fixed order with no build time
in them, and a file is written only when its bytes change. The state file remembers, per
album page, a hash of the album's rows (``catalog.read.album_hashes``), of the templates
and of the page context: an album whose hash is unchanged is neither laid out nor
rendered again (its media are not even looked at), so a rebuild after a few new albums
renders those pages and the index only. Files written by an earlier build that this
build no longer makes (a renamed or failed album) are removed; files the builder never
wrote are left alone.

Object storage: OUT and the site folder may each be a URL (``s3://…``). The site defaults
to OUT/site, so a bucket's OUT gets its site inside the bucket, which serves it as a static
website with the same relative links. A site bound for object storage is built in a local
staging folder (``~/.cache/albumforge/site-staging/<hash of the URL>``: it keeps the
incremental state) and what changed is uploaded; media of a bucket's OUT are fetched only
for the album pages that are rendered.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import jinja2

from albumforge.parts import has_catalogue
from albumforge.present import MediaCheck, Resolver
from albumforge.resources import data_dir, user_cache_dir
from albumforge.rows import STATUS_OK
from albumforge.storage import Store, as_store, inside, is_url
from catalog.read import Catalog, json_object, read_catalog
from catalog.slugs import AUDIO_TYPES, IMAGE_EXTS, album_slug, resolve_inside, safe_ext

log = logging.getLogger(__name__)

SITE_SRC = data_dir("site")  # templates/ and static/ (data, not code): the checkout's, or a wheel's copy
STATE_FILE = ".albumforge-site.json"  # what the last build wrote (stale files go) and each album page's hash
ALBUM_TEMPLATES = ("base.html", "album.html")  # what an album page is rendered from (its hash key)
SITE_VERSION = 2  # of the builder's page layout: a new version renders every page again


@dataclass
class SiteReport:
    site_dir: Path | str  # the site folder, or its URL when the site went to object storage
    written: int  # files created or changed by this build
    unchanged: int  # files this build would make that were already identical (or kept: album unchanged)
    removed: int  # files of an earlier build that this build no longer makes
    rendered: int = 0  # album pages rendered (the others were unchanged since the last build)


def build_site(out: Store | str | Path, site_dir: Path | str | None = None, base_url: str | None = None) -> Path | str:
    """Build (or update) the site for ``out``; returns the site folder or URL (index.html inside)."""
    return build_site_report(out, site_dir, base_url).site_dir


def _site_target(store: Store, site_dir: Path | str | None) -> tuple[Path, Store | None]:
    """(the local folder the site is built in, the Store it is then published to or None).

    The site goes to ``site_dir`` (a folder or a URL), by default ``OUT/site``: inside the
    bucket when OUT is object storage, so the bucket serves it with the same relative links.
    A site bound for object storage is built in a local staging folder that persists (the
    incremental state lives there), then only what changed is uploaded."""
    if site_dir is not None and is_url(site_dir):
        target = Store(site_dir)
    elif site_dir is None and not store.local:
        target = Store(store.uri("site"))
    else:
        site = Path(site_dir).resolve() if site_dir is not None else store.root.resolve() / "site"
        if store.local and (site == store.root.resolve() or store.root.resolve().is_relative_to(site)):
            raise ValueError(f"site_dir={str(site)!r} must not be the output folder or contain it")
        return site, None
    if target.url == store.url or (store.url + "/").startswith(target.url + "/"):
        raise ValueError(f"site_dir={target.url!r} must not be the output folder or contain it")
    staging = user_cache_dir() / "site-staging" / hashlib.sha256(target.url.encode()).hexdigest()[:16]
    return staging, target


def _publish(writer: "_Writer", target: Store) -> tuple[int, int]:
    """Upload what this build wrote (and what the bucket lacks or holds at another size),
    delete what it no longer makes: (uploaded, deleted). One listing of the site's prefix."""
    fs, root = target.fs, target.fs._strip_protocol(target.url)
    fs.invalidate_cache(root)
    try:
        remote = {PurePosixPath(p).relative_to(root).as_posix(): int(info.get("size") or 0)
                  for p, info in fs.find(root, detail=True).items()}
    except FileNotFoundError:
        remote = {}
    uploaded = 0
    for rel in sorted(writer.made | {STATE_FILE}):
        local = writer.site / rel
        if rel in writer.changed or remote.get(rel) != local.stat().st_size:
            with target.writing(rel) as tmp:
                shutil.copyfile(local, tmp)
            uploaded += 1
    gone = sorted(set(remote) - writer.made - {STATE_FILE})
    for rel in gone:
        target.delete(rel)
    return uploaded, len(gone)


def build_site_report(out: Store | str | Path, site_dir: Path | None = None,
                      base_url: str | None = None) -> SiteReport:
    # 1. check inputs
    store = as_store(out)
    if not has_catalogue(store):
        raise FileNotFoundError(f"out={store.url!r} has no manifests/ folder: not an Albumforge output folder")
    site, target = _site_target(store, site_dir)
    base_url = _check_base_url(base_url)

    # 2. read the catalogue (bad part -> ManifestError naming the file)
    cat = read_catalog(store)
    media = _Media(store)

    # songs (`albumforge covers`): their own page, their covers and embedded copies
    from catalog.songs import song_layout

    songs, failed_songs = song_layout(store, media)

    # 3. album pages: an album whose rows, templates and page context are as at the last
    # build keeps its page and media untouched; the others are laid out and rendered
    writer = _Writer(site, store)
    env = _environment()
    ctx = {"base_url": base_url, "n_failed": len(cat.failed_albums), "n_runs": len(cat.runs),
           "n_songs": len(songs) + len(failed_songs)}
    # what album pages show of the whole site (base.html): a new failed album re-renders them all
    key = _render_key({"base_url": base_url, "n_failed": ctx["n_failed"], "songs": bool(ctx["n_songs"])},
                      cat.has_track_art)
    cards, todo = [], []
    for album in cat.ok_albums:
        aid = album["album_id"]
        slug = album_slug(album.get("title"), aid)
        href = f"albums/{slug}.html"
        h = f"{cat.hashes.get(aid)}:{key}"
        prev = writer.old_pages.get(aid)
        mood = album["inputs"].get("mood")
        card = {"album": album, "href": href, "cover": None,
                "genre_keys": sorted({g.strip().casefold() for g in album["genres"] if g.strip()}),
                "mood_key": mood.strip().casefold() if isinstance(mood, str) else "",
                "genres_text": " · ".join(album["genres"])}
        card["genres_json"] = _json_attr(tuple(card["genre_keys"]))
        words = (album.get("title"), album.get("artist"), album.get("concept"), " ".join(card["genre_keys"]),
                 card["mood_key"])
        card["search"] = " ".join(str(w) for w in words if w).lower()  # the index's filter matches this
        if isinstance(prev, dict) and prev.get("h") == h and prev.get("href") == href and writer.kept(aid, prev):
            card["cover"] = prev.get("cover")
        else:
            todo.append((card, slug, h))
        cards.append(card)
    tracks = cat.tracks_for([card["album"] for card, _, _ in todo])  # one conversion for all pages to render
    for card, slug, h in todo:
        album, href = card["album"], card["href"]
        album["soundscape"] = json_object(album.get("soundscape_json"))
        page = _album_page(cat, album, tracks.get(album["album_id"], []), slug, media)
        for src, dest in page["media"]:
            writer.link(src, dest)
        writer.text(href, env.get_template("album.html").render(
            **ctx, root="../", path=href, album=album, tracks=page["tracks"], cover=page["cover"],
            soundscape=_soundscape_rows(album["soundscape"]), has_track_art=cat.has_track_art))
        card["cover"] = page["cover"]
        writer.pages[album["album_id"]] = {"h": h, "href": href, "cover": page["cover"],
                                           "files": [href, *(dest for _, dest in page["media"])]}
    rendered = len(todo)
    for s in songs:
        for src, dest in s["media"]:
            writer.link(src, dest)

    # 4. the index, runs and songs pages, sitemap and static files
    genres = sorted({g for p in cards for g in p["genre_keys"]})
    moods = sorted({p["mood_key"] for p in cards if p["mood_key"]})
    writer.text("index.html", env.get_template("index.html").render(
        **ctx, root="", path="index.html", pages=cards, genres=genres, moods=moods))
    writer.text("runs.html", env.get_template("runs.html").render(
        **ctx, root="", path="runs.html", runs=_runs(cat), failed_albums=cat.failed_albums,
        failed_tracks=_failed_tracks(cat, cards)))
    if songs or failed_songs:
        writer.text("songs.html", env.get_template("songs.html").render(
            **ctx, root="", path="songs.html", songs=songs, failed=failed_songs))
    if base_url:
        paths = ["index.html", "runs.html"] + (["songs.html"] if songs or failed_songs else []) \
            + [p["href"] for p in cards]
        writer.text("sitemap.xml", env.get_template("sitemap.xml").render(base_url=base_url, paths=paths))
    for f in sorted((SITE_SRC / "static").rglob("*")):
        if f.is_file():
            writer.data("static/" + f.relative_to(SITE_SRC / "static").as_posix(), f.read_bytes())

    # 5. remove what an earlier build wrote and this one did not; remember this build
    removed = writer.finish()
    if target is not None:  # object storage: upload what changed from the staging folder
        written, removed = _publish(writer, target)
        site = target.url
    else:
        written = writer.written
    log.info("site %s: %d written, %d unchanged, %d removed, %d album pages rendered", site, written,
             writer.unchanged, removed, rendered)
    return SiteReport(site, written, writer.unchanged, removed, rendered)


@functools.lru_cache(maxsize=4096)
def _json_attr(keys: tuple[str, ...]):
    """``keys|tojson`` (HTML-safe JSON), made once per distinct genre list."""
    return jinja2.utils.htmlsafe_json_dumps(list(keys))


def _render_key(ctx: dict, has_track_art: bool) -> str:
    """What every album page depends on besides its album: the context and the templates."""
    h = hashlib.sha256(json.dumps([ctx, has_track_art, SITE_VERSION], sort_keys=True, default=str).encode())
    for name in ALBUM_TEMPLATES:
        h.update(name.encode() + b"\0" + (SITE_SRC / "templates" / name).read_bytes())
    return h.hexdigest()[:16]


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


@dataclass(frozen=True)
class RemoteFile:
    rel: str  # a media file in object storage (relative to OUT)


class _Media:
    """Media named by the manifests: ``(source, site path)`` for files that exist inside OUT."""

    def __init__(self, store: Store):
        self.store = store
        self.resolve = Resolver(store.root) if store.local else None
        self.exists = MediaCheck(store)

    def __call__(self, rel: object, dest: str, allowed: set[str] | None = None) -> tuple[object, str] | None:
        if self.resolve is not None:
            src = self.resolve(rel)
            ok = src is not None
        else:
            src, ok = RemoteFile(rel), inside(rel) and self.exists(rel)
        if not ok:
            if rel:
                log.warning("media %r is missing or outside the output folder: left out of the site", rel)
            return None
        ext = safe_ext(rel)
        if allowed is not None and ext not in allowed:
            log.warning("media %r has an unexpected type: left out of the site", rel)
            return None
        return src, f"{dest}.{ext}"


def _album_page(cat: Catalog, album: dict, album_tracks: list[dict], slug: str, media: _Media) -> dict:
    """An ok album's media (source, site path), cover and display rows of its tracks."""
    files: list[tuple[object, str]] = []
    cover = media(album.get("cover_path"), f"media/{slug}/cover", IMAGE_EXTS)
    if cover:
        files.append(cover)
    tracks = []
    for t in album_tracks:
        row = dict(t, sources=[], art=None)
        if t["status"] == STATUS_OK:
            seen = set()
            for rel in [t.get("path"), *(t.get("paths") or [])]:
                m = media(rel, f"media/{slug}/track-{t['track_no']:02d}", set(AUDIO_TYPES))
                if m and m[1] not in seen:
                    seen.add(m[1])
                    files.append(m)
                    row["sources"].append({"src": m[1], "type": AUDIO_TYPES[safe_ext(m[1])]})
            if cat.has_track_art:
                art = media(t.get("art_path"), f"media/{slug}/track-{t['track_no']:02d}-art", IMAGE_EXTS)
                if art:
                    files.append(art)
                    row["art"] = art[1]
        tracks.append(row)
    return {"cover": cover[1] if cover else None, "tracks": tracks, "media": files}


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


def _failed_tracks(cat: Catalog, cards: list[dict]) -> list[dict]:
    href = {p["album"]["album_id"]: p["href"] for p in cards}
    failed = cat.failed_tracks()
    rows = []
    for album in cat.ok_albums:
        for t in failed.get(album["album_id"], []):
            rows.append({"album": album, "href": href.get(album["album_id"]), "track": t})
    return rows


class _Writer:
    """Writes into the site folder only when bytes differ; tracks what it made."""

    def __init__(self, site: Path, store: Store):
        self.site, self.store = site, store
        self.resolve = Resolver(site)
        self.folders: set[str] = set()  # made already by this build
        self.made: set[str] = set()
        self.changed: set[str] = set()  # written by this build (what a publish must upload)
        self.written = 0
        self.unchanged = 0
        self.pages: dict[str, dict] = {}  # album_id -> its page's hash, href, cover and files
        state = site / STATE_FILE
        try:
            data = json.loads(state.read_text())
            self.old_pages = data.get("pages") if isinstance(data.get("pages"), dict) else {}
            self.previous = {f for f in data.get("files", []) if isinstance(f, str)}
        except (OSError, ValueError, AttributeError):
            self.old_pages, self.previous = {}, set()
        for page in self.old_pages.values():
            if isinstance(page, dict) and isinstance(page.get("files"), list):
                self.previous.update(f for f in page["files"] if isinstance(f, str))

    def kept(self, aid: str, page: dict) -> bool:
        """Keep an unchanged album's files as the last build left them (True), or say that
        its page is gone and must be made again (False)."""
        files = [f for f in page.get("files") or [] if isinstance(f, str)]
        target = self.resolve(page.get("href"))
        if not files or target is None:
            return False
        self.made.update(files)
        self.unchanged += len(files)
        self.pages[aid] = page
        return True

    def _target(self, rel: str) -> str:
        target = self.resolve(rel, must_exist=False)
        if target is None:  # cannot happen with slugs; checked anyway
            raise ValueError(f"site path {rel!r} would leave the site folder")
        self.made.add(rel)
        parent = os.path.dirname(target)
        if parent not in self.folders:
            os.makedirs(parent, exist_ok=True)
            self.folders.add(parent)
        return target

    def text(self, rel: str, text: str) -> None:
        self.data(rel, text.encode("utf-8"))

    def data(self, rel: str, data: bytes) -> None:
        target = self._target(rel)
        try:
            st = os.lstat(target)
            if stat.S_ISREG(st.st_mode) and st.st_size == len(data):
                with open(target, "rb") as f:
                    if f.read() == data:
                        self.unchanged += 1
                        return
        except OSError:
            pass
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=os.path.dirname(target))
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self.written += 1
        self.changed.add(rel)

    def link(self, src: object, rel: str) -> None:
        if isinstance(src, RemoteFile):  # a file in object storage: fetched, written when it differs
            self.data(rel, self.store.read_bytes(src.rel))
            return
        target = self._target(rel)
        try:
            d = os.lstat(target)
        except FileNotFoundError:
            d = None
        if d is not None:
            if not stat.S_ISLNK(d.st_mode):
                s = os.stat(src)
                if (s.st_ino, s.st_dev) == (d.st_ino, d.st_dev) or (s.st_size, s.st_mtime_ns) == (d.st_size,
                                                                                                  d.st_mtime_ns):
                    self.unchanged += 1
                    return
            os.unlink(target)
        try:
            os.link(src, target)
        except OSError:  # another filesystem, or links not allowed: copy (keeps mtime)
            shutil.copy2(src, target)
        self.written += 1
        self.changed.add(rel)

    def finish(self) -> int:
        removed = 0
        for rel in sorted(self.previous - self.made):
            target = resolve_inside(self.site, rel)
            if target is not None and (target.is_file() or target.is_symlink()):
                target.unlink()
                removed += 1
                parent = target.parent
                while parent != self.site and parent.is_relative_to(self.site) and not any(parent.iterdir()):
                    parent.rmdir()
                    parent = parent.parent
        paged = {f for p in self.pages.values() for f in p["files"]}
        state = {"version": SITE_VERSION, "files": sorted(self.made - paged - {STATE_FILE}), "pages": self.pages}
        self.data(STATE_FILE, (json.dumps(state, sort_keys=True, separators=(",", ":")) + "\n").encode())
        self.made.discard(STATE_FILE)
        return removed
