"""The static site builder, without a browser: pages, links, escaping, incremental builds."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from catalog_fixtures import (
    ALBUMS,
    HOSTILE,
    HOSTILE_FAILED,
    AlbumSpec,
    make_out,
    write_album,
    write_tone,
)

from albumforge import manifest, parts
from albumforge.parts import read_latest
from catalog.commands import site_main
from catalog.site import STATE_FILE, build_site, build_site_report
from catalog.slugs import album_slug, resolve_inside, safe_id, slugify

REPO = Path(__file__).resolve().parent.parent


class Page(HTMLParser):
    """Every tag with its attributes, and the visible text, of one HTML page."""

    def __init__(self, path: Path):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self.feed(path.read_text(encoding="utf-8"))

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)

    def find(self, tag: str, **attrs) -> list[dict]:
        return [a for t, a in self.tags if t == tag and all(a.get(k) == v for k, v in attrs.items())]

    def links(self) -> list[str]:
        return [a[k] for _, a in self.tags for k in ("href", "src") if a.get(k)]


def snapshot(root: Path, skip: Path | None = None) -> dict[str, tuple[int, int, int]]:
    """path -> (inode, mtime_ns, size) of every file under root (skip: a folder to leave out)."""
    snap = {}
    for p in root.rglob("*"):
        if p.is_file() and not (skip and p.is_relative_to(skip)):
            st = p.stat()
            snap[str(p.relative_to(root))] = (st.st_ino, st.st_mtime_ns, st.st_size)
    return snap


@pytest.fixture
def sample(tmp_path):
    return make_out(tmp_path / "out")


def test_index_has_every_ok_album_and_no_failed_one(sample):
    site = build_site(sample.out)
    assert site == (sample.out / "site").resolve()
    index = Page(site / "index.html")
    cards = index.find("li", **{"class": "album-card"})
    assert len(cards) == len(sample.ok) == 3
    text = "".join(index.text)
    for a in sample.ok:
        assert a.title in text and a.artist in text and a.concept in text
        href = f"albums/{album_slug(a.title, a.album_id)}.html"
        assert index.find("a", href=href), href
        assert (site / href).is_file()
    for a in sample.failed:
        assert a.concept not in text
        assert not list(site.glob(f"albums/*{a.album_id}*"))
    moods = {a["data-mood"] for a in cards}
    assert moods == {a.inputs["mood"] for a in sample.ok}
    genres = {g.lower() for a in sample.ok for g in a.genres}
    assert genres == {"synthwave", "ambient", "folk", "chanson"}
    assert {o["value"] for o in index.find("option")} == {""} | genres | moods


def test_album_page_has_everything(sample):
    site = build_site(sample.out)
    a = ALBUMS[0]
    page = Page(site / f"albums/{album_slug(a.title, a.album_id)}.html")
    text = "".join(page.text)
    for needed in (a.title, a.artist, a.concept, "Three nocturnes for the harbour.", "Mixed at dawn.",
                   "synth pads, bass, field recordings", "70–100 BPM", "How it was made",
                   f"album cover for {a.concept}", "Synthwave track, Low Tide", "salt on the glass", "tiny-musicgen"):
        assert needed in text, needed
    assert len(page.find("details", **{"class": "how-made"})) == 1
    audios = page.find("source", type="audio/ogg")
    assert len(audios) == len(a.tracks)
    for no, src in enumerate(audios, start=1):
        assert src["src"].endswith(f"track-{no:02d}.ogg")
        assert (site / "albums" / src["src"]).resolve().is_file()
    durations = [t["data-duration"] for t in page.find("li") if "data-duration" in t]
    assert [float(d) for d in durations] == [sample.durations[a.album_id][n] for n in (1, 2, 3)]
    assert len(page.find("img", **{"class": "cover"})) == 1
    # the album with a failed track shows it as failed, with no player
    b = ALBUMS[1]
    page = Page(site / f"albums/{album_slug(b.title, b.album_id)}.html")
    assert len(page.find("audio")) == 1
    assert "failed: CUDA out of memory" in "".join(page.text)


def test_runs_page_lists_runs_and_failures(sample):
    site = build_site(sample.out)
    runs = Page(site / "runs.html")
    text = "".join(runs.text)
    assert "run-0001" in text and "tiny-musicgen" in text and "tiny-sd" in text
    failed = runs.find("tr", **{"class": "failed-album"})
    assert [r["data-album-id"] for r in failed] == [a.album_id for a in sample.failed]
    assert "director: invalid JSON after 3 attempts" in text
    assert len(runs.find("tr", **{"class": "failed-track"})) == 1 and "CUDA out of memory" in text
    run = read_latest(sample.out, "runs").to_pylist()[0]
    assert f"{run['minutes_per_album']:.2f}" in text


def test_every_link_is_relative_and_inside_the_site(sample, tmp_path):
    site = build_site(sample.out, tmp_path / "elsewhere" / "site")
    pages = sorted(site.rglob("*.html"))
    assert len(pages) == 2 + len(sample.ok)
    for page in pages:
        for link in Page(page).links():
            if link.startswith("data:"):
                continue
            assert not re.match(r"^[a-z][a-z0-9+.-]*:|^/", link), (page, link)
            target = (page.parent / link.split("#")[0]).resolve()
            assert target.is_relative_to(site) and target.is_file(), (page, link)
    # media is hard-linked or copied: the site folder stands alone
    for f in (site / "media").rglob("*"):
        assert not f.is_symlink()


def test_rebuild_is_incremental_and_deterministic(sample, tmp_path):
    site = build_site(sample.out)
    first = snapshot(site)
    report = build_site_report(sample.out)
    assert report.written == 0 and report.removed == 0
    assert snapshot(site) == first  # nothing rewritten: same inodes, same mtimes

    other = build_site(sample.out, tmp_path / "other")
    for rel in first:
        assert (other / rel).read_bytes() == (site / rel).read_bytes(), rel

    # one album changes title: only its files, the index and the runs page change
    a = ALBUMS[2]
    write_album(sample.out, AlbumSpec(**{**a.__dict__, "title": "Automne à Paris"}), "run-0001", 2)
    report = build_site_report(sample.out)
    after = snapshot(site)
    old, new = album_slug(a.title, a.album_id), album_slug("Automne à Paris", a.album_id)
    assert not (site / f"albums/{old}.html").exists() and not (site / f"media/{old}").exists()
    assert (site / f"albums/{new}.html").is_file()
    changed = {k for k in after if after[k] != first.get(k)}
    assert changed == {"index.html", f"albums/{new}.html", f"media/{new}/cover.png",
                       f"media/{new}/track-01.ogg", STATE_FILE}
    for k in first:
        if old not in k and k not in changed:
            assert after[k] == first[k], k
    assert report.removed == 3


def test_stale_cleanup_only_touches_files_the_builder_wrote(sample):
    site = build_site(sample.out)
    mine = site / "albums" / "notes-by-a-human.html"
    mine.write_text("keep me")
    (site / STATE_FILE).write_text(json.dumps({"files": ["../../../victim.txt", "/etc/hosts", "albums/gone.html"]}))
    victim = sample.out.parent / "victim.txt"
    victim.write_text("do not delete")
    build_site(sample.out)
    assert mine.read_text() == "keep me" and victim.read_text() == "do not delete"


def test_hostile_text_is_escaped_and_no_file_leaves_the_site(tmp_path):
    outside = tmp_path / "outside.ogg"  # where the hostile "../outside.ogg" points
    write_tone(outside, 1.0, 440.0)
    sample = make_out(tmp_path / "out", ALBUMS + (HOSTILE, HOSTILE_FAILED))
    before = snapshot(tmp_path)
    site = build_site(sample.out)

    after = snapshot(tmp_path, skip=site)
    assert after == before  # nothing written or changed anywhere but the site folder
    assert not (Path("/tmp") / "pwned").exists()
    for f in site.rglob("*"):
        assert f.resolve().is_relative_to(site)
        assert re.fullmatch(r"[a-z0-9.-]+", f.name) or f.name == STATE_FILE, f
        if f.is_file():
            assert not os.path.samefile(f, outside)
    hostile_page = site / "albums" / f"{album_slug(HOSTILE.title, HOSTILE.album_id)}.html"
    assert hostile_page.is_file()
    assert len(Page(hostile_page).find("source")) == 2  # the escaping extra paths were left out

    for page in site.rglob("*.html"):
        p = Page(page)
        scripts = p.find("script")
        assert all(s.get("src", "").endswith("static/filter.js") for s in scripts), page
        for tag, attrs in p.tags:
            assert not any(k.startswith("on") for k in attrs), (page, tag, attrs)
            if tag in ("img", "iframe", "svg", "b"):
                assert tag == "img" and attrs["src"].startswith(("media/", "../media/")), (page, tag, attrs)
        raw = page.read_text(encoding="utf-8")
        assert "<script>window" not in raw and "<img src=x" not in raw and "<svg" not in raw
    text = "".join(Page(hostile_page).text)
    assert HOSTILE.title in text and HOSTILE.artist in text  # escaped, not lost
    runs_text = "".join(Page(site / "runs.html").text)
    assert HOSTILE_FAILED.error in runs_text


@pytest.mark.parametrize("text", [
    "../../etc/passwd", "/abs/path", "..", ".", "", "   ", "<script>", "CON", "a/b\\c", "\u202eevil",
    "🎸🔥", "עברית", "x" * 500, "Été à Paris", "a\x00b", "\n\t",
])
def test_slugs_are_safe_file_names(text):
    for s in (slugify(text), album_slug(text, text), safe_id(text)):
        assert re.fullmatch(r"[a-z0-9][a-z0-9-]*", s), s
        assert len(s) <= 80 and ".." not in s and "/" not in s


def test_slugs_read_well_and_ids_stay_unique():
    assert slugify("Été à Paris!") == "ete-a-paris"
    assert album_slug("Neon Harbour", "a1b2c3d4e5f60001") == "neon-harbour-a1b2c3d4e5f60001"
    assert album_slug("🎸", "a1b2c3d4e5f60001") == "album-a1b2c3d4e5f60001"
    assert safe_id("a1b2") == "a1b2" and safe_id("A/../b") != safe_id("A/../c")


def test_resolve_inside_refuses_every_way_out(tmp_path):
    (tmp_path / "out" / "media").mkdir(parents=True)
    (tmp_path / "secret").write_text("x")
    (tmp_path / "out" / "media" / "link").symlink_to(tmp_path / "secret")
    out = tmp_path / "out"
    for bad in ("../secret", "/etc/passwd", "media/../../secret", "media/link", "", None, 5, ".", "a\x00b"):
        assert resolve_inside(out, bad) is None, bad
    assert resolve_inside(out, "media/x.ogg") == (out / "media/x.ogg").resolve()


def test_per_track_art_shows_only_where_an_album_has_it(sample):
    site = build_site(sample.out)
    assert not list(site.rglob("*-art.*")) and "track-art" not in "".join(p.read_text() for p in site.rglob("*.html"))

    # art_path set (image.track_art): the album page shows one image per track
    from PIL import Image
    a = ALBUMS[0]
    albums = {r["album_id"]: r for r in read_latest(sample.out, "albums").to_pylist()}
    tracks: dict[str, list[dict]] = {}
    for r in read_latest(sample.out, "tracks").to_pylist():
        tracks.setdefault(r["album_id"], []).append(r)
    for aid, rows in tracks.items():
        for r in rows:
            r["art_path"] = None
            if r["album_id"] == a.album_id:
                r["art_path"] = f"media/{a.album_id}/track-{r['track_no']:02d}.png"
                Image.new("RGB", (32, 32), (r["track_no"] * 60, 0, 0)).save(sample.out / r["art_path"])
        parts.write_album(sample.out, albums[aid], rows)  # the album's rows again: the latest win
    build_site(sample.out)
    page = Page(site / f"albums/{album_slug(a.title, a.album_id)}.html")
    arts = page.find("img", **{"class": "track-art"})
    assert len(arts) == 3 and all((site / "albums" / i["src"]).resolve().is_file() for i in arts)


def test_templates_never_mark_model_text_safe():
    for t in (REPO / "site" / "templates").rglob("*"):
        if t.is_file():
            body = t.read_text()
            assert "|safe" not in body.replace(" ", "") and "autoescape false" not in body, t


def test_base_url_adds_canonical_links_and_a_sitemap(sample):
    site = build_site(sample.out, base_url="https://albums.example.org/studio")
    sitemap = (site / "sitemap.xml").read_text()
    assert sitemap.count("<loc>https://albums.example.org/studio/") == 2 + len(sample.ok)
    assert Page(site / "index.html").find("link", rel="canonical")[0]["href"] == \
        "https://albums.example.org/studio/index.html"
    with pytest.raises(ValueError, match="base_url"):
        build_site(sample.out, base_url="javascript:alert(1)")


def test_site_dir_may_not_hold_the_output_folder(sample):
    for bad in (sample.out, sample.out.parent):
        with pytest.raises(ValueError, match="site_dir"):
            build_site(sample.out, bad)


def test_site_command(sample, capsys):
    assert site_main([str(sample.out)]) == 0
    assert "index.html" in capsys.readouterr().out
    bad = manifest.manifest_dir(sample.out, "albums") / "zzzz.parquet"
    bad.write_bytes(b"not parquet")
    assert site_main([str(sample.out)]) == 1
    assert str(bad) in capsys.readouterr().err


def test_catalog_never_imports_torch_or_ray(sample):
    code = f"""
import sys
from catalog.commands import main
out = {str(sample.out)!r}
assert main(["site", out]) == 0 and main(["load", out]) == 0 and main(["stats", out]) == 0
import catalog.site, catalog.stats, catalog.db.load, catalog.db.models, catalog.db.migrate
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "ray", "diffusers", "transformers"))
assert not heavy, heavy
"""
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
