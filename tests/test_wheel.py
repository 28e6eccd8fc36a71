"""The wheel works: it ships the data, installs without the checkout and runs from anywhere.

The slow test builds the wheel from a copy of the checkout, installs it into a bare venv
whose dependencies come from this interpreter's site-packages (through a ``.pth`` line,
so this venv's editable-install finder is not loaded), and runs ``generate``, ``site``,
``load`` and ``stats`` from another folder. The fast tests cover the packages list, the
data lookup, the tiny-cache default and the CLI's ``--version`` and import errors.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CODE_PACKAGES = ("actors", "albumforge", "catalog", "director", "ray_jobs")
DATA_DIRS = {"prompts": "albumforge/prompts", "site": "albumforge/site"}  # checkout -> wheel


def _python_packages(top: str) -> set[str]:
    """Every folder of ``top`` holding a .py file, as a dotted package name."""
    return {p.parent.relative_to(REPO).as_posix().replace("/", ".")
            for p in (REPO / top).rglob("*.py") if "__pycache__" not in p.parts}


def test_pyproject_lists_every_package_and_data_folder():
    setuptools_cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(setuptools_cfg["packages"])
    code = set().union(*(_python_packages(top) for top in CODE_PACKAGES))
    assert code - listed == set(), "packages missing from pyproject.toml [tool.setuptools] packages"
    data = {f"albumforge.{p.relative_to(REPO).as_posix().replace('/', '.')}"
            for top in DATA_DIRS for p in [REPO / top, *(REPO / top).rglob("*")]
            if p.is_dir() and "__pycache__" not in p.parts}
    assert data - listed == set(), "data folders missing from pyproject.toml packages"
    assert setuptools_cfg["package-dir"] == {f"albumforge.{k}": k for k in DATA_DIRS}


def test_data_dirs_resolve_to_the_checkout_here():
    from albumforge.config import STYLES_DIR
    from albumforge.resources import data_dir
    from catalog.site import SITE_SRC
    from director.templates import PROMPTS_DIR

    assert PROMPTS_DIR == data_dir("prompts") == REPO / "prompts"
    assert SITE_SRC == REPO / "site" and STYLES_DIR == REPO / "prompts" / "styles"
    with pytest.raises(ValueError, match="'models'"):
        data_dir("models")


def test_default_tiny_cache_is_a_user_cache_not_the_package(monkeypatch, tmp_path):
    from albumforge.config import RunConfig

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert RunConfig().tiny_cache == tmp_path / "xdg" / "albumforge" / "tiny-models"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")  # the XDG spec: only absolute paths count
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert RunConfig().tiny_cache == tmp_path / "home" / ".cache" / "albumforge" / "tiny-models"


def test_cli_version_comes_from_the_installed_metadata(capsys):
    from importlib import metadata

    from ray_jobs.cli import main

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"albumforge {metadata.version('albumforge')}"


def test_cli_lets_an_import_error_surface(monkeypatch):
    """A broken catalog import is a traceback naming the module, not a usage line."""
    from ray_jobs.cli import main

    monkeypatch.setitem(sys.modules, "catalog.commands", None)  # importing it raises ImportError
    with pytest.raises(ImportError, match="catalog.commands"):
        main(["stats", "out"])


# ---------------------------------------------------------------- the wheel itself
def _copy_checkout(dest: Path) -> Path:
    """The checkout without caches, outputs and VCS data (pip builds in-tree: keep it out of REPO)."""
    junk = shutil.ignore_patterns(".git", ".venv", ".cache", "build", "out", "*.egg-info", "__pycache__",
                                  ".pytest_cache", "tests", "bench", "examples")
    return Path(shutil.copytree(REPO, dest, ignore=junk))


def _shared_site_packages() -> str:
    """Where this interpreter's dependencies live (the venv's site-packages)."""
    purelib = sysconfig.get_paths()["purelib"]
    assert purelib in site.getsitepackages(), (purelib, site.getsitepackages())
    return purelib


@pytest.mark.slow
def test_wheel_ships_data_and_runs_without_the_checkout(tmp_path, tiny_cache):
    # 1. build the wheel from a copy (no build isolation: setuptools comes from this venv)
    src = _copy_checkout(tmp_path / "src")
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(dist)], check=True, capture_output=True, text=True, timeout=300)
    (wheel,) = dist.glob("albumforge-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for top, inside in DATA_DIRS.items():  # every data file of the checkout, at its place in the wheel
        files = {p.relative_to(REPO / top).as_posix() for p in (REPO / top).rglob("*")
                 if p.is_file() and "__pycache__" not in p.parts}
        assert files and {f"{inside}/{f}" for f in files} <= names, sorted(names)
    for path in ("albumforge/prompts/album.j2", "albumforge/prompts/styles/blue-note.yaml",
                 "albumforge/prompts/offline/vocab.yaml", "albumforge/site/templates/album.html",
                 "albumforge/site/static/style.css", "catalog/migrations/env.py",
                 "catalog/migrations/script.py.mako", "catalog/migrations/versions/0001_initial.py",
                 "ray_jobs/cli.py", "albumforge/resources.py"):
        assert path in names
    assert not any(n.startswith(("site/", "prompts/", "tests/")) for n in names)  # no top-level `site`

    # 2. a bare venv: the wheel's code and data, dependencies from this venv by a .pth line
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    purelib = Path(subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  check=True, capture_output=True, text=True).stdout.strip())
    (purelib / "shared-deps.pth").write_text(_shared_site_packages() + "\n")
    # -I: never touch the albumforge that the shared site-packages holds (the editable install)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", "-I",
                    str(wheel)], check=True, capture_output=True, text=True, timeout=300)

    # 3. run from another folder, nothing of the checkout on the path
    work = tmp_path / "elsewhere"
    work.mkdir()
    (work / "concepts.txt").write_text("A harbor town waking up in fog\nA night train through snowy mountains\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RAY_ADDRESS")}
    env.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", PYTHONNOUSERSITE="1",
               XDG_CACHE_HOME=str(tmp_path / "xdg"))
    albumforge = venv / "bin" / "albumforge"  # the console script the wheel installed

    def run(*args: str, timeout: float = 120) -> str:
        r = subprocess.run([str(a) for a in args], cwd=work, env=env, capture_output=True, text=True,
                           timeout=timeout)
        assert r.returncode == 0, (args, r.stdout[-3000:], r.stderr[-3000:])
        return r.stdout

    where = json.loads(run(py, "-c", "import json, albumforge.resources as r, actors, catalog, director, ray_jobs;"
                                     "print(json.dumps({m.__name__: m.__file__ for m in "
                                     "(r, actors, catalog, director, ray_jobs)} | "
                                     "{'prompts': str(r.data_dir('prompts')), 'site': str(r.data_dir('site'))}))"))
    assert all(Path(f).is_relative_to(purelib) for f in where.values()), where
    assert run(albumforge, "--version").strip() == "albumforge 0.1.0"

    out = work / "out"
    run(albumforge, "generate", "concepts.txt", "--out", out, "--address", "local", "--tiny-cache", tiny_cache,
        "--tracks", "1", "--seconds", "1", "--steps", "2", timeout=400)
    albums = json.loads(run(py, "-c", "import json; from albumforge.parts import read_latest;"
                                      f"print(json.dumps(read_latest({str(out)!r}, 'albums').to_pylist(),"
                                      " default=str))"))
    assert [a["status"] for a in albums] == ["ok", "ok"]
    run(albumforge, "site", out)
    assert (out / "site" / "index.html").is_file() and (out / "site" / "static" / "style.css").is_file()
    assert len(list((out / "site" / "albums").glob("*.html"))) == 2
    run(albumforge, "load", out)  # SQLite by default: runs the migrations shipped in the wheel
    assert (out / "catalog.sqlite").is_file()
    assert "2 ok, 0 failed" in run(albumforge, "stats", out)
    assert not (tmp_path / "xdg" / "albumforge").exists()  # --tiny-cache given: our default cache is untouched
    # (onnxruntime, which faster-whisper brings, writes its own device id under XDG_CACHE_HOME on import)
