"""The built site in real headless Chromium, opened from disk (file://).

Proves: every ok album is on the index; pages load with no console errors; covers
decode; every <audio> reaches loadedmetadata with the manifest's duration; the
client-side filter works without a server; hostile text runs no script.
"""

from __future__ import annotations

import pytest
from catalog_fixtures import (
    ALBUMS,
    CHROMIUM_ARGS,
    HOSTILE,
    HOSTILE_FAILED,
    chromium_path,
    make_out,
)

from catalog.site import build_site
from catalog.slugs import album_slug

pytestmark = pytest.mark.slow

# waits for every <audio> on the page: its duration after loadedmetadata, or an error
AUDIO_DURATIONS = """() => Promise.all([...document.querySelectorAll('audio')].map(a => new Promise(resolve => {
  const done = () => resolve({duration: a.duration, error: a.error && a.error.code});
  setTimeout(() => resolve({duration: a.duration, error: 'no loadedmetadata within 15 s'}), 15000);
  if (a.readyState >= 1) { done(); return; }
  a.addEventListener('loadedmetadata', done, {once: true});
  a.addEventListener('error', done, {once: true, capture: true});
  a.querySelectorAll('source').forEach(s => s.addEventListener('error', done, {once: true}));
  a.load();
})))"""
COVERS = """() => Promise.all([...document.querySelectorAll('img')].map(img => img.decode().then(
  () => ({src: img.getAttribute('src'), width: img.naturalWidth}),
  () => ({src: img.getAttribute('src'), width: 0}))))"""
# what a script injected into the page would leave behind
INJECTED = """() => ({
  pwned: typeof window.__pwned,
  scripts: [...document.scripts].map(s => s.getAttribute('src')),
  handlers: [...document.querySelectorAll('*')].flatMap(e => [...e.attributes].map(a => a.name))
    .filter(n => n.startsWith('on')),
  frames: document.querySelectorAll('iframe, svg, object, embed').length,
})"""


@pytest.fixture(scope="module")
def browser():
    path = chromium_path()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright; its browser download is not needed)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser")
    sample = make_out(tmp / "out", ALBUMS + (HOSTILE, HOSTILE_FAILED))
    return sample, build_site(sample.out)


class Watched:
    """A page with its console errors, uncaught exceptions and dialogs recorded."""

    def __init__(self, browser):
        self.context = browser.new_context()
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))

    def open(self, path):
        self.page.goto(path.as_uri(), wait_until="load")
        return self.page


@pytest.fixture
def watched(browser):
    w = Watched(browser)
    yield w
    w.context.close()


def test_index_shows_every_ok_album(built, watched):
    sample, site = built
    page = watched.open(site / "index.html")
    cards = page.locator(".album-card:visible")
    assert cards.count() == len(sample.ok)
    titles = sorted(cards.locator(".title").all_inner_texts())
    assert titles == sorted(page.evaluate("s => s", [a.title for a in sample.ok]))
    covers = page.evaluate(COVERS)
    assert len(covers) == len(sample.ok) and all(c["width"] > 0 for c in covers), covers
    assert watched.errors == []


def test_every_album_page_plays(built, watched):
    sample, site = built
    for a in sample.ok:
        page = watched.open(site / "albums" / f"{album_slug(a.title, a.album_id)}.html")
        covers = page.evaluate(COVERS)
        assert covers and all(c["width"] > 0 for c in covers), (a.title, covers)
        audio = page.evaluate(AUDIO_DURATIONS)
        expected = [sample.durations[a.album_id][n] for n in a.ok_tracks]
        assert len(audio) == len(expected), a.title
        for got, want in zip(audio, expected):
            assert got["error"] is None, (a.title, got)
            assert got["duration"] == pytest.approx(want, abs=0.1), (a.title, got, want)
        page.locator("details.how-made summary").click()
        assert page.locator("table.prompts").is_visible()
    assert watched.errors == []


def test_filter_works_without_a_server(built, watched):
    sample, site = built
    page = watched.open(site / "index.html")
    visible = lambda: sorted(page.locator(".album-card:visible .title").all_inner_texts())  # noqa: E731
    page.fill("#q", "harbour")
    assert visible() == ["Neon Harbour"] and page.inner_text("#shown") == "1"
    page.fill("#q", "")
    page.select_option("#genre", "ambient")
    assert visible() == sorted(a.title for a in sample.ok if "Ambient" in a.genres)
    page.select_option("#mood", "warm")
    assert visible() == ["Desert Bloom"]
    page.select_option("#genre", "")
    page.select_option("#mood", "")
    page.fill("#q", "no album is called this")
    assert visible() == [] and page.locator("#no-match").is_visible()
    page.fill("#q", "PARIS")
    assert visible() == ["Été à Paris"]
    assert watched.errors == []


def test_hostile_text_runs_no_script(built, watched):
    sample, site = built
    hostile_page = site / "albums" / f"{album_slug(HOSTILE.title, HOSTILE.album_id)}.html"
    for path in (site / "index.html", hostile_page, site / "runs.html"):
        page = watched.open(path)
        page.evaluate(AUDIO_DURATIONS)  # let media and any (injected) handler fire
        for d in page.locator("details").all():
            d.locator("summary").click()
        if path.name == "index.html":
            page.fill("#q", "rock'n'roll")
            page.select_option("#mood", index=len(page.locator("#mood option").all()) - 1)
        state = page.evaluate(INJECTED)
        assert state["pwned"] == "undefined", path
        assert all(s and s.endswith("static/filter.js") for s in state["scripts"]), state
        assert state["handlers"] == [] and state["frames"] == 0, state
    assert watched.dialogs == []
    assert watched.errors == []
    # the text itself survives, shown as text
    page = watched.open(hostile_page)
    assert page.inner_text("h1") == HOSTILE.title
    assert HOSTILE.tracks[0].title in page.inner_text(".tracklist")
