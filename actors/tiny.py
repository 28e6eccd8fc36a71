"""Tiny random-weight models built offline from configs (tests, CI, CPU smoke runs).

They are the very classes the real engine loads (diffusers ``StableDiffusionPipeline``,
transformers ``MusicgenForConditionalGeneration`` + ``MusicgenProcessor``), saved once
with ``save_pretrained`` into a cache folder and then loaded through the same
``from_pretrained`` code as real weights. They make noise, not music: they prove the
code path, the shapes, the batching and the files.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch

TINY_MUSIC = "tiny-musicgen"
TINY_IMAGE = "tiny-stable-diffusion"
TINY_CLIP = "tiny-clip"
_VERSION = "v1"  # bump when the recipes below change, so caches are rebuilt

_SENTENCES = [
    "lofi hip hop beat with warm piano and vinyl crackle at 80 bpm",
    "epic orchestral score with strings, brass and timpani",
    "ambient synth pads, slow evolving drones, reverb, calm mood",
    "upbeat funk groove with slap bass, horns and tight drums at 110 bpm",
    "acoustic folk guitar, fiddle and soft percussion, nostalgic",
    "dark techno with pounding kick, acid bassline and metallic hats",
    "jazz trio with brushed drums, upright bass and mellow piano",
    "cinematic soundtrack, haunting choir pads, deep cello, tension",
]


def _atomic_build(target: Path, build) -> Path:
    """Build into a temp folder beside ``target`` and rename, so concurrent actors never
    see a half-written model (the loser of a race just drops its copy)."""
    if (target / ".complete").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    build(tmp)
    (tmp / ".complete").write_text(_VERSION)
    try:
        os.rename(tmp, target)
    except OSError:  # another process finished first
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return target


# ---------------------------------------------------------------- Stable Diffusion
def _clip_tokenizer_files(folder: Path) -> None:
    """A byte-level CLIP BPE vocabulary: the 256 byte characters, their ``</w>`` forms,
    and the two special tokens; no merges (every word splits into bytes)."""
    # GPT-2/CLIP's reversible byte -> printable character map
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = iter(range(256, 512))
    chars = [chr(b) if b in printable else chr(next(extra)) for b in range(256)]
    vocab = {}
    for c in chars:
        vocab[c] = len(vocab)
    for c in chars:
        vocab[c + "</w>"] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")


def build_tiny_stable_diffusion(folder: Path) -> None:
    from diffusers import (
        AutoencoderKL,
        DPMSolverMultistepScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=32,
    )
    vae = AutoencoderKL(
        block_out_channels=[32, 64],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        latent_channels=4,
        norm_num_groups=32,
        sample_size=64,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=512,
            eos_token_id=513,
            pad_token_id=513,
            hidden_size=32,
            intermediate_size=37,
            layer_norm_eps=1e-05,
            num_attention_heads=4,
            num_hidden_layers=2,
            vocab_size=514,
            max_position_embeddings=77,
            projection_dim=32,
        )
    )
    tok_dir = folder / "_tokenizer_src"
    _clip_tokenizer_files(tok_dir)
    tokenizer = CLIPTokenizer(str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"), model_max_length=77)
    scheduler = DPMSolverMultistepScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1
    )
    pipe = StableDiffusionPipeline(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder)
    import shutil

    shutil.rmtree(tok_dir)


# ---------------------------------------------------------------- MusicGen
def _t5_tokenizer(folder: Path):
    """A T5 tokenizer from a sentencepiece model trained here on a few sentences."""
    import sentencepiece as spm
    from transformers import T5Tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    corpus = folder / "corpus.txt"
    corpus.write_text("\n".join(_SENTENCES * 4))
    spm.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(folder / "spiece"),
        vocab_size=96,
        hard_vocab_limit=False,
        model_type="unigram",
        character_coverage=1.0,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        minloglevel=2,
    )
    sp = spm.SentencePieceProcessor(model_file=str(folder / "spiece.model"))
    vocab = [(sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.get_piece_size())]
    return T5Tokenizer(vocab=vocab, extra_ids=0)


def build_tiny_musicgen(folder: Path) -> None:
    from transformers import (
        EncodecConfig,
        EncodecFeatureExtractor,
        MusicgenConfig,
        MusicgenDecoderConfig,
        MusicgenForConditionalGeneration,
        MusicgenProcessor,
        T5Config,
    )

    torch.manual_seed(0)
    tok_dir = folder / "_tokenizer_src"
    tokenizer = _t5_tokenizer(tok_dir)
    text_config = T5Config(
        vocab_size=max(tokenizer.vocab_size, len(tokenizer)),
        d_model=32,
        d_ff=37,
        d_kv=8,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    codebooks = 4
    audio_config = EncodecConfig(
        sampling_rate=32000,
        audio_channels=1,
        hidden_size=32,
        num_filters=8,
        num_residual_layers=1,
        upsampling_ratios=[8, 5, 4, 4],  # 640 samples a frame: 50 frames a second at 32 kHz
        codebook_size=64,
        codebook_dim=32,
        target_bandwidths=[2.2],
        num_lstm_layers=1,
        normalize=False,
    )
    decoder_config = MusicgenDecoderConfig(
        vocab_size=64,
        max_position_embeddings=2048,
        num_hidden_layers=2,
        ffn_dim=64,
        num_attention_heads=4,
        hidden_size=32,
        num_codebooks=codebooks,
        pad_token_id=64,
        bos_token_id=64,
        audio_channels=1,
    )
    config = MusicgenConfig(
        text_encoder=text_config.to_dict(),
        audio_encoder=audio_config.to_dict(),
        decoder=decoder_config.to_dict(),
    )
    model = MusicgenForConditionalGeneration(config)
    model.generation_config.decoder_start_token_id = 64
    model.generation_config.pad_token_id = 64
    model.generation_config.max_length = 1600
    model.generation_config.do_sample = True
    model.generation_config.guidance_scale = 3.0
    model.save_pretrained(folder)
    processor = MusicgenProcessor(
        feature_extractor=EncodecFeatureExtractor(feature_size=1, sampling_rate=32000),
        tokenizer=tokenizer,
    )
    processor.save_pretrained(folder)
    import shutil

    shutil.rmtree(tok_dir)


# ---------------------------------------------------------------- CLIP (image scoring)
def build_tiny_clip(folder: Path) -> None:
    """A tiny ``CLIPModel`` + ``CLIPProcessor`` (byte-level tokenizer, 32 px images)."""
    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        CLIPProcessor,
        CLIPTextConfig,
        CLIPTokenizer,
        CLIPVisionConfig,
    )

    torch.manual_seed(0)
    text = CLIPTextConfig(
        bos_token_id=512, eos_token_id=513, pad_token_id=513, hidden_size=32, intermediate_size=37,
        num_attention_heads=4, num_hidden_layers=2, vocab_size=514, max_position_embeddings=77,
    )
    vision = CLIPVisionConfig(
        image_size=32, patch_size=8, hidden_size=32, intermediate_size=37, num_attention_heads=4,
        num_hidden_layers=2, num_channels=3,
    )
    model = CLIPModel(CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=32))
    model.save_pretrained(folder)
    tok_dir = folder / "_tokenizer_src"
    _clip_tokenizer_files(tok_dir)
    tokenizer = CLIPTokenizer(str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"), model_max_length=77)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    import shutil

    shutil.rmtree(tok_dir)


# ---------------------------------------------------------------- adapters for the tiny SD
def build_tiny_lora(sd_folder: Path, out_dir: Path, seed: int = 0, rank: int = 4) -> Path:
    """LoRA weights for the tiny SD UNet (random, non-zero: they visibly change images),
    saved with ``StableDiffusionPipeline.save_lora_weights``; returns the weights file."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet = UNet2DConditionModel.from_pretrained(Path(sd_folder) / "unet")
    torch.manual_seed(seed)
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights=False,
                                target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    out_dir = Path(out_dir)
    StableDiffusionPipeline.save_lora_weights(out_dir, unet_lora_layers=layers, safe_serialization=True)
    return out_dir / "pytorch_lora_weights.safetensors"


def build_tiny_textual_inversion(path: Path, token: str = "<house-style>", dim: int = 32, seed: int = 0) -> Path:
    """A textual-inversion embedding in the diffusers format ({token: vector}) for the tiny SD."""
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({token: torch.randn(dim, generator=g)}, str(path))
    return path


def ensure_tiny(kind: str, cache: Path) -> Path:
    """The folder of a tiny model, built on first use; ``kind`` is "music", "image" or "clip"."""
    cache = Path(cache)
    if kind == "music":
        return _atomic_build(cache / f"{TINY_MUSIC}-{_VERSION}", build_tiny_musicgen)
    elif kind == "image":
        return _atomic_build(cache / f"{TINY_IMAGE}-{_VERSION}", build_tiny_stable_diffusion)
    elif kind == "clip":
        return _atomic_build(cache / f"{TINY_CLIP}-{_VERSION}", build_tiny_clip)
    else:
        raise ValueError(f"unknown tiny model kind {kind!r} (expected 'music', 'image' or 'clip')")
