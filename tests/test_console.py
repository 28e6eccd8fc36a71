"""What a person sees: the CLI help comes from the config, and a run's console is short."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from ray_jobs.cli import _FLAGS, config_help, generate_parser

CHATTER = ("[transformers]", "Loading weights", "Writing model shards", "torchvision", "pad_token_id",
           "Token indices sequence length", "DataContext", "Execution plan", "Running Dataset", "Registered dataset",
           "ray_remote_args", "Traceback")
# Ray core's C++ notice about actor constructor arguments can still reach stderr (it is not a
# Python logger): it is allowed here, and named in the README as known noise.
RAY_CORE = "core_worker.cc"


def test_every_config_flag_shows_its_field_description():
    help_text = re.sub(r"\s+", " ", generate_parser().format_help())
    for flag, key in _FLAGS.items():
        description = config_help(key).split(" (config ")[0]
        assert re.sub(r"\s+", " ", description) in help_text, f"--{flag.replace('_', '-')}: {key}"
        assert f"config {key};" in help_text


@pytest.mark.slow
def test_default_console_of_a_run_is_short_and_quiet(tiny_cache, tmp_path):
    concepts = tmp_path / "c.txt"
    concepts.write_text("salt marsh at dawn\nneon rain\nglass bells\n")
    out = tmp_path / "out"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    result = subprocess.run([sys.executable, "-m", "ray_jobs.generate", str(concepts), "--out", str(out),
                             "--tiny-cache", str(tiny_cache), "--tracks", "1", "--seconds", "1", "--steps", "2",
                             "--address", "local"], env=env, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    console = result.stdout + result.stderr
    for word in CHATTER:
        assert word not in console, f"{word!r} reached the console"
    lines = [ln for ln in re.split(r"[\r\n]+", console)
             if ln.strip() and not ln.lstrip().startswith("albums:") and RAY_CORE not in ln]
    assert len(lines) <= 6, lines  # the summary, the log's name and at most a few notices
    assert re.search(r"run \S+ ok: 3 ok, 0 failed", result.stdout)
    log = re.search(r"^log: (.+)$", result.stdout, re.M)[1]
    assert "actor pools" in open(log).read()  # what the console leaves out is in the log
