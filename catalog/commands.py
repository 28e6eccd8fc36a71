"""Entry points of ``albumforge site|load|stats|compact``: each takes an argv list, returns an exit code.

Also runnable alone: ``python -m catalog.commands site OUT [--site-dir DIR] [--base-url URL]``.
Exit codes: 0 done, 1 bad input (a bad manifest, a missing folder), 2 usage error.
"""

from __future__ import annotations

import argparse
import logging
import sys

from albumforge.manifest import ManifestError


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


def site_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="albumforge site", description="Build the static album website from OUT's manifests.")
    p.add_argument("out", help="output folder of a generate run (a path, or a URL such as s3://bucket/prefix)")
    p.add_argument("--site-dir", default=None, help="where to write the site: a folder or a URL (default: OUT/site)")
    p.add_argument("--base-url", default=None, help="public URL of the site: adds canonical links and sitemap.xml")
    args = p.parse_args(argv)
    from catalog.site import build_site_report

    try:
        r = build_site_report(args.out, args.site_dir, args.base_url)
    except (ManifestError, FileNotFoundError, ValueError) as e:
        return _fail(str(e))
    print(f"site: {r.site_dir}/index.html ({r.written} files written, {r.unchanged} unchanged, {r.removed} removed; "
          f"{r.rendered} album pages rendered)")
    return 0


def load_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="albumforge load", description="Upsert OUT's manifests into the SQL catalogue.")
    p.add_argument("out", help="output folder of a generate run (a path, or a URL such as s3://bucket/prefix)")
    p.add_argument("--db", default=None, metavar="URL",
                   help="SQLAlchemy URL, e.g. postgresql+psycopg://user@host/db (default: SQLite file OUT/catalog.sqlite)")
    args = p.parse_args(argv)
    from sqlalchemy.exc import SQLAlchemyError

    from catalog.db.load import default_url, load, safe_url

    try:
        url = args.db or default_url(args.out)
        counts = load(args.out, url)
    except (ManifestError, FileNotFoundError, ValueError) as e:
        return _fail(str(e))
    except SQLAlchemyError as e:  # the driver's message, never the URL's password
        return _fail(f"database {safe_url(url)}: {type(e).__name__}: {getattr(e, 'orig', None) or e}")
    print(f"loaded into {safe_url(url)}: " + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in counts.items()))
    return 0


def stats_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="albumforge stats", description="Summarise OUT's manifests.")
    p.add_argument("out", help="output folder of a generate run (a path, or a URL such as s3://bucket/prefix)")
    args = p.parse_args(argv)
    from albumforge.parts import has_catalogue
    from catalog.stats import compute_stats, format_stats

    if not has_catalogue(args.out):
        return _fail(f"{args.out} has no manifests/ folder: not an Albumforge output folder")
    try:
        print(format_stats(compute_stats(args.out)))
    except ManifestError as e:
        return _fail(str(e))
    return 0


def compact_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="albumforge compact",
        description="Merge OUT's catalogue parts (and per-album files of older releases) into one part per kind. "
                    "Lossless; takes OUT's hold, so it never runs beside a generate job.")
    p.add_argument("out", help="output folder (or object-store URL) of a generate run")
    args = p.parse_args(argv)
    from albumforge.parts import compact_all, has_catalogue, manifest_files

    if not has_catalogue(args.out):
        return _fail(f"{args.out} has no manifests/ folder: not an Albumforge output folder")
    from albumforge.outlock import OutHeld, OutLock

    try:
        with OutLock(args.out, "compact"):
            before = compact_all(args.out)
    except (OutHeld, ManifestError, OSError) as e:
        return _fail(str(e))
    after = {k: len(manifest_files(args.out, k)) for k in before}
    print("compacted: " + ", ".join(f"{k} {before[k]} -> {after[k]} files" for k in before))
    return 0


COMMANDS = {"site": site_main, "load": load_main, "stats": stats_main, "compact": compact_main}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: python -m catalog.commands {{{','.join(COMMANDS)}}} OUT [options]", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
